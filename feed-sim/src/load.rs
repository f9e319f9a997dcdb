//! `feed-sim load`: opens many WebSocket clients against a tickcast
//! server, subscribes them, and measures what they receive (rate, `seq`
//! gaps, latency from the tick's own `ts`) and what it costs.
//!
//! The tool must never be the bottleneck it measures, so the receive path
//! is kept lean:
//! - one current-thread runtime with every client a local task, so shared
//!   counters are plain `Cell`/`RefCell` (no atomics, no locks);
//! - the handshake and the `subscribe` go through fastwebsockets, then the
//!   client drops down to the raw `TcpStream` and reads into a fixed buffer,
//!   splitting server frames itself: server frames are never masked and
//!   tick frames are never fragmented, so a frame is a 2- or 4-byte header
//!   and a payload slice, with no copy and no allocation per message;
//! - a tick is not parsed as JSON: its layout is fixed by
//!   `tickcast::fanout::encode`, so the tool checks the `{"type":"tick"`
//!   prefix and finds `"sym":"`, `"seq":` and `"ts":` with byte searches;
//! - the wall clock is read once per `read()`, not once per message: every
//!   frame of one read arrived at the same moment.
//!
//! Timeline: connecting starts at once (at most `--connect-parallelism`
//! handshakes in flight) and overlaps the warm-up; the measured window runs
//! from `--warmup` to `--warmup + --duration` seconds after start, and the
//! tool stops then whatever the clients are doing.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::{ArgGroup, Args};
use fastwebsockets::{Frame, Payload};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Empty};
use hyper::header::{CONNECTION, HOST, UPGRADE};
use hyper::Request;
use hyper_util::rt::TokioIo;
use memchr::memmem;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

use tickcast::feed::now_nanos;
use tickcast::tick::{SymbolId, SymbolTable};

use crate::report::{self, CpuUse, Gaps, Latency, Report, ServerUse};

/// Bytes each client reads into at once: room for about a hundred ticks,
/// so a client that falls behind catches up in few system calls. Grows
/// only for a frame larger than this (a `subscribed` reply naming
/// thousands of symbols).
const READ_BUFFER: usize = 16 * 1024;

/// Largest server frame accepted; anything larger is a broken stream.
const MAX_FRAME: usize = 64 << 20;

/// Connections per source address before another one is used: the
/// ephemeral port range holds about 28,000 ports per local address.
const CONNECTIONS_PER_SOURCE_IP: usize = 25_000;

/// Highest latency the histogram tells apart, µs (an hour); larger values
/// are recorded as this.
const LATENCY_MAX_US: u64 = 3_600_000_000;

/// Options of `feed-sim load`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("subscription").required(true).args(["all", "subs"])))]
pub struct LoadArgs {
    /// WebSocket URL of the server; `/symbols` is fetched from the same
    /// host and port.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,

    /// Number of WebSocket clients to open.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,

    /// Subscribe every client to every symbol (`"*"`).
    #[arg(long)]
    pub all: bool,

    /// Subscribe every client to K symbols, spread evenly over the server's
    /// list and rotated between clients so every symbol gets subscribers.
    #[arg(long, value_name = "K")]
    pub subs: Option<usize>,

    /// Seconds of warm-up (connecting included) before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,

    /// Seconds measured after the warm-up; the tool then stops.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    /// Also write every figure as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Process id of the server, to report its CPU use over the window and
    /// its peak resident memory (read from /proc).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// Connects and handshakes in flight at once.
    #[arg(long, default_value_t = 64)]
    pub connect_parallelism: usize,

    /// Spread clients over source addresses 127.0.0.1..=127.0.0.N (loopback
    /// servers only), so many connections do not run out of ephemeral
    /// ports. Default: one address per 25,000 clients.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..))]
    pub source_ips: Option<u8>,

    /// Seconds one client may take to connect, upgrade and subscribe
    /// before it counts as a connect failure.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
}

/// Runs `feed-sim load` on a current-thread runtime.
pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    if !(args.warmup >= 0.0 && args.duration > 0.0) {
        bail!("give --warmup of at least 0 and --duration above 0 seconds");
    }
    if args.clients == 0 || args.connect_parallelism == 0 {
        bail!("give --clients and --connect-parallelism of at least 1");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the tokio runtime")?;
    let local = tokio::task::LocalSet::new();
    let report = local.block_on(&runtime, load(&args))?;
    print!("{}", report.render());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).expect("a report serializes");
        std::fs::write(path, json + "\n")
            .with_context(|| format!("could not write {}", path.display()))?;
        println!("  figures written to {}", path.display());
    }
    Ok(())
}

/// Where the run is on its timeline; clients count only in `Measuring`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    WarmingUp,
    Measuring,
    Done,
}

/// What the run shares between its clients (all on one thread).
struct Shared {
    phase: Cell<Phase>,
    symbols: SymbolTable,
    tick_fields: TickFields,
    connected: Cell<usize>,
    subscribed: Cell<usize>,
    connect_failures: RefCell<BTreeMap<String, u64>>,
    last_connect_attempt: Cell<Option<Instant>>,
    totals: RefCell<Totals>,
}

/// Counters the clients add to.
struct Totals {
    ticks: u64,
    gaps: Gaps,
    latency_us: Histogram<u64>,
    close_codes: BTreeMap<u16, u64>,
    disconnects_without_close: u64,
    server_errors: u64,
    first_server_error: Option<String>,
    unrecognised: u64,
}

async fn load(args: &LoadArgs) -> anyhow::Result<Report> {
    let target = Target::parse(&args.url)?;
    let nofile_limit = raise_open_file_limit(args.clients);

    let names = fetch_symbols(&target).await.with_context(|| {
        format!(
            "could not read the symbol list from http://{}/symbols: is the server running at {}?",
            target.authority, args.url
        )
    })?;
    if names.is_empty() {
        bail!("the server carries no symbols");
    }
    let (subscription, plans) = match args.subs {
        Some(k) => {
            if k == 0 || k > names.len() {
                bail!(
                    "--subs {k} is out of range: the server carries {} symbols",
                    names.len()
                );
            }
            let plans: Vec<_> = (0..args.clients)
                .map(|i| subscribe_message(&spread_symbols(&names, k, i)))
                .collect();
            (format!("{k} symbols per client"), plans)
        }
        None => (
            "all symbols (\"*\")".to_string(),
            vec![subscribe_message(&["*"])],
        ),
    };

    let source_ips = match (target.addr.ip().is_loopback(), args.source_ips) {
        (false, _) => 0,
        (true, Some(n)) => usize::from(n),
        (true, None) => args.clients.div_ceil(CONNECTIONS_PER_SOURCE_IP).min(254),
    };

    let shared = Rc::new(Shared {
        phase: Cell::new(Phase::WarmingUp),
        symbols: SymbolTable::new(names),
        tick_fields: TickFields::new(),
        connected: Cell::new(0),
        subscribed: Cell::new(0),
        connect_failures: RefCell::new(BTreeMap::new()),
        last_connect_attempt: Cell::new(None),
        totals: RefCell::new(Totals::default()),
    });

    let start = Instant::now();
    let connect_slots = Rc::new(Semaphore::new(args.connect_parallelism));
    let connect_timeout = Duration::from_secs_f64(args.connect_timeout);
    for i in 0..args.clients {
        let source = (source_ips > 0)
            .then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % source_ips) as u8)));
        let subscribe = plans[i % plans.len()].clone();
        let client = Client {
            target: target.clone(),
            source,
            subscribe,
            shared: shared.clone(),
            seqs: SeqTracker::new(shared.symbols.len()),
            saw_gap: false,
        };
        let slots = connect_slots.clone();
        tokio::task::spawn_local(client.run(slots, connect_timeout));
    }

    tokio::time::sleep_until((start + Duration::from_secs_f64(args.warmup)).into()).await;
    let window_start = Instant::now();
    shared.phase.set(Phase::Measuring);
    let connected_at_start = shared.connected.get();
    let own_cpu_start = report::cpu_seconds(None).ok();
    let server_cpu_start = args
        .server_pid
        .and_then(|pid| report::cpu_seconds(Some(pid)).ok());

    tokio::time::sleep_until((window_start + Duration::from_secs_f64(args.duration)).into()).await;
    shared.phase.set(Phase::Done);
    let window = window_start.elapsed().as_secs_f64();
    let own_cpu_end = report::cpu_seconds(None).ok();
    let server_cpu_end = args
        .server_pid
        .and_then(|pid| report::cpu_seconds(Some(pid)).ok());

    let totals = shared.totals.take();
    let connected = shared.connected.get();
    let own_cpu = match (own_cpu_start, own_cpu_end) {
        (Some(a), Some(b)) => CpuUse {
            cpu_seconds: b - a,
            cpu_percent: 100.0 * (b - a) / window,
            cpu_us_per_msg: if totals.ticks > 0 {
                (b - a) * 1e6 / totals.ticks as f64
            } else {
                0.0
            },
        },
        _ => CpuUse::default(),
    };
    let server = args.server_pid.map(|pid| ServerUse {
        pid,
        cpu_percent: match (server_cpu_start, server_cpu_end) {
            (Some(a), Some(b)) => 100.0 * (b - a) / window,
            _ => f64::NAN,
        },
        peak_rss_kib: report::peak_rss_kib(pid),
    });
    let connect_failures = shared.connect_failures.take();
    let msgs_per_second = totals.ticks as f64 / window;
    Ok(Report {
        url: args.url.clone(),
        subscription,
        clients_requested: args.clients,
        clients_connected: connected,
        clients_connected_at_start: connected_at_start,
        clients_subscribed: shared.subscribed.get(),
        connect_failures: connect_failures.values().sum::<u64>() as usize,
        connect_failure_reasons: connect_failures,
        connect_seconds: shared
            .last_connect_attempt
            .get()
            .map(|at| at.duration_since(start).as_secs_f64()),
        source_ips,
        nofile_limit,
        warmup_seconds: args.warmup,
        window_seconds: window,
        ticks: totals.ticks,
        msgs_per_second,
        msgs_per_second_per_client: msgs_per_second / connected.max(1) as f64,
        gaps: totals.gaps,
        latency_us: Latency::from_histogram(&totals.latency_us),
        own_cpu,
        server,
        close_codes: totals.close_codes,
        disconnects_without_close: totals.disconnects_without_close,
        server_errors: totals.server_errors,
        first_server_error: totals.first_server_error,
        unrecognised: totals.unrecognised,
    })
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            ticks: 0,
            gaps: Gaps::default(),
            latency_us: Histogram::new_with_max(LATENCY_MAX_US, 3).expect("valid histogram bounds"),
            close_codes: BTreeMap::new(),
            disconnects_without_close: 0,
            server_errors: 0,
            first_server_error: None,
            unrecognised: 0,
        }
    }
}

/// Raises the open-file soft limit to the hard limit and says what it is.
fn raise_open_file_limit(clients: usize) -> u64 {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            eprintln!("could not raise the open-file limit ({e}); keeping the current one");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft)
        }
    };
    println!("open-file limit: {limit}");
    if (clients as u64).saturating_add(64) > limit {
        eprintln!(
            "warning: {clients} clients need more open files than the limit of {limit}; \
             raise the hard limit (ulimit -Hn, or LimitNOFILE) or expect connect failures"
        );
    }
    limit
}

/// Where the server is.
#[derive(Clone, Debug)]
struct Target {
    addr: SocketAddr,
    /// `host:port` as given, for the `Host` header.
    authority: String,
    /// Request path of the WebSocket endpoint.
    path: String,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: hyper::Uri = url
            .parse()
            .with_context(|| format!("{url:?} is not a URL; give e.g. ws://127.0.0.1:8080/ws"))?;
        if uri.scheme_str() != Some("ws") {
            bail!("{url:?} is not a ws:// URL (wss is not supported); give e.g. ws://127.0.0.1:8080/ws");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("{url:?} has no host; give e.g. ws://127.0.0.1:8080/ws"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .with_context(|| format!("could not resolve {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        Ok(Target {
            addr,
            authority: authority.to_string(),
            path: uri.path().to_string(),
        })
    }
}

/// Runs hyper's connection futures on the local task set.
struct LocalExecutor;

impl<F> hyper::rt::Executor<F> for LocalExecutor
where
    F: Future + 'static,
{
    fn execute(&self, future: F) {
        tokio::task::spawn_local(future);
    }
}

/// The symbol names of `GET /symbols` (a JSON array of objects with a
/// `sym` field), in the server's order.
async fn fetch_symbols(target: &Target) -> anyhow::Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Row {
        sym: String,
    }
    let stream = TcpStream::connect(target.addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::task::spawn_local(connection);
    let request = Request::get("/symbols")
        .header(HOST, &target.authority)
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        bail!("GET /symbols answered {}", response.status());
    }
    let body = response.into_body().collect().await?.to_bytes();
    let rows: Vec<Row> = serde_json::from_slice(&body)
        .context("the body is not a JSON array of {\"sym\":…} objects")?;
    Ok(rows.into_iter().map(|r| r.sym).collect())
}

/// `k` of `names`, evenly spaced over the list; `client` rotates the
/// starting point so that, over many clients, every symbol is chosen about
/// equally often.
fn spread_symbols(names: &[String], k: usize, client: usize) -> Vec<&str> {
    let n = names.len();
    let stride = n as f64 / k as f64;
    let offset = client % (n / k).max(1);
    (0..k)
        .map(|j| names[(offset + (j as f64 * stride) as usize) % n].as_str())
        .collect()
}

/// The `subscribe` request for `symbols`.
fn subscribe_message(symbols: &[&str]) -> Rc<[u8]> {
    serde_json::to_vec(&serde_json::json!({ "op": "subscribe", "symbols": symbols }))
        .expect("a subscribe serializes")
        .into()
}

/// One WebSocket client.
struct Client {
    target: Target,
    source: Option<IpAddr>,
    subscribe: Rc<[u8]>,
    shared: Rc<Shared>,
    seqs: SeqTracker,
    saw_gap: bool,
}

/// Why a connection ended.
enum Ended {
    Closed(Option<u16>),
    Eof,
    Error,
    Done,
}

impl Client {
    async fn run(mut self, slots: Rc<Semaphore>, timeout: Duration) {
        let connected = {
            let _slot = slots
                .acquire()
                .await
                .expect("the semaphore is never closed");
            let result = tokio::time::timeout(timeout, self.connect()).await;
            self.shared.last_connect_attempt.set(Some(Instant::now()));
            match result {
                Ok(Ok(connected)) => Some(connected),
                Ok(Err(e)) => {
                    self.fail(format!("{e:#}"));
                    None
                }
                Err(_) => {
                    self.fail(format!("no upgrade within {timeout:?}"));
                    None
                }
            }
        };
        let Some((stream, leftover)) = connected else {
            return;
        };
        self.shared.connected.set(self.shared.connected.get() + 1);
        let ended = self.receive(stream, leftover).await;
        let mut totals = self.shared.totals.borrow_mut();
        match ended {
            Ended::Closed(code) => {
                *totals.close_codes.entry(code.unwrap_or(1005)).or_default() += 1;
            }
            Ended::Eof | Ended::Error => totals.disconnects_without_close += 1,
            Ended::Done => {}
        }
    }

    fn fail(&self, reason: String) {
        *self
            .shared
            .connect_failures
            .borrow_mut()
            .entry(reason)
            .or_default() += 1;
    }

    /// Connects from the client's source address, upgrades, sends the
    /// subscribe; returns the raw stream and any bytes read past the
    /// upgrade response.
    async fn connect(&self) -> anyhow::Result<(TcpStream, Bytes)> {
        let socket = TcpSocket::new_v4().context("socket")?;
        if let Some(source) = self.source {
            socket
                .bind(SocketAddr::new(source, 0))
                .with_context(|| format!("bind {source}"))?;
        }
        let stream = socket.connect(self.target.addr).await.context("connect")?;
        stream.set_nodelay(true).context("nodelay")?;
        let request = Request::get(self.target.path.as_str())
            .header(HOST, &self.target.authority)
            .header(UPGRADE, "websocket")
            .header(CONNECTION, "upgrade")
            .header(
                "Sec-WebSocket-Key",
                fastwebsockets::handshake::generate_key(),
            )
            .header("Sec-WebSocket-Version", "13")
            .body(Empty::<Bytes>::new())?;
        let (mut ws, _) = fastwebsockets::handshake::client(&LocalExecutor, request, stream)
            .await
            .context("upgrade")?;
        ws.write_frame(Frame::text(Payload::Owned(self.subscribe.to_vec())))
            .await
            .context("send subscribe")?;
        let upgraded = ws.into_inner().into_inner();
        let parts = upgraded
            .downcast::<TokioIo<TcpStream>>()
            .map_err(|_| anyhow::anyhow!("the upgraded connection is not a TcpStream"))?;
        Ok((parts.io.into_inner(), parts.read_buf))
    }

    /// Reads frames until the server closes, the connection fails, or the
    /// run is over.
    async fn receive(&mut self, mut stream: TcpStream, leftover: Bytes) -> Ended {
        let mut buf = vec![0u8; READ_BUFFER.max(leftover.len())];
        buf[..leftover.len()].copy_from_slice(&leftover);
        let mut end = leftover.len();
        loop {
            let phase = self.shared.phase.get();
            if phase == Phase::Done {
                return Ended::Done;
            }
            let (consumed, event) = self.handle_frames(&buf[..end], now_nanos(), phase);
            buf.copy_within(consumed..end, 0);
            end -= consumed;
            match event {
                Some(Event::Close(code)) => return Ended::Closed(code),
                Some(Event::Broken) => return Ended::Error,
                Some(Event::Ping(payload)) => {
                    if stream.write_all(&masked_pong(&payload)).await.is_err() {
                        return Ended::Error;
                    }
                    // Frames after the ping may already be in the buffer.
                    continue;
                }
                None => {}
            }
            if end == buf.len() {
                // One frame larger than the buffer: make room for it.
                let need = frame_len(&buf[..end]).unwrap_or(buf.len() * 2);
                buf.resize(need.max(buf.len() + 1), 0);
            }
            match stream.read(&mut buf[end..]).await {
                Ok(0) => return Ended::Eof,
                Ok(n) => end += n,
                Err(_) => return Ended::Error,
            }
        }
    }

    /// Handles every complete frame at the start of `data`, received at
    /// `now_ns`; returns how many bytes they took and what the connection
    /// must do next, if anything.
    fn handle_frames(&mut self, data: &[u8], now_ns: u64, phase: Phase) -> (usize, Option<Event>) {
        let measuring = phase == Phase::Measuring;
        let shared = self.shared.clone();
        let mut totals = shared.totals.borrow_mut();
        let mut at = 0;
        while at < data.len() {
            let frame = match next_frame(&data[at..]) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(()) => return (at, Some(Event::Broken)),
            };
            let payload = &data[at..][frame.payload.clone()];
            at += frame.len;
            match frame.opcode {
                OPCODE_TEXT => self.handle_text(payload, now_ns, measuring, &mut totals),
                OPCODE_CLOSE => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return (at, Some(Event::Close(code)));
                }
                OPCODE_PING => return (at, Some(Event::Ping(payload.to_vec()))),
                _ => totals.unrecognised += 1,
            }
        }
        (at, None)
    }

    fn handle_text(&mut self, payload: &[u8], now_ns: u64, measuring: bool, totals: &mut Totals) {
        let shared = &*self.shared;
        match message_kind(payload) {
            Kind::Tick => {
                let Some(tick) = shared.tick_fields.parse(payload, &shared.symbols) else {
                    totals.unrecognised += 1;
                    return;
                };
                let seen = self.seqs.tick(tick.symbol, tick.seq);
                if !measuring {
                    return;
                }
                totals.ticks += 1;
                match seen {
                    Seen::InOrder => {}
                    Seen::Gap(missing) => {
                        totals.gaps.missing_ticks += missing;
                        totals.gaps.gap_events += 1;
                        if !self.saw_gap {
                            self.saw_gap = true;
                            totals.gaps.clients_with_gaps += 1;
                        }
                    }
                    Seen::Regressed => totals.gaps.seq_regressions += 1,
                }
                let latency_us = now_ns.saturating_sub(tick.ts) / 1_000;
                totals.latency_us.saturating_record(latency_us);
            }
            Kind::Snapshot => match shared.tick_fields.parse(payload, &shared.symbols) {
                Some(tick) => self.seqs.snapshot(tick.symbol, tick.seq),
                None => totals.unrecognised += 1,
            },
            Kind::Subscribed => shared.subscribed.set(shared.subscribed.get() + 1),
            Kind::Error => {
                totals.server_errors += 1;
                if totals.first_server_error.is_none() {
                    totals.first_server_error = Some(String::from_utf8_lossy(payload).into_owned());
                }
            }
            Kind::Other => totals.unrecognised += 1,
        }
    }
}

/// What a connection must do after a batch of frames.
#[derive(Debug, PartialEq)]
enum Event {
    /// The server sent a close frame, with this code if it gave one.
    Close(Option<u16>),
    /// The server pinged; answer with this payload.
    Ping(Vec<u8>),
    /// The stream is not valid WebSocket from a server.
    Broken,
}

const OPCODE_TEXT: u8 = 0x1;
const OPCODE_CLOSE: u8 = 0x8;
const OPCODE_PING: u8 = 0x9;

/// A complete frame at the start of a buffer.
#[derive(Debug, PartialEq)]
struct FrameAt {
    opcode: u8,
    /// The payload, relative to the frame's start.
    payload: Range<usize>,
    /// Header plus payload.
    len: usize,
}

/// The frame at the start of `data`: `Ok(None)` if it is not complete yet,
/// `Err` if it is no valid server frame (masked, fragmented, reserved bits,
/// or larger than [`MAX_FRAME`]).
fn next_frame(data: &[u8]) -> Result<Option<FrameAt>, ()> {
    let (Some(&b0), Some(&b1)) = (data.first(), data.get(1)) else {
        return Ok(None);
    };
    if b0 & 0xF0 != 0x80 || b1 & 0x80 != 0 {
        // Not FIN, reserved bits set, or masked: the server never does that.
        return Err(());
    }
    let (payload_len, header) = match b1 & 0x7F {
        126 => match data.get(2..4) {
            Some(b) => (usize::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match data.get(2..10) {
            Some(b) => {
                let len = u64::from_be_bytes(b.try_into().expect("eight bytes"));
                (usize::try_from(len).unwrap_or(usize::MAX), 10)
            }
            None => return Ok(None),
        },
        n => (usize::from(n), 2),
    };
    if payload_len > MAX_FRAME {
        return Err(());
    }
    let len = header + payload_len;
    if data.len() < len {
        return Ok(None);
    }
    Ok(Some(FrameAt {
        opcode: b0 & 0x0F,
        payload: header..len,
        len,
    }))
}

/// Total length of the frame starting `data`, once its header is complete.
fn frame_len(data: &[u8]) -> Option<usize> {
    let b1 = *data.get(1)?;
    Some(match b1 & 0x7F {
        126 => 4 + usize::from(u16::from_be_bytes(data.get(2..4)?.try_into().ok()?)),
        127 => 10 + usize::try_from(u64::from_be_bytes(data.get(2..10)?.try_into().ok()?)).ok()?,
        n => 2 + usize::from(n),
    })
}

/// A client pong frame (clients must mask) carrying `payload`.
fn masked_pong(payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(125)];
    let mask = [0x5A, 0xC3, 0x3C, 0xA5];
    let mut frame = vec![0x8A, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Which server message a text frame is, by its `type` (always the first
/// field in tickcast's messages).
#[derive(Debug, PartialEq)]
enum Kind {
    Tick,
    Snapshot,
    Subscribed,
    Error,
    Other,
}

fn message_kind(payload: &[u8]) -> Kind {
    if payload.starts_with(br#"{"type":"tick","#) {
        Kind::Tick
    } else if payload.starts_with(br#"{"type":"snapshot","#) {
        Kind::Snapshot
    } else if payload.starts_with(br#"{"type":"subscribed","#) {
        Kind::Subscribed
    } else if payload.starts_with(br#"{"type":"error","#) {
        Kind::Error
    } else {
        Kind::Other
    }
}

/// The fields of a tick or snapshot the tool uses.
#[derive(Debug, PartialEq)]
struct TickSeen {
    symbol: SymbolId,
    seq: u64,
    ts: u64,
}

/// Finds `"sym":"`, `"seq":` and `"ts":` in a tick by byte search instead
/// of parsing JSON: the messages come from `fanout::encode`, whose field
/// set is fixed and whose symbol names need no escaping. Searchers are
/// built once and shared by all clients.
struct TickFields {
    sym: memmem::Finder<'static>,
    seq: memmem::Finder<'static>,
    ts: memmem::Finder<'static>,
}

impl TickFields {
    fn new() -> Self {
        TickFields {
            sym: memmem::Finder::new(br#""sym":""#),
            seq: memmem::Finder::new(br#""seq":"#),
            ts: memmem::Finder::new(br#""ts":"#),
        }
    }

    fn parse(&self, payload: &[u8], symbols: &SymbolTable) -> Option<TickSeen> {
        let sym_start = self.sym.find(payload)? + self.sym.needle().len();
        let sym_len = memchr::memchr(b'"', &payload[sym_start..])?;
        let name = std::str::from_utf8(&payload[sym_start..sym_start + sym_len]).ok()?;
        let symbol = symbols.id(name)?;
        let rest = &payload[sym_start + sym_len..];
        let seq = leading_number(&rest[self.seq.find(rest)? + self.seq.needle().len()..])?;
        // `ts` is the last field: search from the end.
        let ts_at = memmem::rfind(rest, self.ts.needle())? + self.ts.needle().len();
        let ts = leading_number(&rest[ts_at..])?;
        Some(TickSeen { symbol, seq, ts })
    }
}

/// The unsigned decimal number `bytes` starts with.
fn leading_number(bytes: &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    let mut digits = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            break;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        digits += 1;
    }
    (digits > 0).then_some(value)
}

/// How a tick's `seq` relates to the previous one of its symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// Exactly one more (or the first tick of a symbol that had no
    /// snapshot and starts at 1).
    InOrder,
    /// This many ticks were skipped.
    Gap(u64),
    /// Not above the previous `seq`: a duplicate or a reordering.
    Regressed,
}

/// Last `seq` per symbol on one connection. Before any tick or snapshot of
/// a symbol its last `seq` is 0: the server sends a snapshot of every
/// symbol that has traded before its first tick, so a symbol without one
/// must start at seq 1, and anything else is a gap.
struct SeqTracker {
    last: Vec<u64>,
}

impl SeqTracker {
    fn new(symbols: usize) -> Self {
        SeqTracker {
            last: vec![0; symbols],
        }
    }

    /// A snapshot sets the base the next tick must follow.
    fn snapshot(&mut self, symbol: SymbolId, seq: u64) {
        self.last[symbol as usize] = seq;
    }

    fn tick(&mut self, symbol: SymbolId, seq: u64) -> Seen {
        let last = &mut self.last[symbol as usize];
        let seen = if seq == *last + 1 {
            Seen::InOrder
        } else if seq > *last {
            Seen::Gap(seq - *last - 1)
        } else {
            return Seen::Regressed;
        };
        *last = seq;
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickcast::fanout::encode::{tick_frame, TickKind};
    use tickcast::protocol::frame::{close_frame, text_frame};
    use tickcast::tick::Tick;

    fn table() -> SymbolTable {
        SymbolTable::new(["AAPL", "BRK.B", "MSFT"].map(String::from))
    }

    fn tick(symbol: SymbolId, seq: u64) -> Tick {
        Tick {
            symbol,
            seq,
            px: 187.25,
            bid: 187.24,
            ask: 187.26,
            size: 300,
            ts: 1_732_250_000_123_456_789,
        }
    }

    #[test]
    fn counts_missing_ticks_per_symbol() {
        let mut seqs = SeqTracker::new(3);
        seqs.snapshot(0, 10);
        assert_eq!(seqs.tick(0, 11), Seen::InOrder);
        assert_eq!(seqs.tick(0, 15), Seen::Gap(3));
        assert_eq!(seqs.tick(0, 16), Seen::InOrder);
        // Another symbol keeps its own count; no snapshot means from 1.
        assert_eq!(seqs.tick(1, 1), Seen::InOrder);
        assert_eq!(seqs.tick(2, 5), Seen::Gap(4));
        assert_eq!(seqs.tick(0, 16), Seen::Regressed);
        assert_eq!(seqs.tick(0, 12), Seen::Regressed);
        // A regression does not move the base.
        assert_eq!(seqs.tick(0, 17), Seen::InOrder);
    }

    #[test]
    fn reads_the_fields_of_the_servers_own_tick_encoding() {
        let fields = TickFields::new();
        let symbols = table();
        for (id, name) in [(0, "AAPL"), (1, "BRK.B")] {
            let frame = tick_frame(TickKind::Tick, name, &tick(id, 42));
            let at = next_frame(&frame).unwrap().unwrap();
            assert_eq!(at.len, frame.len());
            let payload = &frame[at.payload];
            assert_eq!(message_kind(payload), Kind::Tick);
            assert_eq!(
                fields.parse(payload, &symbols),
                Some(TickSeen {
                    symbol: id,
                    seq: 42,
                    ts: 1_732_250_000_123_456_789
                })
            );
        }
        let snapshot = tick_frame(TickKind::Snapshot, "MSFT", &tick(2, 7));
        let payload = &snapshot[next_frame(&snapshot).unwrap().unwrap().payload];
        assert_eq!(message_kind(payload), Kind::Snapshot);
        assert_eq!(fields.parse(payload, &symbols).unwrap().seq, 7);
        assert_eq!(
            fields.parse(br#"{"type":"tick","sym":"ZZZZ","seq":1,"ts":2}"#, &symbols),
            None
        );
    }

    #[test]
    fn splits_frames_and_waits_for_incomplete_ones() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&text_frame(b"hello"));
        stream.extend_from_slice(&text_frame(&[b'x'; 300]));
        stream.extend_from_slice(&close_frame(1008, "slow consumer"));
        let first = next_frame(&stream).unwrap().unwrap();
        assert_eq!((first.opcode, first.len), (OPCODE_TEXT, 7));
        let second = next_frame(&stream[7..]).unwrap().unwrap();
        assert_eq!((second.payload.clone(), second.len), (4..304, 304));
        assert_eq!(frame_len(&stream[7..]), Some(304));
        let close = next_frame(&stream[311..]).unwrap().unwrap();
        assert_eq!(close.opcode, OPCODE_CLOSE);
        for cut in 0..second.len {
            assert_eq!(next_frame(&stream[7..7 + cut]), Ok(None), "cut {cut}");
        }
        assert!(next_frame(&[0x81, 0x85, 1, 2, 3, 4, 0]).is_err(), "masked");
        assert!(next_frame(&[0x01, 0x01, b'x']).is_err(), "fragmented");
    }

    #[test]
    fn spreads_subscriptions_evenly() {
        let names: Vec<String> = (0..100).map(|i| format!("S{i}")).collect();
        assert_eq!(spread_symbols(&names, 4, 0), ["S0", "S25", "S50", "S75"]);
        assert_eq!(spread_symbols(&names, 4, 1), ["S1", "S26", "S51", "S76"]);
        let mut hits = vec![0; 100];
        for client in 0..1000 {
            for name in spread_symbols(&names, 4, client) {
                hits[name[1..].parse::<usize>().unwrap()] += 1;
            }
        }
        assert!(hits.iter().all(|&h| h == 40), "{hits:?}");
        assert_eq!(spread_symbols(&names, 100, 3).len(), 100);
    }

    #[test]
    fn parses_numbers_and_urls() {
        assert_eq!(leading_number(b"123,"), Some(123));
        assert_eq!(leading_number(b",1"), None);
        assert_eq!(leading_number(b"99999999999999999999999"), None);
        let target = Target::parse("ws://127.0.0.1:18080/ws").unwrap();
        assert_eq!(target.addr, "127.0.0.1:18080".parse().unwrap());
        assert_eq!(
            (target.authority.as_str(), target.path.as_str()),
            ("127.0.0.1:18080", "/ws")
        );
        assert!(Target::parse("http://127.0.0.1/ws").is_err());
    }

    #[test]
    fn pong_is_masked_and_unmasks_to_the_payload() {
        let frame = masked_pong(b"abc");
        assert_eq!(&frame[..2], &[0x8A, 0x83]);
        let mask = &frame[2..6];
        let payload: Vec<u8> = frame[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        assert_eq!(payload, b"abc");
    }
}
