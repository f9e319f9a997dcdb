//! `Stats`: counters the stages bump as they work, read by tests and
//! exported by `metrics`. Relaxed atomics: each is an independent count,
//! and none is touched once per recipient on the fast path (only on
//! conflation, close and connection events, once per tick, or once per
//! socket write).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use crate::protocol::ErrorCode;

/// Server-wide counters and latency histograms (exported at `/metrics`).
#[derive(Debug)]
pub struct Stats {
    /// Ticks the feed has written into the ring (as of the fan-out's last
    /// pass).
    pub ticks_produced: AtomicU64,
    /// Ticks published but not yet read by the fan-out, after its last pass.
    pub ring_lag: AtomicU64,
    /// Symbol subscriptions over all connections (`*` counts every symbol).
    pub subscriptions: AtomicUsize,
    /// Frames fully written to client sockets.
    pub frames_sent: AtomicU64,
    /// Bytes written to client sockets.
    pub bytes_sent: AtomicU64,
    /// `error` replies sent, by [`ErrorCode`] (indexed by `code as usize`).
    pub errors: [AtomicU64; ErrorCode::ALL.len()],
    /// Seconds from a tick's `ts` to its frame queued for every subscriber.
    pub fanout_latency: Histogram,
    /// Seconds from a writer taking a connection's queued frames to their
    /// last byte accepted by the socket.
    pub write_latency: Histogram,
    /// Ticks publishers sent through `/ingest` and the ring accepted.
    pub ticks_ingested: AtomicU64,
    /// Whether the feed is connected to its source: false only while the
    /// NATS feed has lost (or not yet made) its connection.
    pub feed_connected: AtomicBool,
    /// Feed messages dropped for naming a symbol the server does not carry.
    pub feed_unknown_symbols: AtomicU64,
    /// Feed messages dropped for not decoding, a bad price or a `seq` not
    /// after the symbol's last one.
    pub feed_bad_ticks: AtomicU64,
    /// Feed ticks of new symbols refused because the server carries
    /// `--max-symbols` already.
    pub feed_symbols_refused: AtomicU64,
    /// Symbols the fan-out serves.
    pub symbols: AtomicUsize,
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
    /// Connections closed with 1008 for sending past the rate limit.
    pub rate_limit_closes: AtomicU64,
    /// Connections ended by a panic in their handling (each is logged).
    pub connection_panics: AtomicU64,
    /// WebSocket sessions open now.
    pub sessions_open: AtomicUsize,
    /// WebSocket sessions opened since start.
    pub sessions_total: AtomicU64,
    /// The most bytes any one outbox has held, over the server's life.
    pub peak_outbox_bytes: AtomicUsize,
    /// Connections handed to each shard and not yet ended, by shard (set
    /// when the shards start).
    pub shard_connections: std::sync::OnceLock<Vec<std::sync::Arc<AtomicUsize>>>,
}

impl Default for Stats {
    fn default() -> Self {
        // 10 µs to about 10 s.
        let buckets = || exponential_buckets(10e-6, 2.0, 20);
        Stats {
            ticks_produced: AtomicU64::new(0),
            ring_lag: AtomicU64::new(0),
            subscriptions: AtomicUsize::new(0),
            frames_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            errors: Default::default(),
            fanout_latency: Histogram::new(buckets()),
            write_latency: Histogram::new(buckets()),
            ticks_ingested: AtomicU64::new(0),
            feed_connected: AtomicBool::new(true),
            feed_unknown_symbols: AtomicU64::new(0),
            feed_bad_ticks: AtomicU64::new(0),
            feed_symbols_refused: AtomicU64::new(0),
            symbols: AtomicUsize::new(0),
            ticks_read: AtomicU64::new(0),
            ring_lagged: AtomicU64::new(0),
            feed_gaps: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            conflated: AtomicU64::new(0),
            slow_consumer_closes: AtomicU64::new(0),
            rate_limit_closes: AtomicU64::new(0),
            connection_panics: AtomicU64::new(0),
            sessions_open: AtomicUsize::new(0),
            sessions_total: AtomicU64::new(0),
            peak_outbox_bytes: AtomicUsize::new(0),
            shard_connections: std::sync::OnceLock::new(),
        }
    }
}

impl Stats {
    /// Counts one `error` reply with `code`.
    pub fn count_error(&self, code: ErrorCode) {
        Stats::add(&self.errors[code as usize], 1);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` to `counter` and returns the new total.
    pub fn add_returning(counter: &AtomicU64, n: u64) -> u64 {
        counter.fetch_add(n, Ordering::Relaxed) + n
    }
}
