//! TLS termination against the real server: a self-signed certificate for
//! localhost, a WSS client that subscribes and gets ticks, HTTPS
//! `/healthz`, a plain client refused without disturbing the TLS one, and
//! a missing key file named in the start-up error.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tickcast::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A self-signed certificate and key for localhost and 127.0.0.1, written
/// to a scratch directory that is removed when this is dropped.
struct TestCert {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

impl TestCert {
    fn new(name: &str) -> TestCert {
        let generated =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .expect("generate a certificate");
        let dir = std::env::temp_dir().join(format!("tickcast-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        TestCert {
            dir,
            cert,
            key,
            der: generated.cert.der().clone(),
        }
    }

    /// The test configuration serving TLS with this certificate.
    fn config(&self) -> Config {
        let mut config = config();
        config.tls_cert = Some(self.cert.clone());
        config.tls_key = Some(self.key.clone());
        config
    }

    /// A client that trusts this certificate only and offers `alpn`.
    fn connector(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }

    /// A TLS connection to `server`, checked against this certificate.
    async fn connect(&self, server: &TestServer, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        let tcp = within("TCP connect", TcpStream::connect(server.addr))
            .await
            .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        within("TLS handshake", self.connector(alpn).connect(name, tcp))
            .await
            .expect("TLS handshake with the server")
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

async fn recv(ws: &mut Wss) -> Value {
    loop {
        let message = within("a message", ws.next())
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

/// Reads `count` AAPL ticks, checking their seq increases; returns the last.
async fn ticks_in_order(ws: &mut Wss, mut last_seq: u64, count: usize) -> u64 {
    let mut seen = 0;
    while seen < count {
        let msg = recv(ws).await;
        if msg["type"] != "tick" && msg["type"] != "snapshot" {
            continue;
        }
        assert_eq!(msg["sym"], "AAPL", "only the subscribed symbol: {msg}");
        let seq = msg["seq"].as_u64().expect("a seq");
        assert!(seq > last_seq, "seq {seq} after {last_seq}: {msg}");
        last_seq = seq;
        if msg["type"] == "tick" {
            seen += 1;
        }
    }
    last_seq
}

#[tokio::test]
async fn wss_client_subscribes_and_gets_ticks_and_a_plain_client_is_refused() {
    let cert = TestCert::new("wss");
    let mut cfg = cert.config();
    cfg.symbols = 5;
    let server = start(cfg).await;

    let tls = cert.connect(&server, &[]).await;
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let (mut ws, _) = within("WSS upgrade", tokio_tungstenite::client_async(url, tls))
        .await
        .expect("WebSocket upgrade over TLS");
    ws.send(Message::text(
        json!({"op": "subscribe", "symbols": ["AAPL"]}).to_string(),
    ))
    .await
    .unwrap();
    let reply = loop {
        let msg = recv(&mut ws).await;
        if msg["type"] == "subscribed" {
            break msg;
        }
    };
    assert_eq!(reply["symbols"], json!(["AAPL"]));
    let last_seq = ticks_in_order(&mut ws, 0, 20).await;

    // A client speaking plain WebSocket to the TLS port gets no upgrade.
    let plain = within(
        "the plain client's attempt",
        tokio_tungstenite::connect_async(server.url()),
    )
    .await;
    assert!(plain.is_err(), "a plain client must not be upgraded");
    // Nor does plain HTTP get an answer.
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = within(
        "the server to drop a plain request",
        raw.read_to_end(&mut answer),
    )
    .await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP must not be answered: {:?}",
        String::from_utf8_lossy(&answer)
    );

    // The TLS client carries on without a gap in its ticks' order.
    ticks_in_order(&mut ws, last_seq, 20).await;
    ws.close(None).await.unwrap();
    drop(ws);
    server.stop().await;
}

#[tokio::test]
async fn healthz_answers_over_https_with_http1_by_alpn() {
    let cert = TestCert::new("https");
    let server = start(cert.config()).await;
    let mut tls = cert.connect(&server, &[b"h2", b"http/1.1"]).await;
    let (_, session) = tls.get_ref();
    assert_eq!(
        session.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "the server speaks HTTP/1.1 only"
    );
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    // The server may end the TLS session without close_notify once done.
    let _ = within("the HTTPS response", tls.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    server.stop().await;
}

#[tokio::test]
async fn bind_names_a_missing_key_file() {
    let cert = TestCert::new("missing-key");
    let mut cfg = cert.config();
    let missing = cert.dir.join("no-such-key.pem");
    cfg.tls_key = Some(missing.clone());
    let err = Server::bind(cfg)
        .await
        .expect_err("a missing key file must stop the server");
    let text = err.to_string();
    assert!(
        text.contains(&missing.display().to_string()) && text.contains("private key"),
        "{text}"
    );
}
