//! `GET /metrics` reports what the server did, in the OpenMetrics text
//! format Prometheus scrapes.

mod common;

use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// The value of the sample named exactly `name` (labels included).
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_connections_subscriptions_frames_errors_and_latency() {
    let mut cfg = config();
    cfg.symbols = 20;
    let server = start(cfg).await;
    let mut client = server.connect().await;
    client.subscribe(&["AAPL", "MSFT"]).await;
    let mut star = server.connect().await;
    star.subscribe(&["*"]).await;
    client.send_raw(Message::text("{nope")).await;
    assert_eq!(
        client.recv_until(|v| v["type"] == "error").await["code"],
        "bad_json"
    );
    client
        .send(json!({"op": "subscribe", "symbols": ["ZZZZ"]}))
        .await;
    client.recv_until(|v| v["type"] == "error").await;
    for _ in 0..20 {
        client.recv_until(|v| v["type"] == "tick").await;
    }

    let (status, text) = http_get(server.addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(sample(&text, "tickcast_connections"), 2.0);
    assert_eq!(sample(&text, "tickcast_connections_opened_total"), 2.0);
    assert_eq!(sample(&text, "tickcast_subscriptions"), 22.0);
    assert_eq!(
        sample(&text, "tickcast_errors_total{code=\"bad_json\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "tickcast_errors_total{code=\"unknown_symbol\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "tickcast_errors_total{code=\"too_many_symbols\"}"),
        0.0
    );
    assert!(sample(&text, "tickcast_frames_sent_total") >= 20.0);
    assert!(sample(&text, "tickcast_bytes_sent_total") > 20.0 * 100.0);
    let produced = sample(&text, "tickcast_ticks_produced_total");
    assert!(produced >= 20.0);
    assert!(sample(&text, "tickcast_ticks_fanned_out_total") <= produced);
    assert!(sample(&text, "tickcast_fanout_latency_seconds_count") >= 20.0);
    assert!(sample(&text, "tickcast_write_latency_seconds_count") >= 1.0);
    assert_eq!(sample(&text, "tickcast_slow_consumer_closes_total"), 0.0);

    // Leaving lowers the gauges.
    drop(star);
    server
        .until_stats("the `*` client to be detached", |s| {
            s.subscriptions.load(std::sync::atomic::Ordering::Relaxed) == 2
        })
        .await;
    let (_, text) = http_get(server.addr, "/metrics").await;
    assert_eq!(sample(&text, "tickcast_subscriptions"), 2.0);
    drop(client);
    server.stop().await;
}
