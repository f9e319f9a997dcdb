//! Criterion benchmarks for `ring`, with `tokio::sync::broadcast` measured
//! in the same run as the baseline.
//!
//! * `publish`: cost of one `Producer::publish` with no readers.
//! * `publish_read`: one publish then one `Cursor::try_read` on one thread.
//! * `spmc_ring/N`, `spmc_tokio/N`: one producer thread publishes
//!   `RECORDS` `u64`s while N reader threads poll (`try_read` / `try_recv`)
//!   until they have moved past all of them, by reading or by lagging.
//!   Throughput is records published per second. Reader threads are spawned
//!   before the clock starts and joined before it stops.
//!
//! Both sides use the same capacity and the same back-off when empty. The
//! threaded runs use a ring that holds a whole run, so every reader reads
//! every record. The share of records skipped as lagged is printed after
//! each threaded benchmark to confirm it stays at zero: a reader that lags
//! does less work, and the comparison would no longer be fair.
//!
//! Run with `cargo bench --bench ring`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tickcast::ring::{self, Read};
use tokio::sync::broadcast::{self, error::TryRecvError};

/// Ring capacity for the single-thread benchmarks, in records.
const CAPACITY: usize = 1024;
/// Records published per threaded run.
const RECORDS: u64 = 100_000;
/// Capacity for the threaded benchmarks: large enough to hold every record
/// of a run, so no reader can lag and each one reads all `RECORDS`. With a
/// small ring, the producer (a few ns per record) laps the readers and most
/// records are skipped as lagged, which measures the producer alone.
const THREADED_CAPACITY: usize = RECORDS.next_power_of_two() as usize;
/// Reader thread counts for the threaded benchmarks.
const READERS: [usize; 3] = [1, 2, 4];

/// Polling back-off shared by both implementations: spin briefly, then give
/// the core away. With more threads than cores, pure spinning would starve
/// the producer.
struct Backoff(u32);

impl Backoff {
    fn reset(&mut self) {
        self.0 = 0;
    }

    fn snooze(&mut self) {
        if self.0 < 64 {
            std::hint::spin_loop();
            self.0 += 1;
        } else {
            thread::yield_now();
        }
    }
}

/// Items and lagged positions seen by readers across all runs of one
/// benchmark.
#[derive(Default)]
struct Seen {
    items: AtomicU64,
    lagged: AtomicU64,
}

impl Seen {
    fn add(&self, items: u64, lagged: u64) {
        self.items.fetch_add(items, Ordering::Relaxed);
        self.lagged.fetch_add(lagged, Ordering::Relaxed);
    }

    fn report(&self, name: &str) {
        let items = self.items.load(Ordering::Relaxed);
        let lagged = self.lagged.load(Ordering::Relaxed);
        let total = (items + lagged).max(1);
        eprintln!(
            "{name}: readers skipped {:.1}% of records as lagged",
            100.0 * lagged as f64 / total as f64
        );
    }
}

/// One threaded run of the ring. Returns the time from release of the
/// readers to the last reader finishing.
fn ring_run(readers: usize, seen: &Seen) -> Duration {
    let mut producer = ring::channel::<u64>(THREADED_CAPACITY);
    let start = Barrier::new(readers + 1);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..readers)
            .map(|_| {
                let mut cursor = producer.cursor();
                let start = &start;
                scope.spawn(move || {
                    let (mut items, mut lagged) = (0, 0);
                    let mut backoff = Backoff(0);
                    start.wait();
                    while cursor.position() < RECORDS {
                        match cursor.try_read() {
                            Read::Item(value) => {
                                black_box(value);
                                items += 1;
                                backoff.reset();
                            }
                            Read::Lagged(n) => lagged += n,
                            Read::Empty => backoff.snooze(),
                        }
                    }
                    seen.add(items, lagged);
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        for value in 0..RECORDS {
            producer.publish(value);
        }
        for handle in handles {
            handle.join().expect("reader panicked");
        }
        began.elapsed()
    })
}

/// One threaded run of `tokio::sync::broadcast`, shaped like `ring_run`.
fn tokio_run(readers: usize, seen: &Seen) -> Duration {
    let (sender, _) = broadcast::channel::<u64>(THREADED_CAPACITY);
    let start = Barrier::new(readers + 1);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..readers)
            .map(|_| {
                let mut receiver = sender.subscribe();
                let start = &start;
                scope.spawn(move || {
                    let (mut items, mut lagged) = (0, 0);
                    let mut backoff = Backoff(0);
                    start.wait();
                    while items + lagged < RECORDS {
                        match receiver.try_recv() {
                            Ok(value) => {
                                black_box(value);
                                items += 1;
                                backoff.reset();
                            }
                            Err(TryRecvError::Lagged(n)) => lagged += n,
                            Err(TryRecvError::Empty) => backoff.snooze(),
                            Err(TryRecvError::Closed) => break,
                        }
                    }
                    seen.add(items, lagged);
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        for value in 0..RECORDS {
            // Fails only when there are no receivers, which cannot happen
            // here: they are all alive until joined.
            sender.send(value).expect("receivers are alive");
        }
        for handle in handles {
            handle.join().expect("reader panicked");
        }
        began.elapsed()
    })
}

fn bench_ring(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20);

    group.throughput(Throughput::Elements(1));
    group.bench_function("publish", |b| {
        let mut producer = ring::channel::<u64>(CAPACITY);
        let mut value = 0u64;
        b.iter(|| {
            value = value.wrapping_add(1);
            producer.publish(black_box(value))
        });
    });
    group.bench_function("publish_read", |b| {
        let mut producer = ring::channel::<u64>(CAPACITY);
        let mut cursor = producer.cursor();
        let mut value = 0u64;
        b.iter(|| {
            value = value.wrapping_add(1);
            producer.publish(black_box(value));
            cursor.try_read()
        });
    });

    group.throughput(Throughput::Elements(RECORDS));
    for readers in READERS {
        let seen = Seen::default();
        group.bench_with_input(BenchmarkId::new("spmc_ring", readers), &readers, |b, &n| {
            b.iter_custom(|iters| (0..iters).map(|_| ring_run(n, &seen)).sum());
        });
        seen.report(&format!("ring/spmc_ring/{readers}"));
        let seen = Seen::default();
        group.bench_with_input(
            BenchmarkId::new("spmc_tokio", readers),
            &readers,
            |b, &n| {
                b.iter_custom(|iters| (0..iters).map(|_| tokio_run(n, &seen)).sum());
            },
        );
        seen.report(&format!("ring/spmc_tokio/{readers}"));
    }
    group.finish();
}

criterion_group!(benches, bench_ring);
criterion_main!(benches);
