//! `Stats`: counters the stages bump as they work, read by tests and
//! operators. Relaxed atomics: each is an independent count, and none is
//! touched once per recipient on the fast path (only on conflation, close
//! and connection events, or once per tick).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Server-wide counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Ticks publishers sent through `/ingest` and the ring accepted.
    pub ticks_ingested: AtomicU64,
    /// Ticks the fan-out has read from the ring.
    pub ticks_read: AtomicU64,
    /// Ticks the fan-out lost because it fell a whole ring behind.
    pub ring_lagged: AtomicU64,
    /// Ticks whose `seq` did not follow the symbol's previous one (sent
    /// to subscribers as reset snapshots).
    pub feed_gaps: AtomicU64,
    /// Ticks replayed to clients resuming with `from`.
    pub replayed: AtomicU64,
    /// Reset snapshots sent to clients whose `from` was out of reach.
    pub resets: AtomicU64,
    /// Tick deliveries that replaced an older queued tick (slow clients).
    pub conflated: AtomicU64,
    /// Connections closed with 1008 `slow consumer`.
    pub slow_consumer_closes: AtomicU64,
    /// WebSocket sessions open now.
    pub sessions_open: AtomicUsize,
    /// WebSocket sessions opened since start.
    pub sessions_total: AtomicU64,
    /// The most bytes any one outbox has held, over the server's life.
    pub peak_outbox_bytes: AtomicUsize,
}

impl Stats {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
