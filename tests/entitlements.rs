//! Entitlements against the real server: with `--auth-secret`, /ws answers
//! 401 before the upgrade without a valid token, a client sees only the
//! symbols its token covers, and its connection is closed with 4001 when
//! the token expires. Without the secret the server stays open.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};
use tickcast::auth::{encode, mint, Claims};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

const SECRET: &str = "entitlements test secret";

/// The first 20 symbols of the built-in universe.
const UNIVERSE: u32 = 20;

/// What `["A*", "M?"]` covers among them, in server order.
const A_STAR_OR_M_ANY: [&str; 4] = ["AAPL", "AMZN", "AVGO", "MA"];

async fn guarded_server() -> TestServer {
    let mut cfg = config();
    cfg.symbols = UNIVERSE;
    cfg.auth_secret = Some(SECRET.into());
    start(cfg).await
}

fn token(symbols: &[&str], ttl: Duration) -> String {
    let symbols: Vec<String> = symbols.iter().map(|s| s.to_string()).collect();
    mint(SECRET.as_bytes(), &symbols, ttl, Some("test"))
}

const HOUR: Duration = Duration::from_secs(3600);

/// A refused upgrade: status, `WWW-Authenticate`, body.
#[derive(Debug)]
struct Refusal {
    status: u16,
    challenge: Option<String>,
    body: String,
}

/// Opens `/ws{query}`, with `Authorization: Bearer {bearer}` if given.
async fn open(server: &TestServer, bearer: Option<&str>, query: &str) -> Result<Client, Refusal> {
    let mut request = format!("{}{query}", server.url())
        .into_client_request()
        .unwrap();
    if let Some(token) = bearer {
        request
            .headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    }
    match within("connect", tokio_tungstenite::connect_async(request)).await {
        Ok((ws, _)) => Ok(Client { ws }),
        Err(WsError::Http(response)) => Err(Refusal {
            status: response.status().as_u16(),
            challenge: response
                .headers()
                .get("WWW-Authenticate")
                .map(|v| v.to_str().unwrap().to_string()),
            body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned(),
        }),
        Err(other) => panic!("unexpected connect error: {other}"),
    }
}

/// Asserts a 401 whose body contains `says` and points at how to get a
/// valid token.
fn assert_refused(result: Result<Client, Refusal>, says: &str, how: &str) {
    let refusal = match result {
        Ok(_) => panic!("the upgrade was accepted; expected 401 ({says})"),
        Err(refusal) => refusal,
    };
    assert_eq!(refusal.status, 401, "{refusal:?}");
    assert_eq!(refusal.challenge.as_deref(), Some("Bearer"), "{refusal:?}");
    assert!(refusal.body.contains(says), "{refusal:?}");
    assert!(refusal.body.contains(how), "{refusal:?}");
}

/// The ticks and snapshots in a message (a `ticks` batch holds several).
fn quotes(msg: &Value) -> Vec<Value> {
    match msg["type"].as_str() {
        Some("tick" | "snapshot") => vec![msg.clone()],
        Some("ticks") => msg["data"].as_array().cloned().unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Reads `count` ticks (snapshots included) and fails on any symbol
/// outside `allowed`; returns the symbols seen.
async fn only_ticks_of(client: &mut Client, allowed: &[&str], count: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut read = 0;
    while read < count {
        let msg = client.recv().await;
        assert_ne!(msg["type"], "error", "unexpected error: {msg}");
        for quote in quotes(&msg) {
            let sym = quote["sym"].as_str().unwrap().to_string();
            assert!(
                allowed.contains(&sym.as_str()),
                "tick of {sym}, outside {allowed:?}: {quote}"
            );
            if !seen.contains(&sym) {
                seen.push(sym);
            }
            read += 1;
        }
    }
    seen
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_missing_token_is_refused_before_the_upgrade() {
    let server = guarded_server().await;
    assert_refused(
        open(&server, None, "").await,
        "missing token",
        "tickcast token",
    );
    // An empty query value is no token either.
    assert_refused(
        open(&server, None, "?token=").await,
        "missing token",
        "Authorization: Bearer",
    );
    server.stop().await;
}

#[tokio::test]
async fn a_token_signed_with_another_secret_is_refused_as_forged() {
    let server = guarded_server().await;
    let forged = mint(b"not the server's secret", &["*".into()], HOUR, None);
    assert_refused(
        open(&server, Some(&forged), "").await,
        "forged token",
        "issued for this server",
    );
    server.stop().await;
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let server = guarded_server().await;
    let expired = encode(
        SECRET.as_bytes(),
        &Claims {
            sub: None,
            exp: unix_now() - 5,
            symbols: vec!["*".into()],
        },
    );
    assert_refused(
        open(&server, Some(&expired), "").await,
        "expired token",
        "fresh token",
    );
    server.stop().await;
}

#[tokio::test]
async fn a_malformed_token_is_refused() {
    let server = guarded_server().await;
    for garbage in ["not-a-jwt", "a.b.c"] {
        assert_refused(
            open(&server, Some(garbage), "").await,
            "malformed token",
            "tickcast token",
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_valid_token_is_accepted_in_the_header_or_the_query() {
    let server = guarded_server().await;
    let token = token(&["AAPL"], HOUR);
    let mut by_header = open(&server, Some(&token), "").await.expect("admitted");
    let reply = by_header.subscribe(&["AAPL"]).await;
    assert_eq!(reply["symbols"], json!(["AAPL"]));
    // Query values are percent-decoded (`%2E` is `.`).
    let escaped = token.replace('.', "%2E");
    let mut by_query = open(&server, None, &format!("?token={escaped}"))
        .await
        .expect("admitted");
    let reply = by_query.subscribe(&["AAPL"]).await;
    assert_eq!(reply["symbols"], json!(["AAPL"]));
    drop((by_header, by_query));
    server.stop().await;
}

#[tokio::test]
async fn a_token_from_tickcast_token_is_accepted() {
    let server = guarded_server().await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tickcast"))
        .args(["token", "--secret", SECRET, "--symbols", "MSFT,NV*"])
        .args(["--ttl", "10m", "--sub", "cli"])
        .output()
        .expect("run tickcast token");
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap();
    let mut client = open(&server, Some(token.trim()), "")
        .await
        .expect("admitted");
    let reply = client.subscribe(&["*"]).await;
    assert_eq!(reply["symbols"], json!(["MSFT", "NVDA"]));
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn symbols_within_the_claim_stream_as_usual() {
    let server = guarded_server().await;
    let mut client = open(&server, Some(&token(&["AAPL", "NV*"], HOUR)), "")
        .await
        .expect("admitted");
    let reply = client.subscribe(&["AAPL", "NVDA"]).await;
    assert_eq!(reply["symbols"], json!(["AAPL", "NVDA"]));
    let seen = only_ticks_of(&mut client, &["AAPL", "NVDA"], 200).await;
    assert_eq!(seen.len(), 2, "ticks of both symbols arrive: {seen:?}");
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn symbols_outside_the_claim_get_not_entitled_and_no_ticks() {
    let server = guarded_server().await;
    let mut client = open(&server, Some(&token(&["AAPL", "NV*"], HOUR)), "")
        .await
        .expect("admitted");
    client
        .send(json!({"op": "subscribe", "symbols": ["TSLA", "AAPL", "MSFT"]}))
        .await;
    let error = client.recv().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "not_entitled", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("TSLA") && message.contains("MSFT") && !message.contains("\"AAPL\""),
        "{message}"
    );
    // The entitled symbol of the same request still applies.
    let reply = client.recv().await;
    assert_eq!(reply, json!({"type": "subscribed", "symbols": ["AAPL"]}));
    only_ticks_of(&mut client, &["AAPL"], 300).await;

    // A request of only refused symbols subscribes nothing.
    client
        .send(json!({"op": "subscribe", "symbols": ["TSLA"]}))
        .await;
    let error = client
        .recv_until(|v| v["type"] != "tick" && v["type"] != "ticks")
        .await;
    assert_eq!(error["code"], "not_entitled", "{error}");
    only_ticks_of(&mut client, &["AAPL"], 300).await;
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn star_under_a_pattern_claim_subscribes_exactly_the_covered_symbols() {
    let server = guarded_server().await;
    let mut client = open(&server, Some(&token(&["A*", "M?"], HOUR)), "")
        .await
        .expect("admitted");
    let reply = client.subscribe(&["*"]).await;
    assert_eq!(reply["symbols"], json!(A_STAR_OR_M_ANY));
    let seen = only_ticks_of(&mut client, &A_STAR_OR_M_ANY, 600).await;
    assert_eq!(seen.len(), A_STAR_OR_M_ANY.len(), "{seen:?}");
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn star_under_an_everything_claim_subscribes_everything() {
    let server = guarded_server().await;
    let mut client = open(&server, Some(&token(&["*"], HOUR)), "")
        .await
        .expect("admitted");
    let reply = client.subscribe(&["*"]).await;
    assert_eq!(
        reply["symbols"].as_array().unwrap().len(),
        UNIVERSE as usize
    );
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn a_token_that_expires_while_connected_closes_with_4001() {
    let server = guarded_server().await;
    // `exp` is whole seconds: this token has one to two seconds left.
    let mut client = open(&server, Some(&token(&["AAPL"], Duration::from_secs(2))), "")
        .await
        .expect("admitted");
    let reply = client.subscribe(&["AAPL"]).await;
    assert_eq!(reply["symbols"], json!(["AAPL"]));
    // Ticks keep coming until then, so the wait is bounded as a whole.
    let close = within("the 4001 close", client.expect_close()).await;
    assert_eq!(code(&close), 4001, "{close:?}");
    assert_eq!(close.unwrap().reason, "token expired");
    server
        .until_stats("the session to end", |stats| {
            stats
                .sessions_open
                .load(std::sync::atomic::Ordering::Relaxed)
                == 0
        })
        .await;
    server.stop().await;
}

#[tokio::test]
async fn without_a_secret_the_server_is_open_to_anyone() {
    let mut cfg = config();
    cfg.symbols = UNIVERSE;
    let server = start(cfg).await;
    let mut client = open(&server, None, "").await.expect("admitted");
    let reply = client.subscribe(&["*"]).await;
    assert_eq!(
        reply["symbols"].as_array().unwrap().len(),
        UNIVERSE as usize
    );
    // A token is ignored, not checked.
    let mut with_garbage = open(&server, Some("not-a-jwt"), "")
        .await
        .expect("admitted");
    with_garbage.subscribe(&["TSLA"]).await;
    drop((client, with_garbage));
    server.stop().await;
}

#[tokio::test]
async fn symbols_listing_needs_a_token_and_shows_only_what_it_covers() {
    let server = guarded_server().await;
    let (status, _) = http_get(server.addr, "/symbols").await;
    assert_eq!(status, 401, "no prices without a token");
    let token = token(&["A*", "M?"], HOUR);
    let (status, body) = http_get(server.addr, &format!("/symbols?token={token}")).await;
    assert_eq!(status, 200, "{body}");
    let rows: Vec<Value> = serde_json::from_str(&body).unwrap();
    let listed: Vec<&str> = rows.iter().map(|r| r["sym"].as_str().unwrap()).collect();
    assert_eq!(listed, A_STAR_OR_M_ANY);
    server.stop().await;
}
