//! Every client of a `feed-sim load` run, on one thread, in one event
//! loop: connect, upgrade, subscribe, then read.
//!
//! The tool must never be the bottleneck it measures, so the receive path
//! costs as little per message as the kernel allows:
//! - one `epoll` wait hands over every ready socket at once, and each is
//!   read right there, with no task to wake and no future to poll;
//! - every socket is read into one shared scratch buffer; a connection
//!   keeps bytes of its own only while a frame is incomplete, so an idle
//!   client costs its socket and its `seq` table;
//! - frames are split in place ([`tickcast::wire::frame`]), ticks are
//!   read by byte search ([`super::track`]), and nothing is allocated per
//!   message;
//! - the wall clock is read once per `read()`, not once per message: every
//!   frame of one read arrived at the same moment.
//!
//! The handshake is a plain HTTP/1.1 upgrade written by the loop itself
//! (the response is parsed with `httparse`), so connecting does not need
//! a second runtime either.

use std::collections::BTreeMap;
use std::io::{self, Read as _, Write as _};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use tickcast::tick::now_nanos;
use tickcast::wire::frame::{client_frame, frame_len, opcode, split_server_frame};

use super::track::{Event, Reading, Totals, Tracker, MAX_FRAME};
use crate::net;
use crate::server_msg::TickFields;
use crate::symbols::SymbolIds;
use crate::ws::Target;

/// The shared read buffer; a read that fills it is followed by another.
const SCRATCH: usize = 256 * 1024;

/// Ready sockets taken from one `epoll` wait.
const EVENTS: usize = 1024;

/// The longest `epoll` wait, so the timeline and the connect timeouts are
/// looked at often enough.
const TICK: Duration = Duration::from_millis(10);

/// The largest upgrade response read before giving up on a server.
const MAX_RESPONSE: usize = 16 * 1024;

/// The most a client lets pile up unsent (pongs to a server that does not
/// read) before it gives the connection up.
const MAX_OUTBOX: usize = 64 * 1024;

/// How the run is configured, for the loop.
pub(super) struct Setup<'a> {
    pub(super) target: &'a Target,
    pub(super) clients: usize,
    /// The first `stalled` clients read nothing until the run is over.
    pub(super) stalled: usize,
    /// Spread over 127.0.0.1..=127.0.0.N (0: the kernel's choice).
    pub(super) source_ips: usize,
    pub(super) connect_parallelism: usize,
    pub(super) connect_timeout: Duration,
    /// Subscribe request bodies, used round-robin by client number.
    pub(super) subscribes: &'a [Vec<u8>],
    pub(super) symbols: &'a SymbolIds,
}

/// Where a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// `connect()` has not finished.
    Connecting,
    /// The upgrade request is sent; the 101 has not arrived.
    Upgrading,
    /// Subscribed (the request sent); reading frames.
    Open,
    /// A stalled client after the run: reading what is pending until it
    /// catches up with ticks produced after `since_ns`.
    Draining { since_ns: u64 },
}

/// One client connection.
struct Conn {
    stream: TcpStream,
    state: State,
    /// Until when connecting and upgrading may take.
    deadline: Instant,
    /// Bytes received and not yet handled: an incomplete frame or
    /// response; empty (and unallocated) most of the time.
    inbox: Vec<u8>,
    /// Bytes the socket did not take yet: empty almost always.
    outbox: Vec<u8>,
    stalled: bool,
    /// The peer has shut its side: read to the end, not to a short read.
    peer_closed: bool,
    tracker: Tracker,
}

/// Why a connection ended.
enum Ended {
    /// The server sent a close frame (`code reason`).
    Closed(String),
    /// The stream ended or failed without one.
    Lost,
    /// A stalled client read up to a tick produced after it began
    /// draining.
    CaughtUp,
    /// A stalled client was still reading older data at the drain limit.
    StillBehind,
}

/// Connection counts over the run.
#[derive(Default)]
pub(super) struct Connections {
    pub(super) connected: usize,
    pub(super) stalled_connected: usize,
    pub(super) attempts: usize,
    pub(super) failures: BTreeMap<String, u64>,
    pub(super) last_attempt: Option<Instant>,
}

impl Connections {
    pub(super) fn failed(&self) -> usize {
        self.failures.values().sum::<u64>() as usize
    }
}

/// The event loop and every connection.
pub(super) struct Clients<'a> {
    setup: Setup<'a>,
    poll: Poll,
    events: Events,
    conns: Vec<Option<Conn>>,
    scratch: Vec<u8>,
    fields: TickFields,
    /// Clients not yet started.
    next_client: usize,
    in_flight: usize,
    /// Whether ticks count now (inside the measured window).
    pub(super) measuring: bool,
    /// Whether the reading clients have stopped (the window is over).
    done: bool,
    /// Once the window is over: when draining began (wall clock, ns) and
    /// how long a stalled client may drain.
    drain: Option<(u64, Duration)>,
    pub(super) connections: Connections,
    /// What the reading clients received.
    pub(super) totals: Totals,
    /// What the stalled clients read after the window.
    pub(super) stalled_totals: Totals,
}

impl<'a> Clients<'a> {
    pub(super) fn new(setup: Setup<'a>) -> anyhow::Result<Self> {
        let clients = setup.clients;
        Ok(Clients {
            setup,
            poll: Poll::new()?,
            events: Events::with_capacity(EVENTS),
            conns: (0..clients).map(|_| None).collect(),
            scratch: vec![0; SCRATCH],
            fields: TickFields::new(),
            next_client: 0,
            in_flight: 0,
            measuring: false,
            done: false,
            drain: None,
            connections: Connections::default(),
            totals: Totals::default(),
            stalled_totals: Totals::default(),
        })
    }

    /// Every client has its `subscribed` reply or has failed to connect;
    /// or the stragglers are given up on, `connect_timeout` after the last
    /// connect attempt finished (a client the server never answered).
    pub(super) fn all_subscribed(&self) -> bool {
        let c = &self.connections;
        let subscribed = self.totals.subscribed as usize;
        if subscribed + c.failed() >= self.setup.clients {
            return true;
        }
        c.attempts >= self.setup.clients
            && c.last_attempt
                .is_some_and(|at| at.elapsed() > self.setup.connect_timeout)
    }

    /// Runs the loop until `deadline`, or until `stop` says so; `every`
    /// is called about every [`TICK`] (the progress bars).
    pub(super) fn run_until(
        &mut self,
        deadline: Instant,
        stop: impl Fn(&Self) -> bool,
        mut every: impl FnMut(&Self),
    ) -> anyhow::Result<()> {
        let mut last_tick = Instant::now();
        loop {
            self.start_connects();
            let now = Instant::now();
            if now >= deadline || stop(self) {
                return Ok(());
            }
            let wait = (deadline - now).min(TICK);
            if let Err(err) = self.poll.poll(&mut self.events, Some(wait)) {
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err.into());
                }
            }
            let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
            for event in events.iter() {
                let closed = event.is_read_closed() || event.is_error();
                self.ready(event.token().0, event.is_writable(), closed);
            }
            self.events = events;
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                self.check_deadlines(last_tick);
                every(self);
            }
        }
    }

    /// Ends the window: the reading clients stop (their connections
    /// close), and every stalled client reads what is pending for at most
    /// `drain`, which is when it learns whether the server closed it. A
    /// stalled client still connecting drains as soon as it is connected,
    /// within the same limit.
    pub(super) fn drain_stalled(
        &mut self,
        drain: Duration,
        every: impl FnMut(&Self),
    ) -> anyhow::Result<()> {
        self.done = true;
        self.drain = Some((now_nanos(), drain));
        for client in self.setup.stalled..self.conns.len() {
            if let Some(conn) = self.conns[client].take() {
                if matches!(conn.state, State::Connecting | State::Upgrading) {
                    self.in_flight -= 1;
                }
            }
        }
        for client in 0..self.setup.stalled {
            if self.conns[client]
                .as_ref()
                .is_some_and(|conn| conn.state == State::Open)
            {
                self.start_draining(client);
            }
        }
        let stalled = self.setup.stalled;
        let deadline = Instant::now() + drain + Duration::from_secs(1);
        self.run_until(
            deadline,
            |clients| clients.conns[..stalled].iter().all(Option::is_none),
            every,
        )
    }

    /// Lets a stalled client read again, for at most the drain limit.
    fn start_draining(&mut self, client: usize) {
        let (since_ns, drain) = self.drain.expect("draining after the window");
        if let Some(conn) = self.conns[client].as_mut() {
            conn.state = State::Draining { since_ns };
            conn.deadline = Instant::now() + drain;
            self.read(client);
        }
    }

    /// Starts connecting clients while there is room for more in flight.
    fn start_connects(&mut self) {
        if self.done {
            return;
        }
        while self.in_flight < self.setup.connect_parallelism
            && self.next_client < self.setup.clients
        {
            let client = self.next_client;
            self.next_client += 1;
            self.in_flight += 1;
            let source = net::source_ip(client as u64, self.setup.source_ips);
            if let Err(reason) = self.connect(client, source) {
                self.connect_failed(client, reason);
            }
        }
    }

    fn connect(&mut self, client: usize, source: Option<IpAddr>) -> Result<(), String> {
        let mut stream =
            net::start_connect(self.setup.target.addr, source).map_err(|e| format!("{e:#}"))?;
        self.poll
            .registry()
            .register(
                &mut stream,
                Token(client),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("register: {e}"))?;
        self.conns[client] = Some(Conn {
            stream,
            state: State::Connecting,
            deadline: Instant::now() + self.setup.connect_timeout,
            inbox: Vec::new(),
            outbox: Vec::new(),
            stalled: client < self.setup.stalled,
            peer_closed: false,
            tracker: Tracker::new(self.setup.symbols.len()),
        });
        Ok(())
    }

    /// A connect or upgrade that did not work: counted by its reason.
    fn connect_failed(&mut self, client: usize, reason: String) {
        self.conns[client] = None;
        self.in_flight -= 1;
        let c = &mut self.connections;
        c.attempts += 1;
        c.last_attempt = Some(Instant::now());
        *c.failures.entry(reason).or_default() += 1;
    }

    /// Fails the clients whose connect or upgrade took too long, and ends
    /// the stalled clients still reading old data at the drain limit.
    fn check_deadlines(&mut self, now: Instant) {
        // Once every client is connected and until the drain, no
        // connection has a deadline: skip the walk over all of them.
        if self.in_flight == 0 && !self.done {
            return;
        }
        // After the window only stalled clients are left.
        let live = if self.done {
            self.setup.stalled
        } else {
            self.conns.len()
        };
        for client in 0..live {
            let Some(conn) = &self.conns[client] else {
                continue;
            };
            if conn.deadline > now {
                continue;
            }
            match conn.state {
                State::Connecting | State::Upgrading => {
                    let reason = format!("no upgrade within {:?}", self.setup.connect_timeout);
                    self.connect_failed(client, reason);
                }
                State::Draining { .. } => self.end(client, Ended::StillBehind),
                State::Open => {}
            }
        }
    }

    /// Handles readiness of `client`'s socket; `closed` when the event
    /// says the peer has shut its side (data may still be pending).
    fn ready(&mut self, client: usize, writable: bool, closed: bool) {
        let Some(conn) = &mut self.conns[client] else {
            return;
        };
        // Edge-triggered: no later event repeats this, so it is kept.
        conn.peer_closed |= closed;
        match conn.state {
            State::Connecting => {
                if !writable {
                    return;
                }
                match conn.stream.take_error() {
                    Ok(None) => {}
                    Ok(Some(err)) | Err(err) => {
                        return self.connect_failed(client, format!("connect: {err}"));
                    }
                }
                if let Err(err) = conn.stream.peer_addr() {
                    if err.kind() == io::ErrorKind::NotConnected {
                        return; // Not yet: a spurious wake-up.
                    }
                    return self.connect_failed(client, format!("connect: {err}"));
                }
                conn.state = State::Upgrading;
                let request = upgrade_request(self.setup.target);
                if let Err(err) = send(conn, &request) {
                    self.connect_failed(client, format!("send the upgrade: {err}"));
                }
            }
            State::Upgrading => {
                if writable {
                    if let Err(err) = flush(conn) {
                        return self.connect_failed(client, format!("send the upgrade: {err}"));
                    }
                }
                self.read_upgrade(client);
            }
            State::Open | State::Draining { .. } => {
                if writable && flush(conn).is_err() {
                    return self.end(client, Ended::Lost);
                }
                if conn.outbox.len() > MAX_OUTBOX {
                    // Pongs the server does not read: not a server to measure.
                    return self.end(client, Ended::Lost);
                }
                let idle = conn.stalled && conn.state == State::Open;
                if !idle {
                    self.read(client);
                }
            }
        }
    }

    /// Reads the upgrade response; once it is whole, subscribes.
    fn read_upgrade(&mut self, client: usize) {
        let conn = self.conns[client].as_mut().expect("a live connection");
        let mut chunk = [0u8; 4096];
        let head_len = loop {
            match parse_upgrade_response(&conn.inbox) {
                Ok(Some(len)) => break len,
                Ok(None) if conn.inbox.len() <= MAX_RESPONSE => {}
                Ok(None) => {
                    let reason = format!("an upgrade response over {MAX_RESPONSE} bytes");
                    return self.connect_failed(client, reason);
                }
                Err(reason) => return self.connect_failed(client, reason),
            }
            match conn.stream.read(&mut chunk) {
                Ok(0) => {
                    let reason = "connection closed by the server during the upgrade";
                    return self.connect_failed(client, reason.into());
                }
                Ok(n) => conn.inbox.extend_from_slice(&chunk[..n]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return self.connect_failed(client, format!("read the upgrade: {err}")),
            }
        };
        conn.inbox.drain(..head_len);
        let subscribes = self.setup.subscribes;
        let subscribe = client_frame(opcode::TEXT, &subscribes[client % subscribes.len()]);
        if let Err(err) = send(conn, &subscribe) {
            return self.connect_failed(client, format!("send subscribe: {err}"));
        }
        conn.state = State::Open;
        let stalled = conn.stalled;
        self.in_flight -= 1;
        let c = &mut self.connections;
        c.attempts += 1;
        c.last_attempt = Some(Instant::now());
        c.connected += 1;
        if stalled {
            c.stalled_connected += 1;
            if self.done {
                // Connected after the window: it drains at once.
                self.start_draining(client);
            }
        } else {
            // Frames may have come with the response, and the socket may
            // hold more: no new event would say so.
            self.read(client);
        }
    }

    /// Reads everything pending on an open connection and handles it:
    /// to a short read (the socket is drained), or to the end of the
    /// stream once the peer has shut its side or while draining.
    fn read(&mut self, client: usize) {
        let reading = Reading {
            symbols: self.setup.symbols,
            fields: &self.fields,
            measuring: self.measuring || self.done,
        };
        let Some(conn) = self.conns[client].as_mut() else {
            return;
        };
        let totals = if conn.stalled {
            &mut self.stalled_totals
        } else {
            &mut self.totals
        };
        let to_the_end = conn.peer_closed || matches!(conn.state, State::Draining { .. });
        let ended = loop {
            // An incomplete frame's header, checked before trusting its
            // length: a hostile one ends the connection, not the tool.
            let need = match pending_frame_len(&conn.inbox) {
                Ok(need) => need,
                Err(()) => break Some(Ended::Lost),
            };
            let pending = conn.inbox.len();
            // Bytes of a frame larger than half the shared buffer collect
            // in the connection's own buffer, so they are copied once.
            let own = need > SCRATCH / 2;
            let buffer = if own {
                conn.inbox.resize(need.max(pending + 4096), 0);
                &mut conn.inbox
            } else {
                self.scratch[..pending].copy_from_slice(&conn.inbox);
                conn.inbox.clear();
                &mut self.scratch
            };
            let room = buffer.len() - pending;
            let mut interrupted = false;
            let (n, stream_ended) = match conn.stream.read(&mut buffer[pending..]) {
                Ok(0) => (0, Some(Ended::Lost)),
                Ok(n) => (n, None),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => (0, None),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {
                    interrupted = true;
                    (0, None)
                }
                Err(_) => (0, Some(Ended::Lost)),
            };
            let end = pending + n;
            let (used, outcome) = handle_frames(
                &mut conn.tracker,
                &mut conn.stream,
                &mut conn.outbox,
                &buffer[..end],
                &reading,
                totals,
            );
            if outcome.is_some() {
                break outcome;
            }
            if own {
                conn.inbox.truncate(end);
                conn.inbox.drain(..used);
            } else {
                conn.inbox.extend_from_slice(&self.scratch[used..end]);
                if conn.inbox.capacity() > SCRATCH && conn.inbox.len() < SCRATCH / 4 {
                    conn.inbox.shrink_to_fit();
                }
            }
            if let State::Draining { since_ns } = conn.state {
                if conn.tracker.last_tick_ts >= since_ns {
                    break Some(Ended::CaughtUp);
                }
            }
            if stream_ended.is_some() {
                break stream_ended;
            }
            if interrupted {
                continue;
            }
            if n == 0 || (n < room && !to_the_end) {
                break None; // Drained: the next data brings an event.
            }
        };
        if let Some(ended) = ended {
            self.end(client, ended);
        }
    }

    /// Closes `client`'s connection and counts how it ended.
    fn end(&mut self, client: usize, ended: Ended) {
        let Some(conn) = self.conns[client].take() else {
            return;
        };
        let totals = if conn.stalled {
            &mut self.stalled_totals
        } else {
            &mut self.totals
        };
        match ended {
            Ended::Closed(label) => *totals.close_codes.entry(label).or_default() += 1,
            Ended::Lost => totals.disconnects_without_close += 1,
            Ended::CaughtUp => totals.caught_up += 1,
            Ended::StillBehind => totals.still_behind += 1,
        }
    }
}

/// Handles the complete frames at the start of `data`, all read at one
/// moment, answering pings; returns how many bytes were handled and how
/// the connection ended, if it did.
fn handle_frames(
    tracker: &mut Tracker,
    stream: &mut TcpStream,
    outbox: &mut Vec<u8>,
    data: &[u8],
    reading: &Reading<'_>,
    totals: &mut Totals,
) -> (usize, Option<Ended>) {
    let now_ns = now_nanos();
    let mut at = 0;
    loop {
        let (used, event) = tracker.frames(&data[at..], now_ns, reading, totals);
        let event_at = at;
        at += used;
        match event {
            None => return (at, None),
            Some(Event::Ping(range)) => {
                let payload = &data[event_at + range.start..event_at + range.end];
                if send_to(stream, outbox, &client_frame(opcode::PONG, payload)).is_err() {
                    return (at, Some(Ended::Lost));
                }
            }
            Some(Event::Close(label)) => return (at, Some(Ended::Closed(label))),
            Some(Event::Broken) => return (at, Some(Ended::Lost)),
        }
    }
}

/// The bytes the incomplete frame at the start of `pending` needs in all
/// (0 when nothing is pending or its header is incomplete); `Err` when the
/// header is not one a server sends or states a length over the limit.
fn pending_frame_len(pending: &[u8]) -> Result<usize, ()> {
    if pending.is_empty() {
        return Ok(0);
    }
    match split_server_frame(pending, MAX_FRAME) {
        Ok(_) => Ok(frame_len(pending).unwrap_or(0)),
        Err(_) => Err(()),
    }
}

/// Writes `bytes` after anything still queued; queues what the socket
/// does not take now (it is written when the socket becomes writable).
fn send(conn: &mut Conn, bytes: &[u8]) -> io::Result<()> {
    send_to(&mut conn.stream, &mut conn.outbox, bytes)
}

/// [`send`] on a connection's parts.
fn send_to(stream: &mut TcpStream, outbox: &mut Vec<u8>, bytes: &[u8]) -> io::Result<()> {
    if outbox.is_empty() {
        let written = write_some(stream, bytes)?;
        outbox.extend_from_slice(&bytes[written..]);
    } else {
        outbox.extend_from_slice(bytes);
        let written = write_some(stream, outbox)?;
        outbox.drain(..written);
    }
    Ok(())
}

/// Writes what is queued, as far as the socket takes it.
fn flush(conn: &mut Conn) -> io::Result<()> {
    if !conn.outbox.is_empty() {
        let written = write_some(&mut conn.stream, &conn.outbox)?;
        conn.outbox.drain(..written);
    }
    Ok(())
}

/// Writes as much of `bytes` as the socket takes without blocking.
fn write_some(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(written)
}

/// The HTTP/1.1 request that upgrades a connection to `target`'s path.
fn upgrade_request(target: &Target) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        target.path,
        target.authority,
        fastwebsockets::handshake::generate_key()
    )
    .into_bytes()
}

/// The length of a complete `101 Switching Protocols` response at the
/// start of `data`; `Ok(None)` while it is incomplete; the reason in
/// words for any other answer.
fn parse_upgrade_response(data: &[u8]) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(data) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(len)) => match response.code {
            Some(101) => {
                let upgrade = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
                    .map(|h| h.value);
                if upgrade.is_some_and(|v| v.eq_ignore_ascii_case(b"websocket")) {
                    Ok(Some(len))
                } else {
                    Err("a 101 response without Upgrade: websocket".into())
                }
            }
            Some(code) => Err(format!(
                "the server answered the upgrade with {code} {}",
                response.reason.unwrap_or("")
            )),
            None => Ok(None),
        },
        Err(err) => Err(format!("a malformed upgrade response ({err})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_frame_is_trusted_only_within_the_limit() {
        assert_eq!(pending_frame_len(b""), Ok(0));
        assert_eq!(pending_frame_len(&[0x81]), Ok(0), "header incomplete");
        assert_eq!(
            pending_frame_len(&[0x81, 126, 0x01, 0x00, b'x']),
            Ok(4 + 256)
        );
        let hostile = [0x81, 127, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(pending_frame_len(&hostile), Err(()));
        assert_eq!(
            pending_frame_len(&[0x89, 126, 0, 200]),
            Err(()),
            "a long ping"
        );
    }

    #[test]
    fn reads_the_upgrade_response_whole_or_not_at_all() {
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n\x81\x02{}";
        let len = parse_upgrade_response(ok).unwrap().unwrap();
        assert_eq!(&ok[len..], b"\x81\x02{}");
        assert_eq!(parse_upgrade_response(&ok[..40]), Ok(None));
        let refused = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            parse_upgrade_response(refused),
            Err("the server answered the upgrade with 404 Not Found".into())
        );
        let no_upgrade = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
        assert!(parse_upgrade_response(no_upgrade).is_err());
    }
}
