//! The ingest feed: a publisher's ticks reach subscribers with their seq
//! and ts intact; a missing or wrong token is refused with 401 before the
//! upgrade; one publisher at a time; bad ticks get an error reply.

mod common;

use common::ingest::*;
use common::*;
use serde_json::{json, Value};
use tickcast::config::FeedSource;
use tokio_tungstenite::tungstenite::Message;

async fn ingest_server() -> TestServer {
    start(ingest_config()).await
}

#[tokio::test]
async fn published_ticks_reach_subscribers_with_seq_and_ts_intact() {
    let server = ingest_server().await;
    let mut client = server.connect().await;
    let reply = client.subscribe(&["AAPL", "MSFT"]).await;
    assert_eq!(reply["symbols"], json!(["AAPL", "MSFT"]));

    let mut publisher = publisher(&server, TOKEN).await.expect("admitted");
    let batch = json!([
        tick("AAPL", 1000, 187.25),
        tick("MSFT", 7, 415.5),
        tick("AAPL", 1001, 187.3)
    ]);
    publisher.send(batch).await;
    // A single object is accepted too; skipping ahead reaches clients as
    // a reset snapshot.
    publisher.send(tick("AAPL", 1005, 187.4)).await;

    let mut got = Vec::new();
    while got.len() < 4 {
        let msg = client
            .recv_until(|v| v["type"] == "tick" || v["reset"] == true)
            .await;
        got.push((
            msg["sym"].as_str().unwrap().to_string(),
            msg["seq"].as_u64().unwrap(),
            msg["ts"].as_u64().unwrap(),
            msg["px"].as_f64().unwrap(),
            msg["size"].as_u64().unwrap(),
        ));
    }
    assert_eq!(
        got,
        [
            (
                "AAPL".to_string(),
                1000,
                1_700_000_000_000_001_000,
                187.25,
                1100
            ),
            ("MSFT".to_string(), 7, 1_700_000_000_000_000_007, 415.5, 107),
            (
                "AAPL".to_string(),
                1001,
                1_700_000_000_000_001_001,
                187.3,
                1101
            ),
            (
                "AAPL".to_string(),
                1005,
                1_700_000_000_000_001_005,
                187.4,
                1105
            ),
        ]
    );
    // /symbols shows what was published.
    let (_, body) = http_get(server.addr, "/symbols").await;
    let rows: Value = serde_json::from_str(&body).unwrap();
    let aapl = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["sym"] == "AAPL")
        .unwrap();
    assert_eq!(aapl["seq"], 1005);
    drop((client, publisher));
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_refused_with_401() {
    let server = ingest_server().await;
    assert_eq!(publisher(&server, "wrong").await.err(), Some(401));
    assert_eq!(publisher(&server, "").await.err(), Some(401));
    let (status, body) = http_get(server.addr, "/ingest").await;
    assert_eq!(status, 401);
    assert!(body.contains("ingest token"), "{body}");
    // The token also works as a query parameter (for clients that cannot
    // set headers), percent-encoded.
    let url = format!("ws://{}/ingest?token=s3cret%20token", server.addr);
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("admitted by query");
    drop(ws);
    server.stop().await;
}

#[tokio::test]
async fn a_new_publisher_takes_over_and_carries_on() {
    let server = ingest_server().await;
    let mut client = server.connect().await;
    client.subscribe(&["NVDA"]).await;
    let mut first = publisher(&server, TOKEN).await.expect("admitted");
    first.send(tick("NVDA", 1, 120.0)).await;
    assert_eq!(client.recv_until(|v| v["type"] == "tick").await["seq"], 1);

    // A second publisher (say, the first one restarted while its old
    // connection lingers) takes over; the first is told why.
    let first_closed = tokio::spawn(async move { first.expect_close().await });
    let mut second = publisher(&server, TOKEN).await.expect("takes over");
    let close = within("the first publisher's close", first_closed)
        .await
        .unwrap();
    assert_eq!(code(&close), 1000);
    assert_eq!(&*close.unwrap().reason, "another publisher took over");

    // The server remembers the last seq, so a replay is refused and new
    // ticks flow.
    second
        .send(json!([tick("NVDA", 1, 120.0), tick("NVDA", 2, 120.5)]))
        .await;
    let error = second.recv_until(|v| v["type"] == "error").await;
    assert_eq!(error["code"], "bad_tick");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("seq 1 of \"NVDA\""),
        "{error}"
    );
    assert_eq!(client.recv_until(|v| v["type"] == "tick").await["seq"], 2);
    drop((client, second));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_the_publisher_with_1001() {
    let server = ingest_server().await;
    let mut publisher = publisher(&server, TOKEN).await.expect("admitted");
    publisher.send(tick("AAPL", 1, 187.0)).await;
    let stopping = tokio::spawn(server.stop());
    let close = publisher.expect_close().await;
    assert_eq!(code(&close), 1001);
    within("shutdown", stopping).await.unwrap();
}

#[tokio::test]
async fn bad_ticks_get_an_error_and_the_rest_is_published() {
    let server = ingest_server().await;
    let mut client = server.connect().await;
    client.subscribe(&["AAPL"]).await;
    let mut publisher = publisher(&server, TOKEN).await.expect("admitted");
    publisher.send_raw(Message::text("{nope")).await;
    assert_eq!(
        publisher.recv_until(|v| v["type"] == "error").await["code"],
        "bad_json"
    );
    publisher
        .send_raw(Message::text(r#"{"sym":"AAPL","seq":1}"#))
        .await;
    let refused = publisher.recv_until(|v| v["type"] == "error").await;
    assert_eq!(refused["code"], "bad_tick");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("missing field"),
        "{refused}"
    );
    publisher.send_raw(Message::text("42")).await;
    assert_eq!(
        publisher.recv_until(|v| v["type"] == "error").await["code"],
        "bad_json"
    );
    publisher
        .send(json!([
            tick("ZZZZ", 1, 1.0),
            tick("AAPL", 3, 187.0),
            tick("QQQQ", 1, 1.0)
        ]))
        .await;
    let error = publisher.recv_until(|v| v["type"] == "error").await;
    assert_eq!(error["code"], "unknown_symbol");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("1 more refused"),
        "{error}"
    );
    assert_eq!(client.recv_until(|v| v["type"] == "tick").await["seq"], 3);
    drop((client, publisher));
    server.stop().await;
}

#[tokio::test]
async fn ingest_needs_a_token_to_start_and_is_absent_with_the_simulator() {
    let mut cfg = config();
    cfg.feed = FeedSource::Ingest;
    let server = tickcast::Server::bind(cfg).await.unwrap();
    let err = server.run(std::future::pending()).await.unwrap_err();
    assert!(err.to_string().contains("--ingest-token"), "{err}");

    let server = start(config()).await;
    let (status, body) = http_get(server.addr, "/ingest").await;
    assert_eq!(status, 404);
    assert!(body.contains("--feed ingest"), "{body}");
    server.stop().await;
}
