//! `SubscriberIndex`: symbol → the connections (keys of one shard)
//! subscribed to it.
//!
//! A tick costs work in proportion to its own subscribers: the fan-out
//! looks up the tick's symbol and walks that list plus the list of `*`
//! subscribers, never all connections. Lists are `IndexSet`s so iteration
//! is over contiguous memory and removal is O(1) (`swap_remove`).
//!
//! The index only routes: what each connection is subscribed to is kept
//! once, by the connection (`session::Subscriptions`), which says what to
//! add and remove here. Owned by one shard: no lock on the per-tick path.

use indexmap::IndexSet;

use crate::tick::SymbolId;

/// A connection's key in its shard (its slot in the shard's tables).
pub type Key = usize;

/// See the module docs.
#[derive(Debug)]
pub struct SubscriberIndex {
    by_symbol: Vec<IndexSet<Key>>,
    all: IndexSet<Key>,
    /// (connection, symbol) pairs, a `*` counting every symbol.
    subscriptions: usize,
}

impl SubscriberIndex {
    /// An empty index over `symbol_count` symbols.
    pub fn new(symbol_count: usize) -> Self {
        SubscriberIndex {
            by_symbol: (0..symbol_count).map(|_| IndexSet::new()).collect(),
            all: IndexSet::new(),
            subscriptions: 0,
        }
    }

    /// Makes room for `symbol_count` symbols; `*` subscribers have the
    /// new ones too.
    pub fn grow(&mut self, symbol_count: usize) {
        let added = symbol_count.saturating_sub(self.by_symbol.len());
        self.by_symbol
            .resize_with(symbol_count.max(self.by_symbol.len()), IndexSet::new);
        self.subscriptions += added * self.all.len();
    }

    /// (connection, symbol) subscriptions, a `*` counting every symbol.
    pub fn subscriptions(&self) -> usize {
        self.subscriptions
    }

    /// Subscribes `key` to every symbol.
    pub fn subscribe_all(&mut self, key: Key) {
        if self.all.insert(key) {
            self.subscriptions += self.by_symbol.len();
        }
    }

    /// Ends `key`'s `*` subscription.
    pub fn unsubscribe_all(&mut self, key: Key) {
        if self.all.swap_remove(&key) {
            self.subscriptions -= self.by_symbol.len();
        }
    }

    /// Subscribes `key` to `symbols` by name.
    pub fn subscribe(&mut self, key: Key, symbols: &[SymbolId]) {
        for &symbol in symbols {
            if let Some(list) = self.by_symbol.get_mut(symbol as usize) {
                if list.insert(key) {
                    self.subscriptions += 1;
                }
            }
        }
    }

    /// Unsubscribes `key` from `symbols` it named.
    pub fn unsubscribe(&mut self, key: Key, symbols: impl IntoIterator<Item = SymbolId>) {
        for symbol in symbols {
            if let Some(list) = self.by_symbol.get_mut(symbol as usize) {
                if list.swap_remove(&key) {
                    self.subscriptions -= 1;
                }
            }
        }
    }

    /// Every connection subscribed to `symbol`, `*` subscribers included.
    pub fn subscribers(&self, symbol: SymbolId) -> impl Iterator<Item = Key> + '_ {
        self.by_symbol[symbol as usize]
            .iter()
            .chain(self.all.iter())
            .copied()
    }

    /// The connections that named `symbol` (not the `*` subscribers).
    pub fn named_subscribers(&self, symbol: SymbolId) -> impl Iterator<Item = Key> + '_ {
        self.by_symbol[symbol as usize].iter().copied()
    }

    /// The `*` subscribers.
    pub fn all_subscribers(&self) -> impl Iterator<Item = Key> + '_ {
        self.all.iter().copied()
    }

    /// How many connections are subscribed to `*`.
    pub fn all_count(&self) -> usize {
        self.all.len()
    }

    /// Whether anyone is subscribed to `symbol`.
    pub fn has_subscribers(&self, symbol: SymbolId) -> bool {
        !self.all.is_empty() || !self.by_symbol[symbol as usize].is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(index: &SubscriberIndex, symbol: SymbolId) -> usize {
        index.subscribers(symbol).count()
    }

    #[test]
    fn routes_by_symbol_and_star_without_duplicates() {
        let mut index = SubscriberIndex::new(3);
        index.subscribe(1, &[0, 1]);
        index.subscribe(2, &[1, 1]);
        assert_eq!(
            (count(&index, 0), count(&index, 1), count(&index, 2)),
            (1, 2, 0)
        );
        assert_eq!(index.subscriptions(), 3);
        index.unsubscribe(2, [1]);
        index.subscribe_all(2);
        assert_eq!(
            (count(&index, 0), count(&index, 1), count(&index, 2)),
            (2, 2, 1)
        );
        assert_eq!(index.subscriptions(), 5);
        index.unsubscribe(1, [0, 1]);
        index.unsubscribe_all(2);
        assert_eq!(
            (count(&index, 0), count(&index, 1), count(&index, 2)),
            (0, 0, 0)
        );
        assert!(!index.has_subscribers(0));
        assert_eq!(index.subscriptions(), 0);
    }

    #[test]
    fn star_subscribers_have_symbols_met_later() {
        let mut index = SubscriberIndex::new(1);
        index.subscribe_all(1);
        index.subscribe(2, &[0]);
        index.grow(3);
        assert_eq!((count(&index, 1), count(&index, 2)), (1, 1));
        assert_eq!(index.named_subscribers(2).count(), 0);
        assert_eq!(index.subscriptions(), 3 + 1);
        index.unsubscribe_all(1);
        index.unsubscribe(2, [0]);
        assert_eq!(index.subscriptions(), 0);
    }
}
