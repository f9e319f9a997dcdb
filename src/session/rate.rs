//! `RateLimit`: a connection's input rate limit
//! (`--max-messages-per-second`), counted in frames.

use std::time::Instant;

/// A token bucket of frames per second, and how many frames were refused
/// in a row.
#[derive(Debug)]
pub struct RateLimit {
    /// Frames a second, and the burst size.
    pub per_second: f64,
    tokens: f64,
    refilled_at: Instant,
    refused_in_a_row: u32,
}

/// What to do with a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Handle it.
    Yes,
    /// Refuse it with `rate_limited`.
    No,
    /// Close the connection: it kept sending after a second's worth of
    /// refusals.
    Close,
}

impl RateLimit {
    /// `per_second` frames a second, in bursts of as many.
    pub fn new(per_second: u32, now: Instant) -> Self {
        RateLimit {
            per_second: f64::from(per_second),
            tokens: f64::from(per_second),
            refilled_at: now,
            refused_in_a_row: 0,
        }
    }

    /// Whether a message of `frames` frames may be handled now.
    pub fn admit(&mut self, now: Instant, frames: u32) -> Admit {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        self.refilled_at = now;
        let cost = f64::from(frames);
        if self.tokens >= cost {
            self.tokens -= cost;
            self.refused_in_a_row = 0;
            return Admit::Yes;
        }
        // A refused message's fragments still used the connection.
        self.tokens = (self.tokens - cost).max(0.0);
        let answered_before = self.refused_in_a_row > 0;
        self.refused_in_a_row = self.refused_in_a_row.saturating_add(frames);
        // The first refusal is always answered, so the client learns why.
        if answered_before && f64::from(self.refused_in_a_row) > self.per_second {
            Admit::Close
        } else {
            Admit::No
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_rate_limit_counts_frames_refills_and_closes_after_a_second_of_refusals() {
        let start = Instant::now();
        let mut rate = RateLimit::new(10, start);
        for _ in 0..10 {
            assert_eq!(rate.admit(start, 1), Admit::Yes);
        }
        assert_eq!(rate.admit(start, 1), Admit::No);
        // A tenth of a second brings one frame back.
        let later = start + Duration::from_millis(100);
        assert_eq!(rate.admit(later, 1), Admit::Yes);
        assert_eq!(rate.admit(later, 1), Admit::No);
        // Refusals in a row past a second's worth close the connection.
        for _ in 0..9 {
            assert_eq!(rate.admit(later, 1), Admit::No);
        }
        assert_eq!(rate.admit(later, 1), Admit::Close);
    }

    #[test]
    fn a_fragmented_message_costs_each_of_its_frames() {
        let start = Instant::now();
        let mut rate = RateLimit::new(100, start);
        assert_eq!(rate.admit(start, 60), Admit::Yes);
        // 60 of 100 spent: a 50-fragment message no longer fits.
        assert_eq!(rate.admit(start, 50), Admit::No);
        // Another 200 fragments refused: more than a second's worth.
        assert_eq!(rate.admit(start, 200), Admit::Close);
        // The first refusal is answered even when it alone is too much.
        let mut rate = RateLimit::new(100, start);
        assert_eq!(rate.admit(start, 1000), Admit::No);
        assert_eq!(rate.admit(start, 1), Admit::Close);
    }
}
