//! Regression tests for the traps in fastwebsockets 0.10.0 that tickcast
//! works around; each names the behaviour of the library it guards against.
//!
//! * The upgrade's `read_buf` holds bytes the client sent right after the
//!   handshake; they must reach the reader (`src/http/ws.rs`).
//! * In split mode the library can answer a close with a second close
//!   frame; `/ws` no longer uses its reader, and the outbox lets exactly
//!   one close out (`src/fanout/outbox.rs`).
//! * `read_frame` is not cancellation-safe; the shard's own frame reader
//!   keeps a request that trickles in while ticks flow
//!   (`src/wire/reader.rs`).
//! * Unmasked client frames are accepted by the library and an unbounded
//!   fragmented message is collected whole; `src/wire/reader.rs` refuses
//!   both, see `bad_input.rs`.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn a_request_sent_with_the_handshake_is_not_lost() {
    let server = start(config()).await;
    let early = client_frame(true, 1, true, br#"{"op":"ping","id":"early"}"#);
    let mut raw = RawClient::connect(server.addr, &early).await;
    let pong = raw.read_frame().await.expect("pong").json();
    assert_eq!(pong, json!({"type": "pong", "id": "early"}));
    drop(raw);
    server.stop().await;
}

#[tokio::test]
async fn client_close_is_answered_by_exactly_one_close_frame() {
    let server = start(config()).await;
    let mut raw = RawClient::connect(server.addr, &[]).await;
    raw.send_text(r#"{"op":"subscribe","symbols":["*"]}"#).await;
    raw.recv_until(|v| v["type"] == "tick").await;
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    raw.write(&client_frame(true, 8, true, &payload)).await;
    let (close, _) = raw.read_until_close().await;
    assert_eq!(close.close_code(), 1000);
    assert_eq!(&close.payload[2..], b"bye");
    let mut after = Vec::new();
    while let Some(frame) = raw.read_frame().await {
        after.push(frame);
    }
    assert!(after.is_empty(), "frames after the close: {after:?}");
    drop(raw);
    server.stop().await;
}

#[tokio::test]
async fn a_server_close_answered_by_the_client_is_not_closed_twice() {
    let server = start(config()).await;
    let mut raw = RawClient::connect(server.addr, &[]).await;
    raw.send_text(r#"{"op":"subscribe","symbols":["*"]}"#).await;
    raw.recv_until(|v| v["type"] == "tick").await;
    let stopping = tokio::spawn(server.stop());
    let (close, _) = raw.read_until_close().await;
    assert_eq!(close.close_code(), 1001);
    // The client answers as RFC 6455 asks; the library would echo that
    // answer with a second close frame.
    raw.write(&client_frame(true, 8, true, &close.payload))
        .await;
    let mut after = Vec::new();
    while let Some(frame) = raw.read_frame().await {
        after.push(frame);
    }
    assert!(after.is_empty(), "frames after the close: {after:?}");
    within("shutdown", stopping).await.unwrap();
}

#[tokio::test]
async fn a_request_trickling_in_while_ticks_flow_is_read_intact() {
    let mut cfg = config();
    cfg.rate = 10_000.0;
    let server = start(cfg).await;
    let mut raw = RawClient::connect(server.addr, &[]).await;
    raw.send_text(r#"{"op":"subscribe","symbols":["*"]}"#).await;
    raw.recv_until(|v| v["type"] == "tick").await;
    // One frame, written a byte at a time, each byte only after another
    // tick arrived: the reader is mid-frame across many wake-ups.
    let frame = client_frame(true, 1, true, br#"{"op":"ping","id":"trickled"}"#);
    for byte in &frame {
        raw.write(std::slice::from_ref(byte)).await;
        raw.recv_until(|v| v["type"] == "tick" || v["type"] == "pong")
            .await;
    }
    let pong = raw.recv_until(|v| v["type"] == "pong").await;
    assert_eq!(pong, json!({"type": "pong", "id": "trickled"}));
    drop(raw);
    server.stop().await;
}
