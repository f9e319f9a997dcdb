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
//!
//! The parts: `args`, the command line; `client`, one churning client;
//! `usage`, what is read of the server (/proc and `/metrics`); `verdict`,
//! the judging; `report`, the figures and the printed table. This module
//! runs the timeline: warm-up, baseline, churn, settling.

mod args;
mod client;
mod report;
mod usage;
mod verdict;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use rand::rngs::SmallRng;
use rand::SeedableRng as _;
use tokio::sync::Semaphore;
use tokio::time::Instant;

pub use args::SoakArgs;
pub use report::{Behaviour, Endings, SoakReport};
pub use usage::{open_fds, parse_connections_gauge, Usage};
pub use verdict::{judge, RssTolerance, Verdict, RSS_TOLERANCE};

use crate::net;
use crate::progress::Progress;
use crate::ws::{self, Target};
use client::{run_client_gated, Plan};
use usage::connections_gauge;

/// How long a client waits for the reply to one of its requests.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the server's memory and descriptors are sampled (and the
/// progress bars redrawn) while churning.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// How often `/metrics` is polled while waiting for the connections to
/// close, and the descriptors while waiting for them to be released.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// The first clients of the warm-up round are given one behaviour each,
/// in turn, so that the round covers every behaviour: this many.
const WARMUP_COVERAGE: usize = 16;

/// Runs `feed-sim soak`: prints the report, writes `--json`, and fails
/// with the verdict's reasons when the server did not give back what the
/// churn took.
pub fn run(args: SoakArgs) -> anyhow::Result<()> {
    let report = measure(&args)?;
    print!("{}", report.render());
    args.json.write(&report)?;
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
        source_ips: args.source_ips.count_for(target.addr),
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
