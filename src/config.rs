//! `Config`: every command-line flag, each also settable from a
//! `TICKCAST_…` environment variable, with its default and what happens
//! when a limit is hit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::fanout::outbox::OutboxLimits;
use crate::wire::reader::InputLimits;

/// Most fragments one client message may have; more close the connection
/// with 1009.
pub const MAX_FRAGMENTS: u32 = 1024;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Where the ticks come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedSource {
    /// The built-in price simulator.
    Sim,
    /// External publishers at `GET /ingest` (needs `--ingest-token`).
    Ingest,
    /// Subjects `ticks.<SYMBOL>` on a NATS server: the one(s) given here
    /// (`--feed nats://HOST:4222`), or else `--nats-url`.
    Nats(Option<String>),
}

/// tickcast: a market-data ticker fan-out server.
///
/// Serves a live tick stream over WebSocket at /ws (JSON protocol v1, see
/// docs/PROTOCOL.md), fed by a built-in price simulator.
#[derive(Clone, Debug, Parser)]
#[command(version, about)]
pub struct Config {
    /// Log line format; the level comes from RUST_LOG (default `info`,
    /// e.g. RUST_LOG=tickcast=debug).
    #[arg(long, env = "TICKCAST_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Address to listen on.
    #[arg(long, env = "TICKCAST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Number of symbols the simulator trades: real US tickers first, then
    /// generated names (the built-in feed only: an external feed's symbols
    /// are its own).
    #[arg(long, env = "TICKCAST_SYMBOLS", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub symbols: u32,

    /// A file listing the symbols the server carries, one per line: NAME,
    /// or NAME,DECIMALS for a price precision (e.g. EURUSD,5); # starts a
    /// comment. Then the universe is fixed: an external feed's ticks of
    /// other symbols are refused (unknown_symbol), and the simulator
    /// trades these. Without it an external feed's symbols are learned
    /// from its ticks, up to --max-symbols.
    #[arg(long, env = "TICKCAST_SYMBOLS_FILE")]
    pub symbols_file: Option<PathBuf>,

    /// Most symbols the server learns from an external feed; ticks of new
    /// symbols past it are refused (symbol_limit) and counted
    /// (tickcast_feed_symbols_refused_total).
    #[arg(long, env = "TICKCAST_MAX_SYMBOLS", default_value_t = crate::symbol::DEFAULT_MAX_SYMBOLS,
          value_parser = clap::value_parser!(u32).range(1..=4_000_000))]
    pub max_symbols: u32,

    /// Total ticks per second across all symbols.
    #[arg(long, env = "TICKCAST_RATE", default_value_t = 1000.0, value_parser = parse_rate)]
    pub rate: f64,

    /// Where ticks come from: `sim`, the built-in simulator; `ingest`, a
    /// publisher connecting to /ingest (e.g. `feed-sim publish`); or NATS
    /// subjects `ticks.<SYMBOL>` (e.g. from `feed-sim publish --nats`; see
    /// docs/CLUSTER.md), given as the server URL(s), `nats://HOST:4222`,
    /// or as `nats` for the server(s) at --nats-url.
    #[arg(long, env = "TICKCAST_FEED", default_value = "sim", value_parser = parse_feed)]
    pub feed: FeedSource,

    /// The NATS server(s) `--feed nats` subscribes to, comma-separated
    /// (e.g. `nats://10.0.0.1:4222,nats://10.0.0.2:4222`). A URL given to
    /// --feed takes its place.
    #[arg(
        long,
        env = "TICKCAST_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,

    /// Token a publisher must present at /ingest, as `Authorization:
    /// Bearer TOKEN` or `?token=TOKEN`. Required with `--feed ingest`.
    #[arg(long, env = "TICKCAST_INGEST_TOKEN", hide_env_values = true)]
    pub ingest_token: Option<String>,

    /// Secret that signs client tokens (HS256). With it, /ws admits only
    /// clients with a valid token and shows each only the symbols its token
    /// covers; without it (and without --auth-secret-file) the server is
    /// open to anyone who can reach it. `tickcast token` issues tokens.
    #[arg(long, env = "TICKCAST_AUTH_SECRET", hide_env_values = true,
          conflicts_with = "auth_secret_file", value_parser = crate::auth::parse_secret)]
    pub auth_secret: Option<String>,

    /// File holding the token secret (trailing newline ignored): the same
    /// as --auth-secret, without putting the secret on the command line.
    #[arg(long, env = "TICKCAST_AUTH_SECRET_FILE")]
    pub auth_secret_file: Option<PathBuf>,

    /// Seed of the simulator: the same seed gives the same tick stream.
    #[arg(long, env = "TICKCAST_SEED", default_value_t = 1)]
    pub seed: u64,

    /// Ticks the ring holds (rounded up to a power of two). A fan-out that
    /// falls this far behind the feed loses ticks, counted and logged.
    #[arg(long, env = "TICKCAST_RING_CAPACITY", default_value_t = 65_536,
          value_parser = clap::value_parser!(u32).range(2..=(1 << 26)))]
    pub ring_capacity: u32,

    /// Ticks of each symbol kept for clients that reconnect and resume
    /// with `from` (0: none; resuming clients then get reset snapshots).
    /// Costs about 200 bytes per tick, in every shard (each keeps its
    /// own): symbols × depth × 200 B × shards in all.
    #[arg(long, env = "TICKCAST_HISTORY_DEPTH", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub history_depth: u32,

    /// Queued tick bytes per connection before its ticks are conflated
    /// (only the newest tick per symbol kept); 1 KiB to 1 GiB.
    #[arg(long, env = "TICKCAST_MAX_OUTBOX_BYTES", default_value_t = 256 * 1024,
          value_parser = parse_outbox_bytes)]
    pub max_outbox_bytes: usize,

    /// Seconds a connection may stay behind (conflating without catching
    /// up) before it is closed with 1008 "slow consumer".
    #[arg(long, env = "TICKCAST_SLOW_CONSUMER_TIMEOUT", default_value = "15", value_parser = parse_seconds)]
    pub slow_consumer_timeout: Duration,

    /// Seconds a connection's socket may accept no byte at all while
    /// output waits for it, before it is closed with 1008 "slow consumer".
    #[arg(long, env = "TICKCAST_WRITE_TIMEOUT", default_value = "30", value_parser = parse_seconds)]
    pub write_timeout: Duration,

    /// Most symbols one connection may subscribe to by name (a plain "*" is
    /// always allowed). Past it a subscribe gets a `too_many_symbols`
    /// error.
    #[arg(long, env = "TICKCAST_MAX_SUBSCRIPTIONS", default_value_t = 10_000)]
    pub max_subscriptions: usize,

    /// Largest client message in bytes, all fragments together; larger
    /// ones close the connection with 1009.
    #[arg(long, env = "TICKCAST_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: u64,

    /// Event-loop threads serving WebSocket connections, each owning the
    /// connections handed to it (a new one goes to the shard with the
    /// fewest). 0, the default: one per core available to the process
    /// (after `taskset` or a cgroup CPU limit).
    #[arg(long, env = "TICKCAST_SHARDS", default_value_t = 0)]
    pub shards: usize,

    /// Most WebSocket connections open at once; an upgrade past it is
    /// answered 503.
    #[arg(long, env = "TICKCAST_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,

    /// Most WebSocket connections open at once from one IP address; past it
    /// an upgrade is answered 429. 0: no per-address limit (the default,
    /// since behind a proxy or load balancer every client has its address).
    #[arg(long, env = "TICKCAST_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,

    /// Seconds a new TCP connection (or an idle HTTP one) has to send a
    /// complete request head; slower ones are dropped.
    #[arg(long, env = "TICKCAST_HANDSHAKE_TIMEOUT", default_value = "10", value_parser = parse_seconds)]
    pub handshake_timeout: Duration,

    /// Seconds between the server's pings on an open WebSocket; a
    /// connection that sends nothing at all (not even a pong) for a whole
    /// interval after a ping is closed with 1008. 0 turns pings off.
    #[arg(long, env = "TICKCAST_PING_INTERVAL", default_value = "30", value_parser = parse_seconds)]
    pub ping_interval: Duration,

    /// Frames per second per connection (requests, pings, pongs and each
    /// fragment of a message all count), with bursts of as many. Past it a
    /// request gets a `rate_limited` error; a client still sending after
    /// another second's worth of refusals is closed with 1008.
    #[arg(long, env = "TICKCAST_MAX_MESSAGES_PER_SECOND", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_messages_per_second: u32,

    /// Browser origins allowed to open /ws (comma-separated, e.g.
    /// `https://app.example.com,http://localhost:3000`); an upgrade with
    /// another `Origin` header is answered 403. Clients that send no Origin
    /// (non-browsers) are always allowed. Empty: any origin.
    #[arg(long, env = "TICKCAST_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// PEM file with the TLS certificate chain (the server's own
    /// certificate first, then intermediates). With --tls-key the listener
    /// speaks HTTPS and WSS only, for deployments with no TLS proxy in
    /// front.
    #[arg(long, env = "TICKCAST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file with the private key of --tls-cert.
    #[arg(long, env = "TICKCAST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Serve a WebSocket echo endpoint at this path (e.g. `/echo`) for
    /// conformance suites such as Autobahn: same WebSocket layer as /ws,
    /// messages up to 16 MiB. Off by default.
    #[arg(long, env = "TICKCAST_ECHO_ROUTE", value_parser = parse_route)]
    pub echo_route: Option<String>,
}

impl Config {
    /// The per-connection output limits these flags set (the outbox
    /// limit at most [`MAX_OUTBOX_BYTES`], however the config was made).
    pub fn outbox_limits(&self) -> OutboxLimits {
        OutboxLimits {
            max_bytes: self.max_outbox_bytes.min(MAX_OUTBOX_BYTES),
            slow_consumer_timeout: self.slow_consumer_timeout,
            write_timeout: self.write_timeout,
        }
    }

    /// How often the server pings an open WebSocket, if at all.
    pub fn pings(&self) -> Option<Duration> {
        Some(self.ping_interval).filter(|interval| !interval.is_zero())
    }

    /// How many shards serve connections: `--shards`, or one per core
    /// available.
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The per-connection input limits these flags set.
    pub fn input_limits(&self) -> InputLimits {
        InputLimits {
            max_message_bytes: self.max_message_bytes,
            max_fragments: MAX_FRAGMENTS,
        }
    }

    /// The NATS server URL(s) the NATS feed connects to, comma-separated.
    pub fn nats_servers(&self) -> &str {
        match &self.feed {
            FeedSource::Nats(Some(urls)) => urls,
            _ => &self.nats_url,
        }
    }

    /// Whether the listener speaks TLS.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }

    /// The configuration with no flags given (`TICKCAST_…` variables still
    /// apply).
    pub fn defaults() -> Self {
        Config::parse_from(["tickcast"])
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of ticks per second"))?;
    if !(rate > 0.0 && rate <= 50_000_000.0) {
        return Err(format!(
            "{rate} ticks per second is out of range: give a rate above 0 and at most 50000000"
        ));
    }
    Ok(rate)
}

fn parse_feed(s: &str) -> Result<FeedSource, String> {
    match s {
        "sim" => Ok(FeedSource::Sim),
        "ingest" => Ok(FeedSource::Ingest),
        "nats" => Ok(FeedSource::Nats(None)),
        urls if urls.contains("://") => {
            for url in urls.split(',') {
                let scheme = url.trim().split("://").next().unwrap_or_default();
                if !["nats", "tls", "ws", "wss"].contains(&scheme) {
                    return Err(format!(
                        "{url:?} is not a NATS server URL; give one such as nats://127.0.0.1:4222"
                    ));
                }
            }
            Ok(FeedSource::Nats(Some(urls.to_string())))
        }
        other => Err(format!(
            "{other:?} is not a feed; give sim, ingest, nats, or a NATS server URL such as nats://127.0.0.1:4222"
        )),
    }
}

fn parse_route(s: &str) -> Result<String, String> {
    const TAKEN: [&str; 6] = ["/", "/ws", "/ingest", "/healthz", "/symbols", "/metrics"];
    if !s.starts_with('/') || s.contains(['?', '#', ' ']) {
        return Err(format!("{s:?} is not a path; give one such as /echo"));
    }
    if TAKEN.contains(&s) || s.starts_with("/dashboard.") {
        return Err(format!(
            "{s} is already a route of the server; pick another path, e.g. /echo"
        ));
    }
    Ok(s.to_string())
}

/// The largest `--max-outbox-bytes`: an outbox counts its bytes in `u32`,
/// and holds up to about twice this much.
pub const MAX_OUTBOX_BYTES: usize = 1 << 30;

fn parse_outbox_bytes(s: &str) -> Result<usize, String> {
    let bytes: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number of bytes (give e.g. 262144)"))?;
    if !(1024..=MAX_OUTBOX_BYTES).contains(&bytes) {
        return Err(format!(
            "{bytes} bytes is out of range: give between 1024 (1 KiB) and {MAX_OUTBOX_BYTES} (1 GiB)"
        ));
    }
    Ok(bytes)
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let seconds: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("{s:?} is not a valid number of seconds (give e.g. 15 or 0.5)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documentation() {
        let config = Config::defaults();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.symbols, 100);
        assert_eq!(config.rate, 1000.0);
        assert_eq!(config.max_message_bytes, 65_536);
    }

    #[test]
    fn bad_values_say_what_to_give() {
        let err = Config::try_parse_from(["tickcast", "--rate", "0"]).unwrap_err();
        assert!(err.to_string().contains("give a rate above 0"), "{err}");
        let err = Config::try_parse_from(["tickcast", "--symbols", "0"]).unwrap_err();
        assert!(err.to_string().contains("1..=100000"), "{err}");
        let err =
            Config::try_parse_from(["tickcast", "--max-outbox-bytes", "8589934592"]).unwrap_err();
        assert!(err.to_string().contains("give between 1024"), "{err}");
    }

    #[test]
    fn an_outbox_limit_past_the_ceiling_is_clamped_however_the_config_was_made() {
        let mut config = Config::defaults();
        config.max_outbox_bytes = 8 << 30;
        assert_eq!(config.outbox_limits().max_bytes, MAX_OUTBOX_BYTES);
    }

    #[test]
    fn the_feed_is_a_name_or_a_nats_url() {
        assert_eq!(Config::defaults().feed, FeedSource::Sim);
        let config = Config::try_parse_from(["tickcast", "--feed", "nats"]).unwrap();
        assert_eq!(config.feed, FeedSource::Nats(None));
        assert_eq!(config.nats_servers(), "nats://127.0.0.1:4222");
        let config =
            Config::try_parse_from(["tickcast", "--feed", "nats://10.0.0.1:4222,nats://b:4222"])
                .unwrap();
        assert_eq!(config.nats_servers(), "nats://10.0.0.1:4222,nats://b:4222");
        let err = Config::try_parse_from(["tickcast", "--feed", "http://x:4222"]).unwrap_err();
        assert!(err.to_string().contains("not a NATS server URL"), "{err}");
        let err = Config::try_parse_from(["tickcast", "--feed", "kafka"]).unwrap_err();
        assert!(err.to_string().contains("give sim, ingest, nats"), "{err}");
    }

    #[test]
    fn tls_needs_both_the_certificate_and_the_key() {
        let config =
            Config::try_parse_from(["tickcast", "--tls-cert", "c.pem", "--tls-key", "k.pem"])
                .unwrap();
        assert!(config.tls());
        for flag in ["--tls-cert", "--tls-key"] {
            let err = Config::try_parse_from(["tickcast", flag, "x.pem"]).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::MissingRequiredArgument,
                "{err}"
            );
        }
        assert!(!Config::defaults().tls());
    }
}
