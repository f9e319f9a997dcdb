//! `GET /healthz` and `GET /symbols`: what an operator or a client checks
//! before connecting.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Serialize;

use super::{text, AppState, Body};

/// 200 `ok` while the server runs and its feed is connected; 503 `not
/// ready: NATS disconnected` while the NATS feed has no connection (the
/// node still serves its last snapshots; a load balancer should send new
/// clients elsewhere).
pub fn healthz(state: &AppState) -> Response<Body> {
    if state
        .session
        .stats
        .feed_connected
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        text(StatusCode::OK, "ok\n")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: NATS disconnected\n",
        )
    }
}

/// `GET /metrics`: every counter and histogram, for Prometheus.
pub fn metrics(state: &AppState) -> Response<Body> {
    Response::builder()
        .header(hyper::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)
        .header(hyper::header::CACHE_CONTROL, "no-store")
        .body(Body::from(state.metrics.render()))
        .expect("static response parts are valid")
}

/// One row of `/symbols`.
#[derive(Serialize)]
struct Quote<'a> {
    sym: &'a str,
    /// Last seq; 0 before the first tick.
    seq: u64,
    px: Option<f64>,
    bid: Option<f64>,
    ask: Option<f64>,
    ts: Option<u64>,
}

/// Every symbol with its last price and seq, as a JSON array. With
/// `--auth-secret` it needs a client token (or the ingest token, for a
/// publisher carrying on the seqs) and lists only the symbols it covers.
pub async fn symbols(req: &Request<Incoming>, state: &Arc<AppState>) -> Response<Body> {
    let grant = match &state.auth {
        None => None,
        Some(auth) => {
            let token = super::ws::presented_token(req);
            let publisher = state
                .ingest
                .as_ref()
                .is_some_and(|port| port.is_token(token.as_deref()));
            if publisher {
                None
            } else {
                match auth.verify(token.as_deref()) {
                    Ok(grant) => Some(grant),
                    Err(err) => return super::ws::unauthorized(format!("{err}\n")),
                }
            }
        }
    };
    let Some(quotes) = state.fanout.quotes().await else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down\n",
        );
    };
    let table = &state.session.symbols;
    let rows: Vec<Quote<'_>> = table
        .ids()
        .zip(quotes)
        .filter(|&(id, _)| grant.as_ref().is_none_or(|g| g.allows(table.name(id))))
        .map(|(id, last)| Quote {
            sym: table.name(id),
            seq: last.map_or(0, |t| t.seq),
            px: last.map(|t| t.px),
            bid: last.map(|t| t.bid),
            ask: last.map(|t| t.ask),
            ts: last.map(|t| t.ts),
        })
        .collect();
    let body = serde_json::to_vec(&rows).expect("serializing to memory cannot fail");
    Response::builder()
        .status(StatusCode::OK)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response parts")
}
