//! Shared test harness: start the real server on 127.0.0.1:0 and talk to it
//! with a real WebSocket client. Every wait has a timeout; tests
//! synchronise on protocol messages, never on sleeps.

#![allow(dead_code)]

pub mod browser;
pub mod ingest;
pub mod process;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tickcast::stats::Stats;
use tickcast::wire::frame::{self, opcode};
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

/// Gives every client room enough that the server never has to conflate
/// or close it as slow: on a loaded test machine a debug-build client can
/// stall for a while, and a gap is then always a bug.
pub fn never_conflate(config: &mut Config) {
    config.max_outbox_bytes = 64 << 20;
    config.slow_consumer_timeout = Duration::from_secs(600);
}

/// Per symbol, the last `seq` a client was given: checks that it gets one
/// snapshot at most, then every tick in order, none missing or repeated.
#[derive(Default)]
pub struct SeqCheck(HashMap<String, u64>);

impl SeqCheck {
    /// Takes in a tick or a snapshot (anything else fails the test);
    /// whether it was a tick.
    pub fn take(&mut self, msg: &Value) -> bool {
        let sym = msg["sym"].as_str().expect("tick or snapshot").to_string();
        let seq = msg["seq"].as_u64().expect("seq");
        let prev = self.0.insert(sym.clone(), seq);
        match msg["type"].as_str() {
            Some("snapshot") => {
                assert!(prev.is_none(), "second snapshot of {sym}");
                false
            }
            Some("tick") => {
                if let Some(prev) = prev {
                    assert_eq!(seq, prev + 1, "{sym} {seq} after {prev}");
                }
                true
            }
            other => panic!("unexpected {other:?}: {msg}"),
        }
    }

    /// Reads `count` ticks from `client`, checking each.
    pub async fn ticks(&mut self, client: &mut Client, count: usize) {
        let mut ticks = 0;
        while ticks < count {
            if self.take(&client.recv().await) {
                ticks += 1;
            }
        }
    }
}

/// A running server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Connection shards every test server runs.
pub const SHARDS: usize = 3;

/// The test configuration: port 0, a fast feed, three connection shards
/// (whatever the machine's cores, so that every test also crosses shards),
/// defaults otherwise.
pub fn config() -> Config {
    let mut config = Config::defaults();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.rate = 2_000.0;
    config.shards = SHARDS;
    config
}

/// Starts a server with `config`.
pub async fn start(config: Config) -> TestServer {
    run(Server::bind(config).await.expect("bind"))
}

/// Runs a bound server until [`TestServer::stop`].
fn run(server: Server) -> TestServer {
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

/// Starts a server with `config` on `addr`, as a restarted server would
/// come back: retries while the port is still held by the previous one.
pub async fn start_at(addr: SocketAddr, mut config: Config) -> TestServer {
    config.listen = addr;
    let server = within(&format!("binding {addr} again"), async {
        loop {
            match Server::bind(config.clone()).await {
                Ok(server) => return server,
                Err(err) => {
                    tracing::debug!(%err, "port still taken; retrying");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    })
    .await;
    run(server)
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
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// The text of the next message, which must be a text frame.
    pub async fn recv_text(&mut self) -> String {
        loop {
            let message = within("a message", self.ws.next())
                .await
                .expect("stream ended")
                .expect("read");
            match message {
                Message::Text(text) => return text.to_string(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next message, which must be a JSON text frame.
    pub async fn recv(&mut self) -> Value {
        serde_json::from_str(&self.recv_text().await).expect("JSON")
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
        self.send(json!({"op": "subscribe", "symbols": symbols}))
            .await;
        self.recv_until(|v| v["type"] == "subscribed").await
    }

    /// Reads until the server closes; returns its close frame. Text frames
    /// before it are skipped. The client's answering close goes out before
    /// this returns.
    pub async fn expect_close(&mut self) -> Option<CloseFrame<'static>> {
        loop {
            match within("a close frame", self.ws.next()).await {
                Some(Ok(Message::Close(frame))) => {
                    // Polling on sends the queued answer and sees the end.
                    let _ = within("the end of the stream", self.ws.next()).await;
                    return frame;
                }
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
    let mut socket = within("HTTP connect", TcpStream::connect(addr))
        .await
        .unwrap();
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

/// A WebSocket client over a raw socket, for sending what well-behaved
/// libraries refuse to: unmasked frames, bad UTF-8, odd fragmentation.
pub struct RawClient {
    pub socket: TcpStream,
    buf: Vec<u8>,
}

/// One frame as the server sent it.
#[derive(Debug, PartialEq)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl RawFrame {
    pub fn close_code(&self) -> u16 {
        assert_eq!(self.opcode, opcode::CLOSE, "not a close frame: {self:?}");
        u16::from_be_bytes([self.payload[0], self.payload[1]])
    }

    pub fn json(&self) -> Value {
        assert_eq!(self.opcode, opcode::TEXT, "not a text frame: {self:?}");
        serde_json::from_slice(&self.payload).expect("JSON")
    }
}

/// A client frame: masked unless `masked` is false, final unless `fin` is
/// false.
pub fn client_frame(fin: bool, opcode: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    frame::write_client_frame(&mut bytes, fin, opcode, masked, payload);
    bytes
}

impl RawClient {
    /// Opens a socket and performs the handshake; `early` is written in the
    /// same packet as the handshake request.
    pub async fn connect(addr: SocketAddr, early: &[u8]) -> RawClient {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut socket = within("raw connect", TcpStream::connect(addr))
            .await
            .unwrap();
        let mut request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .into_bytes();
        request.extend_from_slice(early);
        socket.write_all(&request).await.unwrap();
        let mut buf = Vec::new();
        let end = within("handshake response", async {
            loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    return end + 4;
                }
                let mut chunk = [0u8; 1024];
                let n = socket.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed during handshake");
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        assert!(
            buf.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&buf)
        );
        buf.drain(..end);
        RawClient { socket, buf }
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.socket.write_all(bytes).await.unwrap();
    }

    /// Sends one masked text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.write(&frame::client_frame(opcode::TEXT, text.as_bytes()))
            .await;
    }

    /// The next frame from the server; `None` at end of stream.
    pub async fn read_frame(&mut self) -> Option<RawFrame> {
        use tokio::io::AsyncReadExt;
        within("a raw frame", async {
            loop {
                if let Some((frame, used)) = parse_server_frame(&self.buf) {
                    self.buf.drain(..used);
                    return Some(frame);
                }
                let mut chunk = [0u8; 16 * 1024];
                match self.socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
    }

    /// Reads frames until a close frame; returns it and how many frames
    /// came before it. Fails if the stream ends without one.
    pub async fn read_until_close(&mut self) -> (RawFrame, usize) {
        let mut before = 0;
        loop {
            let frame = self.read_frame().await.expect("a close frame before EOF");
            if frame.opcode == opcode::CLOSE {
                return (frame, before);
            }
            before += 1;
        }
    }

    /// Reads until a text frame satisfies `pred`.
    pub async fn recv_until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let frame = self.read_frame().await.expect("a frame");
            if frame.opcode == opcode::TEXT {
                let value = frame.json();
                if pred(&value) {
                    return value;
                }
            }
        }
    }
}

/// The whole frame at the start of `buf`, as sent (masked or not,
/// fragment or not; a masked payload is unmasked), and its length; `None`
/// until all of it has arrived.
pub fn parse_server_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    let head = frame::Head::parse(buf)?;
    let len = head.frame_len()?;
    let mut payload = buf.get(head.header_len..len)?.to_vec();
    if let Some(key) = head.mask {
        frame::unmask(&mut payload, key);
    }
    Some((
        RawFrame {
            fin: head.fin,
            opcode: head.opcode,
            masked: head.mask.is_some(),
            payload,
        },
        len,
    ))
}
