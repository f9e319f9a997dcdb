//! `GET /ws`: the WebSocket upgrade, then hand-over to a `session`.
//!
//! fastwebsockets performs the handshake. Once hyper has switched
//! protocols, the session takes the raw `TcpStream` back out of hyper
//! (`Upgraded::downcast`) together with any bytes the client sent right
//! after its handshake, because the session writes pre-built shared frames
//! to the socket itself.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{text, AppState, Body};
use crate::session;

/// Answers an upgrade request with 101 and starts the session, or explains
/// why not.
pub fn upgrade(mut req: Request<Incoming>, state: &Arc<AppState>) -> Response<Body> {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        let mut response = text(
            StatusCode::UPGRADE_REQUIRED,
            "/ws is a WebSocket endpoint: connect with a WebSocket client, \
             e.g. `websocat ws://HOST:PORT/ws`, then send {\"op\":\"subscribe\",\"symbols\":[\"AAPL\"]}\n",
        );
        response.headers_mut().insert(
            hyper::header::UPGRADE,
            hyper::header::HeaderValue::from_static("websocket"),
        );
        response.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("Upgrade"),
        );
        return response;
    }
    let (response, upgrade) =
        match fastwebsockets::upgrade::upgrade(&mut req) {
            Ok(parts) => parts,
            Err(_) => return text(
                StatusCode::BAD_REQUEST,
                "bad WebSocket handshake: send Sec-WebSocket-Key and Sec-WebSocket-Version: 13\n",
            ),
        };
    let conn = state.conn_id();
    let ctx = state.session.clone();
    state.tasks.spawn(async move {
        let upgraded = match upgrade.await {
            Ok(ws) => ws.into_inner().into_inner(),
            Err(err) => {
                tracing::debug!(conn, %err, "WebSocket upgrade did not complete");
                return;
            }
        };
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => session::run(conn, parts.io.into_inner(), parts.read_buf, ctx).await,
            Err(_) => tracing::error!(conn, "upgraded connection is not a TCP stream"),
        }
    });
    response.map(|_| Full::new(Bytes::new()))
}
