//! The feed decides the symbols: a server fed from outside carries every
//! symbol its publisher sends, with exact decimal prices, within
//! `--max-symbols`; names that could break JSON or a NATS subject are
//! refused; a fixed list (`--symbols-file`) refuses the others; and the
//! simulator quotes in cents. Each refusal happens beside a bystander
//! whose seqs stay contiguous.

mod common;

use common::ingest::*;
use common::*;
use serde_json::{json, Value};
use tickcast::config::FeedSource;

/// An ingest server that learns its symbols from the publisher.
fn learning_config() -> tickcast::Config {
    let mut cfg = config();
    cfg.feed = FeedSource::Ingest;
    cfg.ingest_token = Some(TOKEN.into());
    cfg
}

/// A tick with prices given as JSON text (numbers or strings), exactly.
fn exact(sym: &str, seq: u64, px: &str, bid: &str, ask: &str) -> String {
    format!(
        r#"{{"sym":"{sym}","seq":{seq},"px":{px},"bid":{bid},"ask":{ask},"size":5,"ts":{}}}"#,
        1_700_000_000_000_000_000u64 + seq
    )
}

/// The text of the next message that is not a pong.
async fn next_text(client: &mut Client) -> String {
    client.recv_text().await
}

/// Reads `client` until a message of `sym` (tick or snapshot) arrives;
/// returns its text and its JSON.
async fn next_of(client: &mut Client, sym: &str) -> (String, Value) {
    loop {
        let text = next_text(client).await;
        let value: Value = serde_json::from_str(&text).unwrap();
        if value["sym"] == sym {
            return (text, value);
        }
    }
}

#[tokio::test]
async fn a_publishers_own_symbols_reach_subscribers_with_exact_prices() {
    let server = start(learning_config()).await;
    let mut star = server.connect().await;
    let reply = star.subscribe(&["*"]).await;
    assert_eq!(reply["symbols"], json!([]), "nothing has traded yet");
    // A name the feed has not published yet is unknown, and says why.
    let mut named = server.connect().await;
    named
        .send(json!({"op": "subscribe", "symbols": ["BTC-USD"]}))
        .await;
    let error = named.recv_until(|v| v["type"] == "error").await;
    assert_eq!(error["code"], "unknown_symbol");
    assert!(
        error["message"].as_str().unwrap().contains("\"*\""),
        "{error}"
    );

    let mut publisher = publisher(&server, TOKEN).await.expect("admitted");
    let first = [
        exact("BTC-USD", 1, "64123.5", "\"64123.49\"", "64123.51"),
        exact("EURUSD", 1, "1.08435", "1.08434", "\"1.08436\""),
        exact("PNNY", 1, "0.0001", "\"0.0001\"", "0.0002"),
        exact("ES.Z6/CME", 1, "6000.25", "6000", "6000.50"),
    ];
    publisher
        .send_raw(format!("[{}]", first.join(",")).into())
        .await;

    // A `*` subscriber is told of each new symbol, then sent its snapshot,
    // with the prices' exact text.
    for (sym, px, bid, ask) in [
        ("BTC-USD", "64123.5", "64123.49", "64123.51"),
        ("EURUSD", "1.08435", "1.08434", "1.08436"),
        ("PNNY", "0.0001", "0.0001", "0.0002"),
        ("ES.Z6/CME", "6000.25", "6000", "6000.5"),
    ] {
        let announced: Value = serde_json::from_str(&next_text(&mut star).await).unwrap();
        assert_eq!(announced["type"], "subscribed");
        assert_eq!(announced["symbols"], json!([sym]));
        let text = next_text(&mut star).await;
        let snapshot: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (snapshot["type"].as_str(), snapshot["sym"].as_str()),
            (Some("snapshot"), Some(sym))
        );
        let prices = format!(r#""px":{px},"bid":{bid},"ask":{ask},"#);
        assert!(text.contains(&prices), "{text} lacks {prices}");
    }

    // Now it is known: a named subscribe gets it, snapshot first, or, on
    // a shard that has not read that first tick from the ring yet, as
    // that tick itself: the same seq and prices.
    let reply = named.subscribe(&["BTC-USD"]).await;
    assert_eq!(reply["symbols"], json!(["BTC-USD"]));
    let (text, first) = next_of(&mut named, "BTC-USD").await;
    assert!(
        first["type"] == "snapshot" || first["type"] == "tick",
        "{text}"
    );
    assert_eq!(first["seq"], 1, "{text}");
    assert!(text.contains(r#""px":64123.5,"#), "{text}");

    publisher
        .send_raw(exact("BTC-USD", 2, "64124", "\"64123.99\"", "64124.01").into())
        .await;
    for client in [&mut star, &mut named] {
        let (text, tick) = next_of(client, "BTC-USD").await;
        assert_eq!(
            (tick["type"].as_str(), tick["seq"].as_u64()),
            (Some("tick"), Some(2))
        );
        assert!(
            text.contains(r#""px":64124,"bid":64123.99,"ask":64124.01,"#),
            "{text}"
        );
    }

    // /symbols lists them, prices exact.
    let (status, body) = http_get(server.addr, "/symbols").await;
    assert_eq!(status, 200);
    for row in [
        r#"{"sym":"BTC-USD","seq":2,"px":64124,"bid":64123.99,"ask":64124.01,"#,
        r#"{"sym":"EURUSD","seq":1,"px":1.08435,"bid":1.08434,"ask":1.08436,"#,
        r#"{"sym":"PNNY","seq":1,"px":0.0001,"bid":0.0001,"ask":0.0002,"#,
        r#"{"sym":"ES.Z6/CME","seq":1,"px":6000.25,"bid":6000,"ask":6000.5,"#,
    ] {
        assert!(body.contains(row), "{body} lacks {row}");
    }
    drop((star, named, publisher));
    server.stop().await;
}

/// Sends tick `seq` of the bystander's symbol and returns the next seq;
/// the bystander must see exactly that seq next.
async fn bystander_tick(publisher: &mut Client, bystander: &mut Client, seq: u64) -> u64 {
    publisher
        .send_raw(exact("KEEP", seq, "10.5", "10.49", "10.51").into())
        .await;
    let (_, tick) = next_of(bystander, "KEEP").await;
    assert_eq!(tick["seq"], seq, "the bystander's seqs stay contiguous");
    seq + 1
}

#[tokio::test]
async fn bad_names_bad_prices_and_the_symbol_limit_are_refused_beside_a_contiguous_bystander() {
    let mut cfg = learning_config();
    cfg.max_symbols = 3;
    let server = start(cfg).await;
    let mut publisher = publisher(&server, TOKEN).await.expect("admitted");
    publisher
        .send_raw(exact("KEEP", 1, "10.5", "10.49", "10.51").into())
        .await;
    let mut bystander = server.connect().await;
    bystander.subscribe(&["KEEP"]).await;
    let (_, snapshot) = next_of(&mut bystander, "KEEP").await;
    assert_eq!(snapshot["seq"], 1);
    let mut seq = 2;

    let long = "X".repeat(49);
    for (tick, code, words) in [
        (exact("A\\\"B", 1, "1", "1", "1"), "bad_tick", "contains"),
        (exact("*", 1, "1", "1", "1"), "bad_tick", "every symbol"),
        (exact("A..B", 1, "1", "1", "1"), "bad_tick", "\"..\""),
        (
            exact(&long, 1, "1", "1", "1"),
            "bad_tick",
            "the limit is 48",
        ),
        (
            exact("OK1", 1, "1.000000001", "1", "1"),
            "bad_tick",
            "px of \"OK1\"",
        ),
        (
            exact("OK1", 1, "1", "\"1e10\"", "1"),
            "bad_tick",
            "out of range",
        ),
        (
            exact("OK1", 1, "1", "1", "\"12,5\""),
            "bad_tick",
            "not a decimal",
        ),
    ] {
        publisher.send_raw(tick.into()).await;
        let error = publisher.recv_until(|v| v["type"] == "error").await;
        assert_eq!(error["code"], code, "{error}");
        assert!(
            error["message"].as_str().unwrap().contains(words),
            "{error} lacks {words}"
        );
        seq = bystander_tick(&mut publisher, &mut bystander, seq).await;
    }
    // Refused ticks learned nothing: two more symbols fit, the next not.
    for sym in ["NEW1", "NEW2"] {
        publisher
            .send_raw(exact(sym, 1, "-2.5", "-2.51", "-2.49").into())
            .await;
        seq = bystander_tick(&mut publisher, &mut bystander, seq).await;
    }
    for attempt in 1..=3 {
        publisher
            .send_raw(exact(&format!("OVER{attempt}"), 1, "1", "1", "1").into())
            .await;
        let error = publisher.recv_until(|v| v["type"] == "error").await;
        assert_eq!(error["code"], "symbol_limit", "{error}");
        assert!(
            error["message"].as_str().unwrap().contains("--max-symbols"),
            "{error}"
        );
        seq = bystander_tick(&mut publisher, &mut bystander, seq).await;
    }
    server
        .until_stats("three refusals counted", |stats| {
            stats
                .feed_symbols_refused
                .load(std::sync::atomic::Ordering::Relaxed)
                == 3
        })
        .await;
    let (_, metrics) = http_get(server.addr, "/metrics").await;
    assert!(
        metrics.contains("tickcast_feed_symbols_refused_total 3"),
        "{metrics}"
    );
    assert!(metrics.contains("tickcast_symbols 3"), "{metrics}");
    let (_, body) = http_get(server.addr, "/symbols").await;
    let rows: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sym"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["KEEP", "NEW1", "NEW2"]);
    assert!(
        body.contains(r#""px":-2.5,"bid":-2.51,"ask":-2.49"#),
        "{body}"
    );
    drop((publisher, bystander));
    server.stop().await;
}

#[tokio::test]
async fn a_symbols_file_fixes_the_universe_and_each_symbols_precision() {
    let path = std::env::temp_dir().join(format!(
        "tickcast-symbols-file-test-{}.txt",
        std::process::id()
    ));
    std::fs::write(&path, "# majors\nEURUSD,5\nUSDJPY,3\nBTC-USD\n").unwrap();
    let mut cfg = learning_config();
    cfg.symbols_file = Some(path.clone());
    let server = start(cfg).await;
    // Listed symbols are subscribable before they trade.
    let mut client = server.connect().await;
    let reply = client.subscribe(&["EURUSD", "BTC-USD"]).await;
    assert_eq!(reply["symbols"], json!(["EURUSD", "BTC-USD"]));
    let mut publisher = publisher(&server, TOKEN).await.expect("admitted");
    for (tick, code, words) in [
        (
            exact("DOGE", 1, "1", "1", "1"),
            "unknown_symbol",
            "--symbols-file",
        ),
        (
            exact("EURUSD", 1, "1.084351", "1.0843", "1.0844"),
            "bad_tick",
            "5 decimals",
        ),
        (
            exact("USDJPY", 1, "151.1", "151.1", "151.1234"),
            "bad_tick",
            "ask of \"USDJPY\"",
        ),
    ] {
        publisher.send_raw(tick.into()).await;
        let error = publisher.recv_until(|v| v["type"] == "error").await;
        assert_eq!(error["code"], code, "{error}");
        assert!(
            error["message"].as_str().unwrap().contains(words),
            "{error} lacks {words}"
        );
    }
    publisher
        .send_raw(exact("EURUSD", 1, "1.08435", "1.0843", "1.0844").into())
        .await;
    let (text, tick) = next_of(&mut client, "EURUSD").await;
    assert_eq!(tick["seq"], 1);
    assert!(
        text.contains(r#""px":1.08435,"bid":1.0843,"ask":1.0844,"#),
        "{text}"
    );
    drop((client, publisher));
    server.stop().await;
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn the_simulator_quotes_every_price_in_whole_cents() {
    let server = start(config()).await;
    let mut client = server.connect().await;
    client.subscribe(&["*"]).await;
    let mut prices = 0;
    while prices < 3_000 {
        let text = next_text(&mut client).await;
        let value: Value = serde_json::from_str(&text).unwrap();
        if value["type"] != "tick" && value["type"] != "snapshot" {
            continue;
        }
        for field in ["px", "bid", "ask"] {
            // The price's own text in the frame.
            let at = text.find(&format!("\"{field}\":")).unwrap() + field.len() + 3;
            let shown: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-')
                .collect();
            let decimals = shown.split('.').nth(1).map_or(0, str::len);
            assert!(decimals <= 2, "{field} {shown} in {text}");
            assert!(!shown.ends_with('0') || !shown.contains('.'), "{text}");
            prices += 1;
        }
    }
    drop(client);
    server.stop().await;
}
