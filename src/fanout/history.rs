//! `History`: the last ticks of every symbol, kept by the fan-out so a
//! client that reconnects can resume where it left off (`from`).
//!
//! Each symbol keeps up to `depth` of its most recent tick frames, the very
//! frames the fan-out sent (shared, not copied), with contiguous `seq`s: a
//! gap in the feed starts the symbol's history over, since ticks on both
//! sides of a gap cannot make a gap-free replay. Memory is bounded by
//! symbols × depth frames (about 200 bytes each).

use std::collections::VecDeque;

use bytes::Bytes;

use crate::tick::SymbolId;

/// What the history can do for a client that saw `seq` up to `from`.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay<'a> {
    /// The client has the latest tick already.
    UpToDate,
    /// Exactly the ticks after `from`, oldest first.
    Ticks(Vec<&'a Bytes>),
    /// The ticks after `from` are no longer kept (or never existed here).
    Gone,
}

#[derive(Debug, Default)]
struct SymbolHistory {
    /// Frames of contiguous `seq`s, the newest last.
    frames: VecDeque<Bytes>,
    /// `seq` of the newest frame.
    last_seq: u64,
}

/// See the module docs.
#[derive(Debug)]
pub struct History {
    depth: usize,
    symbols: Vec<SymbolHistory>,
}

impl History {
    /// Keeps `depth` ticks of each of `symbol_count` symbols.
    pub fn new(symbol_count: usize, depth: usize) -> Self {
        History {
            depth,
            symbols: (0..symbol_count)
                .map(|_| SymbolHistory::default())
                .collect(),
        }
    }

    /// Makes room for `symbol_count` symbols.
    pub fn grow(&mut self, symbol_count: usize) {
        if symbol_count > self.symbols.len() {
            self.symbols
                .resize_with(symbol_count, SymbolHistory::default);
        }
    }

    /// Whether anything is kept at all.
    pub fn is_enabled(&self) -> bool {
        self.depth > 0
    }

    /// Records the tick `seq` of `symbol`, sent as `frame`. A `seq` that
    /// does not follow the last one starts the history over.
    pub fn record(&mut self, symbol: SymbolId, seq: u64, frame: &Bytes) {
        if self.depth == 0 {
            return;
        }
        let history = &mut self.symbols[symbol as usize];
        if history.last_seq.checked_add(1) != Some(seq) {
            history.frames.clear();
        }
        if history.frames.len() == self.depth {
            history.frames.pop_front();
        }
        history.frames.push_back(frame.clone());
        history.last_seq = seq;
    }

    /// The ticks of `symbol` after `from`, given that its latest `seq` is
    /// `latest`.
    pub fn since(&self, symbol: SymbolId, from: u64, latest: u64) -> Replay<'_> {
        if from == latest {
            return Replay::UpToDate;
        }
        let history = &self.symbols[symbol as usize];
        let kept = history.frames.len() as u64;
        // The oldest kept seq is `last_seq - kept + 1`; the client needs
        // `from + 1` onwards.
        if from > latest || history.last_seq != latest || kept == 0 {
            return Replay::Gone;
        }
        let oldest = latest - (kept - 1);
        if from + 1 < oldest {
            return Replay::Gone;
        }
        let skip = (from + 1 - oldest) as usize;
        Replay::Ticks(history.frames.iter().skip(skip).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64) -> Bytes {
        Bytes::from(seq.to_string())
    }

    fn seqs(replay: Replay<'_>) -> Vec<String> {
        match replay {
            Replay::Ticks(frames) => frames
                .iter()
                .map(|f| String::from_utf8(f.to_vec()).unwrap())
                .collect(),
            other => panic!("expected ticks, got {other:?}"),
        }
    }

    #[test]
    fn replays_exactly_the_missed_ticks_while_they_are_kept() {
        let mut history = History::new(2, 4);
        for seq in 1..=10 {
            history.record(0, seq, &frame(seq));
        }
        assert_eq!(seqs(history.since(0, 7, 10)), ["8", "9", "10"]);
        assert_eq!(seqs(history.since(0, 6, 10)), ["7", "8", "9", "10"]);
        assert_eq!(history.since(0, 5, 10), Replay::Gone);
        assert_eq!(history.since(0, 10, 10), Replay::UpToDate);
        assert_eq!(history.since(0, 11, 10), Replay::Gone);
        assert_eq!(history.since(1, 0, 0), Replay::UpToDate);
    }

    #[test]
    fn a_gap_starts_the_history_over() {
        let mut history = History::new(1, 8);
        for seq in [1, 2, 3, 7, 8] {
            history.record(0, seq, &frame(seq));
        }
        assert_eq!(seqs(history.since(0, 6, 8)), ["7", "8"]);
        assert_eq!(history.since(0, 3, 8), Replay::Gone);
    }

    #[test]
    fn depth_zero_keeps_nothing() {
        let mut history = History::new(1, 0);
        history.record(0, 1, &frame(1));
        assert!(!history.is_enabled());
        assert_eq!(history.since(0, 0, 1), Replay::Gone);
        assert_eq!(history.since(0, 1, 1), Replay::UpToDate);
    }
}
