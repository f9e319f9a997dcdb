//! Cost of delivering one tick to n subscribers in process, per recipient:
//! tickcast's `Fanout::dispatch` (encode once, push the shared frame to
//! every subscriber's outbox and list the outbox in the shard's
//! `Outboxes` to be written) beside a naive per-connection server (a
//! `tokio::sync::broadcast` channel whose every receiver serializes its
//! own JSON with serde_json and frames it).
//!
//! `dispatch_throttled` is the same with every subscriber on `max_hz`:
//! throttled subscribers are served by their lane's clock, so a tick they
//! skip costs them nothing.
//!
//! Criterion prints time per tick and, with `Throughput::Elements(n)`,
//! recipients per second; ns per recipient is the time divided by n.
//! Outboxes are drained outside the measured time, as the shard's writer
//! would after the pass (every listed outbox taken, the list reset), so
//! their queues stay short; their byte limit is far above what one tick
//! queues, so nothing conflates.

mod naive;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio::sync::broadcast;

use tickcast::config::Config;
use tickcast::fanout::outbox::{Outbox, OutboxLimits};
use tickcast::fanout::{Fanout, Outboxes, Subscribe};
use tickcast::feed::sim::Simulator;
use tickcast::feed::symbols::universe;
use tickcast::stats::Stats;
use tickcast::symbol::Symbols;
use tickcast::tick::Tick;
use tickcast::wire::frame::text_frame;

/// Subscriber counts measured.
const RECIPIENTS: [usize; 3] = [1_000, 10_000, 100_000];

/// The naive baseline stops here: at 100,000 receivers one iteration costs
/// tens of milliseconds and the per-recipient figure no longer changes, so
/// it would only make the run long.
const BASELINE_MAX_RECIPIENTS: usize = 10_000;

/// Distinct ticks cycled through (all moved onto symbol 0, which every
/// subscriber follows).
const TICKS: usize = 1024;

fn ticks() -> (Vec<Tick>, Arc<Symbols>) {
    let specs = universe(100);
    let mut sim = Simulator::new(&specs, 1000.0, 7);
    let ticks = (0..TICKS as u64)
        .map(|i| Tick {
            symbol: 0,
            ..sim.next_tick(1_732_250_000_000_000_000 + i * 1_000_000)
        })
        .collect();
    let table = Arc::new(
        Symbols::fixed(specs.into_iter().map(|s| (s.name, s.decimals))).expect("distinct tickers"),
    );
    (ticks, table)
}

/// A fan-out with `n` connections subscribed to symbol 0 (throttled to
/// one update per `interval`, if given), and their outboxes (keys 0 to
/// n - 1), their `subscribed` replies already drained.
fn fanout_with(n: usize, symbols: &Arc<Symbols>, interval: Option<Duration>) -> (Fanout, Outboxes) {
    let stats = Arc::new(Stats::default());
    let mut fanout = Fanout::new(
        symbols.clone(),
        Config::defaults().history_depth as usize,
        stats.clone(),
    );
    let limits = OutboxLimits {
        // Far above one tick frame: nothing conflates between drains.
        max_bytes: 1 << 30,
        slow_consumer_timeout: Duration::from_secs(3600),
        write_timeout: Duration::from_secs(3600),
    };
    let mut outboxes = Outboxes::new(limits, stats);
    for key in 0..n {
        outboxes.insert(key, Outbox::new());
        fanout.subscribe(
            key,
            Subscribe {
                added: vec![0],
                interval,
                known: symbols.len(),
                ..Default::default()
            },
            &mut outboxes,
        );
    }
    drain(&mut outboxes, &mut Drained::default());
    (fanout, outboxes)
}

/// Buffers reused by [`drain`].
#[derive(Default)]
struct Drained {
    pushed: Vec<usize>,
    batch: VecDeque<Bytes>,
}

/// Empties every outbox pushed to since the last drain, as the shard's
/// writer would, and resets the list of pushed keys.
fn drain(outboxes: &mut Outboxes, bufs: &mut Drained) {
    outboxes.take_pushed(&mut bufs.pushed);
    for &key in &bufs.pushed {
        let outbox = outboxes.get_mut(key).expect("every key has an outbox");
        outbox.take(&mut bufs.batch);
        bufs.batch.clear();
    }
    // Taking lists the keys again: start the next tick from none.
    outboxes.take_pushed(&mut bufs.pushed);
}

fn fanout(c: &mut Criterion) {
    let (ticks, symbols) = ticks();
    let mut group = c.benchmark_group("fanout");

    for n in RECIPIENTS {
        group.throughput(Throughput::Elements(n as u64));

        // Every subscriber gets every tick; then the same subscribers
        // throttled with `max_hz` (4 updates/s): the ticks they skip must
        // cost nothing per subscriber.
        for (name, interval) in [
            ("dispatch", None),
            ("dispatch_throttled", Some(Duration::from_millis(250))),
        ] {
            let (mut fanout, mut outboxes) = fanout_with(n, &symbols, interval);
            let mut bufs = Drained::default();
            let mut i = 0;
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter_custom(|iters| {
                    let mut measured = Duration::ZERO;
                    for _ in 0..iters {
                        let tick = &ticks[i % TICKS];
                        i += 1;
                        let start = Instant::now();
                        black_box(fanout.dispatch(black_box(tick), start, &mut outboxes));
                        outboxes.seal_pass();
                        measured += start.elapsed();
                        drain(&mut outboxes, &mut bufs);
                    }
                    measured
                })
            });
        }

        if n > BASELINE_MAX_RECIPIENTS {
            continue;
        }
        let (sender, _) = broadcast::channel::<Tick>(16);
        let mut receivers: Vec<_> = (0..n).map(|_| sender.subscribe()).collect();
        let name = &*symbols.name(0);
        let mut i = 0;
        group.bench_with_input(BenchmarkId::new("broadcast_serde_naive", n), &n, |b, _| {
            b.iter(|| {
                let tick = ticks[i % TICKS];
                i += 1;
                sender.send(tick).expect("receivers are alive");
                for receiver in &mut receivers {
                    let tick = receiver.try_recv().expect("one tick per receiver");
                    let json = naive::tick_json(name, &tick);
                    black_box(text_frame(json.as_bytes()));
                }
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = fanout
}
criterion_main!(benches);
