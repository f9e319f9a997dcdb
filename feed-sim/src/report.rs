//! The figures of one `feed-sim load` run: latency percentiles from the
//! histogram `load` fills, CPU and memory read from `/proc`, the readable
//! table printed at the end and the JSON written by `--json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Everything one run measured. Rates, gaps and latency cover only the
/// measured window (after warm-up); connection figures cover the whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Server WebSocket URL.
    pub url: String,
    /// `*` or `K symbols per client`.
    pub subscription: String,
    /// Clients asked for with `--clients`.
    pub clients_requested: usize,
    /// Clients that completed the WebSocket handshake.
    pub clients_connected: usize,
    /// Clients connected when the measured window began.
    pub clients_connected_at_start: usize,
    /// Clients whose `subscribed` reply arrived.
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
    /// Tick messages received in the window, all clients.
    pub ticks: u64,
    /// `ticks` per second.
    pub msgs_per_second: f64,
    /// `msgs_per_second` per connected client.
    pub msgs_per_second_per_client: f64,
    /// Seq gaps seen in the window.
    pub gaps: Gaps,
    /// Receive time minus the tick's `ts`, microseconds.
    pub latency_us: Latency,
    /// feed-sim's own CPU use in the window.
    pub own_cpu: CpuUse,
    /// The server's CPU and memory, with `--server-pid`.
    pub server: Option<ServerUse>,
    /// Close frames received from the server, by close code (whole run).
    pub close_codes: BTreeMap<u16, u64>,
    /// Connections that ended without a close frame (whole run).
    pub disconnects_without_close: u64,
    /// `error` messages received (whole run), and the first one's text.
    pub server_errors: u64,
    /// Text of the first `error` message, if any.
    pub first_server_error: Option<String>,
    /// Frames or messages the tool did not recognise (whole run).
    pub unrecognised: u64,
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
#[derive(Debug, Default, PartialEq, Serialize)]
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
    parse_vm_hwm_kib(&status)
}

/// The `VmHWM:` line of a `/proc/PID/status` text, in KiB.
pub fn parse_vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line["VmHWM:".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Report {
    /// The run as a readable table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut row = |name: &str, value: String| {
            let _ = writeln!(out, "  {name:<28} {value}");
        };
        row("url", self.url.clone());
        row("subscription", self.subscription.clone());
        row(
            "clients connected",
            format!(
                "{} of {} ({} at window start, {} subscribed)",
                self.clients_connected,
                self.clients_requested,
                self.clients_connected_at_start,
                self.clients_subscribed
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
                "{:.0} total, {:.1} per client ({} ticks)",
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
            row(
                "server peak RSS",
                server.peak_rss_kib.map_or("unknown".to_string(), |kib| {
                    format!("{:.1} MiB", kib as f64 / 1024.0)
                }),
            );
        }
        let closes = if self.close_codes.is_empty() {
            "none".to_string()
        } else {
            self.close_codes
                .iter()
                .map(|(code, n)| format!("{n} × {code}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        row("server close frames", closes);
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
    fn reads_peak_rss() {
        let status =
            "Name:\ttickcast\nVmPeak:\t  300000 kB\nVmHWM:\t   81234 kB\nVmRSS:\t 80000 kB\n";
        assert_eq!(parse_vm_hwm_kib(status), Some(81_234));
        assert_eq!(parse_vm_hwm_kib("Name:\tx\n"), None);
        assert!(peak_rss_kib(std::process::id()).unwrap() > 0);
    }
}
