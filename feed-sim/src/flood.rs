//! `feed-sim flood`: load on a tickcast server's HTTP side, none of it
//! ticks, to see what it does to the tick path (run `feed-sim load` beside
//! it as the bystander; `benches/e2e.sh flood` does both).
//!
//! Two kinds of load, for `--duration` seconds, then it stops by itself:
//! - an HTTP flood: `--http-clients` keep-alive HTTP/1.1 connections
//!   sending `GET` for each of `--paths` in turn, paced together to
//!   `--http-rate` requests per second (0: each as fast as the server
//!   answers), one request in flight per connection, every response read
//!   to its end; a connection that fails is replaced by a new one;
//! - connection churn: `--churn` TCP connections, `--churn-concurrency` at
//!   a time and as fast as they go, that connect and close without sending
//!   anything (`silent`) or after half a request head (`partial`), the
//!   kind of connection the server's header timeout exists for.
//!
//! The HTTP flood lasts the whole duration; the churn ends sooner once it
//! has made its connections. Connections spread over source addresses
//! 127.0.0.1..=127.0.0.N (as `load` and `soak` do) so that churning tens
//! of thousands of them does not run out of ephemeral ports. Everything
//! runs on one current-thread runtime, so `taskset -c N` pins the tool to
//! one core.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Empty};
use hyper::header::HOST;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use tickcast::feed::pacer::Pacer;

use crate::net;
use crate::report::Latency;
use crate::shared_args::{JsonOutput, SourceIps};
use crate::ws::Target;

/// How long one connect may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an HTTP client waits after a failed connect before the next
/// attempt, so a server that is down is not spun on.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

/// Most requests the pacer lets pile up while every client is busy: this
/// long at `--http-rate`. Older ones are dropped (and counted as missed),
/// so a server that stalls is not then hit by the whole backlog at once.
const MAX_BACKLOG: Duration = Duration::from_millis(100);

/// Highest time the histograms tell apart, µs (a minute).
const TIME_MAX_US: u64 = 60_000_000;

/// What a churned connection does between its connect and its close.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChurnMode {
    /// Sends nothing.
    #[default]
    Silent,
    /// Sends the first lines of a request head, never its end.
    Partial,
}

/// Options of `feed-sim flood`. A flag given twice takes its last value,
/// so a script's defaults can be overridden by flags added after them.
#[derive(Clone, Debug, Args)]
#[command(args_override_self = true)]
pub struct FloodArgs {
    /// The server's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// Keep-alive HTTP/1.1 connections of the flood (0: no HTTP flood).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub http_clients: usize,

    /// Paths requested, comma-separated, in turn over all connections.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "/symbols,/metrics,/no-such-page"
    )]
    pub paths: Vec<String>,

    /// Requests per second over all HTTP connections together (0: as fast
    /// as the server answers).
    #[arg(long, value_name = "REQ/S", default_value_t = 4000.0)]
    pub http_rate: f64,

    /// TCP connections to open and close, in all (0: no churn).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub churn: u64,

    /// What a churned connection sends before it closes.
    #[arg(long, value_enum, default_value = "silent")]
    pub churn_mode: ChurnMode,

    /// Churned connections being opened at once.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub churn_concurrency: usize,

    /// Seconds of flood; the churn stops sooner once it is done.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    #[command(flatten)]
    pub source_ips: SourceIps,

    #[command(flatten)]
    pub json: JsonOutput,
}

/// Everything one flood did.
#[derive(Clone, Debug, Serialize)]
pub struct FloodReport {
    /// `--url`.
    pub url: String,
    /// `--duration`.
    pub duration_seconds: f64,
    /// Source addresses the connections were spread over (0: the
    /// kernel's choice).
    pub source_ips: usize,
    /// The HTTP flood, if there was one.
    pub http: Option<HttpFigures>,
    /// The churn, if there was one.
    pub churn: Option<ChurnFigures>,
}

/// What the HTTP flood did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HttpFigures {
    /// `--http-clients`.
    pub clients: usize,
    /// `--http-rate` (0: unpaced).
    pub target_rate: f64,
    /// Seconds from the first connect to the end of the flood.
    pub seconds: f64,
    /// Connections made (more than `clients` if some failed and were
    /// replaced).
    pub connections: u64,
    /// Requests sent.
    pub requests: u64,
    /// Complete responses read.
    pub responses: u64,
    /// Responses by status class (`"2xx"`, `"4xx"`, ...).
    pub status_classes: BTreeMap<String, u64>,
    /// Failed connects and requests sent that got no response.
    pub errors: u64,
    /// The same failures, by their error text.
    pub error_reasons: BTreeMap<String, u64>,
    /// Requests still waiting for their response when the time was up.
    pub unfinished: u64,
    /// Requests the pacer dropped from its schedule because every client
    /// was busy (`--http-rate` not reached).
    pub missed: u64,
    /// Responses per second.
    pub requests_per_second: f64,
    /// Time from sending a request to reading its response's last byte,
    /// µs.
    pub response_time_us: Latency,
    /// The same counts by path, in `--paths` order.
    pub by_path: Vec<PathFigures>,
}

/// What the requests for one path got.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PathFigures {
    /// The path.
    pub path: String,
    /// Requests sent.
    pub requests: u64,
    /// Complete responses read.
    pub responses: u64,
    /// Responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no response (the connection failed).
    pub errors: u64,
}

/// What the churn did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChurnFigures {
    /// `--churn`: connections asked for.
    pub requested: u64,
    /// `--churn-mode`.
    pub mode: ChurnMode,
    /// `--churn-concurrency`.
    pub concurrency: usize,
    /// Connects started.
    pub attempted: u64,
    /// Connections made (and closed).
    pub connected: u64,
    /// Connects that failed or timed out.
    pub failures: u64,
    /// The same failures, by their error text.
    pub failure_reasons: BTreeMap<String, u64>,
    /// Connects still under way when the time was up.
    pub unfinished: u64,
    /// Seconds from the first connect to the last one's end.
    pub seconds: f64,
    /// Connections made per second.
    pub connects_per_second: f64,
    /// Time each connect took, µs.
    pub connect_time_us: Latency,
}

/// Runs `feed-sim flood`: floods, prints a summary, writes the JSON if
/// asked.
pub fn run(args: FloodArgs) -> anyhow::Result<()> {
    let report = measure(&args)?;
    print!("{}", report.render());
    args.json.write(&report)
}

/// Runs the flood `args` describe on a current-thread runtime of its own
/// and returns its figures. Call it from outside any tokio runtime.
pub fn measure(args: &FloodArgs) -> anyhow::Result<FloodReport> {
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        bail!("give a --duration above 0 seconds");
    }
    if !(args.http_rate >= 0.0 && args.http_rate.is_finite()) {
        bail!("give an --http-rate of at least 0 requests per second (0: unpaced)");
    }
    if args.http_clients == 0 && args.churn == 0 {
        bail!("nothing to do: give --http-clients or --churn above 0");
    }
    if args.churn > 0 && args.churn_concurrency == 0 {
        bail!("give a --churn-concurrency of at least 1");
    }
    if args.http_clients > 0 {
        if args.paths.is_empty() {
            bail!("give at least one path in --paths");
        }
        if let Some(path) = args.paths.iter().find(|p| !p.starts_with('/')) {
            bail!("--paths: {path:?} does not start with '/'");
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the tokio runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, flood(args))
}

/// What the tasks share (one thread).
struct Shared {
    target: Target,
    paths: Vec<String>,
    source_ips: usize,
    /// When the flood stops.
    end: Instant,
    /// The path the next request asks for.
    next_path: Cell<usize>,
    http: RefCell<HttpTotals>,
    /// The next churned connection's number.
    next_churn: Cell<u64>,
    churn_total: u64,
    churn_partial: Option<Bytes>,
    churn: RefCell<ChurnTotals>,
}

/// Counters the HTTP clients add to.
struct HttpTotals {
    connections: u64,
    errors: BTreeMap<String, u64>,
    unfinished: u64,
    by_path: Vec<PathFigures>,
    response_us: Histogram<u64>,
}

/// Counters the churn workers add to.
struct ChurnTotals {
    attempted: u64,
    connected: u64,
    failures: BTreeMap<String, u64>,
    unfinished: u64,
    connect_us: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_max(TIME_MAX_US, 3).expect("valid histogram bounds")
}

fn micros(elapsed: Duration) -> u64 {
    (elapsed.as_micros() as u64).clamp(1, TIME_MAX_US)
}

async fn flood(args: &FloodArgs) -> anyhow::Result<FloodReport> {
    let target = Target::parse_http(&args.url)?;
    if !matches!(target.path.as_str(), "" | "/") {
        bail!(
            "give --url without a path (http://HOST:PORT); the paths go in --paths, not {:?}",
            target.path
        );
    }
    crate::net::raise_open_file_limit(args.http_clients + args.churn_concurrency);
    let source_ips = args.source_ips.count_for(target.addr);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.duration);
    let churn_partial = (args.churn_mode == ChurnMode::Partial).then(|| {
        // A request head without the blank line that would end it.
        Bytes::from(format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n",
            args.paths.first().map_or("/", String::as_str),
            target.authority
        ))
    });
    let shared = Rc::new(Shared {
        paths: args.paths.clone(),
        source_ips,
        end,
        next_path: Cell::new(0),
        http: RefCell::new(HttpTotals {
            by_path: args
                .paths
                .iter()
                .map(|path| PathFigures {
                    path: path.clone(),
                    ..PathFigures::default()
                })
                .collect(),
            ..HttpTotals::default()
        }),
        next_churn: Cell::new(0),
        churn_total: args.churn,
        churn_partial,
        churn: RefCell::new(ChurnTotals::default()),
        target,
    });

    // The pacer hands out one permit per request due; unpaced clients
    // take none.
    let permits = (args.http_rate > 0.0).then(|| Rc::new(Semaphore::new(0)));
    let missed = Rc::new(Cell::new(0u64));
    let pacer = match (&permits, args.http_clients) {
        (Some(permits), 1..) => Some(tokio::task::spawn_local(pace(
            permits.clone(),
            args.http_rate,
            end,
            missed.clone(),
        ))),
        _ => None,
    };
    let http_tasks: Vec<_> = (0..args.http_clients)
        .map(|i| tokio::task::spawn_local(http_client(shared.clone(), i as u64, permits.clone())))
        .collect();
    // Churned connections take the source addresses after the HTTP ones.
    let churn_tasks: Vec<_> = (0..args.churn_concurrency.min(args.churn as usize))
        .map(|_| tokio::task::spawn_local(churn_worker(shared.clone(), args.http_clients as u64)))
        .collect();

    for task in churn_tasks {
        task.await.context("a churn task failed")?;
    }
    let churn_seconds = start.elapsed().as_secs_f64();
    for task in http_tasks {
        task.await.context("an HTTP client task failed")?;
    }
    let http_seconds = start.elapsed().as_secs_f64();
    if let Some(pacer) = pacer {
        pacer.await.context("the pacer task failed")?;
    }

    let http = (args.http_clients > 0).then(|| {
        let totals = shared.http.take();
        let mut status_classes = BTreeMap::new();
        for path in &totals.by_path {
            for (code, n) in &path.statuses {
                *status_classes
                    .entry(format!("{}xx", code / 100))
                    .or_default() += n;
            }
        }
        let responses = totals.by_path.iter().map(|p| p.responses).sum::<u64>();
        HttpFigures {
            clients: args.http_clients,
            target_rate: args.http_rate,
            seconds: http_seconds,
            connections: totals.connections,
            requests: totals.by_path.iter().map(|p| p.requests).sum(),
            responses,
            status_classes,
            errors: totals.errors.values().sum(),
            error_reasons: totals.errors,
            unfinished: totals.unfinished,
            missed: missed.get(),
            requests_per_second: responses as f64 / http_seconds,
            response_time_us: Latency::from_histogram(&totals.response_us),
            by_path: totals.by_path,
        }
    });
    let churn = (args.churn > 0).then(|| {
        let totals = shared.churn.take();
        ChurnFigures {
            requested: args.churn,
            mode: args.churn_mode,
            concurrency: args.churn_concurrency,
            attempted: totals.attempted,
            connected: totals.connected,
            failures: totals.failures.values().sum(),
            failure_reasons: totals.failures,
            unfinished: totals.unfinished,
            seconds: churn_seconds,
            connects_per_second: totals.connected as f64 / churn_seconds,
            connect_time_us: Latency::from_histogram(&totals.connect_us),
        }
    });
    Ok(FloodReport {
        url: args.url.clone(),
        duration_seconds: args.duration,
        source_ips,
        http,
        churn,
    })
}

impl Default for HttpTotals {
    fn default() -> Self {
        HttpTotals {
            connections: 0,
            errors: BTreeMap::new(),
            unfinished: 0,
            by_path: Vec::new(),
            response_us: histogram(),
        }
    }
}

impl Default for ChurnTotals {
    fn default() -> Self {
        ChurnTotals {
            attempted: 0,
            connected: 0,
            failures: BTreeMap::new(),
            unfinished: 0,
            connect_us: histogram(),
        }
    }
}

/// Adds a permit to `permits` for every request due at `rate` until `end`,
/// keeping at most [`MAX_BACKLOG`] worth waiting.
async fn pace(permits: Rc<Semaphore>, rate: f64, end: Instant, missed: Rc<Cell<u64>>) {
    let backlog = ((rate * MAX_BACKLOG.as_secs_f64()).ceil() as usize).max(1);
    let mut pacer = Pacer::new(rate, std::time::Instant::now());
    loop {
        let now = std::time::Instant::now();
        if now >= end.into_std() {
            break;
        }
        let due = pacer.due(now) as usize;
        let given = due.min(backlog.saturating_sub(permits.available_permits()));
        permits.add_permits(given);
        missed.set(missed.get() + (due - given) as u64);
        let next = Instant::from_std(pacer.next_deadline());
        tokio::time::sleep_until(next.min(end)).await;
    }
    missed.set(missed.get() + pacer.skipped());
}

/// One keep-alive HTTP connection (replaced when it fails), the `index`th,
/// sending requests until the end; with `permits`, one request per permit.
async fn http_client(shared: Rc<Shared>, index: u64, permits: Option<Rc<Semaphore>>) {
    let end = shared.end;
    let source = net::source_ip(index, shared.source_ips);
    while Instant::now() < end {
        let connect = net::connect_from(shared.target.addr, source);
        let stream =
            match tokio::time::timeout_at(end.min(Instant::now() + CONNECT_TIMEOUT), connect).await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    shared.http_error(format!("{e:#}"));
                    tokio::time::sleep_until(end.min(Instant::now() + RECONNECT_PAUSE)).await;
                    continue;
                }
                Err(_) if Instant::now() >= end => return,
                Err(_) => {
                    shared.http_error(format!("connect: none within {CONNECT_TIMEOUT:?}"));
                    continue;
                }
            };
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) =
            match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                Ok(handshake) => handshake,
                Err(e) => {
                    shared.http_error(format!("handshake: {e}"));
                    continue;
                }
            };
        tokio::task::spawn_local(connection);
        shared.http.borrow_mut().connections += 1;
        loop {
            match &permits {
                Some(permits) => match tokio::time::timeout_at(end, permits.acquire()).await {
                    Ok(permit) => permit.expect("the semaphore is never closed").forget(),
                    Err(_) => return,
                },
                None if Instant::now() >= end => return,
                None => {}
            }
            match tokio::time::timeout_at(end, sender.ready()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    shared.http_error(format!("connection: {e}"));
                    break;
                }
                Err(_) => return,
            }
            let n = shared.next_path.get();
            shared.next_path.set((n + 1) % shared.paths.len());
            let request = Request::get(shared.paths[n].as_str())
                .header(HOST, shared.target.authority.as_str())
                .body(Empty::<Bytes>::new())
                .expect("a GET with a valid path builds");
            shared.http.borrow_mut().by_path[n].requests += 1;
            let sent = Instant::now();
            let exchange = async {
                let response = sender.send_request(request).await?;
                let status = response.status().as_u16();
                response.into_body().collect().await?;
                Ok::<_, hyper::Error>(status)
            };
            match tokio::time::timeout_at(end, exchange).await {
                Ok(Ok(status)) => {
                    let mut http = shared.http.borrow_mut();
                    let _ = http.response_us.record(micros(sent.elapsed()));
                    let path = &mut http.by_path[n];
                    path.responses += 1;
                    *path.statuses.entry(status).or_default() += 1;
                }
                Ok(Err(e)) => {
                    shared.http.borrow_mut().by_path[n].errors += 1;
                    shared.http_error(format!("request: {e}"));
                    break;
                }
                Err(_) => {
                    shared.http.borrow_mut().unfinished += 1;
                    return;
                }
            }
        }
    }
}

impl Shared {
    fn http_error(&self, reason: String) {
        *self.http.borrow_mut().errors.entry(reason).or_default() += 1;
    }

    fn churn_failure(&self, reason: String) {
        *self.churn.borrow_mut().failures.entry(reason).or_default() += 1;
    }
}

/// Opens and closes churned connections, one at a time, until they are
/// all made or the time is up; connection `n` is the `first_source + n`th
/// to pick a source address.
async fn churn_worker(shared: Rc<Shared>, first_source: u64) {
    let end = shared.end;
    loop {
        let n = shared.next_churn.get();
        if n >= shared.churn_total || Instant::now() >= end {
            return;
        }
        shared.next_churn.set(n + 1);
        shared.churn.borrow_mut().attempted += 1;
        let source = net::source_ip(first_source + n, shared.source_ips);
        let started = Instant::now();
        let connect = net::connect_from(shared.target.addr, source);
        match tokio::time::timeout_at(end.min(started + CONNECT_TIMEOUT), connect).await {
            Ok(Ok(mut stream)) => {
                let took = started.elapsed();
                if let Some(partial) = &shared.churn_partial {
                    if let Err(e) = stream.write_all(partial).await {
                        shared.churn_failure(format!("write: {e}"));
                        continue;
                    }
                }
                drop(stream);
                let mut churn = shared.churn.borrow_mut();
                churn.connected += 1;
                let _ = churn.connect_us.record(micros(took));
            }
            Ok(Err(e)) => shared.churn_failure(format!("{e:#}")),
            Err(_) if Instant::now() >= end => {
                shared.churn.borrow_mut().unfinished += 1;
                return;
            }
            Err(_) => shared.churn_failure(format!("connect: none within {CONNECT_TIMEOUT:?}")),
        }
    }
}

/// Milliseconds, for the summary.
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn counted<K: std::fmt::Display>(map: &BTreeMap<K, u64>) -> String {
    map.iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl FloodReport {
    /// The summary printed at the end of a run.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "flood of {} for {} s (connections from {} source address(es))",
            self.url,
            self.duration_seconds,
            self.source_ips.max(1)
        );
        if let Some(http) = &self.http {
            let rate = if http.target_rate > 0.0 {
                format!("paced to {} req/s", http.target_rate)
            } else {
                "unpaced".to_string()
            };
            let _ = writeln!(
                out,
                "  http:  {} keep-alive clients, {rate}: {:.0} req/s over {:.1} s",
                http.clients, http.requests_per_second, http.seconds
            );
            let _ = writeln!(
                out,
                "         {} requests, {} responses ({}), {} errors, {} unfinished, {} missed by the pacer; {} connections",
                http.requests,
                http.responses,
                counted(&http.status_classes),
                http.errors,
                http.unfinished,
                http.missed,
                http.connections
            );
            let t = &http.response_time_us;
            let _ = writeln!(
                out,
                "         response time p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                ms(t.p50),
                ms(t.p99),
                ms(t.max)
            );
            for path in &http.by_path {
                let _ = writeln!(
                    out,
                    "         {}: {} requests, {} responses ({}), {} errors",
                    path.path,
                    path.requests,
                    path.responses,
                    counted(&path.statuses),
                    path.errors
                );
            }
            for (reason, n) in &http.error_reasons {
                let _ = writeln!(out, "         error x{n}: {reason}");
            }
        }
        if let Some(churn) = &self.churn {
            let mode = match churn.mode {
                ChurnMode::Partial => "partial request, then close",
                ChurnMode::Silent => "silent close",
            };
            let _ = writeln!(
                out,
                "  churn: {} of {} connections ({mode}, {} at once) in {:.2} s: {:.0} connects/s",
                churn.connected,
                churn.requested,
                churn.concurrency,
                churn.seconds,
                churn.connects_per_second
            );
            let t = &churn.connect_time_us;
            let _ = writeln!(
                out,
                "         {} failures, {} unfinished; connect time p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                churn.failures,
                churn.unfinished,
                ms(t.p50),
                ms(t.p99),
                ms(t.max)
            );
            for (reason, n) in &churn.failure_reasons {
                let _ = writeln!(out, "         failure x{n}: {reason}");
            }
        }
        out
    }
}
