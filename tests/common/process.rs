//! The real `tickcast` binary as a child process on port 0, for tests that
//! must see the process itself survive (an abort would end it) and that
//! measure its tick path while the test process loads it from outside.

use std::net::SocketAddr;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::within;

/// A running `tickcast` process, killed when dropped.
pub struct ServerProcess {
    pub addr: SocketAddr,
    child: Child,
}

impl ServerProcess {
    /// Starts the binary on 127.0.0.1:0 with `args` and waits for the
    /// start-up line that names its address.
    pub async fn start(args: &[&str]) -> ServerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tickcast"))
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            // TICKCAST_TEST_LOG=debug shows the server's log (on stderr).
            .env(
                "RUST_LOG",
                std::env::var("TICKCAST_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the tickcast binary");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = within("the start-up line", async {
            loop {
                let line = lines.next_line().await.unwrap().expect("a start-up line");
                let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
                let message = entry["message"].as_str().unwrap_or_default();
                if let Some(start) = message.find("ws://") {
                    let rest = &message[start + 5..];
                    let end = rest.find('/').expect("a /ws URL");
                    break rest[..end].parse().expect("an address");
                }
            }
        })
        .await;
        // Keep draining the log so the server never blocks on a full pipe.
        let show = std::env::var_os("TICKCAST_TEST_LOG").is_some();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if show {
                    eprintln!("server: {line}");
                }
            }
        });
        ServerProcess { addr, child }
    }

    /// `ws://ADDR/ws`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("query the child").is_none()
    }
}
