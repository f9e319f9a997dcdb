//! Hostile clients: each offender gets the documented error or close, and
//! meanwhile a well-behaved client on `*` keeps a gap-free tick stream
//! (checked by seq, never by timing).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tickcast::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A well-behaved client on `*` that checks every tick's seq in the
/// background; [`Bystander::finish`] says how many ticks it saw.
struct Bystander {
    task: JoinHandle<u64>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Bystander {
    async fn start(server: &TestServer) -> Bystander {
        let mut client = server.connect().await;
        client.subscribe(&["*"]).await;
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut last: HashMap<String, u64> = HashMap::new();
            let mut ticks = 0;
            loop {
                tokio::select! {
                    _ = &mut stopped => return ticks,
                    msg = client.recv() => {
                        if msg["type"] != "tick" {
                            continue;
                        }
                        let sym = msg["sym"].as_str().unwrap().to_string();
                        let seq = msg["seq"].as_u64().unwrap();
                        if let Some(prev) = last.insert(sym.clone(), seq) {
                            assert_eq!(seq, prev + 1, "the bystander lost a tick of {sym}");
                        }
                        ticks += 1;
                    }
                }
            }
        });
        Bystander { task, stop }
    }

    /// Stops it; the number of gap-free ticks it read.
    async fn finish(self) -> u64 {
        let _ = self.stop.send(());
        within("the bystander", self.task).await.expect("no gap")
    }
}

fn hostile_config() -> Config {
    let mut cfg = config();
    cfg.symbols = 20;
    cfg
}

/// Upgrades at `url` from `source` (an address of 127.0.0.0/8): the HTTP
/// status if refused.
async fn upgrade_from(addr: SocketAddr, source: &str, origin: Option<&str>) -> Result<Client, u16> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
    }
    match within(
        "upgrade",
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream)),
    )
    .await
    {
        Ok((ws, _)) => Ok(Client { ws }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("unexpected upgrade error: {other}"),
    }
}

#[tokio::test]
async fn connections_past_the_limits_get_503_or_429_before_the_upgrade() {
    let mut cfg = hostile_config();
    cfg.max_connections = 5;
    cfg.max_connections_per_ip = 3;
    let server = start(cfg).await;
    let bystander = Bystander::start(&server).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(
            upgrade_from(server.addr, "127.0.0.1", None)
                .await
                .expect("under the limits"),
        );
    }
    // The bystander is the third from 127.0.0.1.
    assert_eq!(
        upgrade_from(server.addr, "127.0.0.1", None).await.err(),
        Some(429)
    );
    open.push(upgrade_from(server.addr, "127.0.0.2", None).await.unwrap());
    open.push(upgrade_from(server.addr, "127.0.0.3", None).await.unwrap());
    assert_eq!(
        upgrade_from(server.addr, "127.0.0.4", None).await.err(),
        Some(503)
    );
    // A connection that leaves gives its slot back.
    drop(open.pop());
    let again = within("a freed slot", async {
        loop {
            if let Ok(client) = upgrade_from(server.addr, "127.0.0.4", None).await {
                return client;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(bystander.finish().await > 0);
    drop((open, again));
    server.stop().await;
}

#[tokio::test]
async fn browsers_from_other_origins_get_403() {
    let mut cfg = hostile_config();
    cfg.allowed_origins = vec!["https://app.example.com".into()];
    let server = start(cfg).await;
    let source = "127.0.0.1";
    assert_eq!(
        upgrade_from(server.addr, source, Some("https://evil.example.net"))
            .await
            .err(),
        Some(403)
    );
    assert!(
        upgrade_from(server.addr, source, Some("https://app.example.com"))
            .await
            .is_ok()
    );
    // Not a browser: no Origin header.
    assert!(upgrade_from(server.addr, source, None).await.is_ok());
    server.stop().await;
}

/// Reads until the server ends the connection; fails if it does not.
async fn until_dropped(socket: &mut TcpStream) {
    within("the server to drop the connection", async {
        let mut buf = [0u8; 1024];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
}

#[tokio::test]
async fn silent_and_slowloris_handshakes_are_dropped() {
    let mut cfg = hostile_config();
    cfg.handshake_timeout = Duration::from_millis(300);
    let server = start(cfg).await;
    let bystander = Bystander::start(&server).await;
    // Opens TCP and says nothing.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // Sends its request head a byte at a time, never finishing.
    let mut slowloris = TcpStream::connect(server.addr).await.unwrap();
    let trickle = async {
        for byte in b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Padding: ".iter().cycle() {
            if slowloris.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    within("the slowloris client to be cut off", trickle).await;
    until_dropped(&mut silent).await;
    assert!(bystander.finish().await > 0);
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_answers_no_ping_is_closed_and_one_that_does_stays() {
    let mut cfg = hostile_config();
    cfg.ping_interval = Duration::from_millis(200);
    let server = start(cfg).await;
    // tungstenite answers pings while it reads: it outlives many intervals.
    let bystander = Bystander::start(&server).await;
    // A raw client never answers.
    let mut mute = RawClient::connect(server.addr, b"").await;
    let mut pings = 0;
    let close = loop {
        let frame = mute.read_frame().await.expect("a ping, then the close");
        match frame.opcode {
            9 => pings += 1,
            8 => break frame,
            other => panic!("unexpected opcode {other}"),
        }
    };
    assert!(pings >= 1, "pinged before being closed");
    assert_eq!(close.close_code(), 1008);
    assert!(String::from_utf8_lossy(&close.payload[2..]).contains("no pong"));
    drop(mute);
    // The bystander answered every ping meanwhile and is still served.
    assert!(bystander.finish().await > 0);
    server.stop().await;
}

#[tokio::test]
async fn a_request_flood_is_rate_limited_then_closed() {
    let mut cfg = hostile_config();
    cfg.max_messages_per_second = 50;
    let server = start(cfg).await;
    let bystander = Bystander::start(&server).await;
    let flooder = server.connect().await;
    // 100,000 subscribe requests in a burst, sent while reading: the
    // server stops reading a connection whose replies pile up.
    let (mut sink, mut stream) = flooder.ws.split();
    let flood = tokio::spawn(async move {
        for _ in 0..100_000 {
            let request = json!({"op": "subscribe", "symbols": ["AAPL"]}).to_string();
            if sink.send(Message::text(request)).await.is_err() {
                break;
            }
        }
    });
    let mut rate_limited = 0;
    let close = within("the flooder's close", async {
        loop {
            match stream.next().await {
                Some(Ok(Message::Text(text))) => {
                    let msg: serde_json::Value = serde_json::from_str(&text).unwrap();
                    if msg["code"] == "rate_limited" {
                        rate_limited += 1;
                    }
                }
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await;
    assert!(rate_limited > 0, "refused with rate_limited first");
    assert_eq!(code(&close), 1008);
    assert!(close.unwrap().reason.contains("rate limit"));
    flood.abort();
    drop(stream);
    assert!(bystander.finish().await > 0);
    server.stop().await;
}

#[tokio::test]
async fn malformed_input_costs_the_bystander_nothing() {
    let server = start(hostile_config()).await;
    let bystander = Bystander::start(&server).await;
    // (what the offender sends, the close code it must get)
    let a_million_symbols = {
        let names: Vec<String> = (0..1_000_000).map(|i| format!("S{i}")).collect();
        json!({"op": "subscribe", "symbols": names}).to_string()
    };
    let offenses: Vec<(Vec<u8>, u16)> = vec![
        (client_frame(true, 1, false, b"{\"op\":\"ping\"}"), 1002),
        (client_frame(true, 1, true, &[0xff, 0xfe, 0xfd]), 1007),
        (client_frame(false, 9, true, b"fragmented ping"), 1002),
        (client_frame(true, 8, true, &[0x03]), 1002),
        (
            client_frame(true, 1, true, a_million_symbols.as_bytes()),
            1009,
        ),
        // A header announcing an 18-exabyte frame (and its mask key).
        (
            [0x81, 0xff]
                .into_iter()
                .chain(u64::MAX.to_be_bytes())
                .chain([1, 2, 3, 4])
                .collect(),
            1009,
        ),
    ];
    for (bytes, expected) in offenses {
        let mut offender = RawClient::connect(server.addr, b"").await;
        // The writer may be cut off mid-way: the close is what counts.
        let _ = offender.socket.write_all(&bytes).await;
        let (close, _) = offender.read_until_close().await;
        assert_eq!(
            close.close_code(),
            expected,
            "for {:?}",
            &bytes[..bytes.len().min(16)]
        );
    }
    // Truncated frames and clients that vanish without a close frame.
    for _ in 0..20 {
        let mut truncated = RawClient::connect(server.addr, b"").await;
        truncated
            .write(&client_frame(true, 1, true, b"{\"op\":\"ping\"}")[..5])
            .await;
        drop(truncated);
    }
    server
        .until_stats("the vanished clients' sessions to end", |s| {
            s.sessions_open.load(std::sync::atomic::Ordering::Relaxed) == 1
        })
        .await;
    assert!(bystander.finish().await > 0);
    server.stop().await;
}
