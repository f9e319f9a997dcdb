//! Synchronisation primitives used by the ring: `std::sync` in normal builds,
//! `loom::sync` under `--cfg tickcast_loom` so the loom models in `loom_tests.rs` check
//! the exact code that ships (the same shim pattern as tokio's `loom` module).
//! The cfg is `tickcast_loom` rather than `loom` because `RUSTFLAGS` reach
//! every crate, and tokio itself compiles differently (without `net`) under
//! `--cfg loom`.
//!
//! The ring must take every atomic, fence and `Arc` from here, never from
//! `std` directly, or loom would not see those operations.

#[cfg(tickcast_loom)]
pub(crate) use loom::sync::{
    atomic::{fence, AtomicU64, Ordering},
    Arc,
};

#[cfg(not(tickcast_loom))]
pub(crate) use std::sync::{
    atomic::{fence, AtomicU64, Ordering},
    Arc,
};
