//! The command line: the server's flags ([`Config`]) when no subcommand is
//! given, or a tool such as `tickcast token`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::auth::{mint, parse_secret, read_secret_file, SecretFileError};
use crate::config::Config;

/// tickcast: a market-data ticker fan-out server.
///
/// Serves a live tick stream over WebSocket at /ws (JSON protocol v1, see
/// docs/PROTOCOL.md), fed by a built-in price simulator.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "tickcast",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// The server's flags (used when no subcommand is given).
    #[command(flatten)]
    pub server: Config,

    /// A tool to run instead of the server.
    #[command(subcommand)]
    pub tool: Option<Tool>,
}

/// Tools besides the server.
#[derive(Clone, Debug, Subcommand)]
pub enum Tool {
    /// Print a client token for a server started with --auth-secret.
    Token(TokenArgs),
}

/// `tickcast token`: issue a token that lets a client see `symbols`.
#[derive(Clone, Debug, Args)]
#[command(group = clap::ArgGroup::new("secret_source").required(true))]
pub struct TokenArgs {
    /// The server's --auth-secret.
    #[arg(long, group = "secret_source", value_parser = parse_secret)]
    pub secret: Option<String>,

    /// File holding the server's secret (its --auth-secret-file).
    #[arg(long, group = "secret_source")]
    pub secret_file: Option<PathBuf>,

    /// Symbols or patterns the holder may see, comma-separated: `*` any run
    /// of characters, `?` one character, `*` alone every symbol.
    #[arg(long, value_delimiter = ',', required = true, value_parser = parse_pattern)]
    pub symbols: Vec<String>,

    /// How long the token is valid, e.g. 90s, 15m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,

    /// Who the token is for (the `sub` claim).
    #[arg(long)]
    pub sub: Option<String>,
}

impl TokenArgs {
    /// The token these arguments describe.
    pub fn mint(&self) -> Result<String, SecretFileError> {
        let secret = match (&self.secret, &self.secret_file) {
            (Some(secret), _) => secret.clone(),
            (None, Some(path)) => read_secret_file(path)?,
            (None, None) => unreachable!("clap requires --secret or --secret-file"),
        };
        Ok(mint(
            secret.as_bytes(),
            &self.symbols,
            self.ttl,
            self.sub.as_deref(),
        ))
    }
}

fn parse_pattern(s: &str) -> Result<String, String> {
    let pattern = s.trim();
    if pattern.is_empty() {
        return Err("an empty symbol pattern: list symbols like 'AAPL,NV*' or '*'".into());
    }
    Ok(pattern.to_owned())
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(s)
        .map_err(|err| format!("{s:?} is not a duration ({err}); give e.g. 90s, 15m, 1h or 7d"))?;
    if ttl < Duration::from_secs(1) {
        return Err(format!(
            "{s:?} is shorter than a second; tokens expire to the second"
        ));
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Authenticator;

    #[test]
    fn no_subcommand_runs_the_server_with_its_flags() {
        let cli =
            Cli::try_parse_from(["tickcast", "--symbols", "7", "--auth-secret", "s"]).unwrap();
        assert!(cli.tool.is_none());
        assert_eq!(cli.server.symbols, 7);
        assert_eq!(cli.server.auth_secret.as_deref(), Some("s"));
    }

    #[test]
    fn auth_secret_and_its_file_are_exclusive_and_the_secret_not_empty() {
        let cli = Cli::try_parse_from(["tickcast", "--auth-secret", "s"]).unwrap();
        assert_eq!(cli.server.auth_secret.as_deref(), Some("s"));
        let err =
            Cli::try_parse_from(["tickcast", "--auth-secret", "s", "--auth-secret-file", "f"])
                .unwrap_err();
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::ArgumentConflict,
            "{err}"
        );
        let err = Cli::try_parse_from(["tickcast", "--auth-secret", ""]).unwrap_err();
        assert!(err.to_string().contains("secret is empty"), "{err}");
    }

    #[test]
    fn token_prints_a_token_the_server_accepts() {
        let cli = Cli::try_parse_from([
            "tickcast",
            "token",
            "--secret",
            "s3cret",
            "--symbols",
            "AAPL, NV*",
            "--ttl",
            "2m",
            "--sub",
            "alice",
        ])
        .unwrap();
        let Some(Tool::Token(args)) = cli.tool else {
            panic!("expected the token tool");
        };
        assert_eq!(args.symbols, ["AAPL", "NV*"]);
        assert_eq!(args.ttl, Duration::from_secs(120));
        let grant = Authenticator::new(b"s3cret")
            .verify(Some(&args.mint().unwrap()))
            .unwrap();
        assert!(grant.allows("NVDA") && grant.allows("AAPL") && !grant.allows("MSFT"));
    }

    #[test]
    fn token_needs_exactly_one_secret_and_some_symbols() {
        let err = Cli::try_parse_from(["tickcast", "token", "--symbols", "*"]).unwrap_err();
        assert!(err.to_string().contains("--secret"), "{err}");
        let err = Cli::try_parse_from([
            "tickcast",
            "token",
            "--secret",
            "a",
            "--secret-file",
            "f",
            "--symbols",
            "*",
        ])
        .unwrap_err();
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::ArgumentConflict,
            "{err}"
        );
        let err = Cli::try_parse_from(["tickcast", "token", "--secret", "a"]).unwrap_err();
        assert!(err.to_string().contains("--symbols"), "{err}");
        let err = Cli::try_parse_from([
            "tickcast",
            "token",
            "--secret",
            "a",
            "--symbols",
            "*",
            "--ttl",
            "soon",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("give e.g. 90s"), "{err}");
    }

    #[test]
    fn server_flags_do_not_mix_with_a_subcommand() {
        let err = Cli::try_parse_from(["tickcast", "--symbols", "7", "token"]).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                clap::error::ErrorKind::ArgumentConflict | clap::error::ErrorKind::UnknownArgument
            ),
            "{err}"
        );
    }
}
