//! tickcast: a market-data ticker fan-out server.
//!
//! A feed writes ticks into a lock-free ring; every connection shard (one
//! event loop per core) reads the ring with its own cursor, serializes each
//! tick once into a WebSocket frame and hands that same buffer to each of
//! its subscribers, then writes every socket that has something to send,
//! usually in one system call.
//!
//! # Layout
//!
//! ```text
//!  feed (thread)     ring          shard (thread per core, mio loop)                 edge (tokio)
//! ┌────────────┐   ┌───────┐   ┌──────────────────────────────────────────┐   ┌──────────────────┐
//! │ sim + pacer│──▶│ SPMC  │──▶│ cursor → fanout: encode once → outboxes  │   │ hyper: /, /ws,   │
//! │ ingest,NATS│   │seqlock│   │ connections: read → wire::reader →       │◀──│ /symbols, ...    │
//! └────────────┘   └───────┘   │   session (requests) · write (send)      │   │ upgrade, handoff │
//!                              └──────────────────────────────────────────┘   └──────────────────┘
//! ```
//!
//! - [`tick`]: the value that travels every stage, and the clock.
//! - [`price`]: exact prices, scaled integers in, shortest decimals out.
//! - [`symbol`]: the symbol registry, fixed or learned from the feed.
//! - [`wire`]: the WebSocket codec: frames, the client-frame reader, close codes.
//! - [`protocol`]: the JSON wire contract and its error codes.
//! - [`feed`]: stage 1, where ticks come from (the built-in simulator,
//!   `/ingest`, NATS).
//! - [`ring`]: stage 2, the lock-free single-producer broadcast ring.
//! - [`fanout`]: stage 3, serialize once, route by symbol, the outboxes
//!   where backpressure happens (one fan-out per shard).
//! - [`session`]: stage 4, one client's requests and subscriptions.
//! - [`shard`]: the event loop per core that owns connections: reads,
//!   writes, timers, handoff from the edge.
//! - [`http`]: the edge, hyper routes and the upgrade; never on a shard.
//! - [`server`]: wires the stages in order and owns shutdown.
//! - [`tls`]: `--tls-cert`/`--tls-key`, HTTPS and WSS without a proxy.
//! - [`auth`]: entitlement tokens, who may connect and see which symbols.
//! - [`limits`]: how many connections may be open, in all and per address.
//! - [`cli`]: the command line, the server's flags or `tickcast token`.
//! - [`config`], [`error`], [`stats`], [`metrics`]: flags, start-up errors,
//!   counters, `/metrics`.
//! - [`trim`]: gives memory freed by connection churn back to the system.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod price;
pub mod symbol;
pub mod tick;

pub mod protocol;
pub mod wire;

pub mod fanout;
pub mod feed;
pub mod http;
pub mod ring;
pub mod server;
pub mod session;
pub mod shard;

pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod stats;
pub mod tls;
pub mod trim;

pub use config::Config;
pub use server::Server;
