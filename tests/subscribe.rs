//! Subscribe, unsubscribe and `*` against the real server: the reply, the
//! snapshot before any tick, and no tick after `unsubscribed`.

mod common;

use std::collections::HashSet;

use common::*;
use serde_json::json;

#[tokio::test]
async fn subscribe_replies_then_snapshot_before_any_tick() {
    let mut cfg = config();
    cfg.symbols = 10;
    let server = start(cfg).await;
    // Let AAPL trade at least once so a snapshot exists (on the watcher's
    // shard; the client's may be a pass behind).
    let mut watcher = server.connect().await;
    watcher.subscribe(&["AAPL"]).await;
    watcher.recv_until(|v| v["type"] == "tick").await;

    let mut client = server.connect().await;
    let reply = client.subscribe(&["AAPL", "MSFT"]).await;
    assert_eq!(reply["symbols"], json!(["AAPL", "MSFT"]));
    let mut snapshot_seq = std::collections::HashMap::new();
    for _ in 0..200 {
        let msg = client.recv().await;
        let sym = msg["sym"].as_str().unwrap().to_string();
        assert!(
            sym == "AAPL" || sym == "MSFT",
            "only subscribed symbols: {msg}"
        );
        match msg["type"].as_str().unwrap() {
            "snapshot" => {
                assert!(!snapshot_seq.contains_key(&sym), "one snapshot per symbol");
                for field in ["px", "bid", "ask", "size", "ts", "seq"] {
                    assert!(msg[field].is_number(), "snapshot has {field}: {msg}");
                }
                snapshot_seq.insert(sym, msg["seq"].as_u64().unwrap());
            }
            "tick" => {
                let seq = msg["seq"].as_u64().unwrap();
                match snapshot_seq.get_mut(&sym) {
                    Some(before) => {
                        assert_eq!(seq, *before + 1, "ticks follow the snapshot without a gap");
                        *before = seq;
                    }
                    // No snapshot: the client's shard had not read the
                    // symbol's first trade when the subscribe came; then
                    // that first trade is the first thing it is sent.
                    None => {
                        assert_eq!(seq, 1, "tick of {sym} before its snapshot: {msg}");
                        snapshot_seq.insert(sym, seq);
                    }
                }
            }
            other => panic!("unexpected message type {other}"),
        }
    }
    drop((client, watcher));
    server.stop().await;
}

#[tokio::test]
async fn star_subscribes_every_symbol_and_unsubscribe_stops_ticks() {
    let mut cfg = config();
    cfg.symbols = 20;
    let server = start(cfg).await;
    let mut client = server.connect().await;
    let reply = client.subscribe(&["*"]).await;
    let names: Vec<&str> = reply["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 20);
    assert_eq!(&names[..3], ["AAPL", "MSFT", "NVDA"]);

    let mut seen = HashSet::new();
    while seen.len() < 20 {
        let msg = client.recv_until(|v| v["type"] == "tick").await;
        seen.insert(msg["sym"].as_str().unwrap().to_string());
    }

    // Drop one symbol from `*`: the others keep coming, it never does.
    client
        .send(json!({"op": "unsubscribe", "symbols": ["AAPL"]}))
        .await;
    let reply = client.recv_until(|v| v["type"] == "unsubscribed").await;
    assert_eq!(reply["symbols"], json!(["AAPL"]));
    let mut others = 0;
    while others < 400 {
        let msg = client.recv().await;
        assert_ne!(msg["sym"], "AAPL", "no AAPL tick after unsubscribed: {msg}");
        others += 1;
    }

    // Subscribing again to something already subscribed adds nothing.
    let reply = client.subscribe(&["MSFT"]).await;
    assert_eq!(reply["symbols"], json!([]));

    // Unsubscribe everything: the reply lists what was dropped, then silence
    // is proven by a ping answered with no tick in between.
    client
        .send(json!({"op": "unsubscribe", "symbols": ["*"]}))
        .await;
    let reply = client.recv_until(|v| v["type"] == "unsubscribed").await;
    assert_eq!(reply["symbols"].as_array().unwrap().len(), 19);
    client.send(json!({"op": "ping", "id": "after"})).await;
    let pong = client.recv().await;
    assert_eq!(pong, json!({"type": "pong", "id": "after"}));
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn symbols_endpoint_lists_last_price_and_seq() {
    let server = start(config()).await;
    let mut client = server.connect().await;
    client.subscribe(&["AAPL"]).await;
    let tick = client.recv_until(|v| v["type"] == "tick").await;
    let (status, body) = http_get(server.addr, "/symbols").await;
    assert_eq!(status, 200);
    let rows: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 100);
    let aapl = rows.iter().find(|r| r["sym"] == "AAPL").unwrap();
    assert!(aapl["seq"].as_u64().unwrap() >= tick["seq"].as_u64().unwrap());
    assert!(aapl["px"].as_f64().unwrap() > 0.0);
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_every_client_with_1001() {
    let server = start(config()).await;
    let mut a = server.connect().await;
    let mut b = server.connect().await;
    a.subscribe(&["*"]).await;
    b.subscribe(&["AAPL"]).await;
    let stopping = tokio::spawn(server.stop());
    for client in [&mut a, &mut b] {
        let close = client.expect_close().await;
        assert_eq!(code(&close), 1001);
        assert_eq!(&*close.unwrap().reason, "server shutting down");
    }
    // Both clients answered the close, so shutdown completes promptly.
    within("shutdown", stopping).await.unwrap();
}
