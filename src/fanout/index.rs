//! `SubscriberIndex`: symbol → the outboxes subscribed to it.
//!
//! A tick costs work in proportion to its own subscribers: the fan-out
//! looks up the tick's symbol and walks that list plus the list of `*`
//! subscribers, never all connections. Lists are `IndexMap`s so iteration
//! is over contiguous memory and removal is O(1) (`swap_remove`).
//!
//! Owned by the fan-out task alone: no lock on the per-tick path.

use std::collections::HashSet;
use std::sync::Arc;

use indexmap::IndexMap;

use super::ConnId;
use crate::session::outbox::Outbox;
use crate::tick::SymbolId;

/// One connection as the index knows it.
#[derive(Debug)]
struct Member {
    outbox: Arc<Outbox>,
    /// Subscribed to `*` (then it is in `all` and no per-symbol list).
    all: bool,
    /// Its per-symbol subscriptions when not `all`.
    symbols: HashSet<SymbolId>,
}

/// See the module docs.
#[derive(Debug)]
pub struct SubscriberIndex {
    by_symbol: Vec<IndexMap<ConnId, Arc<Outbox>>>,
    all: IndexMap<ConnId, Arc<Outbox>>,
    members: IndexMap<ConnId, Member>,
    /// (connection, symbol) pairs, a `*` counting every symbol.
    subscriptions: usize,
}

impl SubscriberIndex {
    /// An empty index over `symbol_count` symbols.
    pub fn new(symbol_count: usize) -> Self {
        SubscriberIndex {
            by_symbol: (0..symbol_count).map(|_| IndexMap::new()).collect(),
            all: IndexMap::new(),
            members: IndexMap::new(),
            subscriptions: 0,
        }
    }

    /// Makes room for `symbol_count` symbols; `*` subscribers have the
    /// new ones too.
    pub fn grow(&mut self, symbol_count: usize) {
        let added = symbol_count.saturating_sub(self.by_symbol.len());
        self.by_symbol
            .resize_with(symbol_count.max(self.by_symbol.len()), IndexMap::new);
        self.subscriptions += added * self.all.len();
    }

    /// (connection, symbol) subscriptions, a `*` counting every symbol.
    pub fn subscriptions(&self) -> usize {
        self.subscriptions
    }

    /// Registers a connection with no subscriptions.
    pub fn attach(&mut self, conn: ConnId, outbox: Arc<Outbox>) {
        self.members.insert(
            conn,
            Member {
                outbox,
                all: false,
                symbols: HashSet::new(),
            },
        );
    }

    /// Removes a connection and all its subscriptions.
    pub fn detach(&mut self, conn: ConnId) {
        let Some(member) = self.members.swap_remove(&conn) else {
            return;
        };
        if member.all {
            self.all.swap_remove(&conn);
            self.subscriptions -= self.by_symbol.len();
        }
        self.subscriptions -= member.symbols.len();
        for symbol in member.symbols {
            self.by_symbol[symbol as usize].swap_remove(&conn);
        }
    }

    /// The outbox of `conn`, if attached.
    pub fn outbox(&self, conn: ConnId) -> Option<&Arc<Outbox>> {
        self.members.get(&conn).map(|m| &m.outbox)
    }

    /// Subscribes `conn` to every symbol.
    pub fn subscribe_all(&mut self, conn: ConnId) {
        let Some(member) = self.members.get_mut(&conn) else {
            return;
        };
        if member.all {
            return;
        }
        self.subscriptions -= member.symbols.len();
        for symbol in member.symbols.drain() {
            self.by_symbol[symbol as usize].swap_remove(&conn);
        }
        self.subscriptions += self.by_symbol.len();
        member.all = true;
        self.all.insert(conn, member.outbox.clone());
    }

    /// Subscribes `conn` to `symbols`.
    pub fn subscribe(&mut self, conn: ConnId, symbols: &[SymbolId]) {
        let Some(member) = self.members.get_mut(&conn) else {
            return;
        };
        if member.all {
            return;
        }
        for &symbol in symbols {
            if member.symbols.insert(symbol) {
                self.by_symbol[symbol as usize].insert(conn, member.outbox.clone());
                self.subscriptions += 1;
            }
        }
    }

    /// Unsubscribes `conn` from `symbols`; a `*` subscriber keeps every
    /// other of the first `known` symbols (those its session knew of).
    pub fn unsubscribe(&mut self, conn: ConnId, symbols: &[SymbolId], known: usize) {
        let Some(member) = self.members.get_mut(&conn) else {
            return;
        };
        if member.all {
            member.all = false;
            self.all.swap_remove(&conn);
            self.subscriptions -= self.by_symbol.len();
            let removed: HashSet<SymbolId> = symbols.iter().copied().collect();
            for symbol in 0..known.min(self.by_symbol.len()) as SymbolId {
                if !removed.contains(&symbol) {
                    member.symbols.insert(symbol);
                    self.by_symbol[symbol as usize].insert(conn, member.outbox.clone());
                    self.subscriptions += 1;
                }
            }
        } else {
            for symbol in symbols {
                if member.symbols.remove(symbol) {
                    self.by_symbol[*symbol as usize].swap_remove(&conn);
                    self.subscriptions -= 1;
                }
            }
        }
    }

    /// Every outbox subscribed to `symbol`, `*` subscribers included.
    pub fn subscribers(&self, symbol: SymbolId) -> impl Iterator<Item = &Arc<Outbox>> {
        self.by_symbol[symbol as usize]
            .values()
            .chain(self.all.values())
    }

    /// The outboxes that named `symbol` (not the `*` subscribers).
    pub fn named_subscribers(&self, symbol: SymbolId) -> impl Iterator<Item = &Arc<Outbox>> {
        self.by_symbol[symbol as usize].values()
    }

    /// The outboxes of the `*` subscribers.
    pub fn all_outboxes(&self) -> impl Iterator<Item = &Arc<Outbox>> {
        self.all.values()
    }

    /// How many connections are subscribed to `*`.
    pub fn all_count(&self) -> usize {
        self.all.len()
    }

    /// Whether anyone is subscribed to `symbol`.
    pub fn has_subscribers(&self, symbol: SymbolId) -> bool {
        !self.all.is_empty() || !self.by_symbol[symbol as usize].is_empty()
    }

    /// Every attached outbox.
    pub fn outboxes(&self) -> impl Iterator<Item = &Arc<Outbox>> {
        self.members.values().map(|m| &m.outbox)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::outbox::OutboxLimits;
    use std::time::Duration;

    fn outbox() -> Arc<Outbox> {
        Arc::new(Outbox::new(OutboxLimits {
            max_bytes: 1 << 16,
            slow_consumer_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
        }))
    }

    fn count(index: &SubscriberIndex, symbol: SymbolId) -> usize {
        index.subscribers(symbol).count()
    }

    #[test]
    fn routes_by_symbol_and_star_without_duplicates() {
        let mut index = SubscriberIndex::new(3);
        index.attach(1, outbox());
        index.attach(2, outbox());
        index.subscribe(1, &[0, 1]);
        index.subscribe(2, &[1]);
        assert_eq!(
            (count(&index, 0), count(&index, 1), count(&index, 2)),
            (1, 2, 0)
        );
        assert_eq!(index.subscriptions(), 3);
        index.subscribe_all(2);
        assert_eq!(
            (count(&index, 0), count(&index, 1), count(&index, 2)),
            (2, 2, 1)
        );
        assert_eq!(index.subscriptions(), 5);
        // A `*` subscriber dropping one symbol keeps the others.
        index.unsubscribe(2, &[2], 3);
        assert_eq!(
            (count(&index, 0), count(&index, 1), count(&index, 2)),
            (2, 2, 0)
        );
        index.detach(1);
        index.detach(2);
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
        index.attach(1, outbox());
        index.attach(2, outbox());
        index.subscribe_all(1);
        index.subscribe(2, &[0]);
        index.grow(3);
        assert_eq!((count(&index, 1), count(&index, 2)), (1, 1));
        assert_eq!(index.named_subscribers(2).count(), 0);
        assert_eq!(index.subscriptions(), 3 + 1);
        index.detach(1);
        index.detach(2);
        assert_eq!(index.subscriptions(), 0);
    }
}
