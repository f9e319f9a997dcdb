//! What a tickcast server sends, as feed-sim's clients read it: which
//! message a text frame is, the fields of a tick found without parsing
//! JSON, and a close frame as a label for reports.

use memchr::memmem;
use tickcast::tick::SymbolId;
use tickcast::wire::frame::close_parts;

use crate::symbols::SymbolIds;

/// A close frame's payload as `code reason` (`1008 slow consumer`), or
/// `1005` (RFC 6455's "no status received") when it has no code.
pub(crate) fn close_label(payload: &[u8]) -> String {
    match close_parts(payload) {
        Some((code, reason)) if reason.is_empty() => code.to_string(),
        Some((code, reason)) => format!("{code} {reason}"),
        None => "1005".to_string(),
    }
}

/// Which server message a text frame is, by its `type` (always the first
/// field in tickcast's messages).
#[derive(Debug, PartialEq)]
pub(crate) enum Kind {
    Tick,
    Snapshot,
    Subscribed,
    Error,
    Other,
}

pub(crate) fn message_kind(payload: &[u8]) -> Kind {
    if payload.starts_with(TICK_PREFIX) {
        Kind::Tick
    } else if payload.starts_with(br#"{"type":"snapshot","#) {
        Kind::Snapshot
    } else if payload.starts_with(br#"{"type":"subscribed","#) {
        Kind::Subscribed
    } else if payload.starts_with(br#"{"type":"error","#) {
        Kind::Error
    } else {
        Kind::Other
    }
}

/// The fields of a tick or snapshot the tool uses.
#[derive(Debug, PartialEq)]
pub(crate) struct TickSeen {
    pub(crate) symbol: SymbolId,
    pub(crate) seq: u64,
    pub(crate) ts: u64,
}

/// Finds `"sym":"`, `"seq":` and `"ts":` in a tick by byte search instead
/// of parsing JSON: the messages come from `fanout::encode`, whose field
/// set is fixed and whose symbol names need no escaping. Searchers are
/// built once and shared by all clients.
pub(crate) struct TickFields {
    sym: memmem::Finder<'static>,
    seq: memmem::Finder<'static>,
    ts: memmem::Finder<'static>,
}

impl TickFields {
    pub(crate) fn new() -> Self {
        TickFields {
            sym: memmem::Finder::new(br#""sym":""#),
            seq: memmem::Finder::new(br#""seq":"#),
            ts: memmem::Finder::new(br#""ts":"#),
        }
    }

    pub(crate) fn parse(&self, payload: &[u8], symbols: &SymbolIds) -> Option<TickSeen> {
        // tickcast's field order (`type`, `sym`, `seq`, …, `ts` last) is
        // tried first; a server that orders them otherwise is searched.
        let sym_start = match payload.get(TICK_PREFIX.len()..) {
            Some(after) if after.starts_with(self.sym.needle()) => TICK_PREFIX.len(),
            _ => self.sym.find(payload)?,
        } + self.sym.needle().len();
        let sym_len = memchr::memchr(b'"', &payload[sym_start..])?;
        let symbol = symbols.id(&payload[sym_start..sym_start + sym_len])?;
        let after_sym = sym_start + sym_len + 1;
        let seq_at = match payload[after_sym..].strip_prefix(b",") {
            Some(rest) if rest.starts_with(self.seq.needle()) => after_sym + 1,
            _ => self.seq.find(payload)?,
        } + self.seq.needle().len();
        let seq = leading_number(&payload[seq_at..])?;
        let ts_at = match memchr::memrchr(b':', payload) {
            Some(colon) if payload[..colon].ends_with(br#""ts""#) => colon + 1,
            _ => memmem::rfind(payload, self.ts.needle())? + self.ts.needle().len(),
        };
        let ts = leading_number(&payload[ts_at..])?;
        Some(TickSeen { symbol, seq, ts })
    }
}

/// How tickcast begins a tick message: `type` first.
const TICK_PREFIX: &[u8] = br#"{"type":"tick","#;

/// The unsigned decimal number `bytes` starts with; `None` if there is
/// none or it does not fit a `u64`.
fn leading_number(bytes: &[u8]) -> Option<u64> {
    // One pass: 19 digits never overflow a u64; from the 20th on, checked.
    let mut value: u64 = 0;
    let mut digits = 0;
    for &b in bytes {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        value = if digits < 19 {
            value * 10 + u64::from(digit)
        } else {
            value.checked_mul(10)?.checked_add(u64::from(digit))?
        };
        digits += 1;
    }
    (digits > 0).then_some(value)
}

/// The symbol names of a `subscribed` reply
/// (`{"type":"subscribed","symbols":["AAPL",…]}`), in its order; `None`
/// for any other message. A server that serves no `GET /symbols` lists
/// every symbol it carries this way in its answer to a `*` subscribe.
pub(crate) fn subscribed_symbols(payload: &[u8]) -> Option<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Subscribed {
        #[serde(rename = "type")]
        kind: String,
        symbols: Vec<String>,
    }
    let reply: Subscribed = serde_json::from_slice(payload).ok()?;
    (reply.kind == "subscribed").then_some(reply.symbols)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickcast::fanout::encode::{tick_frame, TickKind};
    use tickcast::tick::Tick;
    use tickcast::wire::frame::{close_frame, split_server_frame};

    fn table() -> SymbolIds {
        SymbolIds::new(["AAPL", "BRK.B", "MSFT"].map(String::from))
    }

    fn tick(symbol: SymbolId, seq: u64) -> Tick {
        Tick {
            symbol,
            seq,
            px: "187.25".parse().unwrap(),
            bid: "187.24".parse().unwrap(),
            ask: "187.26".parse().unwrap(),
            size: 300,
            ts: 1_732_250_000_123_456_789,
        }
    }

    fn next_frame(data: &[u8]) -> Result<Option<tickcast::wire::frame::FrameAt>, ()> {
        split_server_frame(data, 1 << 20).map_err(|_| ())
    }

    #[test]
    fn close_frames_are_labelled_by_code_and_reason() {
        let frame = close_frame(1008, "slow consumer");
        let at = next_frame(&frame).unwrap().unwrap();
        assert_eq!(close_label(&frame[at.payload]), "1008 slow consumer");
        assert_eq!(close_label(&[0x03, 0xE9]), "1001");
        assert_eq!(close_label(&[]), "1005");
    }

    #[test]
    fn reads_the_fields_of_the_servers_own_tick_encoding() {
        let fields = TickFields::new();
        let symbols = table();
        for (id, name) in [(0, "AAPL"), (1, "BRK.B")] {
            let frame = tick_frame(TickKind::Tick, name, &tick(id, 42));
            let at = next_frame(&frame).unwrap().unwrap();
            assert_eq!(at.len, frame.len());
            let payload = &frame[at.payload];
            assert_eq!(message_kind(payload), Kind::Tick);
            assert_eq!(
                fields.parse(payload, &symbols),
                Some(TickSeen {
                    symbol: id,
                    seq: 42,
                    ts: 1_732_250_000_123_456_789
                })
            );
        }
        let snapshot = tick_frame(TickKind::Snapshot, "MSFT", &tick(2, 7));
        let payload = &snapshot[next_frame(&snapshot).unwrap().unwrap().payload];
        assert_eq!(message_kind(payload), Kind::Snapshot);
        assert_eq!(fields.parse(payload, &symbols).unwrap().seq, 7);
        assert_eq!(
            fields.parse(br#"{"type":"tick","sym":"ZZZZ","seq":1,"ts":2}"#, &symbols),
            None
        );
        // Another server's field order is found by search.
        let reordered = br#"{"type":"tick","ts":5,"px":1,"seq":3,"sym":"MSFT","size":1}"#;
        assert_eq!(
            fields.parse(reordered, &symbols),
            Some(TickSeen {
                symbol: 2,
                seq: 3,
                ts: 5
            })
        );
    }

    #[test]
    fn learns_the_symbols_from_a_subscribed_reply() {
        let reply = br#"{"type":"subscribed","symbols":["AAPL","BRK.B","SPY 261218C00600000"]}"#;
        assert_eq!(
            subscribed_symbols(reply),
            Some(vec![
                "AAPL".into(),
                "BRK.B".into(),
                "SPY 261218C00600000".into()
            ])
        );
        assert_eq!(
            subscribed_symbols(br#"{"type":"subscribed","symbols":[]}"#),
            Some(vec![])
        );
        let error = br#"{"type":"error","code":"unknown_symbol","symbols":["X"]}"#;
        assert_eq!(subscribed_symbols(error), None);
        assert_eq!(subscribed_symbols(br#"{"type":"subscribed"}"#), None);
        assert_eq!(subscribed_symbols(b"not json"), None);
    }

    #[test]
    fn reads_leading_numbers() {
        assert_eq!(leading_number(b"123,"), Some(123));
        assert_eq!(leading_number(b",1"), None);
        assert_eq!(leading_number(b"99999999999999999999999"), None);
        assert_eq!(leading_number(b"18446744073709551615}"), Some(u64::MAX));
        assert_eq!(leading_number(b"18446744073709551616"), None);
        assert_eq!(
            leading_number(b"1732250000123456789}"),
            Some(1_732_250_000_123_456_789)
        );
    }
}
