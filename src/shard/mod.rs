//! Connection shards: one event loop per core, each owning its sockets
//! outright.
//!
//! A shard is an OS thread running one `mio` loop. The HTTP edge hands it a
//! connection after the WebSocket handshake ([`Handoff`]) and the
//! connection stays there until it ends. Each pass of the loop:
//!
//! 1. reads the ring with the shard's own cursor and fans each tick out to
//!    the shard's own subscribers (`fanout`: encoded once per shard);
//! 2. serves the throttled lanes, the ping clock, token expiry and the
//!    deadlines of stuck or closing connections;
//! 3. reads every readable socket into the shard's one scratch buffer
//!    ([`SCRATCH_BYTES`]), and hands the bytes to the connection's frame
//!    reader (`wire::reader`) and its session (`session`), which answers
//!    requests at once, subscriptions included, on this thread, against
//!    every tick published before the pass began;
//! 4. writes every connection that has pending frames, all of them in as
//!    few system calls as it can, usually one
//!    ([`connection::Connection::write`]); a socket that would block
//!    waits for writability while backpressure works as the outbox says.
//!    It writes them in key order, the same every pass, and every
//!    [`WRITES_PER_RING_LOOK`] sockets it fans out what the feed published
//!    meanwhile, so the sockets still to be written in this pass carry it
//!    too.
//!
//! A connection costs a slab entry and its outbox while idle: no task, no
//! buffer. Between threads there is only the handoff channel (and
//! `/symbols` and shutdown, on the same channel): the tick path crosses
//! none. A panic while serving one connection closes it with 1011 and the
//! shard carries on.

pub mod connection;
pub mod transport;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use tokio::sync::oneshot;

use crate::auth::Grant;
use crate::error::panic_message;
use crate::fanout::outbox::Outbox;
use crate::fanout::{Fanout, Key, Outboxes, Pass};
use crate::limits::Slot;
use crate::ring::Cursor;
use crate::session::{ConnId, Mode, Session, SessionContext, CLOSE_GRACE, ECHO_LIMITS};
use crate::stats::Stats;
use crate::symbol::Symbols;
use crate::tick::Tick;
use crate::wire::close;
use crate::wire::frame::close_frame;
use crate::wire::reader::{Fed, FrameReader};
use connection::{Connection, Wrote};
use transport::Transport;

/// The one scratch buffer of a shard: every socket is read into it (only
/// an incomplete frame's bytes are kept per connection), and small frames
/// are gathered in it for each write.
pub const SCRATCH_BYTES: usize = 64 * 1024;

/// How often a shard looks at connections with a deadline (stuck writes,
/// closes waiting for the peer's answer), at most.
const SWEEP: Duration = Duration::from_millis(50);

/// Sockets a pass writes between two looks at the ring. A pass writing
/// 1,000 of them takes milliseconds, and ticks published meanwhile would
/// otherwise wait for the next pass even for the sockets written last; a
/// look at an empty ring costs a load and a clock read. (Measured in
/// docs/BENCHMARKS.md, "Every pass looks at the ring, and writes its
/// sockets in the same order".)
const WRITES_PER_RING_LOOK: usize = 64;

/// The waker's token; connections use their slab key.
const WAKER: Token = Token(usize::MAX);

/// A connection the edge hands to a shard after its handshake.
pub struct Handoff {
    /// The upgraded socket.
    pub transport: Transport,
    /// Bytes the client sent right after its handshake, which the edge
    /// had already read: a copy of their own, not a slice of hyper's read
    /// buffer, which would stay allocated as long as the connection waits
    /// for its shard (a connect burst at load: docs/BENCHMARKS.md).
    pub early: Vec<u8>,
    /// For logs.
    pub conn: ConnId,
    /// `/ws` or the echo route.
    pub mode: Mode,
    /// What the client's token allows.
    pub grant: Arc<Grant>,
    /// Its place under the connection limits.
    pub slot: Slot,
}

/// What other threads ask of a shard.
enum Control {
    Connection(Box<Handoff>),
    Quotes(oneshot::Sender<Vec<Option<Tick>>>),
    Shutdown,
}

/// How long shutdown lets connections finish closing.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// One shard as the rest of the server sees it.
struct Handle {
    control: mpsc::Sender<Control>,
    waker: Arc<Waker>,
    /// Connections open on it.
    load: Arc<AtomicUsize>,
    /// Its thread has stopped taking connections (it ended).
    gone: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Handle {
    /// Sends `control` and wakes the shard; hands `control` back if the
    /// shard has ended.
    fn send(&self, control: Control) -> Result<(), Control> {
        self.control.send(control).map_err(|unsent| unsent.0)?;
        // Fails only if the poll is gone, and then the thread too: what was
        // sent is dropped with the channel.
        let _ = self.waker.wake();
        Ok(())
    }
}

/// Every shard of the server: where the edge hands connections to.
pub struct Shards {
    shards: Vec<Handle>,
    stopped: AtomicBool,
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shards")
            .field("count", &self.shards.len())
            .finish_non_exhaustive()
    }
}

/// A shard made but not yet running: its poll and waker exist, so a feed
/// can be given the wakers before any thread starts.
pub struct Prepared {
    poll: Poll,
    waker: Arc<Waker>,
}

impl Prepared {
    /// `count` shards' polls and wakers.
    pub fn many(count: usize) -> io::Result<Vec<Prepared>> {
        (0..count)
            .map(|_| {
                let poll = Poll::new()?;
                let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
                Ok(Prepared { poll, waker })
            })
            .collect()
    }

    /// Wakes this shard (a feed calls this after publishing).
    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }
}

impl Shards {
    /// Starts one thread per prepared shard, each reading the ring from
    /// its own copy of `cursor`.
    pub fn start(
        prepared: Vec<Prepared>,
        cursor: &Cursor<Tick>,
        symbols: &Arc<Symbols>,
        history_depth: usize,
        ctx: &Arc<SessionContext>,
    ) -> io::Result<Shards> {
        let mut shards = Vec::with_capacity(prepared.len());
        for (index, Prepared { poll, waker }) in prepared.into_iter().enumerate() {
            let (control, receiver) = mpsc::channel();
            let load = Arc::new(AtomicUsize::new(0));
            let shard = Shard {
                index,
                poll,
                control: receiver,
                cursor: cursor.clone(),
                // The first shard reports the ring's own counters (every
                // shard reads every tick).
                fanout: Fanout::new(symbols.clone(), history_depth, ctx.stats.clone())
                    .reporting_ring(index == 0),
                outboxes: Outboxes::new(ctx.outbox_limits, ctx.stats.clone()),
                conns: Slab::new(),
                scratch: vec![0; SCRATCH_BYTES].into_boxed_slice(),
                ctx: ctx.clone(),
                pushed: Vec::new(),
                to_read: Vec::new(),
                timed: Vec::new(),
                expiries: BinaryHeap::new(),
                next_ping: ctx.ping_interval.map(|interval| Instant::now() + interval),
                shutdown_by: None,
                load: load.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("tickcast-shard-{index}"))
                .spawn(move || shard.run())?;
            shards.push(Handle {
                control,
                waker,
                load,
                gone: AtomicBool::new(false),
                thread: Mutex::new(Some(thread)),
            });
        }
        let loads = shards.iter().map(|shard| shard.load.clone()).collect();
        let _ = ctx.stats.shard_connections.set(loads);
        Ok(Shards {
            shards,
            stopped: AtomicBool::new(false),
        })
    }

    /// How many shards serve connections.
    pub fn count(&self) -> usize {
        self.shards.len()
    }

    /// Hands `handoff` to the running shard with the fewest connections
    /// (the counts are read without a lock, so concurrent handoffs may
    /// pick the same one: the balance is approximate). During shutdown's
    /// grace period the connection is closed with 1001 at once; once every
    /// shard has ended it is dropped.
    pub fn hand_off(&self, handoff: Handoff) {
        let mut control = Control::Connection(Box::new(handoff));
        while let Some(least) = self
            .shards
            .iter()
            .filter(|shard| !shard.gone.load(Ordering::Relaxed))
            .min_by_key(|shard| shard.load.load(Ordering::Relaxed))
        {
            least.load.fetch_add(1, Ordering::Relaxed);
            match least.send(control) {
                Ok(()) => return,
                Err(unsent) => {
                    least.load.fetch_sub(1, Ordering::Relaxed);
                    least.gone.store(true, Ordering::Relaxed);
                    control = unsent;
                }
            }
        }
        tracing::warn!("no connection shard is running; dropped a connection");
    }

    /// The last tick of every symbol, in symbol order, as the first shard
    /// has fanned them out; `None` once the shards have stopped.
    pub async fn quotes(&self) -> Option<Vec<Option<Tick>>> {
        let (reply, answer) = oneshot::channel();
        self.shards[0].send(Control::Quotes(reply)).ok()?;
        answer.await.ok()
    }

    /// Closes every connection with 1001 and stops the shards once they
    /// have closed (at most [`SHUTDOWN_GRACE`]); returns when every shard
    /// thread has ended.
    pub fn shutdown(&self) {
        if self.stopped.swap(true, Ordering::Relaxed) {
            return;
        }
        for shard in &self.shards {
            let _ = shard.send(Control::Shutdown);
        }
        for shard in &self.shards {
            let thread = shard
                .thread
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            if let Some(thread) = thread {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One shard's loop and everything it owns. See the module docs.
struct Shard {
    index: usize,
    poll: Poll,
    control: mpsc::Receiver<Control>,
    cursor: Cursor<Tick>,
    fanout: Fanout,
    /// Every connection's outbox, under the connection's key.
    outboxes: Outboxes,
    conns: Slab<Connection>,
    scratch: Box<[u8]>,
    ctx: Arc<SessionContext>,
    /// Keys pushed to in this pass (reused buffer).
    pushed: Vec<Key>,
    /// Keys whose reading resumes (their replies drained).
    to_read: Vec<Key>,
    /// Keys with a deadline, swept every [`SWEEP`].
    timed: Vec<(Key, ConnId)>,
    /// Token expiries: when, which key, which connection.
    expiries: BinaryHeap<Reverse<(SystemTime, Key, ConnId)>>,
    next_ping: Option<Instant>,
    /// Set at shutdown: when the shard stops at the latest.
    shutdown_by: Option<Instant>,
    load: Arc<AtomicUsize>,
}

impl Shard {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut ring = Pass::Drained;
        let mut next_sweep = Instant::now() + SWEEP;
        loop {
            let now = Instant::now();
            let busy = ring == Pass::Full || !self.to_read.is_empty() || self.outboxes.has_pushed();
            let timeout = if busy {
                Some(Duration::ZERO)
            } else {
                self.next_deadline(next_sweep)
                    .map(|at| at.saturating_duration_since(now))
            };
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(shard = self.index, %err, "a shard's event loop failed");
                    break;
                }
            }
            let now = Instant::now();
            // The ring first: a request read below is answered against
            // every tick published before this pass began.
            let sweep = now >= next_sweep;
            if sweep {
                next_sweep = now + SWEEP;
            }
            ring = self.serve_clocks(now, sweep);
            for event in events.iter() {
                match event.token() {
                    WAKER => self.take_controls(now),
                    Token(key) => {
                        if event.is_writable() {
                            if let Some(conn) = self.conns.get_mut(key) {
                                conn.blocked = false;
                            }
                            // Listed to be written below.
                            let _ = self.outboxes.get_mut(key);
                        }
                        let ended = event.is_read_closed() || event.is_error();
                        if let Some(conn) = self.conns.get_mut(key) {
                            if ended && conn.session.done_reading() {
                                // Not read any more, but its end is seen
                                // (EPOLLRDHUP) without reading what is
                                // left: the connection can go.
                                conn.eof = true;
                                let _ = self.outboxes.get_mut(key);
                            }
                        }
                        if event.is_readable() || ended {
                            self.isolated(key, now, Self::read);
                        }
                        if let Some(conn) = self.conns.get(key) {
                            if conn.transport.has_unsent() {
                                // Reading TLS queued records (an alert, a
                                // key update): they go out with the writes.
                                let _ = self.outboxes.get_mut(key);
                            }
                        }
                    }
                }
            }
            for key in std::mem::take(&mut self.to_read) {
                self.isolated(key, now, Self::resume_reading);
            }
            if self.write_pushed(now) == Pass::Full {
                ring = Pass::Full;
            }
            if let Some(by) = self.shutdown_by {
                if self.conns.is_empty() || now >= by {
                    break;
                }
            }
        }
        if !self.conns.is_empty() {
            tracing::warn!(
                shard = self.index,
                open = self.conns.len(),
                "some connections did not close within the shutdown grace period"
            );
        }
        let keys: Vec<Key> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.finish(key);
        }
    }

    /// The shard-wide part of a pass: the ring, the throttled lanes, the
    /// ping clock and (with `sweep`) the deadlines. Each is caught on its
    /// own: a panic in one (a bug) is logged and counted, and the shard
    /// goes on serving, the other clocks included; its clients may have
    /// missed what that step would have sent them, as the log says.
    fn serve_clocks(&mut self, now: Instant, sweep: bool) -> Pass {
        let ring = self.drain_ring();
        self.caught("the throttled lanes", |shard| {
            shard.fanout.flush_throttled(now, &mut shard.outboxes);
        });
        if self.next_ping.is_some_and(|due| due <= now) {
            self.caught("the ping clock", |shard| shard.ping_all(now));
        }
        if sweep {
            self.caught("the deadlines", |shard| shard.sweep(now));
        }
        ring
    }

    /// Fans out what the ring holds now to this shard's subscribers.
    fn drain_ring(&mut self) -> Pass {
        let ring = self
            .caught("the fan-out", |shard| {
                shard.fanout.drain(&mut shard.cursor, &mut shard.outboxes)
            })
            .unwrap_or(Pass::Drained);
        // The drain ends its pass, unless it panicked part way.
        self.outboxes.seal_pass();
        ring
    }

    /// Runs `step`, one of the shard-wide steps of a pass; a panic in it is
    /// logged and counted, and `None` returned.
    fn caught<T>(&mut self, what: &str, step: impl FnOnce(&mut Self) -> T) -> Option<T> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| step(self))) {
            Ok(done) => Some(done),
            Err(_) => {
                Stats::add(&self.ctx.stats.connection_panics, 1);
                tracing::error!(
                    shard = self.index,
                    "a panic in {what} of a shard; the shard carries on, but its clients may \
                     have missed ticks. This is a bug: please report it with this log line"
                );
                None
            }
        }
    }

    /// The soonest thing the loop must do without an event.
    fn next_deadline(&self, next_sweep: Instant) -> Option<Instant> {
        let sweep = (!self.timed.is_empty() || self.shutdown_by.is_some()).then_some(next_sweep);
        // A token's expiry, converted from the wall clock (checked again
        // against it when due).
        let expiry = self.expiries.peek().map(|Reverse((at, _, _))| {
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            (Instant::now() + left).max(next_sweep)
        });
        [self.fanout.next_flush(), self.next_ping, sweep, expiry]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs `work` on connection `key`; a panic in it (a bug) costs only
    /// that connection: it is logged and counted, the connection gets a
    /// best-effort 1011 close frame and is dropped at once, and nothing of
    /// it runs again (a bug that panics once would panic every pass).
    fn isolated(&mut self, key: Key, now: Instant, work: impl FnOnce(&mut Self, Key, Instant)) {
        let done = std::panic::catch_unwind(AssertUnwindSafe(|| work(self, key, now)));
        if let Err(panic) = done {
            let message = panic_message(&*panic);
            tracing::error!(
                panic = message,
                shard = self.index,
                "a panic ended one connection; the server carries on, other clients are \
                 unaffected. This is a bug: please report it with this log line"
            );
            Stats::add(&self.ctx.stats.connection_panics, 1);
            if self.scratch.is_empty() {
                // The panic came while the scratch buffer was lent to the
                // connection's feed: the shard's other sockets need it back.
                self.scratch = vec![0; SCRATCH_BYTES].into_boxed_slice();
            }
            if let Some(conn) = self.conns.get_mut(key) {
                conn.send_close_now(&close_frame(close::INTERNAL_ERROR, "internal error"));
            }
            if let Some(outbox) = self.outboxes.get_for_writing(key) {
                outbox.abort();
            }
            let finished = std::panic::catch_unwind(AssertUnwindSafe(|| self.finish(key)));
            if finished.is_err() {
                tracing::error!(
                    shard = self.index,
                    "ending a connection after a panic panicked too"
                );
            }
        }
    }

    fn take_controls(&mut self, now: Instant) {
        while let Ok(control) = self.control.try_recv() {
            match control {
                Control::Connection(handoff) => self.admit(*handoff, now),
                Control::Quotes(reply) => {
                    let _ = reply.send(self.fanout.quotes());
                }
                Control::Shutdown => {
                    self.shutdown_by = Some(now + SHUTDOWN_GRACE);
                    let keys: Vec<Key> = self.conns.iter().map(|(key, _)| key).collect();
                    for key in keys {
                        self.outboxes
                            .close(key, close::GOING_AWAY, "server shutting down");
                    }
                }
            }
        }
    }

    /// Takes a connection from the edge: registers its socket, reads what
    /// the client sent already.
    fn admit(&mut self, handoff: Handoff, now: Instant) {
        let Handoff {
            mut transport,
            mut early,
            conn,
            mode,
            grant,
            slot,
        } = handoff;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(err) = self.poll.registry().register(
            transport.socket(),
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(conn, %err, "could not register a connection with its shard");
            self.load.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let session = Session::new(conn, mode, grant, &self.ctx, now);
        if let Some(at) = session.expires_at() {
            self.expiries.push(Reverse((at, key, conn)));
        }
        entry.insert(Connection::new(
            transport,
            FrameReader::new(),
            session,
            slot,
        ));
        self.outboxes.insert(key, Outbox::new());
        if self.shutdown_by.is_some() {
            self.outboxes
                .close(key, close::GOING_AWAY, "server shutting down");
        }
        let stats = &self.ctx.stats;
        stats.sessions_open.fetch_add(1, Ordering::Relaxed);
        Stats::add(&stats.sessions_total, 1);
        if !early.is_empty() {
            self.isolated(key, now, |shard, key, now| {
                shard.feed(key, &mut early, now);
            });
        }
        // Bytes may have arrived before the socket was registered, or sit
        // decrypted inside the TLS session: read now, not at an event.
        self.isolated(key, now, Self::read);
    }

    /// Hands `bytes` from connection `key`'s socket to its frame reader
    /// and session. Returns whether reading may go on.
    fn feed(&mut self, key: Key, bytes: &mut [u8], now: Instant) -> bool {
        let Shard {
            conns,
            fanout,
            outboxes,
            ctx,
            timed,
            ..
        } = self;
        let Some(conn) = conns.get_mut(key) else {
            return false;
        };
        let session = &mut conn.session;
        let limits = match session.mode() {
            Mode::Client => &ctx.input_limits,
            Mode::Echo => &ECHO_LIMITS,
        };
        let fed = conn.reader.feed(limits, bytes, |message| {
            session.on_message(key, message, now, fanout, outboxes, ctx)
        });
        match fed {
            Ok(Fed::Consumed) => true,
            Ok(Fed::Paused) => {
                if conn.session.done_reading() {
                    if !conn.session.peer_closed() && conn.stop_reading_until().is_none() {
                        // A closing peer kept sending: give its close a
                        // grace period, then drop the socket.
                        conn.ending().stop_reading_until = Some(now + CLOSE_GRACE);
                        Self::time(timed, key, conn);
                    }
                } else {
                    conn.read_paused = true;
                }
                false
            }
            Err(fault) => {
                let reason = match fault.close_code() {
                    close::PROTOCOL_ERROR => format!("protocol error: {fault}"),
                    _ => fault.to_string(),
                };
                outboxes.close(key, fault.close_code(), &reason);
                // Nothing more is read; the socket stays open a grace
                // period for the close frame to be read (dropping it with
                // unread input would reset it, and the close be lost).
                conn.session.stop_reading();
                conn.ending().stop_reading_until = Some(now + CLOSE_GRACE);
                Self::time(timed, key, conn);
                false
            }
        }
    }

    /// Reads connection `key` until its socket has nothing more.
    fn read(&mut self, key: Key, now: Instant) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.session.done_reading() || conn.read_paused || conn.eof {
                return;
            }
            let read = conn.transport.read(&mut self.scratch);
            match read {
                Ok(0) => {
                    conn.eof = true;
                    // A peer that only half-closed may still read the
                    // close frame queued for it (a flooder closed for its
                    // rate, say); otherwise it is gone.
                    if let Some(outbox) = self.outboxes.get_mut(key) {
                        if !outbox.is_closing() {
                            outbox.abort();
                        }
                    }
                    return;
                }
                Ok(n) => {
                    let mut scratch = std::mem::take(&mut self.scratch);
                    let go_on = self.feed(key, &mut scratch[..n], now);
                    self.scratch = scratch;
                    if !go_on {
                        return;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    tracing::debug!(conn = conn.session.conn, %err, "read failed; the peer is gone");
                    conn.eof = true;
                    if let Some(outbox) = self.outboxes.get_mut(key) {
                        outbox.abort();
                    }
                    return;
                }
            }
        }
    }

    /// Reading resumes once a client has read its replies: what the frame
    /// reader kept first, then the socket.
    fn resume_reading(&mut self, key: Key, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.read_paused = false;
        if self.feed(key, &mut [], now) {
            self.read(key, now);
        }
    }

    /// Lists `key` among the connections with a deadline.
    fn time(timed: &mut Vec<(Key, ConnId)>, key: Key, conn: &mut Connection) {
        if !conn.timed {
            conn.timed = true;
            timed.push((key, conn.session.conn));
        }
    }

    /// Pings every client connection, closing those that did not answer
    /// the last ping.
    fn ping_all(&mut self, now: Instant) {
        let Some(interval) = self.ctx.ping_interval else {
            return;
        };
        self.next_ping = Some(now + interval);
        let limits = *self.outboxes.limits();
        let keys: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, conn)| conn.session.mode() == Mode::Client)
            .map(|(key, _)| key)
            .collect();
        for key in keys {
            if let Some(outbox) = self.outboxes.get_mut(key) {
                outbox.ping_or_close(interval, &limits);
            }
        }
    }

    /// Deadlines: tokens that expired, writes stuck for the write timeout,
    /// closes whose flush or answer took too long.
    ///
    /// A close decided while the socket is full gets [`CLOSE_GRACE`] to
    /// send what was queued before it, then its frame goes next; if the
    /// socket still takes nothing by the write timeout (at least the
    /// grace) after the close was decided, the connection is dropped.
    fn sweep(&mut self, now: Instant) {
        let wall = SystemTime::now();
        while let Some(Reverse((at, key, conn))) = self.expiries.peek().copied() {
            if at > wall {
                break;
            }
            self.expiries.pop();
            if self.conns.get(key).is_some_and(|c| c.session.conn == conn) {
                self.outboxes
                    .close(key, close::TOKEN_EXPIRED, "token expired");
            }
        }
        let write_timeout = self.outboxes.limits().write_timeout;
        let timed = std::mem::take(&mut self.timed);
        for (key, id) in timed {
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.session.conn == id) else {
                // Ended; the key may serve another connection now.
                continue;
            };
            let Some(outbox) = self.outboxes.get_mut(key) else {
                continue;
            };
            if conn.blocked && outbox.is_closing() {
                let ending = conn.ending();
                let give_up_at = *ending.flush_deadline.get_or_insert(now + CLOSE_GRACE);
                let abort_at = *ending
                    .abort_at
                    .get_or_insert(now + write_timeout.max(CLOSE_GRACE));
                if give_up_at <= now {
                    // The peer is too slow to take the rest: the close
                    // frame goes next.
                    outbox.give_up_flush();
                }
                if abort_at <= now {
                    // The peer takes nothing: waiting longer would not get
                    // the close out.
                    outbox.abort();
                    conn.blocked = false;
                }
            } else if conn.blocked
                && conn
                    .refusing_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= write_timeout)
                && outbox.close_slow()
            {
                Stats::add(&self.ctx.stats.slow_consumer_closes, 1);
            }
            if conn.close_sent_until().is_some_and(|at| at <= now)
                || conn.stop_reading_until().is_some_and(|at| at <= now)
            {
                outbox.abort();
                conn.eof = true;
                conn.session.stop_reading();
            }
            if conn.has_deadline() {
                self.timed.push((key, id));
            } else {
                conn.timed = false;
            }
        }
        // Expiries of connections that ended stay in the heap until they
        // pass; rebuild it when they outnumber the live ones.
        if self.expiries.len() > 2 * self.conns.len() + 64 {
            let conns = &self.conns;
            self.expiries.retain(|Reverse((_, key, id))| {
                conns.get(*key).is_some_and(|c| c.session.conn == *id)
            });
        }
    }

    /// Writes every connection pushed to since the last pass, and drops
    /// those that are done. Every [`WRITES_PER_RING_LOOK`] sockets it fans
    /// out what the feed published meanwhile, so those not yet written
    /// take it in this pass (the others, pushed to again, in the next).
    /// Returns how the last look at the ring ended.
    fn write_pushed(&mut self, now: Instant) -> Pass {
        let mut pushed = std::mem::take(&mut self.pushed);
        self.outboxes.take_pushed(&mut pushed);
        // In key order, the same in every pass: a socket keeps its place
        // among the others, so a tick a look takes in after the socket was
        // written reaches it about one pass later at most, not up to two
        // (as it would if its place in the next pass were that of its
        // first tick there).
        pushed.sort_unstable();
        let mut ring = Pass::Drained;
        for (written, &key) in pushed.iter().enumerate() {
            if written % WRITES_PER_RING_LOOK == WRITES_PER_RING_LOOK - 1 {
                ring = self.drain_ring();
            }
            self.isolated(key, now, Self::write);
        }
        self.pushed = pushed;
        ring
    }

    fn write(&mut self, key: Key, now: Instant) {
        let limits = *self.outboxes.limits();
        let (Some(conn), Some(outbox)) =
            (self.conns.get_mut(key), self.outboxes.get_for_writing(key))
        else {
            return;
        };
        if outbox.is_aborted() {
            return self.finish(key);
        }
        let wrote = if conn.blocked {
            Wrote::Blocked
        } else {
            conn.write(outbox, &limits, now, &self.ctx.stats, &mut self.scratch)
        };
        let spare = match wrote {
            Wrote::Abort => return self.finish(key),
            Wrote::Blocked | Wrote::Closed => {
                Self::time(&mut self.timed, key, conn);
                None
            }
            Wrote::Idle => Some(conn.idle_batch()),
        };
        let done = conn.is_done(outbox);
        let resume = conn.read_paused && !outbox.replies_backed_up(&limits);
        if let Some(spare) = spare {
            self.outboxes.recycle(spare);
        }
        if done {
            self.finish(key);
        } else if resume {
            self.to_read.push(key);
        }
    }

    /// Drops connection `key`: out of the fan-out, its socket closed.
    fn finish(&mut self, key: Key) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        conn.session.detach(key, &mut self.fanout);
        let _ = self.poll.registry().deregister(conn.transport.socket());
        let stats = &self.ctx.stats;
        if let Some(outbox) = self.outboxes.remove(key) {
            stats
                .peak_outbox_bytes
                .fetch_max(outbox.peak_bytes(), Ordering::Relaxed);
        }
        stats.sessions_open.fetch_sub(1, Ordering::Relaxed);
        self.load.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(
            conn = conn.session.conn,
            shard = self.index,
            "connection ended"
        );
    }
}
