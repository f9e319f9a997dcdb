//! What every external feed (`/ingest`, NATS) does with a tick it
//! received, in one place so the feeds cannot drift: read the prices
//! exactly, find the symbol (or learn it), check the seq and the symbol's
//! precision, publish into the ring, count, and wake the shards once per
//! message.
//!
//! A feed decodes its own wire form into an [`Incoming`] tick (a JSON
//! object through [`JsonTick`], or NATS' compact payload) and hands it to
//! its [`Intake`]; a refusal comes back as a [`ProtocolError`] in words,
//! which `/ingest` replies with and NATS logs; both count it
//! (`tickcast_feed_bad_ticks_total`, `…_unknown_symbols_total`,
//! `…_symbols_refused_total`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::Wake;
use crate::price::Price;
use crate::protocol::{truncate, ErrorCode, ProtocolError};
use crate::ring::Producer;
use crate::stats::Stats;
use crate::symbol::{Refused, Symbols};
use crate::tick::{SymbolId, Tick};

/// One tick as an external feed received it, prices already exact.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Incoming<'a> {
    /// The symbol's name.
    pub sym: &'a str,
    /// The publisher's per-symbol sequence number, from 1.
    pub seq: u64,
    /// Last trade price.
    pub px: Price,
    /// Best bid.
    pub bid: Price,
    /// Best ask.
    pub ask: Price,
    /// Size of the last trade.
    pub size: u32,
    /// The publisher's time, in nanoseconds since the Unix epoch.
    pub ts: u64,
}

impl Incoming<'_> {
    /// The tick, as symbol `symbol` of the registry.
    pub fn to_tick(&self, symbol: SymbolId) -> Tick {
        Tick {
            symbol,
            seq: self.seq,
            px: self.px,
            bid: self.bid,
            ask: self.ask,
            size: self.size,
            ts: self.ts,
        }
    }
}

/// One tick as JSON, the shape clients receive (`type` and any other
/// field are ignored). Prices may be JSON numbers or strings in number
/// syntax; they are kept as their text until [`JsonTick::incoming`]
/// reads them exactly.
#[derive(Debug, Deserialize)]
pub struct JsonTick<'a> {
    /// The symbol's name; NATS may leave it to the subject.
    #[serde(borrow, default)]
    pub sym: Option<Cow<'a, str>>,
    /// The publisher's per-symbol sequence number.
    pub seq: u64,
    /// Last trade price.
    #[serde(borrow)]
    pub px: &'a RawValue,
    /// Best bid.
    #[serde(borrow)]
    pub bid: &'a RawValue,
    /// Best ask.
    #[serde(borrow)]
    pub ask: &'a RawValue,
    /// Size of the last trade.
    pub size: u32,
    /// The publisher's time, in nanoseconds since the Unix epoch.
    pub ts: u64,
}

impl<'a> JsonTick<'a> {
    /// The tick with its prices read exactly, for symbol `sym` (its own
    /// `sym`, or the one the caller supplies). A price that is not an
    /// exact decimal within range is refused with `bad_tick`, naming the
    /// field and the value.
    pub fn incoming<'s>(&'s self, sym: &'s str) -> Result<Incoming<'s>, ProtocolError> {
        let price = |field: &str, raw: &RawValue| {
            Price::from_json(raw.get()).map_err(|err| {
                ProtocolError::new(
                    ErrorCode::BadTick,
                    format!("{field} of {} seq {}: {err}", shown(sym), self.seq),
                )
            })
        };
        Ok(Incoming {
            sym,
            seq: self.seq,
            px: price("px", self.px)?,
            bid: price("bid", self.bid)?,
            ask: price("ask", self.ask)?,
            size: self.size,
            ts: self.ts,
        })
    }
}

/// A symbol name as an error shows it: quoted, shortened.
fn shown(sym: &str) -> String {
    format!("{:?}", truncate(sym, 48))
}

/// Per-symbol state an external feed keeps across messages (and across
/// publisher connections).
#[derive(Clone, Copy, Debug)]
struct Known {
    /// Last `seq` published (0: none yet).
    last_seq: u64,
    /// Decimals its prices may have.
    decimals: u8,
}

/// Where an external feed's ticks enter the ring. See the module docs.
#[derive(Debug)]
pub struct Intake {
    producer: Producer<Tick>,
    symbols: Arc<Symbols>,
    /// The ids this feed has met, by name: the feed is the registry's only
    /// writer, so this copy is never stale, and the hot path takes no lock.
    ids: HashMap<Box<str>, SymbolId>,
    known: Vec<Known>,
    stats: Arc<Stats>,
    wake: Wake,
    /// Ticks published since the last [`Intake::finish`].
    published: u64,
}

impl Intake {
    /// An intake writing into `producer`, waking `wake` once per message.
    pub fn new(
        producer: Producer<Tick>,
        symbols: Arc<Symbols>,
        stats: Arc<Stats>,
        wake: Wake,
    ) -> Self {
        Intake {
            producer,
            symbols,
            ids: HashMap::new(),
            known: Vec::new(),
            stats,
            wake,
            published: 0,
        }
    }

    /// Publishes `tick`, or says why not (and counts the refusal).
    pub fn accept(&mut self, tick: &Incoming<'_>) -> Result<(), ProtocolError> {
        let accepted = self.check(tick);
        match &accepted {
            Ok(symbol) => {
                let symbol = *symbol;
                self.known[symbol as usize].last_seq = tick.seq;
                self.producer.publish(tick.to_tick(symbol));
                self.published += 1;
            }
            Err(err) if err.code == ErrorCode::UnknownSymbol => {
                Stats::add(&self.stats.feed_unknown_symbols, 1);
            }
            Err(err) if err.code == ErrorCode::SymbolLimit => {}
            Err(_) => Stats::add(&self.stats.feed_bad_ticks, 1),
        }
        accepted.map(|_| ())
    }

    /// Counts the ticks published since the last call and wakes the
    /// fan-out once for all of them.
    pub fn finish(&mut self) {
        if self.published > 0 {
            Stats::add(&self.stats.ticks_ingested, self.published);
            self.published = 0;
            self.wake.wake();
        }
    }

    /// The symbol of `tick` if it may be published.
    fn check(&mut self, tick: &Incoming<'_>) -> Result<SymbolId, ProtocolError> {
        let bad = |message: String| ProtocolError::new(ErrorCode::BadTick, message);
        if tick.seq == 0 {
            return Err(bad(format!(
                "seq 0 of {}: seqs start at 1 and increase with each tick",
                shown(tick.sym)
            )));
        }
        let symbol = self.symbol(tick.sym)?;
        let known = self.known[symbol as usize];
        if tick.seq <= known.last_seq {
            return Err(bad(format!(
                "seq {} of {} is not after the last published seq {}; each symbol's seq must increase",
                tick.seq,
                shown(tick.sym),
                known.last_seq
            )));
        }
        for (field, price) in [("px", tick.px), ("bid", tick.bid), ("ask", tick.ask)] {
            if !price.fits(known.decimals) {
                return Err(bad(format!(
                    "{field} of {} seq {} is {price}, which has more than the {} decimals \
                     of its tick size; the server never rounds a price",
                    shown(tick.sym),
                    tick.seq,
                    known.decimals
                )));
            }
        }
        Ok(symbol)
    }

    /// The id of `name`, learning it when the registry learns.
    fn symbol(&mut self, name: &str) -> Result<SymbolId, ProtocolError> {
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        let (id, _new) = self.symbols.learn(name).map_err(|refused| match refused {
            Refused::NotCarried => ProtocolError::new(
                ErrorCode::UnknownSymbol,
                format!(
                    "unknown symbol {}; this server carries a fixed list of symbols \
                     (--symbols-file, or the simulator's); add it there and restart",
                    shown(name)
                ),
            ),
            Refused::BadName(why) => ProtocolError::new(ErrorCode::BadTick, why),
            Refused::Full(max) => {
                let refused = Stats::add_returning(&self.stats.feed_symbols_refused, 1);
                // Said once, then every 10,000th time: a feed with too many
                // symbols would otherwise fill the log.
                if refused % 10_000 == 1 {
                    tracing::warn!(
                        symbol = truncate(name, 48),
                        refused,
                        "the server carries --max-symbols {max} symbols already and refused \
                         a new one (its ticks are dropped); raise --max-symbols"
                    );
                }
                ProtocolError::new(
                    ErrorCode::SymbolLimit,
                    format!(
                        "{} is a new symbol, and the server carries its limit of {max} already \
                         (--max-symbols); its ticks are refused",
                        shown(name)
                    ),
                )
            }
        })?;
        let slot = id as usize;
        if self.known.len() <= slot {
            let unmet = Known {
                last_seq: 0,
                decimals: crate::price::DECIMALS,
            };
            self.known.resize(slot + 1, unmet);
        }
        self.known[slot].decimals = self.symbols.decimals(id);
        self.ids.insert(name.into(), id);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn intake(symbols: Symbols) -> (Intake, crate::ring::Cursor<Tick>) {
        let producer = crate::ring::channel::<Tick>(64);
        let cursor = producer.cursor();
        let intake = Intake::new(
            producer,
            Arc::new(symbols),
            Arc::new(Stats::default()),
            Wake::nobody(),
        );
        (intake, cursor)
    }

    fn tick<'a>(sym: &'a str, seq: u64, px: &str) -> Incoming<'a> {
        let px: Price = px.parse().unwrap();
        Incoming {
            sym,
            seq,
            px,
            bid: px,
            ask: px,
            size: 1,
            ts: 1,
        }
    }

    #[test]
    fn learns_symbols_checks_seqs_and_refuses_past_the_limit() {
        let (mut intake, mut cursor) = intake(Symbols::learned(2));
        assert_eq!(intake.accept(&tick("BTC-USD", 1, "64123.5")), Ok(()));
        assert_eq!(intake.accept(&tick("EURUSD", 1, "1.08435")), Ok(()));
        let stale = intake.accept(&tick("BTC-USD", 1, "64123.5")).unwrap_err();
        assert_eq!(stale.code, ErrorCode::BadTick);
        assert!(stale.message.contains("not after"), "{}", stale.message);
        let full = intake.accept(&tick("ESZ6", 1, "6000.25")).unwrap_err();
        assert_eq!(full.code, ErrorCode::SymbolLimit);
        assert!(full.message.contains("--max-symbols"), "{}", full.message);
        let bad = intake.accept(&tick("A\"B", 1, "1")).unwrap_err();
        assert_eq!(bad.code, ErrorCode::BadTick);
        intake.finish();
        assert_eq!(
            intake
                .stats
                .feed_symbols_refused
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(
            intake
                .stats
                .ticks_ingested
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        let mut seen = Vec::new();
        while let crate::ring::Read::Item(t) = cursor.try_read() {
            seen.push((t.symbol, t.px.to_string()));
        }
        assert_eq!(seen, [(0, "64123.5".into()), (1, "1.08435".into())]);
    }

    #[test]
    fn a_fixed_universe_refuses_unknown_names_and_prices_past_the_tick_size() {
        let symbols = Symbols::fixed([("EURUSD".to_string(), 5)]).unwrap();
        let (mut intake, _cursor) = intake(symbols);
        assert_eq!(intake.accept(&tick("EURUSD", 1, "1.08435")), Ok(()));
        let precise = intake.accept(&tick("EURUSD", 2, "1.084351")).unwrap_err();
        assert_eq!(precise.code, ErrorCode::BadTick);
        assert!(
            precise.message.contains("px") && precise.message.contains("1.084351"),
            "{}",
            precise.message
        );
        let unknown = intake.accept(&tick("BTC-USD", 1, "1")).unwrap_err();
        assert_eq!(unknown.code, ErrorCode::UnknownSymbol);
        let zero = intake.accept(&tick("EURUSD", 0, "1")).unwrap_err();
        assert!(zero.message.contains("start at 1"), "{}", zero.message);
    }

    #[test]
    fn json_prices_are_read_exactly_and_refusals_name_the_field() {
        let text =
            r#"{"sym":"BTC-USD","seq":3,"px":64123.5,"bid":"64123.49","ask":1e-4,"size":2,"ts":9}"#;
        let json: JsonTick<'_> = serde_json::from_str(text).unwrap();
        let incoming = json.incoming("BTC-USD").unwrap();
        assert_eq!(incoming.px.to_string(), "64123.5");
        assert_eq!(incoming.bid.to_string(), "64123.49");
        assert_eq!(incoming.ask.to_string(), "0.0001");
        let text = r#"{"sym":"X","seq":3,"px":1,"bid":1.000000001,"ask":1,"size":2,"ts":9}"#;
        let json: JsonTick<'_> = serde_json::from_str(text).unwrap();
        let err = json.incoming("X").unwrap_err();
        assert_eq!(err.code, ErrorCode::BadTick);
        assert!(
            err.message.contains("bid") && err.message.contains("1.000000001"),
            "{}",
            err.message
        );
    }
}
