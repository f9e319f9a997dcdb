//! What one client makes of the frames it receives: the `seq` of every
//! symbol (gaps, regressions), the latency of every tick from its own
//! `ts`, close codes and error replies, added into the run's [`Totals`].
//!
//! Runs once per message, so it allocates nothing and parses no JSON: a
//! tick is recognised by its `type` prefix and its fields found by byte
//! search ([`crate::server_msg`]).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use tickcast::tick::SymbolId;
use tickcast::wire::frame::{opcode, split_server_frame};

use crate::report::Gaps;
use crate::server_msg::{close_label, message_kind, Kind, TickFields};
use crate::symbols::SymbolIds;

/// The largest server frame a client accepts (a `subscribed` reply to `*`
/// over many symbols is the largest message a server sends).
pub(super) const MAX_FRAME: usize = 64 << 20;

/// The largest latency the histogram records (an hour), in µs.
const LATENCY_MAX_US: u64 = 3_600_000_000;

/// Counters the clients add to.
pub(super) struct Totals {
    pub(super) ticks: u64,
    pub(super) gaps: Gaps,
    pub(super) latency_us: Histogram<u64>,
    /// Close frames by `code reason`.
    pub(super) close_codes: BTreeMap<String, u64>,
    pub(super) disconnects_without_close: u64,
    pub(super) server_errors: u64,
    pub(super) first_server_error: Option<String>,
    pub(super) unrecognised: u64,
    /// `subscribed` replies received.
    pub(super) subscribed: u64,
    /// Stalled clients still open that read up to a fresh tick.
    pub(super) caught_up: u64,
    /// Stalled clients still reading old data at the drain limit.
    pub(super) still_behind: u64,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            ticks: 0,
            gaps: Gaps::default(),
            latency_us: Histogram::new_with_max(LATENCY_MAX_US, 3).expect("valid histogram bounds"),
            close_codes: BTreeMap::new(),
            disconnects_without_close: 0,
            server_errors: 0,
            first_server_error: None,
            unrecognised: 0,
            subscribed: 0,
            caught_up: 0,
            still_behind: 0,
        }
    }
}

/// What the clients share for reading: read-only during the run.
pub(super) struct Reading<'a> {
    pub(super) symbols: &'a SymbolIds,
    pub(super) fields: &'a TickFields,
    /// Whether ticks count now (inside the measured window).
    pub(super) measuring: bool,
}

/// What a connection must do after the frames it just read.
#[derive(Debug, PartialEq)]
pub(super) enum Event {
    /// The server sent a close frame, described by [`close_label`].
    Close(String),
    /// The server pinged; answer with a pong carrying the payload at
    /// this range of the buffer handed to [`Tracker::frames`].
    Ping(std::ops::Range<usize>),
    /// The stream is not valid WebSocket from a server.
    Broken,
}

/// One client's view of the stream.
pub(super) struct Tracker {
    seqs: SeqTracker,
    saw_gap: bool,
    /// `ts` of the last tick read, to tell when a draining stalled client
    /// has caught up with the feed.
    pub(super) last_tick_ts: u64,
}

impl Tracker {
    pub(super) fn new(symbols: usize) -> Self {
        Tracker {
            seqs: SeqTracker::new(symbols),
            saw_gap: false,
            last_tick_ts: 0,
        }
    }

    /// Handles the complete frames at the start of `data`, received at
    /// `now_ns`, until one needs the connection's attention; returns how
    /// many bytes were handled and that event, if any.
    pub(super) fn frames(
        &mut self,
        data: &[u8],
        now_ns: u64,
        reading: &Reading<'_>,
        totals: &mut Totals,
    ) -> (usize, Option<Event>) {
        let mut at = 0;
        while at < data.len() {
            let frame = match split_server_frame(&data[at..], MAX_FRAME) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => return (at, Some(Event::Broken)),
            };
            let start = at;
            at += frame.len;
            let payload = &data[start..][frame.payload.clone()];
            match frame.opcode {
                opcode::TEXT => self.text(payload, now_ns, reading, totals),
                opcode::CLOSE => return (at, Some(Event::Close(close_label(payload)))),
                opcode::PING => {
                    let range = start + frame.payload.start..start + frame.payload.end;
                    return (at, Some(Event::Ping(range)));
                }
                _ => totals.unrecognised += 1,
            }
        }
        (at, None)
    }

    fn text(&mut self, payload: &[u8], now_ns: u64, reading: &Reading<'_>, totals: &mut Totals) {
        match message_kind(payload) {
            Kind::Tick => {
                let Some(tick) = reading.fields.parse(payload, reading.symbols) else {
                    totals.unrecognised += 1;
                    return;
                };
                let seen = self.seqs.tick(tick.symbol, tick.seq);
                self.last_tick_ts = tick.ts;
                if !reading.measuring {
                    return;
                }
                totals.ticks += 1;
                match seen {
                    Seen::InOrder => {}
                    Seen::Gap(missing) => {
                        totals.gaps.missing_ticks += missing;
                        totals.gaps.gap_events += 1;
                        if !self.saw_gap {
                            self.saw_gap = true;
                            totals.gaps.clients_with_gaps += 1;
                        }
                    }
                    Seen::Regressed => totals.gaps.seq_regressions += 1,
                }
                let latency_us = now_ns.saturating_sub(tick.ts) / 1_000;
                totals.latency_us.saturating_record(latency_us);
            }
            Kind::Snapshot => match reading.fields.parse(payload, reading.symbols) {
                Some(tick) => self.seqs.snapshot(tick.symbol, tick.seq),
                None => totals.unrecognised += 1,
            },
            Kind::Subscribed => totals.subscribed += 1,
            Kind::Error => {
                totals.server_errors += 1;
                if totals.first_server_error.is_none() {
                    totals.first_server_error = Some(String::from_utf8_lossy(payload).into_owned());
                }
            }
            Kind::Other => totals.unrecognised += 1,
        }
    }
}

/// How a tick's `seq` relates to the previous one of its symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Seen {
    /// Exactly one more (or the first tick of a symbol that had no
    /// snapshot and starts at 1).
    InOrder,
    /// This many ticks were skipped.
    Gap(u64),
    /// Not above the previous `seq`: a duplicate or a reordering.
    Regressed,
}

/// Last `seq` per symbol on one connection. Before any tick or snapshot of
/// a symbol its last `seq` is 0: the server sends a snapshot of every
/// symbol that has traded before its first tick, so a symbol without one
/// must start at seq 1, and anything else is a gap.
pub(super) struct SeqTracker {
    last: Vec<u64>,
}

impl SeqTracker {
    pub(super) fn new(symbols: usize) -> Self {
        SeqTracker {
            last: vec![0; symbols],
        }
    }

    /// A snapshot sets the base the next tick must follow.
    pub(super) fn snapshot(&mut self, symbol: SymbolId, seq: u64) {
        self.last[symbol as usize] = seq;
    }

    pub(super) fn tick(&mut self, symbol: SymbolId, seq: u64) -> Seen {
        let last = &mut self.last[symbol as usize];
        let seen = if seq == *last + 1 {
            Seen::InOrder
        } else if seq > *last {
            Seen::Gap(seq - *last - 1)
        } else {
            return Seen::Regressed;
        };
        *last = seq;
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Delivery;
    use tickcast::fanout::encode::{tick_frame, TickKind};
    use tickcast::tick::Tick;
    use tickcast::wire::frame::{close_frame, text_frame};

    fn tick(symbol: SymbolId, seq: u64, ts: u64) -> Tick {
        Tick {
            symbol,
            seq,
            px: "187.25".parse().unwrap(),
            bid: "187.24".parse().unwrap(),
            ask: "187.26".parse().unwrap(),
            size: 300,
            ts,
        }
    }

    #[test]
    fn counts_missing_ticks_per_symbol() {
        let mut seqs = SeqTracker::new(3);
        seqs.snapshot(0, 10);
        assert_eq!(seqs.tick(0, 11), Seen::InOrder);
        assert_eq!(seqs.tick(0, 15), Seen::Gap(3));
        assert_eq!(seqs.tick(0, 16), Seen::InOrder);
        // Another symbol keeps its own count; no snapshot means from 1.
        assert_eq!(seqs.tick(1, 1), Seen::InOrder);
        assert_eq!(seqs.tick(2, 5), Seen::Gap(4));
        assert_eq!(seqs.tick(0, 16), Seen::Regressed);
        assert_eq!(seqs.tick(0, 12), Seen::Regressed);
        // A regression does not move the base.
        assert_eq!(seqs.tick(0, 17), Seen::InOrder);
    }

    /// The delivery ratio's counters, kept the way `Tracker` keeps them,
    /// against the definition in `report::Delivery`: per symbol, produced
    /// = last seq received in the window − the seq seen before it.
    #[test]
    fn delivery_counts_are_exact_at_the_window_edges() {
        let symbols = SymbolIds::new(["A", "B", "C"].map(String::from));
        let fields = TickFields::new();
        let mut tracker = Tracker::new(3);
        let mut totals = Totals::default();
        let mut feed = |tracker: &mut Tracker, kind, symbol, seq, measuring| {
            let name = ["A", "B", "C"][symbol as usize];
            let frame = tick_frame(kind, name, &tick(symbol, seq, 1_000));
            let reading = Reading {
                symbols: &symbols,
                fields: &fields,
                measuring,
            };
            let (used, event) = tracker.frames(&frame, 2_000_000, &reading, &mut totals);
            assert_eq!((used, event), (frame.len(), None));
        };
        // Warm-up: snapshots and ticks before the window count nowhere.
        feed(&mut tracker, TickKind::Snapshot, 0, 10, false);
        feed(&mut tracker, TickKind::Tick, 0, 11, false);
        feed(&mut tracker, TickKind::Tick, 0, 12, false);
        feed(&mut tracker, TickKind::Snapshot, 1, 100, false);
        // The window. Symbol 0: base 12, a gap of 3, a duplicate, last 19.
        for seq in [13, 17, 18, 18, 19] {
            feed(&mut tracker, TickKind::Tick, 0, seq, true);
        }
        // Symbol 1: base is its snapshot (100), every tick arrives.
        for seq in 101..=110 {
            feed(&mut tracker, TickKind::Tick, 1, seq, true);
        }
        // Symbol 2 had no snapshot (never traded): base 0, first gap of 1.
        for seq in [2, 3] {
            feed(&mut tracker, TickKind::Tick, 2, seq, true);
        }
        let never_traded = 0;
        let produced_by_definition = (19 - 12) + (110 - 100) + (3 - never_traded);
        let delivered_new_ticks = 4 + 10 + 2;
        let delivery = Delivery::from_counts(totals.ticks, &totals.gaps);
        assert_eq!(delivery.produced, produced_by_definition);
        assert_eq!(delivery.delivered, delivered_new_ticks);
        assert_eq!(delivery.percent, Some(100.0 * 16.0 / 20.0));
        assert_eq!(totals.gaps.clients_with_gaps, 1);
        assert_eq!(totals.gaps.seq_regressions, 1);
        // Latency from the tick's own ts: 2 ms − 1 µs, recorded in µs.
        assert_eq!(totals.latency_us.len(), 17);
        assert_eq!(totals.latency_us.max(), 1_999);
    }

    #[test]
    fn stops_at_pings_and_closes_and_refuses_broken_streams() {
        let symbols = SymbolIds::new(["A"].map(String::from));
        let fields = TickFields::new();
        let reading = Reading {
            symbols: &symbols,
            fields: &fields,
            measuring: true,
        };
        let mut stream = text_frame(br#"{"type":"subscribed","symbols":["A"]}"#).to_vec();
        let ping_at = stream.len();
        stream.extend_from_slice(&[0x89, 0x02, b'h', b'i']);
        stream.extend_from_slice(&close_frame(1008, "slow consumer"));
        stream.extend_from_slice(&text_frame(b"{}")[..1]);
        let mut tracker = Tracker::new(1);
        let mut totals = Totals::default();
        let (used, event) = tracker.frames(&stream, 0, &reading, &mut totals);
        assert_eq!(used, ping_at + 4);
        assert_eq!(event, Some(Event::Ping(ping_at + 2..ping_at + 4)));
        assert_eq!(totals.subscribed, 1);
        let (more, event) = tracker.frames(&stream[used..], 0, &reading, &mut totals);
        assert_eq!(event, Some(Event::Close("1008 slow consumer".into())));
        assert_eq!(used + more, stream.len() - 1);
        let masked = [0x81, 0x81, 1, 2, 3, 4, 0];
        let (_, event) = tracker.frames(&masked, 0, &reading, &mut totals);
        assert_eq!(event, Some(Event::Broken));
    }
}
