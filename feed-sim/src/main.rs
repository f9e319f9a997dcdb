//! feed-sim: tickcast's load tester and feed simulator. `load` opens many
//! WebSocket clients against a running server and reports rate, gaps,
//! latency and CPU cost; `publish` feeds a server started with
//! `--feed ingest` from the same price model as the built-in feed; `soak`
//! churns connections and checks the server gives back what they took;
//! `flood` loads the server's HTTP side (requests and connection churn,
//! no ticks) for a `load` beside it to see what that does to the ticks.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use feed_sim::{flood, load, publish, soak};

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
    /// Publish simulated ticks to a server's /ingest endpoint, or to NATS
    /// (--nats) for a cluster of servers started with --feed nats.
    Publish(publish::PublishArgs),
    /// Churn connections for a while, then check that the server's memory
    /// and file descriptors came back to their baseline.
    Soak(soak::SoakArgs),
    /// Flood the server with HTTP requests and connection churn (no
    /// ticks) for a while, to see what that does to a `load` beside it.
    Flood(flood::FloodArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Load(args) => load::run(args),
        Command::Publish(args) => publish::run(args),
        Command::Soak(args) => soak::run(args),
        Command::Flood(args) => flood::run(args),
    }
}
