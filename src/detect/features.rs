//! Feature extraction: finding the model's input numbers in a JSON record.
//!
//! A record either carries its features in one field (`{"data": [[x, y]]}` or `{"data": [x, y]}`,
//! the generator's schema) or they are picked out by JSON pointers, one per feature. Anything
//! else is a [`Rejection`] with a reason code, so the record can go to the dead-letter topic
//! instead of stopping the stream.
//!
//! Only the features are judged: the record is read as text ([`crate::record`]), and only the
//! feature values are converted to `f64`. A field that is not a feature may hold anything JSON
//! allows (`1e400`, a 30-digit integer) and passes on unchanged.

use thiserror::Error;

use crate::config::FeatureSpec;
use crate::record::{self, Record, RecordError};

/// Why a record cannot be scored. The [`reason`](Rejection::reason) code goes into the
/// dead-letter record's headers and the metrics; the message says exactly what was wrong.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Rejection {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("missing feature {0}")]
    MissingFeature(String),
    #[error("feature {0} is not a number")]
    NotANumber(String),
    #[error("feature {0} is not a finite number")]
    NotFinite(String),
    /// `found` is the real count, however long the array.
    #[error("expected {expected} features, found {found}")]
    WrongFeatureCount { expected: usize, found: usize },
    /// A rule could not be evaluated on the record (see
    /// [`RuleError`](crate::detect::rules::RuleError)): the text names the rule and the reason.
    #[error("{0}")]
    Rule(String),
    /// A CSV record's value is not UTF-8 ([`crate::detect::csv_record`]).
    #[error("not UTF-8: {0}")]
    NotUtf8(String),
    /// A CSV record's value is not one CSV line (empty, or two lines).
    #[error("not one CSV line: {0}")]
    NotCsv(String),
    /// A CSV line with another number of fields than the detector's `columns`.
    #[error("expected {expected} fields, found {found}")]
    WrongFieldCount { expected: usize, found: usize },
}

impl Rejection {
    /// Every reason code, for metrics that list all of them even at zero.
    pub const REASONS: [&'static str; 9] = [
        "not_json",
        "missing_feature",
        "not_a_number",
        "not_finite",
        "wrong_feature_count",
        crate::detect::rules::RuleError::CODE,
        "not_utf8",
        "not_csv",
        "wrong_field_count",
    ];

    /// A stable, machine-readable code.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotJson(_) => "not_json",
            Self::MissingFeature(_) => "missing_feature",
            Self::NotANumber(_) => "not_a_number",
            Self::NotFinite(_) => "not_finite",
            Self::WrongFeatureCount { .. } => "wrong_feature_count",
            Self::Rule(_) => crate::detect::rules::RuleError::CODE,
            Self::NotUtf8(_) => "not_utf8",
            Self::NotCsv(_) => "not_csv",
            Self::WrongFieldCount { .. } => "wrong_field_count",
        }
    }
}

impl From<RecordError> for Rejection {
    fn from(e: RecordError) -> Self {
        Self::NotJson(e.to_string())
    }
}

/// Pulls a fixed number of features out of records, per the configured [`FeatureSpec`].
#[derive(Debug, Clone)]
pub struct FeatureExtractor {
    spec: FeatureSpec,
    expected: usize,
}

impl FeatureExtractor {
    /// `expected` is the model's feature count.
    pub fn new(spec: FeatureSpec, expected: usize) -> Self {
        Self { spec, expected }
    }

    /// How many features a pointer list yields, known before any record arrives; `None` for a
    /// field, whose arrays are checked record by record.
    pub fn configured_count(spec: &FeatureSpec) -> Option<usize> {
        match spec {
            FeatureSpec::Field(_) => None,
            FeatureSpec::Pointers(p) => Some(p.len()),
        }
    }

    /// Checks a record's payload as JSON (a leading UTF-8 byte-order mark is ignored) without
    /// converting any of it; see [`Record::parse`].
    pub fn parse(payload: Option<&[u8]>) -> Result<Record<'_>, Rejection> {
        Ok(Record::parse(payload)?)
    }

    /// Appends exactly `expected` finite features of `record` to `out`, or leaves `out` as it
    /// was and says why not.
    pub fn extract(&self, record: &Record<'_>, out: &mut Vec<f64>) -> Result<(), Rejection> {
        let start = out.len();
        let result = match &self.spec {
            FeatureSpec::Field(field) => self.field_values(record, field, out),
            FeatureSpec::Pointers(pointers) => pointer_values(record, pointers, out),
        };
        let result = result.and_then(|found| {
            (found == self.expected)
                .then_some(())
                .ok_or(Rejection::WrongFeatureCount {
                    expected: self.expected,
                    found,
                })
        });
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// The numbers of the array field `field`, flat or one point nested (`[[x, y]]`), in
    /// order; returns how many there are. Every element is checked to be a number, but only
    /// the first `expected` are converted and kept: a longer array is wrong anyway, and is
    /// counted to the end so the error can say by how much.
    fn field_values(
        &self,
        record: &Record<'_>,
        field: &str,
        out: &mut Vec<f64>,
    ) -> Result<usize, Rejection> {
        let value = record
            .get(field)
            .ok_or_else(|| Rejection::MissingFeature(format!("field {field:?}")))?;
        let not_array =
            || Rejection::NotANumber(format!("{field} (an array of numbers was expected)"));
        if !value.starts_with('[') {
            return Err(not_array());
        }
        let mut found = 0usize;
        let mut problem = None;
        let mut take = |v: &str, name: &dyn Fn() -> String| {
            if found < self.expected {
                match number(v, name) {
                    Ok(x) => out.push(x),
                    Err(r) => {
                        problem = Some(r);
                        return false;
                    }
                }
            } else if record::number(v).is_none() {
                problem = Some(Rejection::NotANumber(name()));
                return false;
            }
            found += 1;
            true
        };
        // Numbers only (the usual case): split by counting brackets, no parser.
        if record::for_each_numeric_element(value, |i, item| {
            if item.starts_with('[') {
                // The generator's schema nests one point: [[x, y]].
                let mut go_on = true;
                record::for_each_numeric_element(item, |j, v| {
                    go_on = take(v, &|| format!("{field}[{i}][{j}]"));
                    go_on
                });
                go_on
            } else {
                take(item, &|| format!("{field}[{i}]"))
            }
        })
        .is_none()
        {
            record::for_each_element(value, |i, item| {
                if item.starts_with('[') {
                    let mut go_on = true;
                    let inner = record::for_each_element(item, |j, v| {
                        go_on = take(v, &|| format!("{field}[{i}][{j}]"));
                        go_on
                    });
                    inner.is_ok() && go_on
                } else {
                    take(item, &|| format!("{field}[{i}]"))
                }
            })
            .map_err(|_| not_array())?;
        }
        match problem {
            Some(r) => Err(r),
            None => Ok(found),
        }
    }
}

/// The number at each pointer, in order; returns how many (always `pointers.len()`).
fn pointer_values(
    record: &Record<'_>,
    pointers: &[String],
    out: &mut Vec<f64>,
) -> Result<usize, Rejection> {
    for p in pointers {
        let v = record
            .pointer(p)
            .ok_or_else(|| Rejection::MissingFeature(p.clone()))?;
        out.push(number(v, &|| p.clone())?);
    }
    Ok(pointers.len())
}

/// A feature's value from its JSON text: a number within `f64`'s range.
fn number(text: &str, name: &dyn Fn() -> String) -> Result<f64, Rejection> {
    let x = record::number(text).ok_or_else(|| Rejection::NotANumber(name()))?;
    if x.is_finite() {
        Ok(x)
    } else {
        Err(Rejection::NotFinite(name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn field(expected: usize) -> FeatureExtractor {
        FeatureExtractor::new(FeatureSpec::Field("data".into()), expected)
    }

    fn extract_text(fx: &FeatureExtractor, text: &str) -> Result<Vec<f64>, Rejection> {
        let record = FeatureExtractor::parse(Some(text.as_bytes()))?;
        let mut out = vec![99.0];
        fx.extract(&record, &mut out)
            .map(|()| out[1..].to_vec())
            .inspect_err(|_| {
                assert_eq!(out, [99.0], "a rejected record adds nothing");
            })
    }

    fn extract(fx: &FeatureExtractor, record: Value) -> Result<Vec<f64>, Rejection> {
        extract_text(fx, &record.to_string())
    }

    #[test]
    fn nested_and_flat_arrays() {
        let fx = field(2);
        assert_eq!(
            extract(&fx, json!({"data": [[1.5, -2]]})),
            Ok(vec![1.5, -2.0])
        );
        assert_eq!(
            extract(&fx, json!({"data": [3, 4.25]})),
            Ok(vec![3.0, 4.25])
        );
    }

    #[test]
    fn pointers_pick_nested_values() {
        let fx = FeatureExtractor::new(
            FeatureSpec::Pointers(vec!["/sensor/t".into(), "/p".into()]),
            2,
        );
        assert_eq!(
            extract(&fx, json!({"sensor": {"t": 21.5}, "p": 1013})),
            Ok(vec![21.5, 1013.0])
        );
        assert_eq!(
            extract(&fx, json!({"sensor": {}, "p": 1013})),
            Err(Rejection::MissingFeature("/sensor/t".into()))
        );
    }

    #[test]
    fn every_rejection_has_its_reason() {
        let fx = field(2);
        let reason = |r: Result<Vec<f64>, Rejection>| r.unwrap_err().reason();
        assert_eq!(reason(extract(&fx, json!({"other": 1}))), "missing_feature");
        assert_eq!(reason(extract(&fx, json!([1, 2]))), "missing_feature");
        assert_eq!(
            reason(extract(&fx, json!({"data": [[1, "x"]]}))),
            "not_a_number"
        );
        assert_eq!(reason(extract(&fx, json!({"data": "1,2"}))), "not_a_number");
        assert_eq!(
            reason(extract(&fx, json!({"data": [[1, null]]}))),
            "not_a_number"
        );
        assert_eq!(
            reason(extract(&fx, json!({"data": [[1, 2, 3]]}))),
            "wrong_feature_count"
        );
        assert_eq!(
            reason(extract(&fx, json!({"data": []}))),
            "wrong_feature_count"
        );
    }

    #[test]
    fn parse_tells_broken_json_from_out_of_range_numbers() {
        let fx = field(2);
        assert_eq!(
            extract_text(&fx, r#"{"data": [[1e999, 2]]}"#),
            Err(Rejection::NotFinite("data[0][0]".into()))
        );
        assert_eq!(
            FeatureExtractor::parse(Some(b"not json"))
                .unwrap_err()
                .reason(),
            "not_json"
        );
        assert_eq!(
            FeatureExtractor::parse(None).unwrap_err().reason(),
            "not_json"
        );
    }

    #[test]
    fn only_the_features_are_judged() {
        // Issue 11: `note` is not a feature; 1e400 there is the record's business.
        let fx = field(2);
        assert_eq!(
            extract_text(&fx, r#"{"id": "x", "note": 1e400, "data": [[3.5, -3.5]]}"#),
            Ok(vec![3.5, -3.5])
        );
        assert_eq!(
            extract_text(
                &fx,
                r#"{"big": 123456789012345678901234567890, "n": [1e400, -1e400], "data": [1, 2]}"#
            ),
            Ok(vec![1.0, 2.0])
        );
        // A feature out of range is still not finite, named by its pointer.
        let fx = FeatureExtractor::new(
            FeatureSpec::Pointers(vec!["/amount".into(), "/hour".into()]),
            2,
        );
        let err = extract_text(&fx, r#"{"amount": 1e400, "hour": 3}"#).unwrap_err();
        assert_eq!(err.to_string(), "feature /amount is not a finite number");
        assert_eq!(err.reason(), "not_finite");
        assert_eq!(
            extract_text(
                &fx,
                r#"{"amount": -1E+2, "hour": 0.30000000000000004, "x": 1e999}"#
            ),
            Ok(vec![-100.0, 0.30000000000000004])
        );
    }

    #[test]
    fn a_byte_order_mark_before_json_is_ignored() {
        let fx = field(2);
        assert_eq!(
            extract_text(&fx, "\u{feff}{\"data\": [[3.5, -3.5]]}"),
            Ok(vec![3.5, -3.5])
        );
    }

    #[test]
    fn names_say_where_the_bad_value_is() {
        let err = extract(&field(2), json!({"data": [[1, true]]})).unwrap_err();
        assert_eq!(err.to_string(), "feature data[0][1] is not a number");
        let err = extract(&field(2), json!({"data": [1, 2, 3, "x"]})).unwrap_err();
        assert_eq!(err.to_string(), "feature data[3] is not a number");
    }

    #[test]
    fn huge_arrays_are_counted_to_the_end() {
        // Issue 11: 130,000 numbers were reported as "found 1025".
        let big: Vec<f64> = (0..130_000).map(f64::from).collect();
        let err = extract(&field(2), json!({ "data": big })).unwrap_err();
        assert_eq!(
            err,
            Rejection::WrongFeatureCount {
                expected: 2,
                found: 130_000
            }
        );
        assert_eq!(err.to_string(), "expected 2 features, found 130000");
        let nested: Vec<Vec<u32>> = vec![(0..70_000).collect(), (0..60_000).collect()];
        let err = extract(&field(2), json!({ "data": nested })).unwrap_err();
        assert!(
            matches!(err, Rejection::WrongFeatureCount { found: 130_000, .. }),
            "{err}"
        );
    }
}
