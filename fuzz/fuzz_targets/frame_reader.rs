//! Fuzz target: `wire::reader::FrameReader` on arbitrary client bytes, what
//! an event loop's connection does with everything its socket reads. The
//! first four bytes pick the limits, how the stream is cut into reads
//! (empty reads included) and after which messages the callback pauses;
//! the rest is the stream. Checked:
//! - nothing panics;
//! - cut into reads and paused (resumed with an empty read or the next
//!   one), the reader hands out exactly the messages, and reaches exactly
//!   the verdict and leftover, that one read of the whole stream does;
//! - what it hands out obeys the rules it enforces: text is UTF-8, a
//!   message within both limits, a control frame one frame of at most 125
//!   bytes, a close payload empty or an allowed code and a UTF-8 reason;
//! - after a read that used everything, it keeps at most the message limit
//!   plus one header and one control frame, and holds at most the message
//!   buffer plus one frame of heap; idle, none at all;
//! - after a fault it keeps nothing and gives the same fault again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tickcast::wire::close::is_sendable;
use tickcast::wire::reader::{
    Fault, Fed, Flow, FrameReader, InputLimits, Kind, Message, MAX_CONTROL_PAYLOAD, MAX_HEAD,
};

fuzz_target!(|data: &[u8]| tickcast_fuzz::run(data, check));

/// What one way of reading a stream gave.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Kind, payload and frame count of each message, in order.
    messages: Vec<(Kind, Vec<u8>, u32)>,
    /// The fault it ended with, if any.
    fault: Option<Fault>,
    /// `buffered()` at the end.
    kept: usize,
}

fn check(data: &[u8]) {
    let [size, fragments, seed, pauses, stream @ ..] = data else {
        return;
    };
    let limits = InputLimits {
        max_message_bytes: u64::from(*size) * 8,
        max_fragments: u32::from(*fragments % 16),
    };
    let whole = read(limits, stream, &mut std::iter::once(stream.len()), 0);
    let mut cuts = Cuts {
        state: u32::from(*seed) << 8 | 0x5A,
        last_empty: false,
    };
    let split = read(limits, stream, &mut cuts, *pauses);
    assert_eq!(whole, split, "{limits:?}");
}

/// Reads `stream` in reads of the `lengths` given (the rest at once when
/// they end), pausing after message `n` when bit `n % 8` of `pauses` is set.
fn read(
    limits: InputLimits,
    stream: &[u8],
    lengths: &mut dyn Iterator<Item = usize>,
    pauses: u8,
) -> Outcome {
    let max = usize::try_from(limits.max_message_bytes).unwrap();
    let mut reader = FrameReader::new();
    let mut messages = Vec::new();
    let mut rest = stream;
    let mut paused_ever = false;
    let fault = loop {
        let len = lengths.next().unwrap_or(rest.len()).min(rest.len());
        let (chunk, after) = rest.split_at(len);
        rest = after;
        let mut chunk = chunk.to_vec();
        let fed = reader.feed(&limits, &mut chunk, |message| {
            let n = messages.len();
            take(&limits, message, &mut messages);
            if pauses & (1 << (n % 8)) != 0 {
                Flow::Pause
            } else {
                Flow::Continue
            }
        });
        if reader.is_idle() {
            assert_eq!((reader.buffered(), reader.heap_bytes()), (0, 0));
        }
        match fed {
            Err(fault) => {
                assert_eq!(reader.fault(), Some(fault));
                assert_eq!((reader.buffered(), reader.heap_bytes()), (0, 0));
                let again = reader.feed(&limits, &mut rest.to_vec(), |_| {
                    panic!("a message after a fault")
                });
                assert_eq!(again, Err(fault));
                break Some(fault);
            }
            Ok(Fed::Paused) => paused_ever = true,
            Ok(Fed::Consumed) => {
                // A partial frame (header and all, or a control frame
                // between fragments) and the message under way.
                assert!(
                    reader.buffered() <= max + MAX_HEAD + MAX_CONTROL_PAYLOAD,
                    "{} kept",
                    reader.buffered()
                );
                let frame = MAX_HEAD + max.max(MAX_CONTROL_PAYLOAD);
                let frame = if paused_ever {
                    2 * frame.max(64)
                } else {
                    frame
                };
                assert!(
                    reader.heap_bytes() <= max + frame,
                    "{} bytes of heap",
                    reader.heap_bytes()
                );
                if rest.is_empty() {
                    break None;
                }
            }
        }
    };
    Outcome {
        messages,
        fault,
        kept: reader.buffered(),
    }
}

/// Checks a message against the rules, records it, and scribbles over
/// its payload (the receiver may), which must change nothing after.
fn take(limits: &InputLimits, message: Message<'_>, into: &mut Vec<(Kind, Vec<u8>, u32)>) {
    let Message {
        kind,
        payload,
        frames,
    } = message;
    match kind {
        Kind::Text | Kind::Binary => {
            assert!(payload.len() as u64 <= limits.max_message_bytes);
            assert!((1..=limits.max_fragments).contains(&frames));
            if kind == Kind::Text {
                assert!(std::str::from_utf8(payload).is_ok(), "text not UTF-8");
            }
        }
        Kind::Ping | Kind::Pong | Kind::Close => {
            assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
            assert_eq!(frames, 1);
        }
    }
    if kind == Kind::Close {
        match &payload[..] {
            [] => {}
            [hi, lo, reason @ ..] => {
                assert!(is_sendable(u16::from_be_bytes([*hi, *lo])));
                assert!(std::str::from_utf8(reason).is_ok());
            }
            [_] => panic!("a 1-byte close payload"),
        }
    }
    into.push((kind, payload.to_vec(), frames));
    payload.fill(0xAA);
}

/// Read lengths from a xorshift generator: mostly short, some long, some
/// empty (never two empty in a row, so the reads move on).
struct Cuts {
    state: u32,
    last_empty: bool,
}

impl Iterator for Cuts {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.state = x;
        let r = (x >> 3) as usize;
        let len = match x % 8 {
            0 if !self.last_empty => 0,
            0..=3 => 1 + r % 8,
            4..=6 => 1 + r % 64,
            _ => 1 + r % 2048,
        };
        self.last_empty = len == 0;
        Some(len)
    }
}
