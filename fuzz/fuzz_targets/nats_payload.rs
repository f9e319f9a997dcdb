//! Fuzz target: `Payload::decode` on arbitrary bytes, what a node does
//! with every message on `ticks.>` (any NATS client can publish there).
//! It must never panic, and what it accepts must be a tick a node can
//! carry: exact prices within range, and a compact payload that encodes
//! back to itself. Runs on a small stack (`tickcast_fuzz::run`), so
//! parsing that recurses per nesting level crashes here as it would on a
//! server thread.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tickcast::feed::nats::{Payload, COMPACT_VERSION};
use tickcast::price::Price;

fuzz_target!(|data: &[u8]| tickcast_fuzz::run(data, check));

fn check(data: &[u8]) {
    match Payload::decode("ticks.FUZZ", data) {
        Err(reason) => assert!(!reason.is_empty()),
        Ok(tick) => {
            for price in [tick.px, tick.bid, tick.ask] {
                assert_eq!(Price::from_units(price.units()), Some(price));
                assert_eq!(price.to_string().parse::<Price>(), Ok(price));
            }
            if data.first() == Some(&COMPACT_VERSION) {
                assert_eq!(&tick.encode()[..], data, "compact form round trip");
            } else {
                assert!(
                    data.trim_ascii_start().starts_with(b"{"),
                    "else only a JSON object is accepted"
                );
            }
            assert_eq!(
                Payload::decode("ticks.FUZZ", &tick.encode()),
                Ok(tick.clone())
            );
            assert_eq!(Payload::decode("ticks.FUZZ", &tick.encode_json()), Ok(tick));
        }
    }
}
