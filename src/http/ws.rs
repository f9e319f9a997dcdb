//! `GET /ws`: the token check (with `--auth-secret`), the WebSocket
//! upgrade, then handoff to a `shard`.
//!
//! fastwebsockets performs the handshake. Once hyper has switched
//! protocols, the raw connection comes back out of hyper
//! (`Upgraded::downcast`: a `TcpStream`, or a TLS stream with TLS on)
//! together with any bytes the client sent right after its handshake, and
//! is handed to a `shard`, whose event loop serves it from then on: the
//! edge keeps nothing of it but its place under the connection limits.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{isolated, text, AppState, Body};
use crate::auth::Grant;
use crate::feed::ingest::Refused;
use crate::limits::{LimitReached, Slot};
use crate::session::Mode;
use crate::shard::transport::Transport;
use crate::shard::Handoff;

/// A server-side TLS stream over TCP, as the edge's acceptor makes it.
type TlsSocket = tokio_rustls::server::TlsStream<TcpStream>;

/// `GET /ws`: answers an upgrade request with 101 and starts a client
/// session, or explains why not. With `--auth-secret` the client's token
/// is checked first: without a valid one the answer is 401.
pub fn upgrade(req: Request<Incoming>, peer: IpAddr, state: &Arc<AppState>) -> Response<Body> {
    if let Some(refused) = check_origin(&req, &state.allowed_origins) {
        return refused;
    }
    let grant = match &state.auth {
        None => Grant::unrestricted(),
        Some(auth) => match auth.verify(presented_token(&req).as_deref()) {
            Ok(grant) => Arc::new(grant),
            Err(err) => {
                tracing::debug!(%err, "refused a client's token");
                return unauthorized(format!("{err}\n"));
            }
        },
    };
    let slot = match state.limits.acquire(peer) {
        Ok(slot) => slot,
        Err(full) => return limited(full),
    };
    accept(req, state, Mode::Client, grant, slot)
}

/// 403 unless the request's `Origin` (if any) is allowed.
fn check_origin(req: &Request<Incoming>, allowed: &[String]) -> Option<Response<Body>> {
    if allowed.is_empty() {
        return None;
    }
    let origin = req.headers().get(hyper::header::ORIGIN)?;
    if allowed
        .iter()
        .any(|allowed| origin.as_bytes().eq_ignore_ascii_case(allowed.as_bytes()))
    {
        return None;
    }
    Some(text(
        StatusCode::FORBIDDEN,
        "this page's origin may not open WebSockets here; the server's --allowed-origins lists the ones that may\n",
    ))
}

/// 503 or 429 for an upgrade past the connection limits.
fn limited(full: LimitReached) -> Response<Body> {
    let (status, body) = match full {
        LimitReached::Server(max) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the server has its maximum of {max} connections open; try again later or another server\n"),
        ),
        LimitReached::Address(max) => (
            StatusCode::TOO_MANY_REQUESTS,
            format!("your address has its maximum of {max} connections open; close one first\n"),
        ),
    };
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(hyper::header::RETRY_AFTER, "5")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// `GET <--echo-route>`: the WebSocket echo endpoint for conformance
/// suites.
pub fn echo(req: Request<Incoming>, peer: IpAddr, state: &Arc<AppState>) -> Response<Body> {
    let slot = match state.limits.acquire(peer) {
        Ok(slot) => slot,
        Err(full) => return limited(full),
    };
    accept(req, state, Mode::Echo, Grant::unrestricted(), slot)
}

/// A `401` with `body` and the `WWW-Authenticate: Bearer` challenge.
pub(super) fn unauthorized(body: String) -> Response<Body> {
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(hyper::header::WWW_AUTHENTICATE, "Bearer")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// `GET /ingest`: admits a publisher (401 without the right token; 426
/// without an upgrade, 400 for a bad handshake; a connected publisher is
/// replaced, 409 if it does not let go in time), completes the upgrade
/// with fastwebsockets and hands the publisher the ring
/// ([`Publisher::run`](crate::feed::ingest::Publisher::run)) on a task of
/// its own.
pub async fn ingest(mut req: Request<Incoming>, state: &Arc<AppState>) -> Response<Body> {
    let Some(port) = &state.ingest else {
        return text(
            StatusCode::NOT_FOUND,
            "this server runs its built-in feed; start it with --feed ingest --ingest-token TOKEN to accept publishers\n",
        );
    };
    let token = presented_token(&req);
    let bad_token = || {
        let mut response = text(
            StatusCode::UNAUTHORIZED,
            "a publisher needs the server's ingest token: send `Authorization: Bearer TOKEN` or ?token=TOKEN\n",
        );
        response.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        response
    };
    // The token first, then the handshake, and only then the takeover: a
    // request that cannot become a publisher never closes the current one.
    if !port.is_token(token.as_deref()) {
        return bad_token();
    }
    if let Some(refused) = not_an_upgrade(
        &req,
        "this is the publishers' WebSocket endpoint: connect with a WebSocket client, \
         e.g. `feed-sim publish`, and send ticks as JSON text frames\n",
    ) {
        return refused;
    }
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(parts) => parts,
        Err(_) => return bad_handshake(),
    };
    let publisher = match port.admit(token.as_deref()).await {
        Ok(publisher) => publisher,
        Err(Refused::BadToken) => return bad_token(),
        Err(Refused::Busy) => {
            return text(
                StatusCode::CONFLICT,
                "another publisher is connected and did not let go in time; try again\n",
            )
        }
    };
    let stats = state.session.stats.clone();
    let connection = async move {
        match upgrade.await {
            Ok(ws) => publisher.run(ws).await,
            // Dropping the publisher gives the ring back.
            Err(err) => tracing::debug!(%err, "the publisher's WebSocket upgrade did not complete"),
        }
    };
    // A panic while serving the publisher ends its connection alone (and
    // gives the ring back).
    state
        .tasks
        .spawn(async move { isolated(&stats, "the /ingest publisher", connection).await });
    response.map(|_| Full::new(Bytes::new()))
}

/// The token in `Authorization: Bearer …` or the `token` query parameter.
pub(super) fn presented_token(req: &Request<Incoming>) -> Option<String> {
    let header = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        });
    if let Some(token) = header {
        return Some(token.trim().to_string());
    }
    req.uri().query()?.split('&').find_map(|pair| {
        let value = pair.strip_prefix("token=")?;
        Some(percent_decode(value))
    })
}

/// Decodes `%XX` escapes of a query value. A `+` stays a `+` (tokens are
/// often base64).
fn percent_decode(value: &str) -> String {
    fn hex(byte: u8) -> Option<u8> {
        (byte as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) => hex(hi).zip(hex(lo)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (None, other) => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Performs the handshake and, once hyper has switched protocols, hands
/// the raw connection and the bytes the peer sent after its handshake to
/// a shard, to be served in `mode`.
fn accept(
    mut req: Request<Incoming>,
    state: &Arc<AppState>,
    mode: Mode,
    grant: Arc<Grant>,
    slot: Slot,
) -> Response<Body> {
    if let Some(refused) = not_an_upgrade(&req, CONNECT_ADVICE) {
        return refused;
    }
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(parts) => parts,
        Err(_) => return bad_handshake(),
    };
    let conn = state.conn_id();
    let shards = state.shards.clone();
    let connection = async move {
        let upgraded = match upgrade.await {
            Ok(ws) => ws.into_inner().into_inner(),
            Err(err) => {
                tracing::debug!(%err, "WebSocket upgrade did not complete");
                return;
            }
        };
        let handed = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => Transport::from_tokio(parts.io.into_inner()).map(|t| (t, parts.read_buf)),
            Err(upgraded) => match upgraded.downcast::<TokioIo<TlsSocket>>() {
                Ok(parts) => {
                    Transport::from_tokio_tls(parts.io.into_inner()).map(|t| (t, parts.read_buf))
                }
                Err(_) => {
                    tracing::error!("upgraded connection is neither TCP nor TLS over TCP");
                    return;
                }
            },
        };
        match handed {
            Ok((transport, early)) => shards.hand_off(Handoff {
                transport,
                early: early.to_vec(),
                conn,
                mode,
                grant,
                slot,
            }),
            Err(err) => tracing::debug!(%err, "could not take an upgraded connection from tokio"),
        }
    };
    let stats = state.session.stats.clone();
    // A panic while taking the upgraded connection ends it alone.
    state
        .tasks
        .spawn(async move { isolated(&stats, "a WebSocket upgrade", connection).await });
    response.map(|_| Full::new(Bytes::new()))
}

/// What a plain request to `/ws` (or the echo route) is told.
const CONNECT_ADVICE: &str = "this is a WebSocket endpoint: connect with a WebSocket client, \
     e.g. `websocat ws://HOST:PORT/ws`, then send {\"op\":\"subscribe\",\"symbols\":[\"AAPL\"]}\n";

/// 426 with `advice` for a plain request to a WebSocket endpoint.
fn not_an_upgrade(req: &Request<Incoming>, advice: &'static str) -> Option<Response<Body>> {
    if fastwebsockets::upgrade::is_upgrade_request(req) {
        return None;
    }
    let mut response = text(StatusCode::UPGRADE_REQUIRED, advice);
    response.headers_mut().insert(
        hyper::header::UPGRADE,
        hyper::header::HeaderValue::from_static("websocket"),
    );
    response.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("Upgrade"),
    );
    Some(response)
}

/// 400 for an upgrade request fastwebsockets cannot answer.
fn bad_handshake() -> Response<Body> {
    text(
        StatusCode::BAD_REQUEST,
        "bad WebSocket handshake: send Sec-WebSocket-Key and Sec-WebSocket-Version: 13\n",
    )
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn query_tokens_are_percent_decoded() {
        assert_eq!(percent_decode("a%2Bb+c%zz%4"), "a+b+c%zz%4");
        assert_eq!(percent_decode("%C3%A9%"), "é%");
        assert_eq!(percent_decode("plain"), "plain");
    }
}
