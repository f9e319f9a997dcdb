//! Fuzz target: `parse_ticks` on arbitrary bytes, what `/ingest` does with
//! every text frame a publisher sends (one tick object, or an array of
//! them). It must never panic; a refusal is `bad_json` or `bad_tick` with
//! a message in words, free of the parser's internal names; an accepted
//! message yields at least one tick, unless it is an empty array (which
//! publishes nothing and is not an error). Runs on a small stack
//! (`tickcast_fuzz::run`), so parsing that recurses per nesting level
//! crashes here as it would on a server thread.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tickcast::feed::ingest::parse_ticks;
use tickcast::protocol::ErrorCode;

/// Words of a parser's error `Debug` output that must not reach a
/// publisher.
const INTERNAL: [&str; 3] = ["InternalError", "TapeError", "Error("];

fuzz_target!(|data: &[u8]| tickcast_fuzz::run(data, check));

fn check(data: &[u8]) {
    match parse_ticks(data) {
        Err(error) => {
            assert!(
                matches!(error.code, ErrorCode::BadJson | ErrorCode::BadTick),
                "code {} for {:?}",
                error.code.as_str(),
                String::from_utf8_lossy(data)
            );
            assert!(!error.message.is_empty(), "an empty message");
            for word in INTERNAL {
                // serde's own messages may quote the input; only words the
                // input did not bring are internal.
                assert!(
                    !error.message.contains(word) || contains(data, word.as_bytes()),
                    "{word} in {:?}",
                    error.message
                );
            }
        }
        Ok(ticks) => {
            assert!(
                !ticks.is_empty() || data.trim_ascii().starts_with(b"["),
                "{:?} accepted without a tick",
                String::from_utf8_lossy(data)
            );
            // Reading the prices exactly never panics; what is read goes
            // out as text that reads back the same.
            for tick in &ticks {
                if let Ok(incoming) = tick.incoming(tick.sym.as_deref().unwrap_or("")) {
                    for price in [incoming.px, incoming.bid, incoming.ask] {
                        assert_eq!(price.to_string().parse(), Ok(price));
                    }
                }
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
