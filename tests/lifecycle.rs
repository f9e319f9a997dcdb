//! The real binary: SIGTERM closes every client with 1001 `server shutting
//! down` and the process exits 0; `--log-format json` logs one JSON object
//! per line.

mod common;

use std::process::Stdio;

use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn sigterm_closes_every_client_with_1001_and_exits_0() {
    let mut server = Command::new(env!("CARGO_BIN_EXE_tickcast"))
        .args(["--listen", "127.0.0.1:0", "--symbols", "5", "--rate", "500"])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the tickcast binary");
    // The start-up line names the address it serves.
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let url = within("the start-up line", async {
        loop {
            let line = lines.next_line().await.unwrap().expect("a start-up line");
            let entry: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            assert!(entry["level"].is_string() && entry["timestamp"].is_string());
            let message = entry["message"].as_str().expect("a message");
            if let Some(start) = message.find("ws://") {
                let url = &message[start..];
                let end = url.find("/ws").expect("a /ws URL") + 3;
                break url[..end].to_string();
            }
        }
    })
    .await;
    // Keep draining the log so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let mut clients = Vec::new();
    for _ in 0..3 {
        let (ws, _) = within("connect", tokio_tungstenite::connect_async(url.as_str()))
            .await
            .expect("connect");
        let mut client = Client { ws };
        client.subscribe(&["*"]).await;
        client.recv_until(|v| v["type"] == "tick").await;
        clients.push(client);
    }

    let pid = server.id().expect("running").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    for client in &mut clients {
        let close = client.expect_close().await;
        assert_eq!(code(&close), 1001);
        assert_eq!(&*close.unwrap().reason, "server shutting down");
    }
    let status = within("the server to exit", server.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
}
