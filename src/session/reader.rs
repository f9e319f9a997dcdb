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

use super::guard::{Continuations, Violation};
use super::outbox::Outbox;
use super::writer::CLOSE_GRACE;
use crate::auth::Grant;
use crate::fanout::throttle::interval_for;
use crate::fanout::{Command, ConnId, FanoutHandle};
use crate::protocol::frame::{close_frame, close_frame_echo, pong_frame};
use crate::protocol::{
    truncate, ClientMsg, ErrorCode, ProtocolError, ServerMsg, SubscribeOptions, ALL_SYMBOLS,
};
use crate::symbol::{SymbolId, Symbols};

/// How the reader ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ReaderExit {
    /// The client sent a close frame (answered through the outbox).
    ClientClosed,
    /// The client broke the protocol; a close frame with this code was
    /// queued.
    Violation(u16),
    /// The client kept sending past its rate limit, was closed with 1008
    /// and then left.
    RateLimited,
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
///
/// With a `rate`, every frame the client sends counts toward it: messages,
/// each of their continuation fragments (counted by the guard into
/// `continuations`), pings, pongs and empty frames. A frame past the rate
/// is not handled: a message or ping is answered `rate_limited`, a pong
/// only counted, and after a second's worth of refusals in a row the
/// connection is closed with 1008. A close frame is always handled.
pub async fn read_messages<S, M>(
    mut ws: FragmentCollectorRead<S>,
    continuations: &Continuations,
    mut rate: Option<RateLimit>,
    outbox: &Arc<Outbox>,
    messages: &mut M,
) -> ReaderExit
where
    S: AsyncRead + Unpin,
    M: Messages,
{
    // Pings are answered below (`split` turns fastwebsockets' automatic
    // pong off, so they are counted like any frame); the library's own
    // obligation is then only the close echo, which is handled below too.
    let mut obligated =
        |_frame: Frame<'_>| std::future::ready(Ok::<(), std::convert::Infallible>(()));
    let mut closed_for_rate = false;
    let mut read_while_closing = 0u32;
    let exit = loop {
        // Hold back while this peer has not read its earlier replies
        // (returns at once when a close is under way). A peer that sends
        // without reading is held back by TCP.
        outbox.replies_drained().await;
        let frame = match ws.read_frame(&mut obligated).await {
            Ok(frame) => frame,
            Err(err) => break fault(err, outbox),
        };
        // Any frame answers the server's pings (`Outbox::ping_or_close`).
        outbox.heard();
        if frame.opcode == OpCode::Close {
            // Echo the peer's close (unless ours is already out). An
            // invalid close code never gets here: it is a fault, 1002.
            outbox.close(close_frame_echo(&frame.payload));
            break ReaderExit::ClientClosed;
        }
        // Once a close is under way, frames are read only to reach the
        // peer's answering close (closing the socket on unread input would
        // reset it, and the peer would never see why it was closed); but
        // a flooder's close comes after all it sent, and reading that
        // would cost the server what it costs the flooder. Past a budget
        // the reader stops reading and gives the close frame a grace
        // period to arrive before the socket is dropped.
        if outbox.is_closing() {
            read_while_closing += 1 + continuations.take();
            if read_while_closing > CLOSING_READ_BUDGET {
                tokio::time::sleep(CLOSE_GRACE).await;
                break ReaderExit::Gone;
            }
            continue;
        }
        let frames = 1 + continuations.take();
        let admit = match &mut rate {
            None => Admit::Yes,
            Some(rate) => rate.admit(Instant::now(), frames),
        };
        match admit {
            Admit::Yes => {}
            Admit::No => {
                if frame.opcode != OpCode::Pong {
                    let limit = rate.as_ref().map_or(0.0, |r| r.per_second);
                    outbox.push_error(&ProtocolError::new(
                        ErrorCode::RateLimited,
                        format!(
                            "more than {limit} frames a second (messages, pings and pongs \
                             together); this one was dropped. Slow down, or the connection \
                             is closed"
                        ),
                    ));
                }
                continue;
            }
            Admit::Close => {
                outbox.close(close_frame(1008, "too many messages: rate limit exceeded"));
                closed_for_rate = true;
                continue;
            }
        }
        match frame.opcode {
            OpCode::Text => {
                let mut payload = frame.payload.to_vec();
                messages.text(&mut payload).await;
            }
            OpCode::Binary => messages.binary(&frame.payload, outbox),
            OpCode::Ping => outbox.push_reply(pong_frame(&frame.payload)),
            // Pongs need nothing; continuations arrive inside messages.
            _ => {}
        }
    };
    if closed_for_rate {
        ReaderExit::RateLimited
    } else {
        exit
    }
}

/// Frames read after the server queued its close, looking for the peer's
/// answering close, before the reader stops reading.
pub const CLOSING_READ_BUDGET: u32 = 1024;

/// Maps a read error to the close the peer gets.
fn fault(err: WebSocketError, outbox: &Outbox) -> ReaderExit {
    let (code, reason): (u16, String) = match &err {
        WebSocketError::IoError(io) => match Violation::of(io) {
            Some(violation) => (violation.close_code(), violation.to_string()),
            None => return gone(outbox, false),
        },
        WebSocketError::UnexpectedEOF | WebSocketError::ConnectionClosed => {
            return gone(outbox, true)
        }
        WebSocketError::FrameTooLarge => (1009, "message too large".into()),
        WebSocketError::InvalidUTF8 => (1007, "invalid UTF-8 in a text message".into()),
        other => (1002, format!("protocol error: {other}")),
    };
    outbox.close(close_frame(code, &reason));
    ReaderExit::Violation(code)
}

/// The peer stopped sending: at the end of its stream (`eof`), or with an
/// error. A peer that only half-closed may still read the close frame the
/// server queued (a flooder closed for its rate, say), so that one is
/// still sent; otherwise the connection ends without one.
fn gone(outbox: &Outbox, eof: bool) -> ReaderExit {
    if !(eof && outbox.is_closing()) {
        outbox.abort();
    }
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
    symbols: Arc<Symbols>,
    max_subscriptions: usize,
    subscriptions: Subscriptions,
    /// What the client's token allows it to see.
    grant: Grant,
}

/// A token bucket of frames per second, and how many frames were refused
/// in a row: a connection's input rate limit (`--max-messages-per-second`).
#[derive(Debug)]
pub struct RateLimit {
    per_second: f64,
    tokens: f64,
    refilled_at: Instant,
    refused_in_a_row: u32,
}

/// What to do with a frame.
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
    /// `per_second` frames a second, in bursts of as many.
    pub fn new(per_second: u32, now: Instant) -> Self {
        RateLimit {
            per_second: f64::from(per_second),
            tokens: f64::from(per_second),
            refilled_at: now,
            refused_in_a_row: 0,
        }
    }

    /// Whether a message of `frames` frames may be handled now.
    fn admit(&mut self, now: Instant, frames: u32) -> Admit {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        self.refilled_at = now;
        let cost = f64::from(frames);
        if self.tokens >= cost {
            self.tokens -= cost;
            self.refused_in_a_row = 0;
            return Admit::Yes;
        }
        // A refused message's fragments still used the connection.
        self.tokens = (self.tokens - cost).max(0.0);
        let answered_before = self.refused_in_a_row > 0;
        self.refused_in_a_row = self.refused_in_a_row.saturating_add(frames);
        // The first refusal is always answered, so the client learns why.
        if answered_before && f64::from(self.refused_in_a_row) > self.per_second {
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
        symbols: Arc<Symbols>,
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
        }
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
            .partition(|&id| self.grant.allows(&self.symbols.name(id)));
        if !denied.is_empty() {
            let names: Vec<String> = denied
                .iter()
                .take(10)
                .map(|&id| format!("{:?}", &*self.symbols.name(id)))
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
            let advice = if self.symbols.learns() {
                "the feed has not published it (yet); GET /symbols lists what it has, and \
                 a plain \"*\" subscription is sent each new symbol from its first tick"
            } else {
                "GET /symbols lists the symbols this server carries"
            };
            self.outbox.push_error(&ProtocolError::new(
                ErrorCode::UnknownSymbol,
                format!("unknown symbol {}; {advice}", unknown.join(", ")),
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
        let mut resolved = HashMap::with_capacity(from.len());
        for (name, seq) in from {
            if !star && !requested.contains(name.as_str()) {
                return Err(ProtocolError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "\"from\" names {:?}, which this request does not subscribe; \
                         list it in \"symbols\" as well",
                        truncate(name, 24)
                    ),
                ));
            }
            // A name the server does not know is in `symbols` too, and
            // answered there (`unknown_symbol`); a server that learns its
            // symbols (restarted, say) has nothing of it to resume, and
            // sends it as a snapshot when it first trades.
            if let Some(id) = self.symbols.id(name) {
                resolved.insert(id, *seq);
            }
        }
        Ok(resolved)
    }

    async fn subscribe(&mut self, names: &[String], options: &SubscribeOptions) {
        // Every option is checked before anything is applied.
        let from = match self.resolve_from(names, &options.from) {
            Ok(from) => from,
            Err(err) => return self.outbox.push_error(&err),
        };
        let interval = options.max_hz.map(interval_for);
        let (mut star, ids) = self.resolve(names);
        // Read after the names are resolved: every id above is below it.
        let known = self.symbols.len();
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
                .names_between(0, known)
                .iter()
                .enumerate()
                .filter(|(_, name)| self.grant.allows(name))
                .map(|(id, _)| id as SymbolId)
                .collect();
        }
        let subs = &mut self.subscriptions;
        let added: Vec<SymbolId> = if subs.all {
            Vec::new()
        } else if star {
            (0..known as SymbolId)
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
                known,
                done,
            })
            .await;
    }

    async fn unsubscribe(&mut self, names: &[String]) {
        let (star, ids) = self.resolve(names);
        // Read after the names are resolved: every id above is below it.
        let known = self.symbols.len();
        if !star && ids.is_empty() {
            return;
        }
        let subs = &mut self.subscriptions;
        let was_all = subs.all;
        let removed: Vec<SymbolId> = if star {
            if was_all {
                (0..known as SymbolId).collect()
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
                subs.symbols = (0..known as SymbolId)
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
                known,
                done,
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_rate_limit_counts_frames_refills_and_closes_after_a_second_of_refusals() {
        let start = Instant::now();
        let mut rate = RateLimit::new(10, start);
        for _ in 0..10 {
            assert_eq!(rate.admit(start, 1), Admit::Yes);
        }
        assert_eq!(rate.admit(start, 1), Admit::No);
        // A tenth of a second brings one frame back.
        let later = start + Duration::from_millis(100);
        assert_eq!(rate.admit(later, 1), Admit::Yes);
        assert_eq!(rate.admit(later, 1), Admit::No);
        // Refusals in a row past a second's worth close the connection.
        for _ in 0..9 {
            assert_eq!(rate.admit(later, 1), Admit::No);
        }
        assert_eq!(rate.admit(later, 1), Admit::Close);
    }

    #[test]
    fn a_fragmented_message_costs_each_of_its_frames() {
        let start = Instant::now();
        let mut rate = RateLimit::new(100, start);
        assert_eq!(rate.admit(start, 60), Admit::Yes);
        // 60 of 100 spent: a 50-fragment message no longer fits.
        assert_eq!(rate.admit(start, 50), Admit::No);
        // Another 200 fragments refused: more than a second's worth.
        assert_eq!(rate.admit(start, 200), Admit::Close);
        // The first refusal is answered even when it alone is too much.
        let mut rate = RateLimit::new(100, start);
        assert_eq!(rate.admit(start, 1000), Admit::No);
        assert_eq!(rate.admit(start, 1), Admit::Close);
    }
}
