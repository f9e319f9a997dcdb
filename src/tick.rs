//! `Tick`: the value that travels every stage of the data path.
//!
//! The feed creates ticks, the `ring` stores them as fixed-size words, the
//! `fanout` serializes each one once. A tick names its symbol by
//! [`SymbolId`], an index into the server's [`crate::symbol::Symbols`],
//! and carries its prices as exact [`Price`]s.

use crate::price::Price;
use crate::ring::Record;
pub use crate::symbol::SymbolId;

use std::time::{SystemTime, UNIX_EPOCH};

/// One market-data update for one symbol.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tick {
    /// Which symbol this tick is for.
    pub symbol: SymbolId,
    /// Per-symbol sequence number: the first tick of a symbol has seq 1 and
    /// every following one exactly one more.
    pub seq: u64,
    /// Last trade price.
    pub px: Price,
    /// Best bid.
    pub bid: Price,
    /// Best ask.
    pub ask: Price,
    /// Size of the last trade, in shares.
    pub size: u32,
    /// Producer's wall-clock time when the tick was made, in nanoseconds
    /// since the Unix epoch.
    pub ts: u64,
}

impl Record for Tick {
    const WORDS: usize = 6;

    fn to_words(&self, out: &mut [u64]) {
        out[0] = (u64::from(self.symbol) << 32) | u64::from(self.size);
        out[1] = self.seq;
        out[2] = self.ts;
        out[3] = self.px.units() as u64;
        out[4] = self.bid.units() as u64;
        out[5] = self.ask.units() as u64;
    }

    fn from_words(words: &[u64]) -> Self {
        Tick {
            symbol: (words[0] >> 32) as SymbolId,
            size: words[0] as u32,
            seq: words[1],
            ts: words[2],
            px: from_word(words[3]),
            bid: from_word(words[4]),
            ask: from_word(words[5]),
        }
    }
}

/// The price a ring word holds; only [`Tick::to_words`] writes them, so
/// the units are always within range.
fn from_word(word: u64) -> Price {
    Price::from_units(word as i64).unwrap_or_default()
}

/// Wall-clock time in nanoseconds since the Unix epoch.
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_round_trips_through_ring_words() {
        let tick = Tick {
            symbol: 4_000_000,
            seq: u64::MAX - 3,
            px: "187.25".parse().unwrap(),
            bid: "-0.00000001".parse().unwrap(),
            ask: "9999999999.99999999".parse().unwrap(),
            size: u32::MAX,
            ts: 1_732_250_000_123_456_789,
        };
        let mut words = [0u64; Tick::WORDS];
        tick.to_words(&mut words);
        assert_eq!(Tick::from_words(&words), tick);
    }
}
