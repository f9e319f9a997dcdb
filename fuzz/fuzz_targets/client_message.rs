//! Fuzz target: `ClientMsg::parse` on arbitrary bytes, the first thing
//! every client text frame meets. It must never panic, and what it
//! accepts must be a request the protocol allows. Runs on a small stack
//! (`tickcast_fuzz::run`), so parsing that recurses per nesting level
//! crashes here as it would on a server thread.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tickcast::protocol::{ClientMsg, MAX_HZ};

fuzz_target!(|data: &[u8]| tickcast_fuzz::run(data, check));

fn check(data: &[u8]) {
    // simd-json parses in place: hand it a copy, as the reader does.
    let mut text = data.to_vec();
    match ClientMsg::parse(&mut text) {
        Err(error) => {
            // Every refusal carries a code and advice for the client.
            assert!(!error.code.as_str().is_empty());
            assert!(!error.message.is_empty());
            // The error frame it becomes must be valid JSON.
            let frame = error.to_frame();
            let payload = server_frame_payload(&frame);
            let reply: serde_json::Value =
                serde_json::from_slice(payload).expect("an error reply is JSON");
            assert_eq!(reply["type"], "error");
            assert_eq!(reply["code"], error.code.as_str());
        }
        Ok(ClientMsg::Subscribe { symbols, options }) => {
            assert!(!symbols.is_empty(), "subscribe accepted without symbols");
            if let Some(hz) = options.max_hz {
                assert!(hz > 0.0 && hz <= MAX_HZ, "max_hz {hz} accepted");
            }
        }
        Ok(ClientMsg::Unsubscribe { symbols }) => {
            assert!(!symbols.is_empty(), "unsubscribe accepted without symbols");
        }
        Ok(ClientMsg::Ping { id }) => {
            if let Some(id) = id {
                assert!(id.is_number() || id.is_string(), "ping id {id} accepted");
            }
        }
    }
}

/// The payload of one complete, unmasked server frame.
fn server_frame_payload(frame: &[u8]) -> &[u8] {
    tickcast::wire::frame::parse_unmasked(frame)
        .expect("a reply is exactly one frame")
        .1
}
