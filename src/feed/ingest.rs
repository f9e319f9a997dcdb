//! The ingest feed: an external publisher (`feed-sim publish`, or any
//! program speaking this protocol) sends ticks over a WebSocket at
//! `GET /ingest`, and they enter the ring exactly as the built-in
//! simulator's would, keeping the publisher's `seq` and `ts`.
//!
//! One publisher at a time holds the ring's single [`Producer`]: it is
//! taken from the [`IngestPort`] when a publisher connects and put back
//! when it leaves, so a publisher can reconnect and carry on. A publisher
//! that connects while another holds the ring takes over: the old one is
//! closed (1000 `another publisher took over`) — a crashed publisher whose
//! connection was never torn down must not lock its restart out. Access
//! needs the token given with `--ingest-token`.
//!
//! Wire format (text frames, JSON): one tick object, or an array of them,
//! in the same shape clients receive (`type` is optional and ignored):
//!
//! ```json
//! [{"sym":"BTC-USD","seq":42,"px":64123.5,"bid":"64123.49","ask":64123.51,"size":3,"ts":1732250000123456789}]
//! ```
//!
//! Prices are exact decimals, as JSON numbers or strings. What is checked
//! and published, and how a new symbol is learned, is the same for every
//! external feed ([`super::external`]); a refused tick gets an `error`
//! reply (`bad_tick`, `unknown_symbol`, `symbol_limit`) and the rest of the
//! message is still published. A `seq` that skips ahead is published as
//! is: clients see the gap the publisher made.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::external::{Intake, JsonTick};
use crate::protocol::frame::close_frame;
use crate::protocol::{json, ErrorCode, ProtocolError};
use crate::session::guard::GuardLimits;
use crate::session::keep_pinging;
use crate::session::outbox::{Outbox, OutboxLimits};
use crate::session::reader::{read_messages, Messages};
use crate::stats::Stats;

/// The ring's producer, with the per-symbol state that outlives one
/// publisher connection.
type Slot = Intake;

/// Where publishers plug in. See the module docs.
#[derive(Debug)]
pub struct IngestPort {
    slot: Mutex<Option<Slot>>,
    /// The connected publisher's outbox, to close it on takeover or
    /// shutdown.
    current: Mutex<Option<Arc<Outbox>>>,
    /// Signalled when the slot is put back.
    released: Notify,
    token: String,
    stats: Arc<Stats>,
    /// Limits for the publisher's own connection.
    pub guard_limits: GuardLimits,
    /// Limits for replies to the publisher.
    pub outbox_limits: OutboxLimits,
    /// How often a quiet publisher is pinged (and dropped if silent).
    pub ping_interval: Option<Duration>,
}

/// Why a publisher may not connect.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// No token, or the wrong one.
    BadToken,
    /// Another publisher is connected and did not let go in time.
    Busy,
}

impl IngestPort {
    /// A port whose publishers feed `intake`.
    pub fn new(
        intake: Intake,
        token: String,
        stats: Arc<Stats>,
        guard_limits: GuardLimits,
        outbox_limits: OutboxLimits,
    ) -> Self {
        IngestPort {
            slot: Mutex::new(Some(intake)),
            current: Mutex::new(None),
            released: Notify::new(),
            token,
            stats,
            guard_limits,
            outbox_limits,
            ping_interval: None,
        }
    }

    /// Pings a quiet publisher every `interval` and drops one that stays
    /// silent for a whole interval (`None`: never).
    pub fn with_ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Whether `token` is the ingest token.
    pub fn is_token(&self, token: Option<&str>) -> bool {
        constant_time_eq(token.unwrap_or("").as_bytes(), self.token.as_bytes())
    }

    /// Checks `token` and takes the producer for one publisher, closing a
    /// publisher that holds it and waiting up to [`TAKEOVER_WAIT`] for it
    /// to let go.
    pub async fn admit(self: &Arc<Self>, token: Option<&str>) -> Result<Publisher, Refused> {
        let given = token.unwrap_or("");
        if !constant_time_eq(given.as_bytes(), self.token.as_bytes()) {
            return Err(Refused::BadToken);
        }
        let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(slot) = lock(&self.slot).take() {
                return Ok(Publisher {
                    port: self.clone(),
                    slot: Some(slot),
                    outbox: None,
                });
            }
            if let Some(old) = lock(&self.current).as_ref() {
                old.close(close_frame(1000, "another publisher took over"));
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return Err(Refused::Busy);
            }
        }
    }

    /// Closes the connected publisher, if any, with 1001 (shutdown).
    pub fn close_publisher(&self) {
        if let Some(current) = lock(&self.current).as_ref() {
            current.close(close_frame(1001, "server shutting down"));
        }
    }
}

/// How long a new publisher waits for the one it replaces to let go of the
/// ring (its connection closing takes at most the close grace period).
pub const TAKEOVER_WAIT: Duration = Duration::from_secs(10);

/// Locks `mutex`; a panic elsewhere leaves plain data, still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Compares without stopping at the first difference, so response time
/// does not reveal how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One connected publisher; gives the producer back when dropped.
#[derive(Debug)]
pub struct Publisher {
    port: Arc<IngestPort>,
    slot: Option<Slot>,
    outbox: Option<Arc<Outbox>>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if let Some(ours) = &self.outbox {
            let mut current = lock(&self.port.current);
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, ours)) {
                *current = None;
            }
        }
        if let Some(slot) = self.slot.take() {
            *lock(&self.port.slot) = Some(slot);
            self.port.released.notify_waiters();
        }
    }
}

/// Parses one message from a publisher: a tick object or an array of
/// them, within [`json::TICK_LIMITS`]. `payload` is parsed in place and is
/// scratch afterwards. Refusals are `bad_json` (not JSON, or past the
/// limits) or `bad_tick` (JSON, but not ticks), in words.
pub fn parse_ticks(payload: &[u8]) -> Result<Vec<JsonTick<'_>>, ProtocolError> {
    json::check(payload, json::TICK_LIMITS)
        .map_err(|fault| ProtocolError::new(ErrorCode::BadJson, fault.to_string()))?;
    let first = payload.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let parsed = match first {
        Some(b'[') => serde_json::from_slice(payload),
        Some(b'{') => serde_json::from_slice::<JsonTick<'_>>(payload).map(|t| vec![t]),
        _ => {
            return Err(ProtocolError::new(
                ErrorCode::BadJson,
                "send a tick as a JSON object, or several as an array of objects",
            ))
        }
    };
    let ticks: Vec<JsonTick<'_>> = parsed.map_err(|err| {
        let (code, what) = if err.is_data() {
            (ErrorCode::BadTick, "not a tick")
        } else {
            (ErrorCode::BadJson, "not JSON")
        };
        ProtocolError::new(
            code,
            format!("{what}: {err}; each tick needs sym, seq, px, bid, ask, size and ts"),
        )
    })?;
    if let Some(at) = ticks.iter().position(|t| t.sym.is_none()) {
        return Err(ProtocolError::new(
            ErrorCode::BadTick,
            format!("tick {} of the message has no sym; name its symbol", at + 1),
        ));
    }
    Ok(ticks)
}

impl Publisher {
    /// Serves the publisher's upgraded connection until it closes.
    pub async fn run(mut self, socket: crate::session::socket::Socket, early: bytes::Bytes) {
        let (ws_read, continuations, write_half) =
            crate::session::split(socket, early, self.port.guard_limits);
        let outbox =
            Arc::new(Outbox::new(self.port.outbox_limits).with_stats(self.port.stats.clone()));
        self.outbox = Some(outbox.clone());
        *lock(&self.port.current) = Some(outbox.clone());
        let reader_outbox = outbox.clone();
        tracing::info!("a publisher connected to /ingest");
        let ping_interval = self.port.ping_interval;
        let stats = self.port.stats.clone();
        crate::session::drive(&outbox, &stats, write_half, async move {
            let pings = keep_pinging(&reader_outbox, ping_interval);
            tokio::select! {
                // The one publisher holds the ingest token: no rate limit.
                _ = read_messages(ws_read, &continuations, None, &reader_outbox, &mut self) => {}
                // Closed for not answering: the read is abandoned.
                () = pings => {}
            }
        })
        .await;
        tracing::info!("the publisher left /ingest");
    }

    fn reply_error(&self, code: ErrorCode, message: String) {
        if let Some(outbox) = &self.outbox {
            outbox.push_error(&ProtocolError::new(code, message));
        }
    }

    /// Publishes the ticks of one message; returns the first refusal and
    /// how many ticks were refused.
    fn publish(&mut self, ticks: &[JsonTick<'_>]) -> Option<(ProtocolError, usize)> {
        let intake = self
            .slot
            .as_mut()
            .expect("a connected publisher holds the slot");
        let mut refused: Option<(ProtocolError, usize)> = None;
        for wire in ticks {
            let sym = wire.sym.as_deref().unwrap_or_default();
            let accepted = match wire.incoming(sym) {
                Ok(tick) => intake.accept(&tick),
                Err(err) => {
                    Stats::add(&self.port.stats.feed_bad_ticks, 1);
                    Err(err)
                }
            };
            if let Err(err) = accepted {
                match &mut refused {
                    Some((_, n)) => *n += 1,
                    None => refused = Some((err, 1)),
                }
            }
        }
        intake.finish();
        refused
    }

    fn handle(&mut self, payload: &[u8]) {
        let ticks = match parse_ticks(payload) {
            Ok(ticks) => ticks,
            Err(err) => {
                Stats::add(&self.port.stats.feed_bad_ticks, 1);
                return self.reply_error(err.code, err.message);
            }
        };
        if let Some((err, count)) = self.publish(&ticks) {
            let message = if count > 1 {
                format!(
                    "{} ({} more refused in this message)",
                    err.message,
                    count - 1
                )
            } else {
                err.message
            };
            self.reply_error(err.code, message);
        }
    }
}

impl Messages for Publisher {
    fn text(&mut self, payload: &mut [u8]) -> impl Future<Output = ()> + Send {
        self.handle(payload);
        std::future::ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(text: &str) -> ProtocolError {
        parse_ticks(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn publisher_messages_are_parsed_within_bounds_and_refused_in_words() {
        let tick = r#"{"sym":"AAPL","seq":1,"px":1.5,"bid":1.4,"ask":1.6,"size":1,"ts":2}"#;
        assert_eq!(parse_ticks(tick.as_bytes()).unwrap().len(), 1);
        let two = format!("[{tick},{tick}]");
        assert_eq!(parse_ticks(two.as_bytes()).unwrap().len(), 2);
        // An empty array publishes nothing, and is no error.
        assert!(parse_ticks(b" [] ").unwrap().is_empty());
        for (text, code, words) in [
            (
                r#"{"sym":"AAPL","seq":1}"#,
                ErrorCode::BadTick,
                "missing field",
            ),
            (
                r#"{"sym":7,"seq":1,"px":1,"bid":1,"ask":1,"size":1,"ts":1}"#,
                ErrorCode::BadTick,
                "expected",
            ),
            (
                r#"{"sym":"A","seq":"42","px":1,"bid":1,"ask":1,"size":1,"ts":1}"#,
                ErrorCode::BadTick,
                "expected",
            ),
            (r#"[1,"AAPL"]"#, ErrorCode::BadTick, "expected"),
            (r#"{"sym":"AAPL" "seq":1}"#, ErrorCode::BadJson, "column 15"),
            (
                r#"{"seq":1,"px":1,"bid":1,"ask":1,"size":1,"ts":1}"#,
                ErrorCode::BadTick,
                "no sym",
            ),
            ("42", ErrorCode::BadJson, "a JSON object"),
        ] {
            let err = refusal(text);
            assert_eq!(err.code, code, "{text}: {}", err.message);
            assert!(err.message.contains(words), "{text}: {}", err.message);
        }
        let deep = format!("[{}{}]", "[".repeat(5_000), "]".repeat(5_000));
        let err = refusal(&deep);
        assert_eq!(err.code, ErrorCode::BadJson);
        assert!(err.message.contains("32 levels deep"), "{}", err.message);
    }

    #[test]
    fn token_comparison_needs_an_exact_match() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"secret"));
    }
}
