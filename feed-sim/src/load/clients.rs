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
//! - frames are split in place ([`tickcast::protocol::frame`]), ticks are
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
use tickcast::feed::now_nanos;
use tickcast::protocol::frame::{client_frame, frame_len, opcode};

use super::track::{Event, Reading, Totals, Tracker};
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
    /// Subscribe requests, used round-robin by client number.
    pub(super) plans: &'a [Vec<u8>],
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
                self.ready(event.token().0, event.is_writable());
            }
            self.events = events;
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                self.check_deadlines(last_tick);
                every(self);
            }
        }
    }

    /// Ends the window: the reading clients stop, and every stalled client
    /// reads what is pending for at most `drain`, which is when it learns
    /// whether the server closed it.
    pub(super) fn drain_stalled(&mut self, drain: Duration) -> anyhow::Result<()> {
        self.done = true;
        let since_ns = now_nanos();
        for client in 0..self.setup.stalled {
            let Some(conn) = self.conns[client].as_mut() else {
                continue;
            };
            if conn.state == State::Open {
                conn.state = State::Draining { since_ns };
                conn.deadline = Instant::now() + drain;
                self.read(client);
            }
        }
        let stalled = self.setup.stalled;
        let deadline = Instant::now() + drain + Duration::from_secs(1);
        self.run_until(
            deadline,
            |clients| clients.conns[..stalled].iter().all(Option::is_none),
            |_| {},
        )?;
        // Still connecting when the window ended: they never got to stall.
        Ok(())
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
        for client in 0..self.conns.len() {
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

    /// Handles readiness of `client`'s socket.
    fn ready(&mut self, client: usize, writable: bool) {
        let Some(conn) = &mut self.conns[client] else {
            return;
        };
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
        loop {
            match conn.stream.read(&mut chunk) {
                Ok(0) => {
                    return self.connect_failed(
                        client,
                        "connection closed by the server during the upgrade".into(),
                    );
                }
                Ok(n) => conn.inbox.extend_from_slice(&chunk[..n]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return self.connect_failed(client, format!("read the upgrade: {err}")),
            }
        }
        let head_len = match parse_upgrade_response(&conn.inbox) {
            Ok(Some(len)) => len,
            Ok(None) if conn.inbox.len() < MAX_RESPONSE => return,
            Ok(None) => {
                return self.connect_failed(client, "an upgrade response over 16 KiB".into())
            }
            Err(reason) => return self.connect_failed(client, reason),
        };
        conn.inbox.drain(..head_len);
        let plans = self.setup.plans;
        let subscribe = client_frame(opcode::TEXT, &plans[client % plans.len()]);
        if let Err(err) = send(conn, &subscribe) {
            return self.connect_failed(client, format!("send subscribe: {err}"));
        }
        conn.state = State::Open;
        let stalled = conn.stalled;
        let leftover = !conn.inbox.is_empty();
        self.in_flight -= 1;
        let c = &mut self.connections;
        c.attempts += 1;
        c.last_attempt = Some(Instant::now());
        c.connected += 1;
        if stalled {
            c.stalled_connected += 1;
        } else if leftover {
            self.read(client);
        }
    }

    /// Reads everything pending on an open connection and handles it.
    fn read(&mut self, client: usize) {
        let reading = Reading {
            symbols: self.setup.symbols,
            fields: &self.fields,
            measuring: self.measuring || self.done,
        };
        let Some(conn) = self.conns[client].as_mut() else {
            return;
        };
        if self.done && !matches!(conn.state, State::Draining { .. }) {
            return; // A reading client after the window: it has stopped.
        }
        let totals = if conn.stalled {
            &mut self.stalled_totals
        } else {
            &mut self.totals
        };
        let ended = loop {
            // Pending bytes of an incomplete frame go first; a frame larger
            // than the buffer grows it (once, for the run).
            let pending = conn.inbox.len();
            let need = frame_len(&conn.inbox).unwrap_or(0).max(pending + 4096);
            if self.scratch.len() < need {
                self.scratch.resize(need, 0);
            }
            self.scratch[..pending].copy_from_slice(&conn.inbox);
            conn.inbox.clear();
            let room = self.scratch.len() - pending;
            let n = match conn.stream.read(&mut self.scratch[pending..]) {
                Ok(0) => break Some(Ended::Lost),
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    conn.inbox.extend_from_slice(&self.scratch[..pending]);
                    break None;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {
                    conn.inbox.extend_from_slice(&self.scratch[..pending]);
                    continue;
                }
                Err(_) => break Some(Ended::Lost),
            };
            let data = &self.scratch[..pending + n];
            let now_ns = now_nanos();
            let mut at = 0;
            let outcome = loop {
                let (used, event) = conn.tracker.frames(&data[at..], now_ns, &reading, totals);
                let event_at = at;
                at += used;
                match event {
                    None => break None,
                    Some(Event::Ping(range)) => {
                        let payload = &data[event_at + range.start..event_at + range.end];
                        if send(conn, &client_frame(opcode::PONG, payload)).is_err() {
                            break Some(Ended::Lost);
                        }
                    }
                    Some(Event::Close(label)) => break Some(Ended::Closed(label)),
                    Some(Event::Broken) => break Some(Ended::Lost),
                }
            };
            if outcome.is_some() {
                break outcome;
            }
            conn.inbox.extend_from_slice(&data[at..]);
            if conn.inbox.capacity() > SCRATCH && conn.inbox.len() < SCRATCH / 4 {
                conn.inbox.shrink_to_fit();
            }
            if let State::Draining { since_ns } = conn.state {
                if conn.tracker.last_tick_ts >= since_ns {
                    break Some(Ended::CaughtUp);
                }
            }
            if n < room {
                break None; // Short read: the socket is drained.
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

/// Writes `bytes` after anything still queued; queues what the socket
/// does not take now (it is written when the socket becomes writable).
fn send(conn: &mut Conn, bytes: &[u8]) -> io::Result<()> {
    if conn.outbox.is_empty() {
        let written = write_some(&mut conn.stream, bytes)?;
        conn.outbox.extend_from_slice(&bytes[written..]);
    } else {
        conn.outbox.extend_from_slice(bytes);
        flush(conn)?;
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
    let mut headers = [httparse::EMPTY_HEADER; 32];
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
