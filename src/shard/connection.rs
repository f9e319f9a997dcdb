//! `Connection`: what a shard keeps of one client — its socket, the frame
//! reader's partial state, its session, and the frames being written —
//! and how the loop writes it.
//!
//! Nothing here allocates while a connection is idle: the frame reader
//! holds bytes only while a client frame is incomplete, the batch only
//! while frames are being written, and the outbox (kept beside it in
//! `fanout::Outboxes`, under the same key) only while something is queued.
//!
//! Writing takes everything queued for the connection and sends it in as
//! few system calls as it can: small frames are gathered into the shard's
//! scratch buffer and go out in one `send`; larger entries (a frame, or a
//! slice of a pass's frames end to end) go by `sendmsg`, up to
//! [`MAX_IOVECS`] slices a call. A client that is sent many ticks in one
//! pass costs one system call for all of them. While the socket is full
//! the connection waits for writability;
//! ticks keep arriving in the outbox meanwhile, where backpressure applies.
//!
//! A close normally goes out after what was queued before it. A
//! slow-consumer close instead cuts in: the writer finishes the frame it is
//! in the middle of (a half-sent frame would corrupt the stream), drops the
//! rest and sends the close frame, then shuts its half of the socket down.
//! A peer that does not read still gets its close frame if it reads again
//! within the write timeout (at least `CLOSE_GRACE`): a stalled client is
//! told why it was closed, not just cut off.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};

use super::transport::Transport;
use crate::fanout::encode::batch_ticks;
use crate::fanout::outbox::{Outbox, OutboxLimits, Take};
use crate::limits::Slot;
use crate::session::{Session, CLOSE_GRACE};
use crate::stats::Stats;
use crate::wire::frame::frame_ends;
use crate::wire::reader::FrameReader;

/// Slices per `sendmsg` call (Linux allows 1024); a pass with more
/// slices loops.
pub const MAX_IOVECS: usize = 1024;

/// Frames whose slices are built on the stack for one write; a larger
/// batch builds them in a vector.
const STACK_IOVECS: usize = 16;

/// Frames up to this size are gathered into one buffer for a write (see
/// [`gather`]); a larger one goes as its own slice, not copied.
const GATHER_FRAME_BYTES: usize = 4096;

/// How a write pass ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Wrote {
    /// Everything queued is out.
    Idle,
    /// The socket is full: wait for it to be writable.
    Blocked,
    /// The close frame is out and our side shut down.
    Closed,
    /// The connection is over without (further) output: drop it.
    Abort,
}

/// One client connection of a shard. See the module docs.
pub struct Connection {
    pub(super) transport: Transport,
    pub(super) reader: FrameReader,
    pub(super) session: Session,
    /// Frames taken from the outbox and not yet fully written.
    batch: VecDeque<Bytes>,
    /// The front frame of `batch` is partly written.
    front_started: bool,
    /// The close frame is the last frame of `batch`.
    close_in_batch: bool,
    /// The socket filled up while sending the current batch.
    filled: bool,
    /// When the frames in `batch` were taken, for the write-latency
    /// histogram.
    taken_at: Option<Instant>,
    /// Waiting for the socket to be writable.
    pub(super) blocked: bool,
    /// Since when the socket has refused bytes.
    pub(super) refusing_since: Option<Instant>,
    /// Reading waits until the client reads its replies.
    pub(super) read_paused: bool,
    /// The peer ended its stream.
    pub(super) eof: bool,
    /// The deadlines of a connection that is ending; boxed, as most
    /// connections never have one.
    pub(super) ending: Option<Box<Ending>>,
    /// Listed in the shard's timed connections.
    pub(super) timed: bool,
    /// Its place under the connection limits, given back when the
    /// connection ends.
    _slot: Slot,
}

/// The deadlines of an ending connection.
#[derive(Debug, Default)]
pub(super) struct Ending {
    /// Once a close is decided and output is stuck: until when what was
    /// queued before it may still go out.
    pub flush_deadline: Option<Instant>,
    /// Once a close is decided and output is stuck: when the connection is
    /// dropped if its socket still takes nothing.
    pub abort_at: Option<Instant>,
    /// The close frame is out; when the connection is dropped at the
    /// latest if the peer does not answer it.
    pub close_sent_until: Option<Instant>,
    /// Reading stopped because a closing peer kept sending: when the
    /// connection is dropped at the latest.
    pub stop_reading_until: Option<Instant>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("conn", &self.session.conn)
            .field("queued", &self.batch.len())
            .field("blocked", &self.blocked)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection over `transport`.
    pub fn new(transport: Transport, reader: FrameReader, session: Session, slot: Slot) -> Self {
        Connection {
            transport,
            reader,
            session,
            batch: VecDeque::new(),
            front_started: false,
            close_in_batch: false,
            filled: false,
            taken_at: None,
            blocked: false,
            refusing_since: None,
            read_paused: false,
            eof: false,
            ending: None,
            timed: false,
            _slot: slot,
        }
    }

    /// The deadlines of this ending connection, made on first use.
    pub(super) fn ending(&mut self) -> &mut Ending {
        self.ending.get_or_insert_with(Default::default)
    }

    /// When the connection is dropped at the latest, its close frame out.
    pub(super) fn close_sent_until(&self) -> Option<Instant> {
        self.ending
            .as_ref()
            .and_then(|ending| ending.close_sent_until)
    }

    /// When the connection is dropped at the latest, its reading stopped.
    pub(super) fn stop_reading_until(&self) -> Option<Instant> {
        self.ending
            .as_ref()
            .and_then(|ending| ending.stop_reading_until)
    }

    /// Whether the connection can be dropped: its close is out and the
    /// peer has answered or gone, or it was aborted.
    pub fn is_done(&self, outbox: &Outbox) -> bool {
        if self.close_sent_until().is_some() {
            // Done reading for another reason (a fault, a flood) is not an
            // answer: the socket lingers, unread, until its deadline.
            return self.session.peer_closed() || self.eof;
        }
        outbox.is_finished() && self.batch.is_empty() && !self.close_in_batch
    }

    /// Writes `frame` (a close frame) straight to the socket, if no frame
    /// is half-written, and ends our side: a best effort for a connection
    /// that is about to be dropped without going through its outbox.
    pub fn send_close_now(&mut self, frame: &[u8]) {
        if self.front_started || self.close_sent_until().is_some() {
            return;
        }
        let _ = self.transport.write_vectored(&[IoSlice::new(frame)]);
        let _ = self.transport.flush();
        self.transport.shutdown_write();
    }

    /// The emptied batch after a write that left the connection idle, for
    /// the shard to recycle (`Outboxes::recycle`).
    pub fn idle_batch(&mut self) -> VecDeque<Bytes> {
        debug_assert!(self.batch.is_empty());
        std::mem::take(&mut self.batch)
    }

    /// Whether a deadline applies to this connection now.
    pub fn has_deadline(&self) -> bool {
        self.blocked || self.close_sent_until().is_some() || self.stop_reading_until().is_some()
    }

    /// Writes what `outbox` holds until it is empty or the socket is
    /// full, gathering small frames in `gather_into` (the shard's scratch
    /// buffer). I/O errors mean the peer is gone.
    pub fn write(
        &mut self,
        outbox: &mut Outbox,
        limits: &OutboxLimits,
        now: Instant,
        stats: &Stats,
        gather_into: &mut [u8],
    ) -> Wrote {
        match self.write_inner(outbox, limits, now, stats, gather_into) {
            Ok(wrote) => wrote,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                self.blocked = true;
                self.filled = true;
                self.refusing_since.get_or_insert(now);
                if outbox.is_closing() {
                    self.ending()
                        .flush_deadline
                        .get_or_insert(now + CLOSE_GRACE);
                }
                Wrote::Blocked
            }
            Err(err) => {
                tracing::debug!(conn = self.session.conn, %err, "write failed; the peer is gone");
                outbox.abort();
                self.batch = VecDeque::new();
                self.close_in_batch = false;
                Wrote::Abort
            }
        }
    }

    fn write_inner(
        &mut self,
        outbox: &mut Outbox,
        limits: &OutboxLimits,
        now: Instant,
        stats: &Stats,
        gather_into: &mut [u8],
    ) -> io::Result<Wrote> {
        loop {
            if self.transport.has_unsent() {
                self.transport.flush()?;
                self.refusing_since = None;
            }
            if self.batch.is_empty() {
                if self.close_sent_until().is_some() {
                    return Ok(Wrote::Closed);
                }
                if self.close_in_batch {
                    return self.finish_close(limits.write_timeout, now);
                }
                match outbox.take(&mut self.batch) {
                    Take::Frames => {
                        self.filled = false;
                        self.taken_at = Some(now);
                        if outbox.batches() {
                            batch_ticks(&mut self.batch);
                        }
                    }
                    // The emptied batch stays until the shard recycles it
                    // (`Connection::idle_batch`): an idle connection then
                    // holds no buffer.
                    Take::Idle => return Ok(Wrote::Idle),
                    Take::Close(frame) => {
                        self.batch.push_back(frame);
                        self.close_in_batch = true;
                    }
                    Take::Abort => return Ok(Wrote::Abort),
                }
            } else if outbox.stop_sending() && !self.close_in_batch {
                // Closing at once: no further frame starts; a half-sent
                // one is finished, or the stream would be corrupt before
                // the close.
                let front = self.front_started.then(|| self.batch.pop_front()).flatten();
                self.batch.clear();
                match front {
                    Some(front) => self.batch.push_back(front),
                    None => continue,
                }
            }
            let mut offered = 0;
            let mut on_stack = [IoSlice::new(&[]); STACK_IOVECS];
            let mut on_heap = Vec::new();
            let slices: &[IoSlice<'_>] = if let Some(len) = gather(&self.batch, gather_into) {
                offered = len;
                on_stack[0] = IoSlice::new(&gather_into[..len]);
                &on_stack[..1]
            } else if self.batch.len() <= STACK_IOVECS {
                for (slot, frame) in on_stack.iter_mut().zip(&self.batch) {
                    offered += frame.len();
                    *slot = IoSlice::new(frame);
                }
                &on_stack[..self.batch.len()]
            } else {
                on_heap.extend(self.batch.iter().take(MAX_IOVECS).map(|frame| {
                    offered += frame.len();
                    IoSlice::new(frame)
                }));
                &on_heap
            };
            let n = self.transport.write_vectored(slices)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.blocked = false;
            if self.refusing_since.take().is_some() {
                self.filled = true;
            }
            self.filled |= n < offered;
            let bytes = n;
            let frames = consume_written(&mut self.batch, &mut self.front_started, n);
            Stats::add(&stats.bytes_sent, bytes as u64);
            Stats::add(&stats.frames_sent, frames);
            if self.batch.is_empty() {
                if let Some(taken_at) = self.taken_at.take() {
                    stats
                        .write_latency
                        .observe(taken_at.elapsed().as_secs_f64());
                }
                if self.close_in_batch {
                    return self.finish_close(limits.write_timeout, now);
                }
                if !self.filled {
                    outbox.caught_up();
                }
            }
        }
    }

    /// The close frame is written: once TLS has sent its record too, shuts
    /// our side down and starts waiting for the peer's answer.
    fn finish_close(&mut self, write_timeout: Duration, now: Instant) -> io::Result<Wrote> {
        if self.transport.has_unsent() {
            self.transport.flush()?;
        }
        self.close_in_batch = false;
        self.transport.shutdown_write();
        let linger = write_timeout.max(CLOSE_GRACE);
        self.ending().close_sent_until = Some(now + linger);
        self.blocked = false;
        self.batch = VecDeque::new();
        Ok(Wrote::Closed)
    }
}

/// Takes the `n` bytes just written off the front of `batch` and returns
/// how many frames they completed. `front_started` says, before and after,
/// whether the front entry is the rest of a half-sent frame; entries not
/// begun hold whole frames, one or several (a slice of a pass's frames).
fn consume_written(batch: &mut VecDeque<Bytes>, front_started: &mut bool, mut n: usize) -> u64 {
    let mut frames = 0;
    while n > 0 {
        let front = batch.front_mut().expect("wrote more than was queued");
        if n >= front.len() {
            n -= front.len();
            frames += if *front_started {
                1
            } else {
                frame_ends(front).count().max(1) as u64
            };
            batch.pop_front();
            *front_started = false;
            continue;
        }
        if !*front_started {
            // Stopped inside an entry: the frames before the one cut are
            // sent, and those after it become an entry of their own, so the
            // half-sent entry is one frame (a slow-consumer close waits for
            // no more than that).
            let (sent, cut_end) = frame_ends(front)
                .enumerate()
                .find(|&(_, end)| end > n)
                .map_or((0, front.len()), |(i, end)| (i as u64, end));
            frames += sent;
            if cut_end < front.len() {
                let rest = front.split_off(cut_end);
                batch.insert(1, rest);
            }
        }
        batch
            .front_mut()
            .expect("the cut frame is first")
            .advance(n);
        *front_started = true;
        n = 0;
    }
    frames
}

/// Copies the leading small frames of `batch` into `into`, as many as fit,
/// and returns their length; `None` (and nothing to use in `into`) unless
/// two or more fit. Ticks are small frames: the kernel copies a few
/// hundred bytes from one place faster than from a slice per frame, and
/// the copy here costs less than what it saves.
fn gather(batch: &VecDeque<Bytes>, into: &mut [u8]) -> Option<usize> {
    // Counted before anything is copied: a lone frame (a dashboard
    // client's usual pass) is not copied only to go by its own slice.
    let mut len = 0;
    let fit = batch
        .iter()
        .take_while(|frame| {
            let fits = frame.len() <= GATHER_FRAME_BYTES && len + frame.len() <= into.len();
            len += if fits { frame.len() } else { 0 };
            fits
        })
        .count();
    if fit < 2 {
        return None;
    }
    let mut at = 0;
    for frame in batch.iter().take(fit) {
        into[at..at + frame.len()].copy_from_slice(frame);
        at += frame.len();
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_record_stays_small() {
        // What every open connection costs in its shard's slab, besides
        // its outbox (see `Outbox`) and subscription records: the idle
        // memory per connection in docs/OPERATIONS.md rests on it.
        let size = std::mem::size_of::<Connection>();
        assert!(size <= 248, "{size} bytes");
    }

    #[test]
    fn small_frames_are_gathered_in_order_as_far_as_they_fit() {
        let frames = |lens: &[usize]| -> VecDeque<Bytes> {
            (0..lens.len())
                .map(|i| Bytes::from(vec![i as u8; lens[i]]))
                .collect()
        };
        let mut into = [0u8; 100];
        assert_eq!(gather(&frames(&[10, 20, 30]), &mut into), Some(60));
        assert_eq!(&into[..10], &[0; 10]);
        assert_eq!(&into[10..30], &[1; 20]);
        assert_eq!(&into[30..60], &[2; 30]);
        // What fits, in order, stopping at the first frame that does not.
        assert_eq!(gather(&frames(&[40, 50, 20, 1]), &mut into), Some(90));
        // One frame alone, or a big one first, goes by its own slice.
        assert_eq!(gather(&frames(&[10]), &mut into), None);
        assert_eq!(gather(&frames(&[10, 95]), &mut into), None);
        let mut big = vec![0u8; 3 * GATHER_FRAME_BYTES];
        let batch = frames(&[10, GATHER_FRAME_BYTES + 1, 10]);
        assert_eq!(gather(&batch, &mut big), None);
    }

    #[test]
    fn a_write_that_stops_inside_a_slice_of_frames_leaves_one_frame_half_sent() {
        use crate::wire::frame::text_frame;
        let [a, b, c] = [b"aaaa", b"bbbb", b"cccc"].map(|payload| text_frame(payload));
        let joined: Vec<u8> = [&a, &b, &c]
            .iter()
            .flat_map(|f| f.iter().copied())
            .collect();
        let mut batch: VecDeque<Bytes> = [Bytes::from(joined), text_frame(b"d")].into();
        let mut started = false;
        // All of a, half of b: one frame done; b's rest is the front, then
        // c on its own, then d.
        assert_eq!(consume_written(&mut batch, &mut started, a.len() + 3), 1);
        assert!(started);
        assert_eq!(batch.len(), 3);
        assert_eq!(batch[0], b[3..]);
        assert_eq!(batch[1], c);
        // The rest of b, all of c and d: three frames.
        let rest = b.len() - 3 + c.len() + batch[2].len();
        assert_eq!(consume_written(&mut batch, &mut started, rest), 3);
        assert!(batch.is_empty() && !started);
        // A whole slice written at once counts each frame in it.
        let mut batch: VecDeque<Bytes> = [Bytes::from([&a[..], &b[..]].concat())].into();
        assert_eq!(
            consume_written(&mut batch, &mut started, a.len() + b.len()),
            2
        );
    }
}
