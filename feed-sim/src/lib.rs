//! feed-sim: tickcast's feed simulator and load tester, as a library so
//! that `tests/load.rs` can run a load against a server started in the
//! same process and check the [`report::Report`] it gets back.
//!
//! # Layout
//!
//! - [`load`]: `feed-sim load`, many WebSocket clients, the receive path
//!   and the run's timeline (warm-up, window, stalled clients, `--idle`).
//! - [`report`]: the figures of one run, the printed table, `/proc` readers.
//! - [`hgrm`]: the latency histogram in HdrHistogram's `.hgrm` text format.
//! - [`plot`]: the latency-by-percentile SVG chart of one or more runs.
//! - [`progress`]: the progress bars drawn on stderr while a run goes on.

#![forbid(unsafe_code)]

pub mod hgrm;
pub mod load;
pub mod plot;
pub mod progress;
pub mod report;
