//! A client that stops reading is conflated, then closed with 1008
//! `slow consumer`, while a fast client keeps every tick; the stalled
//! client's memory stays bounded throughout.

mod common;

use std::collections::HashMap;

use common::*;
use tickcast::stats::Stats;
use tokio::net::TcpSocket;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_client_is_conflated_then_closed_while_fast_client_keeps_every_tick() {
    const MAX_OUTBOX: usize = 128 * 1024;
    const SYMBOLS: usize = 20;
    let mut cfg = config();
    // Slow enough that the fast (debug-build) client keeps up even on a
    // busy machine: it may stall for ~0.4 s before reaching the limit.
    cfg.rate = 2_000.0;
    cfg.symbols = SYMBOLS as u32;
    cfg.max_outbox_bytes = MAX_OUTBOX;
    cfg.slow_consumer_timeout = std::time::Duration::from_millis(300);
    let server = start(cfg).await;

    let mut fast = server.connect().await;
    fast.subscribe(&["*"]).await;

    // The stalled client: a small receive window so the kernel does not
    // absorb megabytes before the server notices.
    let mut stalled = stalled_client(&server).await;

    // The fast client reads gap-free until the server has given up on the
    // stalled one.
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut ticks = 0u64;
    let fast_reader = async {
        loop {
            let msg = fast.recv().await;
            if msg["type"] != "tick" {
                continue;
            }
            let sym = msg["sym"].as_str().unwrap().to_string();
            let seq = msg["seq"].as_u64().unwrap();
            if let Some(prev) = last.insert(sym.clone(), seq) {
                assert_eq!(seq, prev + 1, "the fast client lost a tick of {sym}");
            }
            ticks += 1;
            if Stats::get(&server.stats.slow_consumer_closes) >= 1 && ticks > 2_000 {
                break;
            }
        }
    };
    within("the slow consumer to be closed", fast_reader).await;
    assert!(
        Stats::get(&server.stats.conflated) > 0,
        "it was conflated first"
    );

    // Now the stalled client reads what reached it before the server gave
    // up: ticks in order, then the 1008 close. Its receive buffer grows
    // first: with the tiny one, the kernel prunes what arrives and backs
    // off its retransmissions, so draining the server's send buffer could
    // take longer than the server lingers on a closed connection.
    widen_receive_buffer(&stalled);
    let mut last: HashMap<String, u64> = HashMap::new();
    let close = loop {
        use futures_util::StreamExt;
        match within("the stalled client's backlog", stalled.next()).await {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                let msg: serde_json::Value = serde_json::from_str(&text).unwrap();
                if msg["type"] == "tick" {
                    let sym = msg["sym"].as_str().unwrap().to_string();
                    let seq = msg["seq"].as_u64().unwrap();
                    if let Some(prev) = last.insert(sym, seq) {
                        assert!(seq > prev, "ticks stay in order per symbol");
                    }
                }
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => break frame,
            other => panic!("expected ticks then a close, got {other:?}"),
        }
    };
    // Polling on sends the client's answering close, which ends the session.
    {
        use futures_util::StreamExt;
        let _ = within("the end of the stream", stalled.next()).await;
    }
    assert_eq!(code(&close), 1008);
    assert_eq!(&*close.unwrap().reason, "slow consumer");

    // Bounded memory: the outbox never held much more than its limit plus
    // one frame per symbol (conflated) plus the subscribe reply.
    server
        .until_stats("the stalled session to end", |s| {
            s.sessions_open.load(std::sync::atomic::Ordering::Relaxed) == 1
        })
        .await;
    let peak = server
        .stats
        .peak_outbox_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        peak <= MAX_OUTBOX + SYMBOLS * 200 + 8 * 1024,
        "peak outbox {peak} bytes"
    );
    drop(fast);
    server.stop().await;
}

/// Lets a client that stopped reading with a tiny receive buffer drain at
/// full speed once it reads again.
fn widen_receive_buffer(
    ws: &tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) {
    let tokio_tungstenite::MaybeTlsStream::Plain(stream) = ws.get_ref() else {
        unreachable!("a plain TCP client");
    };
    socket2::SockRef::from(stream)
        .set_recv_buffer_size(4 << 20)
        .unwrap();
}

/// A stalled socket with a small receive window, subscribed to `*`.
async fn stalled_client(
    server: &TestServer,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures_util::SinkExt;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream =
        tokio_tungstenite::MaybeTlsStream::Plain(socket.connect(server.addr).await.unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(server.url(), stream)
        .await
        .unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        r#"{"op":"subscribe","symbols":["*"]}"#,
    ))
    .await
    .unwrap();
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_falls_behind_gets_the_newest_prices_and_recovers() {
    let mut cfg = config();
    // Slow enough for a debug-build client on a busy machine to catch up.
    cfg.rate = 2_000.0;
    cfg.symbols = 20;
    cfg.max_outbox_bytes = 32 * 1024;
    cfg.slow_consumer_timeout = std::time::Duration::from_secs(60);
    let server = start(cfg).await;
    let ws = stalled_client(&server).await;
    let mut client = Client { ws };
    // `conflated` counts ticks that replaced an unsent one: at least one
    // symbol has lost a tick, so the client must see a jump.
    server
        .until_stats("the stalled client to be conflated", |s| {
            Stats::get(&s.conflated) > 0
        })
        .await;
    widen_receive_buffer(&client.ws);

    // Reading again: in-order ticks, then a jump per symbol where ticks
    // were conflated, then contiguous again once it has caught up.
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut jumps = 0;
    let mut contiguous_after_jump = 0;
    // A client that never catches up fails here rather than hanging.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while contiguous_after_jump < 2_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the client did not catch up within 60 s ({jumps} jumps so far)"
        );
        let msg = client.recv().await;
        if msg["type"] != "tick" {
            continue;
        }
        let sym = msg["sym"].as_str().unwrap().to_string();
        let seq = msg["seq"].as_u64().unwrap();
        if let Some(prev) = last.insert(sym, seq) {
            assert!(seq > prev, "never an older price after a newer one");
            if seq > prev + 1 {
                jumps += 1;
                contiguous_after_jump = 0;
            } else if jumps > 0 {
                contiguous_after_jump += 1;
            }
        }
    }
    assert!(jumps > 0, "conflation shows as seq jumps");
    assert_eq!(Stats::get(&server.stats.slow_consumer_closes), 0);
    drop(client);
    server.stop().await;
}
