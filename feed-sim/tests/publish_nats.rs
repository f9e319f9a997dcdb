//! `feed-sim publish --nats` against a real `nats-server` and a node
//! started with `--feed nats`: the node ends with every symbol's last
//! published seq, and a restarted publisher given `--continue-from` carries
//! the seqs on instead of repeating them.
//!
//! Needs the `nats-server` binary on PATH (`apt-get install nats-server`).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::start_server_with;
use feed_sim::publish::{publish, Encoding, PublishArgs};
use tickcast::config::FeedSource;

const WAIT: Duration = Duration::from_secs(20);

struct NatsServer(Child);

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` every 20 ms until it returns `Some`, failing after [`WAIT`].
fn poll<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_nats() -> (NatsServer, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| {
            panic!("cannot run nats-server ({err}); install it with `apt-get install nats-server`")
        });
    let server = NatsServer(child);
    poll("nats-server to listen", || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    (server, format!("nats://127.0.0.1:{port}"))
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut socket = TcpStream::connect(addr).unwrap();
    write!(
        socket,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).unwrap();
    response
}

/// The sum of every symbol's last seq on the node.
fn seq_sum(addr: SocketAddr) -> u64 {
    let response = http_get(addr, "/symbols");
    let body = response.split_once("\r\n\r\n").unwrap().1;
    let rows: serde_json::Value = serde_json::from_str(body).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .sum()
}

fn args(nats: &str, continue_from: Option<String>) -> PublishArgs {
    PublishArgs {
        url: String::new(),
        token: None,
        nats: Some(nats.into()),
        continue_from,
        encoding: Encoding::Compact,
        symbols: 10,
        symbols_file: None,
        rate: 1_000.0,
        seed: 3,
        duration: Some(1.0),
    }
}

#[test]
fn a_node_carries_the_published_seqs_and_a_restart_continues_them() {
    let (_nats, url) = start_nats();
    let nats_url = url.clone();
    let node = start_server_with(move |config| {
        config.feed = FeedSource::Nats(Some(nats_url));
        config.symbols = 10;
    });
    poll("the node connected to NATS", || {
        http_get(node.addr, "/healthz")
            .starts_with("HTTP/1.1 200")
            .then_some(())
    });

    let first = publish(&args(&url, None)).expect("first run");
    assert!(first.ticks > 500, "{first:?}");
    // Seqs start at 1 per symbol: the last seqs add up to the ticks sent.
    poll("the node to have every tick of the first run", || {
        (seq_sum(node.addr) == first.ticks).then_some(())
    });

    // The second run sends JSON payloads: a node reads either encoding.
    let second = publish(&PublishArgs {
        encoding: Encoding::Json,
        ..args(&url, Some(node.url.clone()))
    })
    .expect("second run");
    poll("the node to have every tick of the second run", || {
        (seq_sum(node.addr) == first.ticks + second.ticks).then_some(())
    });
    let metrics = http_get(node.addr, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == "tickcast_feed_bad_ticks_total 0"),
        "a continued run repeats no seq:\n{metrics}"
    );
    node.stop();
}
