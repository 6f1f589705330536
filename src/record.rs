//! A record's JSON text, read without converting it: the source record as the detector received
//! it, split at its top level into members whose values stay slices of the original text.
//!
//! Parsing a record into a [`serde_json::Value`] turns every number into an `f64` (so
//! `0.1000000000000000055` becomes `0.1`, `12345678901234567890123` loses digits, and `1e400`
//! fails the whole record) and folds duplicate keys. anomalyd judges only the features, and
//! passes the rest of a record on byte for byte, so it reads records here instead: serde_json
//! checks the whole text (recursion limit and all) but each value is kept as a borrowed
//! [`RawValue`] slice, and only the values the caller asks for
//! (the features, by field or JSON pointer) are looked into. Nothing is copied but the keys that
//! hold escapes.
//!
//! A UTF-8 byte-order mark before the text is ignored, as RFC 8259 §8.1 allows a parser to.

mod scan;

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use thiserror::Error;

/// The UTF-8 encoding of U+FEFF, the byte-order mark.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Why a payload is not a JSON text.
#[derive(Debug, Error)]
pub enum RecordError {
    #[error("the record has no value")]
    Empty,
    #[error("not UTF-8: {0}")]
    NotUtf8(#[from] std::str::Utf8Error),
    #[error("{0}")]
    Syntax(#[from] serde_json::Error),
}

/// One member of a JSON object: its key (unescaped) and its value's text, exactly as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member<'a> {
    pub key: Cow<'a, str>,
    /// The value's JSON text (no surrounding whitespace).
    pub value: &'a str,
}

/// A checked JSON text and, when it is an object, its top-level members in order, duplicates
/// kept.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    text: &'a str,
    members: Option<Vec<Member<'a>>>,
}

impl<'a> Record<'a> {
    /// Checks `payload` as one JSON text (after an optional byte-order mark) and splits it at
    /// its top level. Numbers are checked for syntax only: `1e400` is a valid JSON number here.
    pub fn parse(payload: Option<&'a [u8]>) -> Result<Self, RecordError> {
        let bytes = payload.ok_or(RecordError::Empty)?;
        let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
        let s = std::str::from_utf8(bytes)?;
        let text = s.trim_matches(is_json_whitespace);
        let members = if text.starts_with('{') {
            // The scanner decides only what serde_json would accept, the same way; anything
            // else is serde_json's to judge. Parse `s`, not `text`, so an error's line and
            // column are the record's own.
            match scan::object_members(s) {
                Some(members) => Some(members),
                None => Some(serde_json::from_str::<Members<'a>>(s)?.0),
            }
        } else {
            serde_json::from_str::<&'a RawValue>(s)?;
            None
        };
        Ok(Self { text, members })
    }

    /// The JSON text, without byte-order mark or surrounding whitespace: for an object, from
    /// its `{` to its `}`.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// The top-level members, in order, when the record is an object.
    pub fn members(&self) -> Option<&[Member<'a>]> {
        self.members.as_deref()
    }

    /// The value of top-level member `key`: the last one when the key is repeated, as
    /// `serde_json` and most parsers read it. `None` also when the record is not an object.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        last_member(self.members.as_deref()?, key)
    }

    /// The value `pointer` (RFC 6901, as [`serde_json::Value::pointer`]) refers to, as text.
    /// Only the objects and arrays on the way are looked into.
    pub fn pointer(&self, pointer: &str) -> Option<&'a str> {
        if pointer.is_empty() {
            return Some(self.text);
        }
        let mut tokens = pointer.strip_prefix('/')?.split('/');
        let first = unescape_token(tokens.next()?);
        let mut at = match &self.members {
            Some(m) => last_member(m, &first)?,
            None => step(self.text, &first)?,
        };
        for token in tokens {
            at = step(at, &unescape_token(token))?;
        }
        Some(at)
    }
}

/// JSON's insignificant whitespace (RFC 8259 §2).
fn is_json_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn last_member<'a>(members: &[Member<'a>], key: &str) -> Option<&'a str> {
    members.iter().rev().find(|m| m.key == key).map(|m| m.value)
}

fn unescape_token(t: &str) -> Cow<'_, str> {
    if t.contains('~') {
        Cow::Owned(t.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(t)
    }
}

/// One pointer step into the value `text` (already checked JSON).
fn step<'a>(text: &'a str, token: &str) -> Option<&'a str> {
    match text.as_bytes().first()? {
        b'{' => last_member(&members(text)?, token),
        b'[' => {
            // As serde_json: decimal digits, no sign, no leading zero.
            if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
                return None;
            }
            let index: usize = token.parse().ok()?;
            let mut found = None;
            for_each_element(text, |i, v| {
                if i == index {
                    found = Some(v);
                    false
                } else {
                    true
                }
            })
            .ok()?;
            found
        }
        _ => None,
    }
}

/// The members of the object `text` (checked JSON), or `None` when it is not an object.
/// As [`Record::parse`]: the scanner when it is sure, else serde_json (a nested object read
/// by each pointer into it, so this is on the pointer features' path).
pub fn members(text: &str) -> Option<Vec<Member<'_>>> {
    if !text.starts_with('{') {
        return None;
    }
    scan::object_members(text)
        .or_else(|| serde_json::from_str::<Members<'_>>(text).ok().map(|m| m.0))
}

/// Calls `f(index, element_text)` for each element of the array `text`, in order, until it
/// returns `false`. Nothing is collected, so a long array costs no memory. An error when `text`
/// is not a JSON array.
pub fn for_each_element<'a>(
    text: &'a str,
    f: impl FnMut(usize, &'a str) -> bool,
) -> Result<(), serde_json::Error> {
    struct Each<F>(F);
    impl<'de, F: FnMut(usize, &'de str) -> bool> Visitor<'de> for Each<F> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0;
            let mut more = true;
            while more {
                match seq.next_element::<&'de RawValue>()? {
                    Some(v) => more = (self.0)(i, v.get()),
                    None => return Ok(()),
                }
                i += 1;
            }
            // Stopped early: the rest must still be consumed for the array to end.
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_seq(Each(f))?;
    de.end()
}

/// [`for_each_element`] for a checked JSON array (as [`Record::get`] gives) whose text is only
/// numbers, brackets, commas and whitespace, such as `[[0.1, 0.2]]`: the elements are then
/// found by counting brackets, without a parser. `None` (and `f` never called) when `text`
/// holds anything else; then use [`for_each_element`].
pub fn for_each_numeric_element<'a>(
    text: &'a str,
    mut f: impl FnMut(usize, &'a str) -> bool,
) -> Option<()> {
    let b = text.as_bytes();
    let numeric = |c: &u8| {
        matches!(
            c,
            b'0'..=b'9'
                | b'-'
                | b'+'
                | b'.'
                | b'e'
                | b'E'
                | b'['
                | b']'
                | b','
                | b' '
                | b'\t'
                | b'\n'
                | b'\r'
        )
    };
    if b.first() != Some(&b'[') || b.last() != Some(&b']') || !b.iter().all(numeric) {
        return None;
    }
    let inner = &text[1..text.len() - 1];
    if inner.trim_matches(is_json_whitespace).is_empty() {
        return Some(());
    }
    let (mut depth, mut start, mut index) = (0usize, 0, 0);
    for (at, c) in inner.bytes().enumerate() {
        match c {
            b'[' => depth += 1,
            b']' => depth -= 1,
            b',' if depth == 0 => {
                if !f(index, inner[start..at].trim_matches(is_json_whitespace)) {
                    return Some(());
                }
                index += 1;
                start = at + 1;
            }
            _ => {}
        }
    }
    f(index, inner[start..].trim_matches(is_json_whitespace));
    Some(())
}

/// A top-level object's members, for serde.
struct Members<'a>(Vec<Member<'a>>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((Key(key), value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    out.push(Member {
                        key,
                        value: value.get(),
                    });
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// An object key, borrowed from the text unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The number a JSON value's text holds, as the nearest `f64` (correctly rounded; beyond
/// `f64`'s range it is infinite, which callers judge), or `None` when the value is not a
/// number.
pub fn number(text: &str) -> Option<f64> {
    match text.as_bytes().first()? {
        b'-' | b'0'..=b'9' => text.parse().ok(),
        _ => None,
    }
}

/// The text of a string value, unescaped, or `None` for any other value.
pub fn string(text: &str) -> Option<Cow<'_, str>> {
    if !text.starts_with('"') {
        return None;
    }
    #[derive(Deserialize)]
    struct S<'a>(#[serde(borrow)] Cow<'a, str>);
    serde_json::from_str::<S<'_>>(text).ok().map(|s| s.0)
}

/// Writes the JSON text `text` (checked JSON) again without converting any value: compact on
/// one line (whitespace between tokens removed), or indented by two spaces with `": "` after
/// keys, as [`serde_json::to_writer_pretty`] would, so that numbers such as `1e400` or
/// `0.1000000000000000055` and the order and repetition of keys print as they were sent.
pub fn reformat(text: &str, pretty: bool) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    let mut depth = 0usize;
    let b = text.as_bytes();
    let mut i = 0;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    };
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'"' => {
                // A string runs to the next quote not escaped by an odd run of backslashes.
                let start = i;
                i += 1;
                while i < b.len() {
                    match b[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
                out.push_str(&text[start..i.min(b.len())]);
            }
            open @ (b'{' | b'[') => {
                let close = if open == b'{' { b'}' } else { b']' };
                out.push(open as char);
                i += 1;
                let next = b[i..]
                    .iter()
                    .position(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'));
                if next.is_some_and(|n| b[i + n] == close) {
                    // Empty: `{}` / `[]`, as serde_json prints them.
                    out.push(close as char);
                    i += next.unwrap_or(0) + 1;
                } else {
                    depth += 1;
                    if pretty {
                        newline(&mut out, depth);
                    }
                }
            }
            c @ (b'}' | b']') => {
                depth = depth.saturating_sub(1);
                if pretty {
                    newline(&mut out, depth);
                }
                out.push(c as char);
                i += 1;
            }
            b',' => {
                out.push(',');
                if pretty {
                    newline(&mut out, depth);
                }
                i += 1;
            }
            b':' => {
                out.push_str(if pretty { ": " } else { ":" });
                i += 1;
            }
            _ => {
                // A number or a literal: up to the next delimiter.
                let start = i;
                while i < b.len()
                    && !matches!(
                        b[i],
                        b',' | b':' | b'{' | b'}' | b'[' | b']' | b' ' | b'\t' | b'\n' | b'\r'
                    )
                {
                    i += 1;
                }
                out.push_str(&text[start..i]);
            }
        }
    }
    out
}

/// A JSON text that serializes as itself, for embedding an unconverted value in a
/// serde-built document (e.g. `tail`'s envelope).
#[derive(Debug, Clone, Copy)]
pub struct Raw<'a>(pub &'a str);

impl Serialize for Raw<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_str::<&RawValue>(self.0) {
            Ok(raw) => raw.serialize(s),
            // Not JSON after all: as a string rather than broken output.
            Err(_) => s.serialize_str(self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Record<'_> {
        Record::parse(Some(s.as_bytes())).unwrap_or_else(|e| panic!("{e}: {s}"))
    }

    #[test]
    fn members_keep_their_text_order_and_duplicates() {
        let r =
            parse(r#" {"a": 1e400, "b" : 0.1000000000000000055, "a":[1, 2], "k\u0065y": -0.0 } "#);
        assert!(r.text().starts_with('{') && r.text().ends_with('}'));
        let m = r.members().unwrap();
        let pairs: Vec<(&str, &str)> = m.iter().map(|m| (&*m.key, m.value)).collect();
        assert_eq!(
            pairs,
            [
                ("a", "1e400"),
                ("b", "0.1000000000000000055"),
                ("a", "[1, 2]"),
                ("key", "-0.0"),
            ]
        );
        assert_eq!(r.get("a"), Some("[1, 2]"), "the last one, as serde_json");
        assert_eq!(r.get("zz"), None);
    }

    #[test]
    fn other_json_values_are_records_without_members() {
        for s in ["[1, 2]", "1e400", "\"x\"", "null", "  true\n"] {
            let r = parse(s);
            assert!(r.members().is_none());
            assert_eq!(r.text(), s.trim());
        }
    }

    #[test]
    fn broken_json_is_an_error_with_its_position() {
        for s in ["", "{", "{\"a\": 1,}", "[1 2]", "{} x", "nul", "\"\\x\""] {
            assert!(Record::parse(Some(s.as_bytes())).is_err(), "{s}");
        }
        let e = Record::parse(Some(b"{\"a\": tru}")).unwrap_err();
        assert!(e.to_string().contains("line 1 column"), "{e}");
        assert!(matches!(
            Record::parse(Some(b"{\"a\": \"\xff\"}")),
            Err(RecordError::NotUtf8(_))
        ));
        assert!(matches!(Record::parse(None), Err(RecordError::Empty)));
    }

    #[test]
    fn a_byte_order_mark_is_ignored() {
        let r = Record::parse(Some(b"\xEF\xBB\xBF{\"data\": [[1, 2]]}")).unwrap();
        assert_eq!(r.text(), "{\"data\": [[1, 2]]}");
        // Only one, and only at the start.
        assert!(Record::parse(Some(b"\xEF\xBB\xBF\xEF\xBB\xBF{}")).is_err());
        assert!(Record::parse(Some(b"{}\xEF\xBB\xBF")).is_err());
    }

    #[test]
    fn pointers_as_serde_json_reads_them() {
        let text = r#"{"a": {"b/c": [10, {"d~e": 1e400}], "": 5}, "x": 1, "x": 2, "arr": [7]}"#;
        let r = parse(text);
        let v: serde_json::Value = serde_json::from_str(&text.replace("1e400", "3")).unwrap();
        for p in [
            "",
            "/a",
            "/a/b~1c",
            "/a/b~1c/0",
            "/a/b~1c/1",
            "/a/b~1c/01",
            "/a/b~1c/+1",
            "/a/b~1c/2",
            "/a/",
            "/x",
            "/arr/0",
            "/arr/-",
            "/nope",
            "a",
            "/a/b~1c/1/d~0e/z",
        ] {
            let got = r.pointer(p).map(|t| {
                serde_json::from_str::<serde_json::Value>(&t.replace("1e400", "3")).unwrap()
            });
            assert_eq!(got.as_ref(), v.pointer(p), "{p}");
        }
        assert_eq!(r.pointer("/a/b~1c/1/d~0e"), Some("1e400"));
        assert_eq!(parse("[[1, 2], 3]").pointer("/0/1"), Some("2"));
    }

    #[test]
    fn numbers_are_read_from_their_text() {
        assert_eq!(number("1E+2"), Some(100.0));
        assert_eq!(number("-0.0").map(f64::to_bits), Some((-0.0f64).to_bits()));
        assert_eq!(number("0.30000000000000004"), Some(0.30000000000000004));
        assert_eq!(
            number("12345678901234567890123"),
            Some(1.2345678901234568e22)
        );
        assert_eq!(number("1e400"), Some(f64::INFINITY));
        assert_eq!(number("-1e400"), Some(f64::NEG_INFINITY));
        assert_eq!(number("1e-400"), Some(0.0));
        for not in ["\"1\"", "null", "[1]", "true", "{}"] {
            assert_eq!(number(not), None, "{not}");
        }
    }

    #[test]
    fn strings_are_unescaped() {
        assert_eq!(string(r#""a\"b\u00e9""#).as_deref(), Some("a\"bé"));
        assert_eq!(string("12"), None);
    }

    #[test]
    fn random_numeric_arrays_split_as_serde_json_splits_them() {
        use rand::rngs::StdRng;
        use rand::{RngExt, SeedableRng};
        fn grow(rng: &mut StdRng, depth: usize, out: &mut String) {
            if depth > 3 || rng.random_bool(0.6) {
                out.push_str(
                    ["0", "-1.5", "1e400", "2E-3", "12345678901234567890"][rng.random_range(0..5)],
                );
                return;
            }
            out.push('[');
            for k in 0..rng.random_range(0..4) {
                if k > 0 {
                    out.push_str([",", " , ", ",\n"][rng.random_range(0..3)]);
                }
                grow(rng, depth + 1, out);
            }
            out.push(']');
        }
        let mut rng = StdRng::seed_from_u64(16);
        let mut arrays = 0;
        for _ in 0..5_000 {
            let mut text = String::new();
            grow(&mut rng, 0, &mut text);
            if !text.starts_with('[') {
                continue;
            }
            arrays += 1;
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            for_each_numeric_element(&text, |i, v| {
                fast.push((i, v));
                true
            })
            .expect("numeric");
            for_each_element(&text, |i, v| {
                slow.push((i, v));
                true
            })
            .unwrap();
            assert_eq!(fast, slow, "{text}");
        }
        assert!(arrays > 1_000, "{arrays}");
    }

    #[test]
    fn numeric_elements_are_those_serde_json_finds() {
        let cases = [
            "[[0.1, 0.2]]",
            "[1,2,3]",
            "[ ]",
            "[]",
            "[[]]",
            "[ 1e400 , -0.5E-3,\n[1,[2, 3]] ,[] ]",
            "[[1, 2], [3]]",
        ];
        for text in cases {
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            for_each_numeric_element(text, |i, v| {
                fast.push((i, v));
                true
            })
            .expect("numeric");
            for_each_element(text, |i, v| {
                slow.push((i, v));
                true
            })
            .unwrap();
            assert_eq!(fast, slow, "{text}");
            // Stopping early stops both at the same element.
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            for_each_numeric_element(text, |i, v| {
                fast.push(v);
                i < 1
            });
            for_each_element(text, |i, v| {
                slow.push(v);
                i < 1
            })
            .unwrap();
            assert_eq!(fast, slow, "{text}");
        }
        for other in [r#"["1"]"#, "[true]", "[null]", r#"[{"a": 1}]"#, "1", "{}"] {
            assert!(
                for_each_numeric_element(other, |_, _| panic!("called")).is_none(),
                "{other}"
            );
        }
    }

    #[test]
    fn elements_are_visited_without_collecting() {
        let mut seen = Vec::new();
        for_each_element("[1, [2, 3] ,\"x\"]", |i, v| {
            seen.push((i, v));
            true
        })
        .unwrap();
        assert_eq!(seen, [(0, "1"), (1, "[2, 3]"), (2, "\"x\"")]);
        let mut n = 0;
        for_each_element("[1, 2, 3]", |_, _| {
            n += 1;
            false
        })
        .unwrap();
        assert_eq!(n, 1, "stopped after the first");
        assert!(for_each_element("{}", |_, _| true).is_err());
    }

    #[test]
    fn reformat_keeps_every_token_and_matches_serde_json_layout() {
        let text = r#"{"a" : [1, 2.50, {"b":null}], "e": {}, "f": [ ], "s": "x, y: [\"z\"] \\"}"#;
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            reformat(text, true),
            serde_json::to_string_pretty(&v)
                .unwrap()
                .replace("2.5", "2.50")
        );
        assert_eq!(
            reformat(text, false),
            serde_json::to_string(&v).unwrap().replace("2.5", "2.50")
        );
        let odd = "{\"n\": 1e400, \"n\": 0.1000000000000000055}";
        assert_eq!(
            reformat(odd, false),
            "{\"n\":1e400,\"n\":0.1000000000000000055}"
        );
        assert_eq!(reformat("1e400", true), "1e400");
        // Text that is not JSON never panics (it is only ever given checked JSON).
        for odd in [
            "\"\\é\"",
            "é{",
            "{",
            "]]",
            "\"unterminated \\",
            "[1,é]",
            "\"\\",
        ] {
            let _ = reformat(odd, true);
        }
    }
}
