//! The edge: accepts TCP connections, completes their TLS handshake (with
//! `--tls-cert`/`--tls-key`; a WebSocket's rustls session then moves to its
//! shard, which encrypts and decrypts its traffic), serves HTTP/1.1 with
//! hyper, and routes requests.
//! None of it runs on a shard's thread, so the control plane cannot delay
//! ticks.
//!
//! * `GET /` (and `/dashboard.js`, `/dashboard.css`) → [`dashboard`]: the
//!   live dashboard page, built into the binary; `GET /tickcast-client.js`
//!   → [`dashboard`]: the JavaScript client library it is built on.
//! * `GET /ws` → [`ws`]: WebSocket upgrade, then handoff to a `shard`.
//! * `GET /ingest` → [`ws`]: a publisher's upgrade (with `--feed ingest`).
//! * `GET <--echo-route>` → [`ws`]: the echo endpoint for conformance
//!   suites (off by default).
//! * `GET /healthz`, `GET /symbols`, `GET /metrics` → [`status`].
//! * anything else → 404 with a list of the routes.

pub mod dashboard;
pub mod status;
pub mod ws;

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::error::panic_message;
use crate::feed::ingest::IngestPort;
use crate::limits::ConnectionLimits;
use crate::metrics::Metrics;
use crate::session::{ConnId, SessionContext};
use crate::shard::Shards;
use crate::stats::Stats;

/// Response body type of every route.
pub type Body = Full<Bytes>;

/// What the routes share.
#[derive(Debug)]
pub struct AppState {
    /// What every WebSocket session is served with.
    pub session: Arc<SessionContext>,
    /// Where upgraded WebSocket connections go; `/symbols` asks them too.
    pub shards: Arc<Shards>,
    /// `/symbols`' answers, shared by concurrent requests.
    pub quotes: status::Quotes,
    /// For `/metrics`.
    pub metrics: Metrics,
    /// The echo endpoint's path, with `--echo-route`.
    pub echo_route: Option<String>,
    /// Where publishers plug in, with `--feed ingest`.
    pub ingest: Option<Arc<IngestPort>>,
    /// Checks client tokens, with `--auth-secret`; `None` admits anyone.
    pub auth: Option<Authenticator>,
    /// How many WebSocket connections may be open.
    pub limits: Arc<ConnectionLimits>,
    /// Browser origins allowed on /ws; empty: any.
    pub allowed_origins: Vec<String>,
    /// How long a connection may take to send a request head.
    pub handshake_timeout: Duration,
    /// Source of connection ids.
    pub next_conn: AtomicU64,
    /// Fires on shutdown.
    pub shutdown: CancellationToken,
    /// Tracks every HTTP connection task, so shutdown can wait for them.
    pub tasks: TaskTracker,
}

impl AppState {
    /// A fresh connection id.
    pub fn conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// Accepts connections until `state.shutdown` fires. With `tls`, each
/// connection must complete a TLS handshake (within the handshake
/// timeout) before it is served; without it, HTTP is spoken in the clear.
pub async fn serve(listener: TcpListener, state: Arc<AppState>, tls: Option<TlsAcceptor>) {
    loop {
        let accepted = tokio::select! {
            () = state.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors or a connection reset during
                // accept: back off briefly rather than spin.
                tracing::warn!(%err, "accept failed; retrying shortly");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Frames are coalesced by the writer already; Nagle would only add
        // delay on top.
        let _ = socket.set_nodelay(true);
        let state = state.clone();
        let tasks = state.tasks.clone();
        let stats = state.session.stats.clone();
        let tls = tls.clone();
        // A panic while serving one connection ends that connection only.
        let connection = async move {
            match tls {
                None => serve_connection(socket, peer.ip(), state).await,
                Some(acceptor) => {
                    if let Some(stream) = tls_handshake(&acceptor, socket, &state).await {
                        serve_connection(stream, peer.ip(), state).await;
                    }
                }
            }
        };
        tasks.spawn(async move { isolated(&stats, "an HTTP connection", connection).await });
    }
}

/// Completes the server side of a TLS handshake on `socket`, or gives up
/// when it fails, takes longer than the handshake timeout, or shutdown
/// comes first.
async fn tls_handshake(
    acceptor: &TlsAcceptor,
    socket: TcpStream,
    state: &AppState,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let handshake = tokio::time::timeout(state.handshake_timeout, acceptor.accept(socket));
    tokio::select! {
        finished = handshake => match finished {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(err)) => {
                tracing::debug!(%err, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                None
            }
        },
        () = state.shutdown.cancelled() => None,
    }
}

/// Largest request head (request line, query string and token included,
/// and headers) a client may send; hyper answers a longer one with 431
/// and closes the connection. A token is a few hundred bytes.
pub const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;

/// Most headers in one request; hyper answers more with 431.
pub const MAX_REQUEST_HEADERS: usize = 100;

/// Serves HTTP/1.1 (and upgrades) on one connection until it ends or
/// shutdown has let its last request finish.
async fn serve_connection<S>(stream: S, peer: IpAddr, state: Arc<AppState>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(|req| route(req, peer, state.clone()));
    // The header timeout also drops a connection that sends nothing
    // (or trickles a request head in: slowloris).
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(state.handshake_timeout)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES)
        .max_headers(MAX_REQUEST_HEADERS)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(%peer, %err, "HTTP connection ended with an error");
            }
        }
        () = state.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn route(
    req: Request<Incoming>,
    peer: IpAddr,
    state: Arc<AppState>,
) -> Result<Response<Body>, Infallible> {
    let page = dashboard::asset(req.uri().path());
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, _) if page.is_some() => {
            let (body, content_type) = page.expect("matched by the guard");
            dashboard::serve(body, content_type)
        }
        (&Method::GET, "/ws") => ws::upgrade(req, peer, &state),
        (&Method::GET, path) if state.echo_route.as_deref() == Some(path) => {
            ws::echo(req, peer, &state)
        }
        (&Method::GET, "/ingest") => ws::ingest(req, &state).await,
        (&Method::GET, "/healthz") => status::healthz(&state),
        (&Method::GET, "/symbols") => status::symbols(&req, &state).await,
        (&Method::GET, "/metrics") => status::metrics(&state),
        (
            _,
            "/"
            | "/ws"
            | "/healthz"
            | "/symbols"
            | "/metrics"
            | "/dashboard.js"
            | "/dashboard.css"
            | dashboard::CLIENT_PATH,
        ) => text(StatusCode::METHOD_NOT_ALLOWED, "use GET on this path\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; tickcast serves GET / (dashboard), GET /ws (WebSocket), GET /symbols, \
             GET /metrics, GET /healthz and GET /tickcast-client.js (the JavaScript client)\n",
        ),
    };
    Ok(response)
}

/// Runs `work`, one connection's handling on the edge; a panic in it ends
/// only that work: it is logged (as a bug, with `what` it was and the
/// panic's message), counted in [`Stats::connection_panics`], and `None` is
/// returned. The server is built with `panic = "unwind"` for this.
pub async fn isolated<F: Future>(stats: &Stats, what: &str, work: F) -> Option<F::Output> {
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(output) => Some(output),
        Err(panic) => {
            let message = panic_message(&*panic);
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

/// A plain-text response.
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response parts are valid")
}
