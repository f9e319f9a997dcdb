//! `FrameReader`: RFC 6455 client frames in, whole messages out, for an
//! event loop that reads each ready socket into one shared scratch buffer
//! and hands the bytes to that connection's reader.
//!
//! It enforces what RFC 6455 asks of client frames and the server's own
//! limits, with the verdicts fastwebsockets 0.10 and Autobahn|Testsuite
//! expect (close 1002, 1007 or 1009; see [`Fault::close_code`]):
//!
//! * Headers are checked byte by byte as they arrive, before any payload
//!   is kept: a frame announcing a message over the limit is refused as
//!   soon as its length bytes are in, and a message's fragments are summed
//!   and counted. Nothing is allocated beyond what the limits allow; a
//!   partial frame's buffer grows with the bytes that came, up to that one
//!   frame.
//! * A frame that lies whole in the caller's bytes is unmasked in place
//!   and handed out as a slice of them: no copy. Only a partial frame is
//!   copied in (until its rest arrives), and fragments of a fragmented
//!   message are appended to a message buffer.
//! * Control frames between fragments are handed out as they come. Text is
//!   checked for UTF-8 fragment by fragment, so a bad byte fails the
//!   message when its fragment arrives, not at the end.
//! * A reader with nothing kept holds no heap memory (what it keeps is
//!   released when it empties) and is 24 bytes, so idle connections cost
//!   little.
//!
//! Whatever the chunking of a byte stream, the reader hands out the same
//! messages and reaches the same verdict: each check depends only on bytes
//! of the header and on the message under way, and runs in one fixed order.

use crate::wire::close;
use crate::wire::frame::{opcode, unmask};

/// Most bytes a client frame header takes: 2, 8 of 64-bit length, 4 of mask.
pub const MAX_HEAD: usize = 14;

/// Most payload bytes of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Limits on what one client may send.
#[derive(Clone, Copy, Debug)]
pub struct InputLimits {
    /// Largest message, all its fragments together, in bytes.
    pub max_message_bytes: u64,
    /// Most frames one data message may take (an unfragmented message
    /// takes one).
    pub max_fragments: u32,
}

/// A rule the client broke; the connection is closed with
/// [`close_code`](Fault::close_code) and `to_string()` as reason (each
/// fits the 123 bytes a close reason may have).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// A frame without the mask bit (RFC 6455 §5.1).
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
    /// A control frame without the FIN bit.
    #[error("control frames may not be fragmented")]
    FragmentedControl,
    /// A text or binary frame while a fragmented message was unfinished.
    #[error("a new message started before the fragmented one ended")]
    Interleaved,
    /// A continuation frame with no fragmented message to continue.
    #[error("a continuation frame with no fragmented message to continue")]
    UnexpectedContinuation,
    /// RSV1, RSV2 or RSV3 set, with no extension negotiated.
    #[error("reserved bits set, but no extension was agreed")]
    ReservedBits,
    /// An opcode RFC 6455 reserves (3 to 7, 11 to 15).
    #[error("reserved opcode {0}")]
    ReservedOpcode(u8),
    /// A text message that is not UTF-8.
    #[error("invalid UTF-8 in a text message")]
    InvalidUtf8,
    /// A close frame with a 1-byte payload (a code takes two).
    #[error("a close frame must be empty or start with a 2-byte code")]
    BadClosePayload,
    /// A close code a peer may not send (see [`close::is_sendable`]).
    #[error("close code {0} may not be sent")]
    BadCloseCode(u16),
    /// A close reason that is not UTF-8.
    #[error("the close reason is not valid UTF-8")]
    BadCloseReason,
}

impl Fault {
    /// The close code the client gets: 1009 for a message over a limit,
    /// 1007 for text that is not UTF-8, 1002 for any other protocol error.
    pub fn close_code(self) -> close::CloseCode {
        match self {
            Fault::TooLarge { .. } | Fault::TooManyFragments { .. } => close::TOO_BIG,
            Fault::InvalidUtf8 | Fault::BadCloseReason => close::INVALID_PAYLOAD,
            Fault::Unmasked
            | Fault::ControlTooLarge
            | Fault::FragmentedControl
            | Fault::Interleaved
            | Fault::UnexpectedContinuation
            | Fault::ReservedBits
            | Fault::ReservedOpcode(_)
            | Fault::BadClosePayload
            | Fault::BadCloseCode(_) => close::PROTOCOL_ERROR,
        }
    }
}

/// What a [`Message`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A text message, valid UTF-8.
    Text,
    /// A binary message.
    Binary,
    /// A ping, to be answered with a pong carrying the same payload.
    Ping,
    /// A pong.
    Pong,
    /// A close frame: empty, or a 2-byte code allowed by
    /// [`close::is_sendable`] and a UTF-8 reason.
    Close,
}

/// One complete message (data messages reassembled) or control frame,
/// payload unmasked.
#[derive(Debug)]
pub struct Message<'a> {
    /// What it is.
    pub kind: Kind,
    /// The payload, unmasked; the receiver may change it in place (parse
    /// JSON in place, say): it is scratch once the callback returns.
    pub payload: &'a mut [u8],
    /// Wire frames it took: 1 plus its continuation frames.
    pub frames: u32,
}

/// The callback's answer: go on, or stop after this message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Hand over the next message.
    Continue,
    /// Stop here; the bytes after this message are kept for later.
    Pause,
}

/// How a [`FrameReader::feed`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fed {
    /// Every byte was used; an incomplete frame at the end is kept.
    Consumed,
    /// The callback asked for a pause; what was not parsed is kept.
    Paused,
}

/// A checked header of a client frame.
#[derive(Clone, Copy, Debug)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Header bytes: 6 to 14.
    len: usize,
    /// Payload bytes.
    payload: usize,
}

impl Header {
    fn frame_len(&self) -> usize {
        self.len + self.payload
    }
}

/// Header bytes needed in all, given its first `data` bytes: 2 until the
/// second byte tells the length's size.
fn header_len(data: &[u8]) -> usize {
    match data.get(1).map(|b| b & 0x7F) {
        None => 2,
        Some(126) => 2 + 2 + 4,
        Some(127) => 2 + 8 + 4,
        Some(_) => 2 + 4,
    }
}

/// Makes room for `extra` more bytes in `buf`, growing it geometrically
/// (from 64 bytes) but never past `cap` bytes in all unless the bytes
/// themselves need more.
fn reserve_within(buf: &mut Vec<u8>, extra: usize, cap: usize) {
    let needed = buf.len() + extra;
    if needed <= buf.capacity() {
        return;
    }
    let target = needed
        .max(buf.capacity().saturating_mul(2))
        .max(64)
        .min(cap)
        .max(needed);
    buf.reserve_exact(target - buf.len());
}

/// The data message being reassembled from fragments.
#[derive(Debug, Default)]
struct Assembly {
    /// Its payload so far, unmasked; unallocated between messages.
    bytes: Vec<u8>,
    /// Frames it took so far; 0 when no fragmented message is under way.
    frames: u32,
    /// A text message (else binary).
    text: bool,
    /// Bytes at the end of `bytes` that start a UTF-8 character whose rest
    /// is still to come (0 to 3); everything before them is valid.
    utf8_tail: u8,
}

impl Assembly {
    /// Checks the frame at the start of `data` as far as its bytes have
    /// come: `Ok(None)` while the header is incomplete. Checks run in the
    /// order of the bytes they need, so a verdict never depends on how the
    /// header was split.
    fn header(&self, limits: &InputLimits, data: &[u8]) -> Result<Option<Header>, Fault> {
        let Some(&b0) = data.first() else {
            return Ok(None);
        };
        if b0 & 0x70 != 0 {
            return Err(Fault::ReservedBits);
        }
        let fin = b0 & 0x80 != 0;
        let op = b0 & 0x0F;
        let control = match op {
            opcode::CONTINUATION if self.frames == 0 => return Err(Fault::UnexpectedContinuation),
            opcode::TEXT | opcode::BINARY if self.frames > 0 => return Err(Fault::Interleaved),
            opcode::CONTINUATION | opcode::TEXT | opcode::BINARY => false,
            opcode::CLOSE | opcode::PING | opcode::PONG => true,
            reserved => return Err(Fault::ReservedOpcode(reserved)),
        };
        if control && !fin {
            return Err(Fault::FragmentedControl);
        }
        if !control && self.frames >= limits.max_fragments {
            return Err(Fault::TooManyFragments {
                limit: limits.max_fragments,
            });
        }
        let Some(&b1) = data.get(1) else {
            return Ok(None);
        };
        if b1 & 0x80 == 0 {
            return Err(Fault::Unmasked);
        }
        let code = b1 & 0x7F;
        if control && usize::from(code) > MAX_CONTROL_PAYLOAD {
            return Err(Fault::ControlTooLarge);
        }
        if op == opcode::CLOSE && code == 1 {
            return Err(Fault::BadClosePayload);
        }
        let len = header_len(data);
        let payload = match (code, data.get(2..len - 4)) {
            (_, None) => return Ok(None),
            (126, Some(&[hi, lo])) => u64::from(u16::from_be_bytes([hi, lo])),
            (127, Some(bytes)) => u64::from_be_bytes(bytes.try_into().expect("eight bytes")),
            (code, _) => u64::from(code),
        };
        let too_large = Fault::TooLarge {
            limit: limits.max_message_bytes,
        };
        if !control && (self.bytes.len() as u64).saturating_add(payload) > limits.max_message_bytes
        {
            return Err(too_large);
        }
        // Only on a 32-bit target can a length within the limit not fit.
        let payload = usize::try_from(payload).map_err(|_| too_large)?;
        let Some(mask) = data.get(len - 4..len) else {
            return Ok(None);
        };
        Ok(Some(Header {
            fin,
            opcode: op,
            mask: mask.try_into().expect("four bytes"),
            len,
            payload,
        }))
    }

    /// Takes one whole frame, its `payload` still masked: hands it out, or
    /// adds it to the message under way (handing that out at its end).
    fn frame<F>(
        &mut self,
        limits: &InputLimits,
        head: Header,
        payload: &mut [u8],
        on_message: &mut F,
    ) -> Result<Flow, Fault>
    where
        F: FnMut(Message<'_>) -> Flow,
    {
        unmask(payload, head.mask);
        let kind = match head.opcode {
            opcode::CLOSE => {
                check_close(payload)?;
                Kind::Close
            }
            opcode::PING => Kind::Ping,
            opcode::PONG => Kind::Pong,
            opcode::TEXT if head.fin => {
                if std::str::from_utf8(payload).is_err() {
                    return Err(Fault::InvalidUtf8);
                }
                Kind::Text
            }
            opcode::BINARY if head.fin => Kind::Binary,
            op => return self.fragment(limits, head.fin, op, payload, on_message),
        };
        Ok(on_message(Message {
            kind,
            payload,
            frames: 1,
        }))
    }

    /// Takes a fragment: the first of a message (`op` text or binary) or a
    /// continuation of the one under way, as the header check ensured.
    fn fragment<F>(
        &mut self,
        limits: &InputLimits,
        fin: bool,
        op: u8,
        payload: &[u8],
        on_message: &mut F,
    ) -> Result<Flow, Fault>
    where
        F: FnMut(Message<'_>) -> Flow,
    {
        if op != opcode::CONTINUATION {
            self.text = op == opcode::TEXT;
        }
        self.frames += 1;
        self.append(limits, payload)?;
        if !fin {
            return Ok(Flow::Continue);
        }
        if self.text && self.utf8_tail != 0 {
            return Err(Fault::InvalidUtf8);
        }
        let flow = on_message(Message {
            kind: if self.text { Kind::Text } else { Kind::Binary },
            payload: &mut self.bytes,
            frames: self.frames,
        });
        // Released, so an idle reader holds no heap.
        *self = Assembly::default();
        Ok(flow)
    }

    /// Appends a fragment's unmasked payload, checking text as it goes: a
    /// character may be cut between fragments, nothing else may be wrong.
    fn append(&mut self, limits: &InputLimits, payload: &[u8]) -> Result<(), Fault> {
        let checked = self.bytes.len() - usize::from(self.utf8_tail);
        let cap = usize::try_from(limits.max_message_bytes).unwrap_or(usize::MAX);
        reserve_within(&mut self.bytes, payload.len(), cap);
        self.bytes.extend_from_slice(payload);
        if self.text {
            self.utf8_tail = match std::str::from_utf8(&self.bytes[checked..]) {
                Ok(_) => 0,
                // A character cut at the end: its rest may still come.
                Err(cut) if cut.error_len().is_none() => {
                    (self.bytes.len() - checked - cut.valid_up_to()) as u8
                }
                Err(_) => return Err(Fault::InvalidUtf8),
            };
        }
        Ok(())
    }
}

/// A close payload's rules, in fastwebsockets 0.10's order: empty, or a
/// code and a UTF-8 reason (checked first), the code one a peer may send.
fn check_close(payload: &[u8]) -> Result<(), Fault> {
    match payload {
        [] => Ok(()),
        [_] => Err(Fault::BadClosePayload),
        [hi, lo, reason @ ..] => {
            if std::str::from_utf8(reason).is_err() {
                return Err(Fault::BadCloseReason);
            }
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close::is_sendable(code) {
                return Err(Fault::BadCloseCode(code));
            }
            Ok(())
        }
    }
}

/// Parses, checks, unmasks and reassembles one client's frames, fed the
/// bytes its socket gives as they come. See the module docs.
///
/// 24 bytes on a 64-bit target, and no heap memory while [`is_idle`]:
/// what a partial frame or fragmented message needs is allocated only
/// while one is under way. The limits are the caller's, passed to every
/// [`feed`] (one copy per server, not per connection).
///
/// [`is_idle`]: FrameReader::is_idle
/// [`feed`]: FrameReader::feed
#[derive(Debug, Default)]
pub struct FrameReader {
    /// What is kept between calls; `None` exactly when nothing is.
    partial: Option<Box<Partial>>,
    /// The rule the client broke; every call after returns it.
    fault: Option<Fault>,
}

/// What a reader keeps between calls while a frame or message is
/// incomplete, or after a pause.
#[derive(Debug, Default)]
struct Partial {
    /// Bytes received and not parsed yet, from a frame boundary at
    /// `start`: an incomplete frame, or what followed the message a pause
    /// stopped at. Unallocated when empty.
    pending: Vec<u8>,
    /// Where in `pending` the unparsed bytes start.
    start: usize,
    /// The fragmented message under way.
    message: Assembly,
}

impl FrameReader {
    /// A reader at the start of a client's stream.
    pub fn new() -> Self {
        FrameReader::default()
    }

    /// Parses `input` (bytes just read from the socket; unmasked in
    /// place) under `limits`, handing each complete message to
    /// `on_message` in order. Bytes of an incomplete frame are copied into
    /// the reader and kept until the next call. If `on_message` returns
    /// [`Flow::Pause`], parsing stops after that message, the unparsed
    /// rest is kept inside, and `Ok(Fed::Paused)` is returned; the caller
    /// later calls `feed(limits, &mut [], …)` to continue from what is
    /// kept (or feeds more bytes, which then come after it). Valid
    /// messages before a faulty frame are delivered first, then
    /// `Err(fault)`; after a fault every later call returns the same
    /// fault, and nothing is kept. Every call on one stream must pass the
    /// same limits.
    pub fn feed(
        &mut self,
        limits: &InputLimits,
        input: &mut [u8],
        mut on_message: impl FnMut(Message<'_>) -> Flow,
    ) -> Result<Fed, Fault> {
        if let Some(fault) = self.fault {
            return Err(fault);
        }
        let fed = match &mut self.partial {
            Some(partial) => partial.parse(limits, input, &mut on_message),
            None => {
                let mut partial = Partial::default();
                let fed = partial.parse(limits, input, &mut on_message);
                if !partial.is_idle() {
                    self.partial = Some(Box::new(partial));
                }
                fed
            }
        };
        if self
            .partial
            .as_ref()
            .is_some_and(|partial| partial.is_idle())
        {
            // Released, so an idle reader holds no heap.
            self.partial = None;
        }
        if let Err(fault) = fed {
            *self = FrameReader {
                partial: None,
                fault: Some(fault),
            };
        }
        fed
    }

    /// Nothing is buffered (no partial frame, no unfinished fragmented
    /// message, nothing paused).
    pub fn is_idle(&self) -> bool {
        self.partial.is_none()
    }

    /// Bytes held inside (partial frame + partial message + paused rest).
    pub fn buffered(&self) -> usize {
        self.partial.as_ref().map_or(0, |partial| {
            partial.pending.len() - partial.start + partial.message.bytes.len()
        })
    }

    /// Heap bytes the reader's buffers hold (their capacity): 0 when idle.
    /// Without pauses at most `max_message_bytes` for the message and one
    /// frame ([`MAX_HEAD`] plus `max_message_bytes`, or a control frame)
    /// for the partial frame. While anything is kept, a fixed 64 bytes or
    /// so track it besides.
    pub fn heap_bytes(&self) -> usize {
        self.partial.as_ref().map_or(0, |partial| {
            partial.pending.capacity() + partial.message.bytes.capacity()
        })
    }

    /// The rule the client broke, once [`feed`](FrameReader::feed) found one.
    pub fn fault(&self) -> Option<Fault> {
        self.fault
    }
}

impl Partial {
    /// Nothing kept: no unparsed bytes, no message under way.
    fn is_idle(&self) -> bool {
        self.pending.len() == self.start && self.message.frames == 0
    }

    fn parse<F>(
        &mut self,
        limits: &InputLimits,
        input: &mut [u8],
        on_message: &mut F,
    ) -> Result<Fed, Fault>
    where
        F: FnMut(Message<'_>) -> Flow,
    {
        let mut used = 0;
        // First what is kept: its frames, then the incomplete one at its
        // end, completed from `input`.
        while self.start < self.pending.len() {
            let at = self.start;
            let Some(head) = self.message.header(limits, &self.pending[at..])? else {
                let want = header_len(&self.pending[at..]) - (self.pending.len() - at);
                let take = want.min(input.len() - used);
                if take == 0 {
                    break;
                }
                reserve_within(&mut self.pending, take, at + MAX_HEAD);
                self.pending.extend_from_slice(&input[used..used + take]);
                used += take;
                continue;
            };
            let end = at + head.frame_len();
            if self.pending.len() < end {
                let take = (end - self.pending.len()).min(input.len() - used);
                reserve_within(&mut self.pending, take, end);
                self.pending.extend_from_slice(&input[used..used + take]);
                used += take;
                if self.pending.len() < end {
                    break;
                }
            }
            self.start = end;
            let payload = &mut self.pending[at + head.len..end];
            if self.message.frame(limits, head, payload, on_message)? == Flow::Pause {
                self.keep_after_pause(&input[used..]);
                return Ok(Fed::Paused);
            }
        }
        if self.start < self.pending.len() {
            // An incomplete frame, and `input` is all used.
            self.pending.drain(..self.start);
            self.start = 0;
            if self.pending.capacity() > 2 * self.pending.len().max(64) {
                self.pending.shrink_to_fit();
            }
            return Ok(Fed::Consumed);
        }
        self.pending = Vec::new();
        self.start = 0;
        // Then the frames that lie whole in `input`, in place.
        while used < input.len() {
            let rest = &mut input[used..];
            match self.message.header(limits, rest)? {
                Some(head) if head.frame_len() <= rest.len() => {
                    used += head.frame_len();
                    let payload = &mut rest[head.len..head.frame_len()];
                    if self.message.frame(limits, head, payload, on_message)? == Flow::Pause {
                        self.pending = input[used..].to_vec();
                        return Ok(Fed::Paused);
                    }
                }
                head => {
                    let cap = head.map_or(MAX_HEAD, |head| head.frame_len());
                    reserve_within(&mut self.pending, rest.len(), cap);
                    self.pending.extend_from_slice(rest);
                    break;
                }
            }
        }
        Ok(Fed::Consumed)
    }

    /// After a pause while parsing `pending`: keeps its unparsed part and
    /// the `unused` input after it.
    fn keep_after_pause(&mut self, unused: &[u8]) {
        if !unused.is_empty() {
            self.pending.drain(..self.start);
            self.start = 0;
            self.pending.extend_from_slice(unused);
        } else if self.start == self.pending.len() {
            self.pending = Vec::new();
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::{write_client_frame, CLIENT_MASK};
    use opcode::{BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT};

    const LIMITS: InputLimits = InputLimits {
        max_message_bytes: 1000,
        max_fragments: 4,
    };

    const BIG: InputLimits = InputLimits {
        max_message_bytes: 1 << 20,
        max_fragments: 1 << 16,
    };

    /// What a reader handed out: kind, payload and frame count of each
    /// message, and how it ended.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Outcome {
        messages: Vec<(Kind, Vec<u8>, u32)>,
        verdict: Option<Fault>,
        /// `buffered()` at the end.
        kept: usize,
    }

    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_client_frame(&mut out, fin, opcode, true, payload);
        out
    }

    fn whole(opcode: u8, payload: &[u8]) -> Vec<u8> {
        frame(true, opcode, payload)
    }

    fn close(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        whole(CLOSE, &payload)
    }

    /// Feeds `chunks` in order, never pausing.
    fn read_chunks<'a>(limits: InputLimits, chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
        let mut reader = FrameReader::new();
        let mut outcome = Outcome::default();
        for chunk in chunks {
            let mut chunk = chunk.to_vec();
            let fed = reader.feed(&limits, &mut chunk, |m| {
                outcome
                    .messages
                    .push((m.kind, m.payload.to_vec(), m.frames));
                Flow::Continue
            });
            match fed {
                Ok(fed) => assert_eq!(fed, Fed::Consumed),
                Err(fault) => {
                    outcome.verdict = Some(fault);
                    break;
                }
            }
        }
        outcome.kept = reader.buffered();
        outcome
    }

    /// Reads `stream` whole, in chunks of every size from 1 up and split
    /// in two at every byte; every way must give the same outcome, which
    /// is returned.
    fn check_with(limits: InputLimits, stream: &[u8]) -> Outcome {
        let outcome = read_chunks(limits, [stream]);
        for size in 1..=stream.len() {
            let split = read_chunks(limits, stream.chunks(size));
            assert_eq!(split, outcome, "chunks of {size}");
        }
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(read_chunks(limits, [a, b]), outcome, "cut at {cut}");
        }
        outcome
    }

    fn check(stream: &[u8]) -> Outcome {
        check_with(LIMITS, stream)
    }

    fn verdict(stream: &[u8]) -> Option<Fault> {
        check(stream).verdict
    }

    #[test]
    fn reads_frames_of_every_header_size_in_place() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for opcode in [BINARY, TEXT] {
                let payload = if opcode == TEXT {
                    vec![b'x'; len]
                } else {
                    payload.clone()
                };
                let mut input = whole(opcode, &payload);
                let range = input.as_ptr_range();
                let (mut reader, limits) = (FrameReader::new(), BIG);
                let mut got = Vec::new();
                let fed = reader.feed(&limits, &mut input, |m| {
                    // Zero copy: a slice of the input.
                    assert!(range.contains(&m.payload.as_ptr()) || len == 0);
                    got.push((m.kind, m.payload.to_vec(), m.frames));
                    Flow::Continue
                });
                assert_eq!(fed, Ok(Fed::Consumed));
                let kind = if opcode == TEXT {
                    Kind::Text
                } else {
                    Kind::Binary
                };
                assert_eq!(got, vec![(kind, payload, 1)], "len {len}");
                assert!(reader.is_idle());
                assert_eq!(reader.heap_bytes(), 0);
            }
        }
    }

    #[test]
    fn the_same_messages_and_verdict_however_the_stream_is_split() {
        let mut stream = whole(TEXT, b"hello");
        stream.extend(whole(PING, b"p"));
        stream.extend(frame(false, TEXT, "caf\u{e9} ".as_bytes()));
        stream.extend(whole(PONG, b""));
        stream.extend(frame(false, CONTINUATION, &[b'a'; 200]));
        stream.extend(frame(true, CONTINUATION, b"!"));
        stream.extend(whole(BINARY, &[0, 255, 7]));
        stream.extend(close(1000, b"bye"));
        let outcome = check(&stream);
        assert_eq!(outcome.verdict, None);
        assert_eq!(outcome.kept, 0);
        let mut long = "caf\u{e9} ".as_bytes().to_vec();
        long.extend([b'a'; 200]);
        long.push(b'!');
        let mut close_payload = 1000u16.to_be_bytes().to_vec();
        close_payload.extend(b"bye");
        assert_eq!(
            outcome.messages,
            vec![
                (Kind::Text, b"hello".to_vec(), 1),
                (Kind::Ping, b"p".to_vec(), 1),
                (Kind::Pong, vec![], 1),
                (Kind::Text, long, 3),
                (Kind::Binary, vec![0, 255, 7], 1),
                (Kind::Close, close_payload, 1),
            ]
        );
        // Cut off mid-frame: the same part kept, however it came.
        let outcome = check(&stream[..stream.len() - 2]);
        assert_eq!((outcome.messages.len(), outcome.kept), (5, 9));
        // And with a fault at the end, each way.
        for bad in [whole(3, b""), frame(true, TEXT, &[0xC3, 0x28])] {
            let mut faulty = stream.clone();
            faulty.extend(bad);
            let outcome = check(&faulty);
            assert_eq!(outcome.messages.len(), 6);
            assert!(outcome.verdict.is_some());
        }
    }

    #[test]
    fn fragments_with_control_frames_between() {
        let mut stream = frame(false, BINARY, b"ab");
        stream.extend(whole(PING, b"1"));
        stream.extend(frame(false, CONTINUATION, b""));
        stream.extend(whole(PONG, b"2"));
        stream.extend(frame(true, CONTINUATION, b"cd"));
        let outcome = check(&stream);
        assert_eq!(
            outcome.messages,
            vec![
                (Kind::Ping, b"1".to_vec(), 1),
                (Kind::Pong, b"2".to_vec(), 1),
                (Kind::Binary, b"abcd".to_vec(), 3),
            ]
        );
        assert_eq!(outcome.verdict, None);
    }

    #[test]
    fn each_fault_has_its_close_code() {
        let unmasked = {
            let mut out = Vec::new();
            write_client_frame(&mut out, true, TEXT, false, b"hi");
            out
        };
        let mut rsv = whole(TEXT, b"hi");
        rsv[0] |= 0x40;
        let mut two_fragments = frame(false, TEXT, b"a");
        two_fragments.extend(frame(false, TEXT, b"b"));
        let mut five_fragments = frame(false, BINARY, b"a");
        for _ in 0..4 {
            five_fragments.extend(frame(false, CONTINUATION, b"a"));
        }
        let mut summed = frame(false, BINARY, &[1; 600]);
        summed.extend(frame(true, CONTINUATION, &[1; 401]));
        let mut cut_char = frame(false, TEXT, &[b'a', 0xE2, 0x82]);
        cut_char.extend(frame(true, CONTINUATION, b""));
        let cases: Vec<(Vec<u8>, Fault, u16)> = vec![
            (unmasked, Fault::Unmasked, 1002),
            (rsv, Fault::ReservedBits, 1002),
            (whole(3, b""), Fault::ReservedOpcode(3), 1002),
            (whole(7, b""), Fault::ReservedOpcode(7), 1002),
            (whole(0xB, b""), Fault::ReservedOpcode(0xB), 1002),
            (whole(0xF, b""), Fault::ReservedOpcode(0xF), 1002),
            (frame(false, PING, b""), Fault::FragmentedControl, 1002),
            (whole(PING, &[0; 126]), Fault::ControlTooLarge, 1002),
            (whole(CLOSE, &[0; 126]), Fault::ControlTooLarge, 1002),
            (
                whole(CONTINUATION, b"x"),
                Fault::UnexpectedContinuation,
                1002,
            ),
            (two_fragments, Fault::Interleaved, 1002),
            (whole(TEXT, &[0xFF]), Fault::InvalidUtf8, 1007),
            (cut_char, Fault::InvalidUtf8, 1007),
            (whole(CLOSE, &[3]), Fault::BadClosePayload, 1002),
            (close(1005, b""), Fault::BadCloseCode(1005), 1002),
            (close(1000, &[0xC0, 0x80]), Fault::BadCloseReason, 1007),
            (
                whole(BINARY, &[0; 1001]),
                Fault::TooLarge { limit: 1000 },
                1009,
            ),
            (summed, Fault::TooLarge { limit: 1000 }, 1009),
            (five_fragments, Fault::TooManyFragments { limit: 4 }, 1009),
        ];
        for (stream, fault, code) in cases {
            assert_eq!(verdict(&stream), Some(fault), "{fault:?}");
            assert_eq!(fault.close_code(), code, "{fault:?}");
            let reason = fault.to_string();
            assert!(!reason.is_empty() && reason.len() <= 123, "{reason}");
        }
        let widest = Fault::TooLarge { limit: u64::MAX }.to_string();
        assert!(widest.len() <= 123);
    }

    #[test]
    fn close_codes_follow_fastwebsockets() {
        let allowed: Vec<u16> = (0..=u16::MAX)
            .filter(|&c| close::is_sendable(c))
            .filter(|&c| c < 3000)
            .collect();
        assert_eq!(
            allowed,
            [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013]
        );
        for code in [2999, 5000, 0, 1004, 1005, 1006, 1014, 1015, 1016] {
            assert_eq!(verdict(&close(code, b"")), Some(Fault::BadCloseCode(code)));
        }
        for code in [1000, 1013, 3000, 4999] {
            assert_eq!(verdict(&close(code, "\u{e9}".as_bytes())), None);
        }
        assert_eq!(verdict(&whole(CLOSE, b"")), None);
    }

    #[test]
    fn text_is_checked_across_fragments_and_fails_early() {
        // A character cut between fragments is fine.
        let euro = "\u{20ac}".as_bytes();
        let mut stream = frame(false, TEXT, &euro[..1]);
        stream.extend(frame(false, CONTINUATION, &euro[1..2]));
        stream.extend(whole(PING, b""));
        stream.extend(frame(true, CONTINUATION, &euro[2..]));
        let outcome = check(&stream);
        assert_eq!(outcome.verdict, None);
        assert_eq!(outcome.messages[1], (Kind::Text, euro.to_vec(), 3));
        // A bad byte fails the message at its fragment: the ping after it
        // is never handed out.
        let mut stream = frame(false, TEXT, &[b'a', 0xFF]);
        stream.extend(whole(PING, b""));
        let outcome = check(&stream);
        assert_eq!(outcome.verdict, Some(Fault::InvalidUtf8));
        assert!(outcome.messages.is_empty());
        // Binary is not text.
        let mut stream = frame(false, BINARY, &[0xFF]);
        stream.extend(frame(true, CONTINUATION, &[0xFE]));
        assert_eq!(verdict(&stream), None);
    }

    #[test]
    fn pause_keeps_order_and_resumes() {
        let mut stream = Vec::new();
        for i in 0..5u8 {
            stream.extend(whole(TEXT, &[b'0' + i]));
        }
        stream.extend(frame(false, BINARY, b"x"));
        let expected = check(&stream).messages;
        // Pause after every message; resume with nothing or with the rest.
        for resume_with_more in [false, true] {
            for cut in 0..=stream.len() {
                let (mut reader, limits) = (FrameReader::new(), LIMITS);
                let mut got = Vec::new();
                let mut chunks = vec![stream[..cut].to_vec(), stream[cut..].to_vec()].into_iter();
                let mut input = chunks.next().unwrap();
                loop {
                    let fed = reader.feed(&limits, &mut input, |m| {
                        got.push((m.kind, m.payload.to_vec(), m.frames));
                        Flow::Pause
                    });
                    input = match fed.unwrap() {
                        Fed::Paused if resume_with_more => chunks.next().unwrap_or_default(),
                        Fed::Paused => Vec::new(),
                        Fed::Consumed => match chunks.next() {
                            Some(chunk) => chunk,
                            None => break,
                        },
                    };
                }
                assert_eq!(got, expected, "cut {cut}");
                assert_eq!(reader.buffered(), 1, "the unfinished message's byte");
                assert!(!reader.is_idle());
            }
        }
        // A pause on the last whole message keeps the incomplete frame.
        let mut input = whole(TEXT, b"a");
        input.extend(&whole(TEXT, b"b")[..3]);
        let (mut reader, limits) = (FrameReader::new(), LIMITS);
        assert_eq!(
            reader.feed(&limits, &mut input, |_| Flow::Pause),
            Ok(Fed::Paused)
        );
        assert_eq!(reader.buffered(), 3);
        assert_eq!(
            reader.feed(&limits, &mut [], |_| Flow::Pause),
            Ok(Fed::Consumed)
        );
        assert_eq!(reader.buffered(), 3);
    }

    #[test]
    fn valid_messages_before_a_fault_come_first_and_the_fault_sticks() {
        let mut input = whole(TEXT, b"ok");
        input.extend(whole(PING, b""));
        input.extend(whole(CONTINUATION, b"bad"));
        input.extend(whole(TEXT, b"never"));
        let (mut reader, limits) = (FrameReader::new(), LIMITS);
        let mut got = Vec::new();
        let fed = reader.feed(&limits, &mut input, |m| {
            got.push(m.kind);
            Flow::Continue
        });
        assert_eq!(fed, Err(Fault::UnexpectedContinuation));
        assert_eq!(got, [Kind::Text, Kind::Ping]);
        assert_eq!(reader.fault(), Some(Fault::UnexpectedContinuation));
        let mut more = whole(TEXT, b"more");
        let fed = reader.feed(&limits, &mut more, |_| panic!("nothing after a fault"));
        assert_eq!(fed, Err(Fault::UnexpectedContinuation));
        assert_eq!((reader.buffered(), reader.heap_bytes()), (0, 0));
    }

    #[test]
    fn idle_after_a_partial_frame_completes_holds_no_heap() {
        let mut stream = whole(TEXT, &[b'x'; 300]);
        stream.extend(frame(false, BINARY, &[1; 300]));
        stream.extend(frame(true, CONTINUATION, &[2; 300]));
        let (mut reader, limits) = (FrameReader::new(), LIMITS);
        for (i, chunk) in stream.chunks(100).enumerate() {
            let mut chunk = chunk.to_vec();
            assert_eq!(
                reader.feed(&limits, &mut chunk, |_| Flow::Continue),
                Ok(Fed::Consumed)
            );
            if i < 9 {
                assert!(reader.heap_bytes() > 0);
                // Never more than one frame, plus the message.
                assert!(reader.heap_bytes() <= 2 * (300 + MAX_HEAD), "{i}");
            }
        }
        assert!(reader.is_idle());
        assert_eq!((reader.buffered(), reader.heap_bytes()), (0, 0));
    }

    #[test]
    fn a_header_announcing_1_gib_is_refused_before_its_payload() {
        let mut head = Vec::new();
        write_client_frame(&mut head, true, BINARY, true, b"");
        head[1] = 0x80 | 127;
        head.splice(2..2, (1u64 << 30).to_be_bytes());
        assert_eq!(head.len(), MAX_HEAD);
        for cut in [10, MAX_HEAD] {
            let (mut reader, limits) = (FrameReader::new(), BIG);
            let fed = reader.feed(&limits, &mut head[..cut].to_vec(), |_| Flow::Continue);
            assert_eq!(fed, Err(Fault::TooLarge { limit: 1 << 20 }), "cut {cut}");
            assert_eq!((reader.buffered(), reader.heap_bytes()), (0, 0));
        }
        // Fragments are summed as their headers come.
        let mut stream = frame(false, BINARY, &[1; 600]);
        stream.extend(&frame(true, CONTINUATION, &[1; 401])[..8]);
        let (mut reader, limits) = (FrameReader::new(), LIMITS);
        let fed = reader.feed(&limits, &mut stream, |_| Flow::Continue);
        assert_eq!(fed, Err(Fault::TooLarge { limit: 1000 }));
    }

    /// A xorshift generator, for reproducible random streams.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }
    }

    /// Reads `stream` in random pieces (empty ones too), pausing after
    /// random messages and resuming with an empty read or the next piece.
    fn read_randomly(limits: InputLimits, stream: &[u8], rng: &mut Rng) -> Outcome {
        let mut reader = FrameReader::new();
        let mut outcome = Outcome::default();
        let mut rest = stream;
        loop {
            let len = [0, 1 + rng.below(8), 1 + rng.below(700)][rng.below(3)].min(rest.len());
            let (piece, after) = rest.split_at(len);
            rest = after;
            let pause_bits = rng.next();
            let fed = reader.feed(&limits, &mut piece.to_vec(), |m| {
                let n = outcome.messages.len();
                outcome
                    .messages
                    .push((m.kind, m.payload.to_vec(), m.frames));
                m.payload.fill(0xAA);
                if pause_bits >> (n % 64) & 1 == 1 {
                    Flow::Pause
                } else {
                    Flow::Continue
                }
            });
            match fed {
                Err(fault) => {
                    outcome.verdict = Some(fault);
                    break;
                }
                Ok(Fed::Consumed) if rest.is_empty() => break,
                Ok(_) => {}
            }
        }
        outcome.kept = reader.buffered();
        outcome
    }

    /// A frame breaking one of ten rules (or, for a continuation, none if
    /// a fragmented message is under way).
    fn broken_frame(which: usize) -> Vec<u8> {
        let mut out = Vec::new();
        match which {
            0 => write_client_frame(&mut out, true, TEXT, false, b"unmasked"),
            1 => out = vec![0xC1, 0x80, 1, 2, 3, 4],
            2 => write_client_frame(&mut out, true, 0xB, true, b""),
            3 => write_client_frame(&mut out, true, CONTINUATION, true, b"x"),
            4 => write_client_frame(&mut out, false, PING, true, b""),
            5 => write_client_frame(&mut out, true, PONG, true, &[0; 126]),
            6 => write_client_frame(&mut out, true, CLOSE, true, &[3]),
            7 => write_client_frame(&mut out, true, CLOSE, true, &[3, 0xEC]),
            8 => write_client_frame(&mut out, true, TEXT, true, &[b'a', 0xC0, 0xAF]),
            _ => write_client_frame(&mut out, true, BINARY, true, &[0; 1001]),
        }
        out
    }

    #[test]
    fn random_streams_read_the_same_in_any_pieces() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..400 {
            // Mostly well-formed messages, some cut into fragments at any
            // byte (characters too), with control frames between; now and
            // then a frame that breaks a rule.
            let mut stream = Vec::new();
            for _ in 0..1 + rng.below(8) {
                if rng.below(25) == 0 {
                    stream.extend(broken_frame(rng.below(10)));
                    continue;
                }
                let op = [TEXT, BINARY, TEXT, PING, PONG, CLOSE][rng.below(6)];
                let len = [
                    0,
                    1 + rng.below(10),
                    120 + rng.below(6),
                    200 + rng.below(400),
                ][rng.below(4)];
                let mut payload: Vec<u8> = if op == BINARY {
                    (0..len).map(|_| rng.next() as u8).collect()
                } else {
                    "\u{e9}\u{20ac}a\u{1F600}"
                        .chars()
                        .cycle()
                        .take(len / 2)
                        .collect::<String>()
                        .into()
                };
                if op >= CLOSE {
                    payload.truncate(125);
                    if op == CLOSE && !payload.is_empty() {
                        payload.splice(0..0, 1000u16.to_be_bytes());
                        payload.truncate(125);
                        // Only now and then cut inside a character.
                        while rng.below(8) > 0 && std::str::from_utf8(&payload[2..]).is_err() {
                            payload.pop();
                        }
                    }
                    write_client_frame(&mut stream, true, op, true, &payload);
                    continue;
                }
                let mut cuts: Vec<usize> = (0..rng.below(4))
                    .map(|_| rng.below(len as u64 + 1))
                    .collect();
                cuts.sort_unstable();
                let mut from = 0;
                for (i, &cut) in cuts.iter().chain([&payload.len()]).enumerate() {
                    let cut = cut.min(payload.len()).max(from);
                    let fin = i == cuts.len();
                    let op = if i == 0 { op } else { CONTINUATION };
                    write_client_frame(&mut stream, fin, op, true, &payload[from..cut]);
                    from = cut;
                    if !fin && rng.below(3) == 0 {
                        write_client_frame(
                            &mut stream,
                            true,
                            [PING, PONG][rng.below(2)],
                            true,
                            b"c",
                        );
                    }
                }
            }
            let expected = read_chunks(LIMITS, [&stream[..]]);
            for _ in 0..4 {
                assert_eq!(read_randomly(LIMITS, &stream, &mut rng), expected);
            }
        }
    }

    #[test]
    fn unmask_matches_a_bytewise_xor_at_any_offset_and_length() {
        let data: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
        for start in 0..8 {
            for len in 0..=(data.len() - start) {
                let mut fast = data.clone();
                unmask(&mut fast[start..start + len], CLIENT_MASK);
                let mut slow = data.clone();
                for (i, b) in slow[start..start + len].iter_mut().enumerate() {
                    *b ^= CLIENT_MASK[i % 4];
                }
                assert_eq!(fast, slow, "start {start} len {len}");
            }
        }
    }

    #[test]
    fn a_reader_is_small_and_idle_costs_no_heap() {
        // 24 bytes on 64-bit targets: what is kept 8 (boxed), fault 16.
        let size = std::mem::size_of::<FrameReader>();
        assert!(size <= 24, "{size} bytes");
        let reader = FrameReader::new();
        assert!(reader.is_idle());
        assert_eq!((reader.buffered(), reader.heap_bytes()), (0, 0));
    }
}
