//! Client TCP connections from a chosen loopback source address, shared
//! by `load`, `soak` and `flood`: many connections to one server spread
//! over 127.0.0.1..=127.0.0.N so they do not run out of ephemeral ports
//! (each source address has a port range of its own).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context as _;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

/// The source address of the `n`th connection when connections are
/// spread over `count` addresses 127.0.0.1..=127.0.0.`count`; `None`
/// (let the kernel choose) when `count` is 0. `count` is at most 255.
pub(crate) fn source_ip(n: u64, count: usize) -> Option<IpAddr> {
    (count > 0).then(|| {
        let last = 1 + n % count.min(255) as u64;
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last as u8))
    })
}

/// A non-blocking TCP socket for a connection to `addr`, bound to
/// `source` if given; the source port is left to `connect()`.
fn socket_for(addr: SocketAddr, source: Option<IpAddr>) -> anyhow::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .context("socket")?;
    socket.set_nonblocking(true).context("non-blocking")?;
    socket.set_tcp_nodelay(true).context("nodelay")?;
    if let Some(source) = source {
        // Leave the port to connect(), which may reuse one as long as the
        // 4-tuple is new. bind() with port 0 would reserve a port no
        // socket uses at all: with tens of thousands of connections, and
        // the last run's ports in TIME_WAIT, that search costs the load
        // generator whole seconds of CPU and skews the run.
        nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::IpBindAddressNoPort,
            &true,
        )
        .context("IP_BIND_ADDRESS_NO_PORT")?;
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .with_context(|| format!("bind {source}"))?;
    }
    Ok(socket)
}

/// Connects to `addr` from `source` (any address when `None`), on tokio.
pub(crate) async fn connect_from(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::from_std_stream(socket_for(addr, source)?.into());
    socket.connect(addr).await.context("connect")
}

/// Starts connecting to `addr` from `source` without waiting: the stream
/// becomes writable once connected (or failed, which
/// [`mio::net::TcpStream::take_error`] then tells).
pub(crate) fn start_connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> anyhow::Result<mio::net::TcpStream> {
    let socket = socket_for(addr, source)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(err) if err.raw_os_error() == Some(nix::libc::EINPROGRESS) => {}
        Err(err) => return Err(err).context("connect"),
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
}

/// Raises the open-file soft limit to the hard limit and says what it is.
pub(crate) fn raise_open_file_limit(clients: usize) -> u64 {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            eprintln!("could not raise the open-file limit ({e}); keeping the current one");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft)
        }
    };
    println!("open-file limit: {limit}");
    if (clients as u64).saturating_add(64) > limit {
        eprintln!(
            "warning: {clients} clients need more open files than the limit of {limit}; \
             raise the hard limit (ulimit -Hn, or LimitNOFILE) or expect connect failures"
        );
    }
    limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_rotate_over_the_loopback_range() {
        assert_eq!(source_ip(5, 0), None);
        let ips: Vec<_> = (0..4).map(|n| source_ip(n, 3).unwrap()).collect();
        let expect = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.1"];
        assert_eq!(ips, expect.map(|ip| ip.parse::<IpAddr>().unwrap()));
        assert_eq!(source_ip(254, 255), Some("127.0.0.255".parse().unwrap()));
        assert_eq!(source_ip(255, 300), Some("127.0.0.1".parse().unwrap()));
    }
}
