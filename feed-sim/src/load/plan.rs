//! What the clients will subscribe to: the server's symbol list, learned
//! before the run, and each client's `subscribe` request.
//!
//! The list comes from `GET /symbols` where the server has it (tickcast
//! does), and otherwise from the `subscribed` reply to a `*` subscribe,
//! which any server speaking tickcast's protocol sends, so the same run
//! can load tickcast and a peer without its HTTP routes.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload};
use tokio::net::TcpStream;

use crate::server_msg::subscribed_symbols;
use crate::ws::{self, Target};

/// How long a run waits for a server with no symbols yet to learn some.
const SYMBOLS_WAIT: Duration = Duration::from_secs(10);

/// How long the `*` probe waits for its `subscribed` reply.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the symbol list was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ListedBy {
    /// The server's `GET /symbols`.
    SymbolsRoute,
    /// The `subscribed` reply to a `*` subscribe.
    SubscribedReply,
}

/// The server's symbols, in its order. A server fed from outside learns
/// its symbols from the feed's first ticks: a publisher started beside
/// this run gets a moment, until two reads of the list 250 ms apart agree.
pub(super) async fn learn_symbols(
    target: &Target,
    url: &str,
) -> anyhow::Result<(Vec<String>, ListedBy)> {
    let (mut names, listed_by) = match ws::fetch_symbols(target, None).await {
        Ok(rows) => (
            rows.into_iter().map(|row| row.sym).collect::<Vec<_>>(),
            ListedBy::SymbolsRoute,
        ),
        Err(route) => match probe(target).await {
            Ok(names) => (names, ListedBy::SubscribedReply),
            Err(probe) => bail!(
                "could not learn the server's symbols at {url}: GET http://{}/symbols failed \
                 ({route:#}), and so did a \"*\" subscribe ({probe:#}); is the server running?",
                target.authority
            ),
        },
    };
    let waiting_since = Instant::now();
    loop {
        if waiting_since.elapsed() >= SYMBOLS_WAIT {
            if !names.is_empty() {
                return Ok((names, listed_by));
            }
            bail!(
                "the server at {url} carries no symbols after {} s; is its feed publishing?",
                SYMBOLS_WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let again = match listed_by {
            ListedBy::SymbolsRoute => ws::fetch_symbols(target, None)
                .await
                .map(|rows| rows.into_iter().map(|row| row.sym).collect()),
            ListedBy::SubscribedReply => probe(target).await,
        }
        .with_context(|| format!("could not read the server's symbols again at {url}"))?;
        // Settled: the feed has published each of its symbols once.
        if !again.is_empty() && again.len() == names.len() {
            return Ok((again, listed_by));
        }
        names = again;
    }
}

/// Subscribes one connection to `*` and returns the names its
/// `subscribed` reply lists. Must run inside a `LocalSet`.
async fn probe(target: &Target) -> anyhow::Result<Vec<String>> {
    let exchange = async {
        let stream = TcpStream::connect(target.addr).await.context("connect")?;
        let mut ws = FragmentCollector::new(ws::upgrade(stream, target, None).await?);
        let subscribe = subscribe_message(&["*"]);
        ws.write_frame(Frame::text(Payload::Borrowed(&subscribe)))
            .await
            .context("send subscribe")?;
        loop {
            let frame = ws.read_frame().await.context("read the reply")?;
            match frame.opcode {
                OpCode::Text => {
                    if let Some(names) = subscribed_symbols(&frame.payload) {
                        return Ok(names);
                    }
                }
                OpCode::Close => bail!("the server closed the connection before its reply"),
                _ => {}
            }
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| bail!("no subscribed reply within {PROBE_TIMEOUT:?}"))
}

/// `k` of `names`, evenly spaced over the list; `client` rotates the
/// starting point so that, over many clients, every symbol is chosen about
/// equally often.
pub(super) fn spread_symbols(names: &[String], k: usize, client: usize) -> Vec<&str> {
    let n = names.len();
    let stride = n as f64 / k as f64;
    let offset = client % (n / k).max(1);
    (0..k)
        .map(|j| names[(offset + (j as f64 * stride) as usize) % n].as_str())
        .collect()
}

/// The `subscribe` request for `symbols`.
pub(super) fn subscribe_message(symbols: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "op": "subscribe", "symbols": symbols }))
        .expect("a subscribe serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_subscriptions_evenly() {
        let names: Vec<String> = (0..100).map(|i| format!("S{i}")).collect();
        assert_eq!(spread_symbols(&names, 4, 0), ["S0", "S25", "S50", "S75"]);
        assert_eq!(spread_symbols(&names, 4, 1), ["S1", "S26", "S51", "S76"]);
        let mut hits = vec![0; 100];
        for client in 0..1000 {
            for name in spread_symbols(&names, 4, client) {
                hits[name[1..].parse::<usize>().unwrap()] += 1;
            }
        }
        assert!(hits.iter().all(|&h| h == 40), "{hits:?}");
        assert_eq!(spread_symbols(&names, 100, 3).len(), 100);
    }

    #[test]
    fn subscribe_requests_name_the_symbols() {
        assert_eq!(
            subscribe_message(&["*"]),
            br#"{"op":"subscribe","symbols":["*"]}"#
        );
    }
}
