//! The symbol registry: the names a server carries, each with a dense
//! [`SymbolId`] and a price precision, shared by every stage.
//!
//! The universe is either **fixed** at start-up (the simulator's tickers,
//! or `--symbols-file`), or **learned**: with an external feed and no
//! symbols file, the first tick of an unseen name adds it, up to
//! `--max-symbols`. Ids are handed out in order and never reused, so the
//! stages that keep per-symbol state (the fan-out, the feeds) grow their
//! tables when they first see a new id.
//!
//! Only the feed adds names; readers (subscribe requests, `/symbols`, the
//! fan-out meeting a new id) take a read lock, and the fan-out keeps its
//! own copy of each name, so the per-tick path takes no lock.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use crate::price::DECIMALS;

/// Index of a symbol in the [`Symbols`] registry; dense, from 0.
pub type SymbolId = u32;

/// Longest symbol name, in bytes.
pub const MAX_NAME_LEN: usize = 48;

/// Default of `--max-symbols`.
pub const DEFAULT_MAX_SYMBOLS: u32 = 100_000;

/// Whether `name` may be a symbol: 1 to [`MAX_NAME_LEN`] bytes of ASCII
/// letters, digits, `.` `-` `/` `:` `=` `_` and space, not starting or
/// ending with `.` or a space and without `..` — what venues use
/// (`BRK.B`, `BTC-USD`, `EUR/USD`, `ESZ6`, `ES=F`, `SPY 261218C00600000`)
/// and nothing that would need escaping in JSON or break a NATS subject.
/// The error says what is wrong, in words.
pub fn check_name(name: &str) -> Result<(), String> {
    let shown = crate::protocol::truncate(name, 24);
    if name.is_empty() {
        return Err("a symbol name is empty; name it, e.g. \"BTC-USD\"".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "the symbol name {shown:?}… is {} bytes long, the limit is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if name == "*" {
        return Err("\"*\" means every symbol and cannot be a symbol's name".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || ".-/:=_ ".contains(c)))
    {
        return Err(format!(
            "the symbol name {shown:?} contains {bad:?}; names may hold letters, digits, \
             '.', '-', '/', ':', '=', '_' and spaces"
        ));
    }
    let edge = |c: char| c == '.' || c == ' ';
    if name.starts_with(edge) || name.ends_with(edge) || name.contains("..") {
        return Err(format!(
            "the symbol name {shown:?} starts or ends with '.' or a space, or holds \"..\"; \
             neither is allowed"
        ));
    }
    Ok(())
}

/// Reads a symbols file (`--symbols-file`): one symbol per line, either
/// its name alone (full precision, [`DECIMALS`] decimals) or the name, a
/// comma and the decimals its prices have (`EURUSD,5`, `AAPL,2`); blank
/// lines and lines starting with `#` are skipped. Errors name the line.
pub fn parse_list(text: &str) -> Result<Vec<(String, u8)>, String> {
    let mut symbols = Vec::new();
    let mut lines: HashMap<String, usize> = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |why: String| format!("line {}: {why}", number + 1);
        let (name, decimals) = match line.split_once(',') {
            None => (line, DECIMALS),
            Some((name, decimals)) => {
                let decimals = decimals.trim();
                let decimals = decimals
                    .parse::<u8>()
                    .ok()
                    .filter(|&d| d <= DECIMALS)
                    .ok_or_else(|| {
                        at(format!(
                            "{decimals:?} is not a number of decimals from 0 to {DECIMALS}; \
                             write NAME or NAME,DECIMALS (e.g. EURUSD,5)"
                        ))
                    })?;
                (name.trim(), decimals)
            }
        };
        check_name(name).map_err(at)?;
        if let Some(first) = lines.insert(name.to_string(), number + 1) {
            return Err(at(format!("{name} is listed already, on line {first}")));
        }
        symbols.push((name.to_string(), decimals));
    }
    if symbols.is_empty() {
        return Err("it lists no symbol; write one per line, NAME or NAME,DECIMALS".into());
    }
    Ok(symbols)
}

/// Why a name could not be added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The universe is fixed and does not hold the name.
    NotCarried,
    /// The registry holds `--max-symbols` names already.
    Full(usize),
    /// The name breaks the rules of [`check_name`].
    BadName(String),
}

#[derive(Debug, Default)]
struct Table {
    names: Vec<Arc<str>>,
    decimals: Vec<u8>,
    by_name: HashMap<Arc<str>, SymbolId>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Symbols {
    table: RwLock<Table>,
    /// Whether unseen names are added (else the universe is fixed).
    learns: bool,
    /// Most names the registry may hold.
    max: usize,
}

impl Symbols {
    /// A fixed universe of distinct `(name, decimals)` symbols, in id
    /// order. Refuses a bad name, a duplicate or a precision past
    /// [`DECIMALS`], in words.
    pub fn fixed(symbols: impl IntoIterator<Item = (String, u8)>) -> Result<Symbols, String> {
        let registry = Symbols {
            table: RwLock::default(),
            learns: false,
            max: usize::MAX,
        };
        for (name, decimals) in symbols {
            check_name(&name)?;
            if decimals > DECIMALS {
                return Err(format!(
                    "{name} has {decimals} decimals; prices have at most {DECIMALS}"
                ));
            }
            let mut table = registry.write();
            if table.by_name.contains_key(name.as_str()) {
                return Err(format!("{name} is listed twice"));
            }
            insert(&mut table, &name, decimals);
        }
        Ok(registry)
    }

    /// An empty universe that learns each unseen name from the feed, at
    /// full precision, up to `max` names.
    pub fn learned(max: usize) -> Symbols {
        Symbols {
            table: RwLock::default(),
            learns: true,
            max,
        }
    }

    /// Whether unseen names are added.
    pub fn learns(&self) -> bool {
        self.learns
    }

    /// Most names the registry may hold.
    pub fn max(&self) -> usize {
        self.max
    }

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        // A panic elsewhere leaves plain data: still usable.
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The id of `name`, if the server carries it.
    pub fn id(&self, name: &str) -> Option<SymbolId> {
        self.read().by_name.get(name).copied()
    }

    /// The name of `id`. Panics on an id the registry did not give out.
    pub fn name(&self, id: SymbolId) -> Arc<str> {
        self.read().names[id as usize].clone()
    }

    /// Decimals a price of `id` may have. Panics on an unknown id.
    pub fn decimals(&self, id: SymbolId) -> u8 {
        self.read().decimals[id as usize]
    }

    /// Every name, in id order.
    pub fn names(&self) -> Vec<Arc<str>> {
        self.read().names.clone()
    }

    /// The names of ids `start` up to (not including) `end`, those that
    /// exist.
    pub fn names_between(&self, start: usize, end: usize) -> Vec<Arc<str>> {
        let table = self.read();
        let end = end.min(table.names.len());
        table.names.get(start..end).unwrap_or_default().to_vec()
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.read().names.len()
    }

    /// True when the registry holds no symbol.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id of `name`, adding it when the universe learns. Returns
    /// whether it was added just now.
    pub fn learn(&self, name: &str) -> Result<(SymbolId, bool), Refused> {
        if let Some(id) = self.id(name) {
            return Ok((id, false));
        }
        if !self.learns {
            return Err(Refused::NotCarried);
        }
        check_name(name).map_err(Refused::BadName)?;
        // A full registry is refused under the read lock: a feed sending
        // many new names must not keep the write lock from everyone else.
        if self.len() >= self.max {
            return Err(Refused::Full(self.max));
        }
        let mut table = self.write();
        if let Some(&id) = table.by_name.get(name) {
            return Ok((id, false));
        }
        if table.names.len() >= self.max {
            return Err(Refused::Full(self.max));
        }
        Ok((insert(&mut table, name, DECIMALS), true))
    }
}

fn insert(table: &mut Table, name: &str, decimals: u8) -> SymbolId {
    let id = table.names.len() as SymbolId;
    let name: Arc<str> = Arc::from(name);
    table.names.push(name.clone());
    table.decimals.push(decimals);
    table.by_name.insert(name, id);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn venue_names_pass_and_names_that_break_json_or_subjects_do_not() {
        for good in [
            "AAPL",
            "BRK.B",
            "BTC-USD",
            "EUR/USD",
            "ESZ6",
            "ES=F",
            "SPY 261218C00600000",
            "NQ:CME",
            "a_b",
        ] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "*",
            "A\"B",
            "A\\B",
            "A\nB",
            "AAPL>",
            "ticks.*",
            ".A",
            "A.",
            "A..B",
            " A",
            "A ",
            "Ünï",
            &"X".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_learned_universe_adds_names_in_order_up_to_its_limit() {
        let symbols = Symbols::learned(2);
        assert_eq!(symbols.learn("BTC-USD"), Ok((0, true)));
        assert_eq!(symbols.learn("BTC-USD"), Ok((0, false)));
        assert!(matches!(symbols.learn("A\"B"), Err(Refused::BadName(_))));
        assert_eq!(symbols.learn("EURUSD"), Ok((1, true)));
        assert_eq!(symbols.learn("ESZ6"), Err(Refused::Full(2)));
        assert_eq!(symbols.len(), 2);
        assert_eq!(&*symbols.name(1), "EURUSD");
        assert_eq!(symbols.decimals(1), DECIMALS);
    }

    #[test]
    fn a_symbols_file_lists_names_and_optional_decimals() {
        let text = "# majors\nEURUSD,5\n\nBTC-USD\n SPY 261218C00600000 , 2 \n";
        assert_eq!(
            parse_list(text).unwrap(),
            [
                ("EURUSD".to_string(), 5),
                ("BTC-USD".to_string(), DECIMALS),
                ("SPY 261218C00600000".to_string(), 2)
            ]
        );
        let err = parse_list("AAPL\nEURUSD,9\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        let err = parse_list("AAPL\nA\"B\n").unwrap_err();
        assert!(
            err.starts_with("line 2:") && err.contains("contains"),
            "{err}"
        );
        assert!(parse_list("# nothing\n").is_err());
        let err = parse_list("AAPL\nMSFT\nAAPL,2\n").unwrap_err();
        assert!(err.contains("line 3") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn a_fixed_universe_refuses_unseen_names() {
        let symbols = Symbols::fixed([("AAPL".to_string(), 2), ("EURUSD".to_string(), 5)]).unwrap();
        assert_eq!(symbols.id("EURUSD"), Some(1));
        assert_eq!(symbols.decimals(1), 5);
        assert_eq!(symbols.learn("AAPL"), Ok((0, false)));
        assert_eq!(symbols.learn("TSLA"), Err(Refused::NotCarried));
        assert!(Symbols::fixed([("A".to_string(), 2), ("A".to_string(), 2)]).is_err());
        assert!(Symbols::fixed([("A".to_string(), 9)]).is_err());
    }
}
