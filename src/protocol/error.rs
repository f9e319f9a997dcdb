//! `ErrorCode`: the stable error strings a client can match on, and the
//! `ProtocolError` that carries one with a readable message.

use std::fmt;

/// Stable machine-readable error codes sent as `{"type":"error","code":…}`.
///
/// The string forms are part of protocol v1 (docs/PROTOCOL.md): never
/// rename one, only add.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The text frame is not valid JSON.
    BadJson,
    /// Valid JSON, but not a well-formed request (not an object, missing or
    /// mistyped field).
    BadRequest,
    /// `op` names no operation the server knows.
    UnknownOp,
    /// A symbol in a request is not carried by this server.
    UnknownSymbol,
    /// The request would take the connection past its subscription limit.
    TooManySymbols,
    /// The client sent a binary frame; the protocol is JSON text only.
    BinaryNotSupported,
    /// A publisher's tick was refused (`/ingest` only).
    BadTick,
    /// The client's token does not cover a symbol it asked for.
    NotEntitled,
    /// The client sent more requests per second than the server allows.
    RateLimited,
    /// A publisher's tick names a new symbol, and the server carries
    /// `--max-symbols` already.
    SymbolLimit,
}

impl ErrorCode {
    /// Every code, in declaration order (`code as usize` indexes it).
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::BadJson,
        ErrorCode::BadRequest,
        ErrorCode::UnknownOp,
        ErrorCode::UnknownSymbol,
        ErrorCode::TooManySymbols,
        ErrorCode::BinaryNotSupported,
        ErrorCode::BadTick,
        ErrorCode::NotEntitled,
        ErrorCode::RateLimited,
        ErrorCode::SymbolLimit,
    ];

    /// The wire form, e.g. `bad_json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::UnknownSymbol => "unknown_symbol",
            ErrorCode::TooManySymbols => "too_many_symbols",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::BadTick => "bad_tick",
            ErrorCode::NotEntitled => "not_entitled",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::SymbolLimit => "symbol_limit",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request the server refuses, with what the client should do instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtocolError {
    /// The stable code.
    pub code: ErrorCode,
    /// A sentence for a person: what was wrong and how to fix it.
    pub message: String,
}

impl ProtocolError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_code_at_its_own_index() {
        for (index, code) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(code as usize, index, "{code}");
        }
    }
}
