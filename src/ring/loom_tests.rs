//! Loom models of the ring: every interleaving (up to `LOOM_MAX_PREEMPTIONS`)
//! of the producer against one or two readers on a capacity-2 ring, with a
//! two-word record whose words must agree, so that a torn read fails.
//!
//! Run with
//! `RUSTFLAGS="--cfg tickcast_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --lib ring::loom`.
//! Readers make a bounded number of `try_read` calls instead of spinning, so
//! each model stays small. After the producer is done, the main thread drains
//! each cursor to check the totals.

use super::{channel, Cursor, Read, Record};
use loom::thread;

/// Two words that must agree. A read mixing two records fails in
/// `from_words`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pair(u64);

impl Record for Pair {
    const WORDS: usize = 2;

    fn to_words(&self, out: &mut [u64]) {
        out[0] = self.0;
        out[1] = !self.0;
    }

    fn from_words(words: &[u64]) -> Self {
        assert_eq!(words[1], !words[0], "torn record: {words:?}");
        Pair(words[0])
    }
}

/// What a cursor has seen so far. Position `p` holds `Pair(p + 1)`.
#[derive(Debug, Default)]
struct Tally {
    items: u64,
    lagged: u64,
    last: u64,
}

impl Tally {
    /// Makes one `try_read` and checks it against the invariants.
    /// Returns `false` on `Empty`.
    fn read(&mut self, cursor: &mut Cursor<Pair>) -> bool {
        let at = cursor.position();
        match cursor.try_read() {
            Read::Item(Pair(value)) => {
                assert_eq!(value, at + 1, "item is not the one at its position");
                assert!(value > self.last, "items out of order");
                self.last = value;
                self.items += 1;
                true
            }
            Read::Lagged(n) => {
                assert!(n > 0, "Lagged(0)");
                assert_eq!(cursor.position(), at + n, "Lagged count != skipped");
                self.lagged += n;
                true
            }
            Read::Empty => false,
        }
    }

    /// Reads until `Empty`, once the producer has finished, and checks that
    /// the cursor accounted for every published position.
    fn drain(mut self, cursor: &mut Cursor<Pair>, published: u64) -> Self {
        while self.read(cursor) {}
        assert_eq!(cursor.position(), published);
        assert_eq!(self.items + self.lagged, published);
        assert_eq!(self.last, published, "the newest record is always readable");
        self
    }
}

/// Spawns a reader that makes `attempts` reads concurrently with the
/// producer, then hands back its cursor and tally.
fn spawn_reader(
    mut cursor: Cursor<Pair>,
    attempts: usize,
) -> thread::JoinHandle<(Cursor<Pair>, Tally)> {
    thread::spawn(move || {
        let mut tally = Tally::default();
        for _ in 0..attempts {
            tally.read(&mut cursor);
        }
        (cursor, tally)
    })
}

/// A reader racing the producer on records that fit in the ring: never torn,
/// always in order, and never lagged.
#[test]
fn loom_publish_read_race() {
    loom::model(|| {
        let mut producer = channel::<Pair>(2);
        let reader = spawn_reader(producer.cursor(), 2);
        producer.publish(Pair(1));
        producer.publish(Pair(2));
        let (mut cursor, tally) = reader.join().unwrap();
        let tally = tally.drain(&mut cursor, 2);
        assert_eq!(tally.lagged, 0, "two records cannot overrun a ring of two");
    });
}

/// The producer laps a capacity-2 ring twice while a reader reads: the
/// reader may lag, but every item is intact and in order, and items plus
/// lagged counts equal the positions passed.
#[test]
fn loom_overrun_and_wrap() {
    loom::model(|| {
        let mut producer = channel::<Pair>(2);
        let reader = spawn_reader(producer.cursor(), 3);
        for value in 1..=4 {
            producer.publish(Pair(value));
        }
        let (mut cursor, tally) = reader.join().unwrap();
        tally.drain(&mut cursor, 4);
    });
}

/// Two readers, one of them a clone, racing the producer past the end of
/// the ring. Each is checked on its own. The second reader makes a single
/// concurrent read: two each takes about five times as long to explore.
#[test]
fn loom_two_readers() {
    loom::model(|| {
        let mut producer = channel::<Pair>(2);
        let first = producer.cursor();
        let second = first.clone();
        let a = spawn_reader(first, 2);
        let b = spawn_reader(second, 1);
        for value in 1..=3 {
            producer.publish(Pair(value));
        }
        for reader in [a, b] {
            let (mut cursor, tally) = reader.join().unwrap();
            tally.drain(&mut cursor, 3);
        }
    });
}
