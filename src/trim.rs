//! Gives the memory that connection churn leaves free inside the allocator
//! back to the operating system.
//!
//! A WebSocket handshake on the edge allocates tens of kilobytes (hyper's
//! buffers, the request, the upgrade) that are freed as soon as the socket
//! moves to its shard, and a closed connection frees its records. glibc's
//! allocator keeps such memory resident when it lies between live
//! allocations, which after a burst of 10,000 connections is about 1 KiB
//! per connection: as much again as the connections keep. `malloc_trim`
//! returns every whole free page to the system.
//!
//! The edge runs [`run`]: once a second it looks at how many connections
//! opened or closed, and trims once the churn settles (a second with none
//! after some), or every [`MAX_INTERVAL`] while it goes on. A trim locks
//! one allocator arena at a time while it returns that arena's pages, so a
//! shard's `malloc` may wait for the trim of its own arena; how long each
//! trim took is logged at debug level. On other allocators and systems
//! [`release_free_memory`] does nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::stats::Stats;

/// How often the churn is looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The longest a trim waits while connections keep opening or closing.
pub const MAX_INTERVAL: Duration = Duration::from_secs(30);

/// When to trim, from a running count of connections opened and closed.
#[derive(Debug)]
pub struct Settle {
    /// The count at the last check.
    seen: u64,
    /// The count at the last trim.
    trimmed: u64,
    last_trim: Instant,
}

impl Settle {
    /// Nothing to trim yet; `now` counts as the last trim.
    pub fn new(churn: u64, now: Instant) -> Self {
        Settle {
            seen: churn,
            trimmed: churn,
            last_trim: now,
        }
    }

    /// Whether to trim now, given the count `churn` at `now`; a yes counts
    /// as the trim.
    pub fn due(&mut self, churn: u64, now: Instant) -> bool {
        let quiet = churn == self.seen;
        self.seen = churn;
        if churn == self.trimmed || !(quiet || now.duration_since(self.last_trim) >= MAX_INTERVAL) {
            return false;
        }
        self.trimmed = churn;
        self.last_trim = now;
        true
    }
}

/// Connections opened plus connections closed, so far.
fn churn(stats: &Stats) -> u64 {
    let opened = stats.sessions_total.load(Ordering::Relaxed);
    let open = stats.sessions_open.load(Ordering::Relaxed) as u64;
    opened + opened.saturating_sub(open)
}

/// Trims after connection churn settles, until `stop` fires.
pub async fn run(stats: Arc<Stats>, stop: CancellationToken) {
    let mut settle = Settle::new(churn(&stats), Instant::now());
    let mut clock = tokio::time::interval(CHECK_EVERY);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = clock.tick() => {}
        }
        if settle.due(churn(&stats), Instant::now()) {
            let started = Instant::now();
            let released = tokio::task::spawn_blocking(release_free_memory).await;
            tracing::debug!(
                released = ?released,
                took = ?started.elapsed(),
                "returned free allocator memory to the system after connection churn"
            );
        }
    }
}

/// Returns the allocator's free pages to the system; whether any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() -> bool {
    // SAFETY: malloc_trim takes no pointers and is safe to call from any
    // thread at any time; it locks each arena while it trims it.
    unsafe { libc::malloc_trim(0) != 0 }
}

/// Returns the allocator's free pages to the system; whether any were.
/// Only glibc's allocator is asked; elsewhere this does nothing.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_the_churn_settles() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut settle = Settle::new(0, start);
        assert!(!settle.due(0, at(1)), "no churn, nothing to trim");
        assert!(!settle.due(500, at(2)), "connections still arriving");
        assert!(!settle.due(900, at(3)));
        assert!(settle.due(900, at(4)), "a quiet second after a burst");
        assert!(!settle.due(900, at(5)), "trimmed already");
        assert!(!settle.due(901, at(6)));
        assert!(settle.due(901, at(7)));
    }

    #[test]
    fn trims_during_endless_churn_every_max_interval() {
        let start = Instant::now();
        let mut settle = Settle::new(0, start);
        let mut trims = 0;
        for s in 1..=95 {
            if settle.due(s * 100, start + Duration::from_secs(s)) {
                trims += 1;
            }
        }
        assert_eq!(trims, 3, "at 30, 60 and 90 s");
    }
}
