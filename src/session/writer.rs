//! The session's writer: drains the `outbox` into the socket's write half
//! in as few system calls as it can.
//!
//! Each pass takes *everything* queued for the connection and sends it
//! with vectored writes (up to [`MAX_IOVECS`] frames per `writev`), so a
//! client that is sent many ticks between two passes costs one system call
//! for all of them. While the socket is full the writer waits on it; ticks
//! keep arriving in the outbox meanwhile, where backpressure applies.
//!
//! A close normally goes out after what was queued before it. A
//! slow-consumer close instead interrupts a blocked write: the writer
//! finishes the frame it is in the middle of (a half-sent frame would
//! corrupt the stream), drops the rest and sends the close frame. Either
//! way it then shuts its half of the socket down. A peer that does not read
//! still gets its close frame if it reads again within the write timeout
//! (at least [`CLOSE_GRACE`]): a stalled client is told why it was closed,
//! not just cut off. Meanwhile it holds a socket and nothing else.
//!
//! For a client that asked for batches, each pass's runs of ticks go out
//! as `ticks` frames (`fanout::encode::batch_ticks`).
//!
//! The writer also tells the outbox how the client keeps up: a batch sent
//! whole without the socket filling up means it has caught up; a socket
//! that accepts no byte for the write timeout gets the client closed with
//! 1008 `slow consumer`, whatever is pending.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::outbox::{Outbox, Take};
use crate::fanout::encode::batch_ticks;
use crate::stats::Stats;

/// Frames per `writev` call (Linux allows 1024); a pass with more frames
/// loops.
pub const MAX_IOVECS: usize = 1024;

/// The least time a closing connection gets to accept its last partial
/// frame and the close frame before the socket is dropped (the write
/// timeout, if longer, applies instead); likewise for the reader to see
/// the peer's answering close.
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
    // Starts empty and keeps the capacity it grows to: an idle connection
    // costs no buffer here.
    let mut batch: VecDeque<Bytes> = VecDeque::new();
    // Whether the front frame of `batch` is partly sent.
    let mut front_started = false;
    // Whether the socket filled up while sending the current batch.
    let mut blocked = false;
    // Since when the socket has refused bytes; `None` while it takes them.
    let mut refusing_since: Option<Instant> = None;
    // Once a close is decided, the time left to send what was queued
    // before it.
    let mut flush_deadline: Option<Instant> = None;
    // When the frames in `batch` were taken, for the write-latency
    // histogram.
    let mut taken_at = Instant::now();
    let stats = outbox.stats();
    let stall_timeout = outbox.limits().write_timeout;
    let close_linger = stall_timeout.max(CLOSE_GRACE);
    loop {
        if batch.is_empty() {
            match outbox.take(&mut batch) {
                Take::Frames => {
                    blocked = false;
                    taken_at = Instant::now();
                    if outbox.batches() {
                        batch_ticks(&mut batch);
                    }
                }
                Take::Idle => {
                    // A TLS stream keeps bytes of its own after accepting
                    // them: push those out while waiting (for plain TCP
                    // the flush is immediate).
                    tokio::select! {
                        biased;
                        flushed = socket.flush() => {
                            flushed?;
                            outbox.changed().await;
                        }
                        () = outbox.changed() => {}
                    }
                    continue;
                }
                Take::Close(frame) => return send_close(socket, frame, close_linger).await,
                Take::Abort => return Ok(WriterExit::Aborted),
            }
        } else if outbox.stop_sending() {
            // Closing at once: no further frame starts; a half-sent one is
            // finished, or the stream would be corrupt before the close.
            if front_started {
                let frame = batch.pop_front().expect("front frame");
                match tokio::time::timeout(close_linger, socket.write_all(&frame)).await {
                    Ok(result) => result?,
                    Err(_) => return Ok(WriterExit::Aborted),
                }
                front_started = false;
            }
            batch.clear();
            continue;
        }
        let mut offered = 0;
        let written = {
            // Built per write rather than kept in the task, whose size
            // every idle connection would pay for.
            let slices: Vec<IoSlice<'_>> = batch
                .iter()
                .take(MAX_IOVECS)
                .map(|frame| {
                    offered += frame.len();
                    IoSlice::new(frame)
                })
                .collect();
            // The common case first: the socket takes the bytes at once,
            // with no timer or clock read on the way.
            let attempt = std::future::poll_fn(|cx| {
                Poll::Ready(
                    match Pin::new(&mut *socket).poll_write_vectored(cx, &slices) {
                        Poll::Ready(written) => Some(written),
                        Poll::Pending => None,
                    },
                )
            })
            .await;
            match attempt {
                Some(written) => Some(written?),
                None => {
                    let since = *refusing_since.get_or_insert_with(Instant::now);
                    let mut deadline = since + stall_timeout;
                    if outbox.is_closing() {
                        deadline = deadline.min(
                            *flush_deadline.get_or_insert_with(|| Instant::now() + CLOSE_GRACE),
                        );
                    }
                    tokio::select! {
                        biased;
                        written = socket.write_vectored(&slices) => Some(written?),
                        // Woken while the socket is full: new frames (taken
                        // after this batch) or a close (checked at the top
                        // of the loop).
                        () = outbox.changed() => None,
                        () = tokio::time::sleep_until(deadline) => {
                            if flush_deadline.is_some_and(|d| d <= Instant::now()) {
                                // Closing, and the peer is too slow to take
                                // the rest: the close frame goes next.
                                outbox.give_up_flush();
                                flush_deadline = None;
                            } else if !outbox.close_slow() {
                                // Already closing, and the peer takes
                                // nothing: waiting longer would not get the
                                // close out.
                                return Ok(WriterExit::Aborted);
                            }
                            None
                        }
                    }
                }
            }
        };
        let Some(mut n) = written else {
            blocked = true;
            continue;
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if refusing_since.take().is_some() {
            blocked = true;
        }
        blocked |= n < offered;
        let (bytes, mut frames) = (n, 0);
        while n > 0 {
            let front = batch.front_mut().expect("wrote more than was queued");
            if n >= front.len() {
                n -= front.len();
                batch.pop_front();
                front_started = false;
                frames += 1;
            } else {
                front.advance(n);
                front_started = true;
                n = 0;
            }
        }
        if let Some(stats) = stats {
            Stats::add(&stats.bytes_sent, bytes as u64);
            Stats::add(&stats.frames_sent, frames);
            if batch.is_empty() {
                stats
                    .write_latency
                    .observe(taken_at.elapsed().as_secs_f64());
            }
        }
        if batch.is_empty() && !blocked {
            outbox.caught_up();
        }
    }
}

async fn send_close<W: AsyncWrite + Unpin>(
    socket: &mut W,
    frame: Bytes,
    linger: Duration,
) -> io::Result<WriterExit> {
    let send = async {
        socket.write_all(&frame).await?;
        socket.shutdown().await
    };
    match tokio::time::timeout(linger, send).await {
        Ok(result) => result.map(|()| WriterExit::Closed),
        Err(_) => Ok(WriterExit::Aborted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{close_frame, text_frame};
    use crate::session::outbox::OutboxLimits;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Waker};
    use std::time::Instant;

    /// A socket that records each write call, accepts at most `per_call`
    /// bytes per call, and can be held blocked.
    #[derive(Default)]
    struct Socket {
        written: Vec<u8>,
        /// Number of slices offered in each write call.
        calls: Vec<usize>,
        per_call: usize,
        /// Block once this many calls were made.
        block_after: Option<usize>,
        blocked: bool,
        waker: Option<Waker>,
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Socket>>);

    impl AsyncWrite for Shared {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut socket = self.0.lock().unwrap();
            if socket.blocked {
                socket.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            socket.calls.push(bufs.len());
            if socket.block_after == Some(socket.calls.len()) {
                socket.blocked = true;
            }
            let mut budget = socket.per_call;
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(budget);
                socket.written.extend_from_slice(&buf[..take]);
                budget -= take;
                n += take;
                if budget == 0 {
                    break;
                }
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn outbox() -> Arc<Outbox> {
        Arc::new(Outbox::new(OutboxLimits {
            max_bytes: 1 << 20,
            slow_consumer_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
        }))
    }

    fn frames(n: usize) -> Vec<Bytes> {
        (0..n)
            .map(|i| text_frame(format!("{{\"n\":{i}}}").as_bytes()))
            .collect()
    }

    #[tokio::test]
    async fn a_pass_costs_one_write_call_per_max_iovecs_frames() {
        let outbox = outbox();
        let socket = Shared::default();
        socket.0.lock().unwrap().per_call = usize::MAX;
        let frames = frames(MAX_IOVECS + 10);
        for frame in &frames {
            outbox.push_tick(0, frame, Instant::now());
        }
        let mut sink = socket.clone();
        let writer = run(&mut sink, &outbox);
        tokio::pin!(writer);
        // Drive the writer until it has sent everything and waits.
        while socket.0.lock().unwrap().written.len() < frames.iter().map(Bytes::len).sum() {
            tokio::select! {
                biased;
                _ = &mut writer => panic!("writer ended early"),
                () = tokio::task::yield_now() => {}
            }
        }
        let expected: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        let socket = socket.0.lock().unwrap();
        assert_eq!(socket.written, expected);
        assert_eq!(
            socket.calls,
            [MAX_IOVECS, 10],
            "two system calls for all frames"
        );
    }

    #[tokio::test]
    async fn a_close_during_a_partial_write_finishes_that_frame_first() {
        let outbox = outbox();
        let socket = Shared::default();
        {
            let mut s = socket.0.lock().unwrap();
            s.per_call = 5;
            s.block_after = Some(1);
        }
        let frames = frames(3);
        for frame in &frames {
            outbox.push_tick(0, frame, Instant::now());
        }
        let mut sink = socket.clone();
        let writer = run(&mut sink, &outbox);
        tokio::pin!(writer);
        // One partial write of the first frame, then the socket blocks.
        tokio::select! {
            biased;
            _ = &mut writer => panic!("writer ended early"),
            () = tokio::task::yield_now() => {}
        }
        assert_eq!(socket.0.lock().unwrap().written, frames[0][..5]);
        assert!(outbox.close_slow());
        // The writer sees the close while the socket is still full...
        tokio::select! {
            biased;
            _ = &mut writer => panic!("writer ended early"),
            () = tokio::task::yield_now() => {}
        }
        // ...and when it drains, only the rest of the half-sent frame and
        // the close frame follow.
        {
            let mut s = socket.0.lock().unwrap();
            s.blocked = false;
            s.per_call = usize::MAX;
            if let Some(waker) = s.waker.take() {
                waker.wake();
            }
        }
        assert_eq!(writer.await.unwrap(), WriterExit::Closed);
        let mut expected = frames[0].to_vec();
        expected.extend_from_slice(&close_frame(1008, "slow consumer"));
        assert_eq!(socket.0.lock().unwrap().written, expected);
    }
}
