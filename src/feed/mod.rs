//! Stage 1 of the data path: where ticks come from.
//!
//! A feed runs on its own thread, writes each tick into the `ring` through
//! the ring's single [`Producer`], and wakes the ring's readers (every
//! shard) with a [`Wake`]. Whatever the source, a feed promises: per-symbol `seq`
//! increases by exactly 1, `ts` is the producer's wall clock in ns, and the
//! producer never waits for consumers (the ring overwrites, readers that
//! fall a whole ring behind are told how much they lost).
//!
//! The built-in source is the [`sim::Simulator`] paced by [`pacer::Pacer`];
//! with `--feed ingest`, an external publisher fills the ring through
//! [`ingest`] instead, and with `--feed nats` ticks come from a NATS
//! server through [`nats`] (the same stream on every node of a cluster).

pub mod external;
pub mod ingest;
pub mod nats;
pub mod pacer;
pub mod sim;
pub mod symbols;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use crate::ring::Producer;
use crate::tick::{now_nanos, Tick};
use pacer::Pacer;
use sim::Simulator;

/// Called after each batch of ticks a feed publishes: wakes every reader
/// of the ring (each shard's event loop). One call per batch, not per
/// tick: a reader drains everything published so far each time it runs.
#[derive(Clone)]
pub struct Wake(Arc<dyn Fn() + Send + Sync>);

impl Wake {
    /// Wakes by calling `wake`.
    pub fn new(wake: impl Fn() + Send + Sync + 'static) -> Self {
        Wake(Arc::new(wake))
    }

    /// Wakes nobody: for a ring whose readers poll it.
    pub fn nobody() -> Self {
        Wake::new(|| {})
    }

    /// Wakes the ring's readers.
    pub fn wake(&self) {
        (self.0)();
    }
}

impl std::fmt::Debug for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wake")
    }
}

/// A running feed thread; stopping it (or dropping the handle) ends the
/// thread promptly, even mid-sleep.
#[derive(Debug)]
pub struct FeedHandle {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FeedHandle {
    /// Stops the feed and waits for its thread to finish.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl Drop for FeedHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the built-in simulator on its own thread at `rate` ticks per
/// second, publishing into `producer` and waking `wake` after each batch.
pub fn spawn_simulator(
    mut simulator: Simulator,
    rate: f64,
    mut producer: Producer<Tick>,
    wake: Wake,
) -> std::io::Result<FeedHandle> {
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = stop.clone();
    let thread = thread::Builder::new()
        .name("tickcast-feed".into())
        .spawn(move || {
            let mut pacer = Pacer::new(rate, Instant::now());
            let mut skipped = 0;
            while !thread_stop.load(Ordering::Acquire) {
                let (now, wall_now) = (Instant::now(), now_nanos());
                let due = pacer.due(now);
                if pacer.skipped() > skipped {
                    // Said when it happens (a rare event: the thread was
                    // not scheduled for over MAX_CATCH_UP), not per tick.
                    tracing::warn!(
                        skipped = pacer.skipped() - skipped,
                        total = pacer.skipped(),
                        "the feed thread stalled and skipped ticks to stay on schedule \
                         (seq stays contiguous; the rate dipped); give the server more CPU"
                    );
                    skipped = pacer.skipped();
                }
                // Each tick is stamped with the time it was due, so a late
                // wake-up of this thread counts in the latency clients see.
                let first = pacer.released() - due;
                for index in first..first + due {
                    let late = now.saturating_duration_since(pacer.due_at(index));
                    let ts = wall_now.saturating_sub(late.as_nanos() as u64);
                    producer.publish(simulator.next_tick(ts));
                }
                if due > 0 {
                    // One wake-up per batch: the fan-out drains everything
                    // published so far each time it runs.
                    wake.wake();
                }
                let deadline = pacer.next_deadline();
                let now = Instant::now();
                if deadline > now {
                    thread::park_timeout(deadline - now);
                }
            }
        })?;
    Ok(FeedHandle {
        stop,
        thread: Some(thread),
    })
}
