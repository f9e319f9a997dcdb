//! The figures of one `feed-sim load` run: latency percentiles from the
//! histogram `load` fills, CPU and memory read from `/proc`, the readable
//! table printed at the end and the JSON written by `--json` (which
//! `--plot-add` reads back, see [`crate::plot`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::hgrm;

/// feed-sim's own CPU use, in percent of one core, above which the run
/// warns that the tool itself may be what limits the figures.
pub const OWN_CPU_WARNING_PERCENT: f64 = 90.0;

/// Everything one run measured. Rates, gaps, delivery and latency cover
/// only the measured window (after warm-up) and only the reading clients
/// (not the `--stall`ed ones, which have their own [`Stalled`] figures);
/// connection figures cover the whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// One line naming the run: clients, subscription, stalled, window.
    pub scenario: String,
    /// Server WebSocket URL.
    pub url: String,
    /// `*` or `K symbols per client`.
    pub subscription: String,
    /// Clients asked for with `--clients`.
    pub clients_requested: usize,
    /// Clients that completed the WebSocket handshake (stalled ones
    /// included).
    pub clients_connected: usize,
    /// Connected clients that read (all but the stalled ones): the clients
    /// every rate, gap and latency figure is about.
    pub clients_reading: usize,
    /// Clients connected when the measured window began.
    pub clients_connected_at_start: usize,
    /// Clients whose `subscribed` reply arrived before the window ended
    /// (stalled clients read theirs only afterwards).
    pub clients_subscribed: usize,
    /// Connects or handshakes that failed, by reason.
    pub connect_failures: usize,
    /// The same failures, counted by their error text.
    pub connect_failure_reasons: BTreeMap<String, u64>,
    /// Seconds from start until the last connect attempt finished.
    pub connect_seconds: Option<f64>,
    /// Source addresses the clients were spread over.
    pub source_ips: usize,
    /// Open-file soft limit after raising it.
    pub nofile_limit: u64,
    /// Warm-up before the window, seconds.
    pub warmup_seconds: f64,
    /// Length of the measured window, seconds (as timed).
    pub window_seconds: f64,
    /// Tick messages received in the window, all reading clients.
    pub ticks: u64,
    /// `ticks` per second.
    pub msgs_per_second: f64,
    /// `msgs_per_second` per reading client.
    pub msgs_per_second_per_client: f64,
    /// Seq gaps seen in the window.
    pub gaps: Gaps,
    /// Ticks delivered against ticks the feed produced for the
    /// subscriptions, in the window.
    pub delivery: Delivery,
    /// Receive time minus the tick's `ts`, microseconds.
    pub latency_us: Latency,
    /// The latency distribution as HdrHistogram's percentile rows (the
    /// `.hgrm` rows, in µs): what `--plot` and `--plot-add` draw.
    pub latency_curve: Vec<CurvePoint>,
    /// The latency histogram itself (µs), for `--hgrm`.
    #[serde(skip)]
    pub latency_histogram: Histogram<u64>,
    /// feed-sim's own CPU use in the window.
    pub own_cpu: CpuUse,
    /// The server's CPU and memory, with `--server-pid`.
    pub server: Option<ServerUse>,
    /// The server's memory per connection, with `--idle`.
    pub idle_memory: Option<IdleMemory>,
    /// What happened to the `--stall`ed clients.
    pub stalled: Option<Stalled>,
    /// Close frames the reading clients received from the server, by
    /// close code and reason, e.g. `1008 slow consumer` (whole run).
    pub close_codes: BTreeMap<String, u64>,
    /// Connections that ended without a close frame (whole run).
    pub disconnects_without_close: u64,
    /// `error` messages received (whole run), and the first one's text.
    pub server_errors: u64,
    /// Text of the first `error` message, if any.
    pub first_server_error: Option<String>,
    /// Frames or messages the tool did not recognise (whole run).
    pub unrecognised: u64,
    /// Reasons to doubt the figures (e.g. feed-sim itself was saturated).
    pub warnings: Vec<String>,
}

/// Delivery ratio: ticks delivered against ticks the feed produced for the
/// clients' subscriptions, summed over reading clients and symbols.
///
/// Per client and symbol, the feed produced every `seq` in
/// `(base, last]`, where `last` is the last `seq` received in the window
/// and `base` the `seq` that client last saw of that symbol *before* the
/// window (the tick or snapshot before its first tick in the window; 0 if
/// none, since `seq` starts at 1). So a symbol whose ticks all arrive
/// counts `last - base` produced and as many delivered: 100% exactly, with
/// no off-by-one at the window's start. Since `seq` rises by exactly 1 per
/// tick, `last - base` is the sum, over the window's ticks, of how far
/// each moved `seq` on: 1 for a tick in order, `missing + 1` for a tick
/// after a gap, 0 for a regression. Hence, with no per-symbol state at
/// the window's edges:
///
/// - `delivered` = ticks received in the window − seq regressions
///   (duplicates or reordered ticks deliver nothing new; the protocol
///   allows none);
/// - `produced` = `delivered` + ticks missing in the window's gaps.
///
/// At the window's end a tick produced but not yet received counts in
/// neither (it is latency, not loss), and a gap is counted in the window
/// in which the tick after it arrives, as [`Gaps`] does. A client the
/// server closed stops adding at its last tick; see `close_codes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Delivery {
    /// Ticks received that were new (`ticks - seq_regressions`).
    pub delivered: u64,
    /// Ticks the feed produced for the subscriptions, as defined above.
    pub produced: u64,
    /// `delivered / produced` in percent; `None` when nothing was produced.
    pub percent: Option<f64>,
}

impl Delivery {
    /// Delivery from the window's tick count and its gaps.
    pub fn from_counts(received: u64, gaps: &Gaps) -> Self {
        let delivered = received.saturating_sub(gaps.seq_regressions);
        let produced = delivered + gaps.missing_ticks;
        Delivery {
            delivered,
            produced,
            percent: (produced > 0).then(|| 100.0 * delivered as f64 / produced as f64),
        }
    }
}

/// One row of the latency percentile distribution.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// The percentile level as a fraction (0.99 is p99; the last row is 1).
    pub quantile: f64,
    /// Latency at that level, µs.
    pub latency_us: u64,
}

impl CurvePoint {
    /// HdrHistogram's percentile rows of `histogram`
    /// ([`hgrm::TICKS_PER_HALF_DISTANCE`] per halving).
    pub fn curve(histogram: &Histogram<u64>) -> Vec<CurvePoint> {
        hgrm::percentile_rows(histogram, hgrm::TICKS_PER_HALF_DISTANCE)
            .into_iter()
            .map(|row| CurvePoint {
                quantile: row.quantile,
                latency_us: row.value,
            })
            .collect()
    }
}

/// The server's memory per connection, measured by `--idle`.
#[derive(Debug, Serialize)]
pub struct IdleMemory {
    /// Server `VmRSS` before the first connect, KiB.
    pub rss_before_kib: u64,
    /// Server `VmRSS` once every client was connected and subscribed (at
    /// the window's start), KiB.
    pub rss_after_kib: u64,
    /// Clients connected when `rss_after_kib` was read.
    pub clients: usize,
    /// `(rss_after_kib - rss_before_kib) / clients`.
    pub kib_per_connection: f64,
}

/// What the `--stall`ed clients went through: they subscribed, read
/// nothing during the run, then read what was pending for at most
/// `drain_limit_seconds` after the window.
#[derive(Debug, Default, Serialize)]
pub struct Stalled {
    /// Clients asked to stall (`--stall`).
    pub clients: usize,
    /// Of them, how many connected.
    pub connected: usize,
    /// Close frames received, by code and reason (`1008 slow consumer`).
    pub close_codes: BTreeMap<String, u64>,
    /// Connections that ended without a close frame.
    pub ended_without_close: u64,
    /// Still open, and read up to a tick produced after draining began.
    pub caught_up: u64,
    /// Still open and still reading old data when the drain limit passed.
    pub still_behind: u64,
    /// The most seconds the drain could take.
    pub drain_limit_seconds: f64,
    /// Ticks read while draining, all stalled clients.
    pub ticks_read: u64,
    /// Seq gaps in what they read: ticks the server conflated away.
    pub gaps: Gaps,
    /// Age of the drained ticks when read (receive time minus `ts`), µs.
    pub tick_age_us: Latency,
}

/// Sequence gaps: a gap is a tick whose `seq` is more than one past the
/// previous `seq` of its symbol on the same connection.
#[derive(Debug, Default, Serialize)]
pub struct Gaps {
    /// Ticks skipped over, summed over every gap.
    pub missing_ticks: u64,
    /// Number of gaps.
    pub gap_events: u64,
    /// Clients that saw at least one gap.
    pub clients_with_gaps: u64,
    /// Ticks whose `seq` was not above the previous one (must stay 0).
    pub seq_regressions: u64,
}

/// Latency percentiles, microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Values recorded.
    pub count: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value.
    pub max: u64,
}

impl Latency {
    /// The percentiles of `histogram`; all zero when it is empty.
    pub fn from_histogram(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Latency::default();
        }
        Latency {
            count: histogram.len(),
            mean: histogram.mean(),
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// CPU time one process spent in the window.
#[derive(Debug, Default, Serialize)]
pub struct CpuUse {
    /// User plus system CPU seconds.
    pub cpu_seconds: f64,
    /// `cpu_seconds` over the window's wall time, in percent of one core.
    pub cpu_percent: f64,
    /// CPU microseconds per tick received.
    pub cpu_us_per_msg: f64,
}

/// The server process's use of the machine.
#[derive(Debug, Serialize)]
pub struct ServerUse {
    /// Its process id.
    pub pid: u32,
    /// CPU over the window, in percent of one core.
    pub cpu_percent: f64,
    /// Peak resident memory over the server's whole life (`VmHWM`), KiB.
    pub peak_rss_kib: Option<u64>,
    /// Resident memory at the window's end (`VmRSS`), KiB.
    pub rss_kib: Option<u64>,
}

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`), fixed at
/// 100 by the Linux ABI on every common architecture.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU seconds of `pid` (`self` when `None`), from
/// `/proc/PID/stat`; 10 ms resolution.
pub fn cpu_seconds(pid: Option<u32>) -> std::io::Result<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(&path)?;
    parse_stat_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / CLOCK_TICKS_PER_SECOND)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{path} has no utime/stime fields"),
            )
        })
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The
/// command name (field 2) may contain spaces and parentheses, so fields
/// are counted from its last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace();
    // Fields 3..=13 come first; utime is field 14.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Peak resident set size of `pid` in KiB (`VmHWM` in `/proc/PID/status`).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, "VmHWM:")
}

/// Resident set size of `pid` now, in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> std::io::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)?;
    parse_status_kib(&status, "VmRSS:").ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{path} has no VmRSS line"),
        )
    })
}

/// The value of a `field` line (`"VmHWM:"`, `"VmRSS:"`) of a
/// `/proc/PID/status` text, in KiB.
pub fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `count × key` pairs joined by commas, or `none`.
fn counted<K: std::fmt::Display>(map: &BTreeMap<K, u64>) -> String {
    if map.is_empty() {
        return "none".to_string();
    }
    map.iter()
        .map(|(key, n)| format!("{n} × {key}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Report {
    /// The run as a readable table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut row = |name: &str, value: String| {
            let _ = writeln!(out, "  {name:<28} {value}");
        };
        row("scenario", self.scenario.clone());
        row("url", self.url.clone());
        row("subscription", self.subscription.clone());
        row(
            "clients connected",
            format!(
                "{} of {} ({} at window start, {} subscribed, {} reading)",
                self.clients_connected,
                self.clients_requested,
                self.clients_connected_at_start,
                self.clients_subscribed,
                self.clients_reading
            ),
        );
        row("connect failures", self.connect_failures.to_string());
        for (reason, count) in &self.connect_failure_reasons {
            row("", format!("{count} × {reason}"));
        }
        if let Some(seconds) = self.connect_seconds {
            row("connect phase", format!("{seconds:.2} s"));
        }
        row("source addresses", self.source_ips.to_string());
        row("open-file limit", self.nofile_limit.to_string());
        row(
            "window",
            format!(
                "{:.2} s after {:.1} s warm-up",
                self.window_seconds, self.warmup_seconds
            ),
        );
        row(
            "msgs/s (ticks)",
            format!(
                "{:.0} total, {:.1} per reading client ({} ticks)",
                self.msgs_per_second, self.msgs_per_second_per_client, self.ticks
            ),
        );
        row(
            "gaps (missing ticks)",
            format!(
                "{} missing in {} gaps, {} clients affected, {} seq regressions",
                self.gaps.missing_ticks,
                self.gaps.gap_events,
                self.gaps.clients_with_gaps,
                self.gaps.seq_regressions
            ),
        );
        let d = &self.delivery;
        row(
            "delivery ratio",
            match d.percent {
                Some(percent) => format!(
                    "{percent:.3}% ({} delivered of {} produced for the subscriptions)",
                    d.delivered, d.produced
                ),
                None => "n/a (no tick produced for the subscriptions)".to_string(),
            },
        );
        let l = &self.latency_us;
        row(
            "latency µs p50/p90/p99",
            format!("{} / {} / {}", l.p50, l.p90, l.p99),
        );
        row(
            "latency µs p99.9/max",
            format!("{} / {} (mean {:.1}, n {})", l.p999, l.max, l.mean, l.count),
        );
        row(
            "feed-sim CPU",
            format!(
                "{:.2} µs per msg ({:.1}% of a core)",
                self.own_cpu.cpu_us_per_msg, self.own_cpu.cpu_percent
            ),
        );
        if let Some(server) = &self.server {
            row(
                "server CPU",
                format!("{:.1}% of a core (pid {})", server.cpu_percent, server.pid),
            );
            let mib = |kib: Option<u64>| {
                kib.map_or("unknown".to_string(), |kib| {
                    format!("{:.1} MiB", kib as f64 / 1024.0)
                })
            };
            row(
                "server RSS",
                format!(
                    "{} at window end, {} peak",
                    mib(server.rss_kib),
                    mib(server.peak_rss_kib)
                ),
            );
        }
        if let Some(idle) = &self.idle_memory {
            row(
                "server memory/connection",
                format!(
                    "{:.1} KiB (RSS {:.1} → {:.1} MiB over {} clients)",
                    idle.kib_per_connection,
                    idle.rss_before_kib as f64 / 1024.0,
                    idle.rss_after_kib as f64 / 1024.0,
                    idle.clients
                ),
            );
        }
        row("server close frames", counted(&self.close_codes));
        row(
            "ended without close",
            self.disconnects_without_close.to_string(),
        );
        row(
            "server error messages",
            match &self.first_server_error {
                Some(first) => format!("{} (first: {first})", self.server_errors),
                None => self.server_errors.to_string(),
            },
        );
        if self.unrecognised > 0 {
            row("unrecognised frames", self.unrecognised.to_string());
        }
        if let Some(stalled) = &self.stalled {
            let _ = writeln!(
                out,
                "  stalled clients (read nothing during the run, then drained for up to {:.0} s):",
                stalled.drain_limit_seconds
            );
            let mut row = |name: &str, value: String| {
                let _ = writeln!(out, "    {name:<26} {value}");
            };
            row(
                "connected",
                format!("{} of {}", stalled.connected, stalled.clients),
            );
            row("closed by the server", counted(&stalled.close_codes));
            row(
                "still open",
                format!(
                    "{} caught up, {} still behind at the limit, {} ended without close",
                    stalled.caught_up, stalled.still_behind, stalled.ended_without_close
                ),
            );
            let age = &stalled.tick_age_us;
            row(
                "drained",
                format!(
                    "{} ticks, {} missing in {} gaps (conflated), age p50 {:.1} / max {:.1} ms",
                    stalled.ticks_read,
                    stalled.gaps.missing_ticks,
                    stalled.gaps.gap_events,
                    age.p50 as f64 / 1000.0,
                    age.max as f64 / 1000.0
                ),
            );
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "warning: {warning}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = Histogram::<u64>::new_with_max(60_000_000, 3).unwrap();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let l = Latency::from_histogram(&h);
        assert_eq!(l.count, 1000);
        assert_eq!(l.p50, 500);
        assert_eq!(l.p90, 900);
        assert_eq!(l.p99, 990);
        assert_eq!(l.p999, 999);
        assert_eq!(l.max, 1000);
        assert!((l.mean - 500.5).abs() < 0.5);
    }

    #[test]
    fn percentiles_keep_three_significant_digits_and_see_the_tail() {
        let mut h = Histogram::<u64>::new_with_max(60_000_000, 3).unwrap();
        h.record_n(40, 9_980).unwrap();
        h.record_n(25_000, 20).unwrap();
        let l = Latency::from_histogram(&h);
        assert_eq!(l.p50, 40);
        assert_eq!(l.p99, 40);
        assert!(l.p999 >= 24_990 && l.p999 <= 25_010, "{l:?}");
        assert!(l.max >= 24_990 && l.max <= 25_010, "{l:?}");
    }

    #[test]
    fn an_empty_histogram_reports_zeros() {
        let h = Histogram::<u64>::new_with_max(60_000_000, 3).unwrap();
        assert_eq!(Latency::from_histogram(&h), Latency::default());
    }

    #[test]
    fn reads_cpu_ticks_even_with_odd_command_names() {
        let stat = "4242 (tick (cast) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    1234 56 0 0 20 0 3 0 100 1000000 500 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(1234 + 56));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn reads_our_own_cpu_time() {
        assert!(cpu_seconds(None).unwrap() >= 0.0);
    }

    #[test]
    fn reads_peak_and_current_rss() {
        let status =
            "Name:\ttickcast\nVmPeak:\t  300000 kB\nVmHWM:\t   81234 kB\nVmRSS:\t 80000 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(81_234));
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(80_000));
        assert_eq!(parse_status_kib("Name:\tx\n", "VmHWM:"), None);
        assert!(peak_rss_kib(std::process::id()).unwrap() > 0);
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn delivery_is_new_ticks_over_new_ticks_plus_missing() {
        let perfect = Delivery::from_counts(1000, &Gaps::default());
        assert_eq!((perfect.delivered, perfect.produced), (1000, 1000));
        assert_eq!(perfect.percent, Some(100.0));
        let lossy = Delivery::from_counts(
            900,
            &Gaps {
                missing_ticks: 300,
                gap_events: 7,
                clients_with_gaps: 2,
                seq_regressions: 0,
            },
        );
        assert_eq!((lossy.delivered, lossy.produced), (900, 1200));
        assert_eq!(lossy.percent, Some(75.0));
        let replayed = Delivery::from_counts(
            10,
            &Gaps {
                seq_regressions: 2,
                ..Gaps::default()
            },
        );
        assert_eq!((replayed.delivered, replayed.produced), (8, 8));
        assert_eq!(Delivery::from_counts(0, &Gaps::default()).percent, None);
    }
}
