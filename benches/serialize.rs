//! Cost of turning one tick into a WebSocket frame: tickcast's hand-written
//! encoder (`fanout::encode::tick_frame`, run once per tick) beside the
//! naive path a per-connection server runs for every recipient (serde_json
//! of a derived struct, then a frame around the string).
//!
//! Both run over the same realistic ticks from the built-in simulator, so
//! the ratio of the two medians is what "serialize once" saves per
//! recipient.

mod naive;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

use tickcast::fanout::encode::{tick_frame, TickKind};
use tickcast::feed::sim::Simulator;
use tickcast::feed::symbols::{universe, SymbolSpec};
use tickcast::tick::Tick;
use tickcast::wire::frame::text_frame;

/// Distinct ticks cycled through, so branch predictors and caches see
/// varied symbols, prices and sizes rather than one repeated value.
const TICKS: usize = 4096;

/// The naive path: serialize to a `String`, then copy it into a frame.
fn naive_frame(name: &str, tick: &Tick) -> bytes::Bytes {
    let json = naive::tick_json(name, tick);
    text_frame(json.as_bytes())
}

fn ticks(specs: &[SymbolSpec]) -> Vec<Tick> {
    let mut sim = Simulator::new(specs, 1000.0, 7);
    (0..TICKS as u64)
        .map(|i| sim.next_tick(1_732_250_000_000_000_000 + i * 1_000_000))
        .collect()
}

fn serialize(c: &mut Criterion) {
    let specs = universe(100);
    let ticks = ticks(&specs);
    let name = |tick: &Tick| specs[tick.symbol as usize].name.as_str();

    // The same message, or the comparison means nothing: the same text,
    // but for whole-dollar prices, which tickcast writes as their
    // shortest decimal (`386`) and serde_json's float as `386.0`.
    for tick in &ticks[..64] {
        let (ours, naive) = (
            tick_frame(TickKind::Tick, name(tick), tick),
            naive_frame(name(tick), tick),
        );
        assert!(ours[1] < 126 && naive[1] < 126, "short frames");
        assert_eq!(
            std::str::from_utf8(&ours[2..]).unwrap(),
            std::str::from_utf8(&naive[2..])
                .unwrap()
                .replace(".0,", ",")
        );
    }

    let mut group = c.benchmark_group("serialize");
    group.throughput(Throughput::Elements(1));

    let mut i = 0;
    group.bench_function("tick_frame", |b| {
        b.iter(|| {
            let tick = &ticks[i % TICKS];
            i += 1;
            black_box(tick_frame(TickKind::Tick, name(tick), black_box(tick)))
        })
    });

    let mut i = 0;
    group.bench_function("serde_json_naive", |b| {
        b.iter(|| {
            let tick = &ticks[i % TICKS];
            i += 1;
            black_box(naive_frame(name(tick), black_box(tick)))
        })
    });

    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = serialize
}
criterion_main!(benches);
