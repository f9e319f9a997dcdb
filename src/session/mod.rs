//! Stage 4 of the data path: one WebSocket client.
//!
//! After the HTTP upgrade (`http::ws`) a session owns the connection (a
//! [`socket::Socket`]: plain TCP, or TLS over it) and splits it: the read
//! half goes to the [`reader`] (fastwebsockets behind a
//! [`guard::FrameGuard`]), the write half to the [`writer`], which is the
//! only code that ever writes to the socket. Both meet at the connection's
//! [`outbox::Outbox`], which the `fanout` fills with shared tick frames.
//!
//! Lifecycle: attach to the fan-out → read and write until either side
//! ends → exactly one close frame (whoever decides first: the client, a
//! protocol fault, a slow consumer, shutdown) → wait briefly for the
//! client's answering close → detach from the fan-out.

pub mod echo;
pub mod guard;
pub mod outbox;
pub mod reader;
pub mod socket;
pub mod writer;

use std::future::Future;
use std::io::Cursor;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fastwebsockets::{after_handshake_split, FragmentCollectorRead, Role};
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, Chain};

use crate::auth::Grant;
use crate::fanout::{Command, ConnId, FanoutHandle};
use crate::protocol::frame::close_frame;
use crate::stats::Stats;
use crate::symbol::Symbols;
use guard::{Continuations, FrameGuard, GuardLimits};
use outbox::{Outbox, OutboxLimits};
use reader::{read_messages, RateLimit, Reader, ReaderExit};
use socket::{Socket, SocketReadHalf, SocketWriteHalf};
use writer::WriterExit;

/// What every session needs from the server.
#[derive(Debug)]
pub struct SessionContext {
    /// The symbols the server carries.
    pub symbols: Arc<Symbols>,
    /// Where subscription changes go.
    pub fanout: FanoutHandle,
    /// Per-connection output limits.
    pub outbox_limits: OutboxLimits,
    /// Per-connection input limits.
    pub guard_limits: GuardLimits,
    /// Most symbols one connection may subscribe to by name.
    pub max_subscriptions: usize,
    /// Frames per second one connection may send (and as many at once).
    pub max_messages_per_second: u32,
    /// Server-wide counters.
    pub stats: Arc<Stats>,
}

/// The read side of an upgraded socket: bytes hyper had already read
/// first, then the socket, checked by the guard, parsed by fastwebsockets.
pub type SocketReader = FragmentCollectorRead<FrameGuard<Chain<Cursor<Bytes>, SocketReadHalf>>>;

/// Splits an upgraded socket into its guarded frame reader, the count of
/// continuation frames its guard keeps for the rate limit, and its raw
/// write half (which only the `writer` uses). `early` holds bytes the peer
/// sent right after its handshake, which hyper had already read.
pub fn split(
    socket: Socket,
    early: Bytes,
    limits: GuardLimits,
) -> (SocketReader, Continuations, SocketWriteHalf) {
    let (read_half, write_half) = socket.into_split();
    let stream = FrameGuard::new(Cursor::new(early).chain(read_half), limits);
    let continuations = stream.continuations();
    // The library's write half is unused: our writer owns the socket's.
    let (mut ws_read, _unused) = after_handshake_split(stream, tokio::io::sink(), Role::Server);
    // Pings are answered by `read_messages`, after the rate limit.
    ws_read.set_auto_pong(false);
    // The guard enforces the real limit first, with the right close code.
    ws_read.set_max_message_size(
        usize::try_from(limits.max_message_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(1),
    );
    (
        FragmentCollectorRead::new(ws_read),
        continuations,
        write_half,
    )
}

/// Runs a connection: `reader` in a task of its own (`read_frame` must
/// not be cancelled mid-frame), the writer here. Returns how the writer
/// ended, once it is done and the reader has ended or had the write
/// timeout (at least [`writer::CLOSE_GRACE`]) to read the peer's answering
/// close. The socket stays open that long on purpose: dropping it while a
/// stalled peer has not yet read our close frame would leave the kernel to
/// give up on the orphaned socket with a reset, and the peer would never
/// learn why it was closed.
///
/// A panic in the reader ends this connection alone: it is logged and
/// counted (see [`isolated`]) and the client gets 1011 `internal error`.
pub async fn drive(
    outbox: &Arc<Outbox>,
    stats: &Arc<Stats>,
    mut write_half: SocketWriteHalf,
    reader: impl Future<Output = ()> + Send + 'static,
) -> WriterExit {
    let (reader_outbox, reader_stats) = (outbox.clone(), stats.clone());
    let mut reader_task = tokio::spawn(async move {
        if isolated(&reader_stats, "a WebSocket reader", reader)
            .await
            .is_none()
        {
            reader_outbox.close(close_frame(1011, "internal error"));
        }
    });
    let exit = writer::run(&mut write_half, outbox)
        .await
        .unwrap_or_else(|err| {
            tracing::debug!(%err, "write failed; the peer is gone");
            outbox.abort();
            WriterExit::Aborted
        });
    let linger = outbox.limits().write_timeout.max(writer::CLOSE_GRACE);
    if tokio::time::timeout(linger, &mut reader_task)
        .await
        .is_err()
    {
        reader_task.abort();
    }
    exit
}

/// Runs `work`, one connection's handling; a panic in it ends only that
/// work: it is logged (as a bug, with `what` it was and the panic's
/// message), counted in [`Stats::connection_panics`], and `None` is
/// returned. The server is built with `panic = "unwind"` for this.
pub async fn isolated<F: Future>(stats: &Stats, what: &str, work: F) -> Option<F::Output> {
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(output) => Some(output),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            tracing::error!(
                panic = message,
                "a panic ended {what}; the server carries on, other clients are unaffected. \
                 This is a bug: please report it with this log line"
            );
            Stats::add(&stats.connection_panics, 1);
            None
        }
    }
}

/// Pings the peer behind `outbox` every `interval` (never without one)
/// until it fails to answer, then returns having closed it with 1008.
pub async fn keep_pinging(outbox: &Outbox, interval: Option<Duration>) {
    let Some(interval) = interval else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(interval).await;
        if !outbox.ping_or_close(interval) {
            return;
        }
    }
}

/// Serves one upgraded client connection until it closes. `grant` is what
/// the client's token allows; when it expires the connection is closed
/// with 4001 `token expired`.
pub async fn run(
    conn: ConnId,
    socket: Socket,
    early: Bytes,
    ctx: Arc<SessionContext>,
    grant: Grant,
) {
    let (ws_read, continuations, write_half) = split(socket, early, ctx.guard_limits);
    let outbox = Arc::new(Outbox::new(ctx.outbox_limits).with_stats(ctx.stats.clone()));
    if !ctx
        .fanout
        .send(Command::Attach {
            conn,
            outbox: outbox.clone(),
        })
        .await
    {
        outbox.close(close_frame(1001, "server shutting down"));
    }
    ctx.stats.sessions_open.fetch_add(1, Ordering::Relaxed);
    Stats::add(&ctx.stats.sessions_total, 1);

    let expiry = grant
        .expires_at
        .map(|at| tokio::spawn(close_at_expiry(at, outbox.clone())));
    let mut reader = Reader::new(
        conn,
        outbox.clone(),
        ctx.fanout.clone(),
        ctx.symbols.clone(),
        ctx.max_subscriptions,
    )
    .with_grant(grant);
    let rate = RateLimit::new(ctx.max_messages_per_second, std::time::Instant::now());
    let reader_outbox = outbox.clone();
    let reader_stats = ctx.stats.clone();
    // The fan-out pings every attached session (`Fanout::ping_sessions`).
    let session = drive(&outbox, &ctx.stats, write_half, async move {
        let exit = read_messages(
            ws_read,
            &continuations,
            Some(rate),
            &reader_outbox,
            &mut reader,
        )
        .await;
        if exit == ReaderExit::RateLimited {
            Stats::add(&reader_stats.rate_limit_closes, 1);
        }
    });
    // A panic in the writer ends the session here; it still detaches.
    let exit = isolated(&ctx.stats, "a WebSocket session", session).await;
    if let Some(expiry) = expiry {
        expiry.abort();
    }
    tracing::debug!(conn, ?exit, "session ended");
    ctx.fanout.send(Command::Detach { conn }).await;
    ctx.stats.sessions_open.fetch_sub(1, Ordering::Relaxed);
}

/// Closes the connection with 4001 `token expired` once `expires_at` has
/// passed. Runs beside the session, which aborts it when it ends, so a
/// token's lifetime costs one timer per connection and nothing per tick.
async fn close_at_expiry(expires_at: SystemTime, outbox: Arc<Outbox>) {
    // Sleep in bounded steps against the wall clock `exp` is written in:
    // a far-off expiry stays representable and a clock step is noticed.
    const LONGEST_SLEEP: Duration = Duration::from_secs(3600);
    while let Ok(left) = expires_at.duration_since(SystemTime::now()) {
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(left.min(LONGEST_SLEEP)).await;
    }
    outbox.close(close_frame(4001, "token expired"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_ends_only_the_work_it_happened_in_and_is_counted() {
        let stats = Stats::default();
        assert_eq!(isolated(&stats, "fine work", async { 7 }).await, Some(7));
        let panicking = async {
            // Two awaits deep, after a yield, like a handler mid-request.
            tokio::task::yield_now().await;
            panic!("a bug in one connection's handling");
        };
        assert_eq!(isolated(&stats, "buggy work", panicking).await, None::<()>);
        assert_eq!(stats.connection_panics.load(Ordering::Relaxed), 1);
        // The task and runtime it ran on carry on.
        assert_eq!(isolated(&stats, "later work", async { 8 }).await, Some(8));
    }
}
