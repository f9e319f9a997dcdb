//! Close codes (RFC 6455 §7.4) the server sends, by name, and which codes
//! a peer may send.

/// A close frame's status code.
pub type CloseCode = u16;

/// The peer asked to close, or the purpose was fulfilled.
pub const NORMAL: CloseCode = 1000;
/// The server is shutting down.
pub const GOING_AWAY: CloseCode = 1001;
/// The peer broke the WebSocket protocol.
pub const PROTOCOL_ERROR: CloseCode = 1002;
/// A text message that is not UTF-8.
pub const INVALID_PAYLOAD: CloseCode = 1007;
/// The peer broke a policy: slow consumer, rate limit, no pong.
pub const POLICY_VIOLATION: CloseCode = 1008;
/// A message over the size limit.
pub const TOO_BIG: CloseCode = 1009;
/// A bug in the server ended this connection.
pub const INTERNAL_ERROR: CloseCode = 1011;
/// The client's token expired (an application code, 4000-4999).
pub const TOKEN_EXPIRED: CloseCode = 4001;

/// Whether a peer may send `code` in a close frame, as fastwebsockets
/// (and Autobahn|Testsuite) have it: 1000-1003 and 1007-1013 (defined by
/// RFC 6455 §7.4.1 and the IANA registry), 3000-4999 (libraries and
/// applications). Not 1004 (reserved), 1005, 1006 and 1015 (never sent),
/// 1014, nor 1016-2999 (unassigned).
pub fn is_sendable(code: CloseCode) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}
