//! `feed-sim load` against the real tickcast server, started in this
//! process on 127.0.0.1:0: the counts of a run must add up (every client
//! connected, no gap, every produced tick delivered, one latency per
//! tick), and `--stall`ed clients must be reported apart from the others.
//! Nothing here asserts a timing.

mod common;

use common::{load_args, start_server};
use feed_sim::load;
use feed_sim::report::Report;

/// What every run of the reading clients must satisfy.
fn assert_counts_add_up(report: &Report, reading: usize) {
    assert_eq!(
        report.connect_failures, 0,
        "{:?}",
        report.connect_failure_reasons
    );
    assert_eq!(report.clients_reading, reading);
    assert!(report.ticks > 0, "no tick received");
    assert_eq!(report.gaps.missing_ticks, 0);
    assert_eq!(report.gaps.gap_events, 0);
    assert_eq!(report.gaps.seq_regressions, 0);
    // Every tick the feed produced for the subscriptions was delivered.
    assert_eq!(report.delivery.delivered, report.ticks);
    assert_eq!(report.delivery.produced, report.ticks);
    assert_eq!(report.delivery.percent, Some(100.0));
    // One latency per tick received.
    assert_eq!(report.latency_us.count, report.ticks);
    assert_eq!(report.latency_histogram.len(), report.ticks);
    assert_eq!(report.latency_curve.last().map(|p| p.quantile), Some(1.0));
    assert!(report.close_codes.is_empty(), "{:?}", report.close_codes);
    assert_eq!(report.disconnects_without_close, 0);
    assert_eq!(report.server_errors, 0, "{:?}", report.first_server_error);
    assert_eq!(report.unrecognised, 0);
}

#[test]
fn twenty_clients_receive_every_tick_of_their_subscriptions() {
    let server = start_server();
    let args = load_args(
        &server.url,
        &[
            "--clients",
            "20",
            "--subs",
            "5",
            "--warmup",
            "1",
            "--duration",
            "2",
        ],
    );
    let report = load::measure(&args).expect("load run");
    server.stop();

    assert_eq!(report.clients_requested, 20);
    assert_eq!(report.clients_connected, 20);
    assert_eq!(report.clients_connected_at_start, 20);
    assert_eq!(report.clients_subscribed, 20);
    assert_counts_add_up(&report, 20);
    assert!(report.stalled.is_none() && report.idle_memory.is_none());
    assert_eq!(
        report.scenario,
        "20 clients, 5 symbols per client, 2 s window"
    );
}

/// A server that speaks the protocol but serves no `GET /symbols` (here
/// tickcast behind a front that refuses every other request): the list
/// comes from the `subscribed` reply to `*`, and the run is as exact.
#[test]
fn learns_the_symbols_from_the_subscribed_reply_without_the_symbols_route() {
    let server = start_server();
    let (url, refused) = server.without_http_routes();
    let args = load_args(
        &url,
        &[
            "--clients",
            "10",
            "--subs",
            "3",
            "--warmup",
            "1",
            "--duration",
            "2",
        ],
    );
    let report = load::measure(&args).expect("load run");
    server.stop();

    assert!(
        refused.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "GET /symbols was tried"
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("subscribed reply")),
        "{:?}",
        report.warnings
    );
    assert_eq!(report.clients_subscribed, 10);
    assert_counts_add_up(&report, 10);
}

#[test]
fn stalled_clients_are_reported_apart_from_the_reading_ones() {
    let server = start_server();
    let args = load_args(
        &server.url,
        &[
            "--clients",
            "20",
            "--subs",
            "5",
            "--warmup",
            "1",
            "--duration",
            "2",
            "--stall",
            "2",
        ],
    );
    let report = load::measure(&args).expect("load run");
    server.stop();

    assert_eq!(report.clients_connected, 20);
    // The stalled clients never read their `subscribed` during the run.
    assert_eq!(report.clients_subscribed, 18);
    assert_counts_add_up(&report, 18);
    let stalled = report.stalled.as_ref().expect("a stalled section");
    assert_eq!((stalled.clients, stalled.connected), (2, 2));
    let closed: u64 = stalled.close_codes.values().sum();
    assert_eq!(
        closed + stalled.ended_without_close + stalled.caught_up + stalled.still_behind,
        2,
        "{stalled:?}"
    );
    // What they had not read was still there for them afterwards.
    assert!(stalled.ticks_read > 0, "{stalled:?}");
    assert_eq!(stalled.tick_age_us.count, stalled.ticks_read);
}

#[test]
fn idle_reports_memory_per_connection_and_needs_a_pid() {
    let server = start_server();
    let without_pid = load_args(&server.url, &["--clients", "5", "--subs", "1", "--idle"]);
    let error = load::measure(&without_pid).unwrap_err().to_string();
    assert!(error.contains("--server-pid"), "{error}");

    // The server runs in this process, so its memory is this process's.
    let pid = std::process::id().to_string();
    let args = load_args(
        &server.url,
        &[
            "--clients",
            "10",
            "--subs",
            "1",
            "--idle",
            "--server-pid",
            &pid,
            "--warmup",
            "0.2",
            "--duration",
            "0.5",
        ],
    );
    let report = load::measure(&args).expect("load run");
    server.stop();
    let idle = report.idle_memory.expect("idle figures");
    assert_eq!(idle.clients, 10);
    assert!(idle.rss_before_kib > 0 && idle.rss_after_kib > 0);
    assert_eq!(report.clients_subscribed, 10);
}
