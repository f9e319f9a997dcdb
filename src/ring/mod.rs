//! Placeholder ring with the final API (replaced by the lock-free ring).
#![allow(missing_docs)]
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

pub trait Record: Copy + Send + 'static {
    const WORDS: usize;
    fn to_words(&self, out: &mut [u64]);
    fn from_words(words: &[u64]) -> Self;
}

struct Shared<T> {
    q: Mutex<(u64, VecDeque<T>)>,
    cap: usize,
}

pub fn channel<T: Record>(capacity: usize) -> Producer<T> {
    Producer {
        shared: Arc::new(Shared {
            q: Mutex::new((0, VecDeque::new())),
            cap: capacity.next_power_of_two(),
        }),
    }
}

pub struct Producer<T> {
    shared: Arc<Shared<T>>,
}

impl<T: Record> Producer<T> {
    pub fn publish(&mut self, item: T) -> u64 {
        let mut g = self.shared.q.lock().unwrap();
        g.1.push_back(item);
        if g.1.len() > self.shared.cap {
            g.1.pop_front();
        }
        g.0 += 1;
        g.0 - 1
    }
    pub fn cursor(&self) -> Cursor<T> {
        Cursor {
            shared: self.shared.clone(),
            pos: self.published(),
        }
    }
    pub fn published(&self) -> u64 {
        self.shared.q.lock().unwrap().0
    }
    pub fn capacity(&self) -> usize {
        self.shared.cap
    }
}

pub struct Cursor<T> {
    shared: Arc<Shared<T>>,
    pos: u64,
}
impl<T> Clone for Cursor<T> {
    fn clone(&self) -> Self {
        Cursor {
            shared: self.shared.clone(),
            pos: self.pos,
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Read<T> {
    Item(T),
    Lagged(u64),
    Empty,
}

impl<T: Record> Cursor<T> {
    pub fn try_read(&mut self) -> Read<T> {
        let g = self.shared.q.lock().unwrap();
        let oldest = g.0 - g.1.len() as u64;
        if self.pos < oldest {
            let n = oldest - self.pos;
            self.pos = oldest;
            return Read::Lagged(n);
        }
        if self.pos == g.0 {
            return Read::Empty;
        }
        let it = g.1[(self.pos - oldest) as usize];
        self.pos += 1;
        Read::Item(it)
    }
    pub fn position(&self) -> u64 {
        self.pos
    }
    pub fn behind(&self) -> u64 {
        self.shared.q.lock().unwrap().0 - self.pos
    }
}
