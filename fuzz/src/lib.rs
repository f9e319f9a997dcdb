//! What the fuzz targets share: [`run`], which runs each input on a
//! thread with a small stack.
//!
//! libFuzzer calls a target on the process's main thread, whose stack is
//! 8 MiB or more; the server parses on tokio worker threads of 2 MiB.
//! Unbounded recursion on attacker-controlled nesting (a few thousand `[`
//! in a 10 KB frame) aborted the server yet passed fuzzing unnoticed. On a
//! [`STACK_SIZE`] stack it overflows into the guard page at a depth far
//! below any frame size limit, and AddressSanitizer reports
//! `stack-overflow`: libFuzzer keeps the input as a crash.
//!
//! One long-lived worker thread takes the inputs through a channel, so an
//! input costs a copy and a round trip between two threads, not a thread
//! spawn; each side polls for its answer for up to [`POLL`] (yielding the
//! core meanwhile) before it sleeps, since waking a sleeping thread costs
//! more than a short input takes to run. A panic on the worker is a crash
//! as before: libfuzzer-sys's panic hook aborts the process with the
//! worker's stack, and without that hook the panic is caught there and
//! raised again on the calling thread.

use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, RecvError, SyncSender, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

/// The stack of the thread each input runs on: well below tokio's 2 MiB
/// worker stack, so recursion that depends on the input shows up long
/// before it could reach a server thread's limit.
pub const STACK_SIZE: usize = 256 * 1024;

/// How long a thread waiting for the other polls before it sleeps.
pub const POLL: Duration = Duration::from_micros(100);

/// A target's check of one input.
pub type Target = fn(&[u8]);

/// One input for the worker: the check to run and its own copy of the
/// bytes (exactly sized, as libFuzzer's, so AddressSanitizer still sees a
/// read past the end).
type Job = (Target, Vec<u8>);

/// The fuzzing thread's ends of the channels to its worker thread.
struct Worker {
    jobs: SyncSender<Job>,
    done: Receiver<thread::Result<()>>,
}

impl Worker {
    fn spawn() -> Worker {
        let (jobs, inbox) = mpsc::sync_channel::<Job>(1);
        let (outcomes, done) = mpsc::sync_channel(1);
        thread::Builder::new()
            .name("fuzz-input".into())
            .stack_size(STACK_SIZE)
            .spawn(move || {
                // Ends when the fuzzing thread drops its sender.
                while let Ok((target, data)) = receive(&inbox) {
                    let outcome = panic::catch_unwind(AssertUnwindSafe(|| target(&data)));
                    // Freed before answering: libFuzzer counts mallocs and
                    // frees during a run, and runs an input whose counts
                    // differ once more to look for a leak.
                    drop(data);
                    if outcomes.send(outcome).is_err() {
                        return;
                    }
                }
            })
            .expect("a thread for fuzz inputs");
        Worker { jobs, done }
    }
}

thread_local! {
    static WORKER: Worker = Worker::spawn();
}

/// Runs `target` on `data` on the small-stack worker thread and waits for
/// it; a panic there is raised again here.
pub fn run(data: &[u8], target: Target) {
    let outcome = WORKER.with(|worker| {
        worker
            .jobs
            .send((target, data.to_vec()))
            .expect("the fuzz input thread is running");
        receive(&worker.done).expect("the fuzz input thread answers every input")
    });
    if let Err(payload) = outcome {
        panic::resume_unwind(payload);
    }
}

/// Receives from `channel`, polling for up to [`POLL`] before sleeping.
fn receive<T>(channel: &Receiver<T>) -> Result<T, RecvError> {
    let start = Instant::now();
    loop {
        match channel.try_recv() {
            Ok(value) => return Ok(value),
            Err(TryRecvError::Disconnected) => return Err(RecvError),
            Err(TryRecvError::Empty) if start.elapsed() < POLL => thread::yield_now(),
            Err(TryRecvError::Empty) => return channel.recv(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_worker(data: &[u8]) {
        assert_eq!(thread::current().name(), Some("fuzz-input"));
        assert_eq!(data, b"abc");
    }

    fn fails(_: &[u8]) {
        panic!("the target's own panic");
    }

    #[test]
    fn inputs_run_on_the_worker_and_panics_come_back() {
        run(b"abc", on_worker);
        let payload = panic::catch_unwind(|| run(b"", fails)).unwrap_err();
        assert_eq!(
            payload.downcast_ref::<&str>(),
            Some(&"the target's own panic")
        );
        // The worker survives a caught panic.
        run(b"abc", on_worker);
    }
}
