//! The JSON wire contract (docs/PROTOCOL.md mirrors this file).
//!
//! Clients send [`ClientMsg`]s as JSON text frames, parsed here with
//! simd-json; `session::requests` applies them to the shard's `fanout`.
//! Replies that are not ticks ([`ServerMsg`]) are built here as complete
//! frames; ticks and snapshots are built by `fanout::encode`.

pub mod error;
pub mod json;

use bytes::Bytes;
use serde::Serialize;
use simd_json::prelude::*;

pub use error::{ErrorCode, ProtocolError};

/// The symbol that stands for every symbol in `subscribe`/`unsubscribe`.
pub const ALL_SYMBOLS: &str = "*";

/// Highest `max_hz` a client may ask for.
pub const MAX_HZ: f64 = 1000.0;

/// Lowest `max_hz` a client may ask for (one update in 100 s).
pub const MIN_HZ: f64 = 0.01;

/// The options of a `subscribe` beyond its symbols.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SubscribeOptions {
    /// `from`: the last `seq` the client saw, per symbol name.
    pub from: Vec<(String, u64)>,
    /// `max_hz`: most updates per second of each symbol.
    pub max_hz: Option<f64>,
    /// `batch`: switch `ticks` batches on or off for the connection.
    pub batch: Option<bool>,
}

/// A request from a client.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientMsg {
    /// `{"op":"subscribe","symbols":["AAPL","MSFT"]}`; `["*"]` is every symbol.
    Subscribe {
        /// Symbol names as sent, `*` included.
        symbols: Vec<String>,
        /// `from`, `max_hz` and `batch`.
        options: SubscribeOptions,
    },
    /// `{"op":"unsubscribe","symbols":["AAPL"]}`
    Unsubscribe {
        /// Symbol names as sent, `*` included.
        symbols: Vec<String>,
    },
    /// `{"op":"ping","id":7}`, answered by `{"type":"pong","id":7}`.
    Ping {
        /// Echoed back exactly: a string, a whole number, or absent.
        id: Option<serde_json::Value>,
    },
}

impl ClientMsg {
    /// Parses one text frame's payload. simd-json parses in place, so the
    /// buffer is scratch afterwards.
    pub fn parse(text: &mut [u8]) -> Result<Self, ProtocolError> {
        json::check(text, json::CLIENT_LIMITS).map_err(|fault| {
            // Lone surrogates are valid JSON syntax, but no request.
            let code = match fault {
                json::JsonFault::LoneSurrogate { .. } => ErrorCode::BadRequest,
                _ => ErrorCode::BadJson,
            };
            ProtocolError::new(code, fault.to_string())
        })?;
        // A failed parse may have unescaped strings in place already; the
        // error's excerpt is taken from what is left (exact unless a
        // string with escapes comes just before the fault).
        let err = match simd_json::to_borrowed_value(text) {
            Ok(value) => return Self::from_value(&value),
            Err(err) => err,
        };
        Err(ProtocolError::new(
            ErrorCode::BadJson,
            json::describe(&err, Some(text)),
        ))
    }

    fn from_value(value: &simd_json::BorrowedValue<'_>) -> Result<Self, ProtocolError> {
        let object = value.as_object().ok_or_else(|| {
            ProtocolError::new(
                ErrorCode::BadRequest,
                r#"a message must be a JSON object such as {"op":"subscribe","symbols":["AAPL"]}"#,
            )
        })?;
        let op = object.get("op").and_then(|op| op.as_str()).ok_or_else(|| {
            ProtocolError::new(
                ErrorCode::BadRequest,
                r#"the message has no "op" string; use "subscribe", "unsubscribe" or "ping""#,
            )
        })?;
        match op {
            "subscribe" => Ok(ClientMsg::Subscribe {
                symbols: symbol_list(object.get("symbols"))?,
                options: subscribe_options(object)?,
            }),
            "unsubscribe" => Ok(ClientMsg::Unsubscribe {
                symbols: symbol_list(object.get("symbols"))?,
            }),
            "ping" => {
                let id = match object.get("id") {
                    None => None,
                    Some(id) => Some(ping_id(id)?),
                };
                Ok(ClientMsg::Ping { id })
            }
            other => Err(ProtocolError::new(
                ErrorCode::UnknownOp,
                format!(
                    "unknown op {:?}; the ops are \"subscribe\", \"unsubscribe\" and \"ping\"",
                    truncate(other, 40)
                ),
            )),
        }
    }
}

fn symbol_list(value: Option<&simd_json::BorrowedValue>) -> Result<Vec<String>, ProtocolError> {
    let bad = || {
        ProtocolError::new(
            ErrorCode::BadRequest,
            r#""symbols" must be a non-empty array of symbol names, e.g. ["AAPL","MSFT"] or ["*"]"#,
        )
    };
    let array = value.and_then(|v| v.as_array()).ok_or_else(bad)?;
    if array.is_empty() {
        return Err(bad());
    }
    array
        .iter()
        .map(|s| s.as_str().map(str::to_owned).ok_or_else(bad))
        .collect()
}

fn subscribe_options(
    object: &simd_json::borrowed::Object<'_>,
) -> Result<SubscribeOptions, ProtocolError> {
    let bad = |message: &str| ProtocolError::new(ErrorCode::BadRequest, message);
    let from = match object.get("from") {
        None => Vec::new(),
        Some(from) => {
            let bad_from =
                || bad(r#""from" must map symbols to the last seq seen, e.g. {"AAPL":1234}"#);
            let entries = from.as_object().ok_or_else(bad_from)?;
            entries
                .iter()
                .map(|(name, seq)| Ok((name.to_string(), seq.as_u64().ok_or_else(bad_from)?)))
                .collect::<Result<_, ProtocolError>>()?
        }
    };
    let max_hz = match object.get("max_hz") {
        None => None,
        Some(hz) => match hz.cast_f64() {
            Some(hz) if (MIN_HZ..=MAX_HZ).contains(&hz) => Some(hz),
            _ => {
                return Err(bad(
                    r#""max_hz" must be a number of updates per second from 0.01 to 1000, e.g. 4"#,
                ))
            }
        },
    };
    let batch = match object.get("batch") {
        None => None,
        Some(batch) => Some(
            batch
                .as_bool()
                .ok_or_else(|| bad(r#""batch" must be true or false"#))?,
        ),
    };
    Ok(SubscribeOptions {
        from,
        max_hz,
        batch,
    })
}

fn ping_id(id: &simd_json::BorrowedValue) -> Result<serde_json::Value, ProtocolError> {
    // Strings and whole numbers come back exactly as sent; any other
    // number could not (`1.50` would come back as `1.5`, 2^70 rounded).
    if let Some(s) = id.as_str() {
        return Ok(serde_json::Value::from(s));
    }
    if let Some(n) = id.as_u64() {
        return Ok(serde_json::Value::from(n));
    }
    if let Some(n) = id.as_i64() {
        return Ok(serde_json::Value::from(n));
    }
    Err(ProtocolError::new(
        ErrorCode::BadRequest,
        r#""id" must be a string or a whole number from -2^63 to 2^64-1, e.g. {"op":"ping","id":7}; it is echoed exactly"#,
    ))
}

/// Cuts `s` to at most `max` bytes on a character boundary, for echoing
/// client input inside error messages.
pub fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A reply to a client that is not a tick or snapshot.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMsg<'a> {
    /// The symbols a `subscribe` added; their snapshots follow.
    Subscribed {
        /// Symbols newly subscribed by this request.
        symbols: &'a [&'a str],
    },
    /// The symbols an `unsubscribe` removed.
    Unsubscribed {
        /// Symbols no longer subscribed.
        symbols: &'a [&'a str],
    },
    /// Answer to `ping`.
    Pong {
        /// The request's id, if it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a serde_json::Value>,
    },
    /// A refused request; the connection stays open.
    Error {
        /// Stable code, see [`ErrorCode`].
        code: &'static str,
        /// What went wrong and what to do.
        message: &'a str,
    },
}

impl ServerMsg<'_> {
    /// This message as a complete WebSocket text frame.
    pub fn to_frame(&self) -> Bytes {
        crate::wire::frame::text_frame_with(64, |buf| {
            serde_json::to_writer(bytes::BufMut::writer(buf), self)
                .expect("serializing to memory cannot fail");
        })
    }
}

impl ProtocolError {
    /// This error as an `error` frame.
    pub fn to_frame(&self) -> Bytes {
        ServerMsg::Error {
            code: self.code.as_str(),
            message: &self.message,
        }
        .to_frame()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ClientMsg, ProtocolError> {
        ClientMsg::parse(&mut s.as_bytes().to_vec())
    }

    #[test]
    fn parses_each_op() {
        assert_eq!(
            parse(r#"{"op":"subscribe","symbols":["AAPL","*"]}"#).unwrap(),
            ClientMsg::Subscribe {
                symbols: vec!["AAPL".into(), "*".into()],
                options: SubscribeOptions::default(),
            }
        );
        assert_eq!(
            parse(
                r#"{"op":"subscribe","symbols":["AAPL"],"from":{"AAPL":12},"max_hz":2.5,"batch":true}"#
            )
            .unwrap(),
            ClientMsg::Subscribe {
                symbols: vec!["AAPL".into()],
                options: SubscribeOptions {
                    from: vec![("AAPL".into(), 12)],
                    max_hz: Some(2.5),
                    batch: Some(true),
                },
            }
        );
        assert_eq!(
            parse(r#"{"symbols":["AAPL"],"op":"unsubscribe"}"#).unwrap(),
            ClientMsg::Unsubscribe {
                symbols: vec!["AAPL".into()]
            }
        );
        assert_eq!(
            parse(r#"{"op":"ping","id":7}"#).unwrap(),
            ClientMsg::Ping { id: Some(7.into()) }
        );
        assert_eq!(
            parse(r#"{"op":"ping"}"#).unwrap(),
            ClientMsg::Ping { id: None }
        );
    }

    #[test]
    fn each_fault_has_its_code() {
        let code = |s| parse(s).unwrap_err().code;
        assert_eq!(code("{nope"), ErrorCode::BadJson);
        assert_eq!(code(""), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"symbols":["A"]}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"op":"subscribe"}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"op":"subscribe","symbols":[]}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"op":"subscribe","symbols":[1]}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(code(r#"{"op":"ping","id":{}}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"op":"ping","id":7.0}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"op":"ping","id":1e30}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"op":"ping","id":"\ud800"}"#),
            ErrorCode::BadRequest
        );
        let deep = format!(
            r#"{{"op":"ping","x":{}{}}}"#,
            "[".repeat(5000),
            "]".repeat(5000)
        );
        assert_eq!(code(&deep), ErrorCode::BadJson);
        assert_eq!(code(r#"{"op":"trade"}"#), ErrorCode::UnknownOp);
        let sub = |extra: &str| format!(r#"{{"op":"subscribe","symbols":["A"],{extra}}}"#);
        for extra in [
            r#""from":[1]"#,
            r#""from":{"A":-1}"#,
            r#""from":{"A":"7"}"#,
            r#""max_hz":0"#,
            r#""max_hz":1e-14"#,
            r#""max_hz":1001"#,
            r#""max_hz":"4""#,
            r#""batch":1"#,
        ] {
            let request = sub(extra);
            assert_eq!(
                parse(&request).unwrap_err().code,
                ErrorCode::BadRequest,
                "{extra}"
            );
        }
    }

    #[test]
    fn ids_come_back_exactly() {
        for id in [
            r#""\ud83d\ude00 \"quoted\" \u0000""#,
            "18446744073709551615",
            "-9223372036854775808",
            "0",
        ] {
            let ClientMsg::Ping { id: Some(parsed) } =
                parse(&format!(r#"{{"op":"ping","id":{id}}}"#)).unwrap()
            else {
                panic!("a ping with an id");
            };
            let sent: serde_json::Value = serde_json::from_str(id).unwrap();
            assert_eq!(parsed, sent, "{id}");
        }
    }

    #[test]
    fn bad_json_says_what_and_where_in_words() {
        for text in [
            r#"{"op":"ping","id":1"#,
            r#"{"op":"ping" "id":1}"#,
            r#"{"op":"ping","id":1}}"#,
            r#"{"op":'ping'}"#,
            r#"{"op":"subscribe","symbols":["A",]}"#,
            "",
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadJson, "{text}");
            for internal in ["Error", "Tape", "Internal"] {
                assert!(!err.message.contains(internal), "{text}: {}", err.message);
            }
            if !text.is_empty() {
                assert!(err.message.contains("at character"), "{}", err.message);
            }
        }
    }

    #[test]
    fn replies_are_json_frames() {
        let id = serde_json::Value::from("abc");
        let frame = ServerMsg::Pong { id: Some(&id) }.to_frame();
        let (opcode, payload) = crate::wire::frame::parse_unmasked(&frame).unwrap();
        assert_eq!(opcode, 1);
        assert_eq!(payload, br#"{"type":"pong","id":"abc"}"#);
        let err = ProtocolError::new(ErrorCode::UnknownSymbol, "no \"ZZZ\"").to_frame();
        let (_, payload) = crate::wire::frame::parse_unmasked(&err).unwrap();
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], "unknown_symbol");
        assert_eq!(v["message"], "no \"ZZZ\"");
    }
}
