//! Property test of `ring` against a plain reference model: a `VecDeque`
//! holding the last `capacity` records, and one position per reader.
//!
//! Random single-threaded sequences of publish, read and clone must give
//! exactly the same results on the ring and on the model: the same items,
//! the same `Lagged(n)` counts at the same moments, and `Empty` at the same
//! moments. The concurrent cases are covered by the loom models in
//! `src/ring/loom_tests.rs`.

use std::collections::VecDeque;

use proptest::prelude::*;
use tickcast::ring::{self, Cursor, Producer, Read};

/// The reference: what the ring promises, written as simply as possible.
struct Model {
    capacity: u64,
    /// The last `capacity` records published, oldest first.
    records: VecDeque<u64>,
    /// Number of records published.
    head: u64,
    /// Each reader's next position.
    readers: Vec<u64>,
}

impl Model {
    fn new(requested: usize) -> Self {
        Model {
            capacity: requested.next_power_of_two().max(2) as u64,
            records: VecDeque::new(),
            head: 0,
            readers: Vec::new(),
        }
    }

    fn publish(&mut self, value: u64) -> u64 {
        if self.records.len() as u64 == self.capacity {
            self.records.pop_front();
        }
        self.records.push_back(value);
        self.head += 1;
        self.head - 1
    }

    fn read(&mut self, reader: usize) -> Read<u64> {
        let pos = self.readers[reader];
        let oldest = self.head - self.records.len() as u64;
        if pos == self.head {
            Read::Empty
        } else if pos < oldest {
            // Lapped: resume one past the oldest record, which in a
            // concurrent ring the producer could be overwriting.
            let resume = self.head - self.capacity + 1;
            self.readers[reader] = resume;
            Read::Lagged(resume - pos)
        } else {
            self.readers[reader] = pos + 1;
            Read::Item(self.records[(pos - oldest) as usize])
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Publish(u64),
    /// A new reader at the next position to be published.
    Subscribe,
    /// Read once on reader `k % readers`.
    Read(usize),
    /// Read on reader `k % readers` until it returns `Empty`.
    Drain(usize),
    /// Add a clone of reader `k % readers`.
    Clone(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<u64>().prop_map(Op::Publish),
        1 => Just(Op::Subscribe),
        6 => any::<usize>().prop_map(Op::Read),
        1 => any::<usize>().prop_map(Op::Drain),
        1 => any::<usize>().prop_map(Op::Clone),
    ]
}

/// Applies one read to both sides and checks they agree.
fn read_both(cursor: &mut Cursor<u64>, model: &mut Model, k: usize) -> Read<u64> {
    let expected = model.read(k);
    let actual = cursor.try_read();
    assert_eq!(actual, expected, "reader {k}");
    assert_eq!(
        cursor.position(),
        model.readers[k],
        "position of reader {k}"
    );
    assert_eq!(
        cursor.behind(),
        model.head - model.readers[k],
        "behind of reader {k}"
    );
    actual
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn ring_matches_vecdeque_model(
        requested in 1usize..=9,
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let mut producer: Producer<u64> = ring::channel(requested);
        let mut model = Model::new(requested);
        prop_assert_eq!(producer.capacity() as u64, model.capacity);

        let mut cursors = vec![producer.cursor()];
        model.readers.push(0);
        for op in ops {
            match op {
                Op::Publish(value) => {
                    prop_assert_eq!(producer.publish(value), model.publish(value));
                    prop_assert_eq!(producer.published(), model.head);
                }
                Op::Subscribe => {
                    cursors.push(producer.cursor());
                    model.readers.push(model.head);
                }
                Op::Read(k) => {
                    let k = k % cursors.len();
                    let _ = read_both(&mut cursors[k], &mut model, k);
                }
                Op::Drain(k) => {
                    let k = k % cursors.len();
                    while read_both(&mut cursors[k], &mut model, k) != Read::Empty {}
                }
                Op::Clone(k) => {
                    let k = k % cursors.len();
                    cursors.push(cursors[k].clone());
                    model.readers.push(model.readers[k]);
                }
            }
        }
    }
}
