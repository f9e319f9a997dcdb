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
//! reading clients stop then whatever they are doing. With `--idle` the
//! warm-up starts only once every client has subscribed. With `--stall N`
//! the first N clients read nothing until the window has ended, then drain
//! what is pending for at most [`STALL_DRAIN`], which is when they learn
//! whether the server closed them.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::{ArgGroup, Args};
use fastwebsockets::{Frame, Payload};
use hdrhistogram::Histogram;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};

use tickcast::feed::now_nanos;
use tickcast::tick::SymbolId;

use tickcast::protocol::frame::{client_frame, frame_len, opcode, split_server_frame};

use crate::hgrm;
use crate::net;
use crate::plot::{self, Curve};
use crate::progress::Progress;
use crate::report::{
    self, CpuUse, CurvePoint, Delivery, Gaps, IdleMemory, Latency, Report, ServerUse, Stalled,
};
use crate::server_msg::{close_label, message_kind, Kind, TickFields};
use crate::symbols::SymbolIds;
use crate::ws::{self, Target};

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

/// How long `--stall`ed clients may read what is pending after the window
/// before they are reported as still behind.
pub const STALL_DRAIN: Duration = Duration::from_secs(2);

/// How often the progress bars are redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

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

    /// Make the first N clients slow consumers: they subscribe, then read
    /// nothing at all (the socket stays open) until the window ends, to
    /// show what stalled readers do to everyone else. Every other figure is
    /// then about the reading clients only. After the window each stalled
    /// client reads what is pending for up to 2 s, and the report says how
    /// many the server had closed and with which code (1008 "slow
    /// consumer"), how many caught up, and what they had missed.
    #[arg(long, value_name = "N", default_value_t = 0, conflicts_with = "idle")]
    pub stall: usize,

    /// Measure the server's memory per connection (needs --server-pid):
    /// its VmRSS before the first connect, and once every client has
    /// connected and subscribed and --warmup seconds have passed (the
    /// warm-up starts only then), divided by the clients connected. The
    /// clients keep reading, so choose a light subscription (--subs 1) to
    /// keep the connections near idle.
    #[arg(long)]
    pub idle: bool,

    /// Write the latency histogram to FILE in HdrHistogram's percentile
    /// distribution text (.hgrm), values in milliseconds.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,

    /// Draw latency (ms, log scale) by percentile (log scale of 1/(1-p):
    /// 50%, 90%, 99%, 99.9%, …) as an SVG chart in FILE: this run is one
    /// line, each --plot-add run another, with a legend. To compare runs,
    /// save each with --json and add them to the last one, e.g.
    /// `--json b.json --plot cmp.svg --plot-add a.json`.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// A run to draw on the --plot chart too: a file an earlier run's
    /// --json wrote. Repeat for more runs.
    #[arg(long, value_name = "RUN.json", requires = "plot")]
    pub plot_add: Vec<PathBuf>,

    /// Draw no progress bars (they are drawn on stderr, and only when it
    /// is a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

/// Runs `feed-sim load`: measures, prints the report, writes the files
/// asked for.
pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    // Read the runs to plot first: a wrong path should not cost a run.
    let earlier: Vec<Curve> = args
        .plot_add
        .iter()
        .map(|path| Curve::from_json_file(path))
        .collect::<anyhow::Result<_>>()?;
    let report = measure(&args)?;
    print!("{}", report.render());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).expect("a report serializes");
        write_file(path, json + "\n")?;
        println!("  figures written to {}", path.display());
    }
    if let Some(path) = &args.hgrm {
        let text = hgrm::percentile_distribution(
            &report.latency_histogram,
            hgrm::TICKS_PER_HALF_DISTANCE,
            hgrm::MICROS_PER_MILLI,
        );
        write_file(path, text)?;
        println!(
            "  latency histogram (.hgrm, ms) written to {}",
            path.display()
        );
    }
    if let Some(path) = &args.plot {
        let name = args
            .json
            .as_deref()
            .and_then(|json| json.file_stem())
            .map_or("this run".into(), |stem| stem.to_string_lossy());
        let mut curves = vec![Curve::from_report(&name, &report)];
        curves.extend(earlier);
        let subtitle = if curves.len() == 1 {
            format!("{} · {}", report.scenario, report.url)
        } else {
            format!("{} runs against {}", curves.len(), report.url)
        };
        let svg = plot::svg("feed-sim load: latency by percentile", &subtitle, &curves);
        write_file(path, svg)?;
        println!("  latency chart written to {}", path.display());
    }
    Ok(())
}

fn write_file(path: &std::path::Path, contents: String) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("could not write {}", path.display()))
}

/// Runs the load `args` describe on a current-thread runtime of its own
/// and returns its figures. Call it from outside any tokio runtime.
pub fn measure(args: &LoadArgs) -> anyhow::Result<Report> {
    if !(args.warmup >= 0.0 && args.duration > 0.0) {
        bail!("give --warmup of at least 0 and --duration above 0 seconds");
    }
    if args.clients == 0 || args.connect_parallelism == 0 {
        bail!("give --clients and --connect-parallelism of at least 1");
    }
    if args.stall >= args.clients {
        bail!(
            "--stall {} leaves no client reading: give --stall below --clients ({})",
            args.stall,
            args.clients
        );
    }
    if args.idle && args.server_pid.is_none() {
        bail!(
            "--idle measures the server's memory, so it needs the server's process id: \
             add --server-pid PID"
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the tokio runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, load(args))
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
    /// Wakes the stalled clients when the phase becomes `Done`.
    run_over: Notify,
    /// When the warm-up began (`None` while `--idle` waits for clients).
    timeline_start: Cell<Option<Instant>>,
    symbols: SymbolIds,
    tick_fields: TickFields,
    connected: Cell<usize>,
    stalled_connected: Cell<usize>,
    subscribed: Cell<usize>,
    connect_attempts: Cell<usize>,
    connect_failures: RefCell<BTreeMap<String, u64>>,
    last_connect_attempt: Cell<Option<Instant>>,
    /// What the reading clients received.
    totals: RefCell<Totals>,
    /// What the stalled clients read after the window.
    stalled_totals: RefCell<Totals>,
}

impl Shared {
    fn connect_failures(&self) -> usize {
        self.connect_failures.borrow().values().sum::<u64>() as usize
    }
}

/// Counters the clients add to.
struct Totals {
    ticks: u64,
    gaps: Gaps,
    latency_us: Histogram<u64>,
    /// Close frames by `code reason`.
    close_codes: BTreeMap<String, u64>,
    disconnects_without_close: u64,
    server_errors: u64,
    first_server_error: Option<String>,
    unrecognised: u64,
    /// Stalled clients still open that read up to a fresh tick.
    caught_up: u64,
    /// Stalled clients still reading old data at the drain limit.
    still_behind: u64,
}

/// How long a run waits for a server with no symbols yet to learn some.
const SYMBOLS_WAIT: Duration = Duration::from_secs(10);

async fn load(args: &LoadArgs) -> anyhow::Result<Report> {
    let target = Target::parse(&args.url)?;
    let nofile_limit = net::raise_open_file_limit(args.clients);

    // A server fed from outside learns its symbols from the feed's first
    // ticks: give a publisher started beside this run a moment, until two
    // reads of the list 250 ms apart agree.
    let waiting_since = Instant::now();
    let settled = Cell::new(usize::MAX);
    let names = loop {
        let names = ws::fetch_symbols(&target, None)
            .await
            .map(|rows| rows.into_iter().map(|r| r.sym).collect::<Vec<_>>())
            .with_context(|| {
                format!(
                "could not read the symbol list from http://{}/symbols: is the server running at {}?",
                target.authority, args.url
            )
            })?;
        // Settled: the feed has published each of its symbols once.
        if !names.is_empty() && names.len() == settled.replace(names.len()) {
            break names;
        }
        if waiting_since.elapsed() >= SYMBOLS_WAIT {
            if !names.is_empty() {
                break names;
            }
            bail!(
                "the server carries no symbols after {} s; is its feed publishing?",
                SYMBOLS_WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
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
            let noun = if k == 1 { "symbol" } else { "symbols" };
            (format!("{k} {noun} per client"), plans)
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
        run_over: Notify::new(),
        timeline_start: Cell::new(None),
        symbols: SymbolIds::new(names),
        tick_fields: TickFields::new(),
        connected: Cell::new(0),
        stalled_connected: Cell::new(0),
        subscribed: Cell::new(0),
        connect_attempts: Cell::new(0),
        connect_failures: RefCell::new(BTreeMap::new()),
        last_connect_attempt: Cell::new(None),
        totals: RefCell::new(Totals::default()),
        stalled_totals: RefCell::new(Totals::default()),
    });

    let rss_before = match (args.idle, args.server_pid) {
        (true, Some(pid)) => Some(report::rss_kib(pid).with_context(|| {
            format!("could not read the memory of process {pid}: is --server-pid the server's?")
        })?),
        _ => None,
    };

    let progress = Rc::new(Progress::new(
        !args.no_progress,
        args.clients,
        args.warmup + args.duration,
    ));
    let progress_task = tokio::task::spawn_local(show_progress(shared.clone(), progress.clone()));

    let start = Instant::now();
    let connect_slots = Rc::new(Semaphore::new(args.connect_parallelism));
    let connect_timeout = Duration::from_secs_f64(args.connect_timeout);
    let mut stalled_tasks = Vec::with_capacity(args.stall);
    for i in 0..args.clients {
        let source = net::source_ip(i as u64, source_ips);
        let subscribe = plans[i % plans.len()].clone();
        let client = Client {
            target: target.clone(),
            source,
            subscribe,
            shared: shared.clone(),
            seqs: SeqTracker::new(shared.symbols.len()),
            saw_gap: false,
            stalled: i < args.stall,
            last_tick_ts: 0,
        };
        let slots = connect_slots.clone();
        let task = tokio::task::spawn_local(client.run(slots, connect_timeout));
        if i < args.stall {
            stalled_tasks.push(task);
        }
    }

    let timeline_start = if args.idle {
        all_subscribed(&shared, args.clients, connect_timeout).await;
        Instant::now()
    } else {
        start
    };
    shared.timeline_start.set(Some(timeline_start));

    tokio::time::sleep_until((timeline_start + Duration::from_secs_f64(args.warmup)).into()).await;
    let window_start = Instant::now();
    shared.phase.set(Phase::Measuring);
    let connected_at_start = shared.connected.get();
    let idle_memory = match (rss_before, args.server_pid) {
        (Some(before), Some(pid)) => {
            let after = report::rss_kib(pid).with_context(|| {
                format!("could not read the memory of process {pid}: did the server exit?")
            })?;
            Some(IdleMemory {
                rss_before_kib: before,
                rss_after_kib: after,
                clients: connected_at_start,
                kib_per_connection: (after as f64 - before as f64)
                    / connected_at_start.max(1) as f64,
            })
        }
        _ => None,
    };
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
    let server_rss = args.server_pid.and_then(|pid| report::rss_kib(pid).ok());

    let totals = shared.totals.take();
    let connected = shared.connected.get();
    let reading = connected - shared.stalled_connected.get();
    let subscribed = shared.subscribed.get();
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
        rss_kib: server_rss,
    });

    // The stalled clients read what is pending now; reading clients stop.
    shared.run_over.notify_waiters();
    let stalled = if args.stall > 0 {
        let deadline = tokio::time::Instant::now() + STALL_DRAIN + Duration::from_secs(1);
        for task in stalled_tasks {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                // Still connecting: it never got to stall.
                break;
            }
        }
        let drained = shared.stalled_totals.take();
        Some(Stalled {
            clients: args.stall,
            connected: shared.stalled_connected.get(),
            close_codes: drained.close_codes,
            ended_without_close: drained.disconnects_without_close,
            caught_up: drained.caught_up,
            still_behind: drained.still_behind,
            drain_limit_seconds: STALL_DRAIN.as_secs_f64(),
            ticks_read: drained.ticks,
            gaps: drained.gaps,
            tick_age_us: Latency::from_histogram(&drained.latency_us),
        })
    } else {
        None
    };
    progress_task.abort();
    progress.finish();

    let mut warnings = Vec::new();
    if own_cpu.cpu_percent > report::OWN_CPU_WARNING_PERCENT {
        warnings.push(format!(
            "feed-sim was at {:.0}% CPU: it may be the bottleneck; \
             use fewer clients per process or run several",
            own_cpu.cpu_percent
        ));
    }
    let connect_failures = shared.connect_failures.take();
    let msgs_per_second = totals.ticks as f64 / window;
    let mut scenario = format!("{} clients, {subscription}", args.clients);
    if args.stall > 0 {
        scenario += &format!(", {} stalled", args.stall);
    }
    if args.idle {
        scenario += ", idle";
    }
    scenario += &format!(", {} s window", args.duration);
    Ok(Report {
        scenario,
        url: args.url.clone(),
        subscription,
        clients_requested: args.clients,
        clients_connected: connected,
        clients_reading: reading,
        clients_connected_at_start: connected_at_start,
        clients_subscribed: subscribed,
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
        msgs_per_second_per_client: msgs_per_second / reading.max(1) as f64,
        delivery: Delivery::from_counts(totals.ticks, &totals.gaps),
        gaps: totals.gaps,
        latency_us: Latency::from_histogram(&totals.latency_us),
        latency_curve: CurvePoint::curve(&totals.latency_us),
        latency_histogram: totals.latency_us,
        own_cpu,
        server,
        idle_memory,
        stalled,
        close_codes: totals.close_codes,
        disconnects_without_close: totals.disconnects_without_close,
        server_errors: totals.server_errors,
        first_server_error: totals.first_server_error,
        unrecognised: totals.unrecognised,
        warnings,
    })
}

/// Waits until every client has its `subscribed` reply or has failed to
/// connect; gives up on the stragglers `connect_timeout` after the last
/// connect attempt finished (a client the server never answered).
async fn all_subscribed(shared: &Shared, clients: usize, connect_timeout: Duration) {
    loop {
        if shared.subscribed.get() + shared.connect_failures() >= clients {
            return;
        }
        if shared.connect_attempts.get() >= clients
            && shared
                .last_connect_attempt
                .get()
                .is_some_and(|at| at.elapsed() > connect_timeout)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Redraws the progress bars until aborted.
async fn show_progress(shared: Rc<Shared>, progress: Rc<Progress>) {
    let mut every = tokio::time::interval(PROGRESS_EVERY);
    let mut last = (Instant::now(), 0u64);
    loop {
        every.tick().await;
        progress.clients(shared.connected.get(), shared.connect_failures());
        let Some(timeline_start) = shared.timeline_start.get() else {
            progress.timeline(
                "connecting",
                0.0,
                "(--idle: waiting for every subscription)",
            );
            continue;
        };
        let now = Instant::now();
        let ticks = shared.totals.borrow().ticks;
        let rate = ticks.saturating_sub(last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, ticks);
        let (stage, detail) = match shared.phase.get() {
            Phase::WarmingUp => ("warm-up", String::new()),
            Phase::Measuring => ("measuring", format!("· {rate:.0} msg/s")),
            Phase::Done => ("draining", "(stalled clients)".to_string()),
        };
        progress.timeline(stage, (now - timeline_start).as_secs_f64(), &detail);
    }
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
            caught_up: 0,
            still_behind: 0,
        }
    }
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
    /// A `--stall`ed client: reads nothing until the run is over, and
    /// counts into `Shared::stalled_totals`.
    stalled: bool,
    /// `ts` of the last tick read, to tell when a draining stalled client
    /// has caught up with the feed.
    last_tick_ts: u64,
}

/// Why a connection ended.
enum Ended {
    /// The server sent a close frame (`code reason`).
    Closed(String),
    Eof,
    Error,
    /// The run is over (reading clients).
    Done,
    /// A stalled client read up to a tick produced after it began draining.
    CaughtUp,
    /// A stalled client was still reading older data at the drain limit.
    StillBehind,
}

/// The bytes received on a connection and not yet handled.
struct Inbox {
    stream: TcpStream,
    buf: Vec<u8>,
    end: usize,
}

impl Inbox {
    fn new(stream: TcpStream, leftover: Bytes) -> Self {
        let mut buf = vec![0u8; READ_BUFFER.max(leftover.len())];
        buf[..leftover.len()].copy_from_slice(&leftover);
        Inbox {
            stream,
            buf,
            end: leftover.len(),
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[..self.end]
    }

    /// Drops the first `n` pending bytes (frames handled).
    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.end, 0);
        self.end -= n;
    }

    /// Reads more bytes after the pending ones, growing the buffer first
    /// if one frame fills it.
    async fn read_more(&mut self) -> Result<(), Ended> {
        if self.end == self.buf.len() {
            let need = frame_len(self.pending()).unwrap_or(self.buf.len() * 2);
            self.buf.resize(need.max(self.buf.len() + 1), 0);
        }
        match self.stream.read(&mut self.buf[self.end..]).await {
            Ok(0) => Err(Ended::Eof),
            Ok(n) => {
                self.end += n;
                Ok(())
            }
            Err(_) => Err(Ended::Error),
        }
    }
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
            self.shared
                .connect_attempts
                .set(self.shared.connect_attempts.get() + 1);
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
        let shared = self.shared.clone();
        shared.connected.set(shared.connected.get() + 1);
        let inbox = Inbox::new(stream, leftover);
        let ended = if self.stalled {
            shared
                .stalled_connected
                .set(shared.stalled_connected.get() + 1);
            self.stall(inbox).await
        } else {
            self.receive(inbox).await
        };
        let mut totals = if self.stalled {
            shared.stalled_totals.borrow_mut()
        } else {
            shared.totals.borrow_mut()
        };
        match ended {
            Ended::Closed(label) => *totals.close_codes.entry(label).or_default() += 1,
            Ended::Eof | Ended::Error => totals.disconnects_without_close += 1,
            Ended::CaughtUp => totals.caught_up += 1,
            Ended::StillBehind => totals.still_behind += 1,
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
        let stream = net::connect_from(self.target.addr, self.source).await?;
        stream.set_nodelay(true).context("nodelay")?;
        let mut ws = ws::upgrade(stream, &self.target, None).await?;
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
    async fn receive(&mut self, mut inbox: Inbox) -> Ended {
        loop {
            let phase = self.shared.phase.get();
            if phase == Phase::Done {
                return Ended::Done;
            }
            if let Some(ended) = self.handle_pending(&mut inbox, phase).await {
                return ended;
            }
            if let Err(ended) = inbox.read_more().await {
                return ended;
            }
        }
    }

    /// A stalled client: holds the connection open without reading until
    /// the run is over, then reads what is pending for at most
    /// [`STALL_DRAIN`]: until the server's close frame, the end of the
    /// stream, or a tick produced after draining began (caught up).
    async fn stall(&mut self, mut inbox: Inbox) -> Ended {
        while self.shared.phase.get() != Phase::Done {
            self.shared.run_over.notified().await;
        }
        let since = now_nanos();
        let deadline = tokio::time::Instant::now() + STALL_DRAIN;
        loop {
            // Everything read now counts: `Measuring` as far as counters go.
            if let Some(ended) = self.handle_pending(&mut inbox, Phase::Measuring).await {
                return ended;
            }
            if self.last_tick_ts >= since {
                return Ended::CaughtUp;
            }
            match tokio::time::timeout_at(deadline, inbox.read_more()).await {
                Err(_) => return Ended::StillBehind,
                Ok(Err(ended)) => return ended,
                Ok(Ok(())) => {}
            }
        }
    }

    /// Handles every complete frame already read, answering pings; returns
    /// how the connection ended if it did.
    async fn handle_pending(&mut self, inbox: &mut Inbox, phase: Phase) -> Option<Ended> {
        loop {
            let (consumed, event) = self.handle_frames(inbox.pending(), now_nanos(), phase);
            inbox.consume(consumed);
            match event {
                Some(Event::Close(label)) => return Some(Ended::Closed(label)),
                Some(Event::Broken) => return Some(Ended::Error),
                Some(Event::Ping(payload)) => {
                    if inbox
                        .stream
                        .write_all(&client_frame(opcode::PONG, &payload))
                        .await
                        .is_err()
                    {
                        return Some(Ended::Error);
                    }
                    // Frames after the ping may already be in the buffer.
                }
                None => return None,
            }
        }
    }

    /// Handles every complete frame at the start of `data`, received at
    /// `now_ns`; returns how many bytes they took and what the connection
    /// must do next, if anything.
    fn handle_frames(&mut self, data: &[u8], now_ns: u64, phase: Phase) -> (usize, Option<Event>) {
        let measuring = phase == Phase::Measuring;
        let shared = self.shared.clone();
        let mut totals = if self.stalled {
            shared.stalled_totals.borrow_mut()
        } else {
            shared.totals.borrow_mut()
        };
        let mut at = 0;
        while at < data.len() {
            let frame = match split_server_frame(&data[at..], MAX_FRAME) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => return (at, Some(Event::Broken)),
            };
            let payload = &data[at..][frame.payload.clone()];
            at += frame.len;
            match frame.opcode {
                opcode::TEXT => self.handle_text(payload, now_ns, measuring, &mut totals),
                opcode::CLOSE => return (at, Some(Event::Close(close_label(payload)))),
                opcode::PING => return (at, Some(Event::Ping(payload.to_vec()))),
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
                self.last_tick_ts = tick.ts;
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
    /// The server sent a close frame, described by [`close_label`].
    Close(String),
    /// The server pinged; answer with this payload.
    Ping(Vec<u8>),
    /// The stream is not valid WebSocket from a server.
    Broken,
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

    /// The delivery ratio's counters, kept the way `handle_text` keeps
    /// them, against the definition in `report::Delivery`: per symbol,
    /// produced = last seq received in the window − the seq seen before it.
    #[test]
    fn delivery_counts_are_exact_at_the_window_edges() {
        let mut seqs = SeqTracker::new(3);
        let mut received = 0;
        let mut gaps = Gaps::default();
        let mut count = |seen: Seen, gaps: &mut Gaps| {
            received += 1;
            match seen {
                Seen::InOrder => {}
                Seen::Gap(missing) => gaps.missing_ticks += missing,
                Seen::Regressed => gaps.seq_regressions += 1,
            }
        };
        // Warm-up: snapshots and ticks before the window count nowhere.
        seqs.snapshot(0, 10);
        seqs.tick(0, 11);
        seqs.tick(0, 12);
        seqs.snapshot(1, 100);
        // The window. Symbol 0: base 12, a gap of 3, a duplicate, last 19.
        for seq in [13, 17, 18, 18, 19] {
            count(seqs.tick(0, seq), &mut gaps);
        }
        // Symbol 1: base is its snapshot (100), every tick arrives.
        for seq in 101..=110 {
            count(seqs.tick(1, seq), &mut gaps);
        }
        // Symbol 2 had no snapshot (never traded): base 0, first gap of 1.
        for seq in [2, 3] {
            count(seqs.tick(2, seq), &mut gaps);
        }
        let never_traded = 0;
        let produced_by_definition = (19 - 12) + (110 - 100) + (3 - never_traded);
        let delivered_new_ticks = 4 + 10 + 2;
        let delivery = Delivery::from_counts(received, &gaps);
        assert_eq!(delivery.produced, produced_by_definition);
        assert_eq!(delivery.delivered, delivered_new_ticks);
        let percent = 100.0 * 16.0 / 20.0;
        assert_eq!(delivery.percent, Some(percent));
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
    fn parses_urls() {
        let target = Target::parse("ws://127.0.0.1:18080/ws").unwrap();
        assert_eq!(target.addr, "127.0.0.1:18080".parse().unwrap());
        assert_eq!(
            (target.authority.as_str(), target.path.as_str()),
            ("127.0.0.1:18080", "/ws")
        );
        assert!(Target::parse("http://127.0.0.1/ws").is_err());
    }
}
