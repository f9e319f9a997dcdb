//! `Throttles`: subscriptions with `max_hz`, served on a clock instead of
//! per tick.
//!
//! Throttled subscribers are not in the per-tick [`SubscriberIndex`]
//! lists, so a tick costs them nothing. Instead they sit in *lanes*, one
//! per update interval: every interval the lane goes over the symbols its
//! members follow and, for each symbol that traded since the lane's last
//! flush, sends the newest tick to every member that has not seen it. So a
//! member gets at most one tick per symbol per interval, always the newest,
//! and the last tick of a burst at most one interval late. Skipped ticks
//! are never queued: conflation is the fan-out's "latest tick" slot, shared
//! by everyone.
//!
//! Which interval each connection follows a symbol at is kept by the
//! connection (`session::Subscriptions`); the lanes only know who to send
//! what.
//!
//! Intervals are `1 / max_hz` rounded *up* to two significant digits (so
//! the rate never exceeds `max_hz`), which bounds the number of lanes to a
//! few hundred whatever clients ask for.
//!
//! [`SubscriberIndex`]: super::index::SubscriberIndex

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;

use super::index::Key;
use crate::tick::SymbolId;

/// The update interval for `max_hz`: `1 / max_hz` rounded up to two
/// significant digits of microseconds.
pub fn interval_for(max_hz: f64) -> Duration {
    let exact = (1e6 / max_hz).ceil().max(1.0) as u64;
    let mut unit = 1;
    while exact / unit >= 100 {
        unit *= 10;
    }
    Duration::from_micros(exact.div_ceil(unit) * unit)
}

/// What a lane sends for one symbol at a flush.
#[derive(Debug)]
pub struct Latest {
    /// `seq` of the symbol's newest tick.
    pub seq: u64,
    /// That tick's frame.
    pub tick: Bytes,
    /// If the feed had a gap since the lane's last flush: the first `seq`
    /// after it, and a reset snapshot of the newest tick, sent instead of
    /// `tick` to members that had not seen that `seq`.
    pub reset: Option<(u64, Bytes)>,
}

#[derive(Debug, Default)]
struct LaneSymbol {
    /// Newest `seq` of the symbol at the lane's last flush.
    flushed_seq: u64,
    /// Each member and the newest `seq` of the symbol it has been sent.
    members: IndexMap<Key, u64>,
}

#[derive(Debug)]
struct Lane {
    next_flush: Instant,
    symbols: HashMap<SymbolId, LaneSymbol>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Throttles {
    lanes: BTreeMap<Duration, Lane>,
    /// Throttled (connection, symbol) subscriptions.
    count: usize,
}

impl Throttles {
    /// Adds `key`'s throttled subscription to `symbol` at `interval`;
    /// `sent_seq` is the newest `seq` it has (from its snapshot or replay).
    pub fn subscribe(
        &mut self,
        key: Key,
        symbol: SymbolId,
        interval: Duration,
        sent_seq: u64,
        now: Instant,
    ) {
        let lane = self.lanes.entry(interval).or_insert_with(|| Lane {
            next_flush: now + interval,
            symbols: HashMap::new(),
        });
        let entry = lane.symbols.entry(symbol).or_insert_with(|| LaneSymbol {
            flushed_seq: sent_seq,
            members: IndexMap::new(),
        });
        if entry.members.insert(key, sent_seq).is_none() {
            self.count += 1;
        }
    }

    /// Throttled (connection, symbol) subscriptions.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there is no throttled subscription.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Removes `key`'s subscription to `symbol` at `interval`.
    pub fn unsubscribe(&mut self, key: Key, symbol: SymbolId, interval: Duration) {
        let Some(lane) = self.lanes.get_mut(&interval) else {
            return;
        };
        if let Some(entry) = lane.symbols.get_mut(&symbol) {
            if entry.members.swap_remove(&key).is_some() {
                self.count -= 1;
            }
            if entry.members.is_empty() {
                lane.symbols.remove(&symbol);
            }
        }
        if lane.symbols.is_empty() {
            self.lanes.remove(&interval);
        }
    }

    /// When the next lane is due, if any lane exists.
    pub fn next_flush(&self) -> Option<Instant> {
        self.lanes.values().map(|lane| lane.next_flush).min()
    }

    /// Flushes every lane due at `now`: `latest` gives a symbol's newest
    /// tick if it has traded since `flushed_seq`; `push` sends a frame of
    /// a symbol to a member. Returns the number of pushes.
    pub fn flush_due(
        &mut self,
        now: Instant,
        mut latest: impl FnMut(SymbolId, u64) -> Option<Latest>,
        mut push: impl FnMut(Key, SymbolId, &Bytes),
    ) -> usize {
        let mut pushes = 0;
        for (interval, lane) in &mut self.lanes {
            if lane.next_flush > now {
                continue;
            }
            lane.next_flush += *interval;
            if lane.next_flush <= now {
                // The shard was busy for more than an interval: resume the
                // clock from now rather than flush in a burst.
                lane.next_flush = now + *interval;
            }
            for (&symbol, entry) in &mut lane.symbols {
                let Some(latest) = latest(symbol, entry.flushed_seq) else {
                    continue;
                };
                entry.flushed_seq = latest.seq;
                for (&key, sent_seq) in entry.members.iter_mut() {
                    if *sent_seq >= latest.seq {
                        continue;
                    }
                    let frame = match &latest.reset {
                        Some((gap_seq, reset)) if *sent_seq < *gap_seq => reset,
                        _ => &latest.tick,
                    };
                    push(key, symbol, frame);
                    *sent_seq = latest.seq;
                    pushes += 1;
                }
            }
        }
        pushes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_round_up_so_the_rate_never_exceeds_max_hz() {
        assert_eq!(interval_for(4.0), Duration::from_millis(250));
        assert_eq!(interval_for(3.0), Duration::from_millis(340));
        assert_eq!(interval_for(1000.0), Duration::from_millis(1));
        assert_eq!(interval_for(0.1), Duration::from_secs(10));
        assert_eq!(interval_for(7.0), Duration::from_millis(150));
        for hz in [0.3, 1.0, 2.5, 6.0, 33.3, 999.0] {
            assert!(1.0 / interval_for(hz).as_secs_f64() <= hz + 1e-9, "{hz}");
        }
    }

    #[test]
    fn sends_only_the_newest_tick_once_per_interval_and_nothing_when_quiet() {
        let start = Instant::now();
        let interval = Duration::from_millis(250);
        let mut throttles = Throttles::default();
        throttles.subscribe(1, 0, interval, 5, start);
        let latest = |seq: u64| {
            move |_: SymbolId, flushed: u64| {
                (seq > flushed).then(|| Latest {
                    seq,
                    tick: Bytes::from(seq.to_string()),
                    reset: None,
                })
            }
        };
        let mut sent = Vec::new();
        // Not due yet: nothing, however many ticks came.
        assert_eq!(throttles.flush_due(start, latest(9), |_, _, _| {}), 0);
        // Due: the newest only.
        let due = start + interval;
        assert_eq!(throttles.next_flush(), Some(due));
        let pushes = throttles.flush_due(due, latest(9), |key, _, frame| {
            sent.push((key, frame.clone()));
        });
        assert_eq!(pushes, 1);
        assert_eq!(sent, [(1, Bytes::from("9"))]);
        // Quiet interval: nothing.
        assert_eq!(
            throttles.flush_due(due + interval, latest(9), |_, _, _| {}),
            0
        );
        throttles.unsubscribe(1, 0, interval);
        assert_eq!(throttles.next_flush(), None);
        assert!(throttles.is_empty());
    }

    #[test]
    fn a_member_that_joined_with_the_newest_tick_is_not_sent_it_again() {
        let start = Instant::now();
        let interval = Duration::from_millis(100);
        let mut throttles = Throttles::default();
        throttles.subscribe(1, 0, interval, 3, start);
        // 2 joins later, already holding seq 4 (its snapshot).
        throttles.subscribe(2, 0, interval, 4, start);
        let latest = |_: SymbolId, flushed: u64| {
            (4 > flushed).then(|| Latest {
                seq: 4,
                tick: Bytes::from("4"),
                reset: Some((4, Bytes::from("reset 4"))),
            })
        };
        let mut sent = Vec::new();
        let pushes = throttles.flush_due(start + interval, latest, |key, _, frame| {
            sent.push((key, frame.clone()));
        });
        assert_eq!(pushes, 1);
        assert_eq!(sent, [(1, Bytes::from("reset 4"))]);
        throttles.unsubscribe(1, 0, interval);
        assert_eq!(throttles.len(), 1);
    }
}
