//! Many clients at once receive every tick of their symbols in seq order
//! without a gap, over thousands of ticks.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_see_gap_free_sequences() {
    const CLIENTS: usize = 40;
    const TICKS_PER_CLIENT: usize = 3_000;
    let mut cfg = config();
    cfg.rate = 5_000.0;
    cfg.symbols = 50;
    // "As long as it keeps up".
    never_conflate(&mut cfg);
    let server = start(cfg).await;

    let mut tasks = Vec::new();
    for n in 0..CLIENTS {
        let mut client = server.connect().await;
        tasks.push(tokio::spawn(async move {
            // Half on `*`, half on a slice of the symbols.
            let wanted: Vec<String> = if n % 2 == 0 {
                vec!["*".into()]
            } else {
                let reply =
                    common::within("symbols", async { client.subscribe(&["*"]).await }).await;
                let all: Vec<String> = reply["symbols"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_string())
                    .collect();
                client
                    .send(serde_json::json!({"op": "unsubscribe", "symbols": ["*"]}))
                    .await;
                client.recv_until(|v| v["type"] == "unsubscribed").await;
                all.into_iter().skip(n % 5).step_by(5).collect()
            };
            let refs: Vec<&str> = wanted.iter().map(String::as_str).collect();
            let reply = client.subscribe(&refs).await;
            let subscribed: Vec<String> = reply["symbols"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
            let mut last: HashMap<String, u64> = HashMap::new();
            let mut ticks = 0;
            while ticks < TICKS_PER_CLIENT {
                let msg = client.recv().await;
                let sym = msg["sym"].as_str().expect("tick or snapshot").to_string();
                assert!(subscribed.contains(&sym), "{sym} was not subscribed");
                let seq = msg["seq"].as_u64().unwrap();
                match msg["type"].as_str().unwrap() {
                    "snapshot" => {
                        assert!(last.insert(sym, seq).is_none(), "second snapshot");
                    }
                    "tick" => {
                        if let Some(prev) = last.insert(sym.clone(), seq) {
                            assert_eq!(seq, prev + 1, "client {n}: gap in {sym}");
                        }
                        ticks += 1;
                    }
                    other => panic!("unexpected {other}"),
                }
            }
            ticks
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += within("a client's ticks", task).await.expect("client task");
    }
    assert_eq!(total, CLIENTS * TICKS_PER_CLIENT);
    assert_eq!(Stats::get(&server.stats.ring_lagged), 0);
    assert_eq!(Stats::get(&server.stats.conflated), 0, "nobody fell behind");
    server.stop().await;
}

/// A pass writing more sockets than it writes between two looks at the
/// ring takes in ticks published while it writes, for the sockets it has
/// yet to write; each client, on `*` or on a few symbols, still gets every
/// tick of its symbols once, in order, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_taken_in_while_a_pass_writes_reach_every_client_once_in_order() {
    ticks_taken_in_while_a_pass_writes(true).await;
}

/// The same on a shard where no one is on `*`, as a dashboard's is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_taken_in_while_a_pass_writes_reach_named_subscribers_once_in_order() {
    ticks_taken_in_while_a_pass_writes(false).await;
}

/// 100 clients on one shard (more sockets than are written between two
/// looks at the ring, `WRITES_PER_RING_LOOK`): with `star`, every other
/// one on `*` and the rest on every other symbol; without, all on every
/// other symbol.
async fn ticks_taken_in_while_a_pass_writes(star: bool) {
    const CLIENTS: usize = 100;
    // Ticks each client checks once all of them are subscribed.
    const TICKS_TOGETHER: usize = 1_000;
    let mut cfg = config();
    cfg.shards = 1;
    cfg.rate = 1_000.0;
    cfg.symbols = 20;
    never_conflate(&mut cfg);
    let server = start(cfg).await;

    let (status, body) = http_get(server.addr, "/symbols").await;
    assert_eq!(status, 200, "{body}");
    let rows: Value = serde_json::from_str(&body).expect("/symbols is JSON");
    let every_other: Vec<String> = rows
        .as_array()
        .expect("a row per symbol")
        .iter()
        .step_by(2)
        .map(|s| s["sym"].as_str().expect("sym").to_string())
        .collect();
    assert_eq!(every_other.len(), 10);
    let named: Vec<&str> = every_other.iter().map(String::as_str).collect();
    let named_set: HashSet<String> = every_other.iter().cloned().collect();

    let all_in = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for n in 0..CLIENTS {
        let mut client = server.connect().await;
        let wanted: Option<HashSet<String>> = if star && n % 2 == 0 {
            client.subscribe(&["*"]).await;
            None
        } else {
            client.subscribe(&named).await;
            Some(named_set.clone())
        };
        let all_in = all_in.clone();
        tasks.push(tokio::spawn(async move {
            let mut sequence = SeqCheck::default();
            let mut together = 0;
            while together < TICKS_TOGETHER {
                let msg = client.recv().await;
                if let Some(wanted) = &wanted {
                    let sym = msg["sym"].as_str().expect("tick or snapshot");
                    assert!(wanted.contains(sym), "{sym} was not subscribed");
                }
                if sequence.take(&msg) && all_in.load(Ordering::Relaxed) {
                    together += 1;
                }
            }
        }));
    }
    all_in.store(true, Ordering::Relaxed);
    for task in tasks {
        within("a client's ticks", task).await.expect("client task");
    }
    assert_eq!(Stats::get(&server.stats.conflated), 0, "nobody fell behind");
    server.stop().await;
}

use tickcast::stats::Stats;
