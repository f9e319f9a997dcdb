//! `Price`: an exact decimal held as a scaled integer.
//!
//! Every price the server handles (the simulator's, a publisher's, the
//! ring's, the history's, the wire's) is an `i64` count of 10⁻⁸ units:
//! 187.67 is `18_767_000_000`. Prices enter from text ([`Price::parse`]:
//! JSON number syntax, as a JSON number or a JSON string) and leave as
//! text ([`Price::write`]: the shortest decimal that is exactly the
//! value, `187.67`, `0.0001`, `64123.5`, `-3.25`), so no binary-float
//! artefact can appear, and a price that cannot be held exactly is
//! refused rather than rounded.

use std::fmt;

/// Decimals a price may have.
pub const DECIMALS: u8 = 8;

/// Units in 1: a price's value is its units ÷ `SCALE`.
pub const SCALE: i64 = 100_000_000;

/// Largest magnitude in units: 9,999,999,999.99999999 (ten digits before
/// the point, eight after).
pub const MAX_UNITS: i64 = 999_999_999_999_999_999;

/// Longest text [`Price::parse`] reads; a decimal longer than this is
/// refused before any digit is looked at.
const MAX_TEXT: usize = 64;

/// Largest exponent magnitude [`Price::parse`] keeps; larger ones are
/// clamped to it, which changes no outcome (at most 64 digits of text).
const MAX_EXPONENT: i64 = 1_000;

/// A price: an exact decimal with at most [`DECIMALS`] decimals and a
/// magnitude under 10¹⁰. Negative prices are allowed (spreads, some
/// futures and power markets go below zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(i64);

/// Why a text is not a price, in words that name the text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// Not a decimal number at all.
    #[error("{0:?} is not a decimal number; send a price like 187.25 or \"187.25\"")]
    NotADecimal(String),
    /// A decimal with more decimals than a price (or its symbol) may have.
    #[error("{text:?} has more than {decimals} decimals; round it at the source, the server never rounds")]
    TooPrecise {
        /// The text as sent (shortened when long).
        text: String,
        /// Decimals allowed.
        decimals: u8,
    },
    /// Longer than any price needs to be written.
    #[error("{0:?}… is longer than the {MAX_TEXT} characters a price may be written in")]
    TooLong(String),
    /// Too large in magnitude.
    #[error("{0:?} is out of range: a price must be under 10000000000 in magnitude")]
    OutOfRange(String),
}

impl Price {
    /// Zero.
    pub const ZERO: Price = Price(0);

    /// The price of `units` 10⁻⁸ units, if it is within range.
    pub const fn from_units(units: i64) -> Option<Price> {
        if units.unsigned_abs() <= MAX_UNITS as u64 {
            Some(Price(units))
        } else {
            None
        }
    }

    /// The price of `count` steps of `decimals` decimals each (2: cents),
    /// if it is within range.
    pub fn from_scaled(count: i64, decimals: u8) -> Option<Price> {
        let per = unit_of(decimals)?;
        count.checked_mul(per).and_then(Price::from_units)
    }

    /// The value in 10⁻⁸ units.
    pub const fn units(self) -> i64 {
        self.0
    }

    /// Whether the price has at most `decimals` decimals (it is a whole
    /// number of that tick size).
    pub fn fits(self, decimals: u8) -> bool {
        unit_of(decimals).is_some_and(|per| self.0 % per == 0)
    }

    /// The nearest `f64`, for arithmetic where exactness does not matter
    /// (a simulation's random walk, a chart).
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / SCALE as f64
    }

    /// Parses a decimal in JSON number syntax (`187.25`, `-0.5`, `1e-4`,
    /// `64123.50`), exactly. Refused: anything else (`+1`, `.5`, `1.`,
    /// `0x10`, `NaN`), more than [`DECIMALS`] significant decimals, and a
    /// magnitude of 10¹⁰ or more.
    pub fn parse(text: &str) -> Result<Price, PriceError> {
        let shown = || crate::protocol::truncate(text, 32).to_string();
        let bytes = text.as_bytes();
        if bytes.is_empty() {
            return Err(PriceError::NotADecimal(shown()));
        }
        if bytes.len() > MAX_TEXT {
            return Err(PriceError::TooLong(shown()));
        }
        let mut at = 0;
        let negative = bytes[0] == b'-';
        if negative {
            at += 1;
        }
        // Integer part: `0`, or a digit 1-9 followed by digits.
        let int_start = at;
        while at < bytes.len() && bytes[at].is_ascii_digit() {
            at += 1;
        }
        let int_digits = &bytes[int_start..at];
        if int_digits.is_empty() || (int_digits.len() > 1 && int_digits[0] == b'0') {
            return Err(PriceError::NotADecimal(shown()));
        }
        let mut frac_digits: &[u8] = &[];
        if at < bytes.len() && bytes[at] == b'.' {
            at += 1;
            let start = at;
            while at < bytes.len() && bytes[at].is_ascii_digit() {
                at += 1;
            }
            frac_digits = &bytes[start..at];
            if frac_digits.is_empty() {
                return Err(PriceError::NotADecimal(shown()));
            }
        }
        let mut exponent: i64 = 0;
        if at < bytes.len() && (bytes[at] == b'e' || bytes[at] == b'E') {
            at += 1;
            let exp_negative = match bytes.get(at) {
                Some(b'-') => {
                    at += 1;
                    true
                }
                Some(b'+') => {
                    at += 1;
                    false
                }
                _ => false,
            };
            let start = at;
            while at < bytes.len() && bytes[at].is_ascii_digit() {
                // Capped: any exponent past a few dozen makes the price out
                // of range, too precise or zero all the same.
                exponent = (exponent * 10 + i64::from(bytes[at] - b'0')).min(MAX_EXPONENT);
                at += 1;
            }
            if at == start {
                return Err(PriceError::NotADecimal(shown()));
            }
            if exp_negative {
                exponent = -exponent;
            }
        }
        if at != bytes.len() {
            return Err(PriceError::NotADecimal(shown()));
        }
        // The value is `digits` × 10^(exponent − decimals), digits being
        // the integer and fraction parts run together.
        let digits = int_digits.iter().chain(frac_digits);
        let leading_zeros = digits.clone().take_while(|&&d| d == b'0').count();
        let significant: Vec<u8> = digits.skip(leading_zeros).copied().collect();
        let trailing_zeros = significant.iter().rev().take_while(|&&d| d == b'0').count();
        let significant = &significant[..significant.len() - trailing_zeros];
        if significant.is_empty() {
            return Ok(Price::ZERO);
        }
        // Power of ten of the last significant digit, in units.
        let unit_power =
            exponent - frac_digits.len() as i64 + trailing_zeros as i64 + i64::from(DECIMALS);
        if unit_power < 0 {
            return Err(PriceError::TooPrecise {
                text: shown(),
                decimals: DECIMALS,
            });
        }
        // Units have at most 18 digits.
        if significant.len() as i64 + unit_power > 18 {
            return Err(PriceError::OutOfRange(shown()));
        }
        let mut units: i64 = 0;
        for &digit in significant {
            units = units * 10 + i64::from(digit - b'0');
        }
        for _ in 0..unit_power {
            units *= 10;
        }
        Ok(Price(if negative { -units } else { units }))
    }

    /// Like [`Price::parse`], and also refused with
    /// [`PriceError::TooPrecise`] when it has more than `decimals`
    /// decimals (a symbol's tick size).
    pub fn parse_with(text: &str, decimals: u8) -> Result<Price, PriceError> {
        let price = Price::parse(text)?;
        if price.fits(decimals) {
            Ok(price)
        } else {
            Err(PriceError::TooPrecise {
                text: crate::protocol::truncate(text, 32).to_string(),
                decimals,
            })
        }
    }

    /// Appends the shortest decimal that is exactly this price: no
    /// exponent, no trailing zeros, no point for a whole number.
    pub fn write(self, out: &mut impl bytes::BufMut) {
        if self.0 < 0 {
            out.put_u8(b'-');
        }
        let units = self.0.unsigned_abs();
        let whole = units / SCALE as u64;
        let mut fraction = units % SCALE as u64;
        out.put_slice(itoa::Buffer::new().format(whole).as_bytes());
        if fraction == 0 {
            return;
        }
        // Eight digits, then the trailing zeros dropped. Cents, the most
        // common case, is two digits.
        let mut digits = [b'0'; DECIMALS as usize];
        let mut len = DECIMALS as usize;
        if fraction.is_multiple_of(1_000_000) {
            fraction /= 1_000_000;
            len = 2;
        }
        for slot in digits[..len].iter_mut().rev() {
            *slot = b'0' + (fraction % 10) as u8;
            fraction /= 10;
        }
        while digits[len - 1] == b'0' {
            len -= 1;
        }
        out.put_u8(b'.');
        out.put_slice(&digits[..len]);
    }
}

/// Units in one step of `decimals` decimals (2: 1,000,000, a cent).
fn unit_of(decimals: u8) -> Option<i64> {
    (decimals <= DECIMALS).then(|| 10i64.pow(u32::from(DECIMALS - decimals)))
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = Vec::with_capacity(24);
        self.write(&mut text);
        // Only ASCII digits, `-` and `.` were written.
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl std::str::FromStr for Price {
    type Err = PriceError;

    fn from_str(text: &str) -> Result<Price, PriceError> {
        Price::parse(text)
    }
}

/// Serialized as a JSON number with the exact text (`187.67`), never
/// through a float: meant for `serde_json`, which the server uses for
/// every JSON it writes with serde.
impl serde::Serialize for Price {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = serde_json::value::RawValue::from_string(self.to_string())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// Read from `serde_json` as a JSON number or a JSON string in number
/// syntax, exactly (the text is parsed, never a float).
impl<'de> serde::Deserialize<'de> for Price {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Price, D::Error> {
        let raw = <&serde_json::value::RawValue>::deserialize(deserializer)?;
        Price::from_json(raw.get()).map_err(serde::de::Error::custom)
    }
}

impl Price {
    /// Parses the JSON text of a price: a number (`187.25`) or a string
    /// holding one (`"187.25"`).
    pub fn from_json(raw: &str) -> Result<Price, PriceError> {
        Price::from_json_with(raw, DECIMALS)
    }

    /// Like [`Price::from_json`], with at most `decimals` decimals.
    pub fn from_json_with(raw: &str, decimals: u8) -> Result<Price, PriceError> {
        let raw = raw.trim();
        let text = raw
            .strip_prefix('"')
            .and_then(|inner| inner.strip_suffix('"'))
            .unwrap_or(raw);
        Price::parse_with(text, decimals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(price: Price) -> String {
        price.to_string()
    }

    #[test]
    fn prints_the_shortest_exact_decimal() {
        for (units, shown) in [
            (18_767_000_000, "187.67"),
            (108_435_000, "1.08435"),
            (6_412_350_000_000, "64123.5"),
            (10_000, "0.0001"),
            (1, "0.00000001"),
            (0, "0"),
            (10_000_000_000, "100"),
            (-325_000_000, "-3.25"),
            (-1, "-0.00000001"),
            (MAX_UNITS, "9999999999.99999999"),
            (-MAX_UNITS, "-9999999999.99999999"),
            (5_000_000, "0.05"),
            (10_000_000, "0.1"),
        ] {
            assert_eq!(text(Price::from_units(units).unwrap()), shown);
            assert_eq!(Price::parse(shown), Ok(Price(units)), "{shown}");
        }
        assert_eq!(Price::from_units(MAX_UNITS + 1), None);
    }

    #[test]
    fn parses_json_number_syntax_exactly() {
        for (text, units) in [
            ("187.670", 18_767_000_000),
            ("1e-4", 10_000),
            ("6.41235E4", 6_412_350_000_000),
            ("0.000000010000", 1),
            ("-0", 0),
            ("1.5e+2", 15_000_000_000),
            ("12300e-2", 12_300_000_000),
            ("0.1000000000000000000000000000", 10_000_000),
        ] {
            assert_eq!(Price::parse(text), Ok(Price(units)), "{text}");
        }
        for bad in [
            "", "+1", ".5", "1.", "01", "0x10", "NaN", "inf", "1e", "1,5", " 1", "1 ", "--1",
            "1.2.3", "\"1\"",
        ] {
            assert!(
                matches!(Price::parse(bad), Err(PriceError::NotADecimal(_))),
                "{bad:?}"
            );
        }
        for precise in ["0.000000001", "1.0000000000000001", "1e-9", "187.123456789"] {
            assert!(
                matches!(Price::parse(precise), Err(PriceError::TooPrecise { .. })),
                "{precise}"
            );
        }
        // Exponents far past any range, which must neither wrap around
        // nor panic.
        for (text, refused) in [
            ("1e18446744073709551616", "range"),
            ("1e18446744073709551618", "range"),
            ("-5e18446744073709551617", "range"),
            ("1.5e-18446744073709551614", "decimals"),
            ("1e9223372036854775807", "range"),
            ("0e99999999999999999999", ""),
        ] {
            match Price::parse(text) {
                Ok(price) => assert!(refused.is_empty() && price == Price::ZERO, "{text}"),
                Err(err) => assert!(
                    !refused.is_empty() && err.to_string().contains(refused),
                    "{text}: {err}"
                ),
            }
        }
        let long = format!("0.1{}", "0".repeat(70));
        assert!(matches!(Price::parse(&long), Err(PriceError::TooLong(_))));
        for large in ["10000000000", "1e10", "-99999999999", "1e400"] {
            assert!(
                matches!(Price::parse(large), Err(PriceError::OutOfRange(_))),
                "{large}"
            );
        }
        // The error names the text and what to do.
        let err = Price::parse("187.123456789").unwrap_err().to_string();
        assert!(
            err.contains("187.123456789") && err.contains("8 decimals"),
            "{err}"
        );
    }

    #[test]
    fn a_symbols_tick_size_bounds_its_decimals() {
        assert_eq!(Price::parse_with("187.25", 2), Ok(Price(18_725_000_000)));
        assert_eq!(Price::parse_with("187", 0), Ok(Price(18_700_000_000)));
        assert_eq!(
            Price::parse_with("187.255", 2),
            Err(PriceError::TooPrecise {
                text: "187.255".into(),
                decimals: 2
            })
        );
        assert_eq!(Price::from_scaled(18_767, 2), Some(Price(18_767_000_000)));
        assert_eq!(Price::from_scaled(1, 9), None);
        assert!(Price(18_767_000_000).fits(2));
        assert!(!Price(18_767_500_000).fits(2));
    }

    #[test]
    fn json_numbers_and_strings_read_the_same_and_write_as_numbers() {
        assert_eq!(Price::from_json("187.25"), Price::from_json("\"187.25\""));
        let prices: Vec<Price> = serde_json::from_str(r#"[1.08435, "0.0001", -2]"#).unwrap();
        assert_eq!(
            prices,
            [Price(108_435_000), Price(10_000), Price(-200_000_000)]
        );
        assert_eq!(
            serde_json::to_string(&prices).unwrap(),
            "[1.08435,0.0001,-2]"
        );
        let err = serde_json::from_str::<Price>("1.000000001").unwrap_err();
        assert!(err.to_string().contains("8 decimals"), "{err}");
    }

    proptest! {
        #[test]
        fn every_price_goes_out_as_text_that_reads_back_to_the_same_units(
            units in -MAX_UNITS..=MAX_UNITS
        ) {
            let price = Price::from_units(units).unwrap();
            let shown = text(price);
            prop_assert_eq!(Price::parse(&shown), Ok(price));
            // Shortest: no trailing zero after the point, no lone point.
            prop_assert!(!shown.ends_with('.'));
            prop_assert!(!(shown.contains('.') && shown.ends_with('0')));
            // And a JSON parser reads it as a number.
            let parsed: serde_json::Value = serde_json::from_str(&shown).unwrap();
            prop_assert!(parsed.is_number());
        }

        #[test]
        fn decimals_past_the_scale_are_refused_never_rounded(
            whole in 0u64..10_000_000_000,
            fraction in 1u64..10,
            extra in 9usize..20,
        ) {
            // A ninth (or later) decimal that is not zero.
            let text = format!("{whole}.{}{fraction}", "0".repeat(extra - 1));
            let refused = matches!(Price::parse(&text), Err(PriceError::TooPrecise { .. }));
            prop_assert!(refused, "{}", text);
        }

        #[test]
        fn any_decimal_within_the_scale_is_read_exactly(
            whole in 0u64..10_000_000_000,
            fraction in 0u64..SCALE as u64,
            negative: bool,
        ) {
            let text = format!("{}{whole}.{fraction:08}", if negative { "-" } else { "" });
            let units = (whole * SCALE as u64 + fraction) as i64;
            let expected = if negative { -units } else { units };
            prop_assert_eq!(Price::parse(&text), Ok(Price(expected)));
        }
    }
}
