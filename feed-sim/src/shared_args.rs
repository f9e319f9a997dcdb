//! Command-line options that more than one subcommand takes, each a
//! `#[derive(Args)]` struct a subcommand's options flatten in.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

/// `--source-ips N`: the loopback source addresses connections come from.
#[derive(Clone, Copy, Debug, Args)]
pub struct SourceIps {
    /// Spread connections over source addresses 127.0.0.1..=127.0.0.N
    /// (loopback servers only), so that connections left in TIME_WAIT by
    /// a long churn do not use up the ephemeral ports.
    #[arg(id = "source_ips", long = "source-ips", value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u8).range(1..))]
    pub count: u8,
}

impl SourceIps {
    /// How many source addresses connections to `server` are spread over:
    /// `--source-ips` for a loopback server, 0 (the kernel's choice) for
    /// any other.
    pub fn count_for(&self, server: SocketAddr) -> usize {
        if server.ip().is_loopback() {
            usize::from(self.count)
        } else {
            0
        }
    }
}

/// `--json FILE`: where a run's figures are written as JSON, if anywhere.
#[derive(Clone, Debug, Args)]
pub struct JsonOutput {
    /// Also write every figure as JSON to FILE.
    #[arg(id = "json", long = "json", value_name = "FILE")]
    pub path: Option<PathBuf>,
}

impl JsonOutput {
    /// Writes `figures` to the `--json` file, if one was given, and says
    /// so on stdout.
    pub fn write(&self, figures: &impl Serialize) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let json = serde_json::to_string_pretty(figures).expect("a report serializes");
        std::fs::write(path, json + "\n")
            .with_context(|| format!("could not write {}", path.display()))?;
        println!("  figures written to {}", path.display());
        Ok(())
    }
}
