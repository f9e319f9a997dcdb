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
//! Intervals are `1 / max_hz` rounded *up* to two significant digits (so
//! the rate never exceeds `max_hz`), which bounds the number of lanes to a
//! few hundred whatever clients ask for.
//!
//! [`SubscriberIndex`]: super::index::SubscriberIndex

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;

use super::ConnId;
use crate::session::outbox::{Outbox, Pushed};
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

#[derive(Debug)]
struct Member {
    outbox: Arc<Outbox>,
    /// Newest `seq` of the symbol this member has been sent.
    sent_seq: u64,
}

#[derive(Debug, Default)]
struct LaneSymbol {
    /// Newest `seq` of the symbol at the lane's last flush.
    flushed_seq: u64,
    members: IndexMap<ConnId, Member>,
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
    /// Each connection's throttled symbols and their interval.
    by_conn: HashMap<ConnId, HashMap<SymbolId, Duration>>,
    /// Throttled (connection, symbol) subscriptions.
    count: usize,
}

impl Throttles {
    /// Adds `conn`'s throttled subscription to `symbol`; `sent_seq` is the
    /// newest `seq` it has (from its snapshot or replay).
    pub fn subscribe(
        &mut self,
        conn: ConnId,
        outbox: &Arc<Outbox>,
        symbol: SymbolId,
        interval: Duration,
        sent_seq: u64,
        now: Instant,
    ) {
        let symbols = self.by_conn.entry(conn).or_default();
        if symbols.contains_key(&symbol) {
            return;
        }
        symbols.insert(symbol, interval);
        self.count += 1;
        let lane = self.lanes.entry(interval).or_insert_with(|| Lane {
            next_flush: now + interval,
            symbols: HashMap::new(),
        });
        let entry = lane.symbols.entry(symbol).or_insert_with(|| LaneSymbol {
            flushed_seq: sent_seq,
            members: IndexMap::new(),
        });
        entry.members.insert(
            conn,
            Member {
                outbox: outbox.clone(),
                sent_seq,
            },
        );
    }

    /// Throttled (connection, symbol) subscriptions.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there is no throttled subscription.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether `conn` follows `symbol` through a lane.
    pub fn is_subscribed(&self, conn: ConnId, symbol: SymbolId) -> bool {
        self.by_conn
            .get(&conn)
            .is_some_and(|symbols| symbols.contains_key(&symbol))
    }

    /// Removes `conn`'s throttled subscriptions to `symbols`.
    pub fn unsubscribe(&mut self, conn: ConnId, symbols: &[SymbolId]) {
        let Some(subscribed) = self.by_conn.get_mut(&conn) else {
            return;
        };
        for symbol in symbols {
            if let Some(interval) = subscribed.remove(symbol) {
                self.count -= 1;
                Self::leave(&mut self.lanes, conn, *symbol, interval);
            }
        }
        if subscribed.is_empty() {
            self.by_conn.remove(&conn);
        }
    }

    /// Removes every throttled subscription of `conn`.
    pub fn detach(&mut self, conn: ConnId) {
        for (symbol, interval) in self.by_conn.remove(&conn).unwrap_or_default() {
            self.count -= 1;
            Self::leave(&mut self.lanes, conn, symbol, interval);
        }
    }

    fn leave(
        lanes: &mut BTreeMap<Duration, Lane>,
        conn: ConnId,
        symbol: SymbolId,
        interval: Duration,
    ) {
        let Some(lane) = lanes.get_mut(&interval) else {
            return;
        };
        if let Some(entry) = lane.symbols.get_mut(&symbol) {
            entry.members.swap_remove(&conn);
            if entry.members.is_empty() {
                lane.symbols.remove(&symbol);
            }
        }
        if lane.symbols.is_empty() {
            lanes.remove(&interval);
        }
    }

    /// When the next lane is due, if any lane exists.
    pub fn next_flush(&self) -> Option<Instant> {
        self.lanes.values().map(|lane| lane.next_flush).min()
    }

    /// Flushes every lane due at `now`: `latest` gives a symbol's newest
    /// tick if it has traded since `flushed_seq`; `pushed` hears of every
    /// push. Returns the number of pushes.
    pub fn flush_due(
        &mut self,
        now: Instant,
        mut latest: impl FnMut(SymbolId, u64) -> Option<Latest>,
        mut pushed: impl FnMut(Pushed),
    ) -> usize {
        let mut pushes = 0;
        for (interval, lane) in &mut self.lanes {
            if lane.next_flush > now {
                continue;
            }
            lane.next_flush += *interval;
            if lane.next_flush <= now {
                // The fan-out was busy for more than an interval: resume
                // the clock from now rather than flush in a burst.
                lane.next_flush = now + *interval;
            }
            for (&symbol, entry) in &mut lane.symbols {
                let Some(latest) = latest(symbol, entry.flushed_seq) else {
                    continue;
                };
                entry.flushed_seq = latest.seq;
                for member in entry.members.values_mut() {
                    if member.sent_seq >= latest.seq {
                        continue;
                    }
                    let frame = match &latest.reset {
                        Some((gap_seq, reset)) if member.sent_seq < *gap_seq => reset,
                        _ => &latest.tick,
                    };
                    pushed(member.outbox.push_tick(symbol, frame, now));
                    member.sent_seq = latest.seq;
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
    use crate::session::outbox::{OutboxLimits, Take};
    use std::collections::VecDeque;

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

    fn outbox() -> Arc<Outbox> {
        Arc::new(Outbox::new(OutboxLimits {
            max_bytes: 1 << 20,
            slow_consumer_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
        }))
    }

    fn sent(outbox: &Outbox) -> Vec<Bytes> {
        let mut batch = VecDeque::new();
        match outbox.take(&mut batch) {
            Take::Frames => batch.into(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn sends_only_the_newest_tick_once_per_interval_and_nothing_when_quiet() {
        let start = Instant::now();
        let interval = Duration::from_millis(250);
        let mut throttles = Throttles::default();
        let a = outbox();
        throttles.subscribe(1, &a, 0, interval, 5, start);
        let latest = |seq: u64| {
            move |_: SymbolId, flushed: u64| {
                (seq > flushed).then(|| Latest {
                    seq,
                    tick: Bytes::from(seq.to_string()),
                    reset: None,
                })
            }
        };
        // Not due yet: nothing, however many ticks came.
        assert_eq!(throttles.flush_due(start, latest(9), |_| {}), 0);
        // Due: the newest only.
        let due = start + interval;
        assert_eq!(throttles.next_flush(), Some(due));
        assert_eq!(throttles.flush_due(due, latest(9), |_| {}), 1);
        assert_eq!(sent(&a), [Bytes::from("9")]);
        // Quiet interval: nothing.
        assert_eq!(throttles.flush_due(due + interval, latest(9), |_| {}), 0);
        throttles.detach(1);
        assert_eq!(throttles.next_flush(), None);
    }

    #[test]
    fn a_member_that_joined_with_the_newest_tick_is_not_sent_it_again() {
        let start = Instant::now();
        let interval = Duration::from_millis(100);
        let mut throttles = Throttles::default();
        let (a, b) = (outbox(), outbox());
        throttles.subscribe(1, &a, 0, interval, 3, start);
        // b joins later, already holding seq 4 (its snapshot).
        throttles.subscribe(2, &b, 0, interval, 4, start);
        let latest = |_: SymbolId, flushed: u64| {
            (4 > flushed).then(|| Latest {
                seq: 4,
                tick: Bytes::from("4"),
                reset: Some((4, Bytes::from("reset 4"))),
            })
        };
        assert_eq!(throttles.flush_due(start + interval, latest, |_| {}), 1);
        assert_eq!(sent(&a), [Bytes::from("reset 4")]);
        assert!(sent(&b).is_empty());
        throttles.unsubscribe(1, &[0]);
        assert!(!throttles.is_subscribed(1, 0));
        assert!(throttles.is_subscribed(2, 0));
    }
}
