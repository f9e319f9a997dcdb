//! Lock-free single-producer, multi-consumer broadcast ring: the hand-off
//! between the feed (the one [`Producer`]) and the fan-out stage (one
//! [`Cursor`] per reader).
//!
//! The producer writes every record into a fixed-size ring and never waits
//! for anyone. Each reader owns a cursor and reads at its own pace. A reader
//! that falls more than the ring's length behind is told exactly how many
//! records it missed ([`Read::Lagged`]) and carries on from the oldest record
//! still intact. A reader never returns a torn or half-written record.
//!
//! ```
//! use tickcast::ring::{self, Read};
//!
//! let mut producer = ring::channel::<u64>(4);
//! let mut cursor = producer.cursor();
//! producer.publish(7);
//! assert_eq!(cursor.try_read(), Read::Item(7));
//! assert_eq!(cursor.try_read(), Read::Empty);
//! ```
//!
//! ## Design
//!
//! The ring has `capacity` slots, a power of two, so position `p` lives in
//! slot `p & (capacity - 1)`. Each slot is a seqlock built only from atomics,
//! so the module needs no `unsafe`:
//!
//! ```text
//!   slots: [ stamp | word 0 | .. | word WORDS-1 ] [ stamp | .. ] ..   (one flat Box<[AtomicU64]>)
//!   head:  number of records published             (on its own cache line)
//! ```
//!
//! A record is stored as [`Record::WORDS`] `u64` words, each in its own
//! `AtomicU64`. The stamp says which position the slot holds and whether
//! that write has finished:
//!
//! | stamp            | meaning                                |
//! |------------------|----------------------------------------|
//! | `0`              | never written                          |
//! | `2 * (p + 1)`    | holds the complete record for `p`      |
//! | `2 * (p + 1) + 1`| the producer is writing position `p`   |
//!
//! Stamps only grow, so a reader looking for position `pos` compares the
//! stamp with the two values for `pos`. A smaller stamp means `pos` has not
//! been published yet, so the read returns [`Read::Empty`]. An equal stamp
//! means the record is there. A larger stamp means a later lap has
//! overwritten the slot, so the reader has lagged. The common path reads one
//! slot and never touches `head`, so readers that keep up do not contend on
//! the producer's counter.
//!
//! The producer is not `Clone`, and [`Producer::publish`] takes `&mut self`,
//! so there is exactly one writer and it needs no read-modify-write
//! operations. The ring has no "closed" state. When the producer is dropped,
//! readers drain what is left and then see [`Read::Empty`] for ever. Stopping
//! readers is the job of the server's shutdown signal.
//!
//! A stamp holds a position in 63 bits, so the ring works for 2^63 - 1
//! records, which is centuries at any realistic feed rate.
//!
//! ## Lagging
//!
//! The producer never waits, so a slow reader can be lapped. It notices
//! this when its slot's stamp is newer than its position, either before it
//! reads the words or on the check after them. It then reads `head` (or
//! takes the newer stamp's own evidence of progress, if `head` looks older)
//! and moves to `head - capacity + 1`, the oldest position certainly intact:
//! `head - capacity` shares its slot with `head`, which the producer may be
//! writing right now. It returns `Lagged(n)`, where `n` is exactly the number
//! of positions it skipped. If it is lapped again while catching up, it
//! reports another `Lagged`.
//!
//! The resulting invariant, checked by the unit tests, the loom models and
//! the property test in `tests/ring_model.rs`: over a cursor's lifetime, the
//! number of `Item`s plus the sum of all `Lagged(n)` equals the number of
//! positions it has moved past, and every `Item` is exactly the record
//! published at its position, in order. Callers must not drop a `Lagged`
//! silently. For market data it has to become a visible, counted gap.
//!
//! ## Memory ordering
//!
//! This is the fence-based seqlock from Hans Boehm, "Can seqlocks get along
//! with programming language memory models?" (MSPC 2012):
//!
//! ```text
//!   producer                                 reader
//!   stamp = writing(p)    Relaxed            s1 = stamp          Acquire
//!   fence(Release)                           words               Relaxed
//!   words                 Relaxed            fence(Acquire)
//!   stamp = complete(p)   Release            s2 = stamp          Relaxed
//!   head  = p + 1         Release            valid iff s1 == s2 == complete(pos)
//! ```
//!
//! * If `s1 == complete(pos)`, the reader's Acquire load synchronises with
//!   the producer's Release store of that stamp. All word stores for `pos`
//!   happen-before the word loads, so no word can come from an older lap.
//! * If any word load returns a value from a newer lap, that store comes
//!   after the producer's `fence(Release)`, which follows the `writing`
//!   stamp. The reader's `fence(Acquire)` then synchronises with that fence,
//!   so the `writing` stamp happens-before the reload: `s2` is at least that
//!   `writing` stamp, `s2 != s1`, and the read is thrown away.
//! * `head` does not protect any data, since every read is checked by the
//!   stamps. It is still stored with Release and loaded with Acquire, so that
//!   a cursor that learned from `head` that position `q` is published also
//!   sees `q`'s stamp. After a `Lagged`, the next read therefore finds its
//!   record instead of a stale `Empty`.
//!
//! The exact code is checked by loom (`loom_tests.rs`, run with
//! `RUSTFLAGS="--cfg tickcast_loom" cargo test --release --lib ring::loom`). Every
//! atomic and fence comes from `sync.rs`, which swaps in loom's versions.
#![forbid(unsafe_code)]

#[cfg(all(test, tickcast_loom))]
mod loom_tests;
mod sync;

use std::fmt;
use std::marker::PhantomData;

use sync::{fence, Arc, AtomicU64, Ordering};

/// Largest [`Record::WORDS`] the ring accepts. It bounds the stack buffer
/// used to stage a record.
const MAX_WORDS: usize = 16;

/// Largest capacity [`channel`] accepts, in records (2^30). A larger ring
/// would need tens of GiB and is taken to be a configuration mistake.
/// `channel` panics above it.
const MAX_CAPACITY: usize = 1 << 30;

/// A value that can live in the ring: a fixed number of `u64` words.
///
/// The ring stores each word in its own atomic, so a record must be plain
/// data that can be rebuilt from its words (`Copy`, no pointers to owned
/// memory).
pub trait Record: Copy + Send + 'static {
    /// Number of `u64` words one record takes, from 1 to 16.
    /// [`channel`] does not compile for a record outside that range.
    const WORDS: usize;

    /// Writes the record into `out`, which is exactly `WORDS` long.
    fn to_words(&self, out: &mut [u64]);

    /// Rebuilds a record from `words`, which is exactly `WORDS` long and
    /// holds what [`Record::to_words`] wrote.
    fn from_words(words: &[u64]) -> Self;
}

impl Record for u64 {
    const WORDS: usize = 1;

    fn to_words(&self, out: &mut [u64]) {
        out[0] = *self;
    }

    fn from_words(words: &[u64]) -> Self {
        words[0]
    }
}

/// Creates a ring for `capacity` records and returns its only producer.
/// Readers are made with [`Producer::cursor`].
///
/// `capacity` is rounded up to a power of two, minimum 2. A reader more than
/// that many records behind gets [`Read::Lagged`].
///
/// # Panics
///
/// Panics if `capacity` is 0, or more than 2^30 records (a ring that large
/// is a configuration mistake).
pub fn channel<T: Record>(capacity: usize) -> Producer<T> {
    const {
        assert!(
            T::WORDS >= 1 && T::WORDS <= MAX_WORDS,
            "Record::WORDS must be between 1 and 16"
        );
    }
    assert!(
        capacity > 0,
        "ring capacity must be at least 1 (it is rounded up to a power of two, minimum 2)"
    );
    assert!(
        capacity <= MAX_CAPACITY,
        "ring capacity {capacity} is larger than the maximum of {MAX_CAPACITY} records: use a smaller ring"
    );
    let capacity = capacity.next_power_of_two().max(2);
    let len = capacity.checked_mul(stride::<T>()).unwrap_or_else(|| {
        panic!(
            "a ring of {capacity} records of {} words does not fit in memory: use a smaller ring",
            T::WORDS
        )
    });
    let slots = (0..len).map(|_| AtomicU64::new(NEVER_WRITTEN)).collect();
    let shared = Arc::new(Shared {
        head: CacheLine(AtomicU64::new(0)),
        slots,
        mask: capacity as u64 - 1,
    });
    Producer {
        shared,
        next: 0,
        _record: PhantomData,
    }
}

/// Stamp of a slot that has never been written.
const NEVER_WRITTEN: u64 = 0;

/// Stamp of a slot holding the complete record for position `pos`.
fn complete(pos: u64) -> u64 {
    (pos + 1) << 1
}

/// Stamp of a slot whose record for position `pos` is being written.
fn writing(pos: u64) -> u64 {
    complete(pos) | 1
}

/// Lower bound on `head` implied by seeing `stamp` in a slot. `complete(p)`
/// means `p + 1` records are published. `writing(p)` means `p` records are
/// published and `p` is in progress.
fn published_at_least(stamp: u64) -> u64 {
    (stamp >> 1) - (stamp & 1)
}

/// Words per slot: the stamp followed by the record's words. Slots are
/// packed. Padding each slot to a multiple of 8 words (64 bytes) made no
/// consistent difference in the threaded benchmark (better with 4 readers,
/// worse with 1, within the noise of a 2-core machine) and quadruples the
/// memory of a one-word ring.
fn stride<T: Record>() -> usize {
    1 + T::WORDS
}

/// Keeps its contents on a cache line of their own. Readers load `head`
/// only when lagging or asked how far behind they are, but the producer
/// stores it on every publish, so it must not share a line with the
/// read-only fields that every reader loads on every read.
#[repr(align(64))]
struct CacheLine<T>(T);

/// State shared by the producer and all cursors.
struct Shared {
    /// Number of records published. Only the producer stores it, after each
    /// record is complete. Readers use it only to find where to resume after
    /// lagging and to report how far behind they are.
    head: CacheLine<AtomicU64>,
    /// `capacity` slots of `stride::<T>()` words each: the stamp, then the
    /// record's words. Slot `i` starts at `i * stride`.
    slots: Box<[AtomicU64]>,
    /// `capacity - 1`. Position `p` lives in slot `p & mask`.
    mask: u64,
}

impl Shared {
    /// The words of the slot for position `pos`: stamp first, then data.
    fn slot(&self, pos: u64, stride: usize) -> &[AtomicU64] {
        let start = (pos & self.mask) as usize * stride;
        &self.slots[start..start + stride]
    }

    fn capacity(&self) -> u64 {
        self.mask + 1
    }
}

/// The only writer of a ring, made by [`channel`].
///
/// It is `Send` but not `Clone`: a ring has exactly one producer.
/// [`Producer::publish`] never blocks and never waits for readers.
pub struct Producer<T> {
    shared: Arc<Shared>,
    /// Next position to write. The producer's own copy of `head`, which it
    /// never needs to load.
    next: u64,
    /// `fn(T)` keeps `Producer` `Send` and `Sync` whatever `T` is. It stores
    /// only words, never a `T`.
    _record: PhantomData<fn(T)>,
}

impl<T: Record> Producer<T> {
    /// Writes `item` into the ring and returns its position (0-based).
    ///
    /// Never blocks. If a reader is still on the record being overwritten,
    /// that reader gets [`Read::Lagged`] instead of the old record.
    pub fn publish(&mut self, item: T) -> u64 {
        let pos = self.next;
        // The record is turned into words before the slot is touched, so a
        // panicking `to_words` cannot leave a slot stuck in `writing`.
        let mut staged = [0u64; MAX_WORDS];
        let staged = &mut staged[..T::WORDS];
        item.to_words(staged);

        let slot = self.shared.slot(pos, stride::<T>());
        let (stamp, words) = (&slot[0], &slot[1..]);
        // Relaxed: this store is ordered before the word stores by the fence
        // below, not by its own ordering.
        stamp.store(writing(pos), Ordering::Relaxed);
        // Release fence: a reader that sees any of the word stores below and
        // then runs its `fence(Acquire)` also sees the `writing` stamp above,
        // so its check after the read fails instead of accepting a torn
        // record.
        fence(Ordering::Release);
        for (word, &value) in words.iter().zip(staged.iter()) {
            // Relaxed: a reader never trusts a word until it has checked the
            // stamps around its read.
            word.store(value, Ordering::Relaxed);
        }
        // Release: a reader that loads this stamp with Acquire sees all the
        // word stores above, so none of its word loads returns an older lap.
        stamp.store(complete(pos), Ordering::Release);
        self.next = pos + 1;
        // Release: pairs with the Acquire loads in `Cursor::lagged` and
        // `Cursor::behind`, so a reader that sees `head == pos + 1` also sees
        // `complete(pos)` (and every earlier stamp) in the slots.
        self.shared.head.0.store(pos + 1, Ordering::Release);
        pos
    }

    /// Makes a reader that starts at the next position to be published. It
    /// sees only records published after this call.
    pub fn cursor(&self) -> Cursor<T> {
        Cursor {
            shared: Arc::clone(&self.shared),
            pos: self.next,
            _record: PhantomData,
        }
    }

    /// Number of records published so far. This is also the position the
    /// next [`Producer::publish`] will return.
    pub fn published(&self) -> u64 {
        self.next
    }

    /// Number of records the ring holds: the requested capacity rounded up
    /// to a power of two, minimum 2.
    pub fn capacity(&self) -> usize {
        self.shared.capacity() as usize
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("published", &self.next)
            .field("capacity", &self.shared.capacity())
            .finish()
    }
}

/// One reader's position in a ring, made by [`Producer::cursor`].
///
/// It is `Send` and `Clone`. A clone continues from the same position and
/// then moves independently. Reading never blocks the producer or other
/// cursors.
pub struct Cursor<T> {
    shared: Arc<Shared>,
    /// Next position to read. Only this cursor changes it.
    pos: u64,
    /// `fn() -> T` keeps `Cursor` `Send` and `Sync` whatever `T` is. Records
    /// are rebuilt from words on each read.
    _record: PhantomData<fn() -> T>,
}

/// The outcome of [`Cursor::try_read`].
#[must_use = "a Lagged result is a gap in the data and must be handled"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read<T> {
    /// The record at the cursor's position. The cursor moves past it.
    Item(T),
    /// The producer overwrote records before the cursor read them. The
    /// cursor skipped exactly this many positions and now points at the
    /// oldest record still intact.
    Lagged(u64),
    /// Nothing new: the cursor has read everything published so far.
    Empty,
}

impl<T: Record> Cursor<T> {
    /// Reads the record at the cursor's position, if it is published.
    ///
    /// Never blocks and never spins. Returns [`Read::Empty`] when the record
    /// is not yet complete (including while the producer is writing it), and
    /// [`Read::Lagged`] when it has been overwritten.
    pub fn try_read(&mut self) -> Read<T> {
        let pos = self.pos;
        let slot = self.shared.slot(pos, stride::<T>());
        let (stamp, words) = (&slot[0], &slot[1..]);
        // Acquire: pairs with the producer's Release store of
        // `complete(pos)`, so the word loads below cannot return values from
        // an older lap.
        let s1 = stamp.load(Ordering::Acquire);
        if s1 != complete(pos) {
            // Stamps only grow. Anything up to `writing(pos)` means `pos` is
            // not published yet. Anything larger belongs to a later lap.
            return if s1 <= writing(pos) {
                Read::Empty
            } else {
                self.lagged(s1)
            };
        }
        let mut copied = [0u64; MAX_WORDS];
        let copied = &mut copied[..T::WORDS];
        for (value, word) in copied.iter_mut().zip(words) {
            // Relaxed: checked by the stamp reload below.
            *value = word.load(Ordering::Relaxed);
        }
        // Acquire fence: if any word load above returned a value from a
        // newer lap, this synchronises with the producer's Release fence that
        // preceded it, so the reload below sees that lap's `writing` stamp
        // (or later).
        fence(Ordering::Acquire);
        // Relaxed: ordered after the word loads by the fence above.
        let s2 = stamp.load(Ordering::Relaxed);
        if s2 != s1 {
            // The producer started overwriting the slot during the copy.
            return self.lagged(s2);
        }
        self.pos = pos + 1;
        Read::Item(T::from_words(copied))
    }

    /// Moves past the positions lost to a lap. `stamp` is the newer stamp
    /// found in the cursor's slot.
    fn lagged(&mut self, stamp: u64) -> Read<T> {
        // Acquire: pairs with the producer's Release store of `head`, so the
        // stamp of every position below the loaded value is visible, and the
        // read after this one does not see a stale `Empty`.
        let head = self.shared.head.0.load(Ordering::Acquire);
        // The stamp itself proves at least this much was published. It
        // covers a `head` store not yet visible to this thread, and keeps
        // `resume > self.pos`: the stamp belongs to `self.pos + capacity` or
        // later.
        let published = head.max(published_at_least(stamp));
        // The producer may be writing position `published` right now, and
        // that write goes into the slot of `published - capacity`. The oldest
        // position certainly intact is therefore one further on.
        let resume = published - self.shared.capacity() + 1;
        debug_assert!(resume > self.pos, "lagging must skip at least one position");
        let missed = resume - self.pos;
        self.pos = resume;
        Read::Lagged(missed)
    }

    /// The next position this cursor will read.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// How many records have been published that this cursor has not moved
    /// past yet. It may exceed the capacity, in which case the next read
    /// returns [`Read::Lagged`].
    pub fn behind(&self) -> u64 {
        // Acquire: see `Producer::publish`. If this returns more than zero,
        // the next `try_read` does not return `Empty`.
        let head = self.shared.head.0.load(Ordering::Acquire);
        // `head` can lag behind what this cursor has already read from the
        // stamps on another thread, so saturate rather than underflow.
        head.saturating_sub(self.pos)
    }
}

impl<T> Clone for Cursor<T> {
    fn clone(&self) -> Self {
        Cursor {
            shared: Arc::clone(&self.shared),
            pos: self.pos,
            _record: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Cursor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cursor")
            .field("position", &self.pos)
            .field("capacity", &self.shared.capacity())
            .finish()
    }
}

#[cfg(all(test, not(tickcast_loom)))]
mod tests {
    use super::{channel, Cursor, Producer, Read, Record};
    use std::thread;

    /// A three-word record whose words must agree. A torn read would mix
    /// words from two different records and fail `check`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Triple(u64);

    impl Record for Triple {
        const WORDS: usize = 3;

        fn to_words(&self, out: &mut [u64]) {
            out.copy_from_slice(&[self.0, self.0.wrapping_mul(7), !self.0]);
        }

        fn from_words(words: &[u64]) -> Self {
            let x = words[0];
            assert_eq!(
                words,
                [x, x.wrapping_mul(7), !x],
                "torn record at {x}: {words:?}"
            );
            Triple(x)
        }
    }

    fn assert_send<T: Send>() {}
    fn assert_clone<T: Clone>() {}

    #[test]
    fn producer_is_send_and_cursor_is_send_and_clone() {
        assert_send::<Producer<u64>>();
        assert_send::<Cursor<u64>>();
        assert_clone::<Cursor<u64>>();
    }

    #[test]
    fn capacity_rounds_up_to_a_power_of_two_minimum_two() {
        assert_eq!(channel::<u64>(1).capacity(), 2);
        assert_eq!(channel::<u64>(2).capacity(), 2);
        assert_eq!(channel::<u64>(3).capacity(), 4);
        assert_eq!(channel::<u64>(1000).capacity(), 1024);
        assert_eq!(channel::<Triple>(1024).capacity(), 1024);
    }

    #[test]
    #[should_panic(expected = "ring capacity must be at least 1")]
    fn zero_capacity_panics() {
        let _ = channel::<u64>(0);
    }

    #[test]
    #[should_panic(expected = "is larger than the maximum")]
    fn absurd_capacity_panics() {
        let _ = channel::<u64>(usize::MAX);
    }

    #[test]
    fn reads_in_order_then_empty() {
        let mut producer = channel::<u64>(8);
        let mut cursor = producer.cursor();
        assert_eq!(cursor.try_read(), Read::Empty);
        for value in 10..15 {
            assert_eq!(producer.publish(value), value - 10);
        }
        assert_eq!(producer.published(), 5);
        assert_eq!(cursor.behind(), 5);
        for value in 10..15 {
            assert_eq!(cursor.try_read(), Read::Item(value));
        }
        assert_eq!(cursor.try_read(), Read::Empty);
        assert_eq!(cursor.try_read(), Read::Empty);
        assert_eq!(cursor.position(), 5);
        assert_eq!(cursor.behind(), 0);
    }

    #[test]
    fn new_cursor_starts_at_next_position() {
        let mut producer = channel::<u64>(4);
        producer.publish(1);
        producer.publish(2);
        let mut cursor = producer.cursor();
        assert_eq!(cursor.position(), 2);
        assert_eq!(cursor.try_read(), Read::Empty);
        producer.publish(3);
        assert_eq!(cursor.try_read(), Read::Item(3));
    }

    #[test]
    fn wraps_around_many_times_without_lagging() {
        let mut producer = channel::<Triple>(4);
        let mut cursor = producer.cursor();
        for value in 0..100 {
            producer.publish(Triple(value));
            if value % 3 == 2 {
                // Read in bursts of three, never more than capacity behind.
                for expected in value - 2..=value {
                    assert_eq!(cursor.try_read(), Read::Item(Triple(expected)));
                }
                assert_eq!(cursor.try_read(), Read::Empty);
            }
        }
    }

    #[test]
    fn exactly_capacity_behind_is_not_lagging() {
        let mut producer = channel::<u64>(4);
        let mut cursor = producer.cursor();
        for value in 0..4 {
            producer.publish(value);
        }
        assert_eq!(cursor.behind(), 4);
        for value in 0..4 {
            assert_eq!(cursor.try_read(), Read::Item(value));
        }
        assert_eq!(cursor.try_read(), Read::Empty);
    }

    #[test]
    fn overrun_reports_exact_count_and_resumes_at_oldest_intact() {
        let mut producer = channel::<u64>(4);
        let mut cursor = producer.cursor();
        for value in 0..10 {
            producer.publish(value);
        }
        assert_eq!(cursor.behind(), 10);
        // head = 10, resume at 10 - 4 + 1 = 7.
        assert_eq!(cursor.try_read(), Read::Lagged(7));
        assert_eq!(cursor.position(), 7);
        for value in 7..10 {
            assert_eq!(cursor.try_read(), Read::Item(value));
        }
        assert_eq!(cursor.try_read(), Read::Empty);
    }

    #[test]
    fn lapped_several_times_reports_each_time() {
        let mut producer = channel::<u64>(2);
        let mut cursor = producer.cursor();
        let mut items = 0;
        let mut lagged = 0;
        let mut last = None;
        for round in 0..5u64 {
            for _ in 0..(3 + round * 4) {
                let pos = producer.published();
                producer.publish(pos * 10);
            }
            let mut reports = 0;
            loop {
                let at = cursor.position();
                match cursor.try_read() {
                    Read::Item(value) => {
                        assert_eq!(value, at * 10);
                        assert!(last < Some(value));
                        last = Some(value);
                        items += 1;
                    }
                    Read::Lagged(n) => {
                        assert_eq!(cursor.position(), at + n);
                        lagged += n;
                        reports += 1;
                    }
                    Read::Empty => break,
                }
            }
            assert_eq!(reports, 1, "each burst overruns a capacity-2 ring once");
        }
        assert_eq!(items + lagged, producer.published());
        assert_eq!(items, 5, "one item survives each burst");
    }

    #[test]
    fn clone_continues_from_same_position_independently() {
        let mut producer = channel::<u64>(8);
        let mut first = producer.cursor();
        for value in 0..4 {
            producer.publish(value);
        }
        assert_eq!(first.try_read(), Read::Item(0));
        let mut second = first.clone();
        assert_eq!(second.position(), 1);
        assert_eq!(first.try_read(), Read::Item(1));
        assert_eq!(first.try_read(), Read::Item(2));
        assert_eq!(second.try_read(), Read::Item(1));
        assert_eq!(first.position(), 3);
        assert_eq!(second.position(), 2);
        // Lagging one does not affect the other.
        for value in 4..20 {
            producer.publish(value);
        }
        assert_eq!(first.try_read(), Read::Lagged(20 - 8 + 1 - 3));
        assert_eq!(second.try_read(), Read::Lagged(20 - 8 + 1 - 2));
        assert_eq!(first.try_read(), Read::Item(13));
        assert_eq!(second.try_read(), Read::Item(13));
    }

    #[test]
    fn u64_record_round_trips() {
        let mut words = [0u64; 1];
        u64::MAX.to_words(&mut words);
        assert_eq!(u64::from_words(&words), u64::MAX);
    }

    /// One producer thread publishes `1..=N` while readers on other threads
    /// check that every item is intact, is exactly the record published at
    /// its position, and that items plus lagged counts add up to `N`.
    #[test]
    fn concurrent_readers_never_see_torn_or_reordered_records() {
        const N: u64 = 200_000;
        const READERS: usize = 3;
        let mut producer = channel::<Triple>(64);
        let cursors: Vec<_> = (0..READERS).map(|_| producer.cursor()).collect();
        let readers: Vec<_> = cursors
            .into_iter()
            .map(|mut cursor| {
                thread::spawn(move || {
                    let (mut items, mut lagged, mut last) = (0u64, 0u64, 0u64);
                    while cursor.position() < N {
                        let at = cursor.position();
                        match cursor.try_read() {
                            Read::Item(Triple(value)) => {
                                assert_eq!(value, at + 1, "item is not the one at its position");
                                assert!(value > last, "items out of order");
                                last = value;
                                items += 1;
                            }
                            Read::Lagged(n) => {
                                assert!(n > 0);
                                assert_eq!(cursor.position(), at + n);
                                lagged += n;
                            }
                            Read::Empty => thread::yield_now(),
                        }
                    }
                    assert_eq!(cursor.try_read(), Read::Empty);
                    (items, lagged, last)
                })
            })
            .collect();
        for value in 1..=N {
            producer.publish(Triple(value));
            if value % 1024 == 0 {
                // Give readers on a busy machine a chance to keep up part of
                // the time, so both the reading and lagging paths run.
                thread::yield_now();
            }
        }
        for reader in readers {
            let (items, lagged, last) = reader.join().expect("reader panicked");
            assert_eq!(items + lagged, N);
            assert_eq!(last, N, "the last record is always read");
        }
    }
}
