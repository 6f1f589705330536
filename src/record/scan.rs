//! The fast path of [`Record::parse`](super::Record::parse): a byte scanner that splits a JSON
//! object into its top-level members only when it is sure serde_json accepts the text too, and
//! otherwise says nothing, so that serde_json reads it (and gives any error, with its line and
//! column).
//!
//! It is sure of a subset of JSON: strings without escapes or control characters, nesting
//! under [`MAX_DEPTH`] (serde_json allows 128), and every other token exactly as RFC 8259 §§3-7
//! writes it (serde_json checks numbers for syntax only, as here, so `1e400` is accepted by
//! both). Anything else (an escape, a syntax error, deeper nesting) makes it give up, never
//! decide. The generator's records and most producers' are all in the subset: a record costs
//! about a third of serde_json's instructions (docs/benchmarks.md, "CPU per record").

use std::borrow::Cow;

use super::Member;

/// Deeper nesting is left to serde_json, whose limit (128) counts the same way.
pub const MAX_DEPTH: usize = 64;

/// The members of the JSON object `s` (surrounding JSON whitespace allowed), in order with
/// duplicates, every key borrowed; `None` when the text is not certainly a JSON object in the
/// subset this module knows (then serde_json must decide).
pub fn object_members(s: &str) -> Option<Vec<Member<'_>>> {
    let b = s.as_bytes();
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(b, i + 1);
    let mut members = Vec::with_capacity(8);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            let key_end = string(b, i)?;
            let key = &s[i + 1..key_end - 1];
            i = ws(b, key_end);
            if b.get(i) != Some(&b':') {
                return None;
            }
            let start = ws(b, i + 1);
            let end = value(b, start, 2)?;
            members.push(Member {
                key: Cow::Borrowed(key),
                value: &s[start..end],
            });
            i = ws(b, end);
            match b.get(i)? {
                b',' => i = ws(b, i + 1),
                b'}' => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (ws(b, i) == b.len()).then_some(members)
}

/// The index of the first byte from `i` on that is not JSON whitespace.
fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// The end (one past) of the value at `i`, whose enclosing containers number `depth - 1`.
fn value(b: &[u8], i: usize, depth: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string(b, i),
        b'{' => object(b, i, depth),
        b'[' => array(b, i, depth),
        b't' => literal(b, i, b"true"),
        b'f' => literal(b, i, b"false"),
        b'n' => literal(b, i, b"null"),
        b'-' | b'0'..=b'9' => number(b, i),
        _ => None,
    }
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    b.get(i..i + word.len())
        .filter(|w| *w == word)
        .map(|_| i + word.len())
}

/// The end of the string at `i` (its closing quote included): no escape, no control
/// character. The text is UTF-8 already, so any other byte is part of a character.
fn string(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let rest = b.get(i + 1..)?;
    let at = rest
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    (rest[at] == b'"').then_some(i + 1 + at + 1)
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, RFC 8259 §6.
fn number(b: &[u8], mut i: usize) -> Option<usize> {
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match *b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(b, i),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let end = digits(b, i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let end = digits(b, i);
        if end == i {
            return None;
        }
        i = end;
    }
    Some(i)
}

fn digits(b: &[u8], i: usize) -> usize {
    let rest = b.get(i..).unwrap_or_default();
    i + rest
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(rest.len())
}

fn object(b: &[u8], i: usize, depth: usize) -> Option<usize> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut i = ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Some(i + 1);
    }
    loop {
        i = ws(b, string(b, i)?);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = ws(b, value(b, ws(b, i + 1), depth + 1)?);
        match *b.get(i)? {
            b',' => i = ws(b, i + 1),
            b'}' => return Some(i + 1),
            _ => return None,
        }
    }
}

fn array(b: &[u8], i: usize, depth: usize) -> Option<usize> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut i = ws(b, i + 1);
    if b.get(i) == Some(&b']') {
        return Some(i + 1);
    }
    loop {
        i = ws(b, value(b, i, depth + 1)?);
        match *b.get(i)? {
            b',' => i = ws(b, i + 1),
            b']' => return Some(i + 1),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;

    /// serde_json's verdict through the slow path of `Record::parse`.
    fn slow(s: &str) -> Option<Vec<Member<'_>>> {
        serde_json::from_str::<super::super::Members<'_>>(s)
            .ok()
            .map(|m| m.0)
    }

    /// Whenever the scanner decides, serde_json agrees, member for member.
    fn agrees(s: &str) -> bool {
        match object_members(s) {
            Some(fast) => {
                assert_eq!(Some(fast), slow(s), "the scanner accepted {s:?}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn typical_records_are_split_as_serde_json_splits_them() {
        for s in [
            r#"{"id": 3, "data": [[0.1, 0.2]], "current_time": "2026-11-30T11:35:27.123Z"}"#,
            "{}",
            " \t\r\n{ } \n",
            r#"{"a":1,"a":2,"":null,"é":true,"x":false}"#,
            r#"{"n": -0, "m": 1e400, "k": 0.1000000000000000055, "j": 12345678901234567890123, "e": 1E+2, "f": 2e-3}"#,
            r#"{"deep": {"a": [1, {"b": [[], {}]}], "c": "x"}, "s": "ünï  cödé"}"#,
        ] {
            assert!(agrees(s), "the scanner gave up on {s:?}");
        }
    }

    #[test]
    fn what_it_is_unsure_of_or_what_is_wrong_is_left_to_serde_json() {
        for s in [
            r#"{"a\"b": 1}"#,
            r#"{"a": "tab\tinside"}"#,
            r#"{"a": "\u00e9"}"#,
            r#"{"a": 01}"#,
            r#"{"a": 1.}"#,
            r#"{"a": .5}"#,
            r#"{"a": 1e}"#,
            r#"{"a": +1}"#,
            r#"{"a": 1,}"#,
            r#"{"a" 1}"#,
            r#"{"a": 1} x"#,
            r#"{"a": [1,]}"#,
            r#"{"a": tru}"#,
            r#"{"a": NaN}"#,
            r#"{a: 1}"#,
            r#"[1, 2]"#,
            r#""text""#,
            "{\"a\": \"\u{1}\"}",
            "{",
            "",
        ] {
            assert!(object_members(s).is_none(), "the scanner decided {s:?}");
        }
        let deep = format!(
            "{{\"a\": {}1{}}}",
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        assert!(object_members(&deep).is_none());
        let shallow = format!(
            "{{\"a\": {}1{}}}",
            "[".repeat(MAX_DEPTH - 2),
            "]".repeat(MAX_DEPTH - 2)
        );
        assert!(agrees(&shallow));
    }

    /// Random JSON-like texts from a grammar, then mutated byte by byte: the scanner never
    /// accepts what serde_json refuses, and splits what both accept the same way.
    #[test]
    fn random_texts_get_serde_jsons_verdict() {
        fn grow(rng: &mut StdRng, depth: usize, out: &mut String) {
            let pick = if depth > 4 {
                rng.random_range(0..6)
            } else {
                rng.random_range(0..8)
            };
            match pick {
                0 => out.push_str(
                    [
                        "0",
                        "-1",
                        "3.25",
                        "1e400",
                        "-0.5E-3",
                        "12345678901234567890",
                    ][rng.random_range(0..6)],
                ),
                1 => out.push_str(["true", "false", "null"][rng.random_range(0..3)]),
                2..=5 => {
                    out.push('"');
                    for _ in 0..rng.random_range(0..5) {
                        out.push(
                            ['a', 'é', ' ', '\\', '"', '/', 'u', '0', '\n'][rng.random_range(0..9)],
                        );
                    }
                    out.push('"');
                }
                6 => {
                    out.push('[');
                    for k in 0..rng.random_range(0..4) {
                        if k > 0 {
                            out.push(',');
                        }
                        grow(rng, depth + 1, out);
                    }
                    out.push(']');
                }
                _ => object(rng, depth + 1, out),
            }
        }
        fn object(rng: &mut StdRng, depth: usize, out: &mut String) {
            out.push('{');
            for k in 0..rng.random_range(0..4) {
                if k > 0 {
                    out.push_str([",", ", ", " ,\n"][rng.random_range(0..3)]);
                }
                out.push_str(
                    ["\"a\"", "\"b\"", "\"a\"", "\"\"", "\"k\\\"\""][rng.random_range(0..5)],
                );
                out.push_str([":", " : "][rng.random_range(0..2)]);
                grow(rng, depth, out);
            }
            out.push('}');
        }
        let mut rng = StdRng::seed_from_u64(16);
        let (mut decided, mut valid) = (0, 0);
        let alphabet = b" {}[]\",:0123456789-+.eEtrufalsn\\x\t";
        for _ in 0..20_000 {
            let mut s = String::new();
            object(&mut rng, 0, &mut s);
            if slow(&s).is_some() {
                valid += 1;
            }
            decided += usize::from(agrees(&s));
            // Mutations: replace, insert or delete one ASCII byte.
            for _ in 0..3 {
                let mut bytes = s.clone().into_bytes();
                let at = rng.random_range(0..=bytes.len());
                let c = alphabet[rng.random_range(0..alphabet.len())];
                match rng.random_range(0..3) {
                    0 if at < bytes.len() && bytes[at].is_ascii() => bytes[at] = c,
                    1 => bytes.insert(at, c),
                    _ if at < bytes.len() && bytes[at].is_ascii() => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
                if let Ok(m) = String::from_utf8(bytes) {
                    decided += usize::from(agrees(&m));
                }
            }
        }
        // Not vacuous: most valid texts take the fast path, and many mutations are refused.
        assert!(valid > 10_000, "{valid} valid texts");
        assert!(decided > valid / 2, "decided {decided} of {valid} valid");
    }
}
