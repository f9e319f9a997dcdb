//! Market-data semantics against the real server: resuming with `from`
//! (an exact replay, or a reset snapshot when the history does not reach
//! back), reset snapshots for gaps in the feed, `max_hz` throttling and
//! `ticks` batches. Ticks come through `/ingest` where a test must know
//! exactly which ticks the server has, from the simulator otherwise.

mod common;

use std::collections::HashMap;
use std::time::Instant;

use common::ingest::*;
use common::*;
use serde_json::{json, Value};

/// An ingest-fed server keeping `depth` ticks per symbol, a connected
/// publisher, and a watcher subscribed to AAPL. One shard: these tests
/// know what the server holds from what the watcher saw, which is what
/// every shard holds only once each has read the ring that far (a client
/// resuming on a shard still behind gets the rest live instead of
/// replayed; tests/shards.rs covers resuming across shards).
async fn ingest_setup(depth: u32) -> (TestServer, Client, Client) {
    let mut cfg = ingest_config();
    cfg.history_depth = depth;
    cfg.shards = 1;
    let server = start(cfg).await;
    let publisher = publisher(&server, TOKEN).await.expect("admitted");
    let mut watcher = server.connect().await;
    watcher.subscribe(&["AAPL"]).await;
    (server, publisher, watcher)
}

/// Publishes `seqs` of AAPL and waits until the watcher has seen the last
/// one: from then on the fan-out has them all.
async fn publish(
    publisher: &mut Client,
    watcher: &mut Client,
    seqs: std::ops::RangeInclusive<u64>,
) {
    let last = *seqs.end();
    publisher.send(ticks("AAPL", seqs)).await;
    watcher
        .recv_until(|v| v["sym"] == "AAPL" && v["seq"] == last)
        .await;
}

/// Subscribes to AAPL resuming after `from`; returns once `subscribed` is
/// read.
async fn resume(server: &TestServer, from: u64) -> Client {
    let mut client = server.connect().await;
    client
        .send(json!({"op": "subscribe", "symbols": ["AAPL"], "from": {"AAPL": from}}))
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    client
}

#[tokio::test]
async fn resume_replays_exactly_the_missed_ticks_then_continues_live() {
    let (server, mut publisher, mut watcher) = ingest_setup(64).await;
    // The client saw up to 10, then lost its connection while 11..=30 were
    // published: a gap of 20.
    publish(&mut publisher, &mut watcher, 1..=10).await;
    publish(&mut publisher, &mut watcher, 11..=30).await;
    let mut client = resume(&server, 10).await;
    for seq in 11..=30 {
        let msg = client.recv().await;
        assert_eq!(
            (msg["type"].as_str(), msg["seq"].as_u64()),
            (Some("tick"), Some(seq)),
            "{msg}"
        );
    }
    // Live ticks follow without a gap or a duplicate.
    publisher.send(ticks("AAPL", 31..=32)).await;
    for seq in 31..=32 {
        let msg = client.recv().await;
        assert_eq!(
            (msg["type"].as_str(), msg["seq"].as_u64()),
            (Some("tick"), Some(seq))
        );
    }
    assert_eq!(tickcast::stats::Stats::get(&server.stats.replayed), 20);
    drop((client, publisher, watcher));
    server.stop().await;
}

#[tokio::test]
async fn a_from_out_of_reach_gets_a_reset_snapshot() {
    let (server, mut publisher, mut watcher) = ingest_setup(8).await;
    publish(&mut publisher, &mut watcher, 1..=30).await;
    // 11..=30 is more than the 8 ticks kept; 99 is newer than anything here
    // (the client was on another server, or this one restarted).
    for from in [10, 99] {
        let mut client = resume(&server, from).await;
        let msg = client.recv().await;
        assert_eq!(msg["type"], "snapshot", "{msg}");
        assert_eq!(msg["reset"], true, "{msg}");
        assert_eq!(msg["seq"], 30);
    }
    // Within reach: no reset; current: nothing until the next tick.
    let mut within_reach = resume(&server, 22).await;
    assert_eq!(within_reach.recv().await["seq"], 23);
    let mut current = resume(&server, 30).await;
    publish(&mut publisher, &mut watcher, 31..=31).await;
    let msg = current.recv().await;
    assert_eq!(
        (msg["type"].as_str(), msg["seq"].as_u64()),
        (Some("tick"), Some(31))
    );
    assert!(msg.get("reset").is_none());
    drop((within_reach, current, publisher, watcher));
    server.stop().await;
}

#[tokio::test]
async fn a_gap_in_the_feed_reaches_subscribers_as_a_reset_snapshot() {
    let (server, mut publisher, mut watcher) = ingest_setup(64).await;
    publish(&mut publisher, &mut watcher, 1..=2).await;
    publisher.send(ticks("AAPL", [5, 6])).await;
    let reset = watcher.recv().await;
    assert_eq!(
        (
            reset["type"].as_str(),
            reset["seq"].as_u64(),
            reset["reset"].as_bool()
        ),
        (Some("snapshot"), Some(5), Some(true)),
        "{reset}"
    );
    let next = watcher.recv().await;
    assert_eq!(
        (next["type"].as_str(), next["seq"].as_u64()),
        (Some("tick"), Some(6))
    );
    // History restarts after the gap: 3 and 4 cannot be replayed.
    let mut before_gap = resume(&server, 2).await;
    assert_eq!(before_gap.recv().await["reset"], true);
    let mut after_gap = resume(&server, 5).await;
    assert_eq!(after_gap.recv().await["seq"], 6);
    drop((before_gap, after_gap, publisher, watcher));
    server.stop().await;
}

#[tokio::test]
async fn bad_options_are_refused_before_anything_is_applied() {
    let server = start(config()).await;
    let mut client = server.connect().await;
    for request in [
        json!({"op": "subscribe", "symbols": ["AAPL"], "from": {"MSFT": 3}}),
        json!({"op": "subscribe", "symbols": ["AAPL"], "from": {"AAPL": "3"}}),
        json!({"op": "subscribe", "symbols": ["AAPL"], "max_hz": 0}),
        json!({"op": "subscribe", "symbols": ["AAPL"], "max_hz": 5000}),
        json!({"op": "subscribe", "symbols": ["AAPL"], "batch": "yes"}),
    ] {
        client.send(request.clone()).await;
        let reply = client.recv().await;
        assert_eq!(reply["code"], "bad_request", "{request} → {reply}");
    }
    // Nothing was subscribed: the next reply lists AAPL as new.
    assert_eq!(
        client.subscribe(&["AAPL"]).await["symbols"],
        json!(["AAPL"])
    );
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn max_hz_caps_the_rate_and_skips_to_the_newest_price() {
    let mut cfg = config();
    // 100 ticks/s of each of 20 symbols.
    cfg.symbols = 20;
    cfg.rate = 2_000.0;
    let server = start(cfg).await;
    let mut client = server.connect().await;
    const MAX_HZ: f64 = 10.0;
    let before = Instant::now();
    client
        .send(json!({"op": "subscribe", "symbols": ["AAPL", "MSFT"], "max_hz": MAX_HZ}))
        .await;
    let mut seqs: HashMap<String, Vec<u64>> = HashMap::new();
    while seqs.values().map(Vec::len).min().unwrap_or(0) < 6 || seqs.len() < 2 {
        let msg = client.recv().await;
        if msg["type"] == "tick" {
            seqs.entry(msg["sym"].as_str().unwrap().into())
                .or_default()
                .push(msg["seq"].as_u64().unwrap());
        }
    }
    let elapsed = before.elapsed().as_secs_f64();
    for (sym, seqs) in &seqs {
        // Lane flushes are at least 1/MAX_HZ apart, the first after the
        // subscribe was sent: n ticks take at least (n - 1) intervals.
        let most = (elapsed * MAX_HZ).floor() as usize + 1;
        assert!(
            seqs.len() <= most,
            "{sym}: {} ticks in {elapsed:.2} s at max_hz {MAX_HZ}",
            seqs.len()
        );
        assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{sym}: {seqs:?}");
        // 100 ticks/s at 10 Hz: the skipped ticks show as seq jumps.
        assert!(seqs.windows(2).any(|w| w[1] > w[0] + 1), "{sym}: {seqs:?}");
    }
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn max_hz_always_delivers_the_last_tick_of_a_burst() {
    let (server, mut publisher, mut watcher) = ingest_setup(64).await;
    publish(&mut publisher, &mut watcher, 1..=1).await;
    let mut client = server.connect().await;
    client
        .send(json!({"op": "subscribe", "symbols": ["AAPL"], "max_hz": 4}))
        .await;
    assert_eq!(client.recv().await["type"], "subscribed");
    assert_eq!(client.recv().await["seq"], 1, "the snapshot");
    for burst in [2..=40, 41..=80] {
        let last = *burst.end();
        publisher.send(ticks("AAPL", burst)).await;
        let mut got = Vec::new();
        while got.last() != Some(&last) {
            let msg = client.recv().await;
            assert_eq!(msg["type"], "tick", "{msg}");
            got.push(msg["seq"].as_u64().unwrap());
        }
        assert!(got.windows(2).all(|w| w[1] > w[0]), "{got:?}");
        assert!(got.len() <= 3, "a burst of 40 throttled to {got:?}");
    }
    drop((client, publisher, watcher));
    server.stop().await;
}

#[tokio::test]
async fn batches_carry_every_tick_once_and_can_be_switched_off() {
    let mut cfg = config();
    cfg.symbols = 20;
    let server = start(cfg).await;
    let mut client = server.connect().await;
    client
        .send(json!({"op": "subscribe", "symbols": ["*"], "batch": true}))
        .await;
    assert_eq!(client.recv().await["type"], "subscribed");
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut ticks = 0;
    let check = |tick: &Value, last: &mut HashMap<String, u64>| {
        let sym = tick["sym"].as_str().unwrap().to_string();
        let seq = tick["seq"].as_u64().unwrap();
        if let Some(prev) = last.insert(sym.clone(), seq) {
            assert_eq!(seq, prev + 1, "{sym}: every tick exactly once");
        }
    };
    while ticks < 2_000 {
        let msg = client.recv().await;
        match msg["type"].as_str() {
            Some("snapshot") => check(&msg, &mut last),
            Some("ticks") => {
                let data = msg["data"].as_array().unwrap();
                assert!(!data.is_empty());
                for tick in data {
                    assert_eq!(tick["type"], "tick");
                    check(tick, &mut last);
                    ticks += 1;
                }
            }
            _ => panic!("with batches, ticks come as `ticks` frames: {msg}"),
        }
    }
    // Switched off: after the reply, one tick per frame. The batches that
    // were already on their way before the reply are checked too, or a
    // lagging client would see their ticks as a gap.
    client
        .send(json!({"op": "subscribe", "symbols": ["AAPL"], "batch": false}))
        .await;
    loop {
        let msg = client.recv().await;
        match msg["type"].as_str() {
            Some("subscribed") => break,
            Some("ticks") => msg["data"]
                .as_array()
                .unwrap()
                .iter()
                .for_each(|tick| check(tick, &mut last)),
            _ => panic!("before the reply, only batches: {msg}"),
        }
    }
    for _ in 0..200 {
        let msg = client.recv().await;
        assert_eq!(msg["type"], "tick", "{msg}");
        check(&msg, &mut last);
    }
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn a_throttled_star_resumes_and_batches_together() {
    let (server, mut publisher, mut watcher) = ingest_setup(64).await;
    publish(&mut publisher, &mut watcher, 1..=10).await;
    let mut client = server.connect().await;
    client
        .send(
            json!({"op": "subscribe", "symbols": ["*"], "from": {"AAPL": 7},
                     "max_hz": 20, "batch": true}),
        )
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["symbols"].as_array().unwrap().len(), 10, "{reply}");
    // Throttled, the resume brings the newest tick only, batched.
    let replay = client.recv().await;
    let seqs: Vec<u64> = replay["data"]
        .as_array()
        .unwrap_or_else(|| panic!("a batch: {replay}"))
        .iter()
        .map(|t| t["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [10]);
    publisher.send(ticks("AAPL", 11..=30)).await;
    let msg = client
        .recv_until(|v| v["type"] == "ticks" && v["data"][0]["seq"] == 30)
        .await;
    assert_eq!(msg["data"].as_array().unwrap().len(), 1);
    drop((client, publisher, watcher));
    server.stop().await;
}

#[tokio::test]
async fn a_throttled_resume_gets_only_the_newest_tick() {
    let (server, mut publisher, mut watcher) = ingest_setup(64).await;
    publish(&mut publisher, &mut watcher, 1..=10).await;
    let mut client = server.connect().await;
    client
        .send(json!({"op": "subscribe", "symbols": ["AAPL"], "from": {"AAPL": 3}, "max_hz": 4}))
        .await;
    assert_eq!(client.recv().await["type"], "subscribed");
    let msg = client.recv().await;
    assert_eq!(
        (msg["type"].as_str(), msg["seq"].as_u64()),
        (Some("tick"), Some(10)),
        "{msg}"
    );
    publish(&mut publisher, &mut watcher, 11..=11).await;
    assert_eq!(client.recv().await["seq"], 11, "then throttled live ticks");
    drop((client, publisher, watcher));
    server.stop().await;
}

#[tokio::test]
async fn one_subscribe_replays_at_most_max_replay_ticks() {
    use tickcast::fanout::MAX_REPLAY_TICKS;
    let (server, mut publisher, mut watcher) = ingest_setup(20_000).await;
    let mut msft_watcher = server.connect().await;
    msft_watcher.subscribe(&["MSFT"]).await;
    let per_symbol = (MAX_REPLAY_TICKS as u64) * 2 / 3;
    for (sym, watcher) in [("AAPL", &mut watcher), ("MSFT", &mut msft_watcher)] {
        for start in (1..=per_symbol).step_by(400) {
            let end = (start + 399).min(per_symbol);
            publisher.send(ticks(sym, start..=end)).await;
        }
        watcher
            .recv_until(|v| v["sym"] == sym && v["seq"] == per_symbol)
            .await;
    }
    let mut client = server.connect().await;
    client
        .send(
            json!({"op": "subscribe", "symbols": ["AAPL", "MSFT"], "from": {"AAPL": 0, "MSFT": 0}}),
        )
        .await;
    assert_eq!(client.recv().await["type"], "subscribed");
    // AAPL fits in the budget and is replayed whole; MSFT would not, so it
    // gets a reset snapshot.
    for seq in 1..=per_symbol {
        let msg = client.recv().await;
        assert_eq!(
            (msg["sym"].as_str(), msg["seq"].as_u64()),
            (Some("AAPL"), Some(seq))
        );
    }
    let msft = client.recv().await;
    assert_eq!(
        (
            msft["sym"].as_str(),
            msft["seq"].as_u64(),
            msft["reset"].as_bool()
        ),
        (Some("MSFT"), Some(per_symbol), Some(true)),
        "{msft}"
    );
    drop((client, publisher, watcher, msft_watcher));
    server.stop().await;
}
