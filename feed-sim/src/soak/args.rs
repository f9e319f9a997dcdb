//! The command line of `feed-sim soak`.

use clap::Args;

use crate::shared_args::{JsonOutput, SourceIps};

/// Options of `feed-sim soak`.
#[derive(Debug, Args)]
pub struct SoakArgs {
    /// WebSocket URL of the server; `/symbols` and `/metrics` are fetched
    /// from the same host and port.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,

    /// Process id of the server, whose memory and file descriptors are
    /// read from /proc (so run it on the server's machine).
    #[arg(long, value_name = "PID")]
    pub server_pid: u32,

    /// Seconds of churn.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,

    /// Seconds of the same churn before the baseline is read, so that the
    /// server's allocator and collections have served the peak
    /// concurrency once (0 for none).
    #[arg(long, default_value_t = 15.0)]
    pub warmup: f64,

    /// Most clients connected at once.
    #[arg(long, default_value_t = 500)]
    pub clients: usize,

    /// Seed of the clients' random choices: the same seed gives the same
    /// sequence of client plans (timing still varies).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Longest time one client spends reading before it leaves, seconds
    /// (each picks a random time up to this).
    #[arg(long, default_value_t = 3.0)]
    pub max_lifetime: f64,

    /// Seconds to wait, after the churn, for the server to report no open
    /// connection and to release their file descriptors.
    #[arg(long, default_value_t = 60.0)]
    pub settle_timeout: f64,

    /// Connects and handshakes in flight at once.
    #[arg(long, default_value_t = 64)]
    pub connect_parallelism: usize,

    #[command(flatten)]
    pub source_ips: SourceIps,

    #[command(flatten)]
    pub json: JsonOutput,

    /// Draw no progress bars (they are drawn on stderr, and only when it
    /// is a terminal).
    #[arg(long)]
    pub no_progress: bool,
}
