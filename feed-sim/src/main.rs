//! feed-sim: tickcast's load tester and feed simulator. `load` opens many
//! WebSocket clients against a running server and reports rate, gaps,
//! latency and CPU cost; `publish` feeds a server started with
//! `--feed ingest` from the same price model as the built-in feed.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use feed_sim::{load, publish};

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
    /// Publish simulated ticks to a server's /ingest endpoint.
    Publish(publish::PublishArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Load(args) => load::run(args),
        Command::Publish(args) => publish::run(args),
    }
}
