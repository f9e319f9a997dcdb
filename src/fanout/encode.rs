//! Tick → complete WebSocket text frame, once per tick.
//!
//! The fan-out calls [`tick_frame`] once for every tick it reads from the
//! `ring`; the resulting [`Bytes`] is shared by reference count with every
//! subscriber's outbox, so no recipient costs a serialization or a copy.
//! JSON is written by hand: the field set is fixed, symbol names never need
//! escaping ([`crate::tick::SymbolTable`] checks), and prices in whole cents
//! (all of the simulator's) are printed from integers, which is several
//! times cheaper than general float formatting (`ryu`, the fallback).

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::frame::text_frame_with;
use crate::tick::Tick;

/// Which message a tick is sent as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TickKind {
    /// A live update: `{"type":"tick",…}`.
    Tick,
    /// The last known state at subscribe time: `{"type":"snapshot",…}`.
    Snapshot,
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
    let mut float = ryu::Buffer::new();
    buf.put_slice(match kind {
        TickKind::Tick => br#"{"type":"tick","sym":""#,
        TickKind::Snapshot => br#"{"type":"snapshot","sym":""#,
    });
    buf.put_slice(name.as_bytes());
    buf.put_slice(br#"","seq":"#);
    buf.put_slice(int.format(tick.seq).as_bytes());
    buf.put_slice(br#","px":"#);
    write_price(buf, tick.px, &mut int, &mut float);
    buf.put_slice(br#","bid":"#);
    write_price(buf, tick.bid, &mut int, &mut float);
    buf.put_slice(br#","ask":"#);
    write_price(buf, tick.ask, &mut int, &mut float);
    buf.put_slice(br#","size":"#);
    buf.put_slice(int.format(tick.size).as_bytes());
    buf.put_slice(br#","ts":"#);
    buf.put_slice(int.format(tick.ts).as_bytes());
    buf.put_u8(b'}');
}

/// Writes `price` as a JSON number, exactly as `ryu` would (the shortest
/// text that parses back to the same `f64`).
///
/// Fast path: when the price is a whole number of cents — when
/// `cents / 100.0 == price` in `f64`, so the decimal `whole.ff` parses back
/// to exactly `price` — it is printed from integers, trailing zero dropped
/// (`187.2`, `100.0`, `0.05`). Anything else goes to `ryu`.
fn write_price(buf: &mut BytesMut, price: f64, int: &mut itoa::Buffer, float: &mut ryu::Buffer) {
    let cents = (price * 100.0).round();
    if (0.0..1e15).contains(&cents) && cents / 100.0 == price {
        let cents = cents as u64;
        let (whole, fraction) = (cents / 100, (cents % 100) as u8);
        buf.put_slice(int.format(whole).as_bytes());
        buf.put_u8(b'.');
        buf.put_u8(b'0' + fraction / 10);
        if fraction % 10 != 0 {
            buf.put_u8(b'0' + fraction % 10);
        }
    } else {
        buf.put_slice(float.format_finite(price).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::parse_unmasked;
    use simd_json::prelude::*;

    fn sample() -> Tick {
        Tick {
            symbol: 0,
            seq: 42,
            px: 187.25,
            bid: 187.24,
            ask: 187.26,
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
    fn prices_print_exactly_as_ryu_would() {
        let check = |price: f64| {
            let mut buf = BytesMut::new();
            write_price(
                &mut buf,
                price,
                &mut itoa::Buffer::new(),
                &mut ryu::Buffer::new(),
            );
            assert_eq!(
                std::str::from_utf8(&buf).unwrap(),
                ryu::Buffer::new().format_finite(price),
                "{price}"
            );
        };
        for cents in (0..200_000u64).chain((0..2_000).map(|i| 99_999_000_000 + i * 7)) {
            check(cents as f64 / 100.0);
        }
        // Not whole cents: the fallback.
        for price in [0.001, 187.255, 1e-7, 123_456.789, 3.0e14, 2.5e16] {
            check(price);
        }
    }

    #[test]
    fn round_trips_through_simd_json() {
        let specs = crate::feed::symbols::universe(50);
        let mut sim = crate::feed::sim::Simulator::new(&specs, 1000.0, 11);
        for i in 0..2_000u64 {
            let tick = sim.next_tick(1_700_000_000_000_000_000 + i);
            let name = &specs[tick.symbol as usize].name;
            for kind in [TickKind::Tick, TickKind::Snapshot] {
                let frame = tick_frame(kind, name, &tick);
                let (_, payload) = parse_unmasked(&frame).unwrap();
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
                assert_eq!(v["px"].cast_f64(), Some(tick.px));
                assert_eq!(v["bid"].cast_f64(), Some(tick.bid));
                assert_eq!(v["ask"].cast_f64(), Some(tick.ask));
                assert_eq!(v["size"].as_u64(), Some(u64::from(tick.size)));
                assert_eq!(v["ts"].as_u64(), Some(tick.ts));
            }
        }
    }
}
