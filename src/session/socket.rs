//! The upgraded connection a session owns: a plain TCP socket, or a TLS
//! stream over one (with `--tls-cert`/`--tls-key`), and its two halves.
//!
//! The plain arms are tokio's owned TCP halves, so a server without TLS
//! reads and writes exactly as before: no lock, no extra copy, vectored
//! writes straight to the socket. Only the TLS arms share their stream
//! through `tokio::io::split`, as a TLS session's state must be.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A server-side TLS stream over TCP.
pub type TlsSocket = TlsStream<TcpStream>;

/// An upgraded client connection.
#[derive(Debug)]
pub enum Socket {
    /// Plain TCP (`ws://`).
    Plain(TcpStream),
    /// TLS over TCP (`wss://`). Boxed: a TLS session's state is large.
    Tls(Box<TlsSocket>),
}

impl Socket {
    /// Splits the connection into halves that can be used from different
    /// tasks.
    pub fn into_split(self) -> (SocketReadHalf, SocketWriteHalf) {
        match self {
            Socket::Plain(stream) => {
                let (read, write) = stream.into_split();
                (SocketReadHalf::Plain(read), SocketWriteHalf::Plain(write))
            }
            Socket::Tls(stream) => {
                let (read, write) = tokio::io::split(*stream);
                (SocketReadHalf::Tls(read), SocketWriteHalf::Tls(write))
            }
        }
    }
}

impl From<TcpStream> for Socket {
    fn from(stream: TcpStream) -> Self {
        Socket::Plain(stream)
    }
}

impl From<TlsSocket> for Socket {
    fn from(stream: TlsSocket) -> Self {
        Socket::Tls(Box::new(stream))
    }
}

/// The read half of a [`Socket`].
#[derive(Debug)]
pub enum SocketReadHalf {
    /// Plain TCP.
    Plain(OwnedReadHalf),
    /// TLS over TCP.
    Tls(tokio::io::ReadHalf<TlsSocket>),
}

/// The write half of a [`Socket`].
#[derive(Debug)]
pub enum SocketWriteHalf {
    /// Plain TCP.
    Plain(OwnedWriteHalf),
    /// TLS over TCP.
    Tls(tokio::io::WriteHalf<TlsSocket>),
}

impl AsyncRead for SocketReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SocketReadHalf::Plain(half) => Pin::new(half).poll_read(cx, buf),
            SocketReadHalf::Tls(half) => Pin::new(half).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for SocketWriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            SocketWriteHalf::Plain(half) => Pin::new(half).poll_write(cx, buf),
            SocketWriteHalf::Tls(half) => Pin::new(half).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            SocketWriteHalf::Plain(half) => Pin::new(half).poll_write_vectored(cx, bufs),
            SocketWriteHalf::Tls(half) => Pin::new(half).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            SocketWriteHalf::Plain(half) => half.is_write_vectored(),
            SocketWriteHalf::Tls(half) => half.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SocketWriteHalf::Plain(half) => Pin::new(half).poll_flush(cx),
            SocketWriteHalf::Tls(half) => Pin::new(half).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SocketWriteHalf::Plain(half) => Pin::new(half).poll_shutdown(cx),
            SocketWriteHalf::Tls(half) => Pin::new(half).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn plain_halves_pass_bytes_both_ways_with_vectored_writes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut client = client.unwrap();
        let (mut read, mut write) = Socket::from(accepted.unwrap().0).into_split();
        assert!(write.is_write_vectored(), "plain TCP writes are vectored");

        let parts = [IoSlice::new(b"hello, "), IoSlice::new(b"world")];
        let mut sent = 0;
        while sent < 12 {
            sent += write.write_vectored(&parts[..]).await.unwrap();
            if sent < 12 {
                // A short write is allowed; send the rest plainly.
                write.write_all(&b"hello, world"[sent..]).await.unwrap();
                sent = 12;
            }
        }
        let mut got = [0u8; 12];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello, world");

        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        read.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
    }
}
