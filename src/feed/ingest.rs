//! The ingest feed: an external publisher (`feed-sim publish`, or any
//! program speaking this protocol) sends ticks over a WebSocket at
//! `GET /ingest`, and they enter the ring exactly as the built-in
//! simulator's would, keeping the publisher's `seq` and `ts`.
//!
//! One publisher at a time holds the ring's single
//! [`Producer`](crate::ring::Producer): it is taken from the
//! [`IngestPort`] when a publisher connects and put back when it leaves,
//! so a publisher can reconnect and carry on. A publisher that connects
//! while another holds the ring takes over: the old one is closed (1000
//! `another publisher took over`) — a crashed publisher whose connection
//! was never torn down must not lock its restart out. Access needs the
//! token given with `--ingest-token`.
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
//!
//! # The connection
//!
//! [`Publisher::run`] takes the WebSocket as fastwebsockets' upgrade gives
//! it and splits it into fastwebsockets' read and write halves, both driven
//! by the one task it runs in. The publisher is a single trusted peer (it
//! holds the token): it has no frame rate limit.
//!
//! * The **reader** reads frame by frame and puts fragmented messages
//!   together itself, so a message over [`IngestLimits::max_message_bytes`]
//!   (`--max-message-bytes`, all fragments together) or in more than
//!   [`IngestLimits::max_fragments`] fragments closes the connection with
//!   1009 (`message larger than N bytes`, `message split into more than N
//!   fragments`) before it is buffered whole; a single frame over the limit
//!   is refused by fastwebsockets from its header. Protocol faults close
//!   with 1002 (`control frames carry at most 125 bytes`, `a new message
//!   started before the fragmented one ended`, `protocol error: …`),
//!   invalid UTF-8 with 1007. fastwebsockets answers the publisher's pings
//!   and echoes its close itself (`auto_pong`, `auto_close`); those answers,
//!   like the `error` replies, go to the writer through a queue of
//!   [`REPLY_QUEUE`] frames.
//! * The **writer** sends those frames one at a time, pings the publisher
//!   every [`IngestLimits::ping_interval`] (`--ping-interval`) and closes
//!   it with 1008 `no pong within N s` if it sent no frame at all since the
//!   previous ping, and sends the server's close frame once one is decided:
//!   a fault, the missing pong, a takeover (1000 `another publisher took
//!   over`) or shutdown (1001 `server shutting down`,
//!   [`IngestPort::close_publisher`]). Exactly one close frame goes out,
//!   after the frames queued before it, and nothing after it.
//!
//! After the server's close the reader reads on, ignoring messages, for up
//! to [`CLOSE_GRACE`] to see the publisher's answering close. Where it
//! cannot (fastwebsockets refused a frame from its header, leaving its
//! payload unread), the socket instead stays open, unread, for
//! [`CLOSE_GRACE`], so the publisher can read the close before it goes. The
//! ring is given back as soon as the reader stops, not when the socket
//! closes.
//!
//! Replies cannot pile up: while the queue is full the reader waits for
//! room instead of reading on, so a publisher that sends without reading
//! its replies is held back by TCP, and its replies hold at most
//! [`REPLY_QUEUE`] small frames. A write that does not complete within
//! [`IngestLimits::write_timeout`] (`--write-timeout`: the publisher reads
//! nothing) drops the connection without a close frame, which could not
//! get through either.

use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use fastwebsockets::{
    Frame, OpCode, Payload, WebSocket, WebSocketError, WebSocketRead, WebSocketWrite,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Notify};
use tokio::time::{sleep_until, timeout, Instant};

use super::external::{Intake, JsonTick};
use crate::config::{Config, MAX_FRAGMENTS};
use crate::protocol::{json, ErrorCode, ProtocolError, ServerMsg};
use crate::stats::Stats;

/// The ring's producer, with the per-symbol state that outlives one
/// publisher connection.
type Slot = Intake;

/// Limits of a publisher's connection.
#[derive(Clone, Copy, Debug)]
pub struct IngestLimits {
    /// Largest message, all fragments together, in bytes
    /// (`--max-message-bytes`); a larger one closes with 1009.
    pub max_message_bytes: u64,
    /// Most fragments in one message; more close with 1009.
    pub max_fragments: u32,
    /// How often the publisher is pinged, and dropped if it sent nothing
    /// since the last ping (`None`: never).
    pub ping_interval: Option<Duration>,
    /// How long one frame's write may take (the publisher reads nothing)
    /// before the connection is dropped.
    pub write_timeout: Duration,
}

impl IngestLimits {
    /// The limits `config`'s flags set: `--max-message-bytes`,
    /// `--ping-interval`, `--write-timeout`, and [`MAX_FRAGMENTS`].
    pub fn of(config: &Config) -> Self {
        IngestLimits {
            max_message_bytes: config.max_message_bytes,
            max_fragments: MAX_FRAGMENTS,
            ping_interval: config.pings(),
            write_timeout: config.write_timeout,
        }
    }
}

/// Frames (error replies, and fastwebsockets' pongs and close echo) that
/// may wait for the writer; past it the reader waits for room.
pub const REPLY_QUEUE: usize = 16;

/// How long the server waits, after its close frame went out, for the
/// publisher's answering close before it drops the connection; also the
/// least time it gives the writer to send what is queued once the reader
/// has ended.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Where publishers plug in. See the module docs.
#[derive(Debug)]
pub struct IngestPort {
    slot: Mutex<Option<Slot>>,
    /// The admitted publisher's line, to close it on takeover or shutdown.
    current: Mutex<Option<Arc<Line>>>,
    /// Signalled when the slot is put back.
    released: Notify,
    token: String,
    stats: Arc<Stats>,
    /// Limits of the publisher's connection.
    pub limits: IngestLimits,
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
    /// A port whose publishers feed `intake`, their connections within
    /// `limits`.
    pub fn new(intake: Intake, token: String, stats: Arc<Stats>, limits: IngestLimits) -> Self {
        IngestPort {
            slot: Mutex::new(Some(intake)),
            current: Mutex::new(None),
            released: Notify::new(),
            token,
            stats,
            limits,
        }
    }

    /// Whether `token` is the ingest token.
    pub fn is_token(&self, token: Option<&str>) -> bool {
        constant_time_eq(token.unwrap_or("").as_bytes(), self.token.as_bytes())
    }

    /// Checks `token` and takes the producer for one publisher, closing a
    /// publisher that holds it and waiting up to [`TAKEOVER_WAIT`] for it
    /// to let go.
    pub async fn admit(self: &Arc<Self>, token: Option<&str>) -> Result<Publisher, Refused> {
        if !self.is_token(token) {
            return Err(Refused::BadToken);
        }
        let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(slot) = lock(&self.slot).take() {
                // Registered now, not once the upgrade completes: a
                // takeover or shutdown before then closes it too.
                let line = Arc::new(Line::new());
                *lock(&self.current) = Some(line.clone());
                return Ok(Publisher {
                    port: self.clone(),
                    slot: Some(slot),
                    line,
                });
            }
            if let Some(old) = lock(&self.current).as_ref() {
                old.close(1000, "another publisher took over");
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return Err(Refused::Busy);
            }
        }
    }

    /// Closes the connected publisher, if any, with 1001 (shutdown).
    pub fn close_publisher(&self) {
        if let Some(current) = lock(&self.current).as_ref() {
            current.close(1001, "server shutting down");
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

/// How a publisher's connection ends; the first decision wins.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    /// The server closes it: the writer sends this close frame after what
    /// is queued.
    Close {
        /// The close code.
        code: u16,
        /// Why, in words (cut to fit the 125-byte control frame).
        reason: String,
    },
    /// The publisher closed; fastwebsockets' echo of its close is the last
    /// frame queued.
    Answered,
    /// The publisher is gone (or reads nothing): nothing more is sent.
    Gone,
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Close { code, reason } => write!(f, "closed by the server: {code} {reason}"),
            Ending::Answered => f.write_str("closed by the publisher"),
            Ending::Gone => f.write_str("connection lost"),
        }
    }
}

/// What the reader, the writer, and the port share about one publisher's
/// connection.
#[derive(Debug)]
struct Line {
    ending: OnceLock<Ending>,
    /// Wakes the writer once `ending` is set.
    ended: Notify,
    /// A frame arrived from the publisher since the last ping.
    heard: AtomicBool,
    /// The reader had to wait for room in the reply queue since the last
    /// ping (and so may not have read a pong yet).
    held_back: AtomicBool,
}

impl Line {
    fn new() -> Self {
        Line {
            ending: OnceLock::new(),
            ended: Notify::new(),
            // Connecting counts as hearing from the publisher.
            heard: AtomicBool::new(true),
            held_back: AtomicBool::new(false),
        }
    }

    /// Decides how the connection ends, unless that is decided already;
    /// returns whether this call decided it.
    fn end(&self, ending: Ending) -> bool {
        let decided = self.ending.set(ending).is_ok();
        if decided {
            self.ended.notify_one();
        }
        decided
    }

    /// Closes with `code` and `reason`, unless the end is decided already.
    fn close(&self, code: u16, reason: impl Into<String>) -> bool {
        self.end(Ending::Close {
            code,
            reason: reason.into(),
        })
    }

    fn ending(&self) -> Option<&Ending> {
        self.ending.get()
    }

    /// Whether the end is decided: nothing but a close is sent any more.
    fn is_ending(&self) -> bool {
        self.ending.get().is_some()
    }

    fn is_gone(&self) -> bool {
        self.ending.get() == Some(&Ending::Gone)
    }

    /// Returns once the end is decided (for the writer, its one waiter).
    async fn decided(&self) {
        while !self.is_ending() {
            self.ended.notified().await;
        }
    }

    /// Queues `frame` for the writer; while the queue is full, waits for
    /// room (and notes it, see `held_back`).
    async fn queue(&self, tx: &mpsc::Sender<Frame<'static>>, frame: Frame<'static>) {
        match tx.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(frame)) => {
                self.held_back.store(true, Ordering::Relaxed);
                // Fails only once the writer has ended.
                let _ = tx.send(frame).await;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// One connected publisher; gives the producer back when dropped.
#[derive(Debug)]
pub struct Publisher {
    port: Arc<IngestPort>,
    slot: Option<Slot>,
    line: Arc<Line>,
}

impl Publisher {
    /// Gives the producer back to the port (once).
    fn release(&mut self) {
        {
            let mut current = lock(&self.port.current);
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &self.line)) {
                *current = None;
            }
        }
        if let Some(slot) = self.slot.take() {
            *lock(&self.port.slot) = Some(slot);
            self.port.released.notify_waiters();
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.release();
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
    /// Serves the publisher's upgraded connection (as
    /// `fastwebsockets::upgrade::UpgradeFut` gives it) until it closes.
    /// See the module docs.
    pub async fn run<S>(mut self, mut ws: WebSocket<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let limits = self.port.limits;
        ws.set_auto_pong(true);
        ws.set_auto_close(true);
        // A single frame over the limit is refused before its payload is
        // buffered; fragments are summed by the reader.
        ws.set_max_message_size(
            usize::try_from(limits.max_message_bytes)
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        );
        // Both halves live until the end of this function, so that the
        // socket outlives the reader and the writer while it lingers.
        let (mut read, mut write) = ws.split(tokio::io::split);
        let line = self.line.clone();
        let (tx, rx) = mpsc::channel(REPLY_QUEUE);
        tracing::info!("a publisher connected to /ingest");
        let reader = async {
            let read = self.read_frames(&mut read, tx, &line).await;
            // Nothing more is published: the next publisher may have the
            // ring while this connection finishes closing.
            self.release();
            read
        };
        let writer = write_frames(&mut write, rx, &line, limits);
        tokio::pin!(reader, writer);
        tokio::select! {
            read = &mut reader => {
                // Let the writer send what is queued and the close (ours or
                // the echo of the publisher's).
                if !line.is_gone() {
                    let linger = limits.write_timeout.max(CLOSE_GRACE);
                    let sent = timeout(linger, &mut writer).await.is_ok();
                    if sent && read == Read::Stuck && !line.is_gone() {
                        // The stream cannot be read past the fault, so the
                        // publisher's answer cannot be awaited: the socket
                        // stays open a while for it to read the close.
                        tokio::time::sleep(CLOSE_GRACE).await;
                    }
                }
            }
            () = &mut writer => {
                // Our close went out: read on for the publisher's answer.
                if !line.is_gone() {
                    let _ = timeout(CLOSE_GRACE, &mut reader).await;
                }
            }
        }
        let ending = line.ending().cloned().unwrap_or(Ending::Gone);
        tracing::info!(%ending, "the publisher left /ingest");
    }

    /// Reads the publisher's frames until it closes or goes away, or until
    /// a fault leaves the stream unreadable ([`Read::Stuck`]), and records
    /// how the connection ends in `line`. Text messages are published;
    /// replies, pongs and the close echo go to `tx`. After a fault that
    /// leaves the stream at a frame boundary (and once the server's close
    /// is decided), the reader reads on, ignoring messages, to reach the
    /// publisher's answering close.
    async fn read_frames<R>(
        &mut self,
        ws: &mut WebSocketRead<R>,
        tx: mpsc::Sender<Frame<'static>>,
        line: &Line,
    ) -> Read
    where
        R: AsyncRead + Unpin,
    {
        let limits = self.port.limits;
        let tx = &tx;
        // What fastwebsockets must send: a pong, or the close's echo.
        let mut obligated = move |frame: Frame<'static>| {
            // A ping answers the server's pings as well as any frame.
            line.heard.store(true, Ordering::Relaxed);
            let frame = if frame.opcode == OpCode::Close && frame.payload.len() > 125 {
                // Too long to echo (the reader refuses it right after).
                Frame::close(1002, CONTROL_TOO_LARGE.as_bytes())
            } else {
                frame
            };
            async move {
                // Once the end is decided, only the writer's close goes out.
                if !line.is_ending() {
                    line.queue(tx, frame).await;
                }
                Ok::<(), Infallible>(())
            }
        };
        // The fragmented message being put together: its opcode and
        // fragment count, and its payload so far.
        let mut partial: Option<(OpCode, u32)> = None;
        let mut message = Vec::new();
        let (ending, read) = loop {
            let frame = match ws.read_frame(&mut obligated).await {
                Ok(frame) => frame,
                Err(err) => match fault(err, &limits) {
                    (ending, Read::InStep) => {
                        line.end(ending);
                        continue;
                    }
                    stop => break stop,
                },
            };
            line.heard.store(true, Ordering::Relaxed);
            if frame.opcode == OpCode::Close {
                if frame.payload.len() > 125 {
                    break (protocol(1002, CONTROL_TOO_LARGE), Read::Ended);
                }
                break (Ending::Answered, Read::Ended);
            }
            // Once the end is decided, frames are only read to reach the
            // publisher's answering close.
            if line.is_ending() {
                partial = None;
                message = Vec::new();
                continue;
            }
            let refused = match frame.opcode {
                OpCode::Text | OpCode::Binary if partial.is_some() => Some(protocol(
                    1002,
                    "a new message started before the fragmented one ended",
                )),
                OpCode::Text | OpCode::Binary if frame.fin => {
                    self.message(frame.opcode, &frame.payload, tx, line).await;
                    None
                }
                OpCode::Text | OpCode::Binary => {
                    message.clear();
                    message.extend_from_slice(&frame.payload);
                    partial = Some((frame.opcode, 1));
                    None
                }
                OpCode::Continuation => match &mut partial {
                    None => Some(protocol(
                        1002,
                        "protocol error: a continuation frame with no message to continue",
                    )),
                    Some((_, fragments)) if *fragments >= limits.max_fragments => Some(protocol(
                        1009,
                        format!(
                            "message split into more than {} fragments",
                            limits.max_fragments
                        ),
                    )),
                    Some(_)
                        if (message.len() + frame.payload.len()) as u64
                            > limits.max_message_bytes =>
                    {
                        Some(too_large(&limits))
                    }
                    Some((opcode, fragments)) => {
                        *fragments += 1;
                        message.extend_from_slice(&frame.payload);
                        if frame.fin {
                            let opcode = *opcode;
                            partial = None;
                            if opcode == OpCode::Text && std::str::from_utf8(&message).is_err() {
                                Some(protocol(1007, INVALID_UTF8))
                            } else {
                                let whole = std::mem::take(&mut message);
                                self.message(opcode, &whole, tx, line).await;
                                // The buffer (at most the size limit) serves
                                // the next fragmented message.
                                message = whole;
                                None
                            }
                        } else {
                            None
                        }
                    }
                },
                OpCode::Pong if frame.payload.len() > 125 => {
                    Some(protocol(1002, CONTROL_TOO_LARGE))
                }
                // Pongs need nothing more; pings are answered by
                // fastwebsockets and never get here.
                _ => None,
            };
            // The frame was read whole: the stream is still in step, and
            // the reader reads on for the publisher's answer.
            if let Some(ending) = refused {
                line.end(ending);
            }
        };
        line.end(ending);
        read
    }

    /// Handles one complete message: a text one is published, a binary one
    /// refused; a refusal is replied (and counted).
    async fn message(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        tx: &mpsc::Sender<Frame<'static>>,
        line: &Line,
    ) {
        let refused = match opcode {
            OpCode::Text => self.handle(payload),
            _ => Some(ProtocolError::new(
                ErrorCode::BinaryNotSupported,
                "binary frames are not supported; send JSON as text frames",
            )),
        };
        if let Some(err) = refused {
            self.port.stats.count_error(err.code);
            let reply = ServerMsg::Error {
                code: err.code.as_str(),
                message: &err.message,
            };
            let payload = serde_json::to_vec(&reply).expect("serializing to memory cannot fail");
            line.queue(tx, Frame::text(Payload::Owned(payload))).await;
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

    /// Publishes one text message's ticks; returns the refusal to reply,
    /// if any.
    fn handle(&mut self, payload: &[u8]) -> Option<ProtocolError> {
        let ticks = match parse_ticks(payload) {
            Ok(ticks) => ticks,
            Err(err) => {
                Stats::add(&self.port.stats.feed_bad_ticks, 1);
                return Some(err);
            }
        };
        let (err, count) = self.publish(&ticks)?;
        let message = if count > 1 {
            format!(
                "{} ({} more refused in this message)",
                err.message,
                count - 1
            )
        } else {
            err.message
        };
        Some(ProtocolError::new(err.code, message))
    }
}

const CONTROL_TOO_LARGE: &str = "control frames carry at most 125 bytes";
const INVALID_UTF8: &str = "invalid UTF-8 in a text message";

/// The server closes with `code` and `reason`.
fn protocol(code: u16, reason: impl Into<String>) -> Ending {
    Ending::Close {
        code,
        reason: reason.into(),
    }
}

/// A message over the size limit: 1009.
fn too_large(limits: &IngestLimits) -> Ending {
    protocol(
        1009,
        format!("message larger than {} bytes", limits.max_message_bytes),
    )
}

/// Where reading stands after a frame or a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    /// Nothing more to read: the publisher closed, or went away.
    Ended,
    /// A whole frame was read and refused: the stream is still in step.
    InStep,
    /// Inside a frame fastwebsockets refused from its header: nothing more
    /// can be read.
    Stuck,
}

/// How a read error ends the connection, and whether frames can still be
/// read after it (fastwebsockets consumed the whole offending frame).
fn fault(err: WebSocketError, limits: &IngestLimits) -> (Ending, Read) {
    let ending = match err {
        WebSocketError::IoError(_)
        | WebSocketError::UnexpectedEOF
        | WebSocketError::ConnectionClosed
        | WebSocketError::SendError(_) => return (Ending::Gone, Read::Ended),
        // A whole text frame, or a close frame, was read and refused.
        WebSocketError::InvalidUTF8 => return (protocol(1007, INVALID_UTF8), Read::InStep),
        WebSocketError::InvalidCloseFrame | WebSocketError::InvalidCloseCode => {
            return (
                protocol(1002, format!("protocol error: {err}")),
                Read::InStep,
            )
        }
        // Refused from its header: the payload is left unread.
        WebSocketError::FrameTooLarge => too_large(limits),
        WebSocketError::PingFrameTooLarge => protocol(1002, CONTROL_TOO_LARGE),
        other => protocol(1002, format!("protocol error: {other}")),
    };
    (ending, Read::Stuck)
}

/// Sends the frames `rx` brings, the pings, and the server's close frame,
/// one at a time, until a close frame (the server's, or the echo of the
/// publisher's) went out or the connection is gone. See the module docs.
async fn write_frames<W>(
    ws: &mut WebSocketWrite<W>,
    mut rx: mpsc::Receiver<Frame<'static>>,
    line: &Line,
    limits: IngestLimits,
) where
    W: AsyncWrite + Unpin,
{
    let mut next_ping = limits.ping_interval.map(|every| Instant::now() + every);
    loop {
        if line.is_gone() {
            return;
        }
        let frame = tokio::select! {
            // What was queued goes out before the close.
            biased;
            queued = rx.recv() => match queued {
                Some(frame) => frame,
                // The reader has ended, having decided the end.
                None => match close_frame(line) {
                    Some(frame) => frame,
                    None => return,
                },
            },
            () = line.decided() => match close_frame(line) {
                Some(frame) => frame,
                // The publisher closed (its echo went out first) or is gone.
                None => return,
            },
            () = sleep_until(next_ping.unwrap_or_else(Instant::now)), if next_ping.is_some() => {
                let every = limits.ping_interval.expect("pings have an interval");
                next_ping = Some(Instant::now() + every);
                let held_back = line.held_back.swap(false, Ordering::Relaxed);
                // A reader held back by unread replies may not have read
                // the pong yet; the write timeout covers a publisher that
                // reads nothing.
                if !line.heard.swap(false, Ordering::Relaxed) && !held_back {
                    line.close(
                        1008,
                        format!("no pong within {} s", every.as_secs_f64()),
                    );
                    continue;
                }
                Frame::new(true, OpCode::Ping, None, Payload::Borrowed(&[]))
            },
        };
        let closing = frame.opcode == OpCode::Close;
        let wrote = timeout(limits.write_timeout, async {
            ws.write_frame(frame).await?;
            ws.flush().await
        })
        .await;
        match wrote {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::debug!(%err, "write to the publisher failed; it is gone");
                line.end(Ending::Gone);
                return;
            }
            Err(_) => {
                tracing::warn!(
                    timeout = ?limits.write_timeout,
                    "the publisher read nothing for the write timeout; dropping its connection"
                );
                line.end(Ending::Gone);
                return;
            }
        }
        if closing {
            return;
        }
    }
}

/// The server's close frame, if the server decided the end.
fn close_frame(line: &Line) -> Option<Frame<'static>> {
    match line.ending()? {
        Ending::Close { code, reason } => {
            let reason = crate::protocol::truncate(reason, 123);
            Some(Frame::close(*code, reason.as_bytes()))
        }
        Ending::Answered | Ending::Gone => None,
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

    /// The connection tests: a publisher speaking fastwebsockets' client
    /// role over an in-memory pipe.
    mod connection {
        use super::*;
        use crate::symbol::Symbols;
        use crate::tick::Tick;
        use fastwebsockets::Role;
        use tokio::io::DuplexStream;
        use tokio::task::JoinHandle;

        type Client = WebSocket<DuplexStream>;

        const LIMITS: IngestLimits = IngestLimits {
            max_message_bytes: 1024,
            max_fragments: 8,
            ping_interval: None,
            write_timeout: Duration::from_secs(5),
        };

        const WAIT: Duration = Duration::from_secs(10);

        fn port(limits: IngestLimits) -> Arc<IngestPort> {
            let stats = Arc::new(Stats::default());
            let intake = Intake::new(
                crate::ring::channel::<Tick>(64),
                Arc::new(Symbols::learned(10)),
                stats.clone(),
                crate::feed::Wake::nobody(),
            );
            Arc::new(IngestPort::new(intake, "t".into(), stats, limits))
        }

        /// Admits a publisher and serves it over a pipe of `buffer` bytes.
        async fn connect(port: &Arc<IngestPort>, buffer: usize) -> (Client, JoinHandle<()>) {
            let publisher = port.admit(Some("t")).await.expect("admitted");
            let (client, server) = tokio::io::duplex(buffer);
            let task =
                tokio::spawn(publisher.run(WebSocket::after_handshake(server, Role::Server)));
            (WebSocket::after_handshake(client, Role::Client), task)
        }

        async fn send(ws: &mut Client, fin: bool, opcode: OpCode, payload: &[u8]) {
            let frame = Frame::new(fin, opcode, None, Payload::Owned(payload.to_vec()));
            ws.write_frame(frame).await.expect("sent");
        }

        /// The next frame that is not a ping, as (opcode, payload).
        async fn next(ws: &mut Client) -> (OpCode, Vec<u8>) {
            timeout(WAIT, async {
                loop {
                    let frame = ws.read_frame().await.expect("a frame");
                    if frame.opcode != OpCode::Ping {
                        return (frame.opcode, frame.payload.to_vec());
                    }
                }
            })
            .await
            .expect("a frame in time")
        }

        async fn error_code(ws: &mut Client) -> String {
            let (opcode, payload) = next(ws).await;
            assert_eq!(opcode, OpCode::Text);
            let reply: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            assert_eq!(reply["type"], "error", "{reply}");
            reply["code"].as_str().unwrap().to_string()
        }

        async fn close_of(ws: &mut Client) -> (u16, String) {
            let (opcode, payload) = next(ws).await;
            assert_eq!(
                opcode,
                OpCode::Close,
                "{:?}",
                String::from_utf8_lossy(&payload)
            );
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            (code, String::from_utf8(payload[2..].to_vec()).unwrap())
        }

        async fn ended(task: JoinHandle<()>) {
            timeout(WAIT, task).await.expect("ended in time").unwrap();
        }

        #[tokio::test]
        async fn messages_are_published_and_refusals_pings_and_closes_answered() {
            let port = port(LIMITS);
            let (mut ws, task) = connect(&port, 64 * 1024).await;
            send(&mut ws, true, OpCode::Text, b"{nope").await;
            assert_eq!(error_code(&mut ws).await, "bad_json");
            send(&mut ws, true, OpCode::Binary, b"\x01").await;
            assert_eq!(error_code(&mut ws).await, "binary_not_supported");
            send(&mut ws, true, OpCode::Ping, b"hi").await;
            assert_eq!(next(&mut ws).await, (OpCode::Pong, b"hi".to_vec()));
            // A tick in three fragments is put together and published; a
            // replayed one in two is refused in words.
            let tick = br#"{"sym":"AAPL","seq":1,"px":1.5,"bid":1.4,"ask":1.6,"size":1,"ts":2}"#;
            for _ in 0..2 {
                send(&mut ws, false, OpCode::Text, &tick[..10]).await;
                send(&mut ws, false, OpCode::Continuation, &tick[10..30]).await;
                send(&mut ws, true, OpCode::Continuation, &tick[30..]).await;
            }
            assert_eq!(error_code(&mut ws).await, "bad_tick");
            assert_eq!(Stats::get(&port.stats.ticks_ingested), 1);
            assert_eq!(
                port.stats.errors[ErrorCode::BadTick as usize].load(Ordering::Relaxed),
                1
            );
            ws.write_frame(Frame::close(1000, b"bye")).await.unwrap();
            assert_eq!(close_of(&mut ws).await, (1000, "bye".into()));
            ended(task).await;
            // The ring is back for the next publisher.
            assert!(lock(&port.slot).is_some());
            assert!(lock(&port.current).is_none());
        }

        #[tokio::test]
        async fn a_message_over_the_limit_closes_with_1009() {
            let cases: [&[(bool, OpCode, usize)]; 3] = [
                &[(true, OpCode::Text, 1025)],
                &[
                    (false, OpCode::Text, 600),
                    (true, OpCode::Continuation, 600),
                ],
                &[(false, OpCode::Text, 1); 9],
            ];
            for (case, frames) in cases.into_iter().enumerate() {
                let port = port(LIMITS);
                let (mut ws, task) = connect(&port, 64 * 1024).await;
                for (n, &(fin, opcode, len)) in frames.iter().enumerate() {
                    let opcode = if n > 0 { OpCode::Continuation } else { opcode };
                    send(&mut ws, fin, opcode, &vec![b' '; len]).await;
                }
                let (code, reason) = close_of(&mut ws).await;
                assert_eq!(code, 1009, "case {case}: {reason}");
                let expected = if case == 2 {
                    "message split into more than 8 fragments"
                } else {
                    "message larger than 1024 bytes"
                };
                assert_eq!(reason, expected);
                if case == 0 {
                    // fastwebsockets refused the frame from its header, so
                    // the stream cannot be read on: the connection lingers
                    // (for the publisher to read the close) with the ring
                    // already given back.
                    timeout(WAIT, async {
                        while lock(&port.slot).is_none() {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    })
                    .await
                    .expect("the ring is given back");
                    assert!(!task.is_finished());
                    task.abort();
                } else {
                    ended(task).await;
                }
            }
            // At the limit is fine: all fragments together.
            let (mut ws, task) = connect(&port(LIMITS), 64 * 1024).await;
            send(&mut ws, false, OpCode::Text, &[b' '; 512]).await;
            send(&mut ws, true, OpCode::Continuation, &[b' '; 512]).await;
            assert_eq!(error_code(&mut ws).await, "bad_json");
            // So are protocol faults, each with its code.
            send(&mut ws, true, OpCode::Continuation, b"x").await;
            assert_eq!(close_of(&mut ws).await.0, 1002);
            ended(task).await;
        }

        #[tokio::test]
        async fn a_publisher_silent_since_the_last_ping_is_closed_with_1008() {
            let limits = IngestLimits {
                ping_interval: Some(Duration::from_millis(100)),
                ..LIMITS
            };
            // One that answers (fastwebsockets' client pongs as it reads)
            // stays connected.
            let (mut ws, task) = connect(&port(limits), 64 * 1024).await;
            let quiet = timeout(Duration::from_millis(400), ws.read_frame()).await;
            assert!(quiet.is_err(), "only pings, answered");
            drop(ws);
            ended(task).await;

            let (mut ws, task) = connect(&port(limits), 64 * 1024).await;
            ws.set_auto_pong(false);
            {
                let frame = timeout(WAIT, ws.read_frame()).await.unwrap().unwrap();
                assert_eq!(frame.opcode, OpCode::Ping);
            }
            assert_eq!(
                close_of(&mut ws).await,
                (1008, "no pong within 0.1 s".into())
            );
            ended(task).await;
        }

        #[tokio::test]
        async fn a_publisher_that_never_reads_its_replies_is_held_back_then_dropped() {
            let limits = IngestLimits {
                write_timeout: Duration::from_millis(300),
                ..LIMITS
            };
            let port = port(limits);
            let (mut ws, task) = connect(&port, 512).await;
            let sent = timeout(WAIT, async {
                let mut sent = 0u64;
                // Each message earns a `bad_json` reply it never reads.
                while ws
                    .write_frame(Frame::text(Payload::Borrowed(b"42")))
                    .await
                    .is_ok()
                {
                    sent += 1;
                }
                sent
            })
            .await
            .expect("the server drops the connection");
            ended(task).await;
            // The server stopped reading once its replies backed up: it
            // answered at most the queue, the pipe and the frame in hand.
            let replied = port.stats.errors[ErrorCode::BadJson as usize].load(Ordering::Relaxed);
            assert!(
                replied <= REPLY_QUEUE as u64 + 64,
                "{replied} replies to {sent} messages"
            );
            assert!(lock(&port.slot).is_some());
        }

        #[tokio::test]
        async fn takeover_and_shutdown_close_the_publisher() {
            let port = port(LIMITS);
            let (mut first, first_task) = connect(&port, 64 * 1024).await;
            let second = tokio::spawn({
                let port = port.clone();
                async move { connect(&port, 64 * 1024).await }
            });
            // Reading answers the close, which lets the ring go.
            assert_eq!(
                close_of(&mut first).await,
                (1000, "another publisher took over".into())
            );
            ended(first_task).await;
            let (mut second, second_task) = timeout(WAIT, second).await.unwrap().unwrap();
            port.close_publisher();
            assert_eq!(
                close_of(&mut second).await,
                (1001, "server shutting down".into())
            );
            ended(second_task).await;

            // Shutdown between admission and the upgrade's completion
            // closes the publisher as soon as it runs.
            let publisher = port.admit(Some("t")).await.unwrap();
            port.close_publisher();
            let (client, server) = tokio::io::duplex(1024);
            let task =
                tokio::spawn(publisher.run(WebSocket::after_handshake(server, Role::Server)));
            let mut ws = WebSocket::after_handshake(client, Role::Client);
            assert_eq!(
                close_of(&mut ws).await,
                (1001, "server shutting down".into())
            );
            ended(task).await;
        }
    }
}
