//! Connection limits: how many WebSocket connections may be open at once,
//! in all and per client address.
//!
//! The edge takes a [`Slot`] for an upgrade before it is accepted
//! (refused: 503 or 429, before any WebSocket exists), and whoever owns
//! the connection holds it for the connection's life, inline (the shard,
//! in its connection record); dropping the slot gives it back. Counting at
//! upgrade time, not when the session starts, keeps a burst of upgrades
//! from overshooting the limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why an upgrade got no slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitReached {
    /// `--max-connections` are open.
    Server(usize),
    /// `--max-connections-per-ip` are open from this address.
    Address(usize),
}

#[derive(Debug, Default)]
struct Counts {
    open: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// The limits and what is open now.
#[derive(Debug)]
pub struct ConnectionLimits {
    max: usize,
    /// 0: no per-address limit.
    max_per_address: usize,
    counts: Mutex<Counts>,
}

/// One open connection's place under the limits; given back on drop.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    address: IpAddr,
}

impl ConnectionLimits {
    /// At most `max` connections, and `max_per_address` from one address
    /// (0: unlimited).
    pub fn new(max: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            max,
            max_per_address,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a connection from `address`, if the limits allow one.
    pub fn acquire(self: &Arc<Self>, address: IpAddr) -> Result<Slot, LimitReached> {
        let mut counts = self.counts();
        if counts.open >= self.max {
            return Err(LimitReached::Server(self.max));
        }
        if self.max_per_address > 0 {
            let from_address = counts.by_address.entry(address).or_default();
            if *from_address >= self.max_per_address {
                return Err(LimitReached::Address(self.max_per_address));
            }
            *from_address += 1;
        }
        counts.open += 1;
        Ok(Slot {
            limits: self.clone(),
            address,
        })
    }

    /// Connections holding a slot now.
    pub fn open(&self) -> usize {
        self.counts().open
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let limits = &self.limits;
        let mut counts = limits.counts();
        counts.open -= 1;
        if limits.max_per_address > 0 {
            if let Some(from_address) = counts.by_address.get_mut(&self.address) {
                *from_address -= 1;
                if *from_address == 0 {
                    counts.by_address.remove(&self.address);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_in_all_and_per_address_and_given_back() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limits.acquire(a).unwrap();
        let _a2 = limits.acquire(a).unwrap();
        assert_eq!(limits.acquire(a).unwrap_err(), LimitReached::Address(2));
        let _b1 = limits.acquire(b).unwrap();
        assert_eq!(limits.acquire(b).unwrap_err(), LimitReached::Server(3));
        drop(a1);
        assert_eq!(limits.open(), 2);
        let _a3 = limits.acquire(a).unwrap();
        assert!(limits.counts().by_address.len() <= 2);
    }

    #[test]
    fn zero_means_no_per_address_limit() {
        let limits = ConnectionLimits::new(100, 0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let slots: Vec<_> = (0..100).map(|_| limits.acquire(a).unwrap()).collect();
        assert_eq!(limits.acquire(a).unwrap_err(), LimitReached::Server(100));
        drop(slots);
        assert_eq!(limits.open(), 0);
        assert!(limits.counts().by_address.is_empty());
    }
}
