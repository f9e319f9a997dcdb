//! Server-to-client WebSocket frames built as complete byte buffers.
//!
//! Server frames are never masked (RFC 6455 §5.1), so a frame's bytes are
//! the same for every recipient: the `fanout` builds each tick's frame once
//! and every session writes the same [`Bytes`].

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Room reserved in front of a payload for the largest header used here
/// (2 bytes + 16-bit extended length; payloads over 64 KiB use 10).
const HEAD_ROOM: usize = 4;

/// Opcode of a text frame.
const TEXT: u8 = 0x1;
/// Opcode of a binary frame.
const BINARY: u8 = 0x2;

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
    let opcode = frame.first()? & 0x0F;
    let (len, start) = match frame.get(1)? & 0x7F {
        126 => (
            u16::from_be_bytes([*frame.get(2)?, *frame.get(3)?]) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(frame.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = frame.get(start..start + len)?;
    (start + len == frame.len()).then_some((opcode, payload))
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
