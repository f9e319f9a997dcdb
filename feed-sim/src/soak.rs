//! `feed-sim soak`: connection churn against a running tickcast server,
//! then a check that the server gave back what the churn took.
//!
//! For `--duration` seconds up to `--clients` clients at a time connect,
//! subscribe to random symbols (sometimes `*`, sometimes with `max_hz`,
//! `batch` or `from`), read for a random while, sometimes ping, send a
//! malformed request (and expect its `error` reply) or unsubscribe, and
//! leave: with a close handshake, by dropping the TCP connection, or after
//! stalling (not reading) for a moment. Every finished client is replaced
//! by a new one until the time is up.
//!
//! Around the churn the server's resident memory (`VmRSS`) and open file
//! descriptors (`/proc/PID/fd`) are read: the baseline after a warm-up
//! churn of `--warmup` seconds in which every client behaviour occurs (so
//! lazily built caches exist and the allocator has served the peak
//! concurrency), the peak while churning, and the figures once the server's
//! `tickcast_connections` gauge (`GET /metrics`) is back to 0. The run
//! passes when the descriptors are back exactly at the baseline and the
//! memory is within [`RSS_TOLERANCE`] of it; see [`judge`].

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::Args;
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom as _, SliceRandom as _};
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use tickcast::protocol::frame::{client_frame, frame_len, opcode, split_server_frame};

use crate::net;
use crate::progress::Progress;
use crate::report;
use crate::server_msg::close_label;
use crate::ws::{self, Target};

/// How much the server's resident memory may stay above its baseline once
/// every client is gone: the larger of 8 MiB and a quarter of the
/// baseline.
///
/// Memory freed after a churn does not all go back to the kernel, and
/// that is not a leak: glibc's malloc keeps freed chunks in its per-thread
/// arenas (up to eight per core) for reuse and returns only what is free
/// at the top of a heap; collections that grew to the churn's peak
/// concurrency (the fan-out's subscriber lists, the session registry)
/// keep their capacity; the kernel counts pages touched once until they
/// are reclaimed. Those costs are bounded by the peak concurrency, not by
/// the number of connections made, and the warm-up churn reaches them
/// before the baseline is read; what remains is
/// fragmentation, for which a fixed slack covers a small server and a
/// proportional one a large one. A leak grows with every connection
/// made: a few hundred bytes per connection over tens of thousands of
/// connections per minute overshoots this within one default run (and
/// longer runs catch slower leaks).
pub const RSS_TOLERANCE: RssTolerance = RssTolerance {
    min_slack_kib: 8 * 1024,
    baseline_fraction: 0.25,
};

/// How long a client waits for the reply to one of its requests.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the server's memory and descriptors are sampled (and the
/// progress bars redrawn) while churning.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// How often `/metrics` is polled while waiting for the connections to
/// close, and the descriptors while waiting for them to be released.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Bytes a client reads into at once; grows for a larger frame.
const READ_BUFFER: usize = 16 * 1024;

/// The largest server frame a client accepts (a `subscribed` reply to
/// `*` over many symbols is the largest message a server sends).
const MAX_FRAME: usize = 64 << 20;

/// The first clients of the warm-up round are given one behaviour each,
/// in turn, so that the round covers every behaviour: this many.
const WARMUP_COVERAGE: usize = 16;

/// Options of `feed-sim soak`.
#[derive(Debug, Args)]
pub struct SoakArgs {
    /// WebSocket URL of the server; `/symbols` and `/metrics` are fetched
    /// from the same host and port.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,

    /// Process id of the server, whose memory and file descriptors are
    /// read from /proc (so run it on the server's machine).
    #[arg(long, value_name = "PID")]
    pub server_pid: u32,

    /// Seconds of churn.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,

    /// Seconds of the same churn before the baseline is read, so that the
    /// server's allocator and collections have served the peak
    /// concurrency once (0 for none).
    #[arg(long, default_value_t = 15.0)]
    pub warmup: f64,

    /// Most clients connected at once.
    #[arg(long, default_value_t = 500)]
    pub clients: usize,

    /// Seed of the clients' random choices: the same seed gives the same
    /// sequence of client plans (timing still varies).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Longest time one client spends reading before it leaves, seconds
    /// (each picks a random time up to this).
    #[arg(long, default_value_t = 3.0)]
    pub max_lifetime: f64,

    /// Seconds to wait, after the churn, for the server to report no open
    /// connection and to release their file descriptors.
    #[arg(long, default_value_t = 60.0)]
    pub settle_timeout: f64,

    /// Connects and handshakes in flight at once.
    #[arg(long, default_value_t = 64)]
    pub connect_parallelism: usize,

    /// Spread connections over source addresses 127.0.0.1..=127.0.0.N
    /// (loopback servers only), so a long churn does not run out of
    /// ephemeral ports to connections in TIME_WAIT.
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u8).range(1..))]
    pub source_ips: u8,

    /// Also write every figure as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Draw no progress bars (they are drawn on stderr, and only when it
    /// is a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

/// The allowance of [`RSS_TOLERANCE`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RssTolerance {
    /// Slack allowed whatever the baseline, KiB.
    pub min_slack_kib: u64,
    /// Slack allowed as a fraction of the baseline, when that is more.
    pub baseline_fraction: f64,
}

impl RssTolerance {
    /// The most resident memory allowed after the churn, KiB.
    pub fn limit_kib(&self, baseline_kib: u64) -> u64 {
        let proportional = (baseline_kib as f64 * self.baseline_fraction).ceil() as u64;
        baseline_kib + self.min_slack_kib.max(proportional)
    }
}

/// The server's memory and descriptors at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Resident memory (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Open file descriptors (entries of `/proc/PID/fd`).
    pub fds: u64,
}

impl Usage {
    /// Reads `pid`'s usage from /proc.
    pub fn read(pid: u32) -> anyhow::Result<Usage> {
        let hint = || {
            format!("could not read /proc/{pid}: is --server-pid the server's process id, and is it running on this machine?")
        };
        Ok(Usage {
            rss_kib: report::rss_kib(pid).with_context(hint)?,
            fds: open_fds(pid).with_context(hint)?,
        })
    }

    fn max(self, other: Usage) -> Usage {
        Usage {
            rss_kib: self.rss_kib.max(other.rss_kib),
            fds: self.fds.max(other.fds),
        }
    }
}

/// Number of open file descriptors of `pid`.
pub fn open_fds(pid: u32) -> std::io::Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64)
}

/// Whether the server gave back what the churn took.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// True when nothing below failed.
    pub passed: bool,
    /// Most resident memory allowed after the churn, KiB.
    pub rss_limit_kib: u64,
    /// What failed, one sentence each.
    pub failures: Vec<String>,
}

/// Judges the figures after the churn against the baseline: file
/// descriptors must be back exactly where they were, resident memory
/// within `tolerance`, and the server must report no open connection
/// (`connections_left` is its `tickcast_connections` gauge, `None` if it
/// could not be read).
pub fn judge(
    baseline: Usage,
    after: Usage,
    connections_left: Option<u64>,
    tolerance: RssTolerance,
) -> Verdict {
    let rss_limit_kib = tolerance.limit_kib(baseline.rss_kib);
    let mut failures = Vec::new();
    match connections_left {
        Some(0) => {}
        Some(n) => failures.push(format!(
            "the server still reports {n} open connection(s) after every client left: \
             sessions are not being torn down"
        )),
        None => failures.push(
            "GET /metrics did not answer with a tickcast_connections gauge, so the end of \
             the churn could not be confirmed"
                .to_string(),
        ),
    }
    if after.fds != baseline.fds {
        let change = after.fds as i64 - baseline.fds as i64;
        failures.push(format!(
            "open file descriptors went from {} to {} ({change:+}) once every client had \
             left: descriptors are leaking (or closing late); compare `ls -l /proc/PID/fd` \
             before and after",
            baseline.fds, after.fds
        ));
    }
    if after.rss_kib > rss_limit_kib {
        failures.push(format!(
            "resident memory went from {} KiB to {} KiB, above the allowed {} KiB \
             (baseline + max({} KiB, {:.0}%)): memory is being kept per connection; \
             run longer to see whether it keeps growing",
            baseline.rss_kib,
            after.rss_kib,
            rss_limit_kib,
            tolerance.min_slack_kib,
            tolerance.baseline_fraction * 100.0
        ));
    }
    Verdict {
        passed: failures.is_empty(),
        rss_limit_kib,
        failures,
    }
}

/// Everything one soak run saw.
#[derive(Debug, Serialize)]
pub struct SoakReport {
    /// Server WebSocket URL.
    pub url: String,
    /// The server's process id.
    pub server_pid: u32,
    /// `--seed`.
    pub seed: u64,
    /// Most clients connected at once (`--clients`).
    pub clients: usize,
    /// Seconds the churn lasted (clients were started for `--duration`,
    /// then the last ones finished).
    pub churn_seconds: f64,
    /// Seconds from the churn's end until the server reported no open
    /// connection and the descriptors were back.
    pub settle_seconds: f64,
    /// Clients started (connect attempts), warm-up not included.
    pub connections_attempted: u64,
    /// Clients whose WebSocket handshake completed.
    pub connections_made: u64,
    /// Connects or handshakes that failed.
    pub connect_failures: u64,
    /// The same failures, by their error text.
    pub connect_failure_reasons: BTreeMap<String, u64>,
    /// What the clients did.
    pub behaviour: Behaviour,
    /// How the connections ended; these add up to `connections_made`.
    pub endings: Endings,
    /// Text messages received, all clients (ticks, snapshots, replies).
    pub messages_received: u64,
    /// Malformed requests sent, each of which must get an `error` reply.
    pub errors_expected: u64,
    /// `error` replies received.
    pub errors_seen: u64,
    /// `error` replies whose `code` was not the one the request called for.
    pub error_code_mismatches: u64,
    /// Expected replies that did not arrive within 5 s, by what was
    /// expected (`subscribed`, `error`, `pong`, `unsubscribed`, `close`).
    pub replies_missing: BTreeMap<String, u64>,
    /// Server usage after the warm-up round.
    pub baseline: Usage,
    /// Highest usage sampled while churning (every 200 ms; each figure on
    /// its own).
    pub peak: Usage,
    /// Server usage once every client was gone.
    pub after: Usage,
    /// `tickcast_connections` after the churn (`None` if unreadable).
    pub connections_left: Option<u64>,
    /// The memory allowance the verdict applied.
    pub rss_tolerance: RssTolerance,
    /// Pass or fail, and why.
    pub verdict: Verdict,
}

/// What the clients were told to do, counted over the run.
#[derive(Debug, Default, Serialize)]
pub struct Behaviour {
    /// Subscribed to `*`.
    pub subscribed_all: u64,
    /// Subscribed with `max_hz`.
    pub with_max_hz: u64,
    /// Subscribed with `"batch":true`.
    pub with_batch: u64,
    /// Subscribed with `from`.
    pub with_from: u64,
    /// Sent an `unsubscribe`.
    pub unsubscribed: u64,
    /// Sent a `ping`.
    pub pinged: u64,
    /// Stopped reading for a moment before leaving.
    pub stalled: u64,
}

/// How the connections ended.
#[derive(Debug, Default, Serialize)]
pub struct Endings {
    /// The client sent a close frame.
    pub client_closed: u64,
    /// The client dropped the TCP connection without a close frame.
    pub client_dropped: u64,
    /// The server closed first, by `code reason`.
    pub server_closed: BTreeMap<String, u64>,
    /// The connection failed or ended without a close frame while the
    /// client was still using it.
    pub lost: u64,
}

impl Endings {
    /// Connections these endings account for.
    pub fn total(&self) -> u64 {
        self.client_closed
            + self.client_dropped
            + self.server_closed.values().sum::<u64>()
            + self.lost
    }
}

/// Runs `feed-sim soak`: prints the report, writes `--json`, and fails
/// with the verdict's reasons when the server did not give back what the
/// churn took.
pub fn run(args: SoakArgs) -> anyhow::Result<()> {
    let report = measure(&args)?;
    print!("{}", report.render());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).expect("a report serializes");
        std::fs::write(path, json + "\n")
            .with_context(|| format!("could not write {}", path.display()))?;
        println!("  figures written to {}", path.display());
    }
    if !report.verdict.passed {
        bail!("soak failed: {}", report.verdict.failures.join("; "));
    }
    Ok(())
}

/// Runs the soak `args` describe on a current-thread runtime of its own
/// and returns its figures (whatever the verdict). Call it from outside
/// any tokio runtime.
pub fn measure(args: &SoakArgs) -> anyhow::Result<SoakReport> {
    if !(args.duration > 0.0 && args.max_lifetime > 0.0 && args.settle_timeout > 0.0) {
        bail!("give --duration, --max-lifetime and --settle-timeout above 0 seconds");
    }
    if args.warmup.is_nan() || args.warmup < 0.0 {
        bail!("give --warmup of at least 0 seconds");
    }
    if args.clients == 0 || args.connect_parallelism == 0 {
        bail!("give --clients and --connect-parallelism of at least 1");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the tokio runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, soak(args))
}

/// A symbol the server carries and its `seq` when the run began.
#[derive(Clone, Debug)]
struct Known {
    sym: String,
    seq: u64,
}

/// What all clients share (one thread).
struct Shared {
    target: Target,
    symbols: Vec<Known>,
    source_ips: usize,
    max_lifetime: Duration,
    /// When the churn ends: clients stop reading then and leave.
    deadline: Cell<Option<Instant>>,
    /// Clients started (they count from here).
    started: Cell<u64>,
    active: Cell<usize>,
    made: Cell<u64>,
    connect_failures: RefCell<BTreeMap<String, u64>>,
    messages: Cell<u64>,
    errors_expected: Cell<u64>,
    errors_seen: Cell<u64>,
    error_code_mismatches: Cell<u64>,
    replies_missing: RefCell<BTreeMap<String, u64>>,
    behaviour: RefCell<Behaviour>,
    endings: RefCell<Endings>,
}

impl Shared {
    fn add(cell: &Cell<u64>, n: u64) {
        cell.set(cell.get() + n);
    }

    fn connect_failures(&self) -> u64 {
        self.connect_failures.borrow().values().sum()
    }

    /// Clears every count (after the warm-up round).
    fn reset_counts(&self) {
        self.started.set(0);
        self.made.set(0);
        self.connect_failures.borrow_mut().clear();
        self.messages.set(0);
        self.errors_expected.set(0);
        self.errors_seen.set(0);
        self.error_code_mismatches.set(0);
        self.replies_missing.borrow_mut().clear();
        *self.behaviour.borrow_mut() = Behaviour::default();
        *self.endings.borrow_mut() = Endings::default();
    }
}

async fn soak(args: &SoakArgs) -> anyhow::Result<SoakReport> {
    let target = Target::parse(&args.url)?;
    let pid = args.server_pid;
    Usage::read(pid)?;
    net::raise_open_file_limit(args.clients);
    let symbols: Vec<Known> = ws::fetch_symbols(&target, None)
        .await
        .with_context(|| {
            format!(
                "could not read the symbol list from http://{}/symbols: is the server running at {}?",
                target.authority, args.url
            )
        })?
        .into_iter()
        .map(|row| Known {
            sym: row.sym,
            seq: row.seq,
        })
        .collect();
    if symbols.is_empty() {
        bail!("the server carries no symbols");
    }
    // Fails early, with advice, if the server has no /metrics.
    connections_gauge(&target).await?;

    let shared = Rc::new(Shared {
        source_ips: if target.addr.ip().is_loopback() {
            usize::from(args.source_ips)
        } else {
            0
        },
        target,
        symbols,
        max_lifetime: Duration::from_secs_f64(args.max_lifetime),
        deadline: Cell::new(None),
        started: Cell::new(0),
        active: Cell::new(0),
        made: Cell::new(0),
        connect_failures: RefCell::new(BTreeMap::new()),
        messages: Cell::new(0),
        errors_expected: Cell::new(0),
        errors_seen: Cell::new(0),
        error_code_mismatches: Cell::new(0),
        replies_missing: RefCell::new(BTreeMap::new()),
        behaviour: RefCell::new(Behaviour::default()),
        endings: RefCell::new(Endings::default()),
    });
    let mut rng = SmallRng::seed_from_u64(args.seed);
    let settle_timeout = Duration::from_secs_f64(args.settle_timeout);
    let progress = Rc::new(Progress::new(
        !args.no_progress,
        args.clients,
        args.duration,
    ));

    // Warm-up: the same churn for `--warmup` seconds, its first clients
    // covering every behaviour, so that what the server builds lazily
    // (caches, pools, per-thread arenas, collections at their peak size)
    // exists before the baseline is taken.
    let connect_slots = Rc::new(Semaphore::new(args.connect_parallelism));
    let warmup_sampler = tokio::task::spawn_local(sample(
        shared.clone(),
        progress.clone(),
        "warm-up",
        pid,
        Rc::new(Cell::new(Usage::default())),
        Instant::now(),
    ));
    churn(
        &shared,
        &mut rng,
        &connect_slots,
        args.clients,
        Duration::from_secs_f64(args.warmup),
        WARMUP_COVERAGE,
        settle_timeout,
    )
    .await?;
    warmup_sampler.abort();
    if shared.connect_failures() > 0 {
        eprintln!(
            "warning: {} warm-up client(s) could not connect (e.g. {}); the baseline \
             may be taken below the churn's peak concurrency",
            shared.connect_failures(),
            shared
                .connect_failures
                .borrow()
                .keys()
                .next()
                .map_or("", String::as_str)
        );
    }
    let (left, _) = settle(&shared.target, pid, None, settle_timeout).await?;
    if left != Some(0) {
        bail!(
            "the server still reports {} open connection(s) after the warm-up round; \
             is another client connected to it? The soak needs the server to itself",
            left.map_or("an unknown number of".to_string(), |n| n.to_string())
        );
    }
    let baseline = stable_usage(pid).await?;
    shared.reset_counts();

    // The churn.
    let churn_start = Instant::now();
    let peak = Rc::new(Cell::new(baseline));
    let sampler = tokio::task::spawn_local(sample(
        shared.clone(),
        progress.clone(),
        "churn",
        pid,
        peak.clone(),
        churn_start,
    ));
    churn(
        &shared,
        &mut rng,
        &connect_slots,
        args.clients,
        Duration::from_secs_f64(args.duration),
        0,
        settle_timeout,
    )
    .await?;
    let churn_seconds = churn_start.elapsed().as_secs_f64();
    sampler.abort();
    progress.timeline("settling", args.duration, "(waiting for the server)");

    let settle_start = Instant::now();
    let (connections_left, after) =
        settle(&shared.target, pid, Some(baseline), settle_timeout).await?;
    let settle_seconds = settle_start.elapsed().as_secs_f64();
    progress.finish();
    let peak = peak.get().max(after);

    let verdict = judge(baseline, after, connections_left, RSS_TOLERANCE);
    Ok(SoakReport {
        url: args.url.clone(),
        server_pid: pid,
        seed: args.seed,
        clients: args.clients,
        churn_seconds,
        settle_seconds,
        connections_attempted: shared.started.get(),
        connections_made: shared.made.get(),
        connect_failures: shared.connect_failures(),
        connect_failure_reasons: shared.connect_failures.take(),
        behaviour: shared.behaviour.take(),
        endings: shared.endings.take(),
        messages_received: shared.messages.get(),
        errors_expected: shared.errors_expected.get(),
        errors_seen: shared.errors_seen.get(),
        error_code_mismatches: shared.error_code_mismatches.get(),
        replies_missing: shared.replies_missing.take(),
        baseline,
        peak,
        after,
        connections_left,
        rss_tolerance: RSS_TOLERANCE,
        verdict,
    })
}

/// Runs clients for `seconds`, keeping `clients` of them connected or
/// connecting, each replaced by a new one when it leaves; the first
/// `covering` of them are given one behaviour each in turn. Returns once
/// the last client has left.
async fn churn(
    shared: &Rc<Shared>,
    rng: &mut SmallRng,
    connect_slots: &Rc<Semaphore>,
    clients: usize,
    seconds: Duration,
    covering: usize,
    settle_timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + seconds;
    shared.deadline.set(Some(deadline));
    let slots = Arc::new(Semaphore::new(clients));
    let mut n = 0u64;
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = tokio::time::sleep_until(deadline) => break,
        };
        if Instant::now() >= deadline {
            break;
        }
        let mut plan = Plan::random(rng, &shared.symbols, shared.max_lifetime);
        if (n as usize) < covering {
            plan.cover_behaviour(n as usize, &shared.symbols);
        }
        let shared = shared.clone();
        let connect_slots = connect_slots.clone();
        tokio::task::spawn_local(async move {
            let _slot = slot;
            let connecting = connect_slots.acquire().await;
            run_client_gated(shared, plan, n, connecting.ok()).await;
        });
        n += 1;
    }
    // Every client leaves on its own once its plan (cut at the deadline)
    // is done; wait for the last ones.
    let all = u32::try_from(clients).unwrap_or(u32::MAX);
    if tokio::time::timeout(settle_timeout, slots.acquire_many(all))
        .await
        .is_err()
    {
        bail!(
            "{} client(s) were still running {:.0} s after the churn ended; \
             the server stopped answering them",
            shared.active.get(),
            settle_timeout.as_secs_f64()
        );
    }
    shared.deadline.set(None);
    Ok(())
}

/// Samples the server's usage into `peak` and redraws the progress bars
/// (`stage` of the run), until aborted.
async fn sample(
    shared: Rc<Shared>,
    progress: Rc<Progress>,
    stage: &'static str,
    pid: u32,
    peak: Rc<Cell<Usage>>,
    start: Instant,
) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    loop {
        every.tick().await;
        if let Ok(now) = Usage::read(pid) {
            peak.set(peak.get().max(now));
        }
        progress.clients(shared.active.get(), shared.connect_failures() as usize);
        progress.timeline(
            stage,
            start.elapsed().as_secs_f64(),
            &format!(
                "· {} connections, {} msgs",
                shared.made.get(),
                shared.messages.get()
            ),
        );
    }
}

/// Waits until the server reports no open connection and (given a
/// baseline) its descriptor count is back at the baseline, or until
/// `timeout`; returns the last gauge reading and the usage then.
async fn settle(
    target: &Target,
    pid: u32,
    baseline: Option<Usage>,
    timeout: Duration,
) -> anyhow::Result<(Option<u64>, Usage)> {
    let give_up = Instant::now() + timeout;
    let mut left = connections_gauge(target).await.ok();
    while left != Some(0) && Instant::now() < give_up {
        tokio::time::sleep(POLL_EVERY).await;
        left = connections_gauge(target).await.ok();
    }
    // A closed session's socket may be released a moment after the gauge
    // drops (its reader task is aborted, not joined).
    let mut usage = Usage::read(pid)?;
    if let Some(baseline) = baseline {
        while usage.fds != baseline.fds && Instant::now() < give_up {
            tokio::time::sleep(POLL_EVERY).await;
            usage = Usage::read(pid)?;
        }
    }
    Ok((left, usage))
}

/// The server's usage once two readings in a row agree on the
/// descriptors (a connection that just closed may still be releasing
/// its socket).
async fn stable_usage(pid: u32) -> anyhow::Result<Usage> {
    let mut last = Usage::read(pid)?;
    for _ in 0..100 {
        tokio::time::sleep(POLL_EVERY).await;
        let now = Usage::read(pid)?;
        if now.fds == last.fds {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// The server's `tickcast_connections` gauge, from `GET /metrics` on a
/// connection closed right after (so it leaves no descriptor behind).
async fn connections_gauge(target: &Target) -> anyhow::Result<u64> {
    let body = http_get(target, "/metrics").await?;
    parse_connections_gauge(&body).with_context(|| {
        format!(
            "GET http://{}/metrics has no `tickcast_connections N` line: \
             is this a tickcast server recent enough to serve /metrics?",
            target.authority
        )
    })
}

/// The value of the `tickcast_connections` line of a Prometheus text
/// exposition.
pub fn parse_connections_gauge(metrics: &str) -> Option<u64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix("tickcast_connections ")?;
        value.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

/// `GET path` with `Connection: close`, reading to the end; the body of a
/// 200 answer (which tickcast sends with a `Content-Length`).
async fn http_get(target: &Target, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(target.addr)
        .await
        .with_context(|| format!("could not connect to {}", target.authority))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        target.authority
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(REPLY_TIMEOUT, stream.read_to_end(&mut response))
        .await
        .with_context(|| format!("GET {path} got no complete answer within {REPLY_TIMEOUT:?}"))??;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: the answer is not HTTP"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        bail!("GET {path} answered {status:?}");
    }
    Ok(body.to_string())
}

/// A malformed request and the error `code` it must be answered with.
#[derive(Clone, Copy, Debug)]
struct Garbage {
    request: &'static str,
    code: &'static str,
}

const GARBAGE: [Garbage; 5] = [
    Garbage {
        request: r#"{"op":"subscribe","symbols":["#,
        code: "bad_json",
    },
    Garbage {
        request: r#"{"op":"subscribe","symbols":["NOT-A-SYMBOL"]}"#,
        code: "unknown_symbol",
    },
    Garbage {
        request: r#"{"op":"launch","symbols":["*"]}"#,
        code: "unknown_op",
    },
    Garbage {
        request: r#"["op","subscribe"]"#,
        code: "bad_request",
    },
    Garbage {
        request: r#"{"op":"subscribe","symbols":["*"],"max_hz":-1}"#,
        code: "bad_request",
    },
];

/// How a client leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leave {
    /// Sends a close frame and waits for the server's.
    Close,
    /// Drops the TCP connection.
    Drop,
}

/// What one client does, drawn at random.
#[derive(Debug)]
struct Plan {
    subscribe: serde_json::Value,
    all: bool,
    max_hz: bool,
    batch: bool,
    from: bool,
    /// Reading time, in three parts with the optional requests between.
    read_for: [Duration; 3],
    garbage: Option<Garbage>,
    ping: bool,
    unsubscribe: Option<serde_json::Value>,
    stall: Option<Duration>,
    leave: Leave,
}

impl Plan {
    fn random(rng: &mut SmallRng, symbols: &[Known], max_lifetime: Duration) -> Plan {
        let all = rng.random_bool(0.15);
        let chosen: Vec<&Known> = if all {
            Vec::new()
        } else {
            let k = rng.random_range(1..=symbols.len().min(8));
            symbols.choose_multiple(rng, k).collect()
        };
        let names: Vec<&str> = if all {
            vec!["*"]
        } else {
            chosen.iter().map(|k| k.sym.as_str()).collect()
        };
        let mut subscribe = json!({"op": "subscribe", "symbols": names});
        let max_hz = rng.random_bool(0.25);
        if max_hz {
            let hz = [1, 2, 4, 10, 50][rng.random_range(0..5)];
            subscribe["max_hz"] = json!(hz);
        }
        let batch = rng.random_bool(0.2);
        if batch {
            subscribe["batch"] = json!(true);
        }
        let from = !all && rng.random_bool(0.2);
        if from {
            // Some replayable, some too old or too new (a reset).
            let entries: serde_json::Map<_, _> = chosen
                .iter()
                .map(|k| {
                    let seq = match rng.random_range(0..4) {
                        0 => 0,
                        1 => k.seq + 1_000_000,
                        _ => k.seq.saturating_sub(rng.random_range(0..300)),
                    };
                    (k.sym.clone(), json!(seq))
                })
                .collect();
            subscribe["from"] = serde_json::Value::Object(entries);
        }
        let lifetime = max_lifetime.mul_f64(rng.random::<f64>());
        let read_for = [
            lifetime.mul_f64(0.4),
            lifetime.mul_f64(0.3),
            lifetime.mul_f64(0.3),
        ];
        let garbage = rng
            .random_bool(0.2)
            .then(|| *GARBAGE.choose(rng).expect("garbage to choose from"));
        let ping = rng.random_bool(0.2);
        let unsubscribe = rng.random_bool(0.3).then(|| {
            let mut names = names.clone();
            names.shuffle(rng);
            names.truncate(rng.random_range(1..=names.len()));
            json!({"op": "unsubscribe", "symbols": names})
        });
        let stall = rng
            .random_bool(0.2)
            .then(|| Duration::from_millis(rng.random_range(100..=2000)));
        let leave = if rng.random_bool(0.5) {
            Leave::Close
        } else {
            Leave::Drop
        };
        Plan {
            subscribe,
            all,
            max_hz,
            batch,
            from,
            read_for,
            garbage,
            ping,
            unsubscribe,
            stall,
            leave,
        }
    }

    /// Makes warm-up client `i` cover a behaviour a random plan might
    /// miss: together the first clients use every option, every kind of
    /// malformed request and both ways of leaving.
    fn cover_behaviour(&mut self, i: usize, symbols: &[Known]) {
        let first = &symbols[0].sym;
        match i % 4 {
            0 => {
                self.subscribe = json!({"op": "subscribe", "symbols": ["*"], "batch": true});
                self.all = true;
                self.unsubscribe = Some(json!({"op": "unsubscribe", "symbols": ["*"]}));
            }
            1 => {
                self.subscribe = json!({"op": "subscribe", "symbols": [first], "max_hz": 4});
                self.max_hz = true;
                self.ping = true;
            }
            2 => {
                self.subscribe = json!({"op": "subscribe", "symbols": [first],
                                        "from": {first: symbols[0].seq.saturating_sub(1)}});
                self.from = true;
            }
            _ => self.stall = Some(Duration::from_millis(100)),
        }
        self.garbage = Some(GARBAGE[i % GARBAGE.len()]);
        self.leave = if i.is_multiple_of(2) {
            Leave::Close
        } else {
            Leave::Drop
        };
    }
}

/// A reply a client waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    Subscribed,
    Unsubscribed,
    Pong,
    Error(&'static str),
    Close,
}

impl Want {
    fn name(self) -> &'static str {
        match self {
            Want::Subscribed => "subscribed",
            Want::Unsubscribed => "unsubscribed",
            Want::Pong => "pong",
            Want::Error(_) => "error",
            Want::Close => "close",
        }
    }

    fn prefix(self) -> &'static [u8] {
        match self {
            Want::Subscribed => br#"{"type":"subscribed","#,
            Want::Unsubscribed => br#"{"type":"unsubscribed","#,
            Want::Pong => br#"{"type":"pong""#,
            Want::Error(_) => br#"{"type":"error","#,
            Want::Close => b"",
        }
    }
}

/// Why a connection ended before the client chose to leave.
enum Ended {
    /// The server sent a close frame (`code reason`).
    ServerClosed(String),
    /// End of stream or an error without a close frame.
    Lost,
}

/// A connected client's socket and the bytes read and not yet handled.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    end: usize,
}

impl Conn {
    async fn send_text(&mut self, text: &[u8]) -> Result<(), Ended> {
        self.stream
            .write_all(&client_frame(opcode::TEXT, text))
            .await
            .map_err(|_| Ended::Lost)
    }

    /// Reads and counts frames until `want` arrives (`Ok(true)`), or
    /// until `until` (`Ok(false)`); answers pings on the way.
    async fn read_until(
        &mut self,
        shared: &Shared,
        want: Option<Want>,
        until: Instant,
    ) -> Result<bool, Ended> {
        loop {
            while let Some(frame) =
                split_server_frame(&self.buf[..self.end], MAX_FRAME).map_err(|_| Ended::Lost)?
            {
                let payload = self.buf[frame.payload.clone()].to_vec();
                self.buf.copy_within(frame.len..self.end, 0);
                self.end -= frame.len;
                match frame.opcode {
                    opcode::TEXT => {
                        Shared::add(&shared.messages, 1);
                        let is_error = payload.starts_with(Want::Error("").prefix());
                        if is_error {
                            Shared::add(&shared.errors_seen, 1);
                        }
                        if let Some(want) = want.filter(|w| *w != Want::Close) {
                            if payload.starts_with(want.prefix()) {
                                if let Want::Error(code) = want {
                                    let expected = format!(r#""code":"{code}""#);
                                    if !String::from_utf8_lossy(&payload).contains(&expected) {
                                        Shared::add(&shared.error_code_mismatches, 1);
                                    }
                                }
                                return Ok(true);
                            }
                        }
                    }
                    opcode::CLOSE => return Err(Ended::ServerClosed(close_label(&payload))),
                    opcode::PING => self
                        .stream
                        .write_all(&client_frame(opcode::PONG, &payload))
                        .await
                        .map_err(|_| Ended::Lost)?,
                    _ => {}
                }
            }
            if self.end == self.buf.len() {
                let need = frame_len(&self.buf[..self.end]).unwrap_or(self.buf.len() * 2);
                self.buf.resize(need.max(self.buf.len() + 1), 0);
            }
            match tokio::time::timeout_at(until, self.stream.read(&mut self.buf[self.end..])).await
            {
                Err(_) => return Ok(false),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(Ended::Lost),
                Ok(Ok(n)) => self.end += n,
            }
        }
    }

    /// Sends `request` and waits for `want`, counting it as missing if it
    /// does not come in time.
    async fn request(&mut self, shared: &Shared, request: &[u8], want: Want) -> Result<(), Ended> {
        self.send_text(request).await?;
        if !self
            .read_until(shared, Some(want), Instant::now() + REPLY_TIMEOUT)
            .await?
        {
            *shared
                .replies_missing
                .borrow_mut()
                .entry(want.name().to_string())
                .or_default() += 1;
        }
        Ok(())
    }
}

/// Runs a client with the connect slot `connecting` held only until its
/// handshake is done.
async fn run_client_gated(
    shared: Rc<Shared>,
    plan: Plan,
    n: u64,
    connecting: Option<tokio::sync::SemaphorePermit<'_>>,
) {
    Shared::add(&shared.started, 1);
    let result = tokio::time::timeout(REPLY_TIMEOUT * 2, connect(&shared, n)).await;
    drop(connecting);
    let conn = match result {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return fail(&shared, format!("{e:#}")),
        Err(_) => {
            return fail(
                &shared,
                format!("no upgrade within {:?}", REPLY_TIMEOUT * 2),
            )
        }
    };
    live(&shared, plan, conn).await;
}

fn fail(shared: &Shared, reason: String) {
    *shared
        .connect_failures
        .borrow_mut()
        .entry(reason)
        .or_default() += 1;
}

/// Connects from the `n`th source address and upgrades.
async fn connect(shared: &Shared, n: u64) -> anyhow::Result<Conn> {
    let source = net::source_ip(n, shared.source_ips);
    let stream = net::connect_from(shared.target.addr, source).await?;
    stream.set_nodelay(true).context("nodelay")?;
    let ws = ws::upgrade(stream, &shared.target, None).await?;
    let parts = ws
        .into_inner()
        .into_inner()
        .downcast::<TokioIo<TcpStream>>()
        .map_err(|_| anyhow::anyhow!("the upgraded connection is not a TcpStream"))?;
    let leftover: Bytes = parts.read_buf;
    let mut buf = vec![0u8; READ_BUFFER.max(leftover.len())];
    buf[..leftover.len()].copy_from_slice(&leftover);
    Ok(Conn {
        stream: parts.io.into_inner(),
        buf,
        end: leftover.len(),
    })
}

/// A connected client's life: plays `plan`, then records how it ended.
async fn live(shared: &Shared, plan: Plan, mut conn: Conn) {
    Shared::add(&shared.made, 1);
    shared.active.set(shared.active.get() + 1);
    {
        let mut behaviour = shared.behaviour.borrow_mut();
        behaviour.subscribed_all += u64::from(plan.all);
        behaviour.with_max_hz += u64::from(plan.max_hz);
        behaviour.with_batch += u64::from(plan.batch);
        behaviour.with_from += u64::from(plan.from);
    }
    let leave = plan.leave;
    let ended = play(shared, plan, &mut conn).await;
    shared.active.set(shared.active.get() - 1);
    let mut endings = shared.endings.borrow_mut();
    match ended {
        Ok(()) if leave == Leave::Close => endings.client_closed += 1,
        Ok(()) => {
            endings.client_dropped += 1;
            // Dropping the socket with unread data makes the kernel send a
            // reset: the abrupt end this behaviour stands for.
            drop(conn);
        }
        Err(Ended::ServerClosed(label)) => *endings.server_closed.entry(label).or_default() += 1,
        Err(Ended::Lost) => endings.lost += 1,
    }
}

async fn play(shared: &Shared, plan: Plan, conn: &mut Conn) -> Result<(), Ended> {
    // Reading stops early when the churn ends.
    let until = |wait: Duration| {
        let at = Instant::now() + wait;
        shared
            .deadline
            .get()
            .map_or(at, |deadline| at.min(deadline))
    };
    let subscribe = serde_json::to_vec(&plan.subscribe).expect("a request serializes");
    conn.request(shared, &subscribe, Want::Subscribed).await?;
    conn.read_until(shared, None, until(plan.read_for[0]))
        .await?;
    if let Some(garbage) = plan.garbage {
        Shared::add(&shared.errors_expected, 1);
        conn.request(
            shared,
            garbage.request.as_bytes(),
            Want::Error(garbage.code),
        )
        .await?;
    }
    if plan.ping {
        shared.behaviour.borrow_mut().pinged += 1;
        conn.request(shared, br#"{"op":"ping","id":"soak"}"#, Want::Pong)
            .await?;
    }
    conn.read_until(shared, None, until(plan.read_for[1]))
        .await?;
    if let Some(unsubscribe) = &plan.unsubscribe {
        shared.behaviour.borrow_mut().unsubscribed += 1;
        let unsubscribe = serde_json::to_vec(unsubscribe).expect("a request serializes");
        conn.request(shared, &unsubscribe, Want::Unsubscribed)
            .await?;
    }
    conn.read_until(shared, None, until(plan.read_for[2]))
        .await?;
    if let Some(stall) = plan.stall {
        shared.behaviour.borrow_mut().stalled += 1;
        tokio::time::sleep(stall).await;
    }
    if plan.leave == Leave::Close {
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"soak client leaving");
        conn.stream
            .write_all(&client_frame(opcode::CLOSE, &close))
            .await
            .map_err(|_| Ended::Lost)?;
        // Reads on to the server's answering close.
        match conn
            .read_until(shared, Some(Want::Close), Instant::now() + REPLY_TIMEOUT)
            .await
        {
            Err(Ended::ServerClosed(_)) => {}
            Ok(_) | Err(Ended::Lost) => {
                *shared
                    .replies_missing
                    .borrow_mut()
                    .entry(Want::Close.name().to_string())
                    .or_default() += 1;
            }
        }
    }
    Ok(())
}

impl SoakReport {
    /// The run as a readable table.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let mut row = |name: &str, value: String| {
            let _ = writeln!(out, "  {name:<24} {value}");
        };
        let counted = |map: &BTreeMap<String, u64>| {
            if map.is_empty() {
                "none".to_string()
            } else {
                map.iter()
                    .map(|(k, n)| format!("{n} × {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        row(
            "url",
            format!("{} (server pid {})", self.url, self.server_pid),
        );
        row(
            "churn",
            format!(
                "{:.1} s, up to {} clients at once, seed {}",
                self.churn_seconds, self.clients, self.seed
            ),
        );
        row(
            "connections",
            format!(
                "{} made of {} attempted, {} failed",
                self.connections_made, self.connections_attempted, self.connect_failures
            ),
        );
        for (reason, n) in &self.connect_failure_reasons {
            row("", format!("{n} × {reason}"));
        }
        let b = &self.behaviour;
        row(
            "behaviour",
            format!(
                "{} on *, {} max_hz, {} batch, {} from, {} unsubscribed, {} pinged, {} stalled",
                b.subscribed_all,
                b.with_max_hz,
                b.with_batch,
                b.with_from,
                b.unsubscribed,
                b.pinged,
                b.stalled
            ),
        );
        let e = &self.endings;
        row(
            "endings",
            format!(
                "{} closed by client, {} dropped by client, {} lost, server closed: {}",
                e.client_closed,
                e.client_dropped,
                e.lost,
                counted(&e.server_closed)
            ),
        );
        row("messages received", self.messages_received.to_string());
        row(
            "error replies",
            format!(
                "{} seen, {} expected, {} with the wrong code",
                self.errors_seen, self.errors_expected, self.error_code_mismatches
            ),
        );
        row("replies missing", counted(&self.replies_missing));
        let usage = |u: &Usage| format!("{:>8} KiB RSS  {:>6} fds", u.rss_kib, u.fds);
        row("server baseline", usage(&self.baseline));
        row("server peak", usage(&self.peak));
        row("server after", usage(&self.after));
        row(
            "settled in",
            format!(
                "{:.2} s (tickcast_connections {})",
                self.settle_seconds,
                self.connections_left
                    .map_or("unreadable".to_string(), |n| n.to_string())
            ),
        );
        row(
            "verdict",
            if self.verdict.passed {
                format!(
                    "PASS: descriptors back to baseline, RSS within {} KiB",
                    self.verdict.rss_limit_kib
                )
            } else {
                format!("FAIL: {}", self.verdict.failures.join("; "))
            },
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(rss_kib: u64, fds: u64) -> Usage {
        Usage { rss_kib, fds }
    }

    #[test]
    fn rss_allowance_is_the_larger_of_the_floor_and_the_fraction() {
        // 20 MiB baseline: 25% is 5 MiB, the 8 MiB floor wins.
        assert_eq!(RSS_TOLERANCE.limit_kib(20 * 1024), 28 * 1024);
        // 100 MiB baseline: 25% is 25 MiB.
        assert_eq!(RSS_TOLERANCE.limit_kib(100 * 1024), 125 * 1024);
        // Exactly where they meet (32 MiB).
        assert_eq!(RSS_TOLERANCE.limit_kib(32 * 1024), 40 * 1024);
    }

    #[test]
    fn passes_when_everything_came_back() {
        let verdict = judge(usage(30_000, 40), usage(37_000, 40), Some(0), RSS_TOLERANCE);
        assert!(verdict.passed, "{verdict:?}");
        assert!(verdict.failures.is_empty());
        assert_eq!(verdict.rss_limit_kib, 30_000 + 8192);
        // RSS below the baseline is fine.
        assert!(judge(usage(30_000, 40), usage(10_000, 40), Some(0), RSS_TOLERANCE).passed);
        // At the limit exactly still passes.
        assert!(judge(usage(30_000, 40), usage(38_192, 40), Some(0), RSS_TOLERANCE).passed);
    }

    #[test]
    fn descriptors_must_come_back_exactly() {
        for after in [41, 39] {
            let verdict = judge(
                usage(30_000, 40),
                usage(30_000, after),
                Some(0),
                RSS_TOLERANCE,
            );
            assert!(!verdict.passed);
            assert_eq!(verdict.failures.len(), 1);
            assert!(
                verdict.failures[0].contains(&format!("from 40 to {after}")),
                "{verdict:?}"
            );
        }
    }

    #[test]
    fn memory_above_the_allowance_fails() {
        let verdict = judge(usage(30_000, 40), usage(38_193, 40), Some(0), RSS_TOLERANCE);
        assert!(!verdict.passed);
        assert!(verdict.failures[0].contains("38193 KiB"), "{verdict:?}");
    }

    #[test]
    fn open_or_unknown_connections_fail_and_every_failure_is_listed() {
        let verdict = judge(usage(30_000, 40), usage(90_000, 45), Some(3), RSS_TOLERANCE);
        assert!(!verdict.passed);
        assert_eq!(verdict.failures.len(), 3, "{verdict:?}");
        assert!(verdict.failures[0].contains("3 open connection"));
        let unknown = judge(usage(30_000, 40), usage(30_000, 40), None, RSS_TOLERANCE);
        assert!(!unknown.passed);
        assert!(unknown.failures[0].contains("tickcast_connections"));
    }

    #[test]
    fn reads_the_connections_gauge_and_not_its_neighbours() {
        let metrics = "# HELP tickcast_connections WebSocket connections open.\n\
                       # TYPE tickcast_connections gauge\n\
                       tickcast_connections_opened_total 12\n\
                       tickcast_connections 3\n";
        assert_eq!(parse_connections_gauge(metrics), Some(3));
        assert_eq!(
            parse_connections_gauge("tickcast_connections_opened_total 12\n"),
            None
        );
    }

    #[test]
    fn client_frames_are_masked_and_sized() {
        let frame = client_frame(opcode::TEXT, &[b'x'; 200]);
        assert_eq!(&frame[..4], &[0x81, 0x80 | 126, 0, 200]);
        let mask = &frame[4..8];
        assert!(frame[8..]
            .iter()
            .enumerate()
            .all(|(i, b)| b ^ mask[i % 4] == b'x'));
        assert_eq!(client_frame(opcode::CLOSE, b"ab")[..2], [0x88, 0x82]);
    }

    #[test]
    fn plans_are_reproducible_and_stay_within_the_lifetime() {
        let symbols: Vec<Known> = ["AAPL", "MSFT", "NVDA"]
            .iter()
            .map(|s| Known {
                sym: s.to_string(),
                seq: 500,
            })
            .collect();
        let max = Duration::from_secs(2);
        let draw = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            (0..200)
                .map(|_| Plan::random(&mut rng, &symbols, max))
                .collect::<Vec<_>>()
        };
        let (a, b) = (draw(7), draw(7));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.subscribe, y.subscribe);
            assert_eq!(x.leave, y.leave);
        }
        for plan in &a {
            assert!(plan.read_for.iter().sum::<Duration>() <= max);
            let names = plan.subscribe["symbols"].as_array().unwrap();
            assert!(!names.is_empty());
        }
        // Every behaviour shows up over 200 plans.
        assert!(a.iter().any(|p| p.all) && a.iter().any(|p| p.from));
        assert!(a.iter().any(|p| p.leave == Leave::Drop) && a.iter().any(|p| p.stall.is_some()));
    }
}
