//! Wires the stages together in data-path order, feed → ring → shards
//! (fan-out and sessions) → http, and owns shutdown.
//!
//! Shutdown: when the future given to [`Server::run`] completes, the
//! cancellation token fires; the accept loop stops, the ingest publisher
//! (if any) is closed, every shard queues a 1001 `server shutting down`
//! close to each of its clients, sends it, waits briefly for the client's
//! answer, and ends; meanwhile `run` waits for the edge's connection
//! tasks, all within one [`SHUTDOWN_GRACE`], then stops the feed and
//! returns.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{read_secret_file, Authenticator};
use crate::config::{Config, FeedSource};
use crate::error::Error;
use crate::feed::external::Intake;
use crate::feed::ingest::{IngestLimits, IngestPort};
use crate::feed::symbols::{self as listed, SymbolSpec};
use crate::feed::{self, sim::Simulator, Wake};
use crate::http::{self, AppState};
use crate::limits::ConnectionLimits;
use crate::metrics::Metrics;
use crate::ring::{self, Cursor};
use crate::session::SessionContext;
pub use crate::shard::SHUTDOWN_GRACE;
use crate::shard::{Prepared, Shards};
use crate::stats::Stats;
use crate::symbol::{self, Symbols};
use crate::tick::Tick;
use crate::{tls, trim};

/// The shards' event loops, made before the feed starts so that the feed
/// can wake them; [`start_stages`] starts their threads.
pub fn prepare_shards(config: &Config) -> Result<(Vec<Prepared>, Wake), Error> {
    let prepared = Prepared::many(config.shard_count()).map_err(Error::ShardThread)?;
    let wakers: Vec<_> = prepared.iter().map(Prepared::waker).collect();
    let wake = Wake::new(move || {
        for waker in &wakers {
            // Fails only if the shard's poll is gone (it has stopped).
            let _ = waker.wake();
        }
    });
    Ok((prepared, wake))
}

/// Starts stages 3 to 5 over the ring `cursor`: the shards (made by
/// [`prepare_shards`]), each with its own copy of the cursor, and the
/// state the HTTP edge serves from. Clients need a token when
/// `config.auth_secret` is set ([`Server::bind`] has read
/// `--auth-secret-file` into it). Must run inside a tokio runtime.
/// [`Server::run`] calls it after starting the feed; the end-to-end bench
/// calls it with a ring it feeds itself.
pub fn start_stages(
    config: &Config,
    symbols: Arc<Symbols>,
    stats: Arc<Stats>,
    cursor: &Cursor<Tick>,
    shards: Vec<Prepared>,
    ingest: Option<Arc<IngestPort>>,
    shutdown: CancellationToken,
) -> Result<Arc<AppState>, Error> {
    let session = Arc::new(SessionContext {
        symbols: symbols.clone(),
        outbox_limits: config.outbox_limits(),
        input_limits: config.input_limits(),
        max_subscriptions: config.max_subscriptions,
        max_messages_per_second: config.max_messages_per_second,
        ping_interval: config.pings(),
        stats: stats.clone(),
    });
    // Stage 2 → 3 and 4: every shard reads the ring and serves its
    // connections.
    let shards = Shards::start(
        shards,
        cursor,
        &symbols,
        config.history_depth as usize,
        &session,
    )
    .map_err(Error::ShardThread)?;
    Ok(Arc::new(AppState {
        session,
        shards: Arc::new(shards),
        quotes: Default::default(),
        metrics: Metrics::new(stats),
        echo_route: config.echo_route.clone(),
        limits: ConnectionLimits::new(config.max_connections, config.max_connections_per_ip),
        allowed_origins: config.allowed_origins.clone(),
        handshake_timeout: config.handshake_timeout,
        ingest,
        auth: config
            .auth_secret
            .as_deref()
            .map(|secret| Authenticator::new(secret.as_bytes())),
        next_conn: AtomicU64::new(1),
        shutdown,
        tasks: TaskTracker::new(),
    }))
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    config: Config,
    stats: Arc<Stats>,
    /// Set with `--tls-cert`/`--tls-key`: the listener speaks TLS.
    tls: Option<TlsAcceptor>,
    /// The `--symbols-file` list, read at bind.
    symbols_file: Option<Vec<(String, u8)>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("config", &self.config)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Reads the token secret file and the TLS certificate and key, if
    /// given, and binds `config.listen`.
    pub async fn bind(mut config: Config) -> Result<Server, Error> {
        if let Some(path) = config.auth_secret_file.take() {
            config.auth_secret = Some(read_secret_file(&path)?);
        }
        let symbols_file = match &config.symbols_file {
            None => None,
            Some(path) => {
                let failed = |message: String| Error::SymbolsFile {
                    path: path.clone(),
                    message,
                };
                let text = std::fs::read_to_string(path).map_err(|err| {
                    failed(format!(
                        "{err}; give a readable text file, one symbol per line"
                    ))
                })?;
                Some(symbol::parse_list(&text).map_err(failed)?)
            }
        };
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::TlsIncomplete {
                    missing: "--tls-key",
                })
            }
            (None, Some(_)) => {
                return Err(Error::TlsIncomplete {
                    missing: "--tls-cert",
                })
            }
        };
        let addr = config.listen;
        // The listen backlog stays tokio's 128. A longer one (4096 was
        // measured) lets a burst of connects in all at once, and setting
        // them up starves the tick path: the bystander's p99 under 20,000
        // connects went from 2-4 ms to 30-230 ms (docs/BENCHMARKS.md).
        // With 128 the kernel turns the rest of a burst away, and the
        // connecting clients, not the server, wait for their retry.
        let listener = TcpListener::bind(addr).await.map_err(|source| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                Error::AddrInUse { addr }
            } else {
                Error::Bind { addr, source }
            }
        })?;
        Ok(Server {
            listener,
            config,
            stats: Arc::new(Stats::default()),
            tls,
            symbols_file,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The server's counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` completes, then closes every client with 1001.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Server {
            listener,
            config,
            stats,
            tls,
            symbols_file,
        } = self;
        let (symbols, specs) = universe(&config, symbols_file);
        let symbols = Arc::new(symbols);

        // Stage 1 → 2: the feed writes the ring, from the simulator thread,
        // a publisher connected to /ingest, or a NATS subscription.
        let producer = ring::channel::<Tick>(config.ring_capacity as usize);
        let cursor = producer.cursor();
        let (shards, wake) = prepare_shards(&config)?;
        let token = CancellationToken::new();
        let mut nats_feed = None;
        let (feed, ingest) = match config.feed {
            FeedSource::Sim => {
                let simulator = Simulator::new(&specs, config.rate, config.seed);
                let feed = feed::spawn_simulator(simulator, config.rate, producer, wake.clone())
                    .map_err(Error::FeedThread)?;
                (Some(feed), None)
            }
            FeedSource::Ingest => {
                let token = config
                    .ingest_token
                    .clone()
                    .filter(|token| !token.is_empty())
                    .ok_or(Error::MissingIngestToken)?;
                let intake = Intake::new(producer, symbols.clone(), stats.clone(), wake.clone());
                let port = IngestPort::new(intake, token, stats.clone(), IngestLimits::of(&config));
                (None, Some(Arc::new(port)))
            }
            FeedSource::Nats(_) => {
                let task = feed::nats::spawn(
                    config.nats_servers(),
                    producer,
                    wake.clone(),
                    symbols.clone(),
                    stats.clone(),
                    token.clone(),
                )
                .map_err(|err| Error::Nats {
                    url: config.nats_servers().to_string(),
                    message: err.to_string(),
                })?;
                nats_feed = Some(task);
                (None, None)
            }
        };

        let state = start_stages(
            &config,
            symbols,
            stats.clone(),
            &cursor,
            shards,
            ingest,
            token.clone(),
        )?;
        let addr = listener.local_addr().unwrap_or(config.listen);
        let (ws, web) = match tls {
            Some(_) => ("wss", "https"),
            None => ("ws", "http"),
        };
        match config.feed {
            FeedSource::Sim => tracing::info!(
                symbols = config.symbols,
                rate = config.rate,
                seed = config.seed,
                "tickcast is serving {ws}://{addr}/ws with the built-in feed; dashboard at {web}://{addr}/"
            ),
            FeedSource::Ingest => tracing::info!(
                symbols = %universe_summary(&config),
                "tickcast is serving {ws}://{addr}/ws; publishers connect to {ws}://{addr}/ingest"
            ),
            FeedSource::Nats(_) => tracing::info!(
                symbols = %universe_summary(&config),
                nats = %config.nats_servers(),
                "tickcast is serving {ws}://{addr}/ws with ticks from NATS subjects ticks.>"
            ),
        }
        if config.auth_secret.is_some() {
            tracing::info!("clients need a token signed with the auth secret");
        } else {
            tracing::warn!(
                "no --auth-secret: any client that can reach {ws}://{addr}/ws sees every symbol"
            );
        }
        let edge = tokio::spawn(http::serve(listener, state.clone(), tls));
        tokio::spawn(trim::run(stats.clone(), token.clone()));

        shutdown.await;
        tracing::info!("shutting down: closing every client with 1001");
        token.cancel();
        if let Some(port) = &state.ingest {
            port.close_publisher();
        }
        let _ = edge.await;
        // The shards and the edge's connections close side by side, within
        // one grace period (each shard keeps to it on its own).
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        let shards = state.shards.clone();
        let shards = tokio::task::spawn_blocking(move || shards.shutdown());
        state.tasks.close();
        let http = tokio::time::timeout_at(deadline, state.tasks.wait());
        let (_, http) = tokio::join!(shards, http);
        if http.is_err() {
            tracing::warn!("some HTTP connections did not close within the shutdown grace period");
        }
        if let Some(feed) = feed {
            feed.stop();
        }
        if let Some(nats) = nats_feed {
            // Joining blocks for at most the 2 s drain.
            let _ = tokio::task::spawn_blocking(move || nats.stop()).await;
        }
        Ok(())
    }
}

/// The registry the server starts with and, for the built-in feed, what
/// the simulator trades: the simulator's tickers (or the symbols file's),
/// or for an external feed the symbols file's list or a registry that
/// learns the feed's own symbols.
fn universe(config: &Config, file: Option<Vec<(String, u8)>>) -> (Symbols, Vec<SymbolSpec>) {
    let fixed = |list: &[(String, u8)]| {
        Symbols::fixed(list.iter().cloned()).expect("checked when the list was read")
    };
    match (&config.feed, file) {
        (FeedSource::Sim, Some(list)) => (fixed(&list), listed::simulated(&list)),
        (FeedSource::Sim, None) => {
            let specs = listed::universe(config.symbols as usize);
            let list: Vec<_> = specs.iter().map(|s| (s.name.clone(), s.decimals)).collect();
            (fixed(&list), specs)
        }
        (_, Some(list)) => (fixed(&list), Vec::new()),
        (_, None) => (Symbols::learned(config.max_symbols as usize), Vec::new()),
    }
}

/// How the start-up log line describes an external feed's symbols.
fn universe_summary(config: &Config) -> String {
    match &config.symbols_file {
        Some(path) => format!("those in {}", path.display()),
        None => format!("learned from the feed, up to {}", config.max_symbols),
    }
}
