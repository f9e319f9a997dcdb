//! Everything one soak run saw, and the table `feed-sim soak` prints.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{RssTolerance, Usage, Verdict};

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
