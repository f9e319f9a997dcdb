//! Publishing test ticks through `/ingest`, for tests that need to know
//! exactly which ticks the server has.

use serde_json::{json, Value};
use tickcast::config::FeedSource;
use tickcast::Config;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::{config, within, Client, TestServer};

/// The ingest token of [`ingest_config`].
pub const TOKEN: &str = "s3cret token";

/// A test configuration fed through `/ingest` instead of the simulator,
/// carrying a fixed list of 10 symbols (the simulator's first ten, in
/// cents), so clients can subscribe before anything is published.
pub fn ingest_config() -> Config {
    let mut cfg = config();
    cfg.feed = FeedSource::Ingest;
    cfg.ingest_token = Some(TOKEN.into());
    cfg.symbols_file = Some(symbols_file(10));
    cfg
}

/// A `--symbols-file` listing the simulator's first `count` tickers at
/// two decimals, a new file per call.
pub fn symbols_file(count: usize) -> std::path::PathBuf {
    static WRITTEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = WRITTEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(
        "tickcast-test-symbols-{}-{n}.txt",
        std::process::id()
    ));
    let list: String = tickcast::feed::symbols::universe(count)
        .iter()
        .map(|spec| format!("{},{}\n", spec.name, spec.decimals))
        .collect();
    std::fs::write(&path, list).expect("write a symbols file in the temp dir");
    path
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

/// A published tick of `sym` with `seq` and price `px` (whole cents):
/// `px` as a JSON number, bid and ask a cent either side as decimal
/// strings, the two forms a publisher may use.
pub fn tick(sym: &str, seq: u64, px: f64) -> Value {
    let cents = (px * 100.0).round() as i64;
    let text = |c: i64| {
        tickcast::price::Price::from_scaled(c, 2)
            .expect("a price in range")
            .to_string()
    };
    // The double nearest the decimal, which JSON prints as that decimal.
    let px = cents as f64 / 100.0;
    json!({"sym": sym, "seq": seq, "px": px, "bid": text(cents - 1), "ask": text(cents + 1),
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
