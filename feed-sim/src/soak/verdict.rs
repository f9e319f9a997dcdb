//! The verdict: whether the server gave back, once every client was gone,
//! the file descriptors and memory the churn took.

use serde::Serialize;

use super::Usage;

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
}
