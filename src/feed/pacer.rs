//! Deadline pacing for the producer thread: how many ticks are due now,
//! and how long to sleep until the next one.
//!
//! The schedule is anchored at a start instant: tick `n` is due at
//! `start + n / rate`. Oversleeping therefore never lowers the rate (the
//! ticks that came due meanwhile are released at once), and a stall longer
//! than [`MAX_CATCH_UP`] is dropped from the schedule rather than replayed as
//! one huge burst.

use std::time::{Duration, Instant};

/// The longest backlog the pacer releases in one go after a stall; older
/// due ticks are skipped so a paused process does not flood its clients.
pub const MAX_CATCH_UP: Duration = Duration::from_millis(100);

/// A deadline schedule for a fixed rate.
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    nanos_per_tick: f64,
    /// Ticks released so far (including skipped ones).
    released: u64,
    /// Ticks dropped from the schedule after stalls.
    skipped: u64,
}

impl Pacer {
    /// A schedule of `rate` ticks per second starting at `start`.
    pub fn new(rate: f64, start: Instant) -> Self {
        assert!(rate.is_finite() && rate > 0.0, "rate must be positive");
        Pacer {
            start,
            nanos_per_tick: 1e9 / rate,
            released: 0,
            skipped: 0,
        }
    }

    /// How many ticks are due at `now` and not yet released; marks them
    /// released.
    pub fn due(&mut self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start).as_nanos() as f64;
        let mut target = (elapsed / self.nanos_per_tick) as u64 + 1;
        let max_batch = (MAX_CATCH_UP.as_nanos() as f64 / self.nanos_per_tick).ceil() as u64;
        if target > self.released + max_batch.max(1) {
            let skip = target - self.released - max_batch.max(1);
            self.skipped += skip;
            self.released += skip;
        }
        target = target.max(self.released);
        let due = target - self.released;
        self.released = target;
        due
    }

    /// When the next tick after those released so far is due.
    pub fn next_deadline(&self) -> Instant {
        self.due_at(self.released)
    }

    /// When tick `index` (counting from 0, skipped ticks included) is due.
    pub fn due_at(&self, index: u64) -> Instant {
        self.start + Duration::from_nanos((index as f64 * self.nanos_per_tick) as u64)
    }

    /// Ticks released so far, skipped ones included: the last call to
    /// [`Pacer::due`] released the indices `released() - due .. released()`.
    pub fn released(&self) -> u64 {
        self.released
    }

    /// Ticks dropped from the schedule because the thread stalled.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_by_deadline_not_by_sleep_count() {
        let start = Instant::now();
        let mut pacer = Pacer::new(1000.0, start);
        assert_eq!(pacer.due(start), 1, "the first tick is due at once");
        assert_eq!(pacer.due(start), 0);
        assert_eq!(pacer.next_deadline(), start + Duration::from_millis(1));
        // Waking 5.5 ms late releases the 5 ticks that came due meanwhile.
        assert_eq!(pacer.due(start + Duration::from_micros(5_500)), 5);
        assert_eq!(pacer.next_deadline(), start + Duration::from_millis(6));
        // They are ticks 1 to 5, each due on its own millisecond.
        assert_eq!(pacer.released(), 6);
        assert_eq!(pacer.due_at(1), start + Duration::from_millis(1));
        assert_eq!(pacer.due_at(5), start + Duration::from_millis(5));
        // Over a whole second the count is exact, however the wake-ups fell.
        let mut total = 6;
        let mut t = start + Duration::from_micros(5_500);
        while t < start + Duration::from_millis(999) {
            t += Duration::from_micros(1_300);
            total += pacer.due(t.min(start + Duration::from_micros(999_500)));
        }
        assert_eq!(total, 1000);
        assert_eq!(pacer.skipped(), 0);
    }

    #[test]
    fn a_long_stall_is_not_replayed_as_a_burst() {
        let start = Instant::now();
        let mut pacer = Pacer::new(10_000.0, start);
        pacer.due(start);
        let burst = pacer.due(start + Duration::from_secs(5));
        assert_eq!(burst, 1_000, "at most MAX_CATCH_UP worth of ticks");
        assert_eq!(pacer.skipped(), 49_000);
        assert_eq!(pacer.due(start + Duration::from_secs(5)), 0);
    }
}
