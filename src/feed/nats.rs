//! The NATS feed (`--feed nats`): ticks arrive from a NATS server, so any
//! number of tickcast nodes can carry the same stream from one publisher
//! (`feed-sim publish --nats`, or any program speaking this format).
//!
//! Subjects and payload: each tick is one message on `ticks.<SYMBOL>`
//! (`ticks.AAPL`, `ticks.BRK.B`). Its payload is either the compact form,
//! 44 bytes little-endian (what `feed-sim publish` sends):
//!
//! | bytes | field | type |
//! |---|---|---|
//! | 0..8 | `seq` | u64 |
//! | 8..16, 16..24, 24..32 | `px`, `bid`, `ask` | f64 |
//! | 32..36 | `size` | u32 |
//! | 36..44 | `ts` | u64 |
//!
//! or, for publishers where JSON is handier, a JSON object. A payload of
//! exactly 44 bytes is compact (the shortest JSON tick is 49 bytes), any
//! other must be JSON:
//!
//! ```json
//! {"seq":42,"px":187.25,"bid":187.24,"ask":187.26,"size":300,"ts":1732250000123456789}
//! ```
//!
//! `seq` (per symbol, from 1) and `ts` (ns since the Unix epoch) are the
//! publisher's, and are kept: every node carries identical seqs, so a
//! client moving between nodes resumes with `from` gap-free. A tick whose
//! `seq` is not after the symbol's last one is dropped (a duplicate), one
//! for a symbol the node does not carry or one that does not decode is
//! counted and dropped; none of them is fatal. A `seq` that skips ahead
//! (ticks missed while disconnected) reaches subscribers as a reset
//! snapshot, as for any feed gap.
//!
//! While the connection to NATS is down the node keeps serving the last
//! snapshots, `/healthz` answers 503 and `tickcast_feed_connected` is 0;
//! the client reconnects by itself, and resubscribes.
//!
//! Like the simulator, the NATS client runs on a thread of its own (with
//! a single-threaded runtime): when the server is saturated, ticks still
//! reach the ring as they arrive instead of waiting their turn behind
//! thousands of connection tasks.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::protocol::json;
use crate::ring::Producer;
use crate::stats::Stats;
use crate::tick::{prices_are_valid, SymbolId, SymbolTable, Tick};

/// Subjects are this prefix followed by the symbol.
pub const SUBJECT_PREFIX: &str = "ticks.";

/// What a node subscribes to: every symbol (names may contain dots).
pub const SUBSCRIPTION: &str = "ticks.>";

/// The subject a tick of `symbol` is published on.
pub fn subject(symbol: &str) -> String {
    format!("{SUBJECT_PREFIX}{symbol}")
}

/// Length of a tick's compact payload.
pub const COMPACT_LEN: usize = 44;

/// One tick's payload on the wire (the symbol is in the subject).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireTick {
    /// Per-symbol sequence number, from 1.
    pub seq: u64,
    /// Last trade price.
    pub px: f64,
    /// Best bid.
    pub bid: f64,
    /// Best ask.
    pub ask: f64,
    /// Last trade size.
    pub size: u32,
    /// Publisher's wall clock, ns since the Unix epoch.
    pub ts: u64,
}

impl WireTick {
    /// The payload of `tick`.
    pub fn from_tick(tick: &Tick) -> Self {
        WireTick {
            seq: tick.seq,
            px: tick.px,
            bid: tick.bid,
            ask: tick.ask,
            size: tick.size,
            ts: tick.ts,
        }
    }

    /// Encodes the payload in the compact form.
    pub fn encode(&self) -> [u8; COMPACT_LEN] {
        let mut out = [0u8; COMPACT_LEN];
        out[0..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..16].copy_from_slice(&self.px.to_le_bytes());
        out[16..24].copy_from_slice(&self.bid.to_le_bytes());
        out[24..32].copy_from_slice(&self.ask.to_le_bytes());
        out[32..36].copy_from_slice(&self.size.to_le_bytes());
        out[36..44].copy_from_slice(&self.ts.to_le_bytes());
        out
    }

    /// Encodes the payload as JSON.
    pub fn encode_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a tick always serializes")
    }

    /// Decodes a payload in either form; refuses prices that are not
    /// finite and non-negative.
    pub fn decode(payload: &[u8]) -> Result<Self, String> {
        // By length first: a compact payload may well start with `{`
        // (seq 123 does), and no JSON tick is as short as 44 bytes.
        let tick = match payload {
            compact if compact.len() == COMPACT_LEN => {
                let u64_at = |at: usize| {
                    u64::from_le_bytes(compact[at..at + 8].try_into().expect("8 bytes"))
                };
                WireTick {
                    seq: u64_at(0),
                    px: f64::from_bits(u64_at(8)),
                    bid: f64::from_bits(u64_at(16)),
                    ask: f64::from_bits(u64_at(24)),
                    size: u32::from_le_bytes(compact[32..36].try_into().expect("4 bytes")),
                    ts: u64_at(36),
                }
            }
            [b'{', ..] => {
                json::check(payload, json::TICK_LIMITS).map_err(|fault| fault.to_string())?;
                serde_json::from_slice(payload).map_err(|err| {
                    format!("not a tick ({err}); a JSON payload needs seq, px, bid, ask, size and ts")
                })?
            }
            other => {
                return Err(format!(
                    "not a tick: {} bytes, neither the {COMPACT_LEN}-byte compact form nor a JSON object",
                    other.len()
                ))
            }
        };
        if !prices_are_valid([tick.px, tick.bid, tick.ask]) {
            return Err(format!(
                "tick {} has a price that is not a finite non-negative number",
                tick.seq
            ));
        }
        Ok(tick)
    }
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
    wake: Arc<Notify>,
    symbols: Arc<SymbolTable>,
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
                let receive = receive(
                    &url,
                    servers,
                    producer,
                    wake,
                    symbols,
                    stats,
                    &thread_shutdown,
                );
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
    mut producer: Producer<Tick>,
    wake: Arc<Notify>,
    symbols: Arc<SymbolTable>,
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
    let mut last_seq = vec![0u64; symbols.len()];
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => break,
            message = subscriber.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        let mut published = 0;
        let mut next = Some(message);
        // Drain what is already buffered, then wake the fan-out once.
        while let Some(message) = next.take() {
            if publish(
                &mut producer,
                &symbols,
                &stats,
                &mut last_seq,
                &message.subject,
                &message.payload,
            ) {
                published += 1;
            }
            if published >= 1024 {
                break;
            }
            next = futures_util::FutureExt::now_or_never(subscriber.next()).flatten();
        }
        if published > 0 {
            Stats::add(&stats.ticks_ingested, published);
            wake.notify_one();
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), client.drain()).await;
    Ok(())
}

/// Writes one message into the ring if it is a tick the node should
/// carry; counts and drops it otherwise. Returns whether it was written.
fn publish(
    producer: &mut Producer<Tick>,
    symbols: &SymbolTable,
    stats: &Stats,
    last_seq: &mut [u64],
    subject: &str,
    payload: &[u8],
) -> bool {
    let name = subject.strip_prefix(SUBJECT_PREFIX).unwrap_or(subject);
    let Some(symbol) = symbols.id(name) else {
        Stats::add(&stats.feed_unknown_symbols, 1);
        tracing::debug!(
            subject,
            "dropped a tick of a symbol this node does not carry; give it the publisher's --symbols"
        );
        return false;
    };
    let wire = match WireTick::decode(payload) {
        Ok(wire) => wire,
        Err(err) => {
            Stats::add(&stats.feed_bad_ticks, 1);
            tracing::debug!(subject, "dropped a message: {err}");
            return false;
        }
    };
    let last = &mut last_seq[symbol as usize];
    if wire.seq <= *last {
        Stats::add(&stats.feed_bad_ticks, 1);
        tracing::debug!(
            subject,
            seq = wire.seq,
            last = *last,
            "dropped a tick whose seq is not after the last one (a duplicate or a restarted publisher)"
        );
        return false;
    }
    *last = wire.seq;
    producer.publish(Tick {
        symbol: symbol as SymbolId,
        seq: wire.seq,
        px: wire.px,
        bid: wire.bid,
        ask: wire.ask,
        size: wire.size,
        ts: wire.ts,
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_bad_prices_are_refused() {
        let tick = WireTick {
            seq: 42,
            px: 187.25,
            bid: 187.24,
            ask: 187.26,
            size: 300,
            ts: 1_732_250_000_123_456_789,
        };
        assert_eq!(WireTick::decode(&tick.encode()), Ok(tick));
        assert_eq!(WireTick::decode(&tick.encode_json()), Ok(tick));
        // Seq 123's first byte is `{`: still the compact form.
        let brace = WireTick { seq: 123, ..tick };
        assert_eq!(brace.encode()[0], b'{');
        assert_eq!(WireTick::decode(&brace.encode()), Ok(brace));
        let shortest_json = br#"{"seq":1,"px":1,"bid":1,"ask":1,"size":1,"ts":1}"#;
        assert!(shortest_json.len() > COMPACT_LEN);
        assert_eq!(WireTick::decode(shortest_json).unwrap().seq, 1);
        let bad = br#"{"seq":1,"px":-1,"bid":1,"ask":1,"size":1,"ts":1}"#;
        assert!(WireTick::decode(bad).unwrap_err().contains("finite"));
        let nan = WireTick {
            ask: f64::NAN,
            ..tick
        };
        assert!(WireTick::decode(&nan.encode())
            .unwrap_err()
            .contains("finite"));
        assert!(WireTick::decode(b"{}").unwrap_err().contains("needs seq"));
        let short = &tick.encode()[..43];
        assert!(WireTick::decode(short)
            .unwrap_err()
            .contains("neither the 44-byte compact form"));
    }

    #[test]
    fn subjects_keep_dotted_symbols_whole() {
        assert_eq!(subject("BRK.B"), "ticks.BRK.B");
    }
}
