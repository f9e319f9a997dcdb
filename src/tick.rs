//! `Tick`: the value that travels every stage of the data path.
//!
//! The feed creates ticks, the `ring` stores them as fixed-size words, the
//! `fanout` serializes each one once. A tick names its symbol by
//! [`SymbolId`], an index into the server's [`SymbolTable`].

use std::collections::HashMap;
use std::sync::Arc;

use crate::ring::Record;

/// Whether a tick's prices (last, bid, ask) are ones a feed may publish:
/// finite and non-negative. External feeds refuse a tick that fails this.
pub fn prices_are_valid(prices: [f64; 3]) -> bool {
    prices.iter().all(|p| p.is_finite() && *p >= 0.0)
}

/// Index of a symbol in the [`SymbolTable`]; dense, starting at 0.
pub type SymbolId = u32;

/// One market-data update for one symbol.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tick {
    /// Which symbol this tick is for.
    pub symbol: SymbolId,
    /// Per-symbol sequence number: the first tick of a symbol has seq 1 and
    /// every following one exactly one more.
    pub seq: u64,
    /// Last trade price.
    pub px: f64,
    /// Best bid.
    pub bid: f64,
    /// Best ask.
    pub ask: f64,
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
        out[3] = self.px.to_bits();
        out[4] = self.bid.to_bits();
        out[5] = self.ask.to_bits();
    }

    fn from_words(words: &[u64]) -> Self {
        Tick {
            symbol: (words[0] >> 32) as SymbolId,
            size: words[0] as u32,
            seq: words[1],
            ts: words[2],
            px: f64::from_bits(words[3]),
            bid: f64::from_bits(words[4]),
            ask: f64::from_bits(words[5]),
        }
    }
}

/// The fixed set of symbols a server carries, in [`SymbolId`] order.
///
/// Built once at start-up and shared read-only, so name lookups on the
/// subscribe path take no lock.
#[derive(Debug)]
pub struct SymbolTable {
    names: Vec<Arc<str>>,
    by_name: HashMap<Arc<str>, SymbolId>,
}

impl SymbolTable {
    /// Builds a table from distinct names; their order gives the ids.
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        let names: Vec<Arc<str>> = names.into_iter().map(Arc::from).collect();
        let by_name = names
            .iter()
            .enumerate()
            .map(|(id, name)| (name.clone(), id as SymbolId))
            .collect::<HashMap<_, _>>();
        assert_eq!(by_name.len(), names.len(), "symbol names must be distinct");
        SymbolTable { names, by_name }
    }

    /// The id of `name`, if the server carries it.
    pub fn id(&self, name: &str) -> Option<SymbolId> {
        self.by_name.get(name).copied()
    }

    /// The name of symbol `id`. Panics on an id not from this table.
    pub fn name(&self, id: SymbolId) -> &str {
        &self.names[id as usize]
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when the table has no symbols.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// All ids, in order.
    pub fn ids(&self) -> impl Iterator<Item = SymbolId> {
        0..self.names.len() as SymbolId
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_round_trips_through_ring_words() {
        let tick = Tick {
            symbol: 4_000_000,
            seq: u64::MAX - 3,
            px: 187.25,
            bid: 187.24,
            ask: 187.26,
            size: u32::MAX,
            ts: 1_732_250_000_123_456_789,
        };
        let mut words = [0u64; Tick::WORDS];
        tick.to_words(&mut words);
        assert_eq!(Tick::from_words(&words), tick);
    }

    #[test]
    fn symbol_table_maps_both_ways() {
        let table = SymbolTable::new(["AAPL".to_string(), "MSFT".to_string()]);
        assert_eq!(table.id("MSFT"), Some(1));
        assert_eq!(table.name(0), "AAPL");
        assert_eq!(table.id("TSLA"), None);
        assert_eq!(table.len(), 2);
    }
}
