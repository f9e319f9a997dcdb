//! The one gate every JSON payload passes before it is parsed: client
//! requests on `/ws`, publisher ticks on `/ingest`, and JSON ticks from
//! NATS.
//!
//! [`check`] walks the bytes once, without recursing or allocating, and
//! refuses a payload whose nesting is deeper than [`JsonLimits::max_depth`]
//! or that holds more than [`JsonLimits::max_values`] values, before any
//! parser builds a tree of it (parsers recurse per nesting level: a few
//! thousand `[` overflow a thread's stack, and that aborts the process).
//! It also refuses a `\u` escape that encodes half of a UTF-16 surrogate
//! pair, which names no character: simd-json would turn it into U+0000
//! and the server would echo something else than the client sent.
//!
//! [`describe`] turns a parser's error into a sentence for a client
//! developer: what is wrong, where (the character offset), and the text
//! around it.

use std::fmt;

/// How much structure a payload may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonLimits {
    /// Deepest nesting of arrays and objects (`{"a":[1]}` is 2 deep).
    pub max_depth: u32,
    /// Most values (strings, numbers, literals, arrays and objects, object
    /// keys not counted) in one payload.
    pub max_values: u32,
}

/// Client requests on `/ws`: no request needs more than two levels, so
/// 32 leaves any field a client adds room; the size cap
/// (`--max-message-bytes`, 64 KiB) keeps the count lower than this anyway.
pub const CLIENT_LIMITS: JsonLimits = JsonLimits {
    max_depth: 32,
    max_values: 100_000,
};

/// Publisher ticks on `/ingest` and JSON ticks from NATS: an array of
/// tick objects is 2 deep; 1,000,000 values is over 100,000 ticks.
pub const TICK_LIMITS: JsonLimits = JsonLimits {
    max_depth: 32,
    max_values: 1_000_000,
};

/// Why [`check`] refused a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonFault {
    /// Nesting past the limit; `at` is the byte offset of the bracket that
    /// went one level too deep.
    TooDeep {
        /// The limit.
        limit: u32,
        /// Byte offset.
        at: usize,
    },
    /// More values than the limit.
    TooManyValues {
        /// The limit.
        limit: u32,
    },
    /// A `\uD800`–`\uDFFF` escape that is not a high surrogate followed by
    /// a low one.
    LoneSurrogate {
        /// The escape as written, e.g. `\ud800`.
        escape: String,
        /// Byte offset of its backslash.
        at: usize,
    },
}

impl fmt::Display for JsonFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonFault::TooDeep { limit, at } => write!(
                f,
                "the JSON nests arrays and objects more than {limit} levels deep \
                 (at character {at}); flatten it"
            ),
            JsonFault::TooManyValues { limit } => write!(
                f,
                "the JSON holds more than {limit} values; send fewer in one message"
            ),
            JsonFault::LoneSurrogate { escape, at } => write!(
                f,
                "the escape {escape} at character {at} is half of a UTF-16 surrogate pair \
                 and names no character; strings must be valid Unicode"
            ),
        }
    }
}

/// Checks `bytes` against `limits` in one pass. Malformed JSON that stays
/// within the limits passes: the parser that follows reports it.
pub fn check(bytes: &[u8], limits: JsonLimits) -> Result<(), JsonFault> {
    let mut depth: u32 = 0;
    let mut values: u32 = 0;
    // Inside a string: the next byte that matters is `"` or `\`.
    let mut in_string = false;
    let mut i = 0;
    // Counts one more value.
    let count = |values: &mut u32| {
        *values += 1;
        if *values > limits.max_values {
            Err(JsonFault::TooManyValues {
                limit: limits.max_values,
            })
        } else {
            Ok(())
        }
    };
    // Scalars are counted at their first byte; `scalar` is true while
    // inside one (a number or literal), so it counts once.
    let mut scalar = false;
    while i < bytes.len() {
        let byte = bytes[i];
        if in_string {
            match byte {
                b'"' => in_string = false,
                b'\\' => {
                    if bytes.get(i + 1) == Some(&b'u') {
                        i = check_unicode_escape(bytes, i)?;
                        continue;
                    }
                    // Skip the escaped character, `"` and `\` included.
                    i += 1;
                }
                _ => {}
            }
            i += 1;
            continue;
        }
        match byte {
            b'"' => {
                in_string = true;
                scalar = false;
                // A string is a value unless it is an object key, which
                // the parser tells apart; counting keys too would only
                // make the bound looser, so they count as values.
                count(&mut values)?;
            }
            b'[' | b'{' => {
                scalar = false;
                count(&mut values)?;
                depth += 1;
                if depth > limits.max_depth {
                    return Err(JsonFault::TooDeep {
                        limit: limits.max_depth,
                        at: i,
                    });
                }
            }
            b']' | b'}' => {
                scalar = false;
                depth = depth.saturating_sub(1);
            }
            b',' | b':' | b' ' | b'\t' | b'\n' | b'\r' => scalar = false,
            _ => {
                if !scalar {
                    scalar = true;
                    count(&mut values)?;
                }
            }
        }
        i += 1;
    }
    Ok(())
}

/// Checks the `\uXXXX` escape whose backslash is at `at` (a high
/// surrogate must be followed by a `\u` low surrogate; a low one may not
/// stand alone) and returns the offset just past it (and its pair).
fn check_unicode_escape(bytes: &[u8], at: usize) -> Result<usize, JsonFault> {
    let unit = |at: usize| -> Option<u16> {
        let digits = bytes.get(at + 2..at + 6)?;
        if bytes[at] != b'\\' || bytes[at + 1] != b'u' {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    let lone = || JsonFault::LoneSurrogate {
        escape: String::from_utf8_lossy(&bytes[at..(at + 6).min(bytes.len())]).into_owned(),
        at,
    };
    match unit(at) {
        // Malformed escapes are the parser's to report.
        None => Ok(at + 2),
        Some(0xD800..=0xDBFF) => match unit(at + 6) {
            Some(0xDC00..=0xDFFF) => Ok(at + 12),
            _ => Err(lone()),
        },
        Some(0xDC00..=0xDFFF) => Err(lone()),
        Some(_) => Ok(at + 6),
    }
}

/// Whether `err` says the JSON was well formed but held the wrong type of
/// value somewhere (a string where a number belongs), rather than that it
/// was not JSON.
pub fn is_type_error(err: &simd_json::Error) -> bool {
    use simd_json::ErrorType as E;
    matches!(
        err.error(),
        E::Unexpected(..)
            | E::ExpectedArray
            | E::ExpectedBoolean
            | E::ExpectedEnum
            | E::ExpectedFloat
            | E::ExpectedInteger
            | E::ExpectedMap
            | E::ExpectedNull
            | E::ExpectedNumber
            | E::ExpectedSigned
            | E::ExpectedString
            | E::ExpectedUnsigned
            | E::Serde(_)
    )
}

/// A parser's error as a sentence for a client developer: what was wrong
/// (`simd_json`'s error kind, in words), at which character, and the text
/// around it when `bytes` is given: the payload as received, or what is
/// left of it after an in-place parse (the excerpt is then approximate).
pub fn describe(err: &simd_json::Error, bytes: Option<&[u8]>) -> String {
    use simd_json::ErrorType as E;
    let what = match err.error() {
        // serde's own words ("missing field `px`"), which have no position.
        E::Serde(message) => return message.clone(),
        E::Eof => "the message ends before the JSON does (an unclosed string, array or object?)",
        E::TrailingData => "there is more after the JSON value; send one value per message",
        E::InvalidEscape | E::InvalidUnicodeEscape => {
            "a string has an invalid escape (use \\\" \\\\ \\/ \\b \\f \\n \\r \\t or \\uXXXX)"
        }
        E::InvalidUnicodeCodepoint | E::InvalidUtf8 => "a string holds an invalid character",
        E::InvalidNumber | E::InvalidExponent => "a number is malformed or out of range",
        E::UnterminatedString => "a string is not closed with \"",
        E::ExpectedObjectColon => "an object key is not followed by ':'",
        E::ExpectedMapComma | E::ExpectedArrayComma => "two values are not separated by ','",
        E::ExpectedObjectKey | E::KeyMustBeAString | E::BadKeyType => {
            "an object key is not a string in double quotes"
        }
        E::ExpectedTrue | E::ExpectedFalse => {
            "a word is not true, false or null (strings need double quotes)"
        }
        E::Unexpected(Some(expected), Some(found)) => {
            return format!(
                "expected {} but found {}, at character {}",
                type_name(*expected),
                type_name(*found),
                err.index()
            )
        }
        E::ExpectedArray => "expected an array",
        E::ExpectedMap => "expected an object",
        E::ExpectedString => "expected a string",
        E::ExpectedBoolean => "expected true or false",
        E::ExpectedNull => "expected null",
        E::ExpectedUnsigned => "expected a whole number of 0 or more",
        E::ExpectedSigned | E::ExpectedInteger => "expected a whole number",
        E::ExpectedFloat | E::ExpectedNumber => "expected a number",
        _ => bytes
            .and_then(|bytes| hint(bytes, err.index()))
            .unwrap_or("this is not valid JSON (a missing or extra bracket, comma or quote?)"),
    };
    match bytes {
        Some([]) => "the message is empty; send one JSON object per text frame".into(),
        Some(bytes) => {
            let at = err.index().min(bytes.len());
            format!("{what}, at character {at}: {}", excerpt(bytes, at))
        }
        None => format!("{what}, at character {}", err.index()),
    }
}

/// A JSON type as a client developer says it.
fn type_name(value: simd_json::ValueType) -> &'static str {
    use simd_json::ValueType as V;
    match value {
        V::Null => "null",
        V::Bool => "true or false",
        V::I64 | V::U64 | V::I128 | V::U128 => "a whole number",
        V::F64 => "a number",
        V::String => "a string",
        V::Array => "an array",
        V::Object => "an object",
        _ => "another value",
    }
}

/// What is wrong with `bytes` near `at`, where simd-json only says the
/// structure is broken: unbalanced brackets, single quotes, a trailing
/// comma, a missing comma.
fn hint(bytes: &[u8], at: usize) -> Option<&'static str> {
    // Brackets outside strings, over the whole message.
    let (mut depth, mut in_string, mut escaped) = (0i64, false, false);
    for &byte in bytes {
        match (in_string, escaped, byte) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, ..) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'[' | b'{') => depth += 1,
            (false, _, b']' | b'}') => {
                depth -= 1;
                if depth < 0 {
                    return Some("there is a closing bracket too many");
                }
            }
            _ => {}
        }
    }
    if in_string {
        return Some("a string is not closed with \"");
    }
    if depth > 0 {
        return Some("the message ends before every { and [ is closed");
    }
    let here = *bytes.get(at)?;
    let before = bytes[..at]
        .iter()
        .rev()
        .find(|b| !b.is_ascii_whitespace())
        .copied();
    match (before, here) {
        (_, b'\'') => Some("strings and keys need double quotes, not single quotes"),
        (Some(b','), b']' | b'}') => Some("there is a comma before a closing bracket"),
        (Some(b'"' | b'0'..=b'9' | b']' | b'}' | b'e' | b'l'), b'"' | b'{' | b'[') => {
            Some("a comma is missing between two values")
        }
        _ => None,
    }
}

/// Up to 16 bytes either side of `at`, quoted, with `…` where cut and
/// `▶` where the fault is.
pub fn excerpt(bytes: &[u8], at: usize) -> String {
    let start = at.saturating_sub(16);
    let end = (at + 16).min(bytes.len());
    let clean = |part: &[u8]| -> String {
        String::from_utf8_lossy(part)
            .chars()
            .filter(|c| !c.is_control())
            .collect()
    };
    format!(
        "{}{}▶{}{}",
        if start > 0 { "«…" } else { "«" },
        clean(&bytes[start..at]),
        clean(&bytes[at..end]),
        if end < bytes.len() { "…»" } else { "»" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: JsonLimits = JsonLimits {
        max_depth: 4,
        max_values: 10,
    };

    #[test]
    fn nesting_is_bounded_before_parsing() {
        assert_eq!(check(br#"{"a":[[1]]}"#, LIMITS), Ok(()));
        assert_eq!(check(br#"[[[[1]]]]"#, LIMITS), Ok(()));
        assert_eq!(
            check(br#"[[[[[1]]]]]"#, LIMITS),
            Err(JsonFault::TooDeep { limit: 4, at: 4 })
        );
        // Brackets inside strings are text, not structure.
        assert_eq!(check(br#"["[[[[[[[[[[[[[[", "\"[[[[["]"#, LIMITS), Ok(()));
        // Sequential nesting does not add up.
        assert_eq!(check(br#"[[[[1]]],[[[1]]]]"#, LIMITS), Ok(()));
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            check(deep.as_bytes(), CLIENT_LIMITS),
            Err(JsonFault::TooDeep { limit: 32, .. })
        ));
    }

    #[test]
    fn values_are_counted() {
        assert_eq!(check(b"[1,2,3,4,5,6,7,8,9]", LIMITS), Ok(()));
        assert_eq!(
            check(b"[1,2,3,4,5,6,7,8,9,10]", LIMITS),
            Err(JsonFault::TooManyValues { limit: 10 })
        );
        // A number of many digits is one value; keys count as values.
        assert_eq!(check(br#"{"a":123456789,"b":true}"#, LIMITS), Ok(()));
        assert_eq!(
            check(br#"[{},{},{},{},{},{},{},{},{},{}]"#, LIMITS),
            Err(JsonFault::TooManyValues { limit: 10 })
        );
    }

    #[test]
    fn lone_surrogate_escapes_are_refused_and_pairs_pass() {
        assert_eq!(check(br#"["\ud83d\ude00"]"#, LIMITS), Ok(()));
        assert_eq!(check(br#"["\u00e9\\ud800"]"#, LIMITS), Ok(()));
        for (text, escape, at) in [
            (r#"["\ud800"]"#, r"\ud800", 2),
            (r#"["ab\uDBFFx"]"#, r"\uDBFF", 4),
            (r#"["\udc00"]"#, r"\udc00", 2),
            (r#"["\ud800\u0041"]"#, r"\ud800", 2),
            (r#"["\ud800"#, r"\ud800", 2),
        ] {
            assert_eq!(
                check(text.as_bytes(), LIMITS),
                Err(JsonFault::LoneSurrogate {
                    escape: escape.into(),
                    at
                }),
                "{text}"
            );
        }
    }

    #[test]
    fn parser_errors_read_as_sentences() {
        let mut text = br#"{"op":"ping" "id":1}"#.to_vec();
        let copy = text.clone();
        let err = simd_json::to_borrowed_value(&mut text).unwrap_err();
        let sentence = describe(&err, Some(&copy));
        assert!(!sentence.contains("Error"), "{sentence}");
        assert_eq!(
            sentence,
            r#"a comma is missing between two values, at character 13: «{"op":"ping" ▶"id":1}»"#
        );
        for (text, what) in [
            (
                r#"{"op":"ping","id":1"#,
                "ends before every { and [ is closed",
            ),
            (r#"{"op":"ping","id":1}}"#, "a closing bracket too many"),
            (r#"{"op":'ping'}"#, "double quotes"),
            (
                r#"{"op":"subscribe","symbols":["A",]}"#,
                "a comma before a closing bracket",
            ),
            (r#"{"op":"ping","id":"1}"#, "not closed"),
        ] {
            let mut scratch = text.as_bytes().to_vec();
            let err = simd_json::to_borrowed_value(&mut scratch).unwrap_err();
            let sentence = describe(&err, Some(text.as_bytes()));
            assert!(sentence.contains(what), "{text}: {sentence}");
        }
    }
}
