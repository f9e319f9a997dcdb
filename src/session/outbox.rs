//! `Outbox`: one connection's pending output, and where backpressure
//! happens.
//!
//! The `fanout` pushes shared tick frames in, the session's reader pushes
//! replies (`subscribed`, snapshots, `pong`, errors) in, and the session's
//! `writer` takes everything queued at once and sends it in vectored writes.
//!
//! Backpressure, in three steps, all per connection:
//! 1. **Bounded queue.** Ticks queue in order while the queued bytes stay
//!    under `max_bytes`.
//! 2. **Conflate.** Past `max_bytes` the client is *behind*: from then on
//!    only the newest tick of each symbol is kept (the client sees a `seq`
//!    jump and current prices once it reads again). Memory stays bounded by
//!    one frame per subscribed symbol.
//! 3. **Close.** A client still behind after `slow_consumer_timeout` (it
//!    has not caught up since falling behind: its writer has not once
//!    found the outbox empty or sent a whole batch without the socket
//!    filling up) is closed with 1008 `slow consumer`. The writer also
//!    closes a client whose socket accepts no byte at all for
//!    `write_timeout`, which covers one that only has replies pending.
//!
//! Replies never conflate. Their bytes are counted apart, and the session
//! reader stops reading requests (and pings) while more than `max_bytes` of
//! replies wait; each request is also answered before the next is read.
//! So a client that sends without reading the answers is held back by TCP
//! rather than by the server's memory.
//!
//! Memory per connection is therefore bounded by about twice `max_bytes`
//! (one batch in the writer's hands, up to `max_bytes` more queued) plus one
//! frame per subscribed symbol while behind, plus at most one request's
//! replies over the limit (a `*` subscribe's snapshots).
//!
//! Exactly one close frame is ever queued: the first [`Outbox::close`] wins.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;
use tokio::sync::Notify;

use crate::protocol::frame::{close_frame, ping_frame};
use crate::protocol::ProtocolError;
use crate::stats::Stats;
use crate::tick::SymbolId;

/// Limits of one outbox.
#[derive(Clone, Copy, Debug)]
pub struct OutboxLimits {
    /// Queued tick bytes past which the client counts as behind and its
    /// ticks are conflated.
    pub max_bytes: usize,
    /// How long a client may stay behind before it is closed with 1008.
    pub slow_consumer_timeout: Duration,
    /// How long the socket may accept no byte at all, while output waits,
    /// before the client is closed with 1008 (catches a client that stops
    /// reading while only replies, not ticks, are pending).
    pub write_timeout: Duration,
}

/// What happened to a pushed tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued in order.
    Queued,
    /// Queued in place of an older tick of the same symbol, or the push
    /// made the client start conflating.
    Conflated,
    /// This push found the client behind for too long and closed it.
    ClosedSlow,
    /// The outbox is closing; the tick was dropped.
    Dropped,
}

/// What the writer should do next.
#[derive(Debug)]
pub enum Take {
    /// Frames were moved into the writer's batch.
    Frames,
    /// Nothing to send: wait for [`Outbox::changed`].
    Idle,
    /// Send this close frame, then end the connection.
    Close(Bytes),
    /// End the connection without a close frame (the peer is gone).
    Abort,
}

#[derive(Debug)]
enum Closing {
    Open,
    /// A close frame waits to be sent: after what is queued, or at once
    /// with everything queued dropped (`discard`).
    Pending {
        /// The close frame.
        frame: Bytes,
        /// Drop pending output instead of sending it first.
        discard: bool,
    },
    /// The writer has taken the close frame.
    Taken,
    /// No close frame will be sent.
    Aborted,
}

/// Laid out in declaration order (`repr(C)`): the fields every tick push
/// reads and writes come first and share the mutex's cache lines; the
/// conflation map, touched only while a client is behind, comes last.
#[derive(Debug)]
#[repr(C)]
struct State {
    /// Frames in send order.
    queue: VecDeque<Bytes>,
    /// Bytes of ticks in `queue`.
    tick_bytes: usize,
    /// Bytes of replies in `queue`.
    reply_bytes: usize,
    /// Bytes of the frames in `latest` (0 exactly when it is empty).
    latest_bytes: usize,
    /// Highest `tick_bytes + reply_bytes + latest` seen, for tests and stats.
    peak_bytes: usize,
    /// When the client fell behind; `None` while it keeps up.
    behind_since: Option<Instant>,
    closing: Closing,
    /// While behind: the newest tick frame per symbol, sent after `queue`.
    latest: IndexMap<SymbolId, Bytes>,
}

/// One connection's pending output. See the module docs.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    /// Wakes the writer: frames arrived or a close was requested.
    changed: Notify,
    /// Wakes the reader: replies fell back under the limit.
    drained: Notify,
    limits: OutboxLimits,
    /// The client asked for `ticks` batches (`"batch":true`).
    batch: AtomicBool,
    /// A frame arrived from the peer since the last ping.
    heard: AtomicBool,
    /// Where slow-consumer closes are counted, if anywhere.
    stats: Option<Arc<Stats>>,
}

impl Outbox {
    /// An empty outbox with `limits`.
    pub fn new(limits: OutboxLimits) -> Self {
        Outbox {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                tick_bytes: 0,
                reply_bytes: 0,
                latest: IndexMap::new(),
                latest_bytes: 0,
                behind_since: None,
                closing: Closing::Open,
                peak_bytes: 0,
            }),
            changed: Notify::new(),
            drained: Notify::new(),
            limits,
            batch: AtomicBool::new(false),
            heard: AtomicBool::new(true),
            stats: None,
        }
    }

    /// The peer sent a frame: it is alive.
    pub fn heard(&self) {
        self.heard.store(true, Ordering::Relaxed);
    }

    /// Called every `interval` by whoever pings this connection: pings the
    /// peer, or closes with 1008 if it sent nothing since the last ping.
    /// Returns false once the connection is closing.
    pub fn ping_or_close(&self, interval: Duration) -> bool {
        {
            let state = self.lock();
            if !matches!(state.closing, Closing::Open) {
                return false;
            }
            if state.reply_bytes > self.limits.max_bytes {
                // The reader is holding back until the peer reads its
                // replies, so it cannot hear a pong; the write timeout
                // covers a peer that reads nothing.
                return true;
            }
        }
        if !self.heard.swap(false, Ordering::Relaxed) {
            let reason = format!("no pong within {} s", interval.as_secs_f64());
            self.close(close_frame(1008, &reason));
            return false;
        }
        self.push_reply(ping_frame());
        true
    }

    /// Switches `ticks` batches on or off for what is sent from now on.
    pub fn set_batch(&self, batch: bool) {
        self.batch.store(batch, Ordering::Relaxed);
    }

    /// Whether ticks go out in `ticks` batches.
    pub fn batches(&self) -> bool {
        self.batch.load(Ordering::Relaxed)
    }

    /// Counts this outbox's slow-consumer close in `stats`.
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Self {
        self.stats = Some(stats);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind, never a
        // broken invariant worth refusing service for.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a tick frame of `symbol` (the shared frame from the fan-out).
    pub fn push_tick(&self, symbol: SymbolId, frame: &Bytes, now: Instant) -> Pushed {
        let mut state = self.lock();
        if !matches!(state.closing, Closing::Open) {
            return Pushed::Dropped;
        }
        let was_empty = state.queue.is_empty() && state.latest_bytes == 0;
        let pushed = if let Some(since) = state.behind_since {
            if now.saturating_duration_since(since) >= self.limits.slow_consumer_timeout {
                drop(state);
                return if self.close_slow() {
                    Pushed::ClosedSlow
                } else {
                    Pushed::Dropped
                };
            }
            Self::keep_newest(&mut state, symbol, frame);
            Pushed::Conflated
        } else if state.tick_bytes + frame.len() > self.limits.max_bytes {
            state.behind_since = Some(now);
            Self::keep_newest(&mut state, symbol, frame);
            Pushed::Conflated
        } else {
            state.tick_bytes += frame.len();
            state.queue.push_back(frame.clone());
            Pushed::Queued
        };
        Self::note_peak(&mut state);
        drop(state);
        if was_empty {
            self.changed.notify_one();
        }
        pushed
    }

    /// Queues an `error` reply, counted by its code.
    pub fn push_error(&self, error: &ProtocolError) {
        if let Some(stats) = &self.stats {
            stats.count_error(error.code);
        }
        self.push_reply(error.to_frame());
    }

    /// Where this outbox's connection is counted, if anywhere.
    pub fn stats(&self) -> Option<&Arc<Stats>> {
        self.stats.as_ref()
    }

    /// Queues a reply frame (never conflated, always in order).
    pub fn push_reply(&self, frame: Bytes) {
        self.push_replies(std::iter::once(frame));
    }

    /// Queues several reply frames as one unit, in order.
    pub fn push_replies(&self, frames: impl IntoIterator<Item = Bytes>) {
        let mut state = self.lock();
        if !matches!(state.closing, Closing::Open) {
            return;
        }
        let was_empty = state.queue.is_empty() && state.latest_bytes == 0;
        for frame in frames {
            state.reply_bytes += frame.len();
            state.queue.push_back(frame);
        }
        Self::note_peak(&mut state);
        drop(state);
        if was_empty {
            self.changed.notify_one();
        }
    }

    /// Forgets any conflated tick of `symbols`, so nothing of theirs is
    /// sent after an `unsubscribed` reply.
    pub fn forget_symbols(&self, symbols: &[SymbolId]) {
        let mut state = self.lock();
        if !state.latest.is_empty() {
            for symbol in symbols {
                if let Some(old) = state.latest.swap_remove(symbol) {
                    state.latest_bytes -= old.len();
                }
            }
        }
    }

    /// Closes with `frame` (a complete close frame) once what is already
    /// queued has been sent, unless a close is already under way; nothing
    /// new is queued from now on. Returns whether this call decided the
    /// close.
    pub fn close(&self, frame: Bytes) -> bool {
        self.decide_close(frame, false)
    }

    /// Closes with 1008 `slow consumer` at once, dropping pending output,
    /// unless a close is already under way; counts it and returns whether
    /// this call decided the close.
    pub fn close_slow(&self) -> bool {
        let decided = self.decide_close(close_frame(1008, "slow consumer"), true);
        if decided {
            if let Some(stats) = &self.stats {
                Stats::add(&stats.slow_consumer_closes, 1);
            }
        }
        decided
    }

    fn decide_close(&self, frame: Bytes, discard: bool) -> bool {
        let mut state = self.lock();
        if !matches!(state.closing, Closing::Open) {
            return false;
        }
        if discard {
            Self::discard_locked(&mut state);
        }
        state.closing = Closing::Pending { frame, discard };
        drop(state);
        self.changed.notify_one();
        self.drained.notify_waiters();
        true
    }

    /// Ends the connection without a close frame (the peer is gone).
    pub fn abort(&self) {
        let mut state = self.lock();
        if matches!(state.closing, Closing::Open | Closing::Pending { .. }) {
            state.closing = Closing::Aborted;
        }
        Self::discard_locked(&mut state);
        drop(state);
        self.changed.notify_one();
        self.drained.notify_waiters();
    }

    fn discard_locked(state: &mut State) {
        state.queue.clear();
        state.latest.clear();
        state.latest_bytes = 0;
        state.tick_bytes = 0;
        state.reply_bytes = 0;
    }

    /// True when the writer must not start another frame: a close that
    /// drops pending output, or an abort.
    pub fn stop_sending(&self) -> bool {
        matches!(
            self.lock().closing,
            Closing::Pending { discard: true, .. } | Closing::Aborted
        )
    }

    /// Conflation: `frame` takes the place of any older unsent tick of
    /// `symbol` in the while-behind map.
    fn keep_newest(state: &mut State, symbol: SymbolId, frame: &Bytes) {
        if let Some(old) = state.latest.insert(symbol, frame.clone()) {
            state.latest_bytes -= old.len();
        }
        state.latest_bytes += frame.len();
    }

    fn note_peak(state: &mut State) {
        let total = state.tick_bytes + state.reply_bytes + state.latest_bytes;
        state.peak_bytes = state.peak_bytes.max(total);
    }

    /// Moves everything queued into `batch` (in send order).
    pub fn take(&self, batch: &mut VecDeque<Bytes>) -> Take {
        let mut state = self.lock();
        let empty = state.queue.is_empty() && state.latest.is_empty();
        match &state.closing {
            Closing::Open => {}
            Closing::Pending { frame, discard } if *discard || empty => {
                let frame = frame.clone();
                state.closing = Closing::Taken;
                return Take::Close(frame);
            }
            // Send what was queued before the close first.
            Closing::Pending { .. } => {}
            Closing::Taken | Closing::Aborted => return Take::Abort,
        }
        if empty {
            // Everything sent: whatever the client was behind on, it has
            // caught up.
            state.behind_since = None;
            return Take::Idle;
        }
        let reader_may_wait = state.reply_bytes > self.limits.max_bytes;
        if batch.is_empty() {
            std::mem::swap(batch, &mut state.queue);
        } else {
            batch.extend(state.queue.drain(..));
        }
        batch.extend(state.latest.drain(..).map(|(_, frame)| frame));
        state.latest_bytes = 0;
        state.tick_bytes = 0;
        state.reply_bytes = 0;
        drop(state);
        if reader_may_wait {
            self.drained.notify_waiters();
        }
        Take::Frames
    }

    /// The writer sent a whole batch without the socket filling up: the
    /// client keeps up, so it is no longer behind.
    pub fn caught_up(&self) {
        let mut state = self.lock();
        // Conflated ticks still waiting must go out before any newer tick
        // of their symbols, which would be queued ahead of them once the
        // client no longer counts as behind: stay behind until they are
        // sent.
        if state.latest.is_empty() {
            state.behind_since = None;
        }
    }

    /// Gives up sending what was queued before a close: the close frame
    /// goes out next (after a half-sent frame). For a peer that takes too
    /// long to read the rest.
    pub fn give_up_flush(&self) {
        let mut state = self.lock();
        if let Closing::Pending { discard, .. } = &mut state.closing {
            *discard = true;
            Self::discard_locked(&mut state);
        }
    }

    /// This outbox's limits.
    pub fn limits(&self) -> OutboxLimits {
        self.limits
    }

    /// Resolves when frames were pushed or a close was requested since the
    /// last [`take`](Self::take) found nothing.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Resolves once queued replies are at most `max_bytes` (or the outbox
    /// is closing). The reader awaits this before handling each request.
    pub async fn replies_drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.lock();
                if state.reply_bytes <= self.limits.max_bytes
                    || !matches!(state.closing, Closing::Open)
                {
                    return;
                }
            }
            notified.await;
        }
    }

    /// True once a close (with or without frame) has been decided.
    pub fn is_closing(&self) -> bool {
        !matches!(self.lock().closing, Closing::Open)
    }

    /// The most bytes this outbox has held at once.
    pub fn peak_bytes(&self) -> usize {
        self.lock().peak_bytes
    }

    /// True while the client is behind (its ticks are being conflated).
    pub fn is_behind(&self) -> bool {
        self.lock().behind_since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8, len: usize) -> Bytes {
        Bytes::from(vec![n; len])
    }

    fn outbox(max_bytes: usize) -> Outbox {
        Outbox::new(OutboxLimits {
            max_bytes,
            slow_consumer_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
        })
    }

    #[test]
    fn queues_in_order_until_the_limit_then_keeps_newest_per_symbol() {
        let ob = outbox(300);
        let now = Instant::now();
        assert_eq!(ob.push_tick(0, &frame(1, 100), now), Pushed::Queued);
        assert_eq!(ob.push_tick(1, &frame(2, 100), now), Pushed::Queued);
        assert_eq!(ob.push_tick(0, &frame(3, 100), now), Pushed::Queued);
        // Over the limit: conflation starts.
        assert_eq!(ob.push_tick(1, &frame(4, 100), now), Pushed::Conflated);
        assert_eq!(ob.push_tick(1, &frame(5, 100), now), Pushed::Conflated);
        assert_eq!(ob.push_tick(0, &frame(6, 100), now), Pushed::Conflated);
        assert!(ob.is_behind());
        let mut batch = VecDeque::new();
        assert!(matches!(ob.take(&mut batch), Take::Frames));
        let firsts: Vec<u8> = batch.iter().map(|f| f[0]).collect();
        assert_eq!(firsts, [1, 2, 3, 5, 6]);
        assert!(ob.peak_bytes() <= 300 + 2 * 100);
        // Still behind until a take finds the outbox empty.
        assert!(ob.is_behind());
        assert!(matches!(ob.take(&mut VecDeque::new()), Take::Idle));
        assert!(!ob.is_behind());
    }

    #[test]
    fn closes_a_client_behind_for_too_long_with_one_close_frame() {
        let ob = outbox(100);
        let start = Instant::now();
        ob.push_tick(0, &frame(1, 100), start);
        assert_eq!(ob.push_tick(0, &frame(2, 100), start), Pushed::Conflated);
        let later = start + Duration::from_secs(5);
        assert_eq!(ob.push_tick(0, &frame(3, 100), later), Pushed::ClosedSlow);
        assert_eq!(ob.push_tick(0, &frame(4, 100), later), Pushed::Dropped);
        assert!(!ob.close(close_frame(1001, "server shutting down")));
        match ob.take(&mut VecDeque::new()) {
            Take::Close(f) => assert_eq!(&f[..], &close_frame(1008, "slow consumer")[..]),
            other => panic!("expected close, got {other:?}"),
        }
        assert!(matches!(ob.take(&mut VecDeque::new()), Take::Abort));
    }

    #[test]
    fn unsubscribed_symbols_leave_no_conflated_tick_behind() {
        let ob = outbox(10);
        let now = Instant::now();
        ob.push_tick(7, &frame(1, 50), now);
        ob.push_tick(8, &frame(2, 50), now);
        ob.forget_symbols(&[7]);
        let mut batch = VecDeque::new();
        ob.take(&mut batch);
        assert_eq!(batch.iter().map(|f| f[0]).collect::<Vec<_>>(), [2]);
    }
}
