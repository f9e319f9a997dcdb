//! A panic in the code handling one client's request (a bug; the tests'
//! build stands one in with its fault-injection request) costs that
//! connection alone: it is closed with 1011, the panic is counted, and the
//! shard's other clients go on being read and fed, every tick in order.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use serde_json::json;
use tickcast::session::PANIC_REQUEST;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_costs_one_connection_and_no_other_client_a_tick() {
    let mut cfg = config();
    // One shard: the bystander is read with the buffer the panic took.
    cfg.shards = 1;
    cfg.rate = 1_000.0;
    cfg.symbols = 20;
    never_conflate(&mut cfg);
    let server = start(cfg).await;

    let mut bystander = server.connect().await;
    bystander.subscribe(&["*"]).await;
    let mut sequence = SeqCheck::default();
    sequence.ticks(&mut bystander, 200).await;

    let mut victim = server.connect().await;
    let request = std::str::from_utf8(PANIC_REQUEST).expect("UTF-8");
    victim.send_raw(Message::text(request)).await;
    let frame = victim.expect_close().await;
    assert_eq!(code(&frame), 1011, "{frame:?}");
    assert_eq!(
        frame.as_ref().map(|frame| frame.reason.to_string()),
        Some("internal error".to_string())
    );
    assert_eq!(server.stats.connection_panics.load(Ordering::Relaxed), 1);

    // The bystander's socket is still read (its ping is answered), and its
    // ticks go on without a gap.
    bystander.send(json!({"op": "ping", "id": 7})).await;
    loop {
        let msg = bystander.recv().await;
        if msg["type"] == "pong" {
            assert_eq!(msg["id"], 7);
            break;
        }
        sequence.take(&msg);
    }
    sequence.ticks(&mut bystander, 500).await;

    // And the server takes new clients.
    let mut newcomer = server.connect().await;
    newcomer.subscribe(&["*"]).await;
    SeqCheck::default().ticks(&mut newcomer, 100).await;
    assert_eq!(server.stats.connection_panics.load(Ordering::Relaxed), 1);
    drop((bystander, newcomer));
    server.stop().await;
}
