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
        symbols_file: None,
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

#[test]
fn a_symbols_file_publishes_its_own_names_at_their_own_precision() {
    use std::io::{Read, Write};
    let server = start_server_with(|config| {
        config.feed = FeedSource::Ingest;
        config.ingest_token = Some(TOKEN.into());
    });
    let path = std::env::temp_dir().join(format!("feed-sim-symbols-{}.txt", std::process::id()));
    std::fs::write(&path, "BTC-USD,1\nEURUSD,5\nAAPL,2\n").unwrap();
    let mut args = publish_args(server.addr, TOKEN, 1.0);
    args.symbols_file = Some(path.clone());
    let published = publish(&args).expect("publish");
    assert_eq!(published.errors, 0, "the server refused ticks");
    let mut socket = std::net::TcpStream::connect(server.addr).unwrap();
    write!(
        socket,
        "GET /symbols HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).unwrap();
    server.stop();
    let _ = std::fs::remove_file(path);
    let body = response.split_once("\r\n\r\n").unwrap().1;
    let rows: serde_json::Value = serde_json::from_str(body).unwrap();
    let mut names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sym"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["AAPL", "BTC-USD", "EURUSD"]);
    // Each price has at most its symbol's decimals, read from the text.
    for (sym, decimals) in [("BTC-USD", 1), ("EURUSD", 5), ("AAPL", 2)] {
        let at = body.find(&format!(r#""sym":"{sym}""#)).unwrap();
        let row = &body[at..at + body[at..].find('}').unwrap()];
        let px = row
            .split(r#""px":"#)
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        let shown = px.split('.').nth(1).map_or(0, str::len);
        assert!(shown <= decimals, "{sym}: {row}");
    }
}
