//! Connections spread over several shards (event loops) behave as one
//! server: a `*` subscriber on every shard sees every tick in order, a
//! client that resumes with `from` on another shard than the one it left
//! gets exactly the ticks it missed, and shutdown closes every client of
//! every shard with 1001.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::{json, Value};

/// Reads `/metrics` and returns each shard's connection gauge.
async fn shard_connections(server: &TestServer) -> Vec<u64> {
    let (status, text) = http_get(server.addr, "/metrics").await;
    assert_eq!(status, 200);
    let mut loads = vec![0; SHARDS];
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("tickcast_shard_connections{shard=\"") {
            let (shard, value) = rest.split_once("\"} ").expect("a labelled sample");
            loads[shard.parse::<usize>().unwrap()] = value.parse().unwrap();
        }
    }
    loads
}

/// Each symbol's seqs in the order `client` received them, over `count`
/// messages after its `subscribed` reply (snapshots included).
async fn seqs(client: &mut Client, count: usize) -> HashMap<String, Vec<u64>> {
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    for _ in 0..count {
        let msg = client.recv().await;
        if let (Some(sym), Some(seq)) = (msg["sym"].as_str(), msg["seq"].as_u64()) {
            seen.entry(sym.to_string()).or_default().push(seq);
        }
    }
    seen
}

#[tokio::test]
async fn a_star_subscriber_on_every_shard_sees_every_tick_in_order() {
    let mut cfg = config();
    cfg.symbols = 5;
    let server = start(cfg).await;
    let mut clients = Vec::new();
    for _ in 0..2 * SHARDS {
        let mut client = server.connect().await;
        client.subscribe(&["*"]).await;
        clients.push(client);
    }
    // New connections go to the shard with the fewest: two each.
    let loads = shard_connections(&server).await;
    assert_eq!(loads, vec![2; SHARDS], "connections per shard");
    let mut all = Vec::new();
    for client in &mut clients {
        all.push(seqs(client, 2_000).await);
    }
    for seen in &all {
        for (sym, seqs) in seen {
            assert!(
                seqs.windows(2).all(|w| w[1] == w[0] + 1),
                "{sym} arrived with a gap or out of order: {seqs:?}"
            );
        }
    }
    for seen in &all {
        assert_eq!(seen.len(), 5, "every symbol reached every shard's client");
    }
    drop(clients);
    server.stop().await;
}

#[tokio::test]
async fn a_client_resuming_on_another_shard_gets_exactly_what_it_missed() {
    let mut cfg = config();
    cfg.symbols = 5;
    let server = start(cfg).await;
    // Occupy one shard so that the next two connections land on
    // different ones.
    let mut first = server.connect().await;
    first.subscribe(&["AAPL"]).await;
    let last = loop {
        let msg = first.recv().await;
        if msg["type"] == "tick" {
            break msg["seq"].as_u64().unwrap();
        }
    };
    let before = shard_connections(&server).await;
    drop(first);
    server
        .until_stats("the first connection to end", |s| {
            s.sessions_open.load(std::sync::atomic::Ordering::Relaxed) == 0
        })
        .await;
    // A connection on each shard, then the resuming one on a shard that
    // did not serve the first.
    let mut others = Vec::new();
    for _ in 0..SHARDS - 1 {
        others.push(server.connect().await);
    }
    let mut resumed = server.connect().await;
    resumed
        .send(json!({"op": "subscribe", "symbols": ["AAPL"], "from": {"AAPL": last}}))
        .await;
    resumed.recv_until(|v| v["type"] == "subscribed").await;
    let after = shard_connections(&server).await;
    assert_eq!(after, vec![1; SHARDS], "one connection per shard");
    assert_eq!(before.iter().sum::<u64>(), 1);
    for expected in last + 1..=last + 200 {
        let msg: Value = resumed.recv().await;
        assert_eq!(msg["type"], "tick", "replayed ticks, then live ones: {msg}");
        assert_eq!(msg["seq"].as_u64(), Some(expected), "no gap, no repeat");
    }
    drop((others, resumed));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_every_client_of_every_shard_with_1001() {
    let server = start(config()).await;
    let mut clients = Vec::new();
    for _ in 0..2 * SHARDS {
        let mut client = server.connect().await;
        client.subscribe(&["AAPL"]).await;
        clients.push(client);
    }
    assert_eq!(shard_connections(&server).await, vec![2; SHARDS]);
    let stopping = tokio::spawn(server.stop());
    for client in &mut clients {
        let close = client.expect_close().await;
        assert_eq!(code(&close), 1001, "{close:?}");
    }
    within("shutdown", stopping).await.unwrap();
}
