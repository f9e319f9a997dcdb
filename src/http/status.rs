//! `GET /healthz` and `GET /symbols`: what an operator or a client checks
//! before connecting.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Serialize;

use super::{text, AppState, Body};
use crate::price::Price;
use crate::tick::Tick;

/// The last quotes of every symbol, as `GET /symbols` serves them.
///
/// They stay with the first shard's fan-out, which owns them: asking it is
/// a message on its control channel, answered between two passes, so the
/// tick path shares no lock with HTTP. What keeps a flood of requests from
/// costing the tick path is that concurrent requests share one answer: a
/// request is served the newest snapshot taken after it arrived, and while
/// one is being taken, every request that comes in waits for the next.
/// However many requests a second arrive, the shard copies its quotes at
/// most once per pass, and each request sees every tick that shard had
/// fanned out when it was asked.
#[derive(Debug, Default)]
pub struct Quotes {
    /// The newest snapshot and when it was asked for.
    latest: tokio::sync::Mutex<Option<(Instant, Snapshot)>>,
}

/// The last tick of every symbol, in symbol order (`None`: not traded).
pub type Snapshot = Arc<Vec<Option<Tick>>>;

impl Quotes {
    /// A snapshot taken (by `take`) after this call began; `None` once the
    /// shards have stopped (shutdown).
    pub async fn get<F, Fut>(&self, take: F) -> Option<Snapshot>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Option<Vec<Option<Tick>>>>,
    {
        let arrived = Instant::now();
        let mut latest = self.latest.lock().await;
        if let Some((asked_at, quotes)) = &*latest {
            if *asked_at >= arrived {
                return Some(quotes.clone());
            }
        }
        let asked_at = Instant::now();
        let quotes = Arc::new(take().await?);
        *latest = Some((asked_at, quotes.clone()));
        Some(quotes)
    }
}

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
    px: Option<Price>,
    bid: Option<Price>,
    ask: Option<Price>,
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
    let Some(quotes) = state.quotes.get(|| state.shards.quotes()).await else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down\n",
        );
    };
    // Every symbol the registry holds; one whose first tick the fan-out
    // has not met yet has no quote.
    let names = state.session.symbols.names();
    let rows: Vec<Quote<'_>> = names
        .iter()
        .enumerate()
        .map(|(id, name)| (name, quotes.get(id).copied().flatten()))
        .filter(|&(name, _)| grant.as_ref().is_none_or(|g| g.allows(name)))
        .map(|(name, last)| Quote {
            sym: name,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_snapshots_and_none_is_stale() {
        // The shard's part: each snapshot carries its own number.
        let taken = Arc::new(AtomicU64::new(0));
        let take = |counter: Arc<AtomicU64>| async move {
            tokio::task::yield_now().await;
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let tick = Tick {
                symbol: 0,
                seq: n,
                px: Price::ZERO,
                bid: Price::ZERO,
                ask: Price::ZERO,
                size: 1,
                ts: 0,
            };
            Some(vec![Some(tick)])
        };
        let quotes = Arc::new(Quotes::default());
        let requests: Vec<_> = (0..500)
            .map(|_| {
                let (quotes, taken) = (quotes.clone(), taken.clone());
                tokio::spawn(async move {
                    let before = taken.load(Ordering::SeqCst);
                    let got = quotes.get(|| take(taken.clone())).await.unwrap();
                    // Taken after the request arrived: newer than any
                    // snapshot that existed when it did.
                    assert!(got[0].unwrap().seq > before);
                })
            })
            .collect();
        for request in requests {
            request.await.unwrap();
        }
        let snapshots = taken.load(Ordering::SeqCst);
        assert!(
            (1..100).contains(&snapshots),
            "500 requests took {snapshots} snapshots"
        );
    }
}
