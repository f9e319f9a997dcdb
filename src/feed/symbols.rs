//! The symbol universe: real US tickers at plausible prices first, then
//! generated ticker-like names when more symbols are asked for.

use std::collections::HashSet;

/// Real US tickers with a plausible reference price, most traded first.
const LISTED: &[(&str, f64)] = &[
    ("AAPL", 187.20),
    ("MSFT", 415.50),
    ("NVDA", 121.40),
    ("AMZN", 183.10),
    ("GOOGL", 171.90),
    ("META", 502.30),
    ("TSLA", 248.70),
    ("BRK.B", 412.80),
    ("AVGO", 162.40),
    ("JPM", 205.60),
    ("LLY", 790.10),
    ("V", 275.30),
    ("UNH", 512.40),
    ("XOM", 117.80),
    ("MA", 468.20),
    ("JNJ", 155.90),
    ("PG", 167.40),
    ("HD", 372.50),
    ("COST", 842.60),
    ("MRK", 126.70),
    ("ABBV", 171.30),
    ("CVX", 158.20),
    ("CRM", 272.80),
    ("BAC", 39.70),
    ("NFLX", 648.90),
    ("AMD", 158.60),
    ("PEP", 171.20),
    ("KO", 62.80),
    ("TMO", 572.10),
    ("WMT", 68.40),
    ("ADBE", 521.70),
    ("LIN", 452.30),
    ("MCD", 265.40),
    ("CSCO", 47.90),
    ("ACN", 318.60),
    ("ABT", 106.20),
    ("ORCL", 138.40),
    ("INTC", 30.80),
    ("DIS", 101.50),
    ("WFC", 59.30),
    ("QCOM", 201.70),
    ("INTU", 641.20),
    ("CMCSA", 38.60),
    ("VZ", 40.90),
    ("IBM", 183.40),
    ("TXN", 196.80),
    ("AMGN", 312.50),
    ("PFE", 28.70),
    ("NKE", 94.10),
    ("CAT", 339.20),
    ("GE", 162.80),
    ("NOW", 761.40),
    ("UBER", 68.30),
    ("SPGI", 438.70),
    ("GS", 458.90),
    ("HON", 202.10),
    ("UNP", 229.40),
    ("T", 17.40),
    ("LOW", 226.80),
    ("BA", 182.30),
    ("AMAT", 238.60),
    ("MS", 97.50),
    ("BKNG", 3867.00),
    ("ISRG", 402.90),
    ("RTX", 102.60),
    ("PLD", 107.30),
    ("SBUX", 79.20),
    ("BLK", 786.40),
    ("DE", 386.10),
    ("MDT", 82.50),
    ("ELV", 535.80),
    ("GILD", 65.90),
    ("ADP", 245.70),
    ("LMT", 461.20),
    ("C", 62.40),
    ("SCHW", 74.10),
    ("MDLZ", 68.70),
    ("TJX", 101.30),
    ("ADI", 229.80),
    ("CVS", 59.60),
    ("REGN", 1012.40),
    ("VRTX", 468.90),
    ("MMC", 208.50),
    ("PANW", 318.20),
    ("CB", 261.70),
    ("ETN", 331.60),
    ("BMY", 41.80),
    ("SO", 78.90),
    ("MU", 132.40),
    ("LRCX", 941.30),
    ("PYPL", 63.20),
    ("ZTS", 171.40),
    ("SNPS", 584.60),
    ("DUK", 101.20),
    ("KLAC", 801.50),
    ("CME", 198.30),
    ("SHOP", 66.10),
    ("ABNB", 148.70),
    ("PLTR", 24.60),
    ("COIN", 226.40),
];

/// A symbol's name and the price its simulation starts from.
#[derive(Clone, Debug, PartialEq)]
pub struct SymbolSpec {
    /// Ticker, e.g. `AAPL` (any name [`crate::symbol::check_name`] allows).
    pub name: String,
    /// Starting mid price in dollars.
    pub start_price: f64,
    /// Decimals of its tick size: 2 (cents) for US equities.
    pub decimals: u8,
}

/// Tick size of the simulated US equities: one cent.
pub const EQUITY_DECIMALS: u8 = 2;

/// The first `count` symbols: the listed tickers in order, then generated
/// names (four letters, consonant-vowel-consonant-consonant, e.g. `KOLT`)
/// with a price derived from the name, so the list depends on `count` only.
pub fn universe(count: usize) -> Vec<SymbolSpec> {
    let mut specs: Vec<SymbolSpec> = LISTED
        .iter()
        .take(count)
        .map(|&(name, price)| SymbolSpec {
            name: name.to_string(),
            start_price: price,
            decimals: EQUITY_DECIMALS,
        })
        .collect();
    let mut taken: HashSet<String> = specs.iter().map(|s| s.name.clone()).collect();
    let mut n: u64 = 0;
    while specs.len() < count {
        let name = generated_name(n);
        n += 1;
        if taken.insert(name.clone()) {
            // A price between $5 and $500, log-uniform, fixed by the name.
            let unit = (splitmix(n) >> 11) as f64 / (1u64 << 53) as f64;
            let start_price = (5.0f64.ln() + unit * (500.0f64 / 5.0).ln()).exp();
            specs.push(SymbolSpec {
                name,
                start_price: (start_price * 100.0).round() / 100.0,
                decimals: EQUITY_DECIMALS,
            });
        }
    }
    specs
}

/// The simulator's view of a list of symbols (`--symbols-file`): each
/// with its own precision, starting from its listed price when it is a
/// listed ticker and from a price fixed by its name otherwise.
pub fn simulated(symbols: &[(String, u8)]) -> Vec<SymbolSpec> {
    symbols
        .iter()
        .map(|(name, decimals)| {
            let listed = LISTED.iter().find(|(listed, _)| listed == name);
            let start_price = listed.map_or_else(
                || {
                    let seed = name.bytes().fold(0u64, |h, b| splitmix(h ^ u64::from(b)));
                    let unit = (seed >> 11) as f64 / (1u64 << 53) as f64;
                    (5.0f64.ln() + unit * (500.0f64 / 5.0).ln()).exp()
                },
                |&(_, price)| price,
            );
            SymbolSpec {
                name: name.clone(),
                start_price,
                decimals: *decimals,
            }
        })
        .collect()
}

const CONSONANTS: &[u8] = b"BCDFGHJKLMNPRSTVWXZ";
const VOWELS: &[u8] = b"AEIOU";

/// The `n`th generated name; names repeat with a fifth letter once the
/// 4-letter space (~34,000 names) is used up, so any count is reachable.
fn generated_name(n: u64) -> String {
    let mixed = splitmix(n);
    let c = CONSONANTS.len() as u64;
    let v = VOWELS.len() as u64;
    let mut x = mixed;
    let mut name = String::with_capacity(5);
    for alphabet in [CONSONANTS, VOWELS, CONSONANTS, CONSONANTS] {
        let len = alphabet.len() as u64;
        name.push(alphabet[(x % len) as usize] as char);
        x /= len;
    }
    let space = c * v * c * c;
    if n >= space / 2 {
        // Past half the space collisions get frequent: widen the name.
        name.push(VOWELS[((n / (space / 2)) % v) as usize] as char);
        name.push(CONSONANTS[(n % c) as usize] as char);
    }
    name
}

/// SplitMix64: a fixed, well-mixed function of `n`.
fn splitmix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_tickers_come_first() {
        let u = universe(3);
        let names: Vec<_> = u.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["AAPL", "MSFT", "NVDA"]);
    }

    #[test]
    fn large_universes_are_distinct_and_plausible() {
        let u = universe(50_000);
        assert_eq!(u.len(), 50_000);
        let distinct: HashSet<_> = u.iter().map(|s| &s.name).collect();
        assert_eq!(distinct.len(), u.len());
        for spec in &u {
            assert!(
                spec.start_price >= 5.0 && spec.start_price <= 4000.0,
                "{spec:?}"
            );
            assert!(spec
                .name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'.'));
        }
    }

    #[test]
    fn universe_is_a_prefix_of_a_larger_one() {
        assert_eq!(universe(150)[..], universe(300)[..150]);
    }
}
