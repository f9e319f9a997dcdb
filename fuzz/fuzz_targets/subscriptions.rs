//! Fuzz target: a client's requests, one per line of the input, through
//! the real subscription handling, as a shard runs it: each line is a
//! message handed to the connection's `Session::on_message` (a text
//! message; a line that is not UTF-8, which the frame reader would never
//! pass as text, goes as a binary one), which answers in the connection's
//! outbox and applies subscriptions to the shard's `Fanout` in the same
//! call. The fan-out reads a ring holding a few ticks first; after every
//! request it reads one more tick of each symbol that trades and serves
//! its throttled lanes, as a shard's pass does. All of it runs
//! synchronously on the small-stack thread of `tickcast_fuzz::run`, so
//! parsing, the session and the fan-out all run within its 256 KiB.
//!
//! After each request the replies queued in the connection's outbox (an
//! entry is one frame, or a pass's frames laid end to end) are split into
//! frames and checked against the request and against a model of the
//! connection's subscriptions kept from those replies (`subscribed` adds
//! what it lists, `unsubscribed` removes it):
//! - nothing panics, the outbox never closes and the session never asks
//!   the shard to stop reading;
//! - every request gets a reply: a refused one exactly one `error` with
//!   the code `ClientMsg::parse` gives (a binary message
//!   `binary_not_supported`), a ping its `pong` with the id echoed, a
//!   subscribe or unsubscribe naming a known symbol or `*` its
//!   `subscribed`/`unsubscribed` (unless refused as a whole), and an
//!   unknown symbol an `unknown_symbol` error;
//! - `subscribed` never lists a symbol already subscribed, `unsubscribed`
//!   only symbols that were; snapshots and replayed ticks only follow
//!   their symbol's subscription, and bring the client exactly up to date:
//!   one snapshot of a symbol that has traded, or with `from` the ticks it
//!   missed in order (only the newest, with `max_hz`), a reset snapshot
//!   when they are gone, nothing when it is current;
//! - the fan-out's share of the subscriptions gauge equals the model's
//!   count;
//! - then each new tick reaches the connection exactly once, as a live
//!   `tick` with its own `seq`, if its symbol is subscribed (throttled or
//!   not), and never if it is not;
//! - a final unsubscribe of `*` leaves nothing subscribed, and detaching
//!   the session leaves the fan-out with no subscription at all; the
//!   fan-out never lost a tick to ring lag.

#![no_main]

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use tickcast::auth::Grant;
use tickcast::fanout::outbox::{Outbox, OutboxLimits, Take};
use tickcast::fanout::{Fanout, Outboxes, Pass};
use tickcast::feed::symbols::universe;
use tickcast::protocol::ClientMsg;
use tickcast::ring::{self, Cursor, Producer};
use tickcast::session::{Mode, Session, SessionContext};
use tickcast::stats::Stats;
use tickcast::symbol::{SymbolId, Symbols};
use tickcast::tick::Tick;
use tickcast::wire::reader::{Flow, InputLimits, Kind, Message};

/// Symbols the server carries: AAPL, MSFT, NVDA, AMZN, GOOGL, META.
const SYMBOLS: usize = 6;
/// The first this many have traded (have snapshots) before the first
/// request; the others start trading after [`LATE_START`] requests.
const TRADED: usize = 4;
/// Requests answered before the symbols that had not traded start to.
const LATE_START: usize = 2;
/// Ticks of each traded symbol in the ring at the start (seq 1 to this).
const TICKS_PER_SYMBOL: u64 = 5;
/// Ticks of history per symbol: `from` 2..=5 replays at the start, older
/// resets.
const HISTORY_DEPTH: usize = 3;
/// Named subscriptions allowed per connection, low enough to reach.
const MAX_SUBSCRIPTIONS: usize = 4;
/// Requests taken from one input, at most.
const MAX_REQUESTS: usize = 64;
/// Frames a second the connection may send: far more than one input
/// sends, so the rate limit never answers in place of a request.
const MAX_MESSAGES_PER_SECOND: u32 = 1_000;
/// The connection's slab key in the shard, and its id.
const KEY: usize = 1;
const CONN: u64 = 1;
/// How far the throttled lanes' clock moves between two requests: more
/// than the longest `max_hz` interval (100 s), so every lane is due.
const CLOCK_STEP: Duration = Duration::from_secs(200);
/// Sent after the input's requests.
const UNSUBSCRIBE_ALL: &[u8] = br#"{"op":"unsubscribe","symbols":["*"]}"#;

fuzz_target!(|data: &[u8]| tickcast_fuzz::run(data, check));

/// One shard with one connection, and the feed in front of it.
struct Shard {
    symbols: Arc<Symbols>,
    stats: Arc<Stats>,
    ctx: SessionContext,
    fanout: Fanout,
    outboxes: Outboxes,
    session: Session,
    producer: Producer<Tick>,
    cursor: Cursor<Tick>,
    /// Latest `seq` of each symbol (0: not traded yet).
    seqs: Vec<u64>,
    /// The throttled lanes' clock, ahead of the real one.
    clock: Instant,
}

fn check(data: &[u8]) {
    let mut shard = Shard::new();
    let mut subscribed = BTreeSet::new();
    let requests = data
        .split(|&b| b == b'\n')
        .take(MAX_REQUESTS)
        .chain(std::iter::once(UNSUBSCRIBE_ALL));
    for (round, request) in requests.enumerate() {
        shard.exchange(request, &mut subscribed);
        assert_eq!(
            shard.stats.subscriptions.load(Ordering::Relaxed),
            subscribed.len(),
            "the fan-out counts other subscriptions than the replies announced \
             ({subscribed:?}) after {:?}",
            String::from_utf8_lossy(request)
        );
        shard.ticks(round, &subscribed);
    }
    assert!(
        subscribed.is_empty(),
        "unsubscribing \"*\" left {subscribed:?} subscribed"
    );

    shard.session.detach(KEY, &mut shard.fanout);
    assert_eq!(shard.stats.subscriptions.load(Ordering::Relaxed), 0);
    assert_eq!(Stats::get(&shard.stats.ring_lagged), 0);
}

impl Shard {
    /// The shard, its fan-out having read the first ticks, and one
    /// connection with nothing subscribed.
    fn new() -> Shard {
        let symbols = Arc::new(
            Symbols::fixed(
                universe(SYMBOLS)
                    .into_iter()
                    .map(|spec| (spec.name, spec.decimals)),
            )
            .expect("distinct tickers"),
        );
        let stats = Arc::new(Stats::default());
        let limits = OutboxLimits {
            max_bytes: 1 << 24,
            slow_consumer_timeout: Duration::from_secs(3600),
            write_timeout: Duration::from_secs(3600),
        };
        let ctx = SessionContext {
            symbols: symbols.clone(),
            outbox_limits: limits,
            input_limits: InputLimits {
                max_message_bytes: 64 * 1024,
                max_fragments: 1024,
            },
            max_subscriptions: MAX_SUBSCRIPTIONS,
            max_messages_per_second: MAX_MESSAGES_PER_SECOND,
            ping_interval: None,
            stats: stats.clone(),
        };
        let fanout = Fanout::new(symbols.clone(), HISTORY_DEPTH, stats.clone());
        let mut outboxes = Outboxes::new(limits, stats.clone());
        outboxes.insert(KEY, Outbox::new());
        let now = Instant::now();
        let session = Session::new(CONN, Mode::Client, Grant::unrestricted(), &ctx, now);
        let producer = ring::channel::<Tick>(64);
        let cursor = producer.cursor();
        let mut shard = Shard {
            symbols,
            stats,
            ctx,
            fanout,
            outboxes,
            session,
            producer,
            cursor,
            seqs: vec![0; SYMBOLS],
            clock: now,
        };
        for _ in 0..TICKS_PER_SYMBOL {
            for symbol in 0..TRADED {
                shard.publish(symbol);
            }
        }
        shard.read_ring();
        let quotes = shard.fanout.quotes();
        assert!(
            quotes[..TRADED].iter().all(Option::is_some),
            "the fan-out did not read the ring's ticks"
        );
        assert!(quotes[TRADED..].iter().all(Option::is_none));
        shard
    }

    /// Publishes the next tick of `symbol`.
    fn publish(&mut self, symbol: usize) {
        self.seqs[symbol] += 1;
        let seq = self.seqs[symbol];
        self.producer.publish(Tick {
            symbol: symbol as SymbolId,
            seq,
            px: "100".parse().expect("a price"),
            bid: "99.99".parse().expect("a price"),
            ask: "100.01".parse().expect("a price"),
            size: 100,
            ts: seq,
        });
    }

    /// Fans out everything in the ring.
    fn read_ring(&mut self) {
        while self.fanout.drain(&mut self.cursor, &mut self.outboxes) == Pass::Full {}
    }

    /// Everything queued for the connection, as JSON; after `what`.
    fn sent(&mut self, what: &dyn Fn() -> String) -> Vec<Value> {
        let mut pushed = Vec::new();
        self.outboxes.take_pushed(&mut pushed);
        let mut frames = VecDeque::new();
        let outbox = self.outboxes.get_mut(KEY).expect("the connection's outbox");
        match outbox.take(&mut frames) {
            Take::Frames | Take::Idle => {}
            other => panic!("the connection was closed {}: {other:?}", what()),
        }
        // Listed again by the take: start the next pass from none.
        self.outboxes.take_pushed(&mut pushed);
        // An entry is one frame, or a pass's frames laid end to end.
        frames
            .iter()
            .flat_map(|entry| split_frames(entry))
            .map(|frame| {
                serde_json::from_slice(server_frame_payload(frame))
                    .unwrap_or_else(|e| panic!("a frame sent {} is not JSON: {e}", what()))
            })
            .collect()
    }

    /// One tick of every symbol that trades by now (after `round`
    /// requests), then the throttled lanes, as a shard's pass does; checks
    /// the connection got each subscribed one exactly once, and nothing
    /// else.
    fn ticks(&mut self, round: usize, subscribed: &BTreeSet<String>) {
        let trading = if round >= LATE_START { SYMBOLS } else { TRADED };
        for symbol in 0..trading {
            self.publish(symbol);
        }
        self.read_ring();
        self.clock += CLOCK_STEP;
        self.fanout.flush_throttled(self.clock, &mut self.outboxes);
        let what = || format!("with one tick of each symbol, to {subscribed:?}");
        let sent = self.sent(&what);
        let mut got = BTreeSet::new();
        for message in &sent {
            assert_eq!(message["type"], "tick", "{}: {sent:?}", what());
            let name = message["sym"].as_str().expect("a sym");
            let id = self.symbols.id(name).expect("a symbol of the server");
            assert!(
                subscribed.contains(name),
                "a tick of {name}, not subscribed: {sent:?}"
            );
            assert_eq!(
                message["seq"].as_u64(),
                Some(self.seqs[id as usize]),
                "{}: {sent:?}",
                what()
            );
            assert!(got.insert(name), "{name} ticked twice: {sent:?}");
        }
        for name in subscribed {
            let id = self.symbols.id(name).expect("a symbol of the server");
            if (id as usize) < trading {
                assert!(got.contains(&**name), "no tick of {name}: {sent:?}");
            }
        }
    }

    /// Hands `request` to the session and checks the replies it queued.
    fn exchange(&mut self, request: &[u8], subscribed: &mut BTreeSet<String>) {
        let shown = String::from_utf8_lossy(request).into_owned();
        let text = std::str::from_utf8(request).is_ok();
        let parsed = ClientMsg::parse(&mut request.to_vec());
        let mut payload = request.to_vec();
        let message = Message {
            kind: if text { Kind::Text } else { Kind::Binary },
            payload: &mut payload,
            frames: 1,
        };
        let flow = self.session.on_message(
            KEY,
            message,
            Instant::now(),
            &mut self.fanout,
            &mut self.outboxes,
            &self.ctx,
        );
        assert_eq!(flow, Flow::Continue, "reading paused after {shown:?}");
        assert!(
            !self.session.done_reading(),
            "reading ended after {shown:?}"
        );
        let replies = self.sent(&|| format!("after {shown:?}"));
        let kinds: Vec<&str> = replies
            .iter()
            .map(|reply| reply["type"].as_str().expect("every reply has a type"))
            .collect();
        assert!(!replies.is_empty(), "no reply to {shown:?}");

        if !text {
            assert_eq!(kinds, ["error"], "replies to {shown:?}: {replies:?}");
            assert_eq!(replies[0]["code"], "binary_not_supported");
            return;
        }
        let (names, options) = match parsed {
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
            Ok(ClientMsg::Subscribe { symbols, options }) => (symbols, Some(options)),
            Ok(ClientMsg::Unsubscribe { symbols }) => (symbols, None),
        };
        let subscribing = options.is_some();
        let symbols = &self.symbols;
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

        // What the subscribe brings each symbol it adds, in order.
        let mut data: HashMap<String, Vec<&Value>> = HashMap::new();
        let mut added = Vec::new();
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
                        added.push(name);
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
                        added.iter().any(|added| added == name),
                        "{shown:?}: data for {name}, not subscribed by it: {replies:?}"
                    );
                    data.entry(name.to_string()).or_default().push(reply);
                }
                _ => panic!("unexpected reply to {shown:?}: {reply} in {replies:?}"),
            }
        }
        let Some(options) = options else {
            return;
        };
        // Resolved as the server does: the last `seq` given for a name.
        let from: HashMap<&str, u64> = options
            .from
            .iter()
            .map(|(name, seq)| (name.as_str(), *seq))
            .collect();
        let throttled = options.max_hz.is_some();
        for name in &added {
            let id = symbols.id(name).expect("a symbol of the server");
            let latest = self.seqs[id as usize];
            let got = data.remove(name).unwrap_or_default();
            let seqs: Vec<u64> = got
                .iter()
                .map(|reply| reply["seq"].as_u64().expect("a seq"))
                .collect();
            let kind = |reply: &Value| match (reply["type"].as_str(), reply.get("reset").is_some())
            {
                (Some("snapshot"), true) => "reset",
                (Some("snapshot"), false) => "snapshot",
                _ => "tick",
            };
            let kinds: Vec<&str> = got.iter().map(|reply| kind(reply)).collect();
            let wrong = || format!("{shown:?} sent {name} (latest seq {latest}): {got:?}");
            if latest == 0 {
                assert!(got.is_empty(), "{}: it has not traded", wrong());
                continue;
            }
            let Some(&seen) = from.get(name.as_str()) else {
                assert_eq!(kinds, ["snapshot"], "{}", wrong());
                assert_eq!(seqs, [latest], "{}", wrong());
                continue;
            };
            if seen == latest {
                assert!(got.is_empty(), "{}: it was current", wrong());
            } else if kinds == ["reset"] {
                assert_eq!(seqs, [latest], "{}", wrong());
                let kept = latest.saturating_sub(HISTORY_DEPTH as u64);
                assert!(seen > latest || seen < kept, "{}: could replay", wrong());
            } else {
                assert!(kinds.iter().all(|&kind| kind == "tick"), "{}", wrong());
                let missed: Vec<u64> = if throttled {
                    vec![latest]
                } else {
                    (seen + 1..=latest).collect()
                };
                assert_eq!(seqs, missed, "{}", wrong());
            }
        }
    }
}

/// The frames of one queued entry, which must be whole frames end to end.
fn split_frames(entry: &[u8]) -> Vec<&[u8]> {
    let mut start = 0;
    let frames: Vec<&[u8]> = tickcast::wire::frame::frame_ends(entry)
        .map(|end| {
            let frame = &entry[start..end];
            start = end;
            frame
        })
        .collect();
    assert_eq!(start, entry.len(), "a queued entry holds whole frames only");
    frames
}

/// The payload of one complete, unmasked server frame.
fn server_frame_payload(frame: &[u8]) -> &[u8] {
    tickcast::wire::frame::parse_unmasked(frame)
        .expect("a frame holds exactly its payload")
        .1
}
