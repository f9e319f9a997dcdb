//! `SubscriberIndex`: symbol → the connections (keys of one shard)
//! subscribed to it.
//!
//! A tick costs work in proportion to its own subscribers: the fan-out
//! looks up the tick's symbol and walks that list plus the list of `*`
//! subscribers, never all connections. Lists are plain vectors of 4-byte
//! keys: iteration is over contiguous memory, a subscription costs four
//! bytes, and removal (rare beside ticks) is a scan of one symbol's list
//! and a `swap_remove`.
//!
//! The index only routes: what each connection is subscribed to is kept
//! once, by the connection (`session::Subscriptions`), which says what to
//! add and remove here. Owned by one shard: no lock on the per-tick path.

use crate::tick::SymbolId;

/// A connection's key in its shard (its slot in the shard's tables).
pub type Key = usize;

/// See the module docs.
#[derive(Debug)]
pub struct SubscriberIndex {
    by_symbol: Vec<Vec<u32>>,
    all: Vec<u32>,
    /// (connection, symbol) pairs, a `*` counting every symbol.
    subscriptions: usize,
}

impl SubscriberIndex {
    /// An empty index over `symbol_count` symbols.
    pub fn new(symbol_count: usize) -> Self {
        SubscriberIndex {
            by_symbol: (0..symbol_count).map(|_| Vec::new()).collect(),
            all: Vec::new(),
            subscriptions: 0,
        }
    }

    /// Makes room for `symbol_count` symbols; `*` subscribers have the
    /// new ones too.
    pub fn grow(&mut self, symbol_count: usize) {
        let added = symbol_count.saturating_sub(self.by_symbol.len());
        self.by_symbol
            .resize_with(symbol_count.max(self.by_symbol.len()), Vec::new);
        self.subscriptions += added * self.all.len();
    }

    /// (connection, symbol) subscriptions, a `*` counting every symbol.
    pub fn subscriptions(&self) -> usize {
        self.subscriptions
    }

    /// Subscribes `key` to every symbol.
    pub fn subscribe_all(&mut self, key: Key) {
        // A second `*` asks again: the one list a connection can be asked
        // into twice.
        if !self.all.iter().any(|&k| k as Key == key) && insert(&mut self.all, key) {
            self.subscriptions += self.by_symbol.len();
        }
    }

    /// Ends `key`'s `*` subscription.
    pub fn unsubscribe_all(&mut self, key: Key) {
        if remove(&mut self.all, key) {
            self.subscriptions -= self.by_symbol.len();
        }
    }

    /// Subscribes `key` to `symbols` by name.
    pub fn subscribe(&mut self, key: Key, symbols: &[SymbolId]) {
        for &symbol in symbols {
            if let Some(list) = self.by_symbol.get_mut(symbol as usize) {
                if insert(list, key) {
                    self.subscriptions += 1;
                }
            }
        }
    }

    /// Unsubscribes `key` from `symbols` it named.
    pub fn unsubscribe(&mut self, key: Key, symbols: impl IntoIterator<Item = SymbolId>) {
        for symbol in symbols {
            if let Some(list) = self.by_symbol.get_mut(symbol as usize) {
                if remove(list, key) {
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
            .map(|&key| key as Key)
    }

    /// The connections that named `symbol` (not the `*` subscribers).
    pub fn named_subscribers(&self, symbol: SymbolId) -> impl Iterator<Item = Key> + '_ {
        self.by_symbol[symbol as usize]
            .iter()
            .map(|&key| key as Key)
    }

    /// The `*` subscribers.
    pub fn all_subscribers(&self) -> impl Iterator<Item = Key> + '_ {
        self.all.iter().map(|&key| key as Key)
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

/// Adds `key` to `list`. The connection's own record of its subscriptions
/// (`session::Subscriptions`) asks only for what it does not have, so this
/// does not look for it first (that would make a subscribe cost a scan of
/// every symbol's list).
fn insert(list: &mut Vec<u32>, key: Key) -> bool {
    let key = u32::try_from(key).expect("a shard holds fewer than 2^32 connections");
    debug_assert!(!list.contains(&key), "subscribed twice");
    list.push(key);
    true
}

/// Takes `key` out of `list`; whether it was there. An emptied list gives
/// its memory back.
fn remove(list: &mut Vec<u32>, key: Key) -> bool {
    let Some(at) = list.iter().position(|&k| k as Key == key) else {
        return false;
    };
    list.swap_remove(at);
    if list.is_empty() {
        *list = Vec::new();
    }
    true
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
        index.subscribe(2, &[1]);
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
