//! The WebSocket frame codec (RFC 6455 §5.2) every part of the project
//! shares: server frames built as complete byte buffers, the frame splitter
//! that finds whole frames in received bytes, and masked client frames for
//! the clients in feed-sim, the tests and the benches.
//!
//! Server frames are never masked (RFC 6455 §5.1), so a frame's bytes are
//! the same for every recipient: the `fanout` builds each tick's frame once
//! and every session writes the same [`Bytes`].

use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Frame opcodes (RFC 6455 §5.2).
pub mod opcode {
    /// A continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// A text frame (UTF-8).
    pub const TEXT: u8 = 0x1;
    /// A binary frame.
    pub const BINARY: u8 = 0x2;
    /// A close frame: optional code and reason.
    pub const CLOSE: u8 = 0x8;
    /// A ping, to be answered with a pong carrying the same payload.
    pub const PING: u8 = 0x9;
    /// A pong.
    pub const PONG: u8 = 0xA;
}

use opcode::{BINARY, TEXT};

/// Room reserved in front of a payload for the largest header used here
/// (2 bytes + 16-bit extended length; payloads over 64 KiB use 10).
const HEAD_ROOM: usize = 4;

/// Builds a text frame by letting `write_payload` append the payload, then
/// writing the header in front of it without moving the payload.
pub fn text_frame_with(capacity: usize, write_payload: impl FnOnce(&mut BytesMut)) -> Bytes {
    data_frame_with(TEXT, capacity, write_payload)
}

/// A binary frame holding `payload`.
pub fn binary_frame(payload: &[u8]) -> Bytes {
    data_frame_with(BINARY, payload.len(), |buf| buf.extend_from_slice(payload))
}

/// [`text_frame_with`] for any data `opcode`.
fn data_frame_with(
    opcode: u8,
    capacity: usize,
    write_payload: impl FnOnce(&mut BytesMut),
) -> Bytes {
    let first = 0x80 | opcode; // FIN + opcode
    let mut buf = BytesMut::with_capacity(HEAD_ROOM + capacity);
    buf.put_bytes(0, HEAD_ROOM);
    write_payload(&mut buf);
    let len = buf.len() - HEAD_ROOM;
    if len < 126 {
        buf[2] = first;
        buf[3] = len as u8;
        // Moves the start without copying or reallocating.
        buf.advance(2);
        buf.freeze()
    } else if len <= u16::MAX as usize {
        buf[0] = first;
        buf[1] = 126;
        buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        buf.freeze()
    } else {
        let mut framed = BytesMut::with_capacity(10 + len);
        framed.put_u8(first);
        framed.put_u8(127);
        framed.put_u64(len as u64);
        framed.extend_from_slice(&buf[HEAD_ROOM..]);
        framed.freeze()
    }
}

/// A text frame holding `payload`.
pub fn text_frame(payload: &[u8]) -> Bytes {
    text_frame_with(payload.len(), |buf| buf.extend_from_slice(payload))
}

/// A close frame with `code` and a UTF-8 `reason` (cut to fit the 125-byte
/// control-frame limit on a character boundary).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    let mut buf = BytesMut::with_capacity(4 + reason.len());
    buf.put_u8(0x88);
    buf.put_u8(2 + reason.len() as u8);
    buf.put_u16(code);
    buf.extend_from_slice(reason);
    buf.freeze()
}

/// A close frame echoing a received close payload (code and reason as the
/// peer sent them, or empty), as RFC 6455 §5.5.1 asks of the answer.
pub fn close_frame_echo(payload: &[u8]) -> Bytes {
    let payload = &payload[..payload.len().min(125)];
    let mut buf = BytesMut::with_capacity(2 + payload.len());
    buf.put_u8(0x88);
    buf.put_u8(payload.len() as u8);
    buf.extend_from_slice(payload);
    buf.freeze()
}

/// A ping frame with an empty payload.
pub fn ping_frame() -> Bytes {
    Bytes::from_static(&[0x89, 0x00])
}

/// A pong frame echoing a ping's payload (at most 125 bytes, which the
/// reader enforces).
pub fn pong_frame(payload: &[u8]) -> Bytes {
    let payload = &payload[..payload.len().min(125)];
    let mut buf = BytesMut::with_capacity(2 + payload.len());
    buf.put_u8(0x8A);
    buf.put_u8(payload.len() as u8);
    buf.extend_from_slice(payload);
    buf.freeze()
}

/// Splits a complete unmasked frame into (opcode, payload); for tests and
/// tools that inspect frames this module built.
pub fn parse_unmasked(frame: &[u8]) -> Option<(u8, &[u8])> {
    let head = Head::parse(frame)?;
    if head.mask.is_some() || head.frame_len()? != frame.len() {
        return None;
    }
    Some((head.opcode, &frame[head.header_len..]))
}

/// The header of the frame at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// The last (or only) frame of its message.
    pub fin: bool,
    /// The three reserved bits (RSV1..RSV3), as the low bits.
    pub rsv: u8,
    /// See [`opcode`].
    pub opcode: u8,
    /// The masking key, which every client frame carries and no server
    /// frame does.
    pub mask: Option<[u8; 4]>,
    /// Bytes before the payload: 2 to 14.
    pub header_len: usize,
    /// The payload's length as the header states it.
    pub payload_len: u64,
}

impl Head {
    /// Reads the header at the start of `data`; `None` until all of it
    /// has arrived. Looks at no byte past the header.
    pub fn parse(data: &[u8]) -> Option<Head> {
        let (&b0, &b1) = (data.first()?, data.get(1)?);
        let (payload_len, mut header_len) = match b1 & 0x7F {
            126 => (
                u64::from(u16::from_be_bytes([*data.get(2)?, *data.get(3)?])),
                4,
            ),
            127 => (u64::from_be_bytes(data.get(2..10)?.try_into().ok()?), 10),
            n => (u64::from(n), 2),
        };
        let mask = if b1 & 0x80 != 0 {
            let key = data.get(header_len..header_len + 4)?;
            header_len += 4;
            Some(key.try_into().expect("four bytes"))
        } else {
            None
        };
        Some(Head {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x07,
            opcode: b0 & 0x0F,
            mask,
            header_len,
            payload_len,
        })
    }

    /// Header plus payload, if that fits in memory at all.
    pub fn frame_len(&self) -> Option<usize> {
        usize::try_from(self.payload_len)
            .ok()?
            .checked_add(self.header_len)
    }
}

/// Total length of the frame starting `data`, once its header is complete.
pub fn frame_len(data: &[u8]) -> Option<usize> {
    Head::parse(data)?.frame_len()
}

/// Where each frame of `frames` (complete frames laid end to end, as this
/// module builds them) ends, in order; stops at the first that is not
/// whole, so the last end is `frames.len()` exactly when all are.
pub fn frame_ends(frames: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let end = at + frame_len(frames.get(at..)?)?;
        (end <= frames.len() && end > at).then(|| {
            at = end;
            end
        })
    })
}

/// A complete server frame at the start of a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameAt {
    /// See [`opcode`].
    pub opcode: u8,
    /// The payload, relative to the frame's start.
    pub payload: Range<usize>,
    /// Header plus payload.
    pub len: usize,
}

/// Why received bytes are not a frame a tickcast server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadServerFrame {
    /// The frame is masked, a fragment, or has a reserved bit set.
    #[error("a masked, fragmented or extended frame, which a server never sends")]
    NotPlain,
    /// A control frame (close, ping, pong) with more than the 125 bytes
    /// RFC 6455 §5.5 allows.
    #[error("a control frame with a {0}-byte payload, over the 125 bytes allowed")]
    LongControl(u64),
    /// The payload is larger than the reader allows.
    #[error("a frame with a {0}-byte payload, over the reader's limit")]
    TooLarge(u64),
}

/// The server frame at the start of `data`: `Ok(None)` while it is not
/// complete, an error if it is not what a server sends (tickcast never
/// masks, fragments or uses extensions) or its payload is larger than
/// `max_payload`. Checks the header before waiting for the payload, so a
/// hostile length is refused at once.
pub fn split_server_frame(
    data: &[u8],
    max_payload: usize,
) -> Result<Option<FrameAt>, BadServerFrame> {
    let Some(head) = Head::parse(data) else {
        return Ok(None);
    };
    if !head.fin || head.rsv != 0 || head.mask.is_some() {
        return Err(BadServerFrame::NotPlain);
    }
    if head.opcode >= opcode::CLOSE && head.payload_len > 125 {
        return Err(BadServerFrame::LongControl(head.payload_len));
    }
    if head.payload_len > max_payload as u64 {
        return Err(BadServerFrame::TooLarge(head.payload_len));
    }
    let len = head.header_len + head.payload_len as usize;
    if data.len() < len {
        return Ok(None);
    }
    Ok(Some(FrameAt {
        opcode: head.opcode,
        payload: head.header_len..len,
        len,
    }))
}

/// The masking key of the client frames built here. RFC 6455 asks a
/// browser for a fresh key per frame, to keep script-controlled bytes off
/// intermediaries' caches; a load generator or a test has no such script,
/// and a fixed key keeps frames reproducible.
pub const CLIENT_MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

/// Appends a client frame to `out`: `opcode` and `payload`, final unless
/// `fin` is false, masked with [`CLIENT_MASK`] unless `masked` is false
/// (which only a test of the server's refusal wants).
pub fn write_client_frame(out: &mut Vec<u8>, fin: bool, opcode: u8, masked: bool, payload: &[u8]) {
    let mask_bit = if masked { 0x80 } else { 0 };
    out.reserve(14 + payload.len());
    out.push((u8::from(fin) << 7) | opcode);
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&CLIENT_MASK);
        out.extend(
            payload
                .iter()
                .zip(CLIENT_MASK.iter().cycle())
                .map(|(b, k)| b ^ k),
        );
    } else {
        out.extend_from_slice(payload);
    }
}

/// A final, masked client frame holding `payload`.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_client_frame(&mut out, true, opcode, true, payload);
    out
}

/// Undoes (or applies) masking with `key` in place, `payload` starting at
/// key byte 0. XORs eight bytes at a time as one `u64` (the key twice),
/// at any address (no alignment asked), in a loop the compiler may also
/// vectorize; the last 0 to 7 bytes go one by one.
pub fn unmask(payload: &mut [u8], key: [u8; 4]) {
    let [a, b, c, d] = key;
    let word = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut words = payload.chunks_exact_mut(8);
    for chunk in &mut words {
        let bytes: &mut [u8; 8] = chunk.try_into().expect("chunks of eight bytes");
        *bytes = (u64::from_ne_bytes(*bytes) ^ word).to_ne_bytes();
    }
    // Eight bytes are two whole keys, so the rest starts at key byte 0.
    for (byte, k) in words.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// A close frame's code and reason: `None` for an empty payload (RFC
/// 6455's 1005, "no status received"); the reason with any invalid UTF-8
/// replaced.
pub fn close_parts(payload: &[u8]) -> Option<(u16, std::borrow::Cow<'_, str>)> {
    match payload {
        [hi, lo, reason @ ..] => Some((
            u16::from_be_bytes([*hi, *lo]),
            String::from_utf8_lossy(reason),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_frames_of_every_header_size_parse_back() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload = vec![b'x'; len];
            let frame = text_frame(&payload);
            let (opcode, parsed) = parse_unmasked(&frame).expect("well-formed");
            assert_eq!(opcode, 1);
            assert_eq!(parsed, &payload[..], "len {len}");
            assert_eq!(frame[0], 0x81);
            assert_eq!(frame[1] & 0x80, 0, "server frames are unmasked");
        }
    }

    #[test]
    fn client_frames_of_every_header_size_split_and_unmask() {
        for len in [0, 1, 125, 126, 65_535, 65_536] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let frame = client_frame(opcode::TEXT, &payload);
            let head = Head::parse(&frame).expect("complete header");
            assert_eq!(
                (head.fin, head.opcode, head.mask),
                (true, 1, Some(CLIENT_MASK))
            );
            assert_eq!(head.frame_len(), Some(frame.len()), "len {len}");
            let mut unmasked = frame[head.header_len..].to_vec();
            unmask(&mut unmasked, CLIENT_MASK);
            assert_eq!(unmasked, payload, "len {len}");
            // Every prefix of the header is incomplete, never wrong.
            for cut in 0..head.header_len {
                assert_eq!(Head::parse(&frame[..cut]), None, "cut {cut}");
            }
        }
    }

    #[test]
    fn the_server_frame_splitter_waits_for_whole_frames_and_refuses_odd_ones() {
        let mut bytes = text_frame(b"one").to_vec();
        bytes.extend_from_slice(&text_frame(&[b'x'; 300]));
        let first = split_server_frame(&bytes, 1024).unwrap().unwrap();
        assert_eq!(
            (first.opcode, &bytes[first.payload.clone()]),
            (1, &b"one"[..])
        );
        let second = split_server_frame(&bytes[first.len..], 1024)
            .unwrap()
            .unwrap();
        assert_eq!(first.len + second.len, bytes.len());
        assert_eq!(
            split_server_frame(&bytes[first.len..bytes.len() - 1], 1024),
            Ok(None)
        );
        assert_eq!(
            split_server_frame(&bytes[first.len..first.len + 4], 100),
            Err(BadServerFrame::TooLarge(300)),
            "a length over the limit is refused from the header alone"
        );
        let long_ping = [0x89, 126, 0, 126];
        assert_eq!(
            split_server_frame(&long_ping, 1024),
            Err(BadServerFrame::LongControl(126))
        );
        let masked = client_frame(opcode::TEXT, b"hi");
        assert_eq!(
            split_server_frame(&masked, 1024),
            Err(BadServerFrame::NotPlain)
        );
        let mut fragment = Vec::new();
        write_client_frame(&mut fragment, false, opcode::TEXT, false, b"hi");
        assert_eq!(
            split_server_frame(&fragment, 1024),
            Err(BadServerFrame::NotPlain)
        );
        assert_eq!(
            close_parts(&close_frame(1008, "slow consumer")[2..]),
            Some((1008, "slow consumer".into()))
        );
        assert_eq!(close_parts(b""), None);
    }

    #[test]
    fn close_frame_carries_code_and_reason_within_limits() {
        let frame = close_frame(1008, "slow consumer");
        let (opcode, payload) = parse_unmasked(&frame).unwrap();
        assert_eq!(opcode, 8);
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1008);
        assert_eq!(&payload[2..], b"slow consumer");
        let long = "é".repeat(100);
        let frame = close_frame(1001, &long);
        let (_, payload) = parse_unmasked(&frame).unwrap();
        assert!(payload.len() <= 125);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }
}
