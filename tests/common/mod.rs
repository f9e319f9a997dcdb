//! Shared test harness: start the real server on 127.0.0.1:0 and talk to it
//! with a real WebSocket client. Every wait has a timeout; tests
//! synchronise on protocol messages, never on sleeps.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tickcast::stats::Stats;
use tickcast::{Config, Server};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test with `what` if it takes longer than
/// [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A running server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// The test configuration: port 0, a fast feed, defaults otherwise.
pub fn config() -> Config {
    let mut config = Config::defaults();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.rate = 2_000.0;
    config
}

/// Starts a server with `config`.
pub async fn start(config: Config) -> TestServer {
    let server = Server::bind(config).await.expect("bind");
    let addr = server.local_addr();
    let stats = server.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async {
                let _ = stopped.await;
            })
            .await
            .expect("server run");
    });
    TestServer {
        addr,
        stats,
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestServer {
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn connect(&self) -> Client {
        let (ws, _) = within("connect", tokio_tungstenite::connect_async(self.url()))
            .await
            .expect("WebSocket connect");
        Client { ws }
    }

    /// Fires the shutdown signal and waits for `run` to return. Clients
    /// still open must be read (or dropped) meanwhile, or each costs the
    /// close grace period.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            within("server shutdown", task).await.expect("server task");
        }
    }

    /// Polls `check` on the server's counters until it holds.
    pub async fn until_stats(&self, what: &str, check: impl Fn(&Stats) -> bool) {
        within(what, async {
            while !check(&self.stats) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }
}

/// A real WebSocket client (tokio-tungstenite).
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn send(&mut self, value: Value) {
        self.ws.send(Message::text(value.to_string())).await.expect("send");
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// The next message, which must be a JSON text frame.
    pub async fn recv(&mut self) -> Value {
        loop {
            let message = within("a message", self.ws.next())
                .await
                .expect("stream ended")
                .expect("read");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Reads until a message satisfies `pred`; returns it.
    pub async fn recv_until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let value = self.recv().await;
            if pred(&value) {
                return value;
            }
        }
    }

    /// Subscribes and returns the `subscribed` reply (any snapshots follow).
    pub async fn subscribe(&mut self, symbols: &[&str]) -> Value {
        self.send(json!({"op": "subscribe", "symbols": symbols})).await;
        self.recv_until(|v| v["type"] == "subscribed").await
    }

    /// Reads until the server closes; returns its close frame. Text frames
    /// before it are skipped.
    pub async fn expect_close(&mut self) -> Option<CloseFrame<'static>> {
        loop {
            match within("a close frame", self.ws.next()).await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }
}

/// The close code of `frame`.
pub fn code(frame: &Option<CloseFrame<'_>>) -> u16 {
    u16::from(frame.as_ref().map_or(CloseCode::Status, |f| f.code))
}

/// A minimal HTTP/1.1 GET over a raw socket: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = within("HTTP connect", TcpStream::connect(addr)).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    within("HTTP response", socket.read_to_end(&mut response))
        .await
        .unwrap();
    let response = String::from_utf8(response).expect("UTF-8 response");
    let status = response[9..12].parse().expect("status code");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
