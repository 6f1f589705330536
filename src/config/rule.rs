//! One entry of a `[detectors.NAME.rules]` table: a CEL expression, and optionally a `for`
//! (consecutive matching readings of a key before the rule fires, see
//! [`crate::detect::streaks`]).
//!
//! Two spellings, both TOML: `hot = "temperature > 40.0"` (fires on every matching reading)
//! and `hot = { expr = "temperature > 40.0", for = 3 }` (an inline table). Read by hand
//! rather than with `#[serde(untagged)]`, so that a wrong key or type is named in the error
//! rather than "did not match any variant".

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One rule: its expression and its `for`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// The CEL expression, e.g. `temperature > 40.0`.
    pub expr: String,
    /// Consecutive matching readings of the same key before the rule fires; 1 (the default)
    /// fires on every matching reading. Valid: 1 to [`crate::detect::streaks::MAX_FOR`]
    /// (checked by [`super::Config::validate`]).
    pub for_readings: u32,
}

impl From<&str> for RuleSpec {
    /// A rule without `for`.
    fn from(expr: &str) -> Self {
        Self {
            expr: expr.to_owned(),
            for_readings: 1,
        }
    }
}

/// The short form (`"expr"`) when `for` is 1, else the inline table.
impl Serialize for RuleSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.for_readings == 1 {
            return serializer.serialize_str(&self.expr);
        }
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("expr", &self.expr)?;
        map.serialize_entry("for", &self.for_readings)?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for RuleSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SpecVisitor)
    }
}

struct SpecVisitor;

impl<'de> Visitor<'de> for SpecVisitor {
    type Value = RuleSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a CEL expression (\"temperature > 40.0\") or a table \
             { expr = \"temperature > 40.0\", for = 3 }",
        )
    }

    fn visit_str<E: de::Error>(self, expr: &str) -> Result<RuleSpec, E> {
        Ok(RuleSpec::from(expr))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RuleSpec, A::Error> {
        let (mut expr, mut for_readings) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "expr" if expr.is_some() => return Err(de::Error::duplicate_field("expr")),
                "for" if for_readings.is_some() => return Err(de::Error::duplicate_field("for")),
                "expr" => expr = Some(map.next_value::<String>()?),
                "for" => {
                    let n: i64 = map.next_value()?;
                    let n = u32::try_from(n).map_err(|_| {
                        de::Error::invalid_value(
                            de::Unexpected::Signed(n),
                            &"a number of readings, at least 1",
                        )
                    })?;
                    for_readings = Some(n);
                }
                other => return Err(de::Error::unknown_field(other, &["expr", "for"])),
            }
        }
        Ok(RuleSpec {
            expr: expr.ok_or_else(|| de::Error::missing_field("expr"))?,
            for_readings: for_readings.unwrap_or(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn parse(text: &str) -> Result<BTreeMap<String, RuleSpec>, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn both_spellings_read_and_write_back() {
        let rules = parse(
            "hot = \"temperature > 40.0\"\n\
             steady = { expr = \"pressure > 120.0\", for = 3 }\n\
             once = { expr = \"t > 1.0\" }\n",
        )
        .unwrap();
        assert_eq!(rules["hot"], RuleSpec::from("temperature > 40.0"));
        assert_eq!(
            rules["steady"],
            RuleSpec {
                expr: "pressure > 120.0".into(),
                for_readings: 3
            }
        );
        assert_eq!(rules["once"], RuleSpec::from("t > 1.0"));
        let text = toml::to_string(&rules).unwrap();
        assert_eq!(parse(&text).unwrap(), rules);
        assert!(text.contains("hot = \"temperature > 40.0\""), "{text}");
    }

    #[test]
    fn a_wrong_key_or_value_is_named() {
        for (text, says) in [
            ("a = { expr = \"t > 1.0\", fro = 3 }", "unknown field `fro`"),
            ("a = { for = 3 }", "missing field `expr`"),
            ("a = { expr = \"t > 1.0\", for = -1 }", "at least 1"),
            ("a = { expr = \"t > 1.0\", for = \"3\" }", "invalid type"),
            ("a = 3", "a CEL expression"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
