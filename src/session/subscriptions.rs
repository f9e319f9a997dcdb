//! `Subscriptions`: what one connection is subscribed to, as its client
//! asked: the one record of it. The fan-out's routing lists
//! (`fanout::index`, `fanout::throttle`) are derived from it, request by
//! request, and emptied from it when the connection ends.

use std::time::Duration;

use crate::tick::SymbolId;

/// See the module docs.
#[derive(Debug, Default)]
pub struct Subscriptions {
    /// Subscribed to `*` (then `named` is empty).
    all: bool,
    /// Symbols subscribed by name, sorted by id, each with its `max_hz`
    /// interval in microseconds (0: every tick). Eight bytes a symbol.
    named: Vec<(SymbolId, u32)>,
}

impl Subscriptions {
    /// Subscribed to `*`.
    pub fn all(&self) -> bool {
        self.all
    }

    /// How many symbols are subscribed by name.
    pub fn named_count(&self) -> usize {
        self.named.len()
    }

    /// Whether `symbol` is subscribed by name.
    pub fn has(&self, symbol: SymbolId) -> bool {
        self.position(symbol).is_ok()
    }

    /// Whether any symbol is subscribed with `max_hz`: a later `*` then
    /// subscribes every symbol by name, so each keeps its own rate.
    pub fn throttled(&self) -> bool {
        self.named.iter().any(|&(_, micros)| micros > 0)
    }

    fn position(&self, symbol: SymbolId) -> Result<usize, usize> {
        self.named.binary_search_by_key(&symbol, |&(id, _)| id)
    }

    /// Every symbol subscribed by name with its interval (`None`: every
    /// tick).
    pub fn named(&self) -> impl Iterator<Item = (SymbolId, Option<Duration>)> + '_ {
        self.named.iter().map(|&(id, micros)| {
            let interval = (micros > 0).then(|| Duration::from_micros(u64::from(micros)));
            (id, interval)
        })
    }

    /// Adds `symbols` (none of them subscribed yet) by name at `interval`.
    pub fn add(&mut self, symbols: &[SymbolId], interval: Option<Duration>) {
        let micros = interval.map_or(0, |i| {
            u32::try_from(i.as_micros()).unwrap_or(u32::MAX).max(1)
        });
        self.named.extend(symbols.iter().map(|&id| (id, micros)));
        self.named.sort_unstable_by_key(|&(id, _)| id);
        self.named.dedup_by_key(|&mut (id, _)| id);
    }

    /// Becomes a `*` subscriber; returns the symbols it had named.
    pub fn make_all(&mut self) -> Vec<SymbolId> {
        self.all = true;
        std::mem::take(&mut self.named)
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    /// Removes `symbol` if subscribed by name, returning its interval
    /// (`Some(None)`: unthrottled).
    pub fn remove(&mut self, symbol: SymbolId) -> Option<Option<Duration>> {
        let at = self.position(symbol).ok()?;
        let (_, micros) = self.named.remove(at);
        Some((micros > 0).then(|| Duration::from_micros(u64::from(micros))))
    }

    /// Removes those of `symbols` subscribed by name, in one pass over the
    /// list, returning each with its interval.
    pub fn remove_many(
        &mut self,
        symbols: &std::collections::HashSet<SymbolId>,
    ) -> Vec<(SymbolId, Option<Duration>)> {
        let mut removed = Vec::new();
        self.named.retain(|&(id, micros)| {
            if !symbols.contains(&id) {
                return true;
            }
            let interval = (micros > 0).then(|| Duration::from_micros(u64::from(micros)));
            removed.push((id, interval));
            false
        });
        removed
    }

    /// Stops being a `*` subscriber, keeping `kept` by name (unthrottled).
    pub fn leave_all(&mut self, kept: &[SymbolId]) {
        self.all = false;
        self.named = kept.iter().map(|&id| (id, 0)).collect();
        self.named.sort_unstable_by_key(|&(id, _)| id);
    }

    /// Removes every named subscription, returning them.
    pub fn clear_named(&mut self) -> Vec<(SymbolId, Option<Duration>)> {
        let all = self.named().collect();
        self.named = Vec::new();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_each_symbol_once_with_its_rate() {
        let mut subs = Subscriptions::default();
        subs.add(&[5, 1], None);
        subs.add(&[3], Some(Duration::from_millis(250)));
        assert!(subs.has(1) && subs.has(3) && subs.has(5) && !subs.has(2));
        assert!(subs.throttled());
        assert_eq!(subs.remove(3), Some(Some(Duration::from_millis(250))));
        assert_eq!(subs.remove(3), None);
        assert!(!subs.throttled());
        assert_eq!(subs.make_all(), [1, 5]);
        assert!(subs.all() && subs.named_count() == 0);
        subs.leave_all(&[7, 2]);
        assert_eq!(subs.named().map(|(id, _)| id).collect::<Vec<_>>(), [2, 7]);
    }
}
