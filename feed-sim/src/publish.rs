//! `feed-sim publish`: the built-in simulator as an external producer.
//!
//! Runs the same price model as the server's built-in feed
//! (`tickcast::feed::sim`, paced by `tickcast::feed::pacer`) and sends the
//! ticks to a server started with `--feed ingest`, at `/ingest`, in the
//! format clients receive (`tickcast::fanout::encode`): every tick due at
//! one wake-up goes out as one JSON array per frame. The publisher assigns
//! `seq` and `ts`; the server keeps them. Each symbol's `seq` carries on
//! from the last one the server has (read from `GET /symbols` first), so a
//! restarted publisher is not refused for replaying old numbers.
//!
//! With `--nats nats://HOST:PORT`, the ticks go to a NATS server instead,
//! one message per tick on `ticks.<SYMBOL>` in the payload format of
//! `tickcast::feed::nats` (the compact form, version 2, or JSON with
//! `--encoding json`), for any number of servers started with
//! `--feed nats`.
//!
//! It trades the server's default tickers (`--symbols N`), or the names
//! of a symbols file (`--symbols-file`, the server's format: `NAME` or
//! `NAME,DECIMALS` per line), each quoted in its own tick size; a server
//! with an external feed learns them from the first ticks. Seqs start at 1,
//! or carry on from a node's `GET /symbols` with `--continue-from`.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::{BufMut, BytesMut};
use clap::{Args, ValueEnum};
use fastwebsockets::{after_handshake_split, FragmentCollectorRead, Frame, OpCode, Payload, Role};
use tokio::net::TcpStream;

use tickcast::fanout::encode::{write_tick_json, TickKind};
use tickcast::feed::nats;
use tickcast::feed::pacer::Pacer;
use tickcast::feed::sim::Simulator;
use tickcast::feed::symbols::{simulated, universe, SymbolSpec};
use tickcast::tick::now_nanos;

use crate::ws::{self, Target};

/// Most ticks in one frame: about 150 bytes each, so a frame stays well
/// under the server's 64 KiB message limit.
pub const MAX_TICKS_PER_FRAME: usize = 300;

/// How `--nats` encodes each tick's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Encoding {
    /// Version 2, little-endian: seq, px, bid, ask (units of 10^-8),
    /// size, ts and the symbol's name (46 bytes plus the name).
    Compact,
    /// `{"sym":…,"seq":…,"px":…,"bid":…,"ask":…,"size":…,"ts":…}`, prices
    /// as exact decimals.
    Json,
}

/// Options of `feed-sim publish`.
#[derive(Clone, Debug, Args)]
pub struct PublishArgs {
    /// The server's ingest endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ingest")]
    pub url: String,

    /// The server's `--ingest-token` (not used with --nats).
    #[arg(
        long,
        env = "TICKCAST_INGEST_TOKEN",
        hide_env_values = true,
        required_unless_present = "nats"
    )]
    pub token: Option<String>,

    /// Publish to this NATS server (subjects `ticks.<SYMBOL>`) instead of
    /// a server's /ingest; nodes started with `--feed nats` pick them up.
    #[arg(long)]
    pub nats: Option<String>,

    /// With --nats: the payload encoding, `compact` (binary, version 2)
    /// or `json`; nodes read both (docs/CLUSTER.md).
    #[arg(long, value_enum, default_value = "compact", requires = "nats")]
    pub encoding: Encoding,

    /// With --nats: carry each symbol's seq on from the one this node
    /// (`ws://HOST:PORT/ws`) last received, for a restarted publisher.
    #[arg(long, requires = "nats")]
    pub continue_from: Option<String>,

    /// Number of symbols, from the default list (real tickers first, then
    /// generated names). A server with an external feed learns them; one
    /// with a --symbols-file must list them.
    #[arg(long, default_value_t = 100)]
    pub symbols: usize,

    /// Trade the symbols this file lists instead (one per line, NAME or
    /// NAME,DECIMALS, e.g. EURUSD,5; the format of the server's
    /// --symbols-file), each priced in its own number of decimals.
    #[arg(long, conflicts_with = "symbols")]
    pub symbols_file: Option<std::path::PathBuf>,

    /// Total ticks per second across all symbols.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,

    /// Seed of the price model: the same seed gives the same ticks.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    pub duration: Option<f64>,
}

/// What a publishing run did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Published {
    /// Ticks sent.
    pub ticks: u64,
    /// Frames sent.
    pub frames: u64,
    /// `error` replies the server sent.
    pub errors: u64,
    /// Seconds spent publishing.
    pub seconds: f64,
}

/// Runs `feed-sim publish` and prints what it did.
pub fn run(args: PublishArgs) -> anyhow::Result<()> {
    let published = publish(&args)?;
    println!(
        "published {} ticks in {} frames over {:.1} s ({:.0} ticks/s); {} error replies",
        published.ticks,
        published.frames,
        published.seconds,
        published.ticks as f64 / published.seconds.max(1e-9),
        published.errors
    );
    Ok(())
}

/// The symbols the run trades: `--symbols-file`'s, or the first
/// `--symbols` default tickers.
fn specs(args: &PublishArgs) -> anyhow::Result<Vec<SymbolSpec>> {
    let Some(path) = &args.symbols_file else {
        return Ok(universe(args.symbols));
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the symbols file {}", path.display()))?;
    let list = tickcast::symbol::parse_list(&text)
        .map_err(|err| anyhow::anyhow!("the symbols file {}: {err}", path.display()))?;
    Ok(simulated(&list))
}

/// Publishes until `args.duration` has passed (or the server closes);
/// builds its own current-thread runtime.
pub fn publish(args: &PublishArgs) -> anyhow::Result<Published> {
    if args.symbols == 0 || args.symbols > 100_000 {
        bail!("give --symbols between 1 and 100000 (the same number as the server's --symbols)");
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("give a --rate above 0 ticks per second");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let local = tokio::task::LocalSet::new();
    match &args.nats {
        Some(url) => local.block_on(&runtime, publish_nats(args, url)),
        None => local.block_on(&runtime, publish_on(args)),
    }
}

/// Publishes to a NATS server: one message per tick on `ticks.<SYMBOL>`.
async fn publish_nats(args: &PublishArgs, url: &str) -> anyhow::Result<Published> {
    let client = async_nats::ConnectOptions::new()
        .name("feed-sim publish")
        .connect(url)
        .await
        .with_context(|| {
            format!("could not connect to NATS at {url}: is nats-server running there?")
        })?;
    let specs = specs(args)?;
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let subjects: Vec<String> = names.iter().map(|n| nats::subject(n)).collect();
    let mut simulator = Simulator::new(&specs, args.rate, args.seed);
    if let Some(node) = &args.continue_from {
        let target = Target::parse(node)?;
        continue_server_seqs(
            &target,
            args.token.as_deref(),
            &names,
            &mut simulator,
            "node",
        )
        .await
        .with_context(|| format!("reading GET /symbols from {node}"))?;
    }
    let start = Instant::now();
    let end = args.duration.map(|d| start + Duration::from_secs_f64(d));
    let mut pacer = Pacer::new(args.rate, start);
    let mut published = Published::default();
    loop {
        let now = Instant::now();
        if end.is_some_and(|end| now >= end) {
            break;
        }
        let due = pacer.due(now);
        for _ in 0..due {
            let tick = simulator.next_tick(now_nanos());
            let wire = nats::Payload::from_tick(&names[tick.symbol as usize], &tick);
            let payload = match args.encoding {
                Encoding::Compact => wire.encode().into(),
                Encoding::Json => wire.encode_json().into(),
            };
            client
                .publish(subjects[tick.symbol as usize].clone(), payload)
                .await
                .context("the NATS connection closed")?;
        }
        if due > 0 {
            client
                .flush()
                .await
                .context("could not flush to NATS; is the server still up?")?;
            published.ticks += due;
            published.frames += due;
        }
        let next = pacer.next_deadline();
        let wait = match end {
            Some(end) => next.min(end),
            None => next,
        };
        tokio::time::sleep_until(wait.into()).await;
    }
    published.seconds = start.elapsed().as_secs_f64();
    Ok(published)
}

async fn publish_on(args: &PublishArgs) -> anyhow::Result<Published> {
    if args.token.is_none() {
        bail!("give the server's --ingest-token with --token (or TICKCAST_INGEST_TOKEN)");
    }
    let target = Target::parse(&args.url)?;
    let stream = TcpStream::connect(target.addr).await.with_context(|| {
        format!(
            "could not connect to {}: is the server running?",
            target.addr
        )
    })?;
    stream.set_nodelay(true)?;
    let ws = ws::upgrade(stream, &target, args.token.as_deref()).await?;
    let parts = ws
        .into_inner()
        .into_inner()
        .downcast::<hyper_util::rt::TokioIo<TcpStream>>()
        .map_err(|_| anyhow::anyhow!("the upgraded connection is not a TcpStream"))?;
    let (read_half, write_half) = parts.io.into_inner().into_split();
    let early = std::io::Cursor::new(parts.read_buf);
    let (read, mut write) = after_handshake_split(
        tokio::io::AsyncReadExt::chain(early, read_half),
        write_half,
        Role::Client,
    );
    let mut read = FragmentCollectorRead::new(read);

    // The server's replies: errors are counted and shown, a close ends the
    // run.
    let errors = Rc::new(Cell::new(0u64));
    let closed = Rc::new(tokio::sync::Notify::new());
    let reader = {
        let (errors, closed) = (errors.clone(), closed.clone());
        tokio::task::spawn_local(async move {
            let mut ignore =
                |_: Frame<'_>| std::future::ready(Ok::<(), std::convert::Infallible>(()));
            loop {
                match read.read_frame(&mut ignore).await {
                    Ok(frame) if frame.opcode == OpCode::Text => {
                        errors.set(errors.get() + 1);
                        if errors.get() <= 10 {
                            eprintln!("server: {}", String::from_utf8_lossy(&frame.payload));
                        }
                    }
                    Ok(frame) if frame.opcode == OpCode::Close => {
                        let code = frame
                            .payload
                            .get(..2)
                            .map(|c| u16::from_be_bytes([c[0], c[1]]));
                        eprintln!(
                            "server closed the connection: {} {}",
                            code.map_or("without code".into(), |c| c.to_string()),
                            String::from_utf8_lossy(frame.payload.get(2..).unwrap_or_default())
                        );
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            closed.notify_one();
        })
    };

    let specs = specs(args)?;
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let mut simulator = Simulator::new(&specs, args.rate, args.seed);
    // Carry on from the seqs the server already has (a restarted publisher
    // must not replay numbers the server has published).
    continue_server_seqs(
        &target,
        args.token.as_deref(),
        &names,
        &mut simulator,
        "server",
    )
    .await
    .context("reading GET /symbols from the server")?;
    let start = Instant::now();
    let end = args.duration.map(|d| start + Duration::from_secs_f64(d));
    let mut pacer = Pacer::new(args.rate, start);
    let mut published = Published::default();
    let mut frame = BytesMut::with_capacity(MAX_TICKS_PER_FRAME * 160);
    loop {
        let now = Instant::now();
        if end.is_some_and(|end| now >= end) {
            break;
        }
        let mut due = pacer.due(now);
        while due > 0 {
            let count = due.min(MAX_TICKS_PER_FRAME as u64);
            due -= count;
            frame.clear();
            frame.put_u8(b'[');
            for i in 0..count {
                if i > 0 {
                    frame.put_u8(b',');
                }
                let tick = simulator.next_tick(now_nanos());
                write_tick_json(
                    &mut frame,
                    TickKind::Tick,
                    &names[tick.symbol as usize],
                    &tick,
                );
            }
            frame.put_u8(b']');
            write
                .write_frame(Frame::text(Payload::Borrowed(&frame)))
                .await
                .context("the server closed the ingest connection")?;
            published.ticks += count;
            published.frames += 1;
        }
        let next = pacer.next_deadline();
        let wait = match end {
            Some(end) => next.min(end),
            None => next,
        };
        tokio::select! {
            () = tokio::time::sleep_until(wait.into()) => {}
            () = closed.notified() => break,
        }
    }
    published.seconds = start.elapsed().as_secs_f64();
    let _ = write
        .write_frame(Frame::close(1000, b"publisher done"))
        .await;
    // Give the server a moment to answer the close, then stop reading.
    let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
    published.errors = errors.get();
    Ok(published)
}

/// Makes `simulator` carry on after the seqs the `server` (a "server" or
/// "node", for messages) already has for the symbols of `names`, matched
/// by name (a server that learns its symbols lists them in the order it
/// first met them).
async fn continue_server_seqs(
    target: &Target,
    token: Option<&str>,
    names: &[String],
    simulator: &mut Simulator,
    server: &str,
) -> anyhow::Result<()> {
    let known = ws::fetch_symbols(target, token).await?;
    let ours: std::collections::HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(id, name)| (name.as_str(), id))
        .collect();
    let mut matched = 0;
    for row in &known {
        if let Some(&id) = ours.get(row.sym.as_str()) {
            simulator.continue_after(id, row.seq);
            matched += 1;
        }
    }
    if matched == 0 && !known.is_empty() {
        eprintln!(
            "note: the {server} carries none of this publisher's symbols; their seqs start at 1"
        );
    }
    Ok(())
}
