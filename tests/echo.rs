//! The echo route for conformance suites: off by default; with
//! `--echo-route` it echoes text and binary messages through the same
//! WebSocket layer as /ws, with the suites' larger limits.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn echoes_text_and_binary_and_is_off_by_default() {
    let server = start(config()).await;
    let (status, _) = http_get(server.addr, "/echo").await;
    assert_eq!(status, 404, "no echo route unless asked for");
    server.stop().await;

    let mut cfg = config();
    cfg.echo_route = Some("/echo".into());
    let server = start(cfg).await;
    let url = format!("ws://{}/echo", server.addr);
    let (mut ws, _) = within("connect", tokio_tungstenite::connect_async(url))
        .await
        .unwrap();
    // Larger than /ws allows (64 KiB), as the suites send.
    let big = "x".repeat(1 << 20);
    for message in [
        Message::text("héllo"),
        Message::binary(vec![0u8, 159, 146, 150]),
        Message::text(big),
    ] {
        ws.send(message.clone()).await.unwrap();
        let echoed = within("the echo", ws.next()).await.unwrap().unwrap();
        assert_eq!(echoed, message);
    }
    ws.close(None).await.unwrap();
    let close = within("the close answer", ws.next()).await;
    assert!(matches!(close, Some(Ok(Message::Close(_)))), "{close:?}");
    server.stop().await;
}
