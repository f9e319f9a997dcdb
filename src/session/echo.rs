//! The echo route (`--echo-route PATH`, off by default): a session that
//! sends every message back unchanged, for WebSocket conformance suites
//! such as Autobahn|Testsuite.
//!
//! It runs the very code a `/ws` session runs — the same upgrade, the same
//! [`FrameGuard`](super::guard::FrameGuard) and fastwebsockets reader, the
//! same UTF-8 checks, close handling and single writer — only with its
//! limits raised to what the suites send ([`ECHO_LIMITS`]) and no fan-out
//! behind it.

use std::sync::Arc;

use super::guard::GuardLimits;
use super::outbox::Outbox;
use super::reader::{read_messages, Messages};
use super::socket::Socket;
use super::{drive, split, SessionContext};
use crate::fanout::ConnId;
use crate::protocol::frame::{binary_frame, text_frame};
use bytes::Bytes;

/// Input limits of the echo route: messages up to 16 MiB in up to 131,072
/// fragments. Autobahn's 9.* cases send up to 16 MiB, and 4 MiB in 64-byte
/// fragments: 65,536 of them, then an empty final one.
pub const ECHO_LIMITS: GuardLimits = GuardLimits {
    max_message_bytes: 16 * 1024 * 1024,
    max_fragments: 128 * 1024,
};

/// Echoes each message back through the outbox.
struct Echo {
    outbox: Arc<Outbox>,
}

impl Messages for Echo {
    async fn text(&mut self, payload: &mut [u8]) {
        // The reader has checked the payload is UTF-8 (1007 otherwise).
        self.outbox.push_reply(text_frame(payload));
    }

    fn binary(&mut self, payload: &[u8], outbox: &Outbox) {
        outbox.push_reply(binary_frame(payload));
    }
}

/// Serves one upgraded echo connection until it closes.
pub async fn run(conn: ConnId, socket: Socket, early: Bytes, ctx: Arc<SessionContext>) {
    let (ws_read, continuations, write_half) = split(socket, early, ECHO_LIMITS);
    let outbox = Arc::new(Outbox::new(ctx.outbox_limits));
    let mut echo = Echo {
        outbox: outbox.clone(),
    };
    let reader_outbox = outbox.clone();
    let exit = drive(&outbox, &ctx.stats, write_half, async move {
        // Conformance suites send as fast as they can: no rate limit.
        read_messages(ws_read, &continuations, None, &reader_outbox, &mut echo).await;
    })
    .await;
    tracing::debug!(conn, ?exit, "echo session ended");
}
