//! `Outbox`: one connection's pending output, and where backpressure
//! happens; [`Outboxes`]: every outbox of one shard, and which of them
//! have something to send.
//!
//! The `fanout` pushes shared tick frames in, the connection's requests
//! push replies (`subscribed`, snapshots, `pong`, errors) in, and the
//! shard's writer takes everything queued at once after each pass and
//! sends it in as few system calls as it can (usually one). Both run on
//! the shard's own thread, so an outbox is plain data: no lock, no
//! wake-up.
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
//! Replies never conflate. Their bytes are counted apart, and the shard
//! stops reading a connection's requests (and pings) while more than
//! `max_bytes` of its replies wait. So a client that sends without reading
//! the answers is held back by TCP rather than by the server's memory.
//!
//! Memory per connection is therefore bounded by about twice `max_bytes`
//! (one batch in the writer's hands, up to `max_bytes` more queued) plus one
//! frame per subscribed symbol while behind, plus at most one request's
//! replies over the limit (a `*` subscribe's snapshots). An idle outbox
//! holds no heap memory: its emptied queue goes back to the shard's few
//! spare queues ([`Outboxes::recycle`]), so a connection written every
//! pass does not allocate and free a queue every pass either.
//!
//! The ticks of one pass that follow one another in a client's queue are
//! first kept as a run of indices into the pass ([`Outboxes::push_pass_tick`])
//! and queued when the pass ends ([`Outboxes::seal_pass`]): as one slice of
//! the pass's frames laid end to end when the run fills at least half of
//! that buffer, so the slice holds alive at most twice the bytes it counts,
//! and as the frames themselves otherwise.
//!
//! Exactly one close frame is ever queued: the first [`Outbox::close`] wins.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;

use crate::protocol::ProtocolError;
use crate::stats::Stats;
use crate::tick::SymbolId;
use crate::wire::close::{self, CloseCode};
use crate::wire::frame::{close_frame, ping_frame};

/// Limits of every outbox of a server (held once, by [`Outboxes`]).
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
    /// The client is behind: kept as its symbol's newest unsent tick, with
    /// no older one of that symbol waiting (nothing was dropped).
    Kept,
    /// The client is behind: took the place of an older unsent tick of the
    /// same symbol, which the client will never see.
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
    /// Nothing to send.
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
        /// The close frame (boxed: most outboxes never close this way,
        /// and an outbox stays small).
        frame: Box<Bytes>,
        /// Drop pending output instead of sending it first.
        discard: bool,
    },
    /// The writer has taken the close frame.
    Taken,
    /// No close frame will be sent.
    Aborted,
}

/// See the module docs.
#[derive(Debug)]
pub struct Outbox {
    /// Frames in send order.
    queue: VecDeque<Bytes>,
    /// Ticks of the pass in progress queued after `queue`, consecutive in
    /// it, as indices into the pass's frames ([`Outboxes::seal_pass`]
    /// turns them into frames). Empty outside a pass.
    run: Range<PassIndex>,
    /// Bytes of ticks in `queue` and `run`. Every byte count of an outbox fits in
    /// `u32`: it is bounded by twice `max_bytes` plus one frame per
    /// symbol, and `max_bytes` is checked to be far below 4 GiB.
    tick_bytes: u32,
    /// Bytes of replies in `queue`.
    reply_bytes: u32,
    /// Bytes of the frames in `latest` (0 exactly when it is empty).
    latest_bytes: u32,
    /// While behind: the newest unsent tick of each symbol, in first-
    /// conflated order.
    /// Boxed, and only while behind: most clients never are, and an
    /// outbox stays small.
    latest: Option<Box<IndexMap<SymbolId, Bytes>>>,
    /// Since when the client is behind (its ticks conflate).
    behind_since: Option<Instant>,
    closing: Closing,
    /// The most bytes queued at once.
    peak_bytes: u32,
    /// The client asked for `ticks` batches (`"batch":true`).
    batch: bool,
    /// A frame arrived from the peer since the last ping.
    heard: bool,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Outbox {
            queue: VecDeque::new(),
            run: 0..0,
            tick_bytes: 0,
            reply_bytes: 0,
            latest_bytes: 0,
            latest: None,
            behind_since: None,
            closing: Closing::Open,
            peak_bytes: 0,
            batch: false,
            heard: true,
        }
    }

    /// The peer sent a frame: it is alive.
    pub fn heard(&mut self) {
        self.heard = true;
    }

    /// Called every `interval` by whoever pings this connection: pings the
    /// peer, or closes with 1008 if it sent nothing since the last ping.
    pub fn ping_or_close(&mut self, interval: Duration, limits: &OutboxLimits) {
        if !matches!(self.closing, Closing::Open) {
            return;
        }
        if bytes(self.reply_bytes) > limits.max_bytes {
            // Reading is held back until the peer reads its replies, so
            // it cannot hear a pong; the write timeout covers a peer that
            // reads nothing.
            return;
        }
        if !std::mem::replace(&mut self.heard, false) {
            let reason = format!("no pong within {} s", interval.as_secs_f64());
            self.close(close_frame(close::POLICY_VIOLATION, &reason));
            return;
        }
        self.push_reply(ping_frame());
    }

    /// Switches `ticks` batches on or off for what is sent from now on.
    pub fn set_batch(&mut self, batch: bool) {
        self.batch = batch;
    }

    /// Whether ticks go out in `ticks` batches.
    pub fn batches(&self) -> bool {
        self.batch
    }

    /// Whether nothing waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
            && self.run.is_empty()
            && self.latest_bytes == 0
            && !self.close_pending()
    }

    fn close_pending(&self) -> bool {
        matches!(self.closing, Closing::Pending { .. })
    }

    /// Queues a tick frame of `symbol` (the shared frame from the fan-out).
    pub fn push_tick(
        &mut self,
        symbol: SymbolId,
        frame: &Bytes,
        now: Instant,
        limits: &OutboxLimits,
    ) -> Pushed {
        debug_assert!(self.run.is_empty(), "a pass's run is sealed first");
        self.push_tick_with(symbol, frame, now, limits, |outbox| {
            outbox.queue.push_back(frame.clone())
        })
    }

    /// Queues tick `index` of the pass in progress, whose frames so far
    /// are `frames`: as [`Outbox::push_tick`], except that ticks that
    /// follow one another in the pass queue as one run of indices, which
    /// the end of the pass makes into frames ([`Outbox::seal_run`]).
    fn push_pass_tick(
        &mut self,
        symbol: SymbolId,
        frames: &[Bytes],
        index: PassIndex,
        now: Instant,
        limits: &OutboxLimits,
    ) -> Pushed {
        let frame = &frames[index as usize];
        self.push_tick_with(symbol, frame, now, limits, |outbox| {
            if outbox.batch {
                // `ticks` batches are built from one frame per tick.
                outbox.queue.push_back(frame.clone());
            } else if !outbox.run.is_empty() && outbox.run.end == index {
                outbox.run.end += 1;
            } else {
                outbox.seal_run(frames, &[], None);
                outbox.run = index..index + 1;
            }
        })
    }

    /// The part of pushing a tick that does not depend on how it is
    /// queued: backpressure decides, and `queue` queues it in order.
    fn push_tick_with(
        &mut self,
        symbol: SymbolId,
        frame: &Bytes,
        now: Instant,
        limits: &OutboxLimits,
        queue: impl FnOnce(&mut Self),
    ) -> Pushed {
        if !matches!(self.closing, Closing::Open) {
            return Pushed::Dropped;
        }
        let pushed = if let Some(since) = self.behind_since {
            if now.saturating_duration_since(since) >= limits.slow_consumer_timeout {
                return if self.close_slow() {
                    Pushed::ClosedSlow
                } else {
                    Pushed::Dropped
                };
            }
            self.keep_newest(symbol, frame)
        } else if bytes(self.tick_bytes) + frame.len() > limits.max_bytes {
            self.behind_since = Some(now);
            self.keep_newest(symbol, frame)
        } else {
            self.tick_bytes = self.tick_bytes.saturating_add(len(frame));
            queue(self);
            Pushed::Queued
        };
        self.note_peak();
        pushed
    }

    /// Queues the run of pass ticks as frames. With the pass's frames
    /// `joined` end to end (`starts`: where each begins, and where the
    /// last ends; `room`: the bytes the joined buffer holds on to, its
    /// capacity), a run of several ticks that fills at least half of that
    /// room (a `*` subscriber's) goes as one slice of it, written from one
    /// place without a copy. Anything shorter goes frame by frame, so that
    /// a slow client's queue never keeps a pass's buffer alive for a few of
    /// its frames: what a slice holds alive is at most twice what it
    /// counts.
    fn seal_run(&mut self, frames: &[Bytes], starts: &[u32], joined: Option<(&Bytes, usize)>) {
        let run = std::mem::replace(&mut self.run, 0..0);
        let (first, end) = (run.start as usize, run.end as usize);
        if let Some((joined, room)) = joined.filter(|_| end - first >= 2) {
            let (from, to) = (starts[first] as usize, starts[end] as usize);
            if 2 * (to - from) >= room {
                self.queue.push_back(joined.slice(from..to));
                return;
            }
        }
        self.queue.extend(frames[first..end].iter().cloned());
    }

    /// Queues a reply frame (never conflated, always in order).
    pub fn push_reply(&mut self, frame: Bytes) {
        self.push_replies(std::iter::once(frame));
    }

    /// Queues several reply frames as one unit, in order.
    pub fn push_replies(&mut self, frames: impl IntoIterator<Item = Bytes>) {
        if !matches!(self.closing, Closing::Open) {
            return;
        }
        for frame in frames {
            self.reply_bytes = self.reply_bytes.saturating_add(len(&frame));
            self.queue.push_back(frame);
        }
        self.note_peak();
    }

    /// Whether more than `max_bytes` of replies wait: the shard reads no
    /// further request from this client until they are sent.
    pub fn replies_backed_up(&self, limits: &OutboxLimits) -> bool {
        bytes(self.reply_bytes) > limits.max_bytes && matches!(self.closing, Closing::Open)
    }

    /// Forgets any conflated tick of `symbols`, so nothing of theirs is
    /// sent after an `unsubscribed` reply.
    pub fn forget_symbols(&mut self, symbols: &[SymbolId]) {
        if let Some(latest) = &mut self.latest {
            for symbol in symbols {
                if let Some(old) = latest.swap_remove(symbol) {
                    self.latest_bytes = self.latest_bytes.saturating_sub(len(&old));
                }
            }
            if latest.is_empty() {
                self.latest = None;
            }
        }
    }

    /// Closes with `frame` (a complete close frame) once what is already
    /// queued has been sent, unless a close is already under way; nothing
    /// new is queued from now on. Returns whether this call decided the
    /// close.
    pub fn close(&mut self, frame: Bytes) -> bool {
        self.decide_close(frame, false)
    }

    /// Closes with `code` and `reason` (see [`Outbox::close`]).
    pub fn close_with(&mut self, code: CloseCode, reason: &str) -> bool {
        self.close(close_frame(code, reason))
    }

    /// Closes with 1008 `slow consumer` at once, dropping pending output,
    /// unless a close is already under way; returns whether this call
    /// decided the close (the caller counts it).
    pub fn close_slow(&mut self) -> bool {
        self.decide_close(close_frame(close::POLICY_VIOLATION, "slow consumer"), true)
    }

    fn decide_close(&mut self, frame: Bytes, discard: bool) -> bool {
        if !matches!(self.closing, Closing::Open) {
            return false;
        }
        if discard {
            self.discard();
        }
        self.closing = Closing::Pending {
            frame: Box::new(frame),
            discard,
        };
        true
    }

    /// Ends the connection without a close frame (the peer is gone).
    pub fn abort(&mut self) {
        if matches!(self.closing, Closing::Open | Closing::Pending { .. }) {
            self.closing = Closing::Aborted;
        }
        self.discard();
    }

    fn discard(&mut self) {
        self.queue = VecDeque::new();
        self.run = 0..0;
        self.latest = None;
        self.latest_bytes = 0;
        self.tick_bytes = 0;
        self.reply_bytes = 0;
    }

    /// True when the writer must not start another frame: a close that
    /// drops pending output, or an abort.
    pub fn stop_sending(&self) -> bool {
        matches!(
            self.closing,
            Closing::Pending { discard: true, .. } | Closing::Aborted
        )
    }

    /// Conflation: `frame` takes the place of any older unsent tick of
    /// `symbol` in the while-behind map.
    fn keep_newest(&mut self, symbol: SymbolId, frame: &Bytes) -> Pushed {
        let latest = self.latest.get_or_insert_with(Default::default);
        self.latest_bytes = self.latest_bytes.saturating_add(len(frame));
        match latest.insert(symbol, frame.clone()) {
            Some(old) => {
                self.latest_bytes = self.latest_bytes.saturating_sub(len(&old));
                Pushed::Conflated
            }
            None => Pushed::Kept,
        }
    }

    fn note_peak(&mut self) {
        let total = self
            .tick_bytes
            .saturating_add(self.reply_bytes)
            .saturating_add(self.latest_bytes);
        self.peak_bytes = self.peak_bytes.max(total);
    }

    /// Moves everything queued into `batch` (in send order).
    pub fn take(&mut self, batch: &mut VecDeque<Bytes>) -> Take {
        debug_assert!(self.run.is_empty(), "a pass's run is sealed first");
        let empty = self.queue.is_empty() && self.latest_bytes == 0;
        match &self.closing {
            Closing::Open => {}
            Closing::Pending { frame, discard } if *discard || empty => {
                let frame = Bytes::clone(frame);
                self.closing = Closing::Taken;
                return Take::Close(frame);
            }
            // Send what was queued before the close first.
            Closing::Pending { .. } => {}
            Closing::Taken | Closing::Aborted => return Take::Abort,
        }
        if empty {
            // Everything sent: whatever the client was behind on, it has
            // caught up. An idle outbox gives its memory back, into
            // `batch` for the writer to recycle.
            self.behind_since = None;
            if self.queue.capacity() > batch.capacity() {
                std::mem::swap(batch, &mut self.queue);
            }
            self.queue = VecDeque::new();
            return Take::Idle;
        }
        if batch.is_empty() {
            std::mem::swap(batch, &mut self.queue);
        } else {
            batch.extend(self.queue.drain(..));
        }
        if let Some(latest) = self.latest.take() {
            batch.extend(latest.into_iter().map(|(_, frame)| frame));
        }
        self.latest_bytes = 0;
        self.tick_bytes = 0;
        self.reply_bytes = 0;
        Take::Frames
    }

    /// The writer sent a whole batch without the socket filling up: the
    /// client keeps up, so it is no longer behind.
    pub fn caught_up(&mut self) {
        // Conflated ticks still waiting must go out before any newer tick
        // of their symbols, which would be queued ahead of them once the
        // client no longer counts as behind: stay behind until they are
        // sent.
        if self.latest_bytes == 0 {
            self.behind_since = None;
        }
    }

    /// Gives up sending what was queued before a close: the close frame
    /// goes out next (after a half-sent frame). For a peer that takes too
    /// long to read the rest.
    pub fn give_up_flush(&mut self) {
        if let Closing::Pending { discard, .. } = &mut self.closing {
            *discard = true;
            self.discard();
        }
    }

    /// True once a close (with or without frame) has been decided.
    pub fn is_closing(&self) -> bool {
        !matches!(self.closing, Closing::Open)
    }

    /// True once the close frame has been handed to the writer, or the
    /// connection was aborted.
    pub fn is_finished(&self) -> bool {
        matches!(self.closing, Closing::Taken | Closing::Aborted)
    }

    /// True once the connection was aborted: nothing more is sent.
    pub fn is_aborted(&self) -> bool {
        matches!(self.closing, Closing::Aborted)
    }

    /// The most bytes this outbox has held at once.
    pub fn peak_bytes(&self) -> usize {
        bytes(self.peak_bytes)
    }

    /// True while the client is behind (its ticks are being conflated).
    pub fn is_behind(&self) -> bool {
        self.behind_since.is_some()
    }
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::new()
    }
}

/// A frame's length as an outbox counts it. A frame is at most one tick,
/// one reply or one `ticks` batch, far below 4 GiB.
fn len(frame: &Bytes) -> u32 {
    u32::try_from(frame.len()).unwrap_or(u32::MAX)
}

/// An outbox's byte count, for comparing with its limits.
fn bytes(count: u32) -> usize {
    count as usize
}

/// Every outbox of one shard, by connection key, and the keys of those
/// that were pushed to since the shard last wrote them.
///
/// Everything that queues output goes through here, so the shard's writer
/// visits exactly the connections that have something to send, once per
/// pass, however many frames each was pushed.
#[derive(Debug)]
pub struct Outboxes {
    slots: Vec<Option<Outbox>>,
    /// Keys pushed to since the last [`Outboxes::take_pushed`].
    pushed: Vec<usize>,
    /// Per key: already in `pushed`.
    listed: Vec<bool>,
    limits: OutboxLimits,
    stats: std::sync::Arc<Stats>,
    spare: SpareQueues,
    pass: PassFrames,
}

/// A tick's place among the frames of the pass in progress (a pass reads
/// at most a thousand ticks; an index this small keeps an outbox small).
pub type PassIndex = u16;

/// The tick frames of the pass in progress, each on its own (what a
/// client that gets a few of them queues) and all of them end to end
/// (what a client that gets most of them queues, as one slice).
#[derive(Debug, Default)]
struct PassFrames {
    frames: Vec<Bytes>,
    /// Where each frame starts in `joined`; then where the last ends.
    starts: Vec<u32>,
    joined: BytesMut,
    /// The keys whose outboxes started a run of this pass's ticks: those
    /// the pass's end seals (of the thousands pushed to in a shard's pass,
    /// often only these few since the last look at the ring).
    ran: Vec<usize>,
}

/// The spare queues of one shard: at most this many bytes of room in all.
const SPARE_QUEUE_BYTES: usize = 1 << 20;

/// A queue with room for more frames than this is freed rather than kept
/// spare (room for a burst is not kept for every pass).
const MAX_SPARE_QUEUE_FRAMES: usize = 1024;

/// Emptied frame queues kept for reuse by the shard's outboxes. Bounded by
/// [`SPARE_QUEUE_BYTES`] of room; what is over is freed.
#[derive(Debug, Default)]
struct SpareQueues {
    queues: Vec<VecDeque<Bytes>>,
    /// Room of the queues in `queues`, in bytes.
    bytes: usize,
}

impl SpareQueues {
    fn room(queue: &VecDeque<Bytes>) -> usize {
        queue.capacity() * std::mem::size_of::<Bytes>()
    }

    fn keep(&mut self, mut queue: VecDeque<Bytes>) {
        let room = Self::room(&queue);
        if room == 0
            || queue.capacity() > MAX_SPARE_QUEUE_FRAMES
            || self.bytes + room > SPARE_QUEUE_BYTES
        {
            return;
        }
        queue.clear();
        self.bytes += room;
        self.queues.push(queue);
    }

    /// Gives `outbox` a spare queue if it has no room of its own.
    fn lend(&mut self, outbox: &mut Outbox) {
        if outbox.queue.capacity() == 0 {
            if let Some(queue) = self.queues.pop() {
                self.bytes -= Self::room(&queue);
                outbox.queue = queue;
            }
        }
    }
}

impl Outboxes {
    /// No outboxes yet; every outbox has `limits`, and slow-consumer
    /// closes and errors count in `stats`.
    pub fn new(limits: OutboxLimits, stats: std::sync::Arc<Stats>) -> Self {
        Outboxes {
            slots: Vec::new(),
            pushed: Vec::new(),
            listed: Vec::new(),
            limits,
            stats,
            spare: SpareQueues::default(),
            pass: PassFrames::default(),
        }
    }

    /// Adds `frame` (a live tick's) to the pass in progress and returns
    /// its index there, for [`Outboxes::push_pass_tick`]; `None` once the
    /// pass holds as many frames as an index counts (far more than a pass
    /// of [`crate::fanout::Fanout::drain`] reads): push the frame itself.
    pub fn add_pass_frame(&mut self, frame: &Bytes) -> Option<PassIndex> {
        let pass = &mut self.pass;
        let index = PassIndex::try_from(pass.frames.len())
            .ok()
            .filter(|&index| index < PassIndex::MAX)?;
        if pass.starts.is_empty() {
            pass.starts.push(0);
        }
        pass.joined.extend_from_slice(frame);
        pass.starts
            .push(u32::try_from(pass.joined.len()).unwrap_or(u32::MAX));
        pass.frames.push(frame.clone());
        Some(index)
    }

    /// Queues tick `index` of the pass in progress to the outbox at
    /// `key`, as [`Outboxes::push_tick`] would its frame. Ticks that
    /// follow one another in the pass, as a `*` subscriber gets them, are
    /// queued together by [`Outboxes::seal_pass`]: one slice to write for
    /// the whole pass instead of a frame each.
    pub fn push_pass_tick(&mut self, key: usize, symbol: SymbolId, index: PassIndex, now: Instant) {
        let Some(outbox) = self.slots.get_mut(key).and_then(Option::as_mut) else {
            return;
        };
        Self::list(&mut self.listed, &mut self.pushed, key);
        self.spare.lend(outbox);
        let had_run = !outbox.run.is_empty();
        count_push(
            &self.stats,
            outbox.push_pass_tick(symbol, &self.pass.frames, index, now, &self.limits),
        );
        if !had_run && !outbox.run.is_empty() {
            self.pass.ran.push(key);
        }
    }

    /// Ends the pass: every outbox pushed pass ticks queues them as frames
    /// (see [`Outbox::seal_run`]), and the pass starts again from none.
    pub fn seal_pass(&mut self) {
        if self.pass.frames.is_empty() {
            return;
        }
        let pass = &mut self.pass;
        let room = pass.joined.capacity();
        let joined = std::mem::take(&mut pass.joined).freeze();
        for key in pass.ran.drain(..) {
            if let Some(outbox) = self.slots[key].as_mut() {
                if !outbox.run.is_empty() {
                    outbox.seal_run(&pass.frames, &pass.starts, Some((&joined, room)));
                }
            }
        }
        pass.frames.clear();
        pass.starts.clear();
        pass.joined = BytesMut::with_capacity(joined.len());
    }

    /// Queues an outbox's run of pass ticks frame by frame, before it is
    /// handed out mid-pass: whatever is queued next comes after them.
    fn seal_early(outbox: &mut Outbox, pass: &PassFrames) {
        if !outbox.run.is_empty() {
            outbox.seal_run(&pass.frames, &[], None);
        }
    }

    /// Keeps an emptied queue (a written batch, an idle outbox's) for the
    /// next outbox that needs one, within the spare queues' bound.
    pub fn recycle(&mut self, queue: VecDeque<Bytes>) {
        self.spare.keep(queue);
    }

    /// Puts `outbox` at `key` (a free key of the shard's connection slab).
    pub fn insert(&mut self, key: usize, outbox: Outbox) {
        if self.slots.len() <= key {
            self.slots.resize_with(key + 1, || None);
            self.listed.resize(key + 1, false);
        }
        self.slots[key] = Some(outbox);
    }

    /// Takes the outbox at `key` out.
    pub fn remove(&mut self, key: usize) -> Option<Outbox> {
        self.slots.get_mut(key)?.take()
    }

    /// The outbox at `key`, for reading its state.
    pub fn get(&self, key: usize) -> Option<&Outbox> {
        self.slots.get(key)?.as_ref()
    }

    /// The outbox at `key`, listed to be written after this pass, with room
    /// from the spare queues if it had none.
    pub fn get_mut(&mut self, key: usize) -> Option<&mut Outbox> {
        let outbox = self.slots.get_mut(key)?.as_mut()?;
        Self::list(&mut self.listed, &mut self.pushed, key);
        self.spare.lend(outbox);
        Self::seal_early(outbox, &self.pass);
        Some(outbox)
    }

    /// Lists `key` among those pushed to, once per pass.
    fn list(listed: &mut [bool], pushed: &mut Vec<usize>, key: usize) {
        if !listed[key] {
            listed[key] = true;
            pushed.push(key);
        }
    }

    /// The outbox at `key`, for the writer taking its frames (not listed
    /// again: what it takes is what it writes).
    pub fn get_for_writing(&mut self, key: usize) -> Option<&mut Outbox> {
        let outbox = self.slots.get_mut(key)?.as_mut()?;
        Self::seal_early(outbox, &self.pass);
        Some(outbox)
    }

    /// Queues a tick for `key`, counting what the push did.
    pub fn push_tick(&mut self, key: usize, symbol: SymbolId, frame: &Bytes, now: Instant) {
        // Field by field, so the counters and limits are borrowed beside
        // the outbox rather than copied for every tick.
        let Some(outbox) = self.slots.get_mut(key).and_then(Option::as_mut) else {
            return;
        };
        Self::list(&mut self.listed, &mut self.pushed, key);
        self.spare.lend(outbox);
        Self::seal_early(outbox, &self.pass);
        count_push(
            &self.stats,
            outbox.push_tick(symbol, frame, now, &self.limits),
        );
    }

    /// Whether `key`'s replies are backed up (see
    /// [`Outbox::replies_backed_up`]); a missing outbox counts as backed
    /// up, so nothing more is read for it.
    pub fn replies_backed_up(&self, key: usize) -> bool {
        self.get(key)
            .is_none_or(|outbox| outbox.replies_backed_up(&self.limits))
    }

    /// The limits of every outbox.
    pub fn limits(&self) -> &OutboxLimits {
        &self.limits
    }

    /// Queues a reply for `key`.
    pub fn push_reply(&mut self, key: usize, frame: Bytes) {
        if let Some(outbox) = self.get_mut(key) {
            outbox.push_reply(frame);
        }
    }

    /// Queues an `error` reply for `key`, counted by its code.
    pub fn push_error(&mut self, key: usize, error: &ProtocolError) {
        self.stats.count_error(error.code);
        self.push_reply(key, error.to_frame());
    }

    /// Closes `key` with `code` and `reason` (see [`Outbox::close`]).
    pub fn close(&mut self, key: usize, code: CloseCode, reason: &str) {
        if let Some(outbox) = self.get_mut(key) {
            outbox.close_with(code, reason);
        }
    }

    /// Whether any outbox was pushed to since the last
    /// [`Outboxes::take_pushed`].
    pub fn has_pushed(&self) -> bool {
        !self.pushed.is_empty()
    }

    /// The keys pushed to since the last call, into `into` (emptied first).
    pub fn take_pushed(&mut self, into: &mut Vec<usize>) {
        into.clear();
        std::mem::swap(into, &mut self.pushed);
        for &key in into.iter() {
            self.listed[key] = false;
        }
    }

    /// Every key with an outbox.
    pub fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(key, slot)| slot.as_ref().map(|_| key))
    }

    /// The server's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// Counts what a push did.
pub fn count_push(stats: &Stats, pushed: Pushed) {
    match pushed {
        Pushed::Queued | Pushed::Kept | Pushed::Dropped => {}
        Pushed::Conflated => Stats::add(&stats.conflated, 1),
        Pushed::ClosedSlow => {
            Stats::add(&stats.slow_consumer_closes, 1);
            // Counted; at debug level, as a mass stall would otherwise
            // flood the log from the shard's thread.
            tracing::debug!("closed a client that stayed behind: slow consumer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8, len: usize) -> Bytes {
        Bytes::from(vec![n; len])
    }

    fn outbox(max_bytes: usize) -> (Outbox, OutboxLimits) {
        let limits = OutboxLimits {
            max_bytes,
            slow_consumer_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
        };
        (Outbox::new(), limits)
    }

    #[test]
    fn an_outbox_is_small() {
        // Every open connection has one; the limits are the server's.
        let size = std::mem::size_of::<Option<Outbox>>();
        assert!(size <= 96, "{size} bytes");
    }

    #[test]
    fn queues_in_order_until_the_limit_then_keeps_newest_per_symbol() {
        let (mut ob, limits) = outbox(300);
        let now = Instant::now();
        assert_eq!(
            ob.push_tick(0, &frame(1, 100), now, &limits),
            Pushed::Queued
        );
        assert_eq!(
            ob.push_tick(1, &frame(2, 100), now, &limits),
            Pushed::Queued
        );
        assert_eq!(
            ob.push_tick(0, &frame(3, 100), now, &limits),
            Pushed::Queued
        );
        // Over the limit: conflation starts. Only a tick that replaces an
        // unsent one of its symbol counts as conflated (4 is never sent).
        assert_eq!(ob.push_tick(1, &frame(4, 100), now, &limits), Pushed::Kept);
        assert_eq!(
            ob.push_tick(1, &frame(5, 100), now, &limits),
            Pushed::Conflated
        );
        assert_eq!(ob.push_tick(0, &frame(6, 100), now, &limits), Pushed::Kept);
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
        let (mut ob, limits) = outbox(100);
        let start = Instant::now();
        ob.push_tick(0, &frame(1, 100), start, &limits);
        assert_eq!(
            ob.push_tick(0, &frame(2, 100), start, &limits),
            Pushed::Kept
        );
        assert!(ob.is_behind());
        let later = start + Duration::from_secs(5);
        assert_eq!(
            ob.push_tick(0, &frame(3, 100), later, &limits),
            Pushed::ClosedSlow
        );
        assert_eq!(
            ob.push_tick(0, &frame(4, 100), later, &limits),
            Pushed::Dropped
        );
        assert!(!ob.close(close_frame(close::GOING_AWAY, "server shutting down")));
        match ob.take(&mut VecDeque::new()) {
            Take::Close(f) => assert_eq!(
                &f[..],
                &close_frame(close::POLICY_VIOLATION, "slow consumer")[..]
            ),
            other => panic!("expected close, got {other:?}"),
        }
        assert!(matches!(ob.take(&mut VecDeque::new()), Take::Abort));
    }

    #[test]
    fn unsubscribed_symbols_leave_no_conflated_tick_behind() {
        let (mut ob, limits) = outbox(10);
        let now = Instant::now();
        ob.push_tick(7, &frame(1, 50), now, &limits);
        ob.push_tick(8, &frame(2, 50), now, &limits);
        ob.forget_symbols(&[7]);
        let mut batch = VecDeque::new();
        ob.take(&mut batch);
        assert_eq!(batch.iter().map(|f| f[0]).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn an_idle_outbox_gives_its_memory_back() {
        let (mut ob, limits) = outbox(1 << 20);
        let now = Instant::now();
        for n in 0..100 {
            ob.push_tick(0, &frame(n, 10), now, &limits);
        }
        let mut batch = VecDeque::new();
        assert!(matches!(ob.take(&mut batch), Take::Frames));
        // Taken into a batch still being written: the queue keeps its room.
        for n in 0..100 {
            ob.push_tick(0, &frame(n, 10), now, &limits);
        }
        assert!(matches!(ob.take(&mut batch), Take::Frames));
        assert!(ob.queue.capacity() >= 100);
        let mut handed_back = VecDeque::new();
        assert!(matches!(ob.take(&mut handed_back), Take::Idle));
        assert_eq!(ob.queue.capacity(), 0);
        assert!(
            handed_back.capacity() >= 100,
            "the writer gets the room to recycle"
        );
    }

    #[test]
    fn spare_queues_are_reused_and_bounded() {
        let (_, limits) = outbox(1 << 20);
        let mut all = Outboxes::new(limits, std::sync::Arc::new(Stats::default()));
        all.insert(0, Outbox::new());
        let mut queue: VecDeque<Bytes> = VecDeque::with_capacity(64);
        queue.push_back(frame(9, 10));
        let room = queue.as_slices().0.as_ptr();
        all.recycle(queue);
        all.push_tick(0, 0, &frame(1, 10), Instant::now());
        let mut batch = VecDeque::new();
        assert!(matches!(
            all.get_for_writing(0).unwrap().take(&mut batch),
            Take::Frames
        ));
        assert_eq!(
            batch.as_slices().0.as_ptr(),
            room,
            "the spare queue was reused"
        );
        assert_eq!(batch.iter().map(|f| f[0]).collect::<Vec<_>>(), [1]);

        // Past the bound, recycled queues are freed.
        let each = MAX_SPARE_QUEUE_FRAMES;
        for _ in 0..(SPARE_QUEUE_BYTES / (each * std::mem::size_of::<Bytes>())) + 10 {
            all.recycle(VecDeque::with_capacity(each));
        }
        assert!(all.spare.bytes <= SPARE_QUEUE_BYTES);
        all.recycle(VecDeque::with_capacity(each * 4));
        assert!(all.spare.queues.iter().all(|q| q.capacity() < each * 2));
    }

    #[test]
    fn outboxes_list_each_pushed_key_once_per_pass() {
        let (_, limits) = outbox(1000);
        let mut all = Outboxes::new(limits, std::sync::Arc::new(Stats::default()));
        all.insert(0, Outbox::new());
        all.insert(3, Outbox::new());
        let now = Instant::now();
        all.push_tick(3, 0, &frame(1, 10), now);
        all.push_tick(3, 0, &frame(2, 10), now);
        all.push_reply(0, frame(3, 10));
        let mut pushed = Vec::new();
        all.take_pushed(&mut pushed);
        assert_eq!(pushed, [3, 0]);
        all.take_pushed(&mut pushed);
        assert!(pushed.is_empty());
    }

    /// Outboxes 0 (every tick of the pass), 1 (one tick of it), 2 (every
    /// tick, in `ticks` batches) and 3 (every tick, a reply mid-pass),
    /// after a pass of four 100-byte ticks; what each would write.
    fn after_a_pass() -> (Outboxes, [Vec<Bytes>; 4], std::sync::Arc<Stats>) {
        let (_, limits) = outbox(1 << 20);
        let stats = std::sync::Arc::new(Stats::default());
        let mut all = Outboxes::new(limits, stats.clone());
        for key in 0..4 {
            let mut outbox = Outbox::new();
            outbox.set_batch(key == 2);
            all.insert(key, outbox);
        }
        let now = Instant::now();
        for n in 0..4u8 {
            let index = all.add_pass_frame(&frame(n, 100)).unwrap();
            for key in [0, 2, 3] {
                all.push_pass_tick(key, n.into(), index, now);
            }
            if n == 2 {
                all.push_pass_tick(1, n.into(), index, now);
            }
            if n == 1 {
                all.push_reply(3, frame(b'r', 10));
            }
        }
        assert!(!all.get(0).unwrap().is_empty(), "a run is pending output");
        all.seal_pass();
        let written = [0, 1, 2, 3].map(|key| {
            let mut batch = VecDeque::new();
            assert!(matches!(
                all.get_for_writing(key).unwrap().take(&mut batch),
                Take::Frames
            ));
            batch.into_iter().collect()
        });
        (all, written, stats)
    }

    #[test]
    fn a_client_getting_the_whole_pass_queues_it_as_one_slice_in_order() {
        let (_, [all_ticks, ..], _) = after_a_pass();
        assert_eq!(all_ticks.len(), 1, "one slice for the pass");
        let expected: Vec<u8> = (0..4u8).flat_map(|n| [n; 100]).collect();
        assert_eq!(&all_ticks[0][..], &expected[..]);
    }

    #[test]
    fn a_client_getting_a_few_ticks_of_a_pass_keeps_only_their_own_frames() {
        let (_, [_, one_tick, ..], _) = after_a_pass();
        assert_eq!(one_tick.len(), 1);
        assert_eq!(&one_tick[0][..], &[2u8; 100][..]);
    }

    #[test]
    fn batching_clients_and_replies_mid_pass_keep_frames_apart_and_in_order() {
        let (_, [_, _, batched, with_reply], _) = after_a_pass();
        assert_eq!(
            batched.iter().map(|f| (f[0], f.len())).collect::<Vec<_>>(),
            [(0, 100), (1, 100), (2, 100), (3, 100)]
        );
        // Ticks 0 and 1 before the reply, ticks 2 and 3 (one slice) after.
        let order: Vec<(u8, usize)> = with_reply.iter().map(|f| (f[0], f.len())).collect();
        assert_eq!(order, [(0, 100), (1, 100), (b'r', 10), (2, 200)]);
    }

    #[test]
    fn pass_ticks_past_the_limit_conflate_as_any_tick() {
        let (_, limits) = outbox(250);
        let mut all = Outboxes::new(limits, std::sync::Arc::new(Stats::default()));
        all.insert(0, Outbox::new());
        let now = Instant::now();
        for n in 0..4u8 {
            let index = all.add_pass_frame(&frame(n, 100)).unwrap();
            all.push_pass_tick(0, 7, index, now);
        }
        all.seal_pass();
        assert!(all.get(0).unwrap().is_behind());
        let mut batch = VecDeque::new();
        all.get_for_writing(0).unwrap().take(&mut batch);
        // Ticks 0 and 1 queued (as one slice: half the pass's bytes), then
        // the newest of the symbol: 3 took the place of 2.
        let order: Vec<(u8, usize)> = batch.iter().map(|f| (f[0], f.len())).collect();
        assert_eq!(order, [(0, 200), (3, 100)]);
    }
}
