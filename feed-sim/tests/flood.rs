//! `feed-sim flood` against the real tickcast server, started in this
//! process on 127.0.0.1:0: every request sent must be accounted for (a
//! response of the right status for its path, or unfinished at the end),
//! the paths must take turns, the pacing must hold the rate as a ceiling,
//! and the churn must make exactly the connections asked for. Nothing
//! here asserts a timing.

mod common;

use std::collections::BTreeMap;

use common::{flood_args, start_server};
use feed_sim::flood;

#[test]
fn a_paced_flood_gets_200_and_404_by_path_and_the_churn_makes_every_connection() {
    let server = start_server();
    let url = format!("http://{}", server.addr);
    let args = flood_args(
        &url,
        &[
            "--http-clients",
            "4",
            "--http-rate",
            "200",
            "--paths",
            "/symbols,/no-such-page",
            // Fewer connections in all than the server's listen backlog
            // (128), so none can be dropped and retried past the end.
            "--churn",
            "100",
            "--churn-concurrency",
            "10",
            "--churn-mode",
            "partial",
            "--source-ips",
            "2",
            "--duration",
            "1.5",
        ],
    );
    let report = flood::measure(&args).expect("flood run");
    server.stop();
    print!("{}", report.render());

    assert_eq!(report.source_ips, 2);
    let http = report.http.expect("an HTTP flood ran");
    assert_eq!(http.errors, 0, "{:?}", http.error_reasons);
    assert_eq!(http.connections, 4, "one keep-alive connection per client");
    assert_eq!(http.requests, http.responses + http.unfinished);
    assert!(http.unfinished <= 4, "at most one in flight per client");
    // The pacer hands out at most one request per 1/200 s, plus the first.
    assert!(http.requests <= 200 * 3 / 2 + 1, "{}", http.requests);

    let [symbols, missing] = &http.by_path[..] else {
        panic!("two paths: {:?}", http.by_path);
    };
    assert_eq!(symbols.path, "/symbols");
    assert_eq!(missing.path, "/no-such-page");
    assert!(symbols.responses > 0 && missing.responses > 0);
    assert_eq!(symbols.statuses, BTreeMap::from([(200, symbols.responses)]));
    assert_eq!(missing.statuses, BTreeMap::from([(404, missing.responses)]));
    assert_eq!(symbols.errors + missing.errors, 0);
    // Round-robin over all clients: the counts differ by at most one.
    assert!(symbols.requests.abs_diff(missing.requests) <= 1);
    assert_eq!(
        http.status_classes,
        BTreeMap::from([
            ("2xx".to_string(), symbols.responses),
            ("4xx".to_string(), missing.responses)
        ])
    );
    assert_eq!(http.response_time_us.count, http.responses);

    let churn = report.churn.expect("a churn ran");
    assert_eq!(churn.requested, 100);
    assert_eq!(churn.attempted, 100);
    assert_eq!(churn.connected, 100, "{:?}", churn.failure_reasons);
    assert_eq!(churn.failures, 0);
    assert_eq!(churn.unfinished, 0);
    assert_eq!(churn.connect_time_us.count, 100);
    assert_eq!(churn.mode, flood::ChurnMode::Partial);
}

#[test]
fn a_churn_alone_stops_once_its_connections_are_made() {
    let server = start_server();
    let url = format!("http://{}", server.addr);
    // A duration far longer than the churn: the run must end by itself
    // when the last connection has been made, not at the deadline. (More
    // connections than the listen backlog: a dropped SYN is retried.)
    let args = flood_args(
        &url,
        &[
            "--http-clients",
            "0",
            "--churn",
            "500",
            "--churn-concurrency",
            "20",
            "--duration",
            "600",
        ],
    );
    let report = flood::measure(&args).expect("flood run");
    server.stop();
    print!("{}", report.render());

    assert!(report.http.is_none());
    let churn = report.churn.expect("a churn ran");
    assert_eq!(churn.mode, flood::ChurnMode::Silent);
    assert_eq!(
        (
            churn.attempted,
            churn.connected,
            churn.failures,
            churn.unfinished
        ),
        (500, 500, 0, 0),
        "{:?}",
        churn.failure_reasons
    );
    assert!(churn.seconds < 600.0);
}

#[test]
fn a_flood_with_nothing_to_do_or_a_bad_url_is_refused() {
    let nothing = flood_args("http://127.0.0.1:1", &["--http-clients", "0"]);
    let err = flood::measure(&nothing).unwrap_err().to_string();
    assert!(err.contains("nothing to do"), "{err}");
    let ws = flood_args("ws://127.0.0.1:1/ws", &[]);
    let err = flood::measure(&ws).unwrap_err().to_string();
    assert!(err.contains("http://"), "{err}");
    let path = flood_args("http://127.0.0.1:1", &["--paths", "symbols"]);
    let err = flood::measure(&path).unwrap_err().to_string();
    assert!(err.contains("does not start with '/'"), "{err}");
}
