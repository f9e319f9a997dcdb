//! Publishing test ticks through `/ingest`, for tests that need to know
//! exactly which ticks the server has.

use serde_json::{json, Value};
use tickcast::config::FeedSource;
use tickcast::Config;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::{config, within, Client, TestServer};

/// The ingest token of [`ingest_config`].
pub const TOKEN: &str = "s3cret token";

/// A test configuration fed through `/ingest` (10 symbols) instead of the
/// simulator.
pub fn ingest_config() -> Config {
    let mut cfg = config();
    cfg.feed = FeedSource::Ingest;
    cfg.ingest_token = Some(TOKEN.into());
    cfg.symbols = 10;
    cfg
}

/// Opens /ingest with `token` in the Authorization header; the HTTP status
/// if refused.
pub async fn publisher(server: &TestServer, token: &str) -> Result<Client, u16> {
    let mut request = format!("ws://{}/ingest", server.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    match within("ingest connect", tokio_tungstenite::connect_async(request)).await {
        Ok((ws, _)) => Ok(Client { ws }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("unexpected connect error: {other}"),
    }
}

/// A published tick of `sym` with `seq` and price `px`.
pub fn tick(sym: &str, seq: u64, px: f64) -> Value {
    json!({"sym": sym, "seq": seq, "px": px, "bid": px - 0.01, "ask": px + 0.01,
           "size": 100 + seq, "ts": 1_700_000_000_000_000_000u64 + seq})
}

/// The ticks `seqs` of `sym` as one message.
pub fn ticks(sym: &str, seqs: impl IntoIterator<Item = u64>) -> Value {
    Value::Array(
        seqs.into_iter()
            .map(|seq| tick(sym, seq, 100.0 + seq as f64 / 100.0))
            .collect(),
    )
}
