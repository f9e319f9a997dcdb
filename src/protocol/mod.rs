//! Stage 5: the JSON wire contract (docs/PROTOCOL.md mirrors this file).
//!
//! Clients send [`ClientMsg`]s as JSON text frames, parsed here with
//! simd-json; the `session` reader hands them to the `fanout`. Replies that
//! are not ticks ([`ServerMsg`]) are built here as complete frames; ticks
//! and snapshots are built by `fanout::encode`.

pub mod error;
pub mod frame;

use bytes::Bytes;
use serde::Serialize;
use simd_json::prelude::*;

pub use error::{ErrorCode, ProtocolError};

/// The symbol that stands for every symbol in `subscribe`/`unsubscribe`.
pub const ALL_SYMBOLS: &str = "*";

/// A request from a client.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientMsg {
    /// `{"op":"subscribe","symbols":["AAPL","MSFT"]}`; `["*"]` is every symbol.
    Subscribe {
        /// Symbol names as sent, `*` included.
        symbols: Vec<String>,
    },
    /// `{"op":"unsubscribe","symbols":["AAPL"]}`
    Unsubscribe {
        /// Symbol names as sent, `*` included.
        symbols: Vec<String>,
    },
    /// `{"op":"ping","id":7}`, answered by `{"type":"pong","id":7}`.
    Ping {
        /// Echoed back as is: a number, a string, or absent.
        id: Option<serde_json::Value>,
    },
}

impl ClientMsg {
    /// Parses one text frame's payload. simd-json parses in place, so the
    /// buffer is scratch afterwards.
    pub fn parse(text: &mut [u8]) -> Result<Self, ProtocolError> {
        let value = simd_json::to_borrowed_value(text).map_err(|e| {
            ProtocolError::new(
                ErrorCode::BadJson,
                format!("the message is not valid JSON ({e}); send one JSON object per text frame"),
            )
        })?;
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

fn ping_id(id: &simd_json::BorrowedValue) -> Result<serde_json::Value, ProtocolError> {
    if let Some(s) = id.as_str() {
        return Ok(serde_json::Value::from(s));
    }
    if let Some(n) = id.as_u64() {
        return Ok(serde_json::Value::from(n));
    }
    if let Some(n) = id.as_i64() {
        return Ok(serde_json::Value::from(n));
    }
    if let Some(n) = id.as_f64() {
        return Ok(serde_json::Value::from(n));
    }
    Err(ProtocolError::new(
        ErrorCode::BadRequest,
        r#""id" must be a number or a string, e.g. {"op":"ping","id":7}"#,
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
        frame::text_frame_with(64, |buf| {
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
                symbols: vec!["AAPL".into(), "*".into()]
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
        assert_eq!(code(r#"{"op":"trade"}"#), ErrorCode::UnknownOp);
    }

    #[test]
    fn replies_are_json_frames() {
        let id = serde_json::Value::from("abc");
        let frame = ServerMsg::Pong { id: Some(&id) }.to_frame();
        let (opcode, payload) = frame::parse_unmasked(&frame).unwrap();
        assert_eq!(opcode, 1);
        assert_eq!(payload, br#"{"type":"pong","id":"abc"}"#);
        let err = ProtocolError::new(ErrorCode::UnknownSymbol, "no \"ZZZ\"").to_frame();
        let (_, payload) = frame::parse_unmasked(&err).unwrap();
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], "unknown_symbol");
        assert_eq!(v["message"], "no \"ZZZ\"");
    }
}
