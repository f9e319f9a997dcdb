//! The client side of a WebSocket handshake, shared by `load` and
//! `publish`: where the server is, and the upgrade itself.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use fastwebsockets::{WebSocket, WebSocketError};
use http_body_util::{BodyExt as _, Empty};
use hyper::header::{AUTHORIZATION, CONNECTION, HOST, UPGRADE};
use hyper::upgrade::Upgraded;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where the server is.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// The resolved address.
    pub(crate) addr: SocketAddr,
    /// `host:port` as given, for the `Host` header.
    pub(crate) authority: String,
    /// Request path of the WebSocket endpoint.
    pub(crate) path: String,
}

impl Target {
    /// Parses a `ws://host:port/path` URL and resolves the host.
    pub(crate) fn parse(url: &str) -> anyhow::Result<Self> {
        Self::parse_scheme(
            url,
            "ws",
            "ws://127.0.0.1:8080/ws",
            " (wss is not supported)",
        )
    }

    /// Parses an `http://host:port` URL and resolves the host.
    pub(crate) fn parse_http(url: &str) -> anyhow::Result<Self> {
        Self::parse_scheme(
            url,
            "http",
            "http://127.0.0.1:8080",
            " (https is not supported)",
        )
    }

    /// Parses a `scheme://host:port/path` URL; `example` and `note` go
    /// into the error messages.
    fn parse_scheme(url: &str, scheme: &str, example: &str, note: &str) -> anyhow::Result<Self> {
        let uri: hyper::Uri = url
            .parse()
            .with_context(|| format!("{url:?} is not a URL; give e.g. {example}"))?;
        if uri.scheme_str() != Some(scheme) {
            bail!("{url:?} is not a {scheme}:// URL{note}; give e.g. {example}");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("{url:?} has no host; give e.g. {example}"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .with_context(|| format!("could not resolve {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        Ok(Target {
            addr,
            authority: authority.to_string(),
            path: uri.path().to_string(),
        })
    }
}

/// Runs hyper's connection futures on the local task set.
pub(crate) struct LocalExecutor;

impl<F> hyper::rt::Executor<F> for LocalExecutor
where
    F: Future + 'static,
{
    fn execute(&self, future: F) {
        tokio::task::spawn_local(future);
    }
}

/// Upgrades `stream` to a WebSocket at `target`'s path, presenting
/// `bearer` as an `Authorization: Bearer` token if given. Must run inside a
/// `LocalSet`.
pub(crate) async fn upgrade(
    stream: TcpStream,
    target: &Target,
    bearer: Option<&str>,
) -> anyhow::Result<WebSocket<TokioIo<Upgraded>>> {
    let mut request = Request::get(target.path.as_str())
        .header(HOST, &target.authority)
        .header(UPGRADE, "websocket")
        .header(CONNECTION, "upgrade")
        .header(
            "Sec-WebSocket-Key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("Sec-WebSocket-Version", "13");
    if let Some(token) = bearer {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Empty::<Bytes>::new())?;
    match fastwebsockets::handshake::client(&LocalExecutor, request, stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(WebSocketError::InvalidStatusCode(401)) => bail!(
            "the server refused the token (401): pass the server's --ingest-token with --token"
        ),
        Err(WebSocketError::InvalidStatusCode(404)) => bail!(
            "{} is not served (404): is the path right, and for /ingest, was the server started with --feed ingest?",
            target.path
        ),
        Err(WebSocketError::InvalidStatusCode(409)) => {
            bail!("another publisher is connected (409): only one may publish at a time")
        }
        Err(err) => Err(err).context("WebSocket upgrade"),
    }
}

/// One row of the server's `GET /symbols`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct SymbolRow {
    /// The symbol.
    pub(crate) sym: String,
    /// Its last seq; 0 before its first tick.
    pub(crate) seq: u64,
}

/// The server's `GET /symbols`, in the server's order; `token` (a client
/// or the ingest token) is needed when the server checks tokens.
pub(crate) async fn fetch_symbols(
    target: &Target,
    token: Option<&str>,
) -> anyhow::Result<Vec<SymbolRow>> {
    let stream = TcpStream::connect(target.addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::task::spawn_local(connection);
    let mut request = Request::get("/symbols").header(HOST, &target.authority);
    if let Some(token) = token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        bail!("GET /symbols answered {}", response.status());
    }
    let body = response.into_body().collect().await?.to_bytes();
    serde_json::from_slice(&body)
        .context("the body is not a JSON array of {\"sym\":…,\"seq\":…} objects")
}
