//! Fuzz target: `WireTick::decode` on arbitrary bytes, what a node does
//! with every message on `ticks.>` (any NATS client can publish there).
//! It must never panic, and what it accepts must be a tick a node can
//! carry: finite, non-negative prices, and a compact payload that encodes
//! back to itself. Runs on a small stack (`tickcast_fuzz::run`), so
//! parsing that recurses per nesting level crashes here as it would on a
//! server thread.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tickcast::feed::nats::{WireTick, COMPACT_LEN};

fuzz_target!(|data: &[u8]| tickcast_fuzz::run(data, check));

fn check(data: &[u8]) {
    match WireTick::decode(data) {
        Err(reason) => assert!(!reason.is_empty()),
        Ok(tick) => {
            for price in [tick.px, tick.bid, tick.ask] {
                assert!(price.is_finite() && price >= 0.0, "price {price} accepted");
            }
            if data.len() == COMPACT_LEN {
                assert_eq!(&tick.encode()[..], data, "compact form round trip");
            } else {
                assert_eq!(
                    data.first(),
                    Some(&b'{'),
                    "only JSON may differ from 44 bytes"
                );
            }
            assert_eq!(WireTick::decode(&tick.encode()), Ok(tick));
        }
    }
}
