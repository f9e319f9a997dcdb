//! Bad input gets a clear error or the right close code, and nobody else
//! notices: every error code of protocol v1, every close code the reader
//! sends, and the HTTP errors. The fastwebsockets-specific traps have their
//! own file, `fastwebsockets_traps.rs`.

mod common;

use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

async fn error_code(client: &mut Client) -> String {
    let reply = client.recv_until(|v| v["type"] == "error").await;
    assert!(
        reply["message"].as_str().is_some_and(|m| m.len() > 10),
        "errors explain themselves: {reply}"
    );
    reply["code"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn every_error_code_keeps_the_connection_open() {
    let mut cfg = config();
    cfg.max_subscriptions = 3;
    let server = start(cfg).await;
    let mut client = server.connect().await;
    let cases: [(&str, &str); 7] = [
        ("{not json", "bad_json"),
        ("[1,2,3]", "bad_request"),
        (r#"{"op":"subscribe","symbols":"AAPL"}"#, "bad_request"),
        (r#"{"op":"trade","symbols":["AAPL"]}"#, "unknown_op"),
        (r#"{"op":"subscribe","symbols":["NOPE"]}"#, "unknown_symbol"),
        (
            r#"{"op":"unsubscribe","symbols":["NOPE"]}"#,
            "unknown_symbol",
        ),
        (
            r#"{"op":"subscribe","symbols":["AAPL","MSFT","NVDA","AMZN"]}"#,
            "too_many_symbols",
        ),
    ];
    for (request, expected) in cases {
        client.send_raw(Message::text(request)).await;
        assert_eq!(error_code(&mut client).await, expected, "for {request}");
    }
    client.send_raw(Message::binary(vec![1, 2, 3])).await;
    assert_eq!(error_code(&mut client).await, "binary_not_supported");

    // Still open and serving: a mixed request subscribes what it can.
    client
        .send(json!({"op": "subscribe", "symbols": ["AAPL", "ZZZZZ"]}))
        .await;
    assert_eq!(error_code(&mut client).await, "unknown_symbol");
    let reply = client.recv_until(|v| v["type"] == "subscribed").await;
    assert_eq!(reply["symbols"], json!(["AAPL"]));
    client.recv_until(|v| v["type"] == "tick").await;
    client.send(json!({"op": "ping", "id": 9})).await;
    client
        .recv_until(|v| v == &json!({"type": "pong", "id": 9}))
        .await;
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn oversized_messages_close_with_1009_even_when_fragmented() {
    let server = start(config()).await;
    // One frame over 64 KiB.
    let mut raw = RawClient::connect(server.addr, &[]).await;
    raw.write(&client_frame(true, 1, true, &vec![b' '; 64 * 1024 + 1]))
        .await;
    let (close, _) = raw.read_until_close().await;
    assert_eq!(close.close_code(), 1009);

    // Many small fragments adding up to more than 64 KiB.
    let mut raw = RawClient::connect(server.addr, &[]).await;
    raw.write(&client_frame(false, 1, true, &[b' '; 1000]))
        .await;
    for _ in 0..70 {
        raw.write(&client_frame(false, 0, true, &[b' '; 1000]))
            .await;
    }
    let (close, _) = raw.read_until_close().await;
    assert_eq!(close.close_code(), 1009);
    server.stop().await;
}

#[tokio::test]
async fn protocol_violations_get_1002_and_bad_utf8_gets_1007() {
    let server = start(config()).await;
    let violations: [(&str, Vec<u8>, u16); 8] = [
        (
            "unmasked client frame",
            client_frame(true, 1, false, br#"{"op":"ping"}"#),
            1002,
        ),
        ("fragmented ping", client_frame(false, 9, true, b"hi"), 1002),
        (
            "reserved bit set",
            {
                let mut f = client_frame(true, 1, true, b"{}");
                f[0] |= 0x40;
                f
            },
            1002,
        ),
        (
            "continuation without start",
            client_frame(true, 0, true, b"x"),
            1002,
        ),
        (
            "invalid UTF-8",
            client_frame(true, 1, true, &[0xff, 0xfe, b'a']),
            1007,
        ),
        (
            "pong over 125 bytes",
            client_frame(true, 10, true, &[b'p'; 126]),
            1002,
        ),
        (
            "a message started inside another",
            {
                let mut f = client_frame(false, 1, true, br#"{"op""#);
                f.extend(client_frame(false, 1, true, br#"{"op""#));
                f
            },
            1002,
        ),
        (
            "close code 1005 on the wire",
            client_frame(true, 8, true, &1005u16.to_be_bytes()),
            1002,
        ),
    ];
    for (what, bytes, expected) in violations {
        let mut raw = RawClient::connect(server.addr, &[]).await;
        raw.send_text(r#"{"op":"ping","id":1}"#).await;
        assert_eq!(raw.recv_until(|v| v["type"] == "pong").await["id"], 1);
        raw.write(&bytes).await;
        let (close, _) = raw.read_until_close().await;
        assert_eq!(close.close_code(), expected, "{what}");
        if what.starts_with("close code") {
            // Our own reason, not the library's echo of the client's.
            assert!(
                close.payload.starts_with(b"\x03\xeaprotocol error"),
                "{close:?}"
            );
        }
        assert!(!close.masked, "server frames are unmasked");
        assert!(
            raw.read_frame().await.is_none(),
            "{what}: nothing follows the close frame"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn http_errors_are_readable() {
    let server = start(config()).await;
    let (status, body) = http_get(server.addr, "/ws").await;
    assert_eq!(status, 426);
    assert!(body.contains("WebSocket endpoint"), "{body}");
    let (status, body) = http_get(server.addr, "/nope").await;
    assert_eq!(status, 404);
    assert!(body.contains("/ws"), "{body}");
    let (status, body) = http_get(server.addr, "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    server.stop().await;
}

#[tokio::test]
async fn a_misbehaving_client_costs_a_well_behaved_one_nothing() {
    let mut cfg = config();
    cfg.symbols = 5;
    let server = start(cfg).await;
    let mut good = server.connect().await;
    good.subscribe(&["*"]).await;
    let mut last_seq = std::collections::HashMap::new();
    let mut check = |msg: &serde_json::Value| {
        let sym = msg["sym"].as_str().unwrap().to_string();
        let seq = msg["seq"].as_u64().unwrap();
        if let Some(prev) = last_seq.insert(sym.clone(), seq) {
            assert_eq!(seq, prev + 1, "gap in {sym}");
        }
    };
    for round in 0..20 {
        // Abuse on another connection...
        let mut bad = RawClient::connect(server.addr, &[]).await;
        for _ in 0..50 {
            bad.send_text("{broken").await;
        }
        bad.write(&client_frame(true, 1, false, b"unmasked")).await;
        let (close, _) = bad.read_until_close().await;
        assert_eq!(close.close_code(), 1002, "round {round}");
        // ...while the good client's stream stays gap-free.
        for _ in 0..20 {
            let msg = good.recv().await;
            if msg["type"] == "tick" || msg["type"] == "snapshot" {
                check(&msg);
            }
        }
    }
    drop(good);
    server.stop().await;
}

#[tokio::test]
async fn a_request_just_before_a_violation_is_still_answered() {
    let server = start(config()).await;
    let mut raw = RawClient::connect(server.addr, &[]).await;
    // One write: a valid ping request, then an unmasked frame.
    let mut bytes = client_frame(true, 1, true, br#"{"op":"ping","id":"first"}"#);
    bytes.extend(client_frame(true, 1, false, b"{}"));
    raw.write(&bytes).await;
    let pong = raw.read_frame().await.expect("pong").json();
    assert_eq!(pong, json!({"type": "pong", "id": "first"}));
    let (close, _) = raw.read_until_close().await;
    assert_eq!(close.close_code(), 1002);
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_pings_without_reading_is_held_back() {
    let mut cfg = config();
    cfg.max_outbox_bytes = 16 * 1024;
    let server = start(cfg).await;
    let mut raw = RawClient::connect(server.addr, &[]).await;
    // 100,000 pings (600 KB) and never a read: answered in full, that is
    // 200 KB of pongs waiting for a client that does not read.
    let ping = client_frame(true, 9, true, b"");
    let flood: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 100_000)
        .collect();
    let write = raw.write(&flood);
    // The server stops reading, so the write may never complete: stop
    // trying after the first part went out.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), write).await;
    drop(raw);
    server
        .until_stats("the session to end", |s| {
            s.sessions_open.load(std::sync::atomic::Ordering::Relaxed) == 0
        })
        .await;
    let peak = server
        .stats
        .peak_outbox_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    // The limit, plus at most the one reply that crossed it (pings past
    // the rate limit are answered with a `rate_limited` error, < 256 B).
    assert!(peak <= 16 * 1024 + 256, "replies held: {peak} bytes");
    server.stop().await;
}
