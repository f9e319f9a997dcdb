//! `Error`: what can stop the server from starting, worded for the person
//! who has to fix it.

use std::io;
use std::net::SocketAddr;

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address is taken.
    #[error("{addr} is already in use: stop the other process or pass --listen with another port (e.g. --listen 127.0.0.1:8081)")]
    AddrInUse {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The listen address is not available on this machine.
    #[error("cannot listen on {addr}: {source}; pass --listen with an address of this machine (e.g. --listen 127.0.0.1:8080)")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed.
        source: io::Error,
    },
    /// `--feed ingest` without a token (or with an empty one).
    #[error("--feed ingest needs a non-empty --ingest-token TOKEN (or TICKCAST_INGEST_TOKEN), so that only your publisher can write ticks")]
    MissingIngestToken,
    /// `--auth-secret-file` names a file that cannot serve as the secret.
    #[error(transparent)]
    AuthSecret(#[from] crate::auth::SecretFileError),
    /// The feed thread could not start.
    #[error("cannot start the feed thread: {0}; the system may be out of threads or memory")]
    FeedThread(io::Error),
}
