//! Shared by feed-sim's integration tests: the real tickcast server,
//! started in this process on 127.0.0.1:0, and load-tool flags parsed as
//! the command line parses them.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use feed_sim::load::LoadArgs;
use tickcast::{Config, Server};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest the server may take to stop.
const WAIT: Duration = Duration::from_secs(20);

/// The real server on its own runtime, so the load tool can run its own
/// current-thread runtime on the test's thread.
pub struct RunningServer {
    /// The server's `/ws` URL.
    pub url: String,
    /// The server's address.
    pub addr: std::net::SocketAddr,
    runtime: Runtime,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Starts the server with the test defaults.
pub fn start_server() -> RunningServer {
    start_server_with(|_| {})
}

/// Starts the server with the test defaults changed by `adjust`.
pub fn start_server_with(adjust: impl FnOnce(&mut Config)) -> RunningServer {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("server runtime");
    let mut config = Config::defaults();
    config.listen = "127.0.0.1:0".parse().unwrap();
    adjust(&mut config);
    let server = runtime.block_on(Server::bind(config)).expect("bind");
    let addr = server.local_addr();
    let url = format!("ws://{addr}/ws");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = runtime.spawn(async move {
        server
            .run(async {
                let _ = stopped.await;
            })
            .await
            .expect("server run");
    });
    RunningServer {
        url,
        addr,
        runtime,
        stop,
        task,
    }
}

impl RunningServer {
    /// A front for this server that passes only WebSocket upgrades of
    /// `/ws` and answers every other request 404, like a server that
    /// speaks tickcast's protocol without its HTTP routes; its `/ws` URL
    /// and the count of requests it refused.
    pub fn without_http_routes(&self) -> (String, Arc<AtomicUsize>) {
        let listener = self
            .runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the front");
        let front = listener.local_addr().unwrap();
        let refused = Arc::new(AtomicUsize::new(0));
        let (upstream, counter) = (self.addr, refused.clone());
        self.runtime.spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match client.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    if !head.starts_with(b"GET /ws HTTP/1.1\r\n") {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let _ = client
                            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                            .await;
                        return;
                    }
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    if server.write_all(&head).await.is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        (format!("ws://{front}/ws"), refused)
    }

    /// Fires the shutdown signal and waits for `run` to return.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let task = self.task;
        self.runtime
            .block_on(async { tokio::time::timeout(WAIT, task).await })
            .expect("server stops in time")
            .expect("server task");
    }
}

/// `feed-sim load` with these flags, parsed as the command line is.
pub fn load_args(url: &str, flags: &[&str]) -> LoadArgs {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }
    let argv = ["feed-sim", "--url", url, "--no-progress"]
        .into_iter()
        .chain(flags.iter().copied());
    Cli::try_parse_from(argv).expect("valid flags").load
}

/// `feed-sim soak` with these flags, parsed as the command line is.
pub fn soak_args(url: &str, flags: &[&str]) -> feed_sim::soak::SoakArgs {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        soak: feed_sim::soak::SoakArgs,
    }
    let argv = ["feed-sim", "--url", url, "--no-progress"]
        .into_iter()
        .chain(flags.iter().copied());
    Cli::try_parse_from(argv).expect("valid flags").soak
}

/// `feed-sim flood` with these flags, parsed as the command line is;
/// `url` is the server's `http://HOST:PORT`.
pub fn flood_args(url: &str, flags: &[&str]) -> feed_sim::flood::FloodArgs {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flood: feed_sim::flood::FloodArgs,
    }
    let argv = ["feed-sim", "--url", url]
        .into_iter()
        .chain(flags.iter().copied());
    Cli::try_parse_from(argv).expect("valid flags").flood
}
