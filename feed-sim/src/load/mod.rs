//! `feed-sim load`: opens many WebSocket clients against a server that
//! speaks tickcast's protocol, subscribes them, and measures what they
//! receive (rate, `seq` gaps, latency from the tick's own `ts`) and what
//! it costs, the server's CPU and memory and the tool's own CPU.
//!
//! # Layout
//! - `args`: the command line.
//! - `plan`: the server's symbol list and what each client subscribes to.
//! - `clients`: the event loop that connects, upgrades and reads every
//!   client on one thread.
//! - `track`: what a client makes of its frames: gaps, latency, closes.
//! - this file: the run's timeline, and the report assembled from it
//!   ([`crate::report`] prints it).
//!
//! Timeline: connecting starts at once (at most `--connect-parallelism`
//! handshakes in flight) and overlaps the warm-up; the measured window runs
//! from `--warmup` to `--warmup + --duration` seconds after start, and the
//! reading clients stop then whatever they are doing. With `--idle` the
//! warm-up starts only once every client has subscribed. With `--stall N`
//! the first N clients read nothing until the window has ended, then drain
//! what is pending for at most [`STALL_DRAIN`], which is when they learn
//! whether the server closed them.

mod args;
mod clients;
mod plan;
mod track;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::hgrm;
use crate::net;
use crate::plot::{self, Curve};
use crate::progress::Progress;
use crate::report::{
    self, CpuUse, CurvePoint, Delivery, IdleMemory, Latency, Report, ServerUse, Stalled,
};
use crate::symbols::SymbolIds;
use crate::ws::Target;
pub use args::LoadArgs;
use clients::{Clients, Setup};
use plan::ListedBy;

/// Clients per loopback source address by default: each address has a
/// range of ephemeral ports of its own, and this stays well inside it.
const CONNECTIONS_PER_SOURCE_IP: usize = 25_000;

/// How long stalled clients may read what is pending after the window.
pub const STALL_DRAIN: Duration = Duration::from_secs(2);

/// How often the progress bars are redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

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
    args.json.write(&report)?;
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
            .path
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

fn write_file(path: &Path, contents: String) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("could not write {}", path.display()))
}

/// Runs the load `args` describe and returns its figures. Blocks the
/// calling thread; call it from outside any tokio runtime.
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
    let target = Target::parse(&args.url)?;
    let nofile_limit = net::raise_open_file_limit(args.clients);

    // Learning the symbols is a few HTTP or WebSocket requests: a runtime
    // for those, gone before the clients start.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the tokio runtime")?;
    let (names, listed_by) =
        tokio::task::LocalSet::new().block_on(&runtime, plan::learn_symbols(&target, &args.url))?;
    drop(runtime);

    let (subscription, plans) = match args.subs {
        Some(k) => {
            if k == 0 || k > names.len() {
                bail!(
                    "--subs {k} is out of range: the server carries {} symbols",
                    names.len()
                );
            }
            let plans: Vec<_> = (0..args.clients)
                .map(|i| plan::subscribe_message(&plan::spread_symbols(&names, k, i)))
                .collect();
            let noun = if k == 1 { "symbol" } else { "symbols" };
            (format!("{k} {noun} per client"), plans)
        }
        None => (
            "all symbols (\"*\")".to_string(),
            vec![plan::subscribe_message(&["*"])],
        ),
    };
    let source_ips = match (target.addr.ip().is_loopback(), args.source_ips) {
        (false, _) => 0,
        (true, Some(n)) => usize::from(n),
        (true, None) => args.clients.div_ceil(CONNECTIONS_PER_SOURCE_IP).min(254),
    };
    let symbols = SymbolIds::new(names);

    let rss_before = match (args.idle, args.server_pid) {
        (true, Some(pid)) => Some(report::rss_kib(pid).with_context(|| {
            format!("could not read the memory of process {pid}: is --server-pid the server's?")
        })?),
        _ => None,
    };

    let connect_timeout = Duration::from_secs_f64(args.connect_timeout);
    let mut clients = Clients::new(Setup {
        target: &target,
        clients: args.clients,
        stalled: args.stall,
        source_ips,
        connect_parallelism: args.connect_parallelism,
        connect_timeout,
        subscribes: &plans,
        symbols: &symbols,
    })?;
    let progress = Progress::new(!args.no_progress, args.clients, args.warmup + args.duration);
    let mut redraw = Redraw::new(&progress);

    let start = Instant::now();
    let far = start + Duration::from_secs(365 * 24 * 3600);
    let timeline_start = if args.idle {
        clients.run_until(far, Clients::all_subscribed, |c| redraw.connecting(c))?;
        Instant::now()
    } else {
        start
    };
    let warmup_end = timeline_start + Duration::from_secs_f64(args.warmup);
    clients.run_until(
        warmup_end,
        |_| false,
        |c| redraw.timeline(c, timeline_start, "warm-up"),
    )?;

    let window_start = Instant::now();
    clients.measuring = true;
    let connected_at_start = clients.connections.connected;
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

    let window_end = window_start + Duration::from_secs_f64(args.duration);
    clients.run_until(
        window_end,
        |_| false,
        |c| redraw.timeline(c, timeline_start, "measuring"),
    )?;
    let window = window_start.elapsed().as_secs_f64();
    let own_cpu_end = report::cpu_seconds(None).ok();
    let server_cpu_end = args
        .server_pid
        .and_then(|pid| report::cpu_seconds(Some(pid)).ok());
    let server_rss = args.server_pid.and_then(|pid| report::rss_kib(pid).ok());
    let totals = std::mem::take(&mut clients.totals);
    // The counts at the window's end: the drain below connects no reader.
    let connected = clients.connections.connected;
    let reading = connected - clients.connections.stalled_connected;

    // The stalled clients read what is pending now; reading clients stop.
    let stalled = if args.stall > 0 {
        clients.drain_stalled(STALL_DRAIN, |c| {
            redraw.timeline(c, timeline_start, "draining (stalled clients)")
        })?;
        let drained = std::mem::take(&mut clients.stalled_totals);
        Some(Stalled {
            clients: args.stall,
            connected: clients.connections.stalled_connected,
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
    progress.finish();

    let connections = std::mem::take(&mut clients.connections);
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

    let mut warnings = Vec::new();
    if own_cpu.cpu_percent > report::OWN_CPU_WARNING_PERCENT {
        warnings.push(format!(
            "feed-sim was at {:.0}% of its one core: it was the bottleneck, and the figures \
             are partly its own; use fewer clients per process or run several",
            own_cpu.cpu_percent
        ));
    }
    if listed_by == ListedBy::SubscribedReply {
        warnings.push(format!(
            "the server serves no GET /symbols: its {} symbols were read from the \
             subscribed reply to \"*\"",
            symbols.len()
        ));
    }
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
        clients_subscribed: totals.subscribed as usize,
        connect_failures: connections.failed(),
        connect_failure_reasons: connections.failures,
        connect_seconds: connections
            .last_attempt
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

/// Redraws the progress bars every [`PROGRESS_EVERY`].
struct Redraw<'a> {
    progress: &'a Progress,
    last: Instant,
    last_ticks: u64,
}

impl<'a> Redraw<'a> {
    fn new(progress: &'a Progress) -> Self {
        Redraw {
            progress,
            last: Instant::now(),
            last_ticks: 0,
        }
    }

    fn due(&mut self, clients: &Clients<'_>) -> bool {
        if self.last.elapsed() < PROGRESS_EVERY {
            return false;
        }
        let c = &clients.connections;
        self.progress.clients(c.connected, c.failed());
        true
    }

    fn connecting(&mut self, clients: &Clients<'_>) {
        if self.due(clients) {
            self.last = Instant::now();
            self.progress.timeline(
                "connecting",
                0.0,
                "(--idle: waiting for every subscription)",
            );
        }
    }

    fn timeline(&mut self, clients: &Clients<'_>, timeline_start: Instant, stage: &str) {
        if !self.due(clients) {
            return;
        }
        let now = Instant::now();
        let ticks = clients.totals.ticks;
        let rate = ticks.saturating_sub(self.last_ticks) as f64
            / now.duration_since(self.last).as_secs_f64();
        (self.last, self.last_ticks) = (now, ticks);
        let detail = if clients.measuring {
            format!("· {rate:.0} msg/s")
        } else {
            String::new()
        };
        self.progress
            .timeline(stage, (now - timeline_start).as_secs_f64(), &detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
