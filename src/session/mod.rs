//! Stage 4 of the data path: one WebSocket client's protocol state — its
//! subscriptions, its token's grant, its input rate — and what it does with
//! each message the shard reads from it.
//!
//! The shard (`shard`) owns the socket and calls [`Session::on_message`]
//! for every complete message its frame reader (`wire::reader`) delivers;
//! the session answers through the connection's outbox and applies
//! subscription changes to the shard's fan-out at once, on the same thread.
//!
//! Lifecycle, as the shard drives it: handoff from the HTTP edge → read and
//! write until either side ends → exactly one close frame (whoever decides
//! first: the client, a protocol fault, a slow consumer, the rate limit, an
//! expired token, shutdown) → a short wait for the client's answering
//! close → [`Session::detach`] from the fan-out.

pub mod rate;
pub mod requests;
pub mod subscriptions;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::Grant;
use crate::fanout::outbox::OutboxLimits;
use crate::fanout::{Fanout, Key, Outboxes};
use crate::protocol::{ErrorCode, ProtocolError};
use crate::stats::Stats;
use crate::symbol::Symbols;
use crate::wire::close;
use crate::wire::frame::{binary_frame, close_frame_echo, pong_frame, text_frame};
use crate::wire::reader::{Flow, InputLimits, Kind, Message};
use rate::{Admit, RateLimit};
use requests::Request;
use subscriptions::Subscriptions;

/// Identifies one WebSocket connection for the server's lifetime (in logs).
pub type ConnId = u64;

/// Frames read after the server queued its close, looking for the peer's
/// answering close, before the shard stops reading the connection.
pub const CLOSING_READ_BUDGET: u32 = 1024;

/// The least time a closing connection gets to accept its last partial
/// frame and the close frame before the socket is dropped (the write
/// timeout, if longer, applies instead); likewise for the peer's
/// answering close to arrive.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// With the `fault-injection` feature (the tests' build), this exact text
/// message panics the code handling it, as a bug would.
#[cfg(feature = "fault-injection")]
pub const PANIC_REQUEST: &[u8] = br#"{"op":"panic"}"#;

/// Input limits of the echo route: messages up to 16 MiB in up to 131,072
/// fragments. Autobahn's 9.* cases send up to 16 MiB, and 4 MiB in 64-byte
/// fragments: 65,536 of them, then an empty final one.
pub const ECHO_LIMITS: InputLimits = InputLimits {
    max_message_bytes: 16 * 1024 * 1024,
    max_fragments: 128 * 1024,
};

/// What every session needs from the server.
#[derive(Debug)]
pub struct SessionContext {
    /// The symbols the server carries.
    pub symbols: Arc<Symbols>,
    /// Per-connection output limits.
    pub outbox_limits: OutboxLimits,
    /// Per-connection input limits.
    pub input_limits: InputLimits,
    /// Most symbols one connection may subscribe to by name.
    pub max_subscriptions: usize,
    /// Frames per second one connection may send (and as many at once).
    pub max_messages_per_second: u32,
    /// How often every connection is pinged, if at all.
    pub ping_interval: Option<Duration>,
    /// Server-wide counters.
    pub stats: Arc<Stats>,
}

/// What a connection serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `/ws`: a market-data client.
    Client,
    /// `--echo-route`: every message is sent back (conformance suites).
    Echo,
}

/// One client's protocol state. See the module docs.
#[derive(Debug)]
pub struct Session {
    /// For logs.
    pub conn: ConnId,
    mode: Mode,
    subs: Subscriptions,
    grant: Arc<Grant>,
    /// `None` on the echo route: conformance suites send as fast as they
    /// can.
    rate: Option<RateLimit>,
    /// Frames read since the server decided to close.
    read_while_closing: u32,
    /// The client sent its close frame.
    peer_closed: bool,
    /// Reading has ended for good (the peer closed, or a closing peer kept
    /// sending past [`CLOSING_READ_BUDGET`]).
    done_reading: bool,
}

impl Session {
    /// A session for connection `conn`, allowed what `grant` allows.
    pub fn new(
        conn: ConnId,
        mode: Mode,
        grant: Arc<Grant>,
        ctx: &SessionContext,
        now: Instant,
    ) -> Self {
        let rate = (mode == Mode::Client).then(|| RateLimit::new(ctx.max_messages_per_second, now));
        Session {
            conn,
            mode,
            subs: Subscriptions::default(),
            grant,
            rate,
            read_while_closing: 0,
            peer_closed: false,
            done_reading: false,
        }
    }

    /// What this connection serves.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// When the client's token expires, if it does.
    pub fn expires_at(&self) -> Option<std::time::SystemTime> {
        self.grant.expires_at
    }

    /// The client has sent its close frame.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Nothing more is read from this client.
    pub fn done_reading(&self) -> bool {
        self.done_reading
    }

    /// Stops reading from this client for good.
    pub fn stop_reading(&mut self) {
        self.done_reading = true;
    }

    /// Handles one message from the client of connection `key`. Every
    /// frame counts toward the rate limit: messages, each of their
    /// continuation fragments, pings, pongs and empty frames. A frame past
    /// the rate is not handled: a message or ping is answered
    /// `rate_limited`, a pong only counted, and after a second's worth of
    /// refusals in a row the connection is closed with 1008. A close frame
    /// is always answered. Returns [`Flow::Pause`] when the shard should
    /// read no more for now: replies are backed up, or reading is over.
    pub fn on_message(
        &mut self,
        key: Key,
        message: Message<'_>,
        now: Instant,
        fanout: &mut Fanout,
        outboxes: &mut Outboxes,
        ctx: &SessionContext,
    ) -> Flow {
        let Some(outbox) = outboxes.get_mut(key) else {
            return Flow::Pause;
        };
        // Any frame answers the server's pings.
        outbox.heard();
        if message.kind == Kind::Close {
            // Echo the peer's close (unless ours is already out). An
            // invalid close payload never gets here: it is a fault.
            outbox.close(close_frame_echo(message.payload));
            self.peer_closed = true;
            self.done_reading = true;
            return Flow::Pause;
        }
        // Once a close is under way, frames are read only to reach the
        // peer's answering close (closing the socket on unread input would
        // reset it, and the peer would never see why it was closed); but a
        // flooder's close comes after all it sent, and reading that would
        // cost the server what it costs the flooder. Past a budget the
        // shard stops reading and gives the close a grace period.
        if outbox.is_closing() {
            self.read_while_closing += message.frames;
            if self.read_while_closing > CLOSING_READ_BUDGET {
                self.done_reading = true;
                return Flow::Pause;
            }
            return Flow::Continue;
        }
        let admit = match &mut self.rate {
            None => Admit::Yes,
            Some(rate) => rate.admit(now, message.frames),
        };
        match admit {
            Admit::Yes => {}
            Admit::No => {
                if message.kind == Kind::Pong {
                    return Flow::Continue;
                }
                let limit = self.rate.as_ref().map_or(0.0, |r| r.per_second);
                outboxes.push_error(
                    key,
                    &ProtocolError::new(
                        ErrorCode::RateLimited,
                        format!(
                            "more than {limit} frames a second (messages, pings and pongs \
                             together); this one was dropped. Slow down, or the connection \
                             is closed"
                        ),
                    ),
                );
                return Self::backed_up(key, outboxes);
            }
            Admit::Close => {
                outbox.close_with(
                    close::POLICY_VIOLATION,
                    "too many messages: rate limit exceeded",
                );
                Stats::add(&ctx.stats.rate_limit_closes, 1);
                return Flow::Continue;
            }
        }
        match (message.kind, self.mode) {
            (Kind::Text, Mode::Client) => Request {
                key,
                subs: &mut self.subs,
                grant: &self.grant,
                fanout,
                outboxes,
                ctx,
            }
            .text(message.payload),
            // The frame reader has checked the payload is UTF-8.
            (Kind::Text, Mode::Echo) => outbox.push_reply(text_frame(message.payload)),
            (Kind::Binary, Mode::Echo) => outbox.push_reply(binary_frame(message.payload)),
            (Kind::Binary, Mode::Client) => outboxes.push_error(
                key,
                &ProtocolError::new(
                    ErrorCode::BinaryNotSupported,
                    "binary frames are not supported; send JSON as text frames",
                ),
            ),
            (Kind::Ping, _) => outbox.push_reply(pong_frame(message.payload)),
            (Kind::Pong | Kind::Close, _) => {}
        }
        Self::backed_up(key, outboxes)
    }

    /// [`Flow::Pause`] while `key`'s replies wait for the client to read
    /// them.
    fn backed_up(key: Key, outboxes: &Outboxes) -> Flow {
        if outboxes.replies_backed_up(key) {
            Flow::Pause
        } else {
            Flow::Continue
        }
    }

    /// Takes connection `key`'s subscriptions out of `fanout`.
    pub fn detach(&mut self, key: Key, fanout: &mut Fanout) {
        let all = self.subs.all();
        let named = self.subs.clear_named();
        fanout.detach(key, all, named);
        self.subs = Subscriptions::default();
    }
}
