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
//! `subscribed` reply and the snapshots itself, which is what guarantees a
//! client its snapshot before any tick of a symbol and every later tick in
//! order.
//!
//! If the fan-out falls a whole ring behind the feed, the ring says how
//! many ticks were lost; they are counted in [`Stats::ring_lagged`] and
//! logged, and clients see the `seq` gap.

pub mod encode;
pub mod index;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::protocol::frame::close_frame;
use crate::protocol::ServerMsg;
use crate::ring::{Cursor, Read};
use crate::session::outbox::{Outbox, Pushed};
use crate::stats::Stats;
use crate::tick::{SymbolId, SymbolTable, Tick};
use encode::{tick_frame, TickKind};
use index::SubscriberIndex;

/// Identifies one WebSocket connection for the server's lifetime.
pub type ConnId = u64;

/// Most ticks handled per pass before the fan-out looks at commands again
/// and lets the writers run.
const BATCH: usize = 1024;

/// Most outbox pushes per pass: with many subscribers per tick, a pass ends
/// after this much work even if fewer than [`BATCH`] ticks were read, so
/// writers are never starved for long.
const PUSH_BUDGET: usize = 64 * 1024;

/// Capacity of the command channel; a session waits when it is full.
pub const COMMAND_CAPACITY: usize = 4096;

/// The `subscribed` (or `unsubscribed`) reply naming `ids`.
fn names_reply(symbols: &SymbolTable, ids: &[SymbolId], subscribed: bool) -> Bytes {
    let names: Vec<&str> = ids.iter().map(|&id| symbols.name(id)).collect();
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
    /// snapshot of each of them that has traded.
    Subscribe {
        /// The connection.
        conn: ConnId,
        /// The connection is now subscribed to `*`.
        all: bool,
        /// Symbols this request newly subscribed.
        added: Vec<SymbolId>,
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
        /// Fired once the reply is queued.
        done: oneshot::Sender<()>,
    },
    /// The connection is gone.
    Detach {
        /// The connection.
        conn: ConnId,
    },
    /// The last tick of every symbol (`None` if it has not traded yet).
    Quotes {
        /// Where to send them.
        reply: oneshot::Sender<Vec<Option<Tick>>>,
    },
}

/// A session's way to reach the fan-out.
#[derive(Clone, Debug)]
pub struct FanoutHandle {
    commands: mpsc::Sender<Command>,
}

impl FanoutHandle {
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

/// The fan-out stage. See the module docs.
#[derive(Debug)]
pub struct Fanout {
    symbols: Arc<SymbolTable>,
    index: SubscriberIndex,
    /// Last tick of each symbol, for snapshots and `/symbols`.
    last: Vec<Option<Tick>>,
    /// The snapshot frame of each symbol, built on first demand after each
    /// tick and shared by every subscriber that asks before the next one:
    /// a thousand clients subscribing to `*` share one set of snapshots.
    snapshot_frames: Vec<Option<Bytes>>,
    /// The `subscribed` reply listing every symbol, built once.
    all_subscribed: Option<Bytes>,
    /// The `unsubscribed` reply listing every symbol, built once.
    all_unsubscribed: Option<Bytes>,
    stats: Arc<Stats>,
}

impl Fanout {
    /// A fan-out over `symbols`, and the handle sessions use to reach it.
    pub fn new(
        symbols: Arc<SymbolTable>,
        stats: Arc<Stats>,
    ) -> (Fanout, FanoutHandle, mpsc::Receiver<Command>) {
        let (commands, receiver) = mpsc::channel(COMMAND_CAPACITY);
        let fanout = Fanout {
            index: SubscriberIndex::new(symbols.len()),
            last: vec![None; symbols.len()],
            snapshot_frames: vec![None; symbols.len()],
            all_subscribed: None,
            all_unsubscribed: None,
            symbols,
            stats,
        };
        (fanout, FanoutHandle { commands }, receiver)
    }

    /// Runs until `shutdown` fires, then closes every connection with 1001.
    pub async fn run(
        mut self,
        mut cursor: Cursor<Tick>,
        wake: Arc<Notify>,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) {
        loop {
            // Checked here too: a saturated fan-out never reaches the
            // `select!` below.
            if shutdown.is_cancelled() {
                break;
            }
            while let Ok(command) = commands.try_recv() {
                self.apply(command);
            }
            if self.drain(&mut cursor) == Pass::Full {
                // More may be waiting: let writers run, then continue.
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                command = commands.recv() => match command {
                    Some(command) => self.apply(command),
                    None => break,
                },
                () = wake.notified() => {}
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
        pass
    }

    /// Serializes `tick` once and queues it to each of its subscribers;
    /// returns how many that was.
    pub fn dispatch(&mut self, tick: &Tick, now: Instant) -> usize {
        let symbol = tick.symbol;
        self.last[symbol as usize] = Some(*tick);
        self.snapshot_frames[symbol as usize] = None;
        if !self.index.has_subscribers(symbol) {
            return 0;
        }
        let frame = tick_frame(TickKind::Tick, self.symbols.name(symbol), tick);
        let mut recipients = 0;
        for outbox in self.index.subscribers(symbol) {
            recipients += 1;
            match outbox.push_tick(symbol, &frame, now) {
                Pushed::Queued | Pushed::Dropped => {}
                Pushed::Conflated => Stats::add(&self.stats.conflated, 1),
                Pushed::ClosedSlow => {
                    tracing::info!("closed a client that stayed behind: slow consumer");
                }
            }
        }
        recipients
    }

    /// The shared snapshot frame of `symbol`, if it has traded.
    fn snapshot_frame(&mut self, symbol: SymbolId) -> Option<Bytes> {
        let tick = self.last[symbol as usize]?;
        let symbols = &self.symbols;
        Some(
            self.snapshot_frames[symbol as usize]
                .get_or_insert_with(|| tick_frame(TickKind::Snapshot, symbols.name(symbol), &tick))
                .clone(),
        )
    }

    /// Applies one session command.
    pub fn apply(&mut self, command: Command) {
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
            }
            Command::Subscribe {
                conn,
                all,
                added,
                done,
            } => {
                if all {
                    self.index.subscribe_all(conn);
                } else {
                    self.index.subscribe(conn, &added);
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
                    let snapshots: Vec<Bytes> = added
                        .iter()
                        .filter_map(|&id| self.snapshot_frame(id))
                        .collect();
                    outbox.push_replies(std::iter::once(reply).chain(snapshots));
                }
                let _ = done.send(());
            }
            Command::Unsubscribe {
                conn,
                removed,
                done,
            } => {
                self.index.unsubscribe(conn, &removed);
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
                let _ = reply.send(self.last.clone());
            }
        }
    }
}
