//! feed-sim: tickcast's feed simulator and load tester, as a library so
//! that its tests can run a load (and a publisher) against a server
//! started in the same process and check the [`report::Report`] they get.
//!
//! # Layout
//!
//! - [`load`]: `feed-sim load`, many WebSocket clients on one event loop:
//!   `load/plan.rs` (the symbol list, what each client subscribes to),
//!   `load/clients.rs` (connect, upgrade, read), `load/track.rs` (where
//!   gaps are counted and latency computed), `load/mod.rs` (the timeline
//!   and the report's figures).
//! - [`report`]: the figures of one run, the printed table, `/proc` readers.
//! - [`hgrm`]: the latency histogram in HdrHistogram's `.hgrm` text format.
//! - [`plot`]: the latency-by-percentile SVG chart of one or more runs.
//! - [`progress`]: the progress bars drawn on stderr while a run goes on.
//! - [`publish`]: `feed-sim publish`, the simulator as an external
//!   producer for a server started with `--feed ingest`.
//! - [`soak`]: `feed-sim soak`, connection churn and a check that the
//!   server's memory and file descriptors come back afterwards.
//! - [`flood`]: `feed-sim flood`, HTTP requests and connection churn
//!   (no ticks) against a server, for a bystander `load` to measure.
//! - `ws`: where the server is and the client side of the WebSocket
//!   handshake, shared by the subcommands.
//! - `net`: connections from a chosen loopback source address, shared by
//!   `load`, `soak` and `flood`; the open-file limit.
//! - `server_msg`: what a server's messages say, read without parsing
//!   JSON (message kind, a tick's fields, close labels, `subscribed`).
//! - `symbols`: the server's symbol names numbered for the clients.
//!
//! WebSocket frames are split and built by the server's own codec,
//! `tickcast::wire::frame`.
//! - [`shared_args`]: command-line options more than one subcommand takes
//!   (`--source-ips`, `--json`).

#![forbid(unsafe_code)]

pub mod flood;
pub mod hgrm;
pub mod load;
mod net;
pub mod plot;
pub mod progress;
pub mod publish;
pub mod report;
mod server_msg;
pub mod shared_args;
pub mod soak;
mod symbols;
mod ws;
