//! The session's reader: client frames in, requests to the `fanout`,
//! replies to the `outbox`.
//!
//! [`read_messages`] reads with fastwebsockets' `FragmentCollectorRead`
//! behind a [`FrameGuard`](super::guard::FrameGuard) and turns protocol
//! faults into the right close code: 1002 protocol error, 1007 invalid
//! UTF-8, 1009 too large. [`Reader`] handles a client's requests and
//! validates each against the connection's own subscription state, so a
//! client's mistakes cost the shared fan-out nothing.
//!
//! `read_frame` is not cancellation-safe, so the reader runs in a task of
//! its own and is only ever dropped when the connection is over.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use fastwebsockets::{FragmentCollectorRead, Frame, OpCode, WebSocketError};
use tokio::io::AsyncRead;

use super::guard::Violation;
use super::outbox::Outbox;
use crate::auth::Grant;
use crate::fanout::throttle::interval_for;
use crate::fanout::{Command, ConnId, FanoutHandle};
use crate::protocol::frame::{close_frame, close_frame_echo, pong_frame};
use crate::protocol::{
    truncate, ClientMsg, ErrorCode, ProtocolError, ServerMsg, SubscribeOptions, ALL_SYMBOLS,
};
use crate::tick::{SymbolId, SymbolTable};

/// How the reader ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ReaderExit {
    /// The client sent a close frame (answered through the outbox).
    ClientClosed,
    /// The client broke the protocol; a close frame with this code was
    /// queued.
    Violation(u16),
    /// The connection dropped, or the server closed it first.
    Gone,
}

/// What a connection does with the messages it receives: client requests
/// here, published ticks in `feed::ingest`, echoes in `session::echo`.
pub trait Messages {
    /// Handles one complete text message. `payload` is scratch afterwards.
    fn text(&mut self, payload: &mut [u8]) -> impl Future<Output = ()> + Send;

    /// Handles one complete binary message; the protocol is JSON text, so
    /// by default it is refused with `binary_not_supported`.
    fn binary(&mut self, _payload: &[u8], outbox: &Outbox) {
        outbox.push_error(&ProtocolError::new(
            ErrorCode::BinaryNotSupported,
            "binary frames are not supported; send JSON as text frames",
        ));
    }
}

/// Reads frames until the connection ends, handing text messages to
/// `messages` and answering everything else itself: binary frames get
/// `binary_not_supported`, pings a pong, a close its echo, and protocol
/// faults the right close code.
pub async fn read_messages<S, M>(
    mut ws: FragmentCollectorRead<S>,
    outbox: &Arc<Outbox>,
    messages: &mut M,
) -> ReaderExit
where
    S: AsyncRead + Unpin,
    M: Messages,
{
    // fastwebsockets hands us the pongs it must send; they go out through
    // the outbox like everything else (one writer, one close frame). A
    // peer that pings without reading is held back like one that sends
    // requests without reading: the next frame waits until replies drain.
    let mut obligated = |frame: Frame<'_>| {
        if frame.opcode == OpCode::Pong {
            // Answering the client's ping: it is alive too.
            outbox.heard();
            outbox.push_reply(pong_frame(&frame.payload));
        }
        let outbox = outbox.clone();
        async move {
            outbox.replies_drained().await;
            Ok::<(), std::convert::Infallible>(())
        }
    };
    loop {
        // Hold back while this peer has not read its earlier replies
        // (returns at once when a close is under way).
        outbox.replies_drained().await;
        let frame = match ws.read_frame(&mut obligated).await {
            Ok(frame) => frame,
            Err(err) => return fault(err, outbox),
        };
        // Any frame answers the server's pings (`Outbox::ping_or_close`).
        outbox.heard();
        match frame.opcode {
            // Once a close is under way, messages are read only to reach
            // the peer's answering close; they are not handled.
            OpCode::Text | OpCode::Binary if outbox.is_closing() => {}
            OpCode::Text => {
                let mut payload = frame.payload.to_vec();
                messages.text(&mut payload).await;
            }
            OpCode::Binary => messages.binary(&frame.payload, outbox),
            OpCode::Close => {
                // Echo the peer's close (unless ours is already out). An
                // invalid close code never gets here: it is a fault, 1002.
                outbox.close(close_frame_echo(&frame.payload));
                return ReaderExit::ClientClosed;
            }
            // Pings were answered through `obligated`; pongs need nothing.
            _ => {}
        }
    }
}

/// Maps a read error to the close the peer gets.
fn fault(err: WebSocketError, outbox: &Outbox) -> ReaderExit {
    let (code, reason): (u16, String) = match &err {
        WebSocketError::IoError(io) => match Violation::of(io) {
            Some(violation) => (violation.close_code(), violation.to_string()),
            None => return gone(outbox),
        },
        WebSocketError::UnexpectedEOF | WebSocketError::ConnectionClosed => return gone(outbox),
        WebSocketError::FrameTooLarge => (1009, "message too large".into()),
        WebSocketError::InvalidUTF8 => (1007, "invalid UTF-8 in a text message".into()),
        other => (1002, format!("protocol error: {other}")),
    };
    outbox.close(close_frame(code, &reason));
    ReaderExit::Violation(code)
}

fn gone(outbox: &Outbox) -> ReaderExit {
    outbox.abort();
    ReaderExit::Gone
}

impl Messages for Reader {
    fn text(&mut self, payload: &mut [u8]) -> impl Future<Output = ()> + Send {
        self.handle_text_inner(payload)
    }
}

/// One connection's subscriptions, as the client asked for them.
#[derive(Debug, Default)]
struct Subscriptions {
    /// Subscribed to `*`.
    all: bool,
    /// Subscribed symbols when not `all`.
    symbols: HashSet<SymbolId>,
    /// Some symbols were subscribed with `max_hz`; a later `*` then
    /// subscribes every symbol by name, so each keeps its own rate.
    throttled: bool,
}

/// The request-handling side of one session.
#[derive(Debug)]
pub struct Reader {
    conn: ConnId,
    outbox: Arc<Outbox>,
    fanout: FanoutHandle,
    symbols: Arc<SymbolTable>,
    max_subscriptions: usize,
    subscriptions: Subscriptions,
    /// What the client's token allows it to see.
    grant: Grant,
    /// How many requests it may send.
    rate: Option<RateLimit>,
}

/// A token bucket of requests per second, and how many were refused in a
/// row.
#[derive(Debug)]
struct RateLimit {
    per_second: f64,
    tokens: f64,
    refilled_at: Instant,
    refused_in_a_row: u32,
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    Yes,
    /// Refuse it with `rate_limited`.
    No,
    /// Close the connection: it kept sending after a second's worth of
    /// refusals.
    Close,
}

impl RateLimit {
    fn new(per_second: u32, now: Instant) -> Self {
        RateLimit {
            per_second: f64::from(per_second),
            tokens: f64::from(per_second),
            refilled_at: now,
            refused_in_a_row: 0,
        }
    }

    fn admit(&mut self, now: Instant) -> Admit {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            return Admit::Yes;
        }
        self.refused_in_a_row += 1;
        if f64::from(self.refused_in_a_row) > self.per_second {
            Admit::Close
        } else {
            Admit::No
        }
    }
}

impl Reader {
    /// A reader for connection `conn`.
    pub fn new(
        conn: ConnId,
        outbox: Arc<Outbox>,
        fanout: FanoutHandle,
        symbols: Arc<SymbolTable>,
        max_subscriptions: usize,
    ) -> Self {
        Reader {
            conn,
            outbox,
            fanout,
            symbols,
            max_subscriptions,
            subscriptions: Subscriptions::default(),
            grant: Grant::unrestricted(),
            rate: None,
        }
    }

    /// Limits the client to `per_second` requests a second, in bursts of
    /// as many.
    pub fn with_rate_limit(mut self, per_second: u32) -> Self {
        self.rate = Some(RateLimit::new(per_second, Instant::now()));
        self
    }

    /// Limits the client to what its token grants (every symbol without).
    pub fn with_grant(mut self, grant: Grant) -> Self {
        self.grant = grant;
        self
    }

    /// Keeps the ids the grant covers, replying `not_entitled` for the
    /// others.
    fn entitled(&self, ids: Vec<SymbolId>) -> Vec<SymbolId> {
        if self.grant.all {
            return ids;
        }
        let (allowed, denied): (Vec<_>, Vec<_>) = ids
            .into_iter()
            .partition(|&id| self.grant.allows(self.symbols.name(id)));
        if !denied.is_empty() {
            let names: Vec<String> = denied
                .iter()
                .take(10)
                .map(|&id| format!("{:?}", self.symbols.name(id)))
                .collect();
            self.outbox.push_error(&ProtocolError::new(
                ErrorCode::NotEntitled,
                format!(
                    "your token does not cover {}; it covers {}. Ask for a token that includes them",
                    names.join(", "),
                    self.grant.describe()
                ),
            ));
        }
        allowed
    }

    async fn handle_text_inner(&mut self, payload: &mut [u8]) {
        if let Some(rate) = &mut self.rate {
            match rate.admit(Instant::now()) {
                Admit::Yes => {}
                Admit::No => {
                    let limit = rate.per_second;
                    return self.outbox.push_error(&ProtocolError::new(
                        ErrorCode::RateLimited,
                        format!(
                            "more than {limit} requests a second; this one was dropped. \
                             Slow down, or the connection is closed"
                        ),
                    ));
                }
                Admit::Close => {
                    self.outbox
                        .close(close_frame(1008, "too many requests: rate limit exceeded"));
                    return;
                }
            }
        }
        match ClientMsg::parse(payload) {
            Err(err) => self.outbox.push_error(&err),
            Ok(ClientMsg::Ping { id }) => self
                .outbox
                .push_reply(ServerMsg::Pong { id: id.as_ref() }.to_frame()),
            Ok(ClientMsg::Subscribe { symbols, options }) => {
                self.subscribe(&symbols, &options).await;
            }
            Ok(ClientMsg::Unsubscribe { symbols }) => self.unsubscribe(&symbols).await,
        }
    }

    /// Splits names into `*`, known ids (deduplicated, in request order)
    /// and unknown names, replying `unknown_symbol` for the latter.
    fn resolve(&self, names: &[String]) -> (bool, Vec<SymbolId>) {
        let mut star = false;
        let mut ids = Vec::with_capacity(names.len());
        let mut seen = HashSet::with_capacity(names.len());
        let mut unknown = Vec::new();
        for name in names {
            if name == ALL_SYMBOLS {
                star = true;
            } else if let Some(id) = self.symbols.id(name) {
                if seen.insert(id) {
                    ids.push(id);
                }
            } else if unknown.len() < 10 {
                unknown.push(format!("{:?}", crate::protocol::truncate(name, 24)));
            }
        }
        if !unknown.is_empty() {
            self.outbox.push_error(&ProtocolError::new(
                ErrorCode::UnknownSymbol,
                format!(
                    "unknown symbol {}; GET /symbols lists the symbols this server carries",
                    unknown.join(", ")
                ),
            ));
        }
        (star, ids)
    }

    /// The symbol ids of a subscribe's `from`, each of which must be
    /// among the symbols the request names (any symbol, with `*`).
    fn resolve_from(
        &self,
        names: &[String],
        from: &[(String, u64)],
    ) -> Result<HashMap<SymbolId, u64>, ProtocolError> {
        if from.is_empty() {
            return Ok(HashMap::new());
        }
        let requested: HashSet<&str> = names.iter().map(String::as_str).collect();
        let star = requested.contains(ALL_SYMBOLS);
        from.iter()
            .map(|(name, seq)| {
                let id = self
                    .symbols
                    .id(name)
                    .filter(|_| star || requested.contains(name.as_str()))
                    .ok_or_else(|| {
                        ProtocolError::new(
                            ErrorCode::BadRequest,
                            format!(
                                "\"from\" names {:?}, which this request does not subscribe; \
                                 list it in \"symbols\" as well",
                                truncate(name, 24)
                            ),
                        )
                    })?;
                Ok((id, *seq))
            })
            .collect()
    }

    async fn subscribe(&mut self, names: &[String], options: &SubscribeOptions) {
        // Every option is checked before anything is applied.
        let from = match self.resolve_from(names, &options.from) {
            Ok(from) => from,
            Err(err) => return self.outbox.push_error(&err),
        };
        let interval = options.max_hz.map(interval_for);
        let (mut star, ids) = self.resolve(names);
        let mut ids = self.entitled(ids);
        if !star && ids.is_empty() {
            return;
        }
        // `*` is every symbol by name where something is kept per symbol:
        // its rate (a throttled `*`, or `*` beside throttled symbols), or
        // the entitlement (a token that covers only some symbols).
        let star_by_name =
            star && (interval.is_some() || self.subscriptions.throttled || !self.grant.all);
        if star_by_name {
            star = false;
            ids = self
                .symbols
                .ids()
                .filter(|&id| self.grant.allows(self.symbols.name(id)))
                .collect();
        }
        let subs = &mut self.subscriptions;
        let added: Vec<SymbolId> = if subs.all {
            Vec::new()
        } else if star {
            self.symbols
                .ids()
                .filter(|id| !subs.symbols.contains(id))
                .collect()
        } else {
            ids.into_iter()
                .filter(|id| !subs.symbols.contains(id))
                .collect()
        };
        if !star && !subs.all && subs.symbols.len() + added.len() > self.max_subscriptions {
            let advice = if star_by_name {
                "here \"*\" subscribes each symbol by name (with max_hz, or a token that \
                 covers only some symbols); name fewer symbols"
            } else {
                "unsubscribe some, subscribe to \"*\", or open another connection"
            };
            self.outbox.push_error(&ProtocolError::new(
                ErrorCode::TooManySymbols,
                format!(
                    "this would make {} subscriptions on one connection, the limit is {}; \
                     {advice}",
                    subs.symbols.len() + added.len(),
                    self.max_subscriptions
                ),
            ));
            return;
        }
        subs.throttled |= interval.is_some();
        if let Some(batch) = options.batch {
            self.outbox.set_batch(batch);
        }
        if star {
            subs.all = true;
            subs.symbols.clear();
        } else {
            subs.symbols.extend(added.iter().copied());
        }
        let all = subs.all;
        let conn = self.conn;
        self.fanout
            .request(|done| Command::Subscribe {
                conn,
                all,
                added,
                from,
                interval,
                done,
            })
            .await;
    }

    async fn unsubscribe(&mut self, names: &[String]) {
        let (star, ids) = self.resolve(names);
        if !star && ids.is_empty() {
            return;
        }
        let subs = &mut self.subscriptions;
        let was_all = subs.all;
        let removed: Vec<SymbolId> = if star {
            if was_all {
                self.symbols.ids().collect()
            } else {
                let mut removed: Vec<_> = subs.symbols.drain().collect();
                removed.sort_unstable();
                removed
            }
        } else if was_all {
            ids
        } else {
            ids.into_iter()
                .filter(|id| subs.symbols.remove(id))
                .collect()
        };
        if was_all {
            subs.all = false;
            if !star {
                let removed_set: HashSet<_> = removed.iter().copied().collect();
                subs.symbols = self
                    .symbols
                    .ids()
                    .filter(|id| !removed_set.contains(id))
                    .collect();
            }
        }
        if !subs.all && subs.symbols.is_empty() {
            // Nothing left, throttled or not: a later `*` may take the
            // fast path again.
            subs.throttled = false;
        }
        let conn = self.conn;
        self.fanout
            .request(|done| Command::Unsubscribe {
                conn,
                removed,
                done,
            })
            .await;
    }
}
