//! The session's writer: drains the `outbox` into the socket's write half
//! in as few system calls as it can.
//!
//! Each pass takes *everything* queued for the connection and sends it
//! with vectored writes (up to [`MAX_IOVECS`] frames per `writev`), so a
//! client that is sent many ticks between two passes costs one system call
//! for all of them. While the socket is full the writer waits on it; ticks
//! keep arriving in the outbox meanwhile, where backpressure applies.
//!
//! A close interrupts a blocked write: the writer finishes the frame it is
//! in the middle of (a half-sent frame would corrupt the stream), drops the
//! rest, sends the one close frame, and shuts its half of the socket down.
//! If the peer does not take those bytes within [`CLOSE_GRACE`] it gives up.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::outbox::{Outbox, Take};

/// Frames per `writev` call (Linux allows 1024); a pass with more frames
/// loops. Kept small because the slice array is built on the stack per call.
pub const MAX_IOVECS: usize = 128;

/// How long a closing connection may take to accept its last partial frame
/// and the close frame before the socket is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How the writer ended.
#[derive(Debug, PartialEq, Eq)]
pub enum WriterExit {
    /// The close frame was sent.
    Closed,
    /// Ended without a close frame: aborted, or the peer stopped taking
    /// bytes during the close grace period.
    Aborted,
}

/// Runs until the connection closes. I/O errors mean the peer is gone.
pub async fn run<W: AsyncWrite + Unpin>(socket: &mut W, outbox: &Outbox) -> io::Result<WriterExit> {
    let mut batch: VecDeque<Bytes> = VecDeque::with_capacity(64);
    // Whether the front frame of `batch` is partly sent.
    let mut front_started = false;
    loop {
        if batch.is_empty() {
            match outbox.take(&mut batch) {
                Take::Frames => {}
                Take::Idle => {
                    outbox.changed().await;
                    continue;
                }
                Take::Close(frame) => return send_close(socket, frame).await,
                Take::Abort => return Ok(WriterExit::Aborted),
            }
        }
        let written = {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = batch.len().min(MAX_IOVECS);
            for (slice, frame) in slices.iter_mut().zip(batch.iter()) {
                *slice = IoSlice::new(frame);
            }
            tokio::select! {
                biased;
                written = socket.write_vectored(&slices[..count]) => Some(written?),
                // Woken while the socket is full: maybe a close request.
                () = outbox.changed() => None,
            }
        };
        match written {
            Some(0) => return Err(io::ErrorKind::WriteZero.into()),
            Some(mut n) => {
                while n > 0 {
                    let front = batch.front_mut().expect("wrote more than was queued");
                    if n >= front.len() {
                        n -= front.len();
                        batch.pop_front();
                        front_started = false;
                    } else {
                        front.advance(n);
                        front_started = true;
                        n = 0;
                    }
                }
            }
            None => {
                if outbox.is_closing() {
                    // Keep only a half-sent frame; finish it, then close.
                    if front_started {
                        batch.truncate(1);
                        let finish = async {
                            let frame = batch.pop_front().expect("front frame");
                            socket.write_all(&frame).await
                        };
                        match tokio::time::timeout(CLOSE_GRACE, finish).await {
                            Ok(result) => result?,
                            Err(_) => return Ok(WriterExit::Aborted),
                        }
                    }
                    batch.clear();
                    front_started = false;
                }
                // Otherwise new frames arrived while writing: carry on, the
                // next take picks them up after this batch.
            }
        }
    }
}

async fn send_close<W: AsyncWrite + Unpin>(socket: &mut W, frame: Bytes) -> io::Result<WriterExit> {
    let send = async {
        socket.write_all(&frame).await?;
        socket.shutdown().await
    };
    match tokio::time::timeout(CLOSE_GRACE, send).await {
        Ok(result) => result.map(|()| WriterExit::Closed),
        Err(_) => Ok(WriterExit::Aborted),
    }
}
