//! The command line of `feed-sim load`.

use std::path::PathBuf;

use clap::{ArgGroup, Args};

use crate::shared_args::JsonOutput;

/// Options of `feed-sim load`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("subscription").required(true).args(["all", "subs"])))]
pub struct LoadArgs {
    /// WebSocket URL of the server. The symbol list comes from `GET
    /// /symbols` on the same host and port or, where the server has no
    /// such route, from its `subscribed` reply to a `*` subscribe.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,

    /// Number of WebSocket clients to open.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,

    /// Subscribe every client to every symbol (`"*"`).
    #[arg(long)]
    pub all: bool,

    /// Subscribe every client to K symbols, spread evenly over the server's
    /// list and rotated between clients so every symbol gets subscribers.
    #[arg(long, value_name = "K")]
    pub subs: Option<usize>,

    /// Seconds of warm-up (connecting included) before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,

    /// Seconds measured after the warm-up; the tool then stops.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    #[command(flatten)]
    pub json: JsonOutput,

    /// Process id of the server, to report its CPU use over the window and
    /// its peak resident memory (read from /proc).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// Connects and handshakes in flight at once.
    #[arg(long, default_value_t = 64)]
    pub connect_parallelism: usize,

    /// Spread clients over source addresses 127.0.0.1..=127.0.0.N (loopback
    /// servers only), so many connections do not run out of ephemeral
    /// ports. Default: one address per 25,000 clients.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..))]
    pub source_ips: Option<u8>,

    /// Seconds one client may take to connect, upgrade and subscribe
    /// before it counts as a connect failure.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,

    /// Make the first N clients slow consumers: they subscribe, then read
    /// nothing at all (the socket stays open) until the window ends, to
    /// show what stalled readers do to everyone else. Every other figure is
    /// then about the reading clients only. After the window each stalled
    /// client reads what is pending for up to 2 s, and the report says how
    /// many the server had closed and with which code (1008 "slow
    /// consumer"), how many caught up, and what they had missed.
    #[arg(long, value_name = "N", default_value_t = 0, conflicts_with = "idle")]
    pub stall: usize,

    /// Measure the server's memory per connection (needs --server-pid):
    /// its VmRSS before the first connect, and once every client has
    /// connected and subscribed and --warmup seconds have passed (the
    /// warm-up starts only then), divided by the clients connected. The
    /// clients keep reading, so choose a light subscription (--subs 1) to
    /// keep the connections near idle.
    #[arg(long)]
    pub idle: bool,

    /// Write the latency histogram to FILE in HdrHistogram's percentile
    /// distribution text (.hgrm), values in milliseconds.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,

    /// Draw latency (ms, log scale) by percentile (log scale of 1/(1-p):
    /// 50%, 90%, 99%, 99.9%, …) as an SVG chart in FILE: this run is one
    /// line, each --plot-add run another, with a legend. To compare runs,
    /// save each with --json and add them to the last one, e.g.
    /// `--json b.json --plot cmp.svg --plot-add a.json`.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// A run to draw on the --plot chart too: a file an earlier run's
    /// --json wrote. Repeat for more runs.
    #[arg(long, value_name = "RUN.json", requires = "plot")]
    pub plot_add: Vec<PathBuf>,

    /// Draw no progress bars (they are drawn on stderr, and only when it
    /// is a terminal).
    #[arg(long)]
    pub no_progress: bool,
}
