//! `Error`: what can stop the server from starting, worded for the person
//! who has to fix it.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// Only one of `--tls-cert` and `--tls-key` is set.
    #[error("TLS needs both --tls-cert and --tls-key (or TICKCAST_TLS_CERT and TICKCAST_TLS_KEY); {missing} is missing")]
    TlsIncomplete {
        /// The flag not given.
        missing: &'static str,
    },
    /// A `--tls-cert` or `--tls-key` file cannot be read.
    #[error("cannot read the TLS {what} file {}: {source}; pass a readable PEM file (--tls-cert for the certificate chain, --tls-key for its private key)", path.display())]
    TlsRead {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file given.
        path: PathBuf,
        /// Why it could not be read.
        source: io::Error,
    },
    /// A `--tls-cert` or `--tls-key` file is not well-formed PEM.
    #[error("the TLS {what} file {} is not valid PEM: {reason}; give the PEM file as issued (text with -----BEGIN ...----- and -----END ...----- lines)", path.display())]
    TlsBadPem {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file given.
        path: PathBuf,
        /// What is malformed.
        reason: String,
    },
    /// The `--tls-cert` file holds no certificate.
    #[error("the TLS certificate file {} holds no certificate; --tls-cert needs a PEM file with -----BEGIN CERTIFICATE----- blocks, the server's own certificate first, then any intermediates", path.display())]
    TlsNoCertificate {
        /// The file given.
        path: PathBuf,
    },
    /// The `--tls-key` file holds no private key.
    #[error("the TLS private key file {} holds no private key; --tls-key needs a PEM file with a -----BEGIN PRIVATE KEY----- (or RSA PRIVATE KEY, or EC PRIVATE KEY) block", path.display())]
    TlsNoPrivateKey {
        /// The file given.
        path: PathBuf,
    },
    /// The certificate and key do not make a usable pair.
    #[error("cannot serve TLS with the certificate {} and the private key {}: {source}; check that the key is the certificate's own and of a supported kind (RSA, ECDSA P-256/P-384, Ed25519)", cert.display(), key.display())]
    TlsKeyPair {
        /// The `--tls-cert` file.
        cert: PathBuf,
        /// The `--tls-key` file.
        key: PathBuf,
        /// What rustls refused.
        source: tokio_rustls::rustls::Error,
    },
    /// `--symbols-file` cannot be read or is not a list of symbols.
    #[error("the symbols file {}: {message}", path.display())]
    SymbolsFile {
        /// The file given.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// The feed thread could not start.
    #[error("cannot start the feed thread: {0}; the system may be out of threads or memory")]
    FeedThread(io::Error),
    /// A shard's event loop or thread could not start.
    #[error("cannot start the connection shards: {0}; the system may be out of threads, memory or file descriptors (lower --shards)")]
    ShardThread(io::Error),
    /// `--feed nats` could not set up its NATS client.
    #[error("cannot use the NATS server at {url}: {message}; give --feed nats://HOST:PORT (comma-separated for several)")]
    Nats {
        /// The NATS server URL(s) given.
        url: String,
        /// What the NATS client said.
        message: String,
    },
}

/// What a caught panic says: its message if it was given one (a `&str`
/// or a formatted `String`), else "(no message)".
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
