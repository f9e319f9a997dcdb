//! The dashboard at `GET /` in real headless Chromium against the real
//! server: prices appear and move, the filter hides rows, and the page
//! recovers on its own when the server restarts on the same port. Saves a
//! screenshot to `target/dashboard.png`.

mod common;

use std::path::Path;

use common::browser::Browser;
use common::*;
use serde_json::Value;

/// Every row as `{sym: {px, seq, hidden}}`.
const ROWS: &str = "Object.fromEntries([...document.querySelectorAll('#rows tr')].map(r => \
     [r.dataset.sym, {px: r.querySelector('.px').textContent, seq: Number(r.dataset.seq || 0), hidden: r.hidden}]))";

/// [`ROWS`] once the page has painted what it received so far.
fn painted_rows() -> String {
    format!("new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done))).then(() => {ROWS})")
}

/// How many rows moved on from `before` (a [`ROWS`] value): a higher seq.
fn moved_since(before: &Value) -> String {
    format!(
        "(() => {{ const before = {before}; let moved = 0; \
           for (const r of document.querySelectorAll('#rows tr')) {{ \
             const was = before[r.dataset.sym]; \
             if (was && Number(r.dataset.seq) > was.seq) moved += 1; }} \
           return moved; }})()"
    )
}

/// How many rows show a different price than in `before`.
fn repriced_since(before: &Value) -> String {
    format!(
        "(() => {{ const before = {before}; let repriced = 0; \
           for (const r of document.querySelectorAll('#rows tr')) {{ \
             const was = before[r.dataset.sym]; \
             if (was && r.querySelector('.px').textContent !== was.px) repriced += 1; }} \
           return repriced; }})()"
    )
}

const STATE: &str = "document.querySelector('#status').dataset.state";

/// Types `text` into the filter box as a user would, firing `input`.
fn type_filter(text: &str) -> String {
    format!(
        "(() => {{ const f = document.querySelector('#filter'); f.value = {}; \
           f.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()",
        Value::from(text)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_live_prices_filters_and_recovers_from_a_restart() {
    let cfg = config();
    let symbols = cfg.symbols as usize;
    let server = start(cfg.clone()).await;
    let addr = server.addr;

    // The assets are served with their own types; unknown paths list `/`.
    let (status, body) = http_get(addr, "/dashboard.js").await;
    assert_eq!(status, 200);
    assert!(body.contains("requestAnimationFrame"));
    let (status, body) = http_get(addr, "/no-such-page").await;
    assert_eq!(status, 404);
    assert!(body.contains("GET / (dashboard)"), "{body}");

    let mut browser = Browser::launch().await;
    browser.navigate(&server.http_url("/")).await;

    // Live, one row per symbol, each with a price.
    browser
        .wait_for("the page to go live", &format!("{STATE} === 'live'"))
        .await;
    browser
        .wait_for(
            "a priced row for every symbol",
            &format!(
                "(() => {{ const rows = [...document.querySelectorAll('#rows tr')]; \
                   return rows.length === {symbols} && rows.every(r => Number(r.dataset.seq) > 0 \
                     && /^[0-9,]+\\.[0-9]{{2}}$/.test(r.querySelector('.px').textContent)); }})()"
            ),
        )
        .await;

    // Prices keep moving: rows reach higher seqs and show new prices.
    let first = browser.eval(&painted_rows()).await;
    browser
        .wait_for("rows to move on", &format!("{} >= 10", moved_since(&first)))
        .await;
    browser
        .wait_for(
            "prices to change",
            &format!("{} >= 5", repriced_since(&first)),
        )
        .await;
    browser
        .wait_for("ticks to be counted", "window.tickcast.ticks > 0")
        .await;
    browser
        .wait_for(
            "a latency reading",
            "document.querySelector('#meter-latency').textContent.endsWith(' ms')",
        )
        .await;

    // The filter keeps exactly the symbols containing its text, whatever
    // the case, and clearing it brings every row back.
    browser.eval(&type_filter("am")).await;
    let rows = browser.eval(ROWS).await;
    let rows = rows.as_object().expect("rows");
    let visible: Vec<&String> = rows
        .iter()
        .filter(|(_, r)| r["hidden"] == false)
        .map(|(s, _)| s)
        .collect();
    let expected: Vec<&String> = rows.keys().filter(|s| s.contains("AM")).collect();
    assert!(!expected.is_empty() && expected.len() < rows.len());
    assert_eq!(visible, expected, "rows left visible by the filter `am`");
    browser.eval(&type_filter("")).await;
    let shown = browser
        .eval("[...document.querySelectorAll('#rows tr')].filter(r => !r.hidden).length")
        .await;
    assert_eq!(shown, Value::from(symbols));

    // The server goes away: the page notices and retries.
    server.stop().await;
    browser
        .wait_for("the page to leave `live`", &format!("{STATE} !== 'live'"))
        .await;

    // Back on the same port: the page reconnects by itself, resumes, and
    // prices move again.
    let server = start_at(addr, cfg).await;
    browser
        .wait_for("the page to be live again", &format!("{STATE} === 'live'"))
        .await;
    browser
        .wait_for("a resume with `from`", "window.tickcast.resumes >= 1")
        .await;
    let ticks = browser.eval("window.tickcast.ticks").await;
    browser
        .wait_for(
            "ticks from the new server",
            &format!("window.tickcast.ticks >= {ticks} + 100"),
        )
        .await;
    let after_restart = browser.eval(&painted_rows()).await;
    browser
        .wait_for(
            "rows to move on after the restart",
            &format!("{} >= 10", moved_since(&after_restart)),
        )
        .await;
    let rows = browser
        .eval("document.querySelectorAll('#rows tr').length")
        .await;
    assert_eq!(
        rows,
        Value::from(symbols),
        "no row duplicated by the resume"
    );
    // The new server's seqs start over, so the page's `from` is out of its
    // reach: it must get reset snapshots and say so.
    browser
        .wait_for(
            "the reset notice",
            "!document.querySelector('#notice').hidden \
             && /reset/i.test(document.querySelector('#notice').textContent) \
             && window.tickcast.resets > 0",
        )
        .await;

    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard.png");
    browser.screenshot(&shot).await;
    let png = std::fs::read(&shot).expect("read the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");

    drop(browser);
    server.stop().await;
}
