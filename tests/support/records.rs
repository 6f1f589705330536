//! Generated JSON source records for the property tests: random field names (ours among them,
//! escaped or not), numbers of every size and format, nested values, unicode and escapes, and
//! random whitespace. Deterministic for a seed.

#![allow(dead_code)] // each test binary uses its own part

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Field names a record might use, anomalyd's own and its old top-level ones included.
pub const KEYS: &[&str] = &[
    "anomalyd",
    "score",
    "decision",
    "model",
    "source",
    "explanation",
    "detected_at",
    "layout",
    "record",
    "data",
    "id",
    "note",
    "",
    "é",
    "日本",
    "a\"b",
    "a/b",
    "~0",
];

/// Number literals of every size and format JSON allows.
pub const NUMBERS: &[&str] = &[
    "1e400",
    "-1e400",
    "1e-400",
    "-0.0",
    "-0",
    "0",
    "1E+2",
    "1e2",
    "2.5E-3",
    "0.30000000000000004",
    "0.1000000000000000055",
    "12345678901234567890123",
    "-12345678901234567890123.000000000000000000001",
    "1.7976931348623157e308",
    "1.7976931348623159e308",
    "4.9e-324",
    "18446744073709551616",
    "-9223372036854775809",
];

const STRINGS: &[&str] = &[
    "plain",
    "é",
    "日本語",
    "😀",
    "\\\"quoted\\\"",
    "back\\\\slash",
    "line\\nbreak\\t",
    "\\u00e9\\u0000",
    "\\ud83d\\ude00",
    "\\/",
    "",
];

pub struct Gen(pub StdRng);

impl Gen {
    pub fn new(seed: u64) -> Self {
        Self(StdRng::seed_from_u64(seed))
    }

    pub fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.0.random_range(0..from.len())]
    }

    /// Insignificant whitespace, usually none.
    pub fn ws(&mut self) -> &'static str {
        self.pick(&["", "", "", " ", "\n", "\t", "\r\n  "])
    }

    /// A JSON string literal of a field name: mostly one of [`KEYS`], sometimes with a
    /// character written as a `\u` escape (so `"anomaly\u0064"` is `anomalyd`).
    pub fn key(&mut self) -> String {
        let k = if self.0.random_bool(0.8) {
            self.pick(KEYS).to_owned()
        } else {
            format!("k{}", self.0.random_range(0..1000))
        };
        let mut out = String::from("\"");
        for c in k.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_ascii_alphanumeric() && self.0.random_bool(0.05) => {
                    out.push_str(&format!("\\u{:04x}", c as u32))
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    pub fn number(&mut self) -> String {
        match self.0.random_range(0..4) {
            0 | 1 => self.pick(NUMBERS).to_owned(),
            2 => format!(
                "{:e}",
                self.0.random::<f64>() * 10f64.powi(self.0.random_range(-300..300))
            ),
            _ => format!("{}", self.0.random_range(-1_000_000i64..1_000_000)),
        }
    }

    pub fn string(&mut self) -> String {
        let n = self.0.random_range(0..4);
        let parts: Vec<&str> = (0..n).map(|_| self.pick(STRINGS)).collect();
        format!("\"{}\"", parts.concat())
    }

    /// Any JSON value, nested at most `depth` deep.
    pub fn value(&mut self, depth: u32) -> String {
        let kinds = if depth == 0 { 4 } else { 6 };
        match self.0.random_range(0..kinds) {
            0 => self.number(),
            1 => self.string(),
            2 => self.pick(&["true", "false", "null"]).to_owned(),
            3 => self.number(),
            4 => {
                let n = self.0.random_range(0..4);
                let items: Vec<String> = (0..n)
                    .map(|_| format!("{}{}{}", self.ws(), self.value(depth - 1), self.ws()))
                    .collect();
                format!("[{}]", items.join(","))
            }
            _ => self.object(depth - 1, None),
        }
    }

    /// A JSON object of random members, with `extra` (a member's text) among them.
    pub fn object(&mut self, depth: u32, extra: Option<&str>) -> String {
        let n = self.0.random_range(0..6);
        let mut members: Vec<String> = (0..n)
            .map(|_| {
                let (k, a, b, v) = (self.key(), self.ws(), self.ws(), self.value(depth));
                format!("{a}{k}{b}:{}{v}", self.ws())
            })
            .collect();
        if let Some(extra) = extra {
            let at = self.0.random_range(0..=members.len());
            members.insert(at, format!("{}{extra}{}", self.ws(), self.ws()));
        }
        format!("{{{}}}", members.join(","))
    }

    /// A source record for a model of two features read from `data`: mostly an object with
    /// random members and a `data` point (anomalous or not), sometimes one that is bad in a
    /// way the detector dead-letters, sometimes with a byte-order mark.
    pub fn record(&mut self) -> String {
        let data = match self.0.random_range(0..10) {
            0 => None,
            1 => Some(format!("\"data\":[[{}, 1]]", self.pick(NUMBERS))),
            2 => Some("\"data\":[1, 2, 3]".to_owned()),
            3 | 4 => Some("\"data\":[[2.0, 2.0]]".to_owned()),
            _ => Some(format!(
                "\"data\":[[{}, {}]]",
                self.pick(&["3.5", "-3.9", "0.0", "3.0e0", "35E-1"]),
                self.pick(&["-3.5", "3.9", "0.1", "-0.0"])
            )),
        };
        let text = match self.0.random_range(0..20) {
            0 => format!("[{}]", self.value(2)),
            1 => "{\"data\": [[1, 2]]".to_owned(),
            _ => self.object(2, data.as_deref()),
        };
        let (a, b) = (self.ws(), self.ws());
        let bom = if self.0.random_bool(0.05) {
            "\u{feff}"
        } else {
            ""
        };
        format!("{bom}{a}{text}{b}")
    }
}
