//! The NATS feed (`--feed nats`): ticks arrive from a NATS server, so any
//! number of tickcast nodes can carry the same stream from one publisher
//! (`feed-sim publish --nats`, or any program speaking this format).
//!
//! Subjects and payload: each tick is one message on `ticks.<SYMBOL>`
//! ([`subject`]: `ticks.AAPL`, `ticks.BRK.B`, `ticks.SPY_261218C00600000`:
//! a space in a name becomes `_`, as subjects hold none). The payload
//! names its symbol itself, so the subject only routes. It is either the
//! compact form, version 2 (what `feed-sim publish` sends), little-endian:
//!
//! | bytes | field | type |
//! |---|---|---|
//! | 0 | version | u8, `2` |
//! | 1..9 | `seq` | u64 |
//! | 9..17, 17..25, 25..33 | `px`, `bid`, `ask` | i64, units of 10⁻⁸ |
//! | 33..37 | `size` | u32 |
//! | 37..45 | `ts` | u64 |
//! | 45 | name length *n* | u8, 1..=48 |
//! | 46..46+*n* | `sym` | ASCII |
//!
//! or, for publishers where JSON is handier, a JSON object (first byte
//! `{`), prices as exact decimals (numbers or strings), `sym` optional
//! (else the subject's name):
//!
//! ```json
//! {"sym":"EURUSD","seq":42,"px":1.08435,"bid":"1.08434","ask":1.08436,"size":1000000,"ts":1732250000123456789}
//! ```
//!
//! The first version (44 bytes, prices as binary floats) is refused with
//! a warning naming it rather than read, and an older node that meets a
//! version-2 payload drops it as undecodable (it reads 44-byte payloads
//! only): no node misreads a price.
//!
//! `seq` (per symbol, from 1) and `ts` (ns since the Unix epoch) are the
//! publisher's, and are kept: every node carries identical seqs, so a
//! client moving between nodes resumes with `from` gap-free. Each tick
//! goes through the same checks as `/ingest`'s ([`super::external`]): a
//! new symbol is learned, and a tick whose `seq` is not after the symbol's
//! last one (a duplicate), one the node refuses or one that does not
//! decode is counted and dropped; none of them is fatal. A `seq` that skips ahead
//! (ticks missed while disconnected) reaches subscribers as a reset
//! snapshot, as for any feed gap.
//!
//! While the connection to NATS is down the node keeps serving the last
//! snapshots, `/healthz` answers 503 and `tickcast_feed_connected` is 0;
//! the client reconnects by itself, and resubscribes.
//!
//! Like the simulator, the NATS client runs on a thread of its own (with
//! a single-threaded runtime): when the server is saturated, ticks still
//! reach the ring as they arrive instead of waiting their turn behind the
//! edge's HTTP and handshake tasks.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::external::{Incoming, Intake, JsonTick};
use super::Wake;
use crate::price::Price;
use crate::protocol::json;
use crate::ring::Producer;
use crate::stats::Stats;
use crate::symbol::{Symbols, MAX_NAME_LEN};
use crate::tick::Tick;

/// Subjects are this prefix followed by the symbol.
pub const SUBJECT_PREFIX: &str = "ticks.";

/// What a node subscribes to: every symbol (names may contain dots).
pub const SUBSCRIPTION: &str = "ticks.>";

/// The subject a tick of `symbol` is published on (a space becomes `_`).
pub fn subject(symbol: &str) -> String {
    format!("{SUBJECT_PREFIX}{}", symbol.replace(' ', "_"))
}

/// The compact payload's version byte.
pub const COMPACT_VERSION: u8 = 2;

/// Length of the compact payload before the name.
const COMPACT_HEAD: usize = 46;

/// Length of the first compact form (float prices), refused.
const VERSION_1_LEN: usize = 44;

/// One tick's payload, decoded: the tick and its symbol's name (its JSON
/// form is this struct serialized).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Payload {
    /// The symbol's name.
    pub sym: String,
    /// Per-symbol sequence number, from 1.
    pub seq: u64,
    /// Last trade price.
    pub px: Price,
    /// Best bid.
    pub bid: Price,
    /// Best ask.
    pub ask: Price,
    /// Last trade size.
    pub size: u32,
    /// Publisher's wall clock, ns since the Unix epoch.
    pub ts: u64,
}

impl Payload {
    /// The payload of `tick` of symbol `sym`.
    pub fn from_tick(sym: &str, tick: &Tick) -> Self {
        Payload {
            sym: sym.to_string(),
            seq: tick.seq,
            px: tick.px,
            bid: tick.bid,
            ask: tick.ask,
            size: tick.size,
            ts: tick.ts,
        }
    }

    /// The tick as [`Intake::accept`] takes it.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming {
            sym: &self.sym,
            seq: self.seq,
            px: self.px,
            bid: self.bid,
            ask: self.ask,
            size: self.size,
            ts: self.ts,
        }
    }

    /// Encodes the payload in the compact form. Panics on a name longer
    /// than [`MAX_NAME_LEN`] (no registry holds one, and [`Payload::decode`]
    /// refuses one).
    pub fn encode(&self) -> Vec<u8> {
        let name = self.sym.as_bytes();
        assert!(name.len() <= MAX_NAME_LEN, "symbol names are short");
        let mut out = Vec::with_capacity(COMPACT_HEAD + name.len());
        out.push(COMPACT_VERSION);
        out.extend_from_slice(&self.seq.to_le_bytes());
        for price in [self.px, self.bid, self.ask] {
            out.extend_from_slice(&price.units().to_le_bytes());
        }
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.ts.to_le_bytes());
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out
    }

    /// Encodes the payload as JSON.
    pub fn encode_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a tick always serializes")
    }

    /// Decodes a payload received on `subject`, in either form, prices
    /// exactly; says in words why one does not decode.
    pub fn decode(subject: &str, payload: &[u8]) -> Result<Self, String> {
        match payload {
            // By length first: a first-version payload may start with any
            // byte, and no other payload is 44 bytes long.
            old if old.len() == VERSION_1_LEN => Err(format!(
                "a version-1 payload ({VERSION_1_LEN} bytes, prices as binary floats), which \
                 this node does not read; publish with a current feed-sim (version \
                 {COMPACT_VERSION}, exact prices)"
            )),
            json if json.trim_ascii_start().starts_with(b"[") => {
                Err("a JSON array; a NATS message carries one tick, as a JSON object".into())
            }
            json if json.trim_ascii_start().starts_with(b"{") => {
                json::check(payload, json::TICK_LIMITS).map_err(|fault| fault.to_string())?;
                let wire: JsonTick<'_> = serde_json::from_slice(payload).map_err(|err| {
                    format!(
                        "not a tick ({err}); a JSON payload needs seq, px, bid, ask, size and ts"
                    )
                })?;
                let name = subject.strip_prefix(SUBJECT_PREFIX).unwrap_or(subject);
                let sym = wire.sym.as_deref().unwrap_or(name);
                check_name_len(sym.len())?;
                let tick = wire.incoming(sym).map_err(|err| err.message)?;
                // The id is not the payload's: any will do.
                Ok(Payload::from_tick(tick.sym, &tick.to_tick(0)))
            }
            [COMPACT_VERSION, ..] => Self::decode_compact(payload),
            [version, ..] => Err(format!(
                "payload version {version} is not one this node reads (it reads \
                 {COMPACT_VERSION} and JSON); upgrade this node"
            )),
            [] => Err("an empty payload; a tick needs seq, prices, size, ts and sym".into()),
        }
    }

    fn decode_compact(payload: &[u8]) -> Result<Self, String> {
        let len = payload.len();
        let name_len = payload.get(COMPACT_HEAD - 1).map_or(0, |&n| usize::from(n));
        if len < COMPACT_HEAD || len != COMPACT_HEAD + name_len {
            return Err(format!(
                "a version-{COMPACT_VERSION} payload of {len} bytes, which is not \
                 {COMPACT_HEAD} bytes plus its name's length"
            ));
        }
        check_name_len(name_len)?;
        let u64_at =
            |at: usize| u64::from_le_bytes(payload[at..at + 8].try_into().expect("8 bytes"));
        let price_at = |field: &str, at: usize| {
            let units = u64_at(at) as i64;
            Price::from_units(units).ok_or_else(|| {
                format!("{field} is {units} units of 10^-8, out of range for a price")
            })
        };
        let sym = std::str::from_utf8(&payload[COMPACT_HEAD..])
            .map_err(|_| "the symbol name is not UTF-8".to_string())?;
        Ok(Payload {
            sym: sym.to_string(),
            seq: u64_at(1),
            px: price_at("px", 9)?,
            bid: price_at("bid", 17)?,
            ask: price_at("ask", 25)?,
            size: u32::from_le_bytes(payload[33..37].try_into().expect("4 bytes")),
            ts: u64_at(37),
        })
    }
}

/// Refuses a name no registry could hold, before anything is copied.
fn check_name_len(len: usize) -> Result<(), String> {
    if len > MAX_NAME_LEN {
        return Err(format!(
            "the symbol name is {len} bytes long, the limit is {MAX_NAME_LEN}"
        ));
    }
    Ok(())
}

/// How the NATS client retries: quickly at first, then every 2 s at most.
fn reconnect_delay(attempts: usize) -> Duration {
    Duration::from_millis(100 * attempts.min(20) as u64)
}

/// The running NATS feed thread.
#[derive(Debug)]
pub struct NatsFeed {
    shutdown: CancellationToken,
    thread: thread::JoinHandle<()>,
}

impl NatsFeed {
    /// Drains the NATS connection and waits for the thread to finish.
    pub fn stop(self) {
        self.shutdown.cancel();
        let _ = self.thread.join();
    }
}

/// Starts the thread that connects to `url` (retrying until NATS is up)
/// and writes every tick from `ticks.>` into `producer`, waking `wake`
/// after each batch, until `shutdown` fires. Fails at once if `url` is not
/// a list of NATS server URLs.
pub fn spawn(
    url: &str,
    producer: Producer<Tick>,
    wake: Wake,
    symbols: Arc<Symbols>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) -> Result<NatsFeed, async_nats::Error> {
    // Checked here: the background retries would otherwise retry a URL
    // that can never work, forever and quietly.
    let servers = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::parse::<async_nats::ServerAddr>)
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err("no NATS server given".into());
    }
    stats.feed_connected.store(false, Ordering::Relaxed);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let url = url.to_string();
    let thread_shutdown = shutdown.clone();
    let thread = thread::Builder::new()
        .name("tickcast-nats".into())
        .spawn(move || {
            runtime.block_on(async move {
                let intake = Intake::new(producer, symbols, stats.clone(), wake);
                let receive = receive(&url, servers, intake, stats, &thread_shutdown);
                if let Err(err) = receive.await {
                    tracing::error!(
                        "the NATS feed at {url} stopped: {err}; restart the server to resume ticks"
                    );
                }
            });
        })?;
    Ok(NatsFeed { shutdown, thread })
}

/// Connects, subscribes and writes ticks into the ring until `shutdown`.
async fn receive(
    url: &str,
    servers: Vec<async_nats::ServerAddr>,
    mut intake: Intake,
    stats: Arc<Stats>,
    shutdown: &CancellationToken,
) -> Result<(), async_nats::Error> {
    tracing::info!("connecting to NATS at {url}");
    let event_stats = stats.clone();
    let shown_url = url.to_string();
    let connect = async_nats::ConnectOptions::new()
        .name("tickcast")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |event| {
            let stats = event_stats.clone();
            let url = shown_url.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        stats.feed_connected.store(true, Ordering::Relaxed);
                        tracing::info!("connected to NATS at {url}; receiving ticks.>");
                    }
                    async_nats::Event::Disconnected => {
                        stats.feed_connected.store(false, Ordering::Relaxed);
                        tracing::warn!(
                            "lost the connection to NATS at {url}; serving the last snapshots \
                             and reconnecting (/healthz answers 503 meanwhile)"
                        );
                    }
                    async_nats::Event::Closed => {
                        stats.feed_connected.store(false, Ordering::Relaxed);
                    }
                    // Each failed retry while disconnected says the same
                    // thing; the loss itself was logged once.
                    async_nats::Event::ClientError(err)
                        if !stats.feed_connected.load(Ordering::Relaxed) =>
                    {
                        tracing::debug!("NATS at {url} still unreachable: {err}");
                    }
                    other => tracing::warn!("NATS: {other}"),
                }
            }
        })
        .connect(servers);
    let client = tokio::select! {
        () = shutdown.cancelled() => return Ok(()),
        client = connect => client?,
    };
    let mut subscriber = client.subscribe(SUBSCRIPTION).await?;
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => break,
            message = subscriber.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        let mut drained = 0;
        let mut next = Some(message);
        // Drain what is already buffered, then wake the fan-out once.
        while let Some(message) = next.take() {
            publish(&mut intake, &stats, &message.subject, &message.payload);
            drained += 1;
            if drained >= 1024 {
                break;
            }
            next = futures_util::FutureExt::now_or_never(subscriber.next()).flatten();
        }
        intake.finish();
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), client.drain()).await;
    Ok(())
}

/// Hands one message to the intake if it decodes; counts and logs what
/// is dropped.
fn publish(intake: &mut Intake, stats: &Stats, subject: &str, payload: &[u8]) {
    let decoded = match Payload::decode(subject, payload) {
        Ok(decoded) => decoded,
        Err(err) => {
            let dropped = Stats::add_returning(&stats.feed_bad_ticks, 1);
            // An old publisher or a wrong format is worth a warning (once,
            // then every 10,000th); a stray message is only debug.
            if payload.len() == VERSION_1_LEN || payload.first().is_some_and(|&b| b != b'{') {
                if dropped % 10_000 == 1 {
                    tracing::warn!(subject, dropped, "dropped a NATS message: {err}");
                }
            } else {
                tracing::debug!(subject, "dropped a NATS message: {err}");
            }
            return;
        }
    };
    if let Err(err) = intake.accept(&decoded.incoming()) {
        tracing::debug!(subject, "dropped a tick: {}", err.message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Payload {
        Payload {
            sym: "BTC-USD".into(),
            seq: 42,
            px: "64123.5".parse().unwrap(),
            bid: "-0.00000001".parse().unwrap(),
            ask: "9999999999.99999999".parse().unwrap(),
            size: 300,
            ts: 1_732_250_000_123_456_789,
        }
    }

    #[test]
    fn payloads_round_trip_exactly_in_both_forms() {
        let tick = sample();
        let compact = tick.encode();
        assert_eq!(compact[0], COMPACT_VERSION);
        assert_eq!(compact.len(), COMPACT_HEAD + "BTC-USD".len());
        assert_eq!(Payload::decode("ticks.BTC-USD", &compact), Ok(tick.clone()));
        assert_eq!(
            Payload::decode("ticks.BTC-USD", &tick.encode_json()),
            Ok(tick.clone())
        );
        let json = String::from_utf8(tick.encode_json()).unwrap();
        assert!(json.contains(r#""px":64123.5,"bid":-0.00000001"#), "{json}");
        // JSON may leave the name to the subject, and send prices as text.
        let text = br#"{"seq":1,"px":"1.08435","bid":1.08434,"ask":1.08436,"size":1,"ts":1}"#;
        let decoded = Payload::decode("ticks.EURUSD", text).unwrap();
        assert_eq!(
            (decoded.sym.as_str(), decoded.px.to_string()),
            ("EURUSD", "1.08435".into())
        );
    }

    #[test]
    fn old_unknown_and_broken_payloads_are_refused_in_words() {
        let err = Payload::decode("ticks.AAPL", &[0u8; 44]).unwrap_err();
        assert!(err.contains("version-1"), "{err}");
        let mut future = sample().encode();
        future[0] = 3;
        let err = Payload::decode("ticks.AAPL", &future).unwrap_err();
        assert!(err.contains("version 3"), "{err}");
        let short = &sample().encode()[..50];
        assert!(Payload::decode("ticks.AAPL", short).is_err());
        let precise = br#"{"seq":1,"px":1.000000001,"bid":1,"ask":1,"size":1,"ts":1}"#;
        let err = Payload::decode("ticks.X", precise).unwrap_err();
        assert!(err.contains("px") && err.contains("8 decimals"), "{err}");
        let mut huge = sample().encode();
        huge[9..17].copy_from_slice(&i64::MAX.to_le_bytes());
        assert!(Payload::decode("ticks.X", &huge)
            .unwrap_err()
            .contains("out of range"));
        assert!(Payload::decode("ticks.X", b"").is_err());
        let mut long = sample();
        long.sym = "X".repeat(MAX_NAME_LEN);
        let mut compact = long.encode();
        compact[COMPACT_HEAD - 1] = (MAX_NAME_LEN + 1) as u8;
        compact.push(b'X');
        let err = Payload::decode("ticks.X", &compact).unwrap_err();
        assert!(err.contains("bytes long, the limit is 48"), "{err}");
    }

    #[test]
    fn subjects_keep_dotted_symbols_whole() {
        assert_eq!(subject("BRK.B"), "ticks.BRK.B");
        assert_eq!(subject("SPY 261218C00600000"), "ticks.SPY_261218C00600000");
    }
}
