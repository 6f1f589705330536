//! Feature extraction: finding the model's input numbers in a JSON record.
//!
//! A record either carries its features in one field (`{"data": [[x, y]]}` or `{"data": [x, y]}`,
//! the generator's schema) or they are picked out by JSON pointers, one per feature. Anything
//! else is a [`Rejection`] with a reason code, so the record can go to the dead-letter topic
//! instead of stopping the stream.

use serde_json::Value;
use thiserror::Error;

use crate::config::FeatureSpec;

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
    #[error("expected {expected} features, found {found}")]
    WrongFeatureCount { expected: usize, found: usize },
}

impl Rejection {
    /// Every reason code, for metrics that list all of them even at zero.
    pub const REASONS: [&'static str; 5] = [
        "not_json",
        "missing_feature",
        "not_a_number",
        "not_finite",
        "wrong_feature_count",
    ];

    /// A stable, machine-readable code.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotJson(_) => "not_json",
            Self::MissingFeature(_) => "missing_feature",
            Self::NotANumber(_) => "not_a_number",
            Self::NotFinite(_) => "not_finite",
            Self::WrongFeatureCount { .. } => "wrong_feature_count",
        }
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

    /// Parses a record's payload as JSON.
    pub fn parse(payload: Option<&[u8]>) -> Result<Value, Rejection> {
        let bytes = payload.ok_or_else(|| Rejection::NotJson("the record has no value".into()))?;
        serde_json::from_slice(bytes).map_err(|e| {
            // serde_json refuses number literals beyond f64's range; that is a non-finite
            // feature value, not broken JSON.
            if e.to_string().starts_with("number out of range") {
                Rejection::NotFinite(format!("(a number out of range at column {})", e.column()))
            } else {
                Rejection::NotJson(e.to_string())
            }
        })
    }

    /// Appends exactly `expected` finite features of `record` to `out`, or leaves `out` as it
    /// was and says why not.
    pub fn extract(&self, record: &Value, out: &mut Vec<f64>) -> Result<(), Rejection> {
        let start = out.len();
        let result = match &self.spec {
            FeatureSpec::Field(field) => self.field_values(record, field, out),
            FeatureSpec::Pointers(pointers) => pointer_values(record, pointers, out),
        };
        let found = out.len() - start;
        let result = result.and_then(|()| {
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

    fn field_values(
        &self,
        record: &Value,
        field: &str,
        out: &mut Vec<f64>,
    ) -> Result<(), Rejection> {
        let value = record
            .get(field)
            .ok_or_else(|| Rejection::MissingFeature(format!("field {field:?}")))?;
        let Value::Array(items) = value else {
            return Err(Rejection::NotANumber(format!(
                "{field} (an array of numbers was expected)"
            )));
        };
        for (i, item) in items.iter().enumerate() {
            match item {
                // The generator's schema nests one point: [[x, y]].
                Value::Array(inner) => {
                    for (j, v) in inner.iter().enumerate() {
                        out.push(number(v, || format!("{field}[{i}][{j}]"))?);
                    }
                }
                v => out.push(number(v, || format!("{field}[{i}]"))?),
            }
            if out.len() > self.expected + 1024 {
                break; // a huge array is wrong anyway; don't copy all of it
            }
        }
        Ok(())
    }
}

fn pointer_values(
    record: &Value,
    pointers: &[String],
    out: &mut Vec<f64>,
) -> Result<(), Rejection> {
    for p in pointers {
        let v = record
            .pointer(p)
            .ok_or_else(|| Rejection::MissingFeature(p.clone()))?;
        out.push(number(v, || p.clone())?);
    }
    Ok(())
}

fn number(v: &Value, name: impl Fn() -> String) -> Result<f64, Rejection> {
    let x = v.as_f64().ok_or_else(|| Rejection::NotANumber(name()))?;
    if x.is_finite() {
        Ok(x)
    } else {
        Err(Rejection::NotFinite(name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(expected: usize) -> FeatureExtractor {
        FeatureExtractor::new(FeatureSpec::Field("data".into()), expected)
    }

    fn extract(fx: &FeatureExtractor, record: Value) -> Result<Vec<f64>, Rejection> {
        let mut out = vec![99.0];
        fx.extract(&record, &mut out)
            .map(|()| out[1..].to_vec())
            .inspect_err(|_| {
                assert_eq!(out, [99.0], "a rejected record adds nothing");
            })
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
        assert_eq!(
            FeatureExtractor::parse(Some(b"{\"data\": [[1, 2]]}")).unwrap(),
            json!({"data": [[1, 2]]})
        );
        assert_eq!(
            FeatureExtractor::parse(Some(b"{\"data\": [[1e999, 2]]}"))
                .unwrap_err()
                .reason(),
            "not_finite"
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
    fn names_say_where_the_bad_value_is() {
        let err = extract(&field(2), json!({"data": [[1, true]]})).unwrap_err();
        assert_eq!(err.to_string(), "feature data[0][1] is not a number");
    }

    #[test]
    fn huge_arrays_are_cut_short() {
        let big: Vec<f64> = (0..100_000).map(f64::from).collect();
        let err = extract(&field(2), json!({ "data": big })).unwrap_err();
        assert!(matches!(err, Rejection::WrongFeatureCount { expected: 2, found } if found < 2000));
    }
}
