//! tickcast: a market-data ticker fan-out server.
//!
//! A feed writes ticks into a lock-free ring; one fan-out stage serializes
//! each tick once into a WebSocket frame and hands that same buffer to
//! every subscriber of its symbol; each client's writer sends whatever is
//! queued for it in as few system calls as it can.
//!
//! # Layout
//!
//! ```text
//!  feed (thread)        ring               fanout (task)             session (task per client)
//! ┌──────────────┐   ┌──────────┐   ┌──────────────────────┐   ┌──────────────────────────┐
//! │ sim + pacer  │──▶│ SPMC     │──▶│ encode once → index  │──▶│ outbox → writer (writev) │──▶ TCP
//! │ (GBM prices) │   │ seqlock  │   │ by symbol → outboxes │   │ reader ◀── client frames │◀── TCP
//! └──────────────┘   └──────────┘   └──────────────────────┘   └──────────────────────────┘
//!                                              ▲   subscribe / unsubscribe  │
//!                                              └────────────────────────────┘
//! ```
//!
//! - [`tick`]: the value that travels every stage.
//! - [`price`]: exact prices, scaled integers in, shortest decimals out.
//! - [`symbol`]: the symbol registry, fixed or learned from the feed.
//! - [`feed`]: stage 1, where ticks come from (the built-in simulator).
//! - [`ring`]: stage 2, the lock-free single-producer broadcast ring.
//! - [`fanout`]: stage 3, serialize once, route by symbol.
//! - [`session`]: stage 4, one WebSocket client: outbox, writer, reader.
//! - [`protocol`]: stage 5, the JSON wire contract and its error codes.
//! - [`http`]: the edge, hyper routes and the upgrade.
//! - [`server`]: wires the stages in order and owns shutdown.
//! - [`tls`]: `--tls-cert`/`--tls-key`, HTTPS and WSS without a proxy.
//! - [`auth`]: entitlement tokens, who may connect and see which symbols.
//! - [`cli`]: the command line, the server's flags or `tickcast token`.
//! - [`config`], [`error`], [`stats`]: flags, start-up errors, counters.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod price;
pub mod symbol;
pub mod tick;

pub mod fanout;
pub mod feed;
pub mod http;
pub mod protocol;
pub mod ring;
pub mod server;
pub mod session;
pub mod shard;
pub mod wire;

pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod metrics;
pub mod stats;
pub mod tls;

pub use config::Config;
pub use server::Server;
