//! Stage 3 of the data path: read the `ring`, serialize each tick once,
//! hand the frame to every subscriber's `outbox`.
//!
//! One task owns the [`SubscriberIndex`] and the last tick of every symbol,
//! so the per-tick path takes no lock shared between connections: for each
//! tick it encodes one frame ([`encode::tick_frame`]) and pushes that same
//! reference-counted buffer to the tick's own subscribers (a queue push
//! and, when the outbox was empty, a wake-up of its writer).
//!
//! Sessions change subscriptions by sending [`Command`]s over a bounded
//! channel. The fan-out applies them between ticks and queues the
//! `subscribed` reply and the snapshots (or, for a client resuming with
//! `from`, the ticks it missed, from the [`History`]) itself, which is what
//! guarantees a client its snapshot before any tick of a symbol and every
//! later tick in order.
//!
//! Subscriptions with `max_hz` are served by [`Throttles`] on a clock, not
//! per tick. On another clock the fan-out pings every connection and
//! closes those that stopped answering: one pass per interval rather than a
//! timer in every session.
//!
//! A tick whose `seq` does not follow its symbol's previous one (the
//! fan-out fell a whole ring behind the feed, or the publisher skipped
//! ahead) reaches subscribers as a reset snapshot, so they know they missed
//! ticks. Ring lag is also counted in [`Stats::ring_lagged`] and logged.

pub mod encode;
pub mod history;
pub mod index;
pub mod throttle;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::feed::now_nanos;
use crate::protocol::frame::close_frame;
use crate::protocol::ServerMsg;
use crate::ring::{Cursor, Read};
use crate::session::outbox::{Outbox, Pushed};
use crate::stats::Stats;
use crate::symbol::Symbols;
use crate::tick::{SymbolId, Tick};
use encode::{tick_frame, TickKind};
use history::{History, Replay};
use index::SubscriberIndex;
use throttle::{Latest, Throttles};

/// Identifies one WebSocket connection for the server's lifetime.
pub type ConnId = u64;

/// Most ticks handled per pass before the fan-out looks at commands again
/// and lets the writers run.
const BATCH: usize = 1024;

/// Most outbox pushes per pass: with many subscribers per tick, a pass ends
/// after this much work even if fewer than [`BATCH`] ticks were read, so
/// writers are never starved for long.
const PUSH_BUDGET: usize = 64 * 1024;

/// Most ticks replayed for one subscribe with `from`; symbols past it get a
/// reset snapshot instead. Bounds the replies one request can queue (and
/// the time the fan-out spends building them).
pub const MAX_REPLAY_TICKS: usize = 16_384;

/// Capacity of the command channel; a session waits when it is full.
pub const COMMAND_CAPACITY: usize = 4096;

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
enum Pass {
    /// The ring is empty.
    Drained,
    /// The pass hit its limit; more may be waiting.
    Full,
}

/// A change requested by a session, applied in order with the ticks.
#[derive(Debug)]
pub enum Command {
    /// A new connection.
    Attach {
        /// The connection.
        conn: ConnId,
        /// Where its output goes.
        outbox: Arc<Outbox>,
    },
    /// Subscribe; the fan-out replies `subscribed` with `added`, then a
    /// snapshot of each of them that has traded (or, for those in `from`,
    /// the ticks the client missed, or a reset snapshot).
    Subscribe {
        /// The connection.
        conn: ConnId,
        /// The connection is subscribed to `*` (then `added` is every
        /// symbol it was not subscribed to, or nothing).
        all: bool,
        /// Symbols this request newly subscribed.
        added: Vec<SymbolId>,
        /// The last `seq` the client saw of some of `added`.
        from: HashMap<SymbolId, u64>,
        /// Throttle `added` to one update per `interval` (`max_hz`).
        interval: Option<Duration>,
        /// How many symbols the registry held when the session built the
        /// request (ids below it are the ones it knows of).
        known: usize,
        /// Fired once the replies are queued, so the session reads its
        /// next request only after this one is answered.
        done: oneshot::Sender<()>,
    },
    /// Unsubscribe; the fan-out replies `unsubscribed` with `removed`.
    Unsubscribe {
        /// The connection.
        conn: ConnId,
        /// Symbols no longer subscribed.
        removed: Vec<SymbolId>,
        /// How many symbols the registry held when the session built the
        /// request: a `*` subscriber keeps the others of these.
        known: usize,
        /// Fired once the reply is queued.
        done: oneshot::Sender<()>,
    },
    /// The connection is gone.
    Detach {
        /// The connection.
        conn: ConnId,
    },
    /// The last tick of every symbol the fan-out has met, by id (`None`
    /// if it has not traded yet).
    Quotes {
        /// Where to send them.
        reply: oneshot::Sender<Vec<Option<Tick>>>,
    },
}

impl Command {
    /// The connection the command is for (none for `Quotes`).
    pub fn conn(&self) -> Option<ConnId> {
        match self {
            Command::Attach { conn, .. }
            | Command::Subscribe { conn, .. }
            | Command::Unsubscribe { conn, .. }
            | Command::Detach { conn } => Some(*conn),
            Command::Quotes { .. } => None,
        }
    }
}

/// A session's way to reach the fan-out.
#[derive(Clone, Debug)]
pub struct FanoutHandle {
    commands: mpsc::Sender<Command>,
}

impl FanoutHandle {
    /// A handle whose commands go to `commands`, for tests that play the
    /// fan-out's part.
    #[cfg(test)]
    pub(crate) fn from_sender(commands: mpsc::Sender<Command>) -> Self {
        FanoutHandle { commands }
    }

    /// Sends `command`; false if the fan-out has stopped (shutdown).
    pub async fn send(&self, command: Command) -> bool {
        self.commands.send(command).await.is_ok()
    }

    /// Sends the command `make` builds around a completion signal, and
    /// waits until the fan-out has applied it and queued its replies.
    /// One request in flight per session keeps a flood of requests from
    /// filling the shared channel or the session's memory.
    pub async fn request(&self, make: impl FnOnce(oneshot::Sender<()>) -> Command) -> bool {
        let (done, applied) = oneshot::channel();
        self.send(make(done)).await && applied.await.is_ok()
    }

    /// The last tick of every symbol, in symbol order.
    pub async fn quotes(&self) -> Option<Vec<Option<Tick>>> {
        let (reply, answer) = oneshot::channel();
        if !self.send(Command::Quotes { reply }).await {
            return None;
        }
        answer.await.ok()
    }
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

/// The fan-out stage. See the module docs.
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
    /// How often every connection is pinged, if at all.
    ping_interval: Option<Duration>,
    /// The `subscribed` reply listing every symbol, built on first use
    /// after each new symbol.
    all_subscribed: Option<Bytes>,
    /// Likewise, the `unsubscribed` reply listing every symbol.
    all_unsubscribed: Option<Bytes>,
    stats: Arc<Stats>,
}

impl Fanout {
    /// A fan-out over the symbols of `registry` (and those it learns
    /// later) keeping `history_depth` ticks of each for resuming clients,
    /// and the handle sessions use to reach it.
    pub fn new(
        registry: Arc<Symbols>,
        history_depth: usize,
        stats: Arc<Stats>,
    ) -> (Fanout, FanoutHandle, mpsc::Receiver<Command>) {
        let (commands, receiver) = mpsc::channel(COMMAND_CAPACITY);
        let mut fanout = Fanout {
            registry,
            symbols: Vec::new(),
            index: SubscriberIndex::new(0),
            history: History::new(0, history_depth),
            throttles: Throttles::default(),
            ping_interval: None,
            all_subscribed: None,
            all_unsubscribed: None,
            stats,
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
        (fanout, FanoutHandle { commands }, receiver)
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

    /// Updates the subscriptions gauge.
    fn count_subscriptions(&self) {
        self.stats.subscriptions.store(
            self.index.subscriptions() + self.throttles.len(),
            Ordering::Relaxed,
        );
    }

    /// Tells every `*` subscriber of `symbol`, met for the first time with
    /// `tick`: a `subscribed` reply naming it, then its snapshot, as for
    /// any symbol subscribed. Ticks after this one follow as usual.
    fn announce(&mut self, symbol: SymbolId, now: Instant) {
        let slot = symbol as usize;
        self.symbols[slot].announced = true;
        tracing::info!(
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
        for outbox in self.index.all_outboxes() {
            outbox.push_reply(reply.clone());
            // As a tick: a client that does not read is conflated, then
            // closed as a slow consumer, however many symbols appear.
            count_push(&self.stats, outbox.push_tick(symbol, &snapshot, now));
        }
    }

    /// Pings every attached connection each `interval` and closes those
    /// that sent nothing since the previous ping (`None`: no pings).
    pub fn with_ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Pings every connection, closing those that did not answer the last
    /// ping: one pass over the connections per interval, instead of a
    /// timer in every session.
    fn ping_sessions(&self, interval: Duration) {
        for outbox in self.index.outboxes() {
            outbox.ping_or_close(interval);
        }
    }

    /// Runs until `shutdown` fires, then closes every connection with 1001.
    pub async fn run(
        mut self,
        mut cursor: Cursor<Tick>,
        wake: Arc<Notify>,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) {
        let mut next_ping = self.ping_interval.map(|interval| Instant::now() + interval);
        loop {
            // Checked here too: a saturated fan-out never reaches the
            // `select!` below.
            if shutdown.is_cancelled() {
                break;
            }
            if let (Some(due), Some(interval)) = (next_ping, self.ping_interval) {
                let now = Instant::now();
                if due <= now {
                    self.ping_sessions(interval);
                    next_ping = Some(now + interval);
                }
            }
            while let Ok(command) = commands.try_recv() {
                self.apply_isolated(command);
            }
            if self.drain(&mut cursor) == Pass::Full {
                // More may be waiting: let writers run, then continue.
                self.flush_throttled(Instant::now());
                tokio::task::yield_now().await;
                continue;
            }
            self.flush_throttled(Instant::now());
            let next_timer = match (self.throttles.next_flush(), next_ping) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                command = commands.recv() => match command {
                    Some(command) => self.apply_isolated(command),
                    None => break,
                },
                () = wake.notified() => {}
                () = sleep_until(next_timer) => {}
            }
        }
        let shutting_down = || close_frame(1001, "server shutting down");
        for outbox in self.index.outboxes() {
            outbox.close(shutting_down());
        }
        // Sessions that attached just now must not wait for a fan-out
        // that is gone.
        commands.close();
        while let Ok(command) = commands.try_recv() {
            if let Command::Attach { outbox, .. } = command {
                outbox.close(shutting_down());
            }
        }
    }

    /// Fans out what the ring holds, up to [`BATCH`] ticks or
    /// [`PUSH_BUDGET`] pushes.
    fn drain(&mut self, cursor: &mut Cursor<Tick>) -> Pass {
        let mut read = 0;
        let mut pushes = 0;
        let mut now = None;
        let pass = loop {
            if read == BATCH || pushes >= PUSH_BUDGET {
                break Pass::Full;
            }
            match cursor.try_read() {
                Read::Item(tick) => {
                    read += 1;
                    let now = *now.get_or_insert_with(Instant::now);
                    pushes += self.dispatch(&tick, now);
                    let queued_after = now_nanos().saturating_sub(tick.ts);
                    self.stats.fanout_latency.observe(queued_after as f64 / 1e9);
                }
                Read::Lagged(missed) => {
                    Stats::add(&self.stats.ring_lagged, missed);
                    tracing::warn!(
                        missed,
                        "the fan-out fell a whole ring behind the feed and lost ticks; \
                         clients see seq gaps (raise --ring-capacity or lower --rate)"
                    );
                }
                Read::Empty => break Pass::Drained,
            }
        };
        Stats::add(&self.stats.ticks_read, read as u64);
        let behind = cursor.behind();
        self.stats.ring_lag.store(behind, Ordering::Relaxed);
        self.stats
            .ticks_produced
            .store(cursor.position() + behind, Ordering::Relaxed);
        pass
    }

    /// Serializes `tick` once, records it, and queues it to each of its
    /// per-tick subscribers; returns how many that was.
    pub fn dispatch(&mut self, tick: &Tick, now: Instant) -> usize {
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
            Stats::add(&self.stats.feed_gaps, 1);
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
            self.announce(symbol, now);
            recipients += self.index.all_count();
            for outbox in self.index.named_subscribers(symbol) {
                recipients += 1;
                count_push(&self.stats, outbox.push_tick(symbol, &live, now));
            }
            return recipients;
        }
        if !self.index.has_subscribers(symbol) {
            return 0;
        }
        for outbox in self.index.subscribers(symbol) {
            recipients += 1;
            count_push(&self.stats, outbox.push_tick(symbol, &live, now));
        }
        recipients
    }

    /// Sends throttled subscribers what their lanes owe them at `now`.
    fn flush_throttled(&mut self, now: Instant) {
        if self.throttles.next_flush().is_none_or(|due| due > now) {
            return;
        }
        let symbols = &self.symbols;
        let stats = &self.stats;
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
            |pushed| count_push(stats, pushed),
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

    /// Applies one session command; a panic while applying it (a bug)
    /// costs only the connection it was for: that connection is closed
    /// with 1011 and detached, the panic logged and counted, and the
    /// fan-out goes on serving everyone else.
    pub fn apply_isolated(&mut self, command: Command) {
        let conn = command.conn();
        let applied = std::panic::catch_unwind(AssertUnwindSafe(|| self.apply(command)));
        if applied.is_ok() {
            return;
        }
        Stats::add(&self.stats.connection_panics, 1);
        tracing::error!(
            conn,
            "a panic in the fan-out ended one connection; the others are served on. \
             This is a bug: please report it with this log line"
        );
        if let Some(conn) = conn {
            if let Some(outbox) = self.index.outbox(conn) {
                outbox.close(close_frame(1011, "internal error"));
            }
            let detached = std::panic::catch_unwind(AssertUnwindSafe(|| {
                self.apply(Command::Detach { conn });
            }));
            if detached.is_err() {
                tracing::error!(conn, "detaching the connection after a panic panicked too");
            }
        }
    }

    /// Applies one session command.
    pub fn apply(&mut self, command: Command) {
        self.apply_command(command);
        self.count_subscriptions();
    }

    fn apply_command(&mut self, command: Command) {
        match command {
            Command::Attach { conn, outbox } => self.index.attach(conn, outbox),
            Command::Detach { conn } => {
                if let Some(outbox) = self.index.outbox(conn) {
                    let peak = outbox.peak_bytes();
                    self.stats
                        .peak_outbox_bytes
                        .fetch_max(peak, Ordering::Relaxed);
                }
                self.index.detach(conn);
                self.throttles.detach(conn);
            }
            Command::Subscribe {
                conn,
                all,
                added,
                from,
                interval,
                known,
                done,
            } => {
                // A session may know of ids the registry gave out whose
                // first tick is still on its way here.
                if known > 0 {
                    self.meet(known as SymbolId - 1);
                }
                let added = if all && interval.is_none() {
                    // A plain `*` is told of what has been announced: the
                    // symbols it names that have, and any announced since
                    // the session looked. The others it is told of when
                    // they first trade (`announce`).
                    let announced = |&id: &SymbolId| self.symbols[id as usize].announced;
                    let later = known as SymbolId..self.symbols.len() as SymbolId;
                    added.into_iter().chain(later).filter(announced).collect()
                } else {
                    added
                };
                match (interval, self.index.outbox(conn).cloned()) {
                    (Some(interval), Some(outbox)) => {
                        let now = Instant::now();
                        for &id in &added {
                            // The client is sent the newest tick next (as a
                            // snapshot or the end of a replay).
                            let seq = self.symbols[id as usize].last.map_or(0, |tick| tick.seq);
                            self.throttles
                                .subscribe(conn, &outbox, id, interval, seq, now);
                        }
                    }
                    (Some(_), None) => {}
                    (None, _) if all => self.index.subscribe_all(conn),
                    (None, _) => self.index.subscribe(conn, &added),
                }
                if let Some(outbox) = self.index.outbox(conn).cloned() {
                    // A first `*` lists every symbol in server order: that
                    // reply is the same for everyone.
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
                    outbox.push_replies(frames);
                }
                let _ = done.send(());
            }
            Command::Unsubscribe {
                conn,
                removed,
                known,
                done,
            } => {
                if known > 0 {
                    self.meet(known as SymbolId - 1);
                }
                self.index.unsubscribe(conn, &removed, known);
                self.throttles.unsubscribe(conn, &removed);
                if let Some(outbox) = self.index.outbox(conn) {
                    outbox.forget_symbols(&removed);
                    let everything = removed.len() == self.symbols.len()
                        && removed.windows(2).all(|w| w[0] < w[1]);
                    let reply = if everything {
                        self.all_unsubscribed
                            .get_or_insert_with(|| names_reply(&self.symbols, &removed, false))
                            .clone()
                    } else {
                        names_reply(&self.symbols, &removed, false)
                    };
                    outbox.push_reply(reply);
                }
                let _ = done.send(());
            }
            Command::Quotes { reply } => {
                let _ = reply.send(self.symbols.iter().map(|state| state.last).collect());
            }
        }
    }
}

/// Counts what a push did.
fn count_push(stats: &Stats, pushed: Pushed) {
    match pushed {
        Pushed::Queued | Pushed::Dropped => {}
        Pushed::Conflated => Stats::add(&stats.conflated, 1),
        Pushed::ClosedSlow => {
            tracing::info!("closed a client that stayed behind: slow consumer");
        }
    }
}

/// Resolves at `deadline`, or never without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::outbox::OutboxLimits;

    fn outbox() -> Arc<Outbox> {
        Arc::new(Outbox::new(OutboxLimits {
            max_bytes: 1 << 20,
            slow_consumer_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
        }))
    }

    fn subscribe(conn: ConnId, added: Vec<SymbolId>) -> (Command, oneshot::Receiver<()>) {
        let (done, applied) = oneshot::channel();
        let command = Command::Subscribe {
            conn,
            all: false,
            added,
            from: HashMap::new(),
            interval: None,
            known: 2,
            done,
        };
        (command, applied)
    }

    #[test]
    fn a_panic_applying_one_connections_command_closes_only_that_connection() {
        let symbols =
            Arc::new(Symbols::fixed([("AAPL".to_string(), 2), ("MSFT".to_string(), 2)]).unwrap());
        let stats = Arc::new(Stats::default());
        let (mut fanout, _handle, _commands) = Fanout::new(symbols, 16, stats.clone());
        let (buggy, fine) = (outbox(), outbox());
        fanout.apply_isolated(Command::Attach {
            conn: 1,
            outbox: buggy.clone(),
        });
        fanout.apply_isolated(Command::Attach {
            conn: 2,
            outbox: fine.clone(),
        });
        // A symbol id no session would send: the fan-out indexes past its
        // tables, as a bug would make it.
        let (command, _) = subscribe(1, vec![99]);
        fanout.apply_isolated(command);
        assert_eq!(stats.connection_panics.load(Ordering::Relaxed), 1);
        assert!(buggy.is_closing(), "the connection it was for is closed");
        assert!(fanout.index.outbox(1).is_none(), "and detached");
        assert!(!fine.is_closing());
        // The fan-out goes on serving the others.
        let (command, mut applied) = subscribe(2, vec![0]);
        fanout.apply_isolated(command);
        assert!(applied.try_recv().is_ok(), "the next subscribe is answered");
        assert_eq!(stats.connection_panics.load(Ordering::Relaxed), 1);
    }
}
