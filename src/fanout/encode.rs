//! Tick → complete WebSocket text frame, once per tick.
//!
//! The fan-out calls [`tick_frame`] once for every tick it reads from the
//! `ring`; the resulting [`Bytes`] is shared by reference count with every
//! subscriber's outbox, so no recipient costs a serialization or a copy.
//! JSON is written by hand: the field set is fixed, symbol names never need
//! escaping ([`crate::symbol::check_name`] sees to it), and prices are
//! exact scaled integers printed as their shortest decimal
//! ([`crate::price::Price::write`]), from integers alone.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use crate::tick::Tick;
use crate::wire::frame::{frame_ends, frame_len, parse_unmasked, text_frame_with};

/// Which message a tick is sent as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TickKind {
    /// A live update: `{"type":"tick",…}`.
    Tick,
    /// The last known state at subscribe time: `{"type":"snapshot",…}`.
    Snapshot,
    /// A snapshot that also says ticks were missed that cannot be replayed:
    /// `{"type":"snapshot",…,"reset":true}`.
    Reset,
}

/// Payloads are about 130 bytes; reserving this avoids any regrowth.
const TICK_CAPACITY: usize = 160;

/// `tick` for symbol `name` as a complete, unmasked text frame.
pub fn tick_frame(kind: TickKind, name: &str, tick: &Tick) -> Bytes {
    text_frame_with(TICK_CAPACITY, |buf| write_tick_json(buf, kind, name, tick))
}

/// Appends the JSON object for `tick` to `buf`.
pub fn write_tick_json(buf: &mut BytesMut, kind: TickKind, name: &str, tick: &Tick) {
    let mut int = itoa::Buffer::new();
    buf.put_slice(match kind {
        TickKind::Tick => br#"{"type":"tick","sym":""#,
        TickKind::Snapshot | TickKind::Reset => br#"{"type":"snapshot","sym":""#,
    });
    buf.put_slice(name.as_bytes());
    buf.put_slice(br#"","seq":"#);
    buf.put_slice(int.format(tick.seq).as_bytes());
    buf.put_slice(br#","px":"#);
    tick.px.write(buf);
    buf.put_slice(br#","bid":"#);
    tick.bid.write(buf);
    buf.put_slice(br#","ask":"#);
    tick.ask.write(buf);
    buf.put_slice(br#","size":"#);
    buf.put_slice(int.format(tick.size).as_bytes());
    buf.put_slice(br#","ts":"#);
    buf.put_slice(int.format(tick.ts).as_bytes());
    if kind == TickKind::Reset {
        buf.put_slice(br#","reset":true"#);
    }
    buf.put_u8(b'}');
}

/// How every live tick's JSON starts; nothing else the server sends does.
const TICK_PREFIX: &[u8] = br#"{"type":"tick","#;

/// Most payload bytes of one `ticks` frame; a longer run of ticks is split.
pub const MAX_BATCH_PAYLOAD: usize = 64 * 1024;

/// The JSON of `frame` if it is a tick frame built by [`tick_frame`].
fn tick_json(frame: &[u8]) -> Option<&[u8]> {
    parse_unmasked(frame)
        .map(|(_, payload)| payload)
        .filter(|payload| payload.starts_with(TICK_PREFIX))
}

/// Splits every entry of `frames` that holds several frames (a pass's
/// ticks queued as one slice before the client asked for batches) into
/// one entry per frame.
fn split_slices(frames: &mut VecDeque<Bytes>) {
    let several = |entry: &Bytes| frame_len(entry).is_some_and(|len| len < entry.len());
    if !frames.iter().any(several) {
        return;
    }
    let mut split = VecDeque::with_capacity(frames.len());
    for entry in frames.drain(..) {
        let mut start = 0;
        for end in frame_ends(&entry) {
            split.push_back(entry.slice(start..end));
            start = end;
        }
        if start < entry.len() {
            split.push_back(entry.slice(start..));
        }
    }
    *frames = split;
}

/// Replaces each run of tick frames in `frames` by `ticks` frames
/// (`{"type":"ticks","data":[…]}`) of at most [`MAX_BATCH_PAYLOAD`] bytes,
/// in order; every other frame stays where it is.
pub fn batch_ticks(frames: &mut VecDeque<Bytes>) {
    const HEAD: &[u8] = br#"{"type":"ticks","data":["#;
    const TAIL: &[u8] = b"]}";
    split_slices(frames);
    if !frames.iter().any(|frame| tick_json(frame).is_some()) {
        return;
    }
    let mut out = VecDeque::with_capacity(frames.len());
    let mut run: Vec<Bytes> = Vec::new();
    let mut run_bytes = 0;
    let flush = |run: &mut Vec<Bytes>, run_bytes: &mut usize, out: &mut VecDeque<Bytes>| {
        if run.is_empty() {
            return;
        }
        let capacity = HEAD.len() + *run_bytes + run.len() + TAIL.len();
        out.push_back(text_frame_with(capacity, |buf| {
            buf.put_slice(HEAD);
            for (i, frame) in run.iter().enumerate() {
                if i > 0 {
                    buf.put_u8(b',');
                }
                buf.put_slice(tick_json(frame).expect("only tick frames are batched"));
            }
            buf.put_slice(TAIL);
        }));
        run.clear();
        *run_bytes = 0;
    };
    for frame in frames.drain(..) {
        match tick_json(&frame).map(<[u8]>::len) {
            Some(len) => {
                if run_bytes + len + 1 > MAX_BATCH_PAYLOAD {
                    flush(&mut run, &mut run_bytes, &mut out);
                }
                run_bytes += len + 1;
                run.push(frame);
            }
            None => {
                flush(&mut run, &mut run_bytes, &mut out);
                out.push_back(frame);
            }
        }
    }
    flush(&mut run, &mut run_bytes, &mut out);
    *frames = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::text_frame;
    use simd_json::prelude::*;

    fn sample() -> Tick {
        Tick {
            symbol: 0,
            seq: 42,
            px: "187.25".parse().unwrap(),
            bid: "187.24".parse().unwrap(),
            ask: "187.26".parse().unwrap(),
            size: 300,
            ts: 1_732_250_000_123_456_789,
        }
    }

    #[test]
    fn matches_the_documented_message() {
        let frame = tick_frame(TickKind::Tick, "AAPL", &sample());
        let (opcode, payload) = parse_unmasked(&frame).unwrap();
        assert_eq!(opcode, 1);
        assert_eq!(
            std::str::from_utf8(payload).unwrap(),
            r#"{"type":"tick","sym":"AAPL","seq":42,"px":187.25,"bid":187.24,"ask":187.26,"size":300,"ts":1732250000123456789}"#
        );
    }

    #[test]
    fn a_reset_is_a_snapshot_with_a_flag() {
        let frame = tick_frame(TickKind::Reset, "AAPL", &sample());
        let (_, payload) = parse_unmasked(&frame).unwrap();
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(v["type"], "snapshot");
        assert_eq!(v["reset"], true);
        assert_eq!(v["seq"], 42);
    }

    #[test]
    fn batches_runs_of_ticks_and_keeps_other_frames_in_place() {
        let tick = |seq| {
            let mut t = sample();
            t.seq = seq;
            tick_frame(TickKind::Tick, "AAPL", &t)
        };
        let reply = text_frame(br#"{"type":"pong"}"#);
        let snapshot = tick_frame(TickKind::Snapshot, "AAPL", &sample());
        let mut frames: VecDeque<Bytes> =
            [tick(1), tick(2), reply.clone(), snapshot.clone(), tick(3)].into();
        batch_ticks(&mut frames);
        let messages: Vec<serde_json::Value> = frames
            .iter()
            .map(|f| serde_json::from_slice(parse_unmasked(f).unwrap().1).unwrap())
            .collect();
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[0]["type"], "ticks");
        let seqs: Vec<u64> = messages[0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [1, 2]);
        assert_eq!(messages[0]["data"][0]["type"], "tick");
        assert_eq!(frames[1], reply);
        assert_eq!(frames[2], snapshot);
        assert_eq!(messages[3]["data"][0]["seq"], 3);
    }

    #[test]
    fn ticks_queued_as_one_slice_are_batched_like_separate_frames() {
        let tick = |seq| {
            let mut t = sample();
            t.seq = seq;
            tick_frame(TickKind::Tick, "AAPL", &t)
        };
        let reply = text_frame(br#"{"type":"pong"}"#);
        let slice = Bytes::from([tick(1), tick(2), reply.clone(), tick(3)].concat());
        let mut frames: VecDeque<Bytes> = [slice, tick(4)].into();
        batch_ticks(&mut frames);
        let messages: Vec<serde_json::Value> = frames
            .iter()
            .map(|f| serde_json::from_slice(parse_unmasked(f).unwrap().1).unwrap())
            .collect();
        let seqs = |m: &serde_json::Value| -> Vec<u64> {
            m["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["seq"].as_u64().unwrap())
                .collect()
        };
        assert_eq!(messages.len(), 3);
        assert_eq!(seqs(&messages[0]), [1, 2]);
        assert_eq!(frames[1], reply);
        assert_eq!(seqs(&messages[2]), [3, 4]);
    }

    #[test]
    fn a_long_run_is_split_into_frames_of_bounded_size() {
        let mut frames: VecDeque<Bytes> = (1..=2_000)
            .map(|seq| {
                let mut t = sample();
                t.seq = seq;
                tick_frame(TickKind::Tick, "AAPL", &t)
            })
            .collect();
        batch_ticks(&mut frames);
        assert!(frames.len() > 1);
        let mut seqs = Vec::new();
        for frame in &frames {
            let (_, payload) = parse_unmasked(frame).unwrap();
            assert!(payload.len() <= MAX_BATCH_PAYLOAD);
            let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
            seqs.extend(
                v["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t["seq"].as_u64().unwrap()),
            );
        }
        assert_eq!(seqs, (1..=2_000).collect::<Vec<_>>());
    }

    #[test]
    fn round_trips_through_simd_json() {
        let specs = crate::feed::symbols::universe(50);
        let mut sim = crate::feed::sim::Simulator::new(&specs, 1000.0, 11);
        for i in 0..2_000u64 {
            let tick = sim.next_tick(1_700_000_000_000_000_000 + i);
            let name = &specs[tick.symbol as usize].name;
            for kind in [TickKind::Tick, TickKind::Snapshot, TickKind::Reset] {
                let frame = tick_frame(kind, name, &tick);
                let (_, payload) = parse_unmasked(&frame).unwrap();
                let payload_text = payload.to_vec();
                let mut payload = payload.to_vec();
                let v = simd_json::to_borrowed_value(&mut payload).unwrap();
                let expected_type = if kind == TickKind::Tick {
                    "tick"
                } else {
                    "snapshot"
                };
                assert_eq!(v["type"].as_str(), Some(expected_type));
                assert_eq!(v["sym"].as_str(), Some(name.as_str()));
                assert_eq!(v["seq"].as_u64(), Some(tick.seq));
                // Each price is the exact decimal, at the simulator's
                // tick size (cents).
                let text = std::str::from_utf8(&payload_text).unwrap();
                for (field, price) in [("px", tick.px), ("bid", tick.bid), ("ask", tick.ask)] {
                    let shown = format!("\"{field}\":{price},");
                    assert!(text.contains(&shown), "{text} lacks {shown}");
                    let decimals = price.to_string().split('.').nth(1).map_or(0, str::len);
                    assert!(decimals <= 2, "{text}");
                }
                assert_eq!(v["size"].as_u64(), Some(u64::from(tick.size)));
                assert_eq!(v["ts"].as_u64(), Some(tick.ts));
            }
        }
    }
}
