//! The naive baseline the benches compare against: what a per-connection
//! server does with each tick, serializing its own JSON with serde_json.

use serde::Serialize;
use tickcast::tick::Tick;

/// The same message as `tickcast::fanout::encode::tick_frame` writes, the
/// way a per-connection server would declare it.
#[derive(Serialize)]
struct TickMsg<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sym: &'a str,
    seq: u64,
    px: f64,
    bid: f64,
    ask: f64,
    size: u32,
    ts: u64,
}

/// `tick` of symbol `name` as a JSON `tick` message, serialized anew.
pub fn tick_json(name: &str, tick: &Tick) -> String {
    serde_json::to_string(&TickMsg {
        kind: "tick",
        sym: name,
        seq: tick.seq,
        // A per-connection server would hold prices as floats.
        px: tick.px.to_f64(),
        bid: tick.bid.to_f64(),
        ask: tick.ask.to_f64(),
        size: tick.size,
        ts: tick.ts,
    })
    .expect("serializing to memory cannot fail")
}
