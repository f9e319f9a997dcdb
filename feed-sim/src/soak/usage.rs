//! What the soak reads of the server from outside: its resident memory
//! and open file descriptors from /proc, and its open connections from
//! the `tickcast_connections` gauge of `GET /metrics`.

use anyhow::{bail, Context as _};
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::REPLY_TIMEOUT;
use crate::ws::Target;

/// The server's memory and descriptors at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Resident memory (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Open file descriptors (entries of `/proc/PID/fd`).
    pub fds: u64,
}

impl Usage {
    /// Reads `pid`'s usage from /proc.
    pub fn read(pid: u32) -> anyhow::Result<Usage> {
        let hint = || {
            format!("could not read /proc/{pid}: is --server-pid the server's process id, and is it running on this machine?")
        };
        Ok(Usage {
            rss_kib: crate::report::rss_kib(pid).with_context(hint)?,
            fds: open_fds(pid).with_context(hint)?,
        })
    }

    /// Each figure the larger of the two.
    pub(super) fn max(self, other: Usage) -> Usage {
        Usage {
            rss_kib: self.rss_kib.max(other.rss_kib),
            fds: self.fds.max(other.fds),
        }
    }
}

/// Number of open file descriptors of `pid`.
pub fn open_fds(pid: u32) -> std::io::Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64)
}

/// The server's `tickcast_connections` gauge, from `GET /metrics` on a
/// connection closed right after (so it leaves no descriptor behind).
pub(super) async fn connections_gauge(target: &Target) -> anyhow::Result<u64> {
    let body = http_get(target, "/metrics").await?;
    parse_connections_gauge(&body).with_context(|| {
        format!(
            "GET http://{}/metrics has no `tickcast_connections N` line: \
             is this a tickcast server recent enough to serve /metrics?",
            target.authority
        )
    })
}

/// The value of the `tickcast_connections` line of a Prometheus text
/// exposition.
pub fn parse_connections_gauge(metrics: &str) -> Option<u64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix("tickcast_connections ")?;
        value.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

/// `GET path` with `Connection: close`, reading to the end; the body of a
/// 200 answer (which tickcast sends with a `Content-Length`).
async fn http_get(target: &Target, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(target.addr)
        .await
        .with_context(|| format!("could not connect to {}", target.authority))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        target.authority
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(REPLY_TIMEOUT, stream.read_to_end(&mut response))
        .await
        .with_context(|| format!("GET {path} got no complete answer within {REPLY_TIMEOUT:?}"))??;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: the answer is not HTTP"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        bail!("GET {path} answered {status:?}");
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_connections_gauge_and_not_its_neighbours() {
        let metrics = "# HELP tickcast_connections WebSocket connections open.\n\
                       # TYPE tickcast_connections gauge\n\
                       tickcast_connections_opened_total 12\n\
                       tickcast_connections 3\n";
        assert_eq!(parse_connections_gauge(metrics), Some(3));
        assert_eq!(
            parse_connections_gauge("tickcast_connections_opened_total 12\n"),
            None
        );
    }
}
