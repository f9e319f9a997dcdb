//! End-to-end latency of one tick over loopback: from the moment it enters
//! the ring until the last of n real WebSocket clients has read it, for
//! n = 100 and n = 1,000 clients all subscribed to `AAPL`.
//!
//! * `tickcast/n`: the library's own stages, wired by the same
//!   `server::prepare_shards` and `server::start_stages` as `Server::run`
//!   (`ring::channel` → the shards' event loops, each with its fan-out and
//!   sessions → `http::serve` handing them the upgraded connections), but
//!   with the bench holding the ring's `Producer` instead of the simulator
//!   thread. The clock starts just before `Producer::publish` and the
//!   shards' wake-up (`feed::Wake`), exactly where the feed thread would
//!   hand a tick over.
//! * `broadcast_tungstenite_naive/n`: what a naive per-connection server
//!   does, with the same clients: a `tokio::sync::broadcast` channel feeds
//!   one tokio-tungstenite task per connection, which serializes its own
//!   JSON with serde_json for every tick and sends it as its own message.
//!   The clock starts just before `Sender::send`.
//!
//! Each iteration publishes one tick and waits until every client has read
//! it; its time is from the publish to the receipt by the last client (the
//! client that takes the count to zero reads the clock itself). Criterion's
//! estimate is the mean of those times. Every tick's latency is also kept,
//! and at the end of each benchmark its mean, p50, p99 and maximum over the
//! measured samples (warm-up excluded) go to stderr, followed by the
//! baseline ÷ tickcast ratios once both sides of a size have run. No
//! `Throughput` is set: one tick is in flight at a time, so a rate would
//! only be the inverse of the latency, not a capacity.
//!
//! With one tick in flight, both servers make one write per client per
//! tick, so this bench measures the per-socket floor of the data path
//! (on loopback a write also runs the receiver's side of TCP), not the
//! savings of serializing once or of batching frames into one `writev`
//! under load: `benches/fanout.rs` and the end-to-end runs in
//! docs/BENCHMARKS.md show those.
//!
//! Clients are raw TCP sockets speaking just enough WebSocket (upgrade,
//! one masked subscribe, then unmasked server frames), which keeps them
//! cheap next to the servers they measure. Each checks that the tick it
//! reads is the one in flight, so a lost or repeated tick fails the run
//! instead of being timed.
//!
//! Threads: the machine has 2 cores. The server side gets about one of
//! them and the clients, on a tokio runtime with one worker, the other, as
//! in the end-to-end runs of docs/BENCHMARKS.md where server and load
//! generator are pinned apart. tickcast runs one shard (`--shards 1`): a
//! single event-loop thread that reads the ring, fans out and writes every
//! socket; its HTTP edge runs on a tokio runtime with one worker, busy
//! only while the clients connect, before anything is measured. The naive
//! server runs on that same one-worker runtime. The bench's main thread
//! publishes and then sleeps on a channel until the last client reports.
//! A tickcast with two shards would share its cores with 1,000 busy
//! clients and measure scheduling noise rather than the server.
//!
//! Run with `cargo bench --bench broadcast_latency`.

mod naive;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tickcast::config::Config;
use tickcast::feed::sim::Simulator;
use tickcast::feed::symbols::universe;
use tickcast::feed::Wake;
use tickcast::http::{self, AppState};
use tickcast::ring::{self, Producer};
use tickcast::server::{prepare_shards, start_stages, SHUTDOWN_GRACE};
use tickcast::stats::Stats;
use tickcast::symbol::Symbols;
use tickcast::tick::now_nanos;
use tickcast::tick::Tick;
use tickcast::wire::frame::{client_frame, opcode, split_server_frame};

/// Client counts measured.
const CLIENTS: [usize; 2] = [100, 1_000];

/// The symbol every client follows.
const SYMBOL: &str = "AAPL";

/// Symbols the servers carry, as the default `--symbols`.
const SYMBOLS: usize = 100;

/// Criterion samples per benchmark; the last this many calls of the
/// measured routine are the samples, everything before them is warm-up.
const SAMPLE_SIZE: usize = 10;

/// Clients connecting at the same time while a benchmark sets up, so the
/// listen backlog never overflows.
const CONNECT_CONCURRENCY: usize = 100;

/// Longest wait for one tick to reach every client, or for set-up and
/// shutdown steps, before the run fails.
const WAIT: Duration = Duration::from_secs(20);

/// The subscribe request every client sends.
const SUBSCRIBE: &[u8] = br#"{"op":"subscribe","symbols":["AAPL"]}"#;

/// The largest server frame a client accepts: ticks and the `subscribed`
/// reply to one symbol are far smaller.
const MAX_FRAME: usize = 1 << 20;

/// The two threads the servers and clients run on (see the module docs).
struct Runtimes {
    server: Runtime,
    clients: Runtime,
}

impl Runtimes {
    fn new() -> Self {
        let runtime = |name: &str| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(name)
                .enable_all()
                .build()
                .expect("building a tokio runtime")
        };
        Runtimes {
            server: runtime("bench-server"),
            clients: runtime("bench-clients"),
        }
    }
}

/// Which server a benchmark drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Contender {
    Tickcast,
    Naive,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Tickcast => "tickcast",
            Contender::Naive => "broadcast_tungstenite_naive",
        }
    }
}

/// The tick in flight, shared by the clients and the publishing thread.
struct Round {
    /// `seq` of the tick in flight; a client reading any other fails the run.
    expected: AtomicU64,
    /// Clients that have not read it yet.
    remaining: AtomicUsize,
    /// The last client sends the time it read the tick; a client that read
    /// the wrong tick sends what it saw.
    done: std_mpsc::Sender<Result<Instant, String>>,
}

impl Round {
    /// A client read a tick frame whose `seq` is `seq`.
    fn received(&self, seq: Option<u64>) {
        let expected = self.expected.load(Ordering::Acquire);
        if seq != Some(expected) {
            let _ = self.done.send(Err(format!(
                "a client read tick seq {seq:?} while seq {expected} was in flight"
            )));
            return;
        }
        // AcqRel: the client that takes the count to zero is the last one,
        // whichever thread the others ran on.
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = self.done.send(Ok(Instant::now()));
        }
    }
}

/// Where the bench hands ticks to the server under test.
enum Feed {
    Tickcast {
        producer: Producer<Tick>,
        wake: Wake,
        state: Arc<AppState>,
        stats: Arc<Stats>,
        edge: JoinHandle<()>,
    },
    Naive {
        sender: broadcast::Sender<Tick>,
        lagged: Arc<AtomicU64>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
        edge: JoinHandle<()>,
    },
}

impl Feed {
    fn publish(&mut self, tick: Tick) {
        match self {
            Feed::Tickcast { producer, wake, .. } => {
                producer.publish(tick);
                wake.wake();
            }
            Feed::Naive { sender, .. } => {
                sender
                    .send(tick)
                    .expect("every connected client holds a receiver");
            }
        }
    }
}

/// One server with its n subscribed clients.
struct Harness<'rt> {
    rt: &'rt Runtimes,
    feed: Feed,
    clients: Vec<JoinHandle<()>>,
    round: Arc<Round>,
    done: std_mpsc::Receiver<Result<Instant, String>>,
    simulator: Simulator,
    symbol: u32,
    seq: u64,
}

impl<'rt> Harness<'rt> {
    fn start(rt: &'rt Runtimes, contender: Contender, n: usize) -> Self {
        let specs = universe(SYMBOLS);
        let simulator = Simulator::new(&specs, 1000.0, 7);
        let symbols = Arc::new(
            Symbols::fixed(specs.into_iter().map(|s| (s.name, s.decimals)))
                .expect("distinct tickers"),
        );
        let symbol = symbols
            .id(SYMBOL)
            .expect("the universe starts with real tickers");

        let listener = rt
            .server
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("binding 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let feed = match contender {
            Contender::Tickcast => start_tickcast(&rt.server, listener, symbols),
            Contender::Naive => start_naive(&rt.server, listener, symbols),
        };

        let (done_tx, done) = std_mpsc::channel();
        let round = Arc::new(Round {
            expected: AtomicU64::new(0),
            remaining: AtomicUsize::new(0),
            done: done_tx,
        });
        let conns = rt.clients.block_on(async {
            let mut conns = Vec::with_capacity(n);
            let mut pending = Vec::with_capacity(CONNECT_CONCURRENCY);
            for i in 0..n {
                pending.push(tokio::spawn(Conn::open(addr)));
                if pending.len() == CONNECT_CONCURRENCY || i + 1 == n {
                    for task in pending.drain(..) {
                        let conn = tokio::time::timeout(WAIT, task)
                            .await
                            .expect("a client timed out connecting and subscribing")
                            .expect("client task");
                        conns.push(conn.expect("connecting and subscribing a client"));
                    }
                }
            }
            conns
        });
        let clients = conns
            .into_iter()
            .map(|conn| rt.clients.spawn(conn.read_ticks(round.clone())))
            .collect();
        Harness {
            rt,
            feed,
            clients,
            round,
            done,
            simulator,
            symbol,
            seq: 0,
        }
    }

    /// Publishes one tick and returns how long it took to reach the last
    /// client.
    fn deliver(&mut self) -> Duration {
        self.seq += 1;
        let tick = Tick {
            symbol: self.symbol,
            seq: self.seq,
            ..self.simulator.next_tick(now_nanos())
        };
        self.round.expected.store(self.seq, Ordering::Release);
        self.round
            .remaining
            .store(self.clients.len(), Ordering::Release);
        let start = Instant::now();
        self.feed.publish(tick);
        match self.done.recv_timeout(WAIT) {
            Ok(Ok(last)) => last.saturating_duration_since(start),
            Ok(Err(wrong)) => panic!("{wrong}"),
            Err(_) => panic!(
                "tick {} did not reach every client within {WAIT:?}: {} still waiting",
                self.seq,
                self.round.remaining.load(Ordering::Acquire)
            ),
        }
    }

    /// Shuts the server down the way it does in production and reports
    /// anything that did not go as it should.
    fn stop(self, label: &str) {
        let published = self.seq;
        let Harness {
            rt, feed, clients, ..
        } = self;
        let started = Instant::now();
        match feed {
            Feed::Tickcast {
                producer,
                state,
                stats,
                edge,
                ..
            } => {
                // As `Server::run` does: the edge stops accepting, then every
                // shard closes its clients with 1001 and ends (blocking this
                // thread, as `spawn_blocking` does there), then the edge's
                // connection tasks are waited for.
                state.shutdown.cancel();
                let _ = rt.server.block_on(edge);
                let shards_started = Instant::now();
                state.shards.shutdown();
                let shards_took = shards_started.elapsed();
                let closed = rt.server.block_on(async {
                    state.tasks.close();
                    tokio::time::timeout(WAIT, state.tasks.wait()).await.is_ok()
                });
                drop(producer);
                if shards_took >= SHUTDOWN_GRACE {
                    eprintln!(
                        "{label}: some sessions did not close within the shards' \
                         {SHUTDOWN_GRACE:?} grace period"
                    );
                }
                if !closed {
                    eprintln!("{label}: some HTTP connections did not close within {WAIT:?}");
                }
                let read = Stats::get(&stats.ticks_read);
                let lagged = Stats::get(&stats.ring_lagged);
                let conflated = Stats::get(&stats.conflated);
                let slow = Stats::get(&stats.slow_consumer_closes);
                if read != published || lagged + conflated + slow > 0 {
                    eprintln!(
                        "{label}: server counters are off: {published} ticks published, \
                         {read} read by the fan-out, {lagged} lost to ring lag, \
                         {conflated} conflated, {slow} slow-consumer closes"
                    );
                }
            }
            Feed::Naive {
                sender,
                lagged,
                shutdown,
                tasks,
                edge,
            } => {
                shutdown.cancel();
                let closed = rt.server.block_on(async {
                    let _ = edge.await;
                    tasks.close();
                    tokio::time::timeout(WAIT, tasks.wait()).await.is_ok()
                });
                drop(sender);
                if !closed {
                    eprintln!("{label}: some connections did not close within {WAIT:?}");
                }
                let lagged = lagged.load(Ordering::Relaxed);
                if lagged > 0 {
                    eprintln!("{label}: receivers lagged and lost {lagged} ticks");
                }
            }
        }
        let ended = rt.clients.block_on(async {
            let mut ended = true;
            for client in clients {
                ended &= tokio::time::timeout(WAIT, client).await.is_ok();
            }
            ended
        });
        if !ended {
            eprintln!("{label}: some clients never saw the server's close");
        }
        let took = started.elapsed();
        if took > Duration::from_secs(2) {
            eprintln!("{label}: shutdown took {took:.2?}");
        }
    }
}

/// tickcast's stages wired by the same `prepare_shards` and
/// `start_stages` as `Server::run`, with one shard (see the module docs)
/// and the ring's producer kept by the bench instead of a feed thread.
fn start_tickcast(server: &Runtime, listener: TcpListener, symbols: Arc<Symbols>) -> Feed {
    let _entered = server.enter();
    let mut config = Config::defaults();
    config.shards = 1;
    let stats = Arc::new(Stats::default());
    let producer = ring::channel::<Tick>(config.ring_capacity as usize);
    let cursor = producer.cursor();
    let (shards, wake) = prepare_shards(&config).expect("making the shard's event loop");
    let state = start_stages(
        &config,
        symbols,
        stats.clone(),
        &cursor,
        shards,
        None,
        CancellationToken::new(),
    )
    .expect("starting tickcast's stages");
    let edge = server.spawn(http::serve(listener, state.clone(), None));
    Feed::Tickcast {
        producer,
        wake,
        state,
        stats,
        edge,
    }
}

/// The naive server's accept loop: one tokio-tungstenite task per client.
fn start_naive(server: &Runtime, listener: TcpListener, symbols: Arc<Symbols>) -> Feed {
    // Far more than the one tick in flight: a receiver never lags here.
    let (sender, _) = broadcast::channel::<Tick>(1024);
    let lagged = Arc::new(AtomicU64::new(0));
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let edge = server.spawn({
        let (sender, lagged, shutdown, tasks) = (
            sender.clone(),
            lagged.clone(),
            shutdown.clone(),
            tasks.clone(),
        );
        async move {
            loop {
                let socket = tokio::select! {
                    () = shutdown.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => socket,
                        Err(_) => continue,
                    },
                };
                let _ = socket.set_nodelay(true);
                tasks.spawn(naive_session(
                    socket,
                    sender.clone(),
                    symbols.clone(),
                    lagged.clone(),
                    shutdown.clone(),
                ));
            }
        }
    });
    Feed::Naive {
        sender,
        lagged,
        shutdown,
        tasks,
        edge,
    }
}

/// A subscribe request, as the naive server reads it.
#[derive(Deserialize)]
struct SubscribeMsg {
    op: String,
    symbols: Vec<String>,
}

/// The naive server's reply to a subscribe, fields in the order tickcast
/// writes them.
#[derive(Serialize)]
struct SubscribedMsg<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    symbols: &'a [String],
}

/// One naive connection: handshake, wait for a subscribe, then serialize
/// and send every tick of a subscribed symbol; close with 1001 on shutdown.
async fn naive_session(
    socket: TcpStream,
    sender: broadcast::Sender<Tick>,
    symbols: Arc<Symbols>,
    lagged: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(socket).await else {
        return;
    };
    let wanted = loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<SubscribeMsg>(&text) {
                Ok(msg) if msg.op == "subscribe" => break msg.symbols,
                _ => continue,
            },
            Some(Ok(_)) => continue,
            _ => return,
        }
    };
    // Subscribed to the channel before the reply, so no tick published
    // after the client has its reply is missed.
    let mut ticks = sender.subscribe();
    let reply = serde_json::to_string(&SubscribedMsg {
        kind: "subscribed",
        symbols: &wanted,
    })
    .expect("serializing to memory cannot fail");
    if ws.send(Message::text(reply)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                let _ = ws
                    .send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Away,
                        reason: "server shutting down".into(),
                    })))
                    .await;
                // Read the client's answering close.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                return;
            }
            tick = ticks.recv() => match tick {
                Ok(tick) => {
                    let sym = &*symbols.name(tick.symbol);
                    if !wanted.iter().any(|w| w == sym) {
                        continue;
                    }
                    let json = naive::tick_json(sym, &tick);
                    if ws.send(Message::text(json)).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    lagged.fetch_add(missed, Ordering::Relaxed);
                }
                Err(RecvError::Closed) => return,
            },
            message = ws.next() => match message {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// A benchmark client: a raw socket that speaks just enough WebSocket.
struct Conn {
    socket: TcpStream,
    /// Bytes read and not yet parsed into frames.
    buf: BytesMut,
}

impl Conn {
    /// Connects, upgrades, subscribes to [`SYMBOL`] and waits for the
    /// `subscribed` reply.
    async fn open(addr: SocketAddr) -> io::Result<Conn> {
        let mut socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        socket.write_all(request.as_bytes()).await?;
        let mut buf = BytesMut::with_capacity(4096);
        let end = loop {
            if socket.read_buf(&mut buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        if !buf.starts_with(b"HTTP/1.1 101") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            return Err(io::Error::other(format!("upgrade refused: {head}")));
        }
        buf.advance(end);
        let mut conn = Conn { socket, buf };
        conn.send(opcode::TEXT, SUBSCRIBE).await?;
        loop {
            let (opcode, payload) = conn.next_frame().await?;
            if opcode == opcode::TEXT && payload.starts_with(br#"{"type":"subscribed""#) {
                return Ok(conn);
            }
        }
    }

    /// Sends one masked frame.
    async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        self.socket.write_all(&client_frame(opcode, payload)).await
    }

    /// The next whole frame from the server: its opcode and payload.
    async fn next_frame(&mut self) -> io::Result<(u8, Bytes)> {
        loop {
            let split = split_server_frame(&self.buf, MAX_FRAME)
                .map_err(|bad| io::Error::new(io::ErrorKind::InvalidData, bad))?;
            if let Some(frame) = split {
                let whole = self.buf.split_to(frame.len).freeze();
                return Ok((frame.opcode, whole.slice(frame.payload)));
            }
            self.buf.reserve(4096);
            if self.socket.read_buf(&mut self.buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads until the server closes, reporting each tick to `round`.
    async fn read_ticks(mut self, round: Arc<Round>) {
        while let Ok((opcode, payload)) = self.next_frame().await {
            match opcode {
                opcode::TEXT if payload.starts_with(br#"{"type":"tick""#) => {
                    round.received(seq_of(&payload));
                }
                opcode::CLOSE => {
                    let code = &payload[..payload.len().min(2)];
                    let _ = self.send(opcode::CLOSE, code).await;
                    return;
                }
                opcode::PING => {
                    // A failed write shows up as the next read's error.
                    let _ = self.send(opcode::PONG, &payload).await;
                }
                _ => {}
            }
        }
    }
}

/// The `seq` of a tick message, read straight from its JSON.
fn seq_of(json: &[u8]) -> Option<u64> {
    const KEY: &[u8] = br#""seq":"#;
    let at = json.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = json[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&json[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// Latency figures of one benchmark's measured samples.
struct Summary {
    ticks: usize,
    mean: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Summary {
    /// Summarises the last [`SAMPLE_SIZE`] calls of a routine (criterion's
    /// samples; earlier calls were its warm-up). `None` if it never ran.
    fn of(calls: &[Vec<Duration>]) -> Option<Summary> {
        let measured = &calls[calls.len().saturating_sub(SAMPLE_SIZE)..];
        let mut all: Vec<Duration> = measured.iter().flatten().copied().collect();
        if all.is_empty() {
            return None;
        }
        all.sort_unstable();
        // Nearest rank: the smallest value with at least p% at or below it.
        let rank = |p: usize| all[(all.len() * p).div_ceil(100).max(1) - 1];
        Some(Summary {
            ticks: all.len(),
            mean: all.iter().sum::<Duration>() / all.len() as u32,
            p50: rank(50),
            p99: rank(99),
            max: all[all.len() - 1],
        })
    }
}

fn ratio(baseline: Duration, tickcast: Duration) -> f64 {
    baseline.as_secs_f64() / tickcast.as_secs_f64()
}

fn broadcast_latency(c: &mut Criterion) {
    let rt = Runtimes::new();
    let mut group = c.benchmark_group("broadcast_latency");
    for n in CLIENTS {
        let mut summaries = HashMap::new();
        for contender in [Contender::Tickcast, Contender::Naive] {
            let id = BenchmarkId::new(contender.name(), n);
            let label = format!("broadcast_latency/{}/{n}", contender.name());
            // Started on first use, so a filtered-out benchmark costs nothing.
            let mut harness = None;
            let mut calls: Vec<Vec<Duration>> = Vec::new();
            group.bench_with_input(id, &n, |b, &n| {
                b.iter_custom(|iters| {
                    let harness = harness.get_or_insert_with(|| Harness::start(&rt, contender, n));
                    let mut latencies = Vec::with_capacity(iters as usize);
                    for _ in 0..iters {
                        latencies.push(harness.deliver());
                    }
                    let total = latencies.iter().sum();
                    calls.push(latencies);
                    total
                })
            });
            if let Some(harness) = harness {
                harness.stop(&label);
            }
            if let Some(s) = Summary::of(&calls) {
                eprintln!(
                    "{label}: {} ticks measured: mean {:.1?}, p50 {:.1?}, p99 {:.1?}, max {:.1?}",
                    s.ticks, s.mean, s.p50, s.p99, s.max
                );
                summaries.insert(contender, s);
            }
        }
        if let (Some(fast), Some(naive)) = (
            summaries.get(&Contender::Tickcast),
            summaries.get(&Contender::Naive),
        ) {
            eprintln!(
                "broadcast_latency/{n}: naive ÷ tickcast: mean {:.2}×, p50 {:.2}×, p99 {:.2}×",
                ratio(naive.mean, fast.mean),
                ratio(naive.p50, fast.p50),
                ratio(naive.p99, fast.p99)
            );
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(SAMPLE_SIZE)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = broadcast_latency
}
criterion_main!(benches);
