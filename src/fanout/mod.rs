//! Stage 3 of the data path: read the `ring`, serialize each tick once,
//! hand the frame to every subscriber's [`Outbox`].
//!
//! Every shard runs one `Fanout` over its own connections and its own ring
//! cursor, on its own thread, so the per-tick path takes no lock and
//! crosses no thread: for each tick it encodes one frame
//! ([`encode::tick_frame`]) and pushes it to the tick's own subscribers
//! ([`SubscriberIndex`]), which lists them to be written after the pass
//! ([`Outboxes`]). A client that gets most of a pass's ticks (a `*`
//! subscriber) is queued one slice of the pass's frames laid end to end,
//! the others the frames themselves: either way the bytes are shared, not
//! copied per client.
//!
//! Subscribe and unsubscribe are calls on the same thread, between two
//! ticks: the `subscribed` reply and the snapshots (or, for a client
//! resuming with `from`, the ticks it missed, from the [`History`]) are
//! queued before any later tick, which is what guarantees a client its
//! snapshot before any tick of a symbol and every later tick in order.
//!
//! Subscriptions with `max_hz` are served by [`Throttles`] on a clock, not
//! per tick.
//!
//! A tick whose `seq` does not follow its symbol's previous one (the
//! shard fell a whole ring behind the feed, or the publisher skipped
//! ahead) reaches subscribers as a reset snapshot, so they know they missed
//! ticks. Ring lag is also counted in [`Stats::ring_lagged`] and logged.

pub mod encode;
pub mod history;
pub mod index;
pub mod outbox;
pub mod throttle;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::ServerMsg;
use crate::ring::{Cursor, Read};
use crate::stats::Stats;
use crate::symbol::Symbols;
use crate::tick::{now_nanos, SymbolId, Tick};
use encode::{tick_frame, TickKind};
use history::{History, Replay};
pub use index::Key;
use index::SubscriberIndex;
pub use outbox::{Outbox, Outboxes};
use throttle::{Latest, Throttles};

/// Most ticks handled per pass before the shard writes its sockets (and
/// reads them) again. A pass drains what has arrived, up to this: the
/// slower the writes, the more frames each carries (the loop clocks
/// itself), while a `*` subscriber's share of one pass (a thousand frames,
/// some 130 KB) stays within reach of its outbox's limit.
const BATCH: usize = 1024;

/// Most outbox pushes per pass (about a million: one pass's ticks to
/// every subscriber of 10,000 connections). A cap far below that made a
/// saturated shard write fewer frames per system call exactly when it was
/// behind, and fall further behind (measured at 1,000,000 msg/s: 715,000
/// delivered with a cap of 65,536).
const PUSH_BUDGET: usize = 1 << 20;

/// Most time a pass spends fanning out (checked every [`CLOCK_EVERY`]
/// ticks) before the shard reads and writes its sockets again, whatever
/// is left in the ring.
const PASS_TIME: Duration = Duration::from_millis(20);

/// Ticks between two looks at the clock while draining.
const CLOCK_EVERY: usize = 256;

/// Most ticks replayed for one subscribe with `from`; symbols past it get a
/// reset snapshot instead. Bounds the replies one request can queue (and
/// the time the shard spends building them).
pub const MAX_REPLAY_TICKS: usize = 16_384;

/// The `subscribed` (or `unsubscribed`) reply naming `ids`.
fn names_reply(symbols: &[SymbolState], ids: &[SymbolId], subscribed: bool) -> Bytes {
    let names: Vec<&str> = ids.iter().map(|&id| &*symbols[id as usize].name).collect();
    if subscribed {
        ServerMsg::Subscribed { symbols: &names }.to_frame()
    } else {
        ServerMsg::Unsubscribed { symbols: &names }.to_frame()
    }
}

/// How a drain pass ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Pass {
    /// The ring is empty.
    Drained,
    /// The pass hit its limit; more may be waiting.
    Full,
}

/// A subscribe, as the connection's requests worked it out against what
/// it is subscribed to already (`session::Subscriptions`).
#[derive(Debug, Default)]
pub struct Subscribe {
    /// The request makes the connection a `*` subscriber (then `added` is
    /// every symbol it was not subscribed to, or nothing).
    pub all: bool,
    /// Symbols this request newly subscribed.
    pub added: Vec<SymbolId>,
    /// Symbols the connection had named that its new `*` now covers.
    pub replaced: Vec<SymbolId>,
    /// The last `seq` the client saw of some of `added`.
    pub from: HashMap<SymbolId, u64>,
    /// Throttle `added` to one update per `interval` (`max_hz`).
    pub interval: Option<Duration>,
    /// How many symbols the registry held when the request was resolved
    /// (ids below it are the ones it knows of).
    pub known: usize,
}

/// An unsubscribe, worked out like a [`Subscribe`].
#[derive(Debug, Default)]
pub struct Unsubscribe {
    /// Symbols no longer subscribed, as the reply names them.
    pub removed: Vec<SymbolId>,
    /// The connection was a `*` subscriber and no longer is.
    pub leaves_all: bool,
    /// With `leaves_all`: the symbols it keeps, now by name.
    pub kept: Vec<SymbolId>,
    /// Throttled subscriptions that end, with their interval.
    pub throttled: Vec<(SymbolId, Duration)>,
    /// As in [`Subscribe::known`].
    pub known: usize,
}
/// What the fan-out keeps of one symbol.
#[derive(Debug)]
struct SymbolState {
    /// Its name (the fan-out's own copy: the tick path takes no lock).
    name: Arc<str>,
    /// Its last tick, for snapshots and `/symbols`.
    last: Option<Tick>,
    /// The tick frame of its last tick, for throttled clients.
    last_frame: Option<Bytes>,
    /// The first `seq` after the latest gap in its feed (0: none).
    gap_at: u64,
    /// Its snapshot frame, built on first demand after each tick and
    /// shared by every subscriber that asks before the next one: a
    /// thousand clients subscribing to `*` share one set of snapshots.
    snapshot_frame: Option<Bytes>,
    /// Likewise, its reset snapshot frame.
    reset_frame: Option<Bytes>,
    /// `*` subscribers have been told of it: it was in the registry when
    /// the fan-out started, or its first tick has been handled.
    announced: bool,
}

/// One shard's fan-out. See the module docs.
#[derive(Debug)]
pub struct Fanout {
    /// The registry, for the names of symbols first met.
    registry: Arc<Symbols>,
    /// Every symbol met so far, by id.
    symbols: Vec<SymbolState>,
    index: SubscriberIndex,
    /// Recent ticks of every symbol, for clients resuming with `from`.
    history: History,
    /// Subscriptions with `max_hz`.
    throttles: Throttles,
    /// The `subscribed` reply listing every symbol, built on first use
    /// after each new symbol.
    all_subscribed: Option<Bytes>,
    /// Likewise, the `unsubscribed` reply listing every symbol.
    all_unsubscribed: Option<Bytes>,
    stats: Arc<Stats>,
    /// This fan-out's share of the subscriptions gauge, as last added.
    counted: usize,
    /// This fan-out counts the ring's ticks and the feed's gaps (one shard
    /// does, as every shard reads every tick).
    reports_ring: bool,
}

impl Fanout {
    /// A fan-out over the symbols of `registry` (and those it learns
    /// later) keeping `history_depth` ticks of each for resuming clients.
    pub fn new(registry: Arc<Symbols>, history_depth: usize, stats: Arc<Stats>) -> Fanout {
        let mut fanout = Fanout {
            registry,
            symbols: Vec::new(),
            index: SubscriberIndex::new(0),
            history: History::new(0, history_depth),
            throttles: Throttles::default(),
            all_subscribed: None,
            all_unsubscribed: None,
            stats,
            counted: 0,
            reports_ring: true,
        };
        // The symbols known at the start are every `*` subscriber's from
        // its first reply on.
        let known = fanout.registry.len();
        if known > 0 {
            fanout.meet(known as SymbolId - 1);
            for symbol in &mut fanout.symbols {
                symbol.announced = true;
            }
        }
        fanout
    }

    /// Whether this fan-out counts the ring's ticks, lag and the feed's
    /// gaps in [`Stats`] (on by default; off for all shards but one).
    pub fn reporting_ring(mut self, reports: bool) -> Self {
        self.reports_ring = reports;
        self
    }

    /// Makes room for every id up to `id`, taking the names of those not
    /// met before from the registry (which gave them out, so has them).
    /// Returns whether `id` is known now.
    fn meet(&mut self, id: SymbolId) -> bool {
        let met = self.symbols.len();
        if met > id as usize {
            return true;
        }
        for name in self.registry.names_between(met, id as usize + 1) {
            self.symbols.push(SymbolState {
                name,
                last: None,
                last_frame: None,
                gap_at: 0,
                snapshot_frame: None,
                reset_frame: None,
                announced: false,
            });
        }
        // Only ids the registry gave out (it holds their names).
        let count = self.symbols.len();
        self.index.grow(count);
        self.history.grow(count);
        // The cached every-symbol replies list fewer symbols now.
        self.all_subscribed = None;
        self.all_unsubscribed = None;
        self.stats.symbols.store(count, Ordering::Relaxed);
        self.count_subscriptions();
        count > id as usize
    }

    /// Brings this fan-out's share of the subscriptions gauge up to date.
    fn count_subscriptions(&mut self) {
        let now = self.index.subscriptions() + self.throttles.len();
        if now >= self.counted {
            self.stats
                .subscriptions
                .fetch_add(now - self.counted, Ordering::Relaxed);
        } else {
            self.stats
                .subscriptions
                .fetch_sub(self.counted - now, Ordering::Relaxed);
        }
        self.counted = now;
    }

    /// The number of symbols met so far.
    pub fn symbol_count(&self) -> usize {
        self.symbols.len()
    }

    /// The last tick of every symbol met so far, by id (`None` if it has
    /// not traded yet).
    pub fn quotes(&self) -> Vec<Option<Tick>> {
        self.symbols.iter().map(|state| state.last).collect()
    }

    /// Tells every `*` subscriber of `symbol`, met for the first time:
    /// a `subscribed` reply naming it, then its snapshot, as for any
    /// symbol subscribed. Ticks after this one follow as usual.
    fn announce(&mut self, symbol: SymbolId, now: Instant, outboxes: &mut Outboxes) {
        let slot = symbol as usize;
        self.symbols[slot].announced = true;
        tracing::debug!(
            symbol = &*self.symbols[slot].name,
            id = symbol,
            "a new symbol from the feed"
        );
        if self.index.all_count() == 0 {
            return;
        }
        let Some(snapshot) = self.snapshot_frame(symbol, TickKind::Snapshot) else {
            return;
        };
        let reply = names_reply(&self.symbols, &[symbol], true);
        for key in self.index.all_subscribers() {
            outboxes.push_reply(key, reply.clone());
            // As a tick: a client that does not read is conflated, then
            // closed as a slow consumer, however many symbols appear.
            outboxes.push_tick(key, symbol, &snapshot, now);
        }
    }

    /// Fans out what the ring holds, up to [`BATCH`] ticks,
    /// [`PUSH_BUDGET`] pushes or [`PASS_TIME`].
    pub fn drain(&mut self, cursor: &mut Cursor<Tick>, outboxes: &mut Outboxes) -> Pass {
        let mut read = 0;
        let mut pushes = 0;
        let mut now = None;
        let started = Instant::now();
        let pass = loop {
            if read == BATCH
                || pushes >= PUSH_BUDGET
                || (read % CLOCK_EVERY == CLOCK_EVERY - 1 && started.elapsed() >= PASS_TIME)
            {
                break Pass::Full;
            }
            match cursor.try_read() {
                Read::Item(tick) => {
                    read += 1;
                    let now = *now.get_or_insert_with(Instant::now);
                    pushes += self.dispatch(&tick, now, outboxes);
                    let queued_after = now_nanos().saturating_sub(tick.ts);
                    self.stats.fanout_latency.observe(queued_after as f64 / 1e9);
                }
                Read::Lagged(missed) => {
                    Stats::add(&self.stats.ring_lagged, missed);
                    tracing::warn!(
                        missed,
                        "a shard fell a whole ring behind the feed and lost ticks; \
                         its clients see seq gaps (raise --ring-capacity or lower --rate)"
                    );
                }
                Read::Empty => break Pass::Drained,
            }
        };
        outboxes.seal_pass();
        if read > 0 && self.reports_ring {
            Stats::add(&self.stats.ticks_read, read as u64);
            let behind = cursor.behind();
            self.stats.ring_lag.store(behind, Ordering::Relaxed);
            self.stats
                .ticks_produced
                .fetch_max(cursor.position() + behind, Ordering::Relaxed);
        }
        pass
    }

    /// Serializes `tick` once, records it, and queues it to each of its
    /// per-tick subscribers as a tick of the pass in progress; returns how
    /// many that was. The pass ends with [`Outboxes::seal_pass`]
    /// ([`Fanout::drain`] ends its own).
    pub fn dispatch(&mut self, tick: &Tick, now: Instant, outboxes: &mut Outboxes) -> usize {
        let symbol = tick.symbol;
        let slot = symbol as usize;
        if !self.meet(symbol) {
            tracing::error!(
                symbol,
                "dropped a tick of a symbol id the registry never gave out; this is a bug"
            );
            return 0;
        }
        let state = &mut self.symbols[slot];
        let gap = state
            .last
            .is_some_and(|prev| prev.seq.checked_add(1) != Some(tick.seq));
        state.last = Some(*tick);
        state.snapshot_frame = None;
        state.reset_frame = None;
        let frame = tick_frame(TickKind::Tick, &state.name, tick);
        self.history.record(symbol, tick.seq, &frame);
        let live = if gap {
            state.gap_at = tick.seq;
            if self.reports_ring {
                Stats::add(&self.stats.feed_gaps, 1);
            }
            tick_frame(TickKind::Reset, &state.name, tick)
        } else {
            frame.clone()
        };
        state.last_frame = Some(frame);
        let announced = state.announced;
        let mut recipients = 0;
        if !announced {
            // A new symbol: `*` subscribers are told of it, with this tick
            // as its snapshot; anyone who named it already gets the tick.
            self.announce(symbol, now, outboxes);
            recipients += self.index.all_count();
            for key in self.index.named_subscribers(symbol) {
                recipients += 1;
                outboxes.push_tick(key, symbol, &live, now);
            }
            return recipients;
        }
        if !self.index.has_subscribers(symbol) {
            return 0;
        }
        let Some(index) = outboxes.add_pass_frame(&live) else {
            for key in self.index.subscribers(symbol) {
                recipients += 1;
                outboxes.push_tick(key, symbol, &live, now);
            }
            return recipients;
        };
        for key in self.index.subscribers(symbol) {
            recipients += 1;
            outboxes.push_pass_tick(key, symbol, index, now);
        }
        recipients
    }

    /// When the next throttled lane is due, if any.
    pub fn next_flush(&self) -> Option<Instant> {
        self.throttles.next_flush()
    }

    /// Sends throttled subscribers what their lanes owe them at `now`.
    pub fn flush_throttled(&mut self, now: Instant, outboxes: &mut Outboxes) {
        if self.throttles.next_flush().is_none_or(|due| due > now) {
            return;
        }
        let symbols = &self.symbols;
        self.throttles.flush_due(
            now,
            |symbol, flushed_seq| {
                let state = &symbols[symbol as usize];
                let tick = state.last.filter(|tick| tick.seq > flushed_seq)?;
                Some(Latest {
                    seq: tick.seq,
                    tick: state.last_frame.clone()?,
                    reset: (state.gap_at > flushed_seq).then(|| {
                        (
                            state.gap_at,
                            tick_frame(TickKind::Reset, &state.name, &tick),
                        )
                    }),
                })
            },
            |key, symbol, frame| outboxes.push_tick(key, symbol, frame, now),
        );
    }

    /// The shared snapshot frame (`Snapshot` or `Reset`) of `symbol`, if it
    /// has traded.
    fn snapshot_frame(&mut self, symbol: SymbolId, kind: TickKind) -> Option<Bytes> {
        let state = &mut self.symbols[symbol as usize];
        let tick = state.last?;
        let cache = match kind {
            TickKind::Reset => &mut state.reset_frame,
            _ => &mut state.snapshot_frame,
        };
        Some(
            cache
                .get_or_insert_with(|| tick_frame(kind, &state.name, &tick))
                .clone(),
        )
    }

    /// What a client resuming `symbol` after `seq` `seen` is sent: the
    /// ticks it missed (only the newest if it is `throttled`, as it skips
    /// ticks anyway), nothing if it is current, or a reset snapshot when
    /// they are gone or would take it past `budget` replayed ticks.
    fn resume(
        &mut self,
        symbol: SymbolId,
        seen: u64,
        throttled: bool,
        budget: &mut usize,
        frames: &mut Vec<Bytes>,
    ) {
        let Some(latest) = self.symbols[symbol as usize].last else {
            return;
        };
        match self.history.since(symbol, seen, latest.seq) {
            Replay::UpToDate => {}
            Replay::Ticks(ticks) if throttled => {
                Stats::add(&self.stats.replayed, 1);
                frames.extend(ticks.last().map(|&newest| newest.clone()));
            }
            Replay::Ticks(ticks) if ticks.len() <= *budget => {
                *budget -= ticks.len();
                Stats::add(&self.stats.replayed, ticks.len() as u64);
                frames.extend(ticks.into_iter().cloned());
            }
            Replay::Ticks(_) | Replay::Gone => {
                Stats::add(&self.stats.resets, 1);
                frames.extend(self.snapshot_frame(symbol, TickKind::Reset));
            }
        }
    }

    /// Applies `request` for connection `key` and queues its replies: the
    /// `subscribed` reply, then a snapshot of each added symbol that has
    /// traded (or, for those in `from`, the ticks the client missed, or a
    /// reset snapshot).
    pub fn subscribe(&mut self, key: Key, request: Subscribe, outboxes: &mut Outboxes) {
        let Subscribe {
            all,
            added,
            replaced,
            from,
            interval,
            known,
        } = request;
        // The request may know of ids the registry gave out whose first
        // tick is still on its way here.
        if known > 0 {
            self.meet(known as SymbolId - 1);
        }
        let added = if all && interval.is_none() {
            // A plain `*` is told of what has been announced here; the
            // others it is told of when they first trade (`announce`).
            let announced = |&id: &SymbolId| self.symbols[id as usize].announced;
            added.into_iter().filter(announced).collect()
        } else {
            added
        };
        match interval {
            Some(interval) => {
                let now = Instant::now();
                for &id in &added {
                    // The client is sent the newest tick next (as a
                    // snapshot or the end of a replay).
                    let seq = self.symbols[id as usize].last.map_or(0, |tick| tick.seq);
                    self.throttles.subscribe(key, id, interval, seq, now);
                }
            }
            None if all => {
                self.index.unsubscribe(key, replaced);
                self.index.subscribe_all(key);
            }
            None => self.index.subscribe(key, &added),
        }
        self.count_subscriptions();
        // A first `*` lists every symbol in server order: that reply is
        // the same for everyone.
        let reply = if all && added.len() == self.symbols.len() {
            self.all_subscribed
                .get_or_insert_with(|| names_reply(&self.symbols, &added, true))
                .clone()
        } else {
            names_reply(&self.symbols, &added, true)
        };
        let mut frames = vec![reply];
        let mut budget = MAX_REPLAY_TICKS;
        for &id in &added {
            match from.get(&id) {
                Some(&seen) => {
                    self.resume(id, seen, interval.is_some(), &mut budget, &mut frames);
                }
                None => frames.extend(self.snapshot_frame(id, TickKind::Snapshot)),
            }
        }
        if let Some(outbox) = outboxes.get_mut(key) {
            outbox.push_replies(frames);
        }
    }

    /// Applies `request` for connection `key` and queues its
    /// `unsubscribed` reply.
    pub fn unsubscribe(&mut self, key: Key, request: Unsubscribe, outboxes: &mut Outboxes) {
        let Unsubscribe {
            removed,
            leaves_all,
            kept,
            throttled,
            known,
        } = request;
        if known > 0 {
            self.meet(known as SymbolId - 1);
        }
        if leaves_all {
            self.index.unsubscribe_all(key);
            self.index.subscribe(key, &kept);
        } else {
            self.index.unsubscribe(key, removed.iter().copied());
        }
        for (symbol, interval) in throttled {
            self.throttles.unsubscribe(key, symbol, interval);
        }
        self.count_subscriptions();
        let everything =
            removed.len() == self.symbols.len() && removed.windows(2).all(|w| w[0] < w[1]);
        let reply = if everything {
            self.all_unsubscribed
                .get_or_insert_with(|| names_reply(&self.symbols, &removed, false))
                .clone()
        } else {
            names_reply(&self.symbols, &removed, false)
        };
        if let Some(outbox) = outboxes.get_mut(key) {
            outbox.forget_symbols(&removed);
            outbox.push_reply(reply);
        }
    }

    /// Forgets connection `key`: its `*` subscription (if `all`) and every
    /// symbol it `named`, each with its `max_hz` interval if throttled.
    /// Tolerates subscriptions that were never recorded here.
    pub fn detach(
        &mut self,
        key: Key,
        all: bool,
        named: impl IntoIterator<Item = (SymbolId, Option<Duration>)>,
    ) {
        if all {
            self.index.unsubscribe_all(key);
        }
        for (symbol, interval) in named {
            match interval {
                Some(interval) => self.throttles.unsubscribe(key, symbol, interval),
                None => self.index.unsubscribe(key, [symbol]),
            }
        }
        self.count_subscriptions();
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        // Take this shard's share out of the gauge.
        self.stats
            .subscriptions
            .fetch_sub(self.counted, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::price::Price;
    use outbox::{OutboxLimits, Take};
    use std::collections::VecDeque;

    fn limits() -> OutboxLimits {
        OutboxLimits {
            max_bytes: 1 << 20,
            slow_consumer_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
        }
    }

    fn sent(outboxes: &mut Outboxes, key: Key) -> Vec<String> {
        let mut batch = VecDeque::new();
        let _ = outboxes.get_mut(key).unwrap().take(&mut batch);
        batch
            .iter()
            .map(|f| {
                let (_, payload) = crate::wire::frame::parse_unmasked(f).unwrap();
                String::from_utf8(payload.to_vec()).unwrap()
            })
            .collect()
    }

    fn tick(symbol: SymbolId, seq: u64) -> Tick {
        Tick {
            symbol,
            seq,
            px: Price::from_scaled(10_000, 2).unwrap(),
            bid: Price::from_scaled(9_999, 2).unwrap(),
            ask: Price::from_scaled(10_001, 2).unwrap(),
            size: 100,
            ts: 1,
        }
    }

    #[test]
    fn a_subscriber_gets_its_snapshot_then_every_tick_and_nothing_after_leaving() {
        let symbols =
            Arc::new(Symbols::fixed([("AAPL".to_string(), 2), ("MSFT".to_string(), 2)]).unwrap());
        let stats = Arc::new(Stats::default());
        let mut fanout = Fanout::new(symbols, 16, stats.clone());
        let mut outboxes = Outboxes::new(limits(), stats.clone());
        outboxes.insert(0, Outbox::new());
        let now = Instant::now();
        fanout.dispatch(&tick(0, 1), now, &mut outboxes);
        fanout.subscribe(
            0,
            Subscribe {
                added: vec![0],
                known: 2,
                ..Subscribe::default()
            },
            &mut outboxes,
        );
        fanout.dispatch(&tick(0, 2), now, &mut outboxes);
        fanout.dispatch(&tick(1, 1), now, &mut outboxes);
        let got = sent(&mut outboxes, 0);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].contains("subscribed"), "{got:?}");
        assert!(got[1].contains("snapshot") && got[1].contains("\"seq\":1"));
        assert!(got[2].contains("\"tick\"") && got[2].contains("\"seq\":2"));
        assert_eq!(stats.subscriptions.load(Ordering::Relaxed), 1);
        fanout.detach(0, false, [(0, None)]);
        assert_eq!(stats.subscriptions.load(Ordering::Relaxed), 0);
        fanout.dispatch(&tick(0, 3), now, &mut outboxes);
        assert!(matches!(
            outboxes.get_mut(0).unwrap().take(&mut VecDeque::new()),
            Take::Idle
        ));
    }
}
