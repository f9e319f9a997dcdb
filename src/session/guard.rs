//! `FrameGuard`: checks the raw client byte stream before fastwebsockets
//! parses it, for the rules fastwebsockets 0.10 does not enforce.
//!
//! * RFC 6455 §5.1: every client frame must be masked. fastwebsockets
//!   accepts unmasked frames; the guard turns one into
//!   [`Violation::Unmasked`] (close 1002).
//! * `FragmentCollectorRead` caps each frame but not a whole fragmented
//!   message; the guard sums a message's fragments and turns an oversized
//!   message into [`Violation::TooLarge`] (close 1009), before its bytes are
//!   buffered. It also caps the number of fragments per message.
//! * RFC 6455 §5.5: control frames carry at most 125 bytes (the library
//!   checks pings only); §5.4: a new message may not start before the
//!   previous fragmented one has ended (the library silently drops the
//!   unfinished one). Both are [`Violation`]s closed with 1002.
//!
//! * The reader's rate limit counts every frame, but `FragmentCollectorRead`
//!   swallows continuation frames; the guard counts them into a
//!   [`Continuations`] the reader charges (a message in 1,024 fragments
//!   costs 1,024 frames of the limit, not one).
//!
//! The guard only watches frame headers go by (it skips payloads without
//! looking at them), so it costs a few comparisons per frame. When a read
//! brings valid frames followed by a violating one, the valid frames are
//! passed on first and the error comes with the next read, so a request
//! sent just before a fault is still handled.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// A rule the client broke; carried inside the `io::Error` the guard
/// returns, see [`Violation::of`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A frame without the mask bit.
    #[error("client frames must be masked")]
    Unmasked,
    /// A message (all its fragments together) over the size limit.
    #[error("message larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// A message split into more fragments than allowed.
    #[error("message split into more than {limit} fragments")]
    TooManyFragments {
        /// The limit.
        limit: u32,
    },
    /// A control frame (close, ping, pong) over 125 bytes.
    #[error("control frames carry at most 125 bytes")]
    ControlTooLarge,
    /// A text or binary frame while a fragmented message was unfinished.
    #[error("a new message started before the fragmented one ended")]
    Interleaved,
}

impl Violation {
    /// The close code the client gets for this violation.
    pub fn close_code(self) -> u16 {
        match self {
            Violation::TooLarge { .. } | Violation::TooManyFragments { .. } => 1009,
            Violation::Unmasked | Violation::ControlTooLarge | Violation::Interleaved => 1002,
        }
    }
}

impl Violation {
    /// The violation inside `err`, if the guard produced it.
    pub fn of(err: &io::Error) -> Option<Violation> {
        err.get_ref()?.downcast_ref::<Violation>().copied()
    }
}

/// How many continuation frames the guard has let through since the
/// reader last asked: shared by the guard and the reader of one
/// connection.
#[derive(Clone, Debug, Default)]
pub struct Continuations(Arc<AtomicU32>);

impl Continuations {
    /// The continuation frames seen since the last call.
    pub fn take(&self) -> u32 {
        self.0.swap(0, Ordering::Relaxed)
    }

    fn add(&self, n: u32) {
        if n > 0 {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Limits the guard enforces.
#[derive(Clone, Copy, Debug)]
pub struct GuardLimits {
    /// Largest message, all fragments together, in bytes.
    pub max_message_bytes: u64,
    /// Most fragments in one message.
    pub max_fragments: u32,
}

#[derive(Debug)]
enum Phase {
    /// Collecting a frame header: `have` bytes of it are in `head`.
    Header { head: [u8; 14], have: usize },
    /// Skipping `remaining` payload bytes.
    Payload { remaining: u64 },
}

/// An [`AsyncRead`] that passes bytes through while checking each client
/// frame header. See the module docs.
#[derive(Debug)]
pub struct FrameGuard<R> {
    inner: R,
    limits: GuardLimits,
    phase: Phase,
    /// Payload bytes of the data message being received so far.
    message_bytes: u64,
    /// Fragments of the data message being received so far.
    fragments: u32,
    /// A fragmented message has started and not yet ended.
    in_message: bool,
    /// Set once a violation was found: every later read fails the same way.
    failed: Option<Violation>,
    /// Continuation frames, for the reader's rate limit.
    continuations: Continuations,
    /// Continuation frames in the chunk being inspected.
    seen_continuations: u32,
}

impl<R> FrameGuard<R> {
    /// Wraps `inner`, which must start at a frame boundary.
    pub fn new(inner: R, limits: GuardLimits) -> Self {
        FrameGuard {
            inner,
            limits,
            phase: Phase::Header {
                head: [0; 14],
                have: 0,
            },
            message_bytes: 0,
            fragments: 0,
            in_message: false,
            failed: None,
            continuations: Continuations::default(),
            seen_continuations: 0,
        }
    }

    /// Where the guard counts continuation frames.
    pub fn continuations(&self) -> Continuations {
        self.continuations.clone()
    }

    /// Feeds bytes as they pass; fails at the first violation, returning it
    /// with the offset in `chunk` where the offending frame's header starts
    /// (0 if it started in an earlier chunk).
    fn inspect(&mut self, chunk: &[u8]) -> Result<(), (Violation, usize)> {
        let mut at = 0;
        let mut header_start = 0;
        while at < chunk.len() {
            match &mut self.phase {
                Phase::Payload { remaining } => {
                    let skip = (*remaining).min((chunk.len() - at) as u64);
                    *remaining -= skip;
                    at += skip as usize;
                    if *remaining == 0 {
                        self.phase = Phase::Header {
                            head: [0; 14],
                            have: 0,
                        };
                    }
                }
                Phase::Header { head, have } => {
                    if *have == 0 {
                        header_start = at;
                    }
                    head[*have] = chunk[at];
                    *have += 1;
                    at += 1;
                    if *have < 2 {
                        continue;
                    }
                    let fail = |violation| Err((violation, header_start));
                    if head[1] & 0x80 == 0 {
                        return fail(Violation::Unmasked);
                    }
                    let extended = match head[1] & 0x7F {
                        126 => 2,
                        127 => 8,
                        _ => 0,
                    };
                    if *have < 2 + extended + 4 {
                        continue;
                    }
                    let len = match extended {
                        0 => u64::from(head[1] & 0x7F),
                        2 => u64::from(u16::from_be_bytes([head[2], head[3]])),
                        _ => u64::from_be_bytes(head[2..10].try_into().expect("8 bytes")),
                    };
                    let fin = head[0] & 0x80 != 0;
                    let opcode = head[0] & 0x0F;
                    if opcode >= 8 {
                        if len > 125 {
                            return fail(Violation::ControlTooLarge);
                        }
                    } else {
                        // A data frame or continuation: part of a message.
                        if opcode != 0 && self.in_message {
                            return fail(Violation::Interleaved);
                        }
                        self.message_bytes = self.message_bytes.saturating_add(len);
                        self.fragments += 1;
                        if opcode == 0 {
                            self.seen_continuations += 1;
                        }
                        if self.message_bytes > self.limits.max_message_bytes {
                            return fail(Violation::TooLarge {
                                limit: self.limits.max_message_bytes,
                            });
                        }
                        if self.fragments > self.limits.max_fragments {
                            return fail(Violation::TooManyFragments {
                                limit: self.limits.max_fragments,
                            });
                        }
                        self.in_message = !fin;
                        if fin {
                            self.message_bytes = 0;
                            self.fragments = 0;
                        }
                    }
                    self.phase = if len == 0 {
                        Phase::Header {
                            head: [0; 14],
                            have: 0,
                        }
                    } else {
                        Phase::Payload { remaining: len }
                    };
                }
            }
        }
        Ok(())
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for FrameGuard<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(violation) = self.failed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, violation)));
        }
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let inspected = this.inspect(&buf.filled()[before..]);
                this.continuations
                    .add(std::mem::take(&mut this.seen_continuations));
                if let Err((violation, offset)) = inspected {
                    this.failed = Some(violation);
                    if offset == 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            violation,
                        )));
                    }
                    // Pass on the whole frames before the violation; the
                    // next read reports it.
                    buf.set_filled(before + offset);
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: GuardLimits = GuardLimits {
        max_message_bytes: 1000,
        max_fragments: 4,
    };

    fn header(fin: bool, opcode: u8, masked: bool, len: usize) -> Vec<u8> {
        let mut h = vec![(u8::from(fin) << 7) | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        if len < 126 {
            h.push(mask_bit | len as u8);
        } else if len < 65536 {
            h.push(mask_bit | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            h.push(mask_bit | 127);
            h.extend_from_slice(&(len as u64).to_be_bytes());
        }
        if masked {
            h.extend_from_slice(&[1, 2, 3, 4]);
        }
        h
    }

    fn frame(fin: bool, opcode: u8, masked: bool, len: usize) -> Vec<u8> {
        let mut f = header(fin, opcode, masked, len);
        f.extend(std::iter::repeat_n(b'a', len));
        f
    }

    /// Feeds `stream` in chunks of every size from 1 up, so headers split
    /// anywhere are covered.
    fn check(stream: &[u8]) -> Result<(), Violation> {
        let mut outcome = None;
        for chunk in 1..=stream.len().max(1) {
            let mut guard = FrameGuard::new((), LIMITS);
            let result = stream
                .chunks(chunk)
                .try_for_each(|c| guard.inspect(c).map_err(|(violation, _)| violation));
            assert!(
                outcome.is_none() || outcome == Some(result),
                "chunking changed the verdict"
            );
            outcome = Some(result);
        }
        outcome.unwrap()
    }

    #[test]
    fn accepts_masked_frames_of_every_header_size() {
        let mut stream = frame(true, 1, true, 5);
        stream.extend(frame(true, 9, true, 0));
        stream.extend(frame(false, 1, true, 200));
        stream.extend(frame(true, 0, true, 700));
        assert_eq!(check(&stream), Ok(()));
    }

    #[test]
    fn rejects_an_unmasked_frame() {
        let mut stream = frame(true, 1, true, 5);
        stream.extend(frame(true, 1, false, 5));
        assert_eq!(check(&stream), Err(Violation::Unmasked));
    }

    #[test]
    fn caps_the_sum_of_fragments_not_just_each_frame() {
        let mut stream = frame(false, 1, true, 600);
        stream.extend(frame(true, 10, true, 3)); // a pong between fragments
        stream.extend(frame(true, 0, true, 600));
        assert_eq!(check(&stream), Err(Violation::TooLarge { limit: 1000 }));
        assert_eq!(
            check(&header(true, 2, true, 70_000)),
            Err(Violation::TooLarge { limit: 1000 })
        );
    }

    #[test]
    fn control_frames_stay_small_and_messages_do_not_interleave() {
        assert_eq!(
            check(&frame(true, 10, true, 126)),
            Err(Violation::ControlTooLarge)
        );
        assert_eq!(check(&frame(true, 8, true, 125)), Ok(()));
        let mut stream = frame(false, 1, true, 3);
        stream.extend(frame(false, 1, true, 3));
        assert_eq!(check(&stream), Err(Violation::Interleaved));
    }

    #[test]
    fn reports_where_the_offending_frame_starts() {
        let mut stream = frame(true, 1, true, 5);
        let offset = stream.len();
        stream.extend(frame(true, 1, false, 5));
        let mut guard = FrameGuard::new((), LIMITS);
        assert_eq!(guard.inspect(&stream), Err((Violation::Unmasked, offset)));
    }

    #[test]
    fn caps_the_number_of_fragments() {
        let mut stream = frame(false, 1, true, 1);
        for _ in 0..4 {
            stream.extend(frame(false, 0, true, 1));
        }
        assert_eq!(
            check(&stream),
            Err(Violation::TooManyFragments { limit: 4 })
        );
    }
}
