//! The price model: a seeded geometric Brownian motion per symbol, with a
//! bid/ask spread around the mid and a trade size. The built-in feed and
//! `feed-sim publish` both run this one model, so the same seed gives the
//! same tick stream wherever it runs.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::feed::symbols::SymbolSpec;
use crate::price::Price;
use crate::tick::{SymbolId, Tick};

/// Seconds of trading in a year: 252 days of 6.5 hours.
const TRADING_SECONDS_PER_YEAR: f64 = 252.0 * 6.5 * 3600.0;

/// Market seconds simulated per second of feed time, so that a dashboard
/// shows visible movement within seconds rather than minutes.
const TIME_ACCELERATION: f64 = 30.0;

/// Per-symbol state of the random walk.
#[derive(Clone, Debug)]
struct Walk {
    /// Current mid price (unrounded).
    mid: f64,
    /// Decimals of the symbol's tick size (2: cents).
    decimals: u8,
    /// The tick size in dollars, `10^-decimals`.
    increment: f64,
    /// Standard deviation of the log-return over one feed second.
    vol_per_sqrt_second: f64,
    /// Feed time of this symbol's last tick, in seconds.
    last_time: f64,
    /// Seq of the last tick produced; 0 before the first.
    seq: u64,
}

/// Produces a deterministic stream of ticks for a fixed set of symbols.
///
/// Determinism: the stream (symbols, seqs, prices, sizes) depends only on
/// the symbol specs, the rate and the seed, never on wall-clock timing;
/// `ts` is the only field taken from the caller.
#[derive(Clone, Debug)]
pub struct Simulator {
    rng: StdRng,
    walks: Vec<Walk>,
    /// Feed time advanced per tick: 1 / total ticks per second.
    seconds_per_tick: f64,
    /// Feed time of the next tick, in seconds since the start.
    now: f64,
}

impl Simulator {
    /// A simulator for `symbols` producing `rate` ticks per second in total.
    pub fn new(symbols: &[SymbolSpec], rate: f64, seed: u64) -> Self {
        assert!(
            !symbols.is_empty(),
            "the simulator needs at least one symbol"
        );
        assert!(
            rate.is_finite() && rate > 0.0,
            "the tick rate must be positive"
        );
        let mut rng = StdRng::seed_from_u64(seed);
        let walks = symbols
            .iter()
            .map(|spec| {
                let annual_vol: f64 = rng.random_range(0.15..0.60);
                Walk {
                    mid: spec.start_price,
                    decimals: spec.decimals,
                    increment: 10f64.powi(-i32::from(spec.decimals)),
                    vol_per_sqrt_second: annual_vol
                        * (TIME_ACCELERATION / TRADING_SECONDS_PER_YEAR).sqrt(),
                    last_time: 0.0,
                    seq: 0,
                }
            })
            .collect();
        Simulator {
            rng,
            walks,
            seconds_per_tick: 1.0 / rate,
            now: 0.0,
        }
    }

    /// Number of symbols this simulator moves.
    pub fn symbol_count(&self) -> usize {
        self.walks.len()
    }

    /// Makes `symbol`'s next tick carry `seq + 1`, for a simulator that
    /// carries on where an earlier one stopped.
    pub fn continue_after(&mut self, symbol: usize, seq: u64) {
        if let Some(walk) = self.walks.get_mut(symbol) {
            walk.seq = walk.seq.max(seq);
        }
    }

    /// The next tick, stamped with `ts` (wall-clock ns since the epoch).
    pub fn next_tick(&mut self, ts: u64) -> Tick {
        let symbol = self.rng.random_range(0..self.walks.len());
        let z: f64 = self.rng.sample(StandardNormal);
        let hit_bid: bool = self.rng.random();
        let size = self.trade_size();

        let walk = &mut self.walks[symbol];
        let dt = (self.now - walk.last_time).max(self.seconds_per_tick);
        walk.last_time = self.now;
        self.now += self.seconds_per_tick;

        // Driftless GBM step: ln(S') = ln(S) - σ²dt/2 + σ√dt·z.
        let sigma = walk.vol_per_sqrt_second;
        walk.mid *= (-0.5 * sigma * sigma * dt + sigma * dt.sqrt() * z).exp();
        walk.mid = walk.mid.max(walk.increment);
        walk.seq += 1;

        // Spread of about 2 basis points, at least one increment; prices
        // are whole increments, held exactly.
        let spread_increments = (walk.mid * 0.0002 / walk.increment).round().max(1.0);
        let bid_increments = ((walk.mid / walk.increment) - spread_increments / 2.0)
            .floor()
            .max(1.0);
        let at = |increments: f64| {
            Price::from_scaled(increments as i64, walk.decimals).unwrap_or(Price::ZERO)
        };
        let bid = at(bid_increments);
        let ask = at(bid_increments + spread_increments);
        let px = if hit_bid { bid } else { ask };

        Tick {
            symbol: symbol as SymbolId,
            seq: walk.seq,
            px,
            bid,
            ask,
            size,
            ts,
        }
    }

    /// Mostly round lots of 100 shares (smaller lots more often), with
    /// one trade in ten an odd lot.
    fn trade_size(&mut self) -> u32 {
        if self.rng.random_ratio(1, 10) {
            self.rng.random_range(1..100)
        } else {
            let lots = 1 + (self.rng.random::<f64>().powi(3) * 50.0) as u32;
            lots * 100
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::symbols::universe;

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let specs = universe(20);
        let run = |seed| {
            let mut sim = Simulator::new(&specs, 1000.0, seed);
            (0..500).map(|i| sim.next_tick(i)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn seq_counts_up_by_one_per_symbol_and_quotes_are_sane() {
        let specs = universe(10);
        let mut sim = Simulator::new(&specs, 1000.0, 1);
        let mut last_seq = vec![0u64; specs.len()];
        for i in 0..20_000 {
            let t = sim.next_tick(i);
            let s = t.symbol as usize;
            assert_eq!(t.seq, last_seq[s] + 1);
            last_seq[s] = t.seq;
            assert!(t.bid > Price::ZERO && t.bid < t.ask, "{t:?}");
            assert!(t.px == t.bid || t.px == t.ask, "{t:?}");
            assert!(t.size > 0);
            // Every price is whole cents, the tick size of US equities.
            for price in [t.px, t.bid, t.ask] {
                assert!(price.fits(specs[s].decimals), "{t:?}");
            }
        }
        assert!(last_seq.iter().all(|&n| n > 1000), "every symbol trades");
    }

    #[test]
    fn prices_wander_but_stay_plausible() {
        let specs = universe(1);
        let mut sim = Simulator::new(&specs, 1000.0, 3);
        let prices: Vec<f64> = (0..10_000).map(|i| sim.next_tick(i).px.to_f64()).collect();
        let distinct = prices
            .iter()
            .map(|p| (p * 100.0).round() as i64)
            .collect::<std::collections::HashSet<_>>();
        assert!(distinct.len() > 20, "the price moves");
        let start = specs[0].start_price;
        assert!(prices.iter().all(|p| (p / start - 1.0).abs() < 0.2));
    }
}
