//! `feed-sim publish` against a server started with `--feed ingest`: the
//! published ticks reach `feed-sim load`'s clients with no gap, and a wrong
//! token is refused with a message that says what to do.

mod common;

use common::{load_args, start_server_with};
use feed_sim::load;
use feed_sim::publish::{publish, Encoding, PublishArgs};
use tickcast::config::FeedSource;

const TOKEN: &str = "publisher-token";

fn publish_args(addr: std::net::SocketAddr, token: &str, seconds: f64) -> PublishArgs {
    PublishArgs {
        url: format!("ws://{addr}/ingest"),
        token: Some(token.into()),
        nats: None,
        continue_from: None,
        encoding: Encoding::Compact,
        symbols: 100,
        rate: 2_000.0,
        seed: 5,
        duration: Some(seconds),
    }
}

#[test]
fn published_ticks_reach_every_client_without_a_gap() {
    let server = start_server_with(|config| {
        config.feed = FeedSource::Ingest;
        config.ingest_token = Some(TOKEN.into());
    });
    let addr = server.addr;
    let publisher = std::thread::spawn(move || publish(&publish_args(addr, TOKEN, 4.0)));
    let args = load_args(
        &server.url,
        &[
            "--clients",
            "10",
            "--subs",
            "5",
            "--warmup",
            "1",
            "--duration",
            "2",
        ],
    );
    let report = load::measure(&args).expect("load run");
    let published = publisher
        .join()
        .expect("publisher thread")
        .expect("publish");
    server.stop();

    assert!(published.ticks > 0 && published.frames > 0);
    assert_eq!(published.errors, 0, "the server refused ticks");
    assert_eq!(report.clients_connected, 10);
    assert!(report.ticks > 0, "no tick reached the clients");
    assert_eq!(report.gaps.missing_ticks, 0);
    assert_eq!(report.gaps.seq_regressions, 0);
    assert_eq!(report.delivery.delivered, report.delivery.produced);
}

#[test]
fn a_wrong_token_is_refused_with_a_clear_error() {
    let server = start_server_with(|config| {
        config.feed = FeedSource::Ingest;
        config.ingest_token = Some(TOKEN.into());
    });
    let error = publish(&publish_args(server.addr, "wrong", 1.0))
        .unwrap_err()
        .to_string();
    server.stop();
    assert!(
        error.contains("401") && error.contains("--token"),
        "{error}"
    );
}

#[test]
fn a_restarted_publisher_carries_on_without_refusals() {
    let server = start_server_with(|config| {
        config.feed = FeedSource::Ingest;
        config.ingest_token = Some(TOKEN.into());
    });
    let first = publish(&publish_args(server.addr, TOKEN, 0.5)).expect("first run");
    let second = publish(&publish_args(server.addr, TOKEN, 0.5)).expect("second run");
    server.stop();
    assert!(first.ticks > 0 && second.ticks > 0);
    // The second run starts each symbol's seq after the server's last one,
    // so nothing it sends is a replay.
    assert_eq!((first.errors, second.errors), (0, 0));
}
