//! feed-sim: tickcast's load tester. `load` opens many WebSocket clients
//! against a running server and reports rate, gaps, latency and CPU cost.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use feed_sim::load;

/// tickcast's feed simulator and load tester.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open many clients against a server and measure what they receive.
    Load(load::LoadArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Load(args) => load::run(args),
    }
}
