//! Fuzz target: a client's requests, one per line of the input, through
//! the real subscription handling: a session `Reader` in front of the
//! running `Fanout` task, over a ring holding a few ticks, on a
//! current-thread runtime built and driven on the small-stack thread of
//! `tickcast_fuzz::run`: the reader, the fan-out task and their parsing
//! all run within its 256 KiB.
//!
//! After each request the replies queued in the connection's outbox are
//! checked against the request and against a model of the connection's
//! subscriptions kept from those replies (`subscribed` adds what it
//! lists, `unsubscribed` removes it):
//! - nothing panics, and the outbox never closes;
//! - every request gets a reply: a refused one exactly one `error` with
//!   the code `ClientMsg::parse` gives, a ping its `pong` with the id
//!   echoed, a subscribe or unsubscribe naming a known symbol or `*` its
//!   `subscribed`/`unsubscribed` (unless refused as a whole), and an
//!   unknown symbol an `unknown_symbol` error;
//! - `subscribed` never lists a symbol already subscribed, `unsubscribed`
//!   only symbols that were, snapshots and replayed ticks only follow
//!   their symbol's subscription;
//! - the fan-out's own count of subscriptions equals the model's;
//! - a final unsubscribe of `*` leaves nothing subscribed, and detaching
//!   leaves the fan-out with no subscription at all.

#![no_main]

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use tickcast::fanout::{Command, Fanout, FanoutHandle};
use tickcast::feed::symbols::universe;
use tickcast::protocol::ClientMsg;
use tickcast::ring;
use tickcast::session::outbox::{Outbox, OutboxLimits, Take};
use tickcast::session::reader::{Messages, Reader};
use tickcast::stats::Stats;
use tickcast::symbol::Symbols;
use tickcast::tick::Tick;

/// Symbols the server carries: AAPL, MSFT, NVDA, AMZN, GOOGL, META.
const SYMBOLS: usize = 6;
/// The first this many have traded (have snapshots); the others have not.
const TRADED: usize = 4;
/// Ticks of each traded symbol in the ring (seq 1 to this).
const TICKS_PER_SYMBOL: u64 = 5;
/// Ticks of history per symbol: `from` 2..=5 replays, older resets.
const HISTORY_DEPTH: usize = 3;
/// Named subscriptions allowed per connection, low enough to reach.
const MAX_SUBSCRIPTIONS: usize = 4;
/// Requests taken from one input, at most.
const MAX_REQUESTS: usize = 64;
/// The connection's id.
const CONN: u64 = 1;
/// Sent after the input's requests.
const UNSUBSCRIBE_ALL: &[u8] = br#"{"op":"unsubscribe","symbols":["*"]}"#;

fuzz_target!(|data: &[u8]| tickcast_fuzz::run(data, check));

fn check(data: &[u8]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(session(data));
}

async fn session(data: &[u8]) {
    let symbols = Arc::new(
        Symbols::fixed(universe(SYMBOLS).into_iter().map(|spec| (spec.name, spec.decimals)))
            .expect("distinct tickers"),
    );
    let stats = Arc::new(Stats::default());
    let (fanout, handle, commands) = Fanout::new(symbols.clone(), HISTORY_DEPTH, stats.clone());
    let mut producer = ring::channel::<Tick>(64);
    let cursor = producer.cursor();
    for seq in 1..=TICKS_PER_SYMBOL {
        for symbol in 0..TRADED as u32 {
            producer.publish(Tick {
                symbol,
                seq,
                px: "100".parse().expect("a price"),
                bid: "99.99".parse().expect("a price"),
                ask: "100.01".parse().expect("a price"),
                size: 100,
                ts: seq,
            });
        }
    }
    let shutdown = CancellationToken::new();
    let fanout_task =
        tokio::spawn(fanout.run(cursor, Arc::new(Notify::new()), commands, shutdown.clone()));
    wait_for_ticks(&handle).await;

    let outbox = Arc::new(Outbox::new(OutboxLimits {
        max_bytes: 1 << 24,
        slow_consumer_timeout: Duration::from_secs(3600),
        write_timeout: Duration::from_secs(3600),
    }));
    assert!(
        handle
            .send(Command::Attach {
                conn: CONN,
                outbox: outbox.clone(),
            })
            .await
    );
    let mut reader = Reader::new(
        CONN,
        outbox.clone(),
        handle.clone(),
        symbols.clone(),
        MAX_SUBSCRIPTIONS,
    );
    let mut subscribed = BTreeSet::new();
    let requests = data
        .split(|&b| b == b'\n')
        .take(MAX_REQUESTS)
        .chain(std::iter::once(UNSUBSCRIBE_ALL));
    for request in requests {
        exchange(&mut reader, &outbox, &symbols, request, &mut subscribed).await;
        assert_eq!(
            stats.subscriptions.load(Ordering::Relaxed),
            subscribed.len(),
            "the fan-out counts other subscriptions than the replies announced \
             ({subscribed:?}) after {:?}",
            String::from_utf8_lossy(request)
        );
    }
    assert!(
        subscribed.is_empty(),
        "unsubscribing \"*\" left {subscribed:?} subscribed"
    );

    assert!(handle.send(Command::Detach { conn: CONN }).await);
    // Commands apply in order: once this is answered the detach is done.
    handle.quotes().await.expect("the fan-out is running");
    assert_eq!(stats.subscriptions.load(Ordering::Relaxed), 0);
    shutdown.cancel();
    fanout_task.await.expect("the fan-out task ends cleanly");
}

/// Waits until the fan-out has read the ring's ticks, so that traded
/// symbols have snapshots and history.
async fn wait_for_ticks(handle: &FanoutHandle) {
    for _ in 0..1000 {
        let quotes = handle.quotes().await.expect("the fan-out is running");
        if quotes[..TRADED].iter().all(Option::is_some) {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the fan-out did not read the ring's ticks");
}

/// Hands `request` to the reader and checks the replies it queued.
async fn exchange(
    reader: &mut Reader,
    outbox: &Outbox,
    symbols: &Symbols,
    request: &[u8],
    subscribed: &mut BTreeSet<String>,
) {
    let shown = String::from_utf8_lossy(request);
    let parsed = ClientMsg::parse(&mut request.to_vec());
    reader.text(&mut request.to_vec()).await;
    let mut frames = VecDeque::new();
    match outbox.take(&mut frames) {
        Take::Frames | Take::Idle => {}
        other => panic!("the connection was closed after {shown:?}: {other:?}"),
    }
    let replies: Vec<Value> = frames
        .iter()
        .map(|frame| {
            serde_json::from_slice(server_frame_payload(frame))
                .unwrap_or_else(|e| panic!("a reply to {shown:?} is not JSON: {e}"))
        })
        .collect();
    let kinds: Vec<&str> = replies
        .iter()
        .map(|reply| reply["type"].as_str().expect("every reply has a type"))
        .collect();
    assert!(!replies.is_empty(), "no reply to {shown:?}");

    let (names, subscribing) = match parsed {
        Err(error) => {
            assert_eq!(kinds, ["error"], "replies to {shown:?}: {replies:?}");
            assert_eq!(replies[0]["code"], error.code.as_str());
            return;
        }
        Ok(ClientMsg::Ping { id }) => {
            assert_eq!(kinds, ["pong"], "replies to {shown:?}: {replies:?}");
            assert_eq!(replies[0].get("id"), id.as_ref(), "pong to {shown:?}");
            return;
        }
        Ok(ClientMsg::Subscribe { symbols, .. }) => (symbols, true),
        Ok(ClientMsg::Unsubscribe { symbols }) => (symbols, false),
    };
    let star = names.iter().any(|name| name == "*");
    let known = names.iter().any(|name| symbols.id(name).is_some());
    let unknown = names
        .iter()
        .any(|name| name != "*" && symbols.id(name).is_none());
    let named = |name: &str| star || names.iter().any(|n| n == name);

    let codes: Vec<&str> = replies
        .iter()
        .filter(|reply| reply["type"] == "error")
        .map(|reply| reply["code"].as_str().expect("an error has a code"))
        .collect();
    let refused_whole = codes
        .iter()
        .any(|&code| code == "bad_request" || code == "too_many_symbols");
    if codes.contains(&"bad_request") {
        // `from` is checked before anything else, and refuses it all.
        assert!(subscribing, "{shown:?}: {replies:?}");
        assert_eq!(kinds, ["error"], "replies to {shown:?}: {replies:?}");
        return;
    }
    if unknown {
        assert_eq!(
            codes.first(),
            Some(&"unknown_symbol"),
            "{shown:?}: {replies:?}"
        );
    }
    for code in &codes {
        let allowed: &[&str] = if subscribing {
            &["unknown_symbol", "too_many_symbols"]
        } else {
            &["unknown_symbol"]
        };
        assert!(allowed.contains(code), "{shown:?}: {replies:?}");
    }
    let answer = if subscribing {
        "subscribed"
    } else {
        "unsubscribed"
    };
    let answers = kinds.iter().filter(|&&kind| kind == answer).count();
    if (star || known) && !refused_whole {
        assert_eq!(answers, 1, "replies to {shown:?}: {replies:?}");
    } else {
        assert_eq!(answers, 0, "replies to {shown:?}: {replies:?}");
    }

    let mut answered = false;
    for reply in &replies {
        let listed = || {
            reply["symbols"]
                .as_array()
                .expect("a symbols array")
                .iter()
                .map(|name| name.as_str().expect("symbol names").to_string())
        };
        match reply["type"].as_str() {
            Some("error") => assert!(!answered, "an error after the answer: {replies:?}"),
            Some("subscribed") if subscribing => {
                answered = true;
                for name in listed() {
                    assert!(named(&name), "{shown:?} subscribed {name}: {replies:?}");
                    assert!(
                        subscribed.insert(name.clone()),
                        "{shown:?} listed {name}, already subscribed: {replies:?}"
                    );
                }
            }
            Some("unsubscribed") if !subscribing => {
                answered = true;
                for name in listed() {
                    assert!(named(&name), "{shown:?} unsubscribed {name}: {replies:?}");
                    assert!(
                        subscribed.remove(&name),
                        "{shown:?} listed {name}, not subscribed: {replies:?}"
                    );
                }
            }
            Some("snapshot" | "tick") if subscribing && answered => {
                let name = reply["sym"].as_str().expect("a sym");
                assert!(
                    subscribed.contains(name),
                    "{shown:?}: data for {name}, not subscribed: {replies:?}"
                );
            }
            _ => panic!("unexpected reply to {shown:?}: {reply} in {replies:?}"),
        }
    }
}

/// The payload of one complete, unmasked server frame.
fn server_frame_payload(frame: &[u8]) -> &[u8] {
    tickcast::wire::frame::parse_unmasked(frame)
        .expect("a frame holds exactly its payload")
        .1
}
