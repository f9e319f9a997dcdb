//! One connection's byte stream inside a shard's mio event loop: the plain
//! TCP socket, or TLS over it with the rustls session driven by the loop.
//!
//! The edge (tokio/hyper) accepts the connection, completes the TLS
//! handshake and the WebSocket upgrade, then hands the socket over with
//! [`Transport::from_tokio`] or [`Transport::from_tokio_tls`]; from then on
//! the shard alone reads and writes it, edge-triggered, through this type.
//!
//! # How the loop drives a transport
//!
//! - Right after the handoff, register [`Transport::socket`] and call
//!   [`Transport::read`] once *without waiting for an event*: a TLS session
//!   may already hold decrypted bytes (read from the socket by the edge),
//!   which no readiness event will announce. Likewise flush if
//!   [`Transport::has_unsent`].
//! - On READABLE: `read` until `Err(WouldBlock)` (or `Ok(0)`, the peer's
//!   end of stream). Reading TLS can queue records of our own (alerts, key
//!   updates): check [`Transport::has_unsent`] afterwards and flush.
//! - To send: [`Transport::write_vectored`] until it takes less than
//!   offered or says `WouldBlock` (the socket is full); then wait for
//!   WRITABLE, call [`Transport::flush`] while [`Transport::has_unsent`],
//!   and write more.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;
use socket2::SockRef;
use tokio_rustls::rustls::ServerConnection;

/// The most encrypted bytes a TLS session queues for a socket that is not
/// taking them (rustls's `set_buffer_limit`): past this,
/// [`Transport::write_vectored`] accepts no more plaintext until the socket
/// drains. Enough for several full records (16 KiB each), so a writable
/// socket is always offered a large `writev`.
pub const TLS_BUFFER_LIMIT: usize = 64 * 1024;

/// A connection's byte stream, as a shard's event loop owns it.
#[derive(Debug)]
pub enum Transport {
    /// Plain TCP (`ws://`): reads and vectored writes go straight to the
    /// socket.
    Plain(TcpStream),
    /// TLS over TCP (`wss://`). Boxed: the session is large (see
    /// [`TlsTransport`]), and keeping it out of line keeps `Transport` two
    /// words.
    Tls(Box<TlsTransport>),
}

/// A TLS connection: its socket and the rustls session that encrypts and
/// decrypts over it, driven by the event loop (no task, no lock).
///
/// # What an idle TLS connection costs
///
/// **About 7.3 KiB of heap** (7,473 bytes), measured with rustls 0.23.46
/// (ring provider, TLS 1.3, TLS13_AES_256_GCM_SHA384 negotiated with a
/// rustls client): a counting global allocator, 200 connections accepted
/// by tokio-rustls and handed over, each reading and writing 100 bytes
/// through this type until `WouldBlock` with nothing unsent, then the heap
/// freed by dropping each one (identical for all 200). Of that:
///
/// - 1,192 bytes: this box (the `ServerConnection` is 1,168 bytes
///   inline);
/// - 4,096 bytes: rustls's incoming record buffer, kept allocated between
///   reads (it grows to one whole record, ~18 KiB, while a record is
///   partly received, and shrinks back on the next read);
/// - ~2.1 KiB, the rest: the session's TLS 1.3 state (by the source:
///   traffic secrets, both AES-GCM key schedules, the boxed state
///   machine, the ALPN string, the empty queues' `VecDeque`s).
///
/// Not counted: what is in flight (up to [`TLS_BUFFER_LIMIT`] of
/// encrypted records waiting for the socket, up to 16 KiB of decrypted
/// plaintext not yet read); the kernel's socket buffers; and the
/// `ServerConfig` shared by all connections, whose session cache (TLS 1.3
/// tickets for resumption, at most 256 entries) adds about 280 bytes per
/// connection until it is full.
#[derive(Debug)]
pub struct TlsTransport {
    tcp: TcpStream,
    tls: ServerConnection,
    write_side: WriteSide,
}

/// Our direction of a TLS connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteSide {
    Open,
    /// `close_notify` is queued behind what was written before it; the TCP
    /// write side is shut once it is all out.
    Closing,
    Closed,
}

impl Transport {
    /// From the edge's upgraded plain connection (a tokio `TcpStream`):
    /// deregistered from tokio (`into_std`), stays non-blocking.
    ///
    /// Call it on a thread of the runtime that owns the stream (or while
    /// that runtime is alive): deregistering needs its I/O driver.
    pub fn from_tokio(stream: tokio::net::TcpStream) -> io::Result<Transport> {
        Ok(Transport::Plain(into_mio(stream)?))
    }

    /// From the edge's TLS stream (after the handshake): the rustls session
    /// moves to the loop with whatever it has buffered (decrypted bytes not
    /// yet read, encrypted bytes not yet sent). Read once (and flush if
    /// [`Transport::has_unsent`]) right after registering: buffered
    /// plaintext raises no readiness event.
    pub fn from_tokio_tls(
        stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    ) -> io::Result<Transport> {
        let (tcp, mut tls) = stream.into_inner();
        tls.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        Ok(Transport::Tls(Box::new(TlsTransport {
            tcp: into_mio(tcp)?,
            tls,
            write_side: WriteSide::Open,
        })))
    }

    /// The socket, to register with mio
    /// (`poll.registry().register(t.socket(), token, interest)`). Read and
    /// write through the transport, never through the socket directly.
    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(tcp) => tcp,
            Transport::Tls(tls) => &mut tls.tcp,
        }
    }

    /// Reads plaintext into `buf`: `Ok(n > 0)` bytes; `Ok(0)` the peer ended
    /// its stream (TCP EOF, or TLS `close_notify`; a TLS peer that closes
    /// TCP without `close_notify` also reads as `Ok(0)`), or `buf` is empty;
    /// `Err(WouldBlock)` nothing more now.
    ///
    /// Edge-triggered: never `WouldBlock` while rustls holds plaintext or
    /// the socket has bytes. A TLS protocol error is `InvalidData` (after a
    /// try at sending the alert rustls queued for it): drop the connection.
    /// Reading TLS may queue records to send: check
    /// [`Transport::has_unsent`] afterwards.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self {
            Transport::Plain(tcp) => retry(|| tcp.read(buf)),
            Transport::Tls(tls) => tls.read(buf),
        }
    }

    /// Sends (a prefix of) the concatenation of `bufs`; returns how many
    /// bytes of them were accepted; `Err(WouldBlock)` if none (and `bufs`
    /// were not empty). A short count means the socket is full: wait for
    /// WRITABLE.
    ///
    /// Plain: one `send` (one `sendmsg` for several slices), which the
    /// kernel serves without the file-position lock and iovec import a
    /// `writev` pays for. TLS: plaintext is taken into rustls (up to
    /// [`TLS_BUFFER_LIMIT`] of encrypted records queued), then the records
    /// are written to the socket as far as it takes them, and again while
    /// it takes them all; accepted plaintext whose records are still
    /// unsent counts as accepted (and then [`Transport::has_unsent`]; a
    /// short TLS count always leaves it so). After
    /// [`Transport::shutdown_write`], TLS writes fail with `BrokenPipe`.
    pub fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => {
                let socket = SockRef::from(&*tcp);
                match bufs {
                    [one] => retry(|| socket.send(one)),
                    _ => retry(|| socket.send_vectored(bufs)),
                }
            }
            Transport::Tls(tls) => tls.write_vectored(bufs),
        }
    }

    /// TLS: encrypted bytes wait for the socket (wait for WRITABLE, then
    /// [`Transport::flush`]). Plain: always false.
    pub fn has_unsent(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(tls) => tls.tls.wants_write(),
        }
    }

    /// Writes pending TLS records: `Ok(())` when all are out,
    /// `Err(WouldBlock)` if the socket is full. Plain: nothing to do.
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(tls) => tls.flush(),
        }
    }

    /// Ends our direction. Plain: TCP `shutdown(Write)`. TLS: queues
    /// `close_notify` and flushes as far as the socket takes it; the TCP
    /// write side is shut once everything queued is out, here or in a later
    /// [`Transport::flush`] (while [`Transport::has_unsent`]), so records
    /// written before are not cut off. Errors are ignored: the connection
    /// is ending.
    pub fn shutdown_write(&mut self) {
        match self {
            Transport::Plain(tcp) => {
                let _ = tcp.shutdown(Shutdown::Write);
            }
            Transport::Tls(tls) => tls.shutdown_write(),
        }
    }

    /// Whether this is a TLS connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }
}

impl TlsTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                // Ok(0) with a non-empty `buf`: close_notify received.
                Ok(n) => return Ok(n),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                // TCP EOF without close_notify, all plaintext read.
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(err) => return Err(err),
            }
            // No plaintext buffered: take more records from the socket.
            // (`read_tls` refuses while plaintext is buffered; there is none.)
            match self.tls.read_tls(&mut self.tcp) {
                // Ok(0) is EOF: rustls notes it, and the reader then says
                // UnexpectedEof (or Ok(0) after close_notify).
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
            if let Err(err) = self.tls.process_new_packets() {
                // rustls queued an alert describing the error: last try.
                let _ = self.write_records();
                return Err(io::Error::new(io::ErrorKind::InvalidData, err));
            }
        }
    }

    /// Takes plaintext while the socket takes its records, so that a short
    /// count always leaves records unsent (a WRITABLE event will follow).
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.write_side != WriteSide::Open {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let total: usize = bufs.iter().map(|buf| buf.len()).sum();
        // Make room first: what is queued goes before what is offered.
        let mut socket_full = false;
        if self.tls.wants_write() {
            match self.write_records() {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => socket_full = true,
                Err(err) => return Err(err),
            }
        }
        let mut accepted = 0;
        while accepted < total {
            // Zero only with the queue at its limit: the socket is full.
            let n = self.take_plaintext(bufs, accepted)?;
            accepted += n;
            if n == 0 || socket_full {
                break;
            }
            match self.write_records() {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => socket_full = true,
                Err(err) => return Err(err),
            }
        }
        if accepted == 0 && total > 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(accepted)
    }

    /// Offers rustls the concatenation of `bufs` after its first `skip`
    /// bytes; returns how much it took.
    fn take_plaintext(&mut self, bufs: &[IoSlice<'_>], mut skip: usize) -> io::Result<usize> {
        let mut first = 0;
        while first < bufs.len() && skip >= bufs[first].len() {
            skip -= bufs[first].len();
            first += 1;
        }
        if skip == 0 {
            self.tls.writer().write_vectored(&bufs[first..])
        } else {
            // A slice taken in part: its rest alone (one more record, only
            // when the queue filled up mid-slice).
            self.tls.writer().write(&bufs[first][skip..])
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_records()?;
        if self.write_side == WriteSide::Closing {
            self.write_side = WriteSide::Closed;
            let _ = self.tcp.shutdown(Shutdown::Write);
        }
        Ok(())
    }

    fn shutdown_write(&mut self) {
        if self.write_side != WriteSide::Open {
            return;
        }
        self.tls.send_close_notify();
        self.write_side = WriteSide::Closing;
        let _ = self.flush();
    }

    /// Writes queued records until none is left (`Ok`) or the socket is
    /// full (`WouldBlock`).
    fn write_records(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// Takes a tokio socket off its runtime; it stays non-blocking.
fn into_mio(stream: tokio::net::TcpStream) -> io::Result<TcpStream> {
    Ok(TcpStream::from_std(stream.into_std()?))
}

/// Runs `op` again while a signal interrupts it.
fn retry(mut op: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    loop {
        match op() {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{mpsc, Arc};
    use std::time::{Duration, Instant};

    use mio::{Events, Interest, Poll, Token};
    use tokio::io::AsyncReadExt;
    use tokio_rustls::rustls;

    /// How long any one test may take before it fails instead of hanging.
    const DEADLINE: Duration = Duration::from_secs(20);

    /// A mio poll standing in for a shard's loop.
    struct Loop {
        poll: Poll,
        events: Events,
        deadline: Instant,
    }

    impl Loop {
        fn new() -> Loop {
            Loop {
                poll: Poll::new().unwrap(),
                events: Events::with_capacity(16),
                deadline: Instant::now() + DEADLINE,
            }
        }

        fn register(&self, transport: &mut Transport, token: usize) {
            self.poll
                .registry()
                .register(
                    transport.socket(),
                    Token(token),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .unwrap();
        }

        /// Waits for some readiness, or a short while (the caller retries
        /// either way, so a missed event costs time, not correctness).
        fn wait(&mut self, what: &str) {
            let now = Instant::now();
            assert!(now < self.deadline, "timed out: {what}");
            let timeout = (self.deadline - now).min(Duration::from_millis(50));
            self.poll.poll(&mut self.events, Some(timeout)).unwrap();
        }
    }

    fn would_block(err: &io::Error) -> bool {
        err.kind() == io::ErrorKind::WouldBlock
    }

    /// Reads exactly `n` bytes, flushing whatever reading queued.
    fn read_n(lp: &mut Loop, t: &mut Transport, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        let mut buf = vec![0; 16 * 1024];
        while out.len() < n {
            let want = (n - out.len()).min(buf.len());
            match t.read(&mut buf[..want]) {
                Ok(0) => panic!("EOF after {} of {n} bytes", out.len()),
                Ok(k) => out.extend_from_slice(&buf[..k]),
                Err(err) if would_block(&err) => {
                    flush_all(lp, t);
                    lp.wait("read");
                }
                Err(err) => panic!("read: {err}"),
            }
        }
        out
    }

    /// Reads until `Ok(0)`; any byte is a failure.
    fn read_eof(lp: &mut Loop, t: &mut Transport) {
        let mut buf = [0; 1024];
        loop {
            match t.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => panic!("{n} bytes where EOF was expected"),
                Err(err) if would_block(&err) => lp.wait("EOF"),
                Err(err) => panic!("read: {err}"),
            }
        }
    }

    fn flush_all(lp: &mut Loop, t: &mut Transport) {
        while t.has_unsent() {
            match t.flush() {
                Ok(()) => {}
                Err(err) if would_block(&err) => lp.wait("flush"),
                Err(err) => panic!("flush: {err}"),
            }
        }
    }

    /// The slices of `parts` left after skipping `skip` bytes, at most 64.
    fn remaining<'a>(parts: &[&'a [u8]], mut skip: usize) -> Vec<IoSlice<'a>> {
        let mut out = Vec::new();
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            out.push(IoSlice::new(&part[skip..]));
            skip = 0;
            if out.len() == 64 {
                break;
            }
        }
        out
    }

    /// Sends the concatenation of `parts` through `write_vectored` and
    /// `flush`; `on_block` runs at each `WouldBlock`. Returns how many
    /// there were.
    fn write_all(
        lp: &mut Loop,
        t: &mut Transport,
        parts: &[&[u8]],
        mut on_block: impl FnMut(),
    ) -> usize {
        let total: usize = parts.iter().map(|part| part.len()).sum();
        let (mut done, mut blocked) = (0, 0);
        while done < total {
            let slices = remaining(parts, done);
            let offered: usize = slices.iter().map(|slice| slice.len()).sum();
            match t.write_vectored(&slices) {
                Ok(n) => {
                    assert!(n > 0, "Ok(0) for a non-empty write");
                    // A short TLS count leaves records for WRITABLE to flush.
                    assert!(n == offered || !t.is_tls() || t.has_unsent());
                    done += n;
                }
                Err(err) if would_block(&err) => {
                    blocked += 1;
                    on_block();
                    lp.wait("write");
                }
                Err(err) => panic!("write: {err}"),
            }
        }
        while t.has_unsent() {
            match t.flush() {
                Ok(()) => {}
                Err(err) if would_block(&err) => {
                    blocked += 1;
                    on_block();
                    lp.wait("flush");
                }
                Err(err) => panic!("flush: {err}"),
            }
        }
        blocked
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_transport_is_two_words_and_a_tls_session_is_boxed() {
        assert!(std::mem::size_of::<Transport>() <= 16);
        eprintln!(
            "size_of: Transport {}, TlsTransport {}, ServerConnection {}",
            std::mem::size_of::<Transport>(),
            std::mem::size_of::<TlsTransport>(),
            std::mem::size_of::<ServerConnection>(),
        );
    }

    #[test]
    fn plain_bytes_flow_both_ways_through_a_mio_loop() {
        let rt = runtime();
        let (mut server, mut client) = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (client, accepted) =
                tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
            (
                Transport::from_tokio(accepted.unwrap().0).unwrap(),
                Transport::from_tokio(client.unwrap()).unwrap(),
            )
        });
        assert!(!server.is_tls() && !server.has_unsent());
        let mut lp = Loop::new();
        lp.register(&mut server, 0);
        lp.register(&mut client, 1);

        // Nothing sent yet.
        let err = server.read(&mut [0; 16]).unwrap_err();
        assert!(would_block(&err), "{err}");

        // Several slices, one of them empty, in one writev: the empty
        // socket takes them whole.
        let middle = vec![7u8; 3000];
        let parts: [&[u8]; 4] = [b"header:", &middle, b"", b":tail"];
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|part| IoSlice::new(part)).collect();
        assert_eq!(server.write_vectored(&slices).unwrap(), 3012);
        assert_eq!(read_n(&mut lp, &mut client, 3012), parts.concat());

        // And the other way, through the helper's loop.
        write_all(&mut lp, &mut client, &[b"pi", b"ng"], || {});
        assert_eq!(read_n(&mut lp, &mut server, 4), b"ping");

        // The client ends its direction; the server still writes to it.
        client.shutdown_write();
        read_eof(&mut lp, &mut server);
        write_all(&mut lp, &mut server, &[b"bye"], || {});
        assert_eq!(read_n(&mut lp, &mut client, 3), b"bye");
        server.shutdown_write();
        read_eof(&mut lp, &mut client);
        assert!(server.flush().is_ok() && !server.has_unsent());
    }

    use crate::tls::test_files::Scratch;

    type Client = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;

    /// What the client sends right after its handshake; the edge reads
    /// only its first 4 bytes, the rest stays decrypted in the session.
    const EARLY: &[u8] = b"sent before the handoff; the edge reads 4 bytes of it";

    /// A TLS connection accepted by tokio-rustls and handed to a
    /// transport, and its rustls client over a blocking std socket with
    /// a receive buffer of `client_rcvbuf`.
    struct TlsPair {
        _rt: tokio::runtime::Runtime,
        server: Transport,
        client: Client,
    }

    fn tls_pair(name: &str, client_rcvbuf: Option<usize>) -> TlsPair {
        let dir = Scratch::new(name);
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let acceptor = crate::tls::acceptor(
            &dir.file("cert.pem", &cert.cert.pem()),
            &dir.file("key.pem", &cert.signing_key.serialize_pem()),
        )
        .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();

        let rt = runtime();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            if let Some(size) = client_rcvbuf {
                socket.set_recv_buffer_size(size).unwrap();
            }
            socket.connect(&addr.into()).unwrap();
            let socket = std::net::TcpStream::from(socket);
            socket.set_read_timeout(Some(DEADLINE)).unwrap();
            socket.set_write_timeout(Some(DEADLINE)).unwrap();
            let conn =
                rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap())
                    .unwrap();
            let mut client = rustls::StreamOwned::new(conn, socket);
            client.write_all(EARLY).unwrap();
            client.flush().unwrap();
            client
        });
        let server = rt.block_on(async {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let mut first = [0; 4];
            tls.read_exact(&mut first).await.unwrap();
            assert_eq!(first, EARLY[..4]);
            Transport::from_tokio_tls(tls).unwrap()
        });
        TlsPair {
            _rt: rt,
            server,
            client: client.join().unwrap(),
        }
    }

    /// The byte at `i` of the large write.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    const BIG: usize = 1 << 20;

    #[test]
    fn tls_moves_to_the_loop_with_its_buffered_bytes_and_carries_everything() {
        let TlsPair {
            _rt,
            mut server,
            client,
        } = tls_pair("flow", Some(16 * 1024));
        assert!(server.is_tls());
        // A small send buffer: the large write must meet WouldBlock.
        socket2::SockRef::from(&*server.socket())
            .set_send_buffer_size(16 * 1024)
            .unwrap();
        let mut lp = Loop::new();
        lp.register(&mut server, 0);

        // Before any event: the rest of the client's first record, which
        // the edge decrypted but did not read.
        let mut buf = [0; 256];
        let n = server
            .read(&mut buf)
            .expect("plaintext moved with the session");
        assert_eq!(&buf[..n], &EARLY[4..]);
        let err = server.read(&mut buf).unwrap_err();
        assert!(would_block(&err), "{err}");
        flush_all(&mut lp, &mut server);

        let (go_tx, go_rx) = mpsc::channel::<()>();
        let peer = std::thread::spawn(move || {
            let mut client = client;
            let mut hello = [0; 5];
            client.read_exact(&mut hello).unwrap();
            assert_eq!(&hello, b"hello");
            client.write_all(b"after the handoff").unwrap();
            client.flush().unwrap();

            // Read the large write only once the server met a full socket.
            go_rx.recv_timeout(DEADLINE).unwrap();
            let mut big = vec![0; BIG];
            client.read_exact(&mut big).unwrap();
            assert!(big == pattern(BIG), "the large write arrived altered");

            client.conn.send_close_notify();
            client.flush().unwrap();
            // The server answers with its own close_notify: a clean EOF.
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty());
        });

        write_all(&mut lp, &mut server, &[b"hel", b"lo"], || {});
        assert_eq!(
            read_n(&mut lp, &mut server, 17),
            b"after the handoff".as_slice()
        );

        // 1 MiB in slices of uneven sizes, up to 64 per call.
        let big = pattern(BIG);
        let mut parts = Vec::new();
        let mut rest = &big[..];
        for size in [1, 100, 4096, 16 * 1024, 777, 40_000].iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (part, tail) = rest.split_at((*size).min(rest.len()));
            parts.push(part);
            rest = tail;
        }
        let mut go = Some(go_tx);
        let blocked = write_all(&mut lp, &mut server, &parts, || {
            if let Some(go) = go.take() {
                go.send(()).unwrap();
            }
        });
        assert!(blocked > 0, "1 MiB went out without the socket filling up");
        assert!(go.is_none());

        // The client's close_notify.
        read_eof(&mut lp, &mut server);
        read_eof(&mut lp, &mut server);
        server.shutdown_write();
        flush_all(&mut lp, &mut server);
        peer.join().unwrap();
    }

    #[test]
    fn tls_shutdown_write_goes_out_after_what_was_queued() {
        let TlsPair {
            _rt,
            mut server,
            client,
        } = tls_pair("shutdown", Some(16 * 1024));
        socket2::SockRef::from(&*server.socket())
            .set_send_buffer_size(16 * 1024)
            .unwrap();
        let mut lp = Loop::new();
        lp.register(&mut server, 0);
        assert_eq!(read_n(&mut lp, &mut server, EARLY.len() - 4), &EARLY[4..]);

        // Fill the socket and rustls's queue, then end our direction with
        // records still unsent.
        let data = pattern(256 * 1024);
        let mut accepted = 0;
        loop {
            match server.write_vectored(&[IoSlice::new(&data[accepted..])]) {
                Ok(n) => accepted += n,
                Err(err) if would_block(&err) => break,
                Err(err) => panic!("write: {err}"),
            }
        }
        assert!(server.has_unsent());
        server.shutdown_write();
        let err = server.write_vectored(&[IoSlice::new(b"x")]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);

        let peer = std::thread::spawn(move || {
            let mut client = client;
            let mut got = Vec::new();
            // Ok(0) only on close_notify (a bare TCP EOF is an error).
            client.read_to_end(&mut got).unwrap();
            got
        });
        flush_all(&mut lp, &mut server);
        let got = peer.join().unwrap();
        assert_eq!(got.len(), accepted);
        assert!(got == data[..accepted]);
    }

    #[test]
    fn tls_garbage_is_invalid_data_and_the_peer_gets_the_alert() {
        let TlsPair {
            _rt,
            mut server,
            mut client,
        } = tls_pair("garbage", None);
        let mut lp = Loop::new();
        lp.register(&mut server, 0);
        assert_eq!(read_n(&mut lp, &mut server, EARLY.len() - 4), &EARLY[4..]);

        // An application-data record that does not decrypt.
        let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x20];
        record.extend_from_slice(&[0x5a; 32]);
        client.sock.write_all(&record).unwrap();

        let mut buf = [0; 64];
        let err = loop {
            match server.read(&mut buf) {
                Ok(n) => panic!("{n} bytes from a forged record"),
                Err(err) if would_block(&err) => lp.wait("the forged record"),
                Err(err) => break err,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(!server.has_unsent(), "the alert was not flushed");

        // The client hears why.
        let err = client.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("BadRecordMac"), "{err}");
    }
}
