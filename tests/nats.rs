//! A cluster fed through NATS, against a real `nats-server`: two nodes
//! carry identical tick streams, a client moving between them resumes
//! with `from` without a gap, and a node that loses NATS answers 503 on
//! /healthz, then recovers by itself with a reset snapshot for the symbols
//! whose seq jumped.
//!
//! Needs the `nats-server` binary on PATH (`apt-get install nats-server`).

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tickcast::config::FeedSource;
use tickcast::feed::nats::{subject, Payload};
use tickcast::price::Price;
use tickcast::tick::Tick;

/// A `nats-server` process on a port of its own; killed when dropped.
struct NatsServer {
    port: u16,
    child: Child,
}

impl NatsServer {
    /// Starts nats-server on a free port.
    async fn start() -> NatsServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        NatsServer::start_on(port).await
    }

    /// Starts nats-server on `port` and waits until it accepts connections.
    async fn start_on(port: u16) -> NatsServer {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot run nats-server ({err}); these tests need a real NATS server: \
                     install it with `apt-get install nats-server`"
                )
            });
        let server = NatsServer { port, child };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        within(&format!("nats-server listening on {addr}"), async {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server and waits for it to be gone.
    fn kill(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node fed from `nats`, carrying a fixed list of 10 symbols.
async fn node(nats: &NatsServer) -> TestServer {
    let mut cfg = config();
    cfg.feed = FeedSource::Nats(Some(nats.url()));
    cfg.symbols_file = Some(common::ingest::symbols_file(10));
    start(cfg).await
}

/// A test publisher: sends exactly the ticks it is told to.
struct Publisher {
    client: async_nats::Client,
}

impl Publisher {
    async fn connect(nats: &NatsServer) -> Publisher {
        let client = within(
            "the publisher's NATS connection",
            async_nats::connect(nats.url()),
        )
        .await
        .expect("connect to nats-server");
        Publisher { client }
    }

    /// Publishes tick `seq` of `sym` (price derived from seq) and flushes;
    /// odd seqs in the compact form, even ones as JSON, since nodes read
    /// both.
    async fn send(&self, sym: &str, seq: u64) {
        let cents = |c: i64| Price::from_scaled(c, 2).expect("in range");
        let px = 10_000 + seq as i64;
        let tick = Payload::from_tick(
            sym,
            &Tick {
                symbol: 0,
                seq,
                px: cents(px),
                bid: cents(px - 1),
                ask: cents(px + 1),
                size: 100 + seq as u32,
                ts: 1_700_000_000_000_000_000 + seq,
            },
        );
        let payload = if seq % 2 == 1 {
            tick.encode()
        } else {
            tick.encode_json()
        };
        self.client
            .publish(subject(sym), payload.into())
            .await
            .expect("publish");
        within("a NATS flush", self.client.flush())
            .await
            .expect("flush");
    }
}

impl Publisher {
    /// Publishes `payload` on `subject` as is, and flushes.
    async fn send_payload(&self, subject: String, payload: Vec<u8>) {
        self.client
            .publish(subject, payload.into())
            .await
            .expect("publish");
        within("a NATS flush", self.client.flush())
            .await
            .expect("flush");
    }
}

/// A node that learns its symbols from the ticks on NATS.
async fn learning_node(nats: &NatsServer) -> TestServer {
    let mut cfg = config();
    cfg.feed = FeedSource::Nats(Some(nats.url()));
    start(cfg).await
}

/// Publishes ticks of `sym` from `seq` on (one every 20 ms, pacing only)
/// until every node has taken in at least one more tick: then each
/// node's subscription is live. Returns the next unused seq.
async fn until_subscribed(
    publisher: &Publisher,
    nodes: &[&TestServer],
    sym: &str,
    seq: u64,
) -> u64 {
    let before: Vec<u64> = nodes
        .iter()
        .map(|n| tickcast::stats::Stats::get(&n.stats.ticks_ingested))
        .collect();
    let mut seq = seq;
    within("every node subscribed to NATS", async {
        loop {
            publisher.send(sym, seq).await;
            seq += 1;
            let all = nodes
                .iter()
                .zip(&before)
                .all(|(n, b)| tickcast::stats::Stats::get(&n.stats.ticks_ingested) > *b);
            if all {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    seq
}

/// (type, sym, seq, px, size, ts) of a message, for comparing streams.
fn key(v: &Value) -> (String, String, u64, f64, u64, u64) {
    (
        v["type"].as_str().unwrap().to_string(),
        v["sym"].as_str().unwrap().to_string(),
        v["seq"].as_u64().unwrap(),
        v["px"].as_f64().unwrap(),
        v["size"].as_u64().unwrap(),
        v["ts"].as_u64().unwrap(),
    )
}

/// Reads ticks until one of `sym` with `seq` arrives; returns them all.
async fn ticks_through(client: &mut Client, sym: &str, seq: u64) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let v = client
            .recv_until(|v| v["type"] == "tick" || v["type"] == "snapshot")
            .await;
        let done = v["sym"] == sym && v["seq"] == seq;
        got.push(v);
        if done {
            return got;
        }
    }
}

async fn healthz_becomes(node: &TestServer, status: u16) -> String {
    within(&format!("/healthz answering {status}"), async {
        loop {
            let (got, body) = http_get(node.addr, "/healthz").await;
            if got == status {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test]
async fn two_nodes_carry_identical_streams() {
    let nats = NatsServer::start().await;
    let (a, b) = (node(&nats).await, node(&nats).await);
    let publisher = Publisher::connect(&nats).await;
    let next = until_subscribed(&publisher, &[&a, &b], "AAPL", 1).await;

    let (mut on_a, mut on_b) = (a.connect().await, b.connect().await);
    on_a.subscribe(&["AAPL", "MSFT"]).await;
    on_b.subscribe(&["AAPL", "MSFT"]).await;
    for i in 0..100 {
        publisher.send("AAPL", next + i).await;
        publisher.send("MSFT", 1 + i).await;
    }
    // The last tick published is MSFT 100.
    let from_a = ticks_through(&mut on_a, "MSFT", 100).await;
    let from_b = ticks_through(&mut on_b, "MSFT", 100).await;
    // Only the ticks of this batch: the fan-out may still have been
    // delivering the last probe tick when the clients subscribed.
    let ticks = |msgs: &[Value]| -> Vec<_> {
        msgs.iter()
            .filter(|v| v["type"] == "tick")
            .filter(|v| v["sym"] == "MSFT" || v["seq"].as_u64().unwrap() >= next)
            .map(key)
            .collect()
    };
    let (ticks_a, ticks_b) = (ticks(&from_a), ticks(&from_b));
    assert_eq!(ticks_a.len(), 200, "every published tick reached node A");
    assert_eq!(ticks_a, ticks_b, "both nodes sent the same ticks");
    assert_eq!(
        ticks_a.first().map(|t| (t.1.as_str(), t.2)),
        Some(("AAPL", next))
    );
    let (_, metrics) = http_get(a.addr, "/metrics").await;
    assert!(
        metrics.lines().any(|l| l == "tickcast_feed_connected 1"),
        "{metrics}"
    );
    drop((on_a, on_b));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn two_learning_nodes_carry_a_publishers_own_symbols_identically() {
    let nats = NatsServer::start().await;
    let (a, b) = (learning_node(&nats).await, learning_node(&nats).await);
    let publisher = Publisher::connect(&nats).await;
    until_subscribed(&publisher, &[&a, &b], "PROBE", 1).await;
    let (mut on_a, mut on_b) = (a.connect().await, b.connect().await);
    for client in [&mut on_a, &mut on_b] {
        let reply = client.subscribe(&["*"]).await;
        assert_eq!(reply["symbols"], json!(["PROBE"]));
    }
    let price = |text: &str| text.parse::<Price>().expect("a price");
    let option = "SPY 261218C00600000";
    let compact = |sym: &str, seq: u64, px: &str| {
        Payload {
            sym: sym.into(),
            seq,
            px: price(px),
            bid: price(px),
            ask: price(px),
            size: 7,
            ts: 1_700_000_000_000_000_000 + seq,
        }
        .encode()
    };
    publisher
        .send_payload(subject("BTC-USD"), compact("BTC-USD", 1, "64123.5"))
        .await;
    // JSON, prices as strings, the name left to the subject.
    let json_tick =
        br#"{"seq":1,"px":"1.08435","bid":1.08434,"ask":"1.08436","size":1000000,"ts":9}"#;
    publisher
        .send_payload(subject("EURUSD"), json_tick.to_vec())
        .await;
    publisher
        .send_payload(subject(option), compact(option, 1, "0.0001"))
        .await;
    publisher
        .send_payload(subject("BTC-USD"), compact("BTC-USD", 2, "64123"))
        .await;
    let mut streams = Vec::new();
    for client in [&mut on_a, &mut on_b] {
        let mut texts = Vec::new();
        loop {
            let text = client.recv_text().await;
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["sym"] == "PROBE" {
                continue;
            }
            let last = v["sym"] == "BTC-USD" && v["seq"] == 2;
            texts.push(text);
            if last {
                break;
            }
        }
        streams.push(texts);
    }
    assert_eq!(streams[0], streams[1], "both nodes sent the same messages");
    let stream = streams[0].join("\n");
    for expected in [
        r#"{"type":"subscribed","symbols":["BTC-USD"]}"#,
        r#"{"type":"snapshot","sym":"BTC-USD","seq":1,"px":64123.5,"bid":64123.5,"ask":64123.5,"#,
        r#"{"type":"subscribed","symbols":["EURUSD"]}"#,
        r#""sym":"EURUSD","seq":1,"px":1.08435,"bid":1.08434,"ask":1.08436,"size":1000000,"#,
        r#"{"type":"subscribed","symbols":["SPY 261218C00600000"]}"#,
        r#""sym":"SPY 261218C00600000","seq":1,"px":0.0001,"#,
        r#"{"type":"tick","sym":"BTC-USD","seq":2,"px":64123,"#,
    ] {
        assert!(stream.contains(expected), "{stream}\nlacks {expected}");
    }
    assert_eq!(streams[0].len(), 7, "{stream}");
    for node in [&a, &b] {
        let (_, body) = http_get(node.addr, "/symbols").await;
        assert!(body.contains(r#""sym":"SPY 261218C00600000""#), "{body}");
    }
    drop((on_a, on_b));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_client_moving_between_nodes_resumes_without_a_gap() {
    let nats = NatsServer::start().await;
    let (a, b) = (node(&nats).await, node(&nats).await);
    let publisher = Publisher::connect(&nats).await;
    let mut seq = until_subscribed(&publisher, &[&a, &b], "NVDA", 1).await;

    let mut client = a.connect().await;
    client.subscribe(&["NVDA"]).await;
    for _ in 0..20 {
        publisher.send("NVDA", seq).await;
        seq += 1;
    }
    let seen = ticks_through(&mut client, "NVDA", seq - 1).await;
    let last_seen = seen.last().unwrap()["seq"].as_u64().unwrap();
    drop(client);

    // Ticks go on while the client is away; node B has them too.
    for _ in 0..30 {
        publisher.send("NVDA", seq).await;
        seq += 1;
    }
    let latest = seq - 1;
    within("node B having every tick", async {
        loop {
            let (_, body) = http_get(b.addr, "/symbols").await;
            let rows: Value = serde_json::from_str(&body).unwrap();
            let nvda = rows.as_array().unwrap().iter().find(|r| r["sym"] == "NVDA");
            if nvda.is_some_and(|r| r["seq"] == latest) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    let mut moved = b.connect().await;
    moved
        .send(json!({"op": "subscribe", "symbols": ["NVDA"], "from": {"NVDA": last_seen}}))
        .await;
    moved.recv_until(|v| v["type"] == "subscribed").await;
    let resumed = ticks_through(&mut moved, "NVDA", latest).await;
    let seqs: Vec<u64> = resumed.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert!(
        resumed.iter().all(|v| v["type"] == "tick"),
        "no snapshot or reset: {resumed:?}"
    );
    assert_eq!(seqs, (last_seen + 1..=latest).collect::<Vec<_>>());
    drop(moved);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn losing_nats_makes_nodes_unready_and_they_recover_with_a_reset() {
    let nats = NatsServer::start().await;
    let (a, b) = (node(&nats).await, node(&nats).await);
    let publisher = Publisher::connect(&nats).await;
    let seq = until_subscribed(&publisher, &[&a, &b], "TSLA", 1).await;
    assert_eq!(healthz_becomes(&a, 200).await, "ok\n");

    let mut client = a.connect().await;
    client.subscribe(&["TSLA"]).await;
    publisher.send("TSLA", seq).await;
    ticks_through(&mut client, "TSLA", seq).await;

    let port = nats.kill();
    drop(publisher);
    for node in [&a, &b] {
        assert_eq!(
            healthz_becomes(node, 503).await,
            "not ready: NATS disconnected\n"
        );
    }
    let (_, metrics) = http_get(a.addr, "/metrics").await;
    assert!(
        metrics.lines().any(|l| l == "tickcast_feed_connected 0"),
        "{metrics}"
    );
    // The node still serves its last snapshot to new clients.
    let mut late = b.connect().await;
    late.subscribe(&["TSLA"]).await;
    let snapshot = late.recv_until(|v| v["type"] == "snapshot").await;
    assert_eq!(snapshot["seq"], seq);

    // Back on the same port: the nodes reconnect by themselves, and the
    // publisher carries on ten seqs further (ticks missed meanwhile).
    let nats = NatsServer::start_on(port).await;
    for node in [&a, &b] {
        assert_eq!(healthz_becomes(node, 200).await, "ok\n");
    }
    let publisher = Publisher::connect(&nats).await;
    let resumed_at = seq + 10;
    let after = until_subscribed(&publisher, &[&a, &b], "TSLA", resumed_at).await;
    let first = client
        .recv_until(|v| v["sym"] == "TSLA" && (v["type"] == "tick" || v["type"] == "snapshot"))
        .await;
    assert_eq!(first["type"], "snapshot", "{first}");
    assert_eq!(first["reset"], true, "{first}");
    assert!(first["seq"].as_u64().unwrap() >= resumed_at, "{first}");
    // And live ticks follow.
    publisher.send("TSLA", after).await;
    let next = client.recv_until(|v| v["type"] == "tick").await;
    assert!(next["seq"].as_u64().unwrap() > first["seq"].as_u64().unwrap());
    drop((client, late));
    a.stop().await;
    b.stop().await;
}
