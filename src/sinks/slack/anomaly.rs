//! An anomaly record as the notifier reads it back from the anomalies topic: only what an alert
//! shows. That is anomalyd's additions (the `anomalyd` member, see
//! [`crate::sinks::anomalies`]) and, of the source record's own fields, a top-level `id`, which
//! people recognise. The source record is never converted, so any number in it (`1e400`) is
//! fine, and an `id` prints as it was sent.

use serde::Deserialize;
use thiserror::Error;

use crate::record::{self, Record, RecordError};
use crate::sinks::anomalies::{Layout, RESERVED, WRAPPED_RECORD};

#[derive(Debug, Error)]
pub enum ParseError {
    #[error("not an anomaly record: not JSON: {0}")]
    NotJson(#[from] RecordError),
    #[error("not an anomaly record: no top-level \"anomalyd\" object")]
    NoAdditions,
    #[error("not an anomaly record: its \"anomalyd\" object: {0}")]
    Additions(#[from] serde_json::Error),
}

/// One anomaly, as written by [`crate::sinks::anomalies::write_anomaly`].
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    /// The `[detectors.NAME]` that flagged it (empty if the record does not say).
    pub detector: String,
    /// In the scorer's native unit (Isolation Forest: `score_samples`, lower is more
    /// anomalous; rules: how many fired).
    pub score: f64,
    /// The scorer: a model `{id, kind}`, or for rules kind `rules` and the id of their text.
    pub model: ModelRef,
    /// For a rules detector, the rules that fired (from its `explanation`); else empty.
    pub rules: Vec<String>,
    pub source: Source,
    /// RFC 3339, UTC.
    pub detected_at: String,
    pub explanation: Vec<Explained>,
    /// The source record's `id`, when it has a string or number one (a number as written).
    pub id: Option<String>,
}

/// The part of anomalyd's additions an alert uses.
#[derive(Deserialize)]
struct Additions {
    #[serde(default)]
    detector: String,
    score: f64,
    model: ModelRef,
    source: Source,
    detected_at: String,
    #[serde(default)]
    explanation: Vec<Entry>,
    layout: Layout,
}

/// One `explanation` entry: a rule that fired (`{"rule": name}`), or a feature.
#[derive(Deserialize)]
#[serde(untagged)]
enum Entry {
    Rule { rule: String },
    Feature(Explained),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ModelRef {
    pub id: String,
    #[serde(default)]
    pub kind: String,
}

/// Where the scored record was read from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Source {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// One entry of the anomaly's `explanation`: a feature outside the middle of the training
/// data, with that range (`low`, `high`), or, when no feature is, one that isolated the record,
/// with its `share` of the attribution (see [`crate::sinks::anomalies::explanation`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Explained {
    pub feature: String,
    pub value: f64,
    #[serde(default)]
    pub low: Option<f64>,
    #[serde(default)]
    pub high: Option<f64>,
    #[serde(default)]
    pub share: Option<f64>,
}

impl Anomaly {
    /// Reads an anomaly record's additions and its source's `id`.
    pub fn parse(payload: &[u8]) -> Result<Self, ParseError> {
        let anomaly = Record::parse(Some(payload))?;
        let additions = anomaly.get(RESERVED).ok_or(ParseError::NoAdditions)?;
        let a: Additions = serde_json::from_str(additions)?;
        let id = match a.layout {
            Layout::Inline => anomaly.get("id"),
            // A CSV anomaly holds its cells under `record` too.
            Layout::Wrapped | Layout::Csv => anomaly
                .get(WRAPPED_RECORD)
                .and_then(record::members)
                .and_then(|m| m.iter().rev().find(|m| m.key == "id").map(|m| m.value)),
        };
        let (mut rules, mut explanation) = (Vec::new(), Vec::new());
        for entry in a.explanation {
            match entry {
                Entry::Rule { rule } => rules.push(rule),
                Entry::Feature(f) => explanation.push(f),
            }
        }
        Ok(Self {
            detector: a.detector,
            score: a.score,
            model: a.model,
            rules,
            source: a.source,
            detected_at: a.detected_at,
            explanation,
            id: id.and_then(display_id),
        })
    }
}

/// A string id unescaped, a number id exactly as written; anything else is no id.
fn display_id(text: &str) -> Option<String> {
    record::string(text)
        .map(Into::into)
        .or_else(|| record::number(text).map(|_| text.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::detect::model::LoadedModel as Model;
    use crate::sinks::SourceRef;
    use crate::sinks::anomalies::{Additions, Detection, write_anomaly};

    fn written(source: &str, model: &Model) -> Vec<u8> {
        let record = Record::parse(Some(source.as_bytes())).unwrap();
        let additions = Additions::new(
            &record,
            &Detection {
                score: -0.8,
                decision: -0.3,
                features: &[9.0, 9.0],
            },
            "tx",
            model,
            SourceRef {
                topic: "transactions",
                partition: 2,
                offset: 41,
            },
            SystemTime::UNIX_EPOCH,
        );
        let mut out = Vec::new();
        write_anomaly(&mut out, &record, &additions);
        out
    }

    #[test]
    fn reads_back_what_the_detector_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.iforest");
        crate::offline::train::train(&crate::offline::train::TrainOptions {
            trees: Some(20),
            ..crate::offline::train::TrainOptions::synthetic(42, path.clone())
        })
        .unwrap();
        let model = Model::load(&path).unwrap();
        // The source's own score, model and source do not confuse the reader.
        let out = written(
            r#"{"id": 17, "score": 712, "model": "X200", "source": "pos-12", "note": 1e400, "data": [[9.0, 9.0]]}"#,
            &model,
        );
        let a = Anomaly::parse(&out).unwrap();
        assert_eq!(a.score, -0.8);
        assert_eq!(a.detector, "tx");
        assert_eq!(a.rules, Vec::<String>::new());
        assert_eq!(a.model.id, model.id());
        assert_eq!(a.model.kind, "isolation_forest");
        assert_eq!(
            a.source,
            Source {
                topic: "transactions".into(),
                partition: 2,
                offset: 41
            }
        );
        assert_eq!(a.detected_at, "1970-01-01T00:00:00.000Z");
        assert_eq!(a.id.as_deref(), Some("17"));
        assert_eq!(a.explanation.len(), 2, "both features far outside");
        assert_eq!(a.explanation[0].value, 9.0);
        assert!(a.explanation[0].high.unwrap() < 9.0);

        // Ids as sent: a long number keeps its digits, a string is unescaped, and a wrapped
        // source's id is found in `record`.
        let a = Anomaly::parse(&written(r#"{"id": 12345678901234567890123}"#, &model)).unwrap();
        assert_eq!(a.id.as_deref(), Some("12345678901234567890123"));
        let a = Anomaly::parse(&written(r#"{"id": "a\"b"}"#, &model)).unwrap();
        assert_eq!(a.id.as_deref(), Some("a\"b"));
        let a =
            Anomaly::parse(&written(r#"{"id": "w", "anomalyd": {"score": 3}}"#, &model)).unwrap();
        assert_eq!((a.id.as_deref(), a.score), (Some("w"), -0.8));
        let a = Anomaly::parse(&written("[9, 9]", &model)).unwrap();
        assert_eq!(a.id, None);
    }

    #[test]
    fn attribution_entries_are_read_too() {
        let a = Anomaly::parse(
            br#"{"id": 1, "anomalyd": {"score": -0.6, "model": {"id": "m"}, "detected_at": "t",
                 "source": {"topic": "t", "partition": 0, "offset": 1}, "layout": "inline",
                 "explanation": [{"feature": "x1", "value": 0.2, "share": 0.62}]}}"#,
        )
        .unwrap();
        assert_eq!(a.explanation[0].share, Some(0.62));
        assert_eq!(a.explanation[0].low, None);
    }

    #[test]
    fn a_rules_anomaly_names_its_detector_and_the_rules_that_fired() {
        let a = Anomaly::parse(
            br#"{"t": 50, "anomalyd": {"detector": "sensors", "score": 2, "decision": -1,
                 "model": {"id": "ab12", "kind": "rules"}, "detected_at": "t",
                 "source": {"topic": "s", "partition": 0, "offset": 1}, "layout": "inline",
                 "explanation": [{"rule": "hot", "for": 3, "count": 4}, {"rule": "over_pressure"}]}}"#,
        )
        .unwrap();
        assert_eq!(a.detector, "sensors");
        assert_eq!(a.model.kind, "rules");
        assert_eq!(a.rules, ["hot", "over_pressure"]);
        assert!(a.explanation.is_empty());
    }

    #[test]
    fn other_records_are_refused() {
        assert!(Anomaly::parse(b"not json").is_err());
        let e = Anomaly::parse(br#"{"id": 1, "data": [[1, 2]]}"#).unwrap_err();
        assert!(matches!(e, ParseError::NoAdditions), "{e}");
        // The old layout, with the additions at the top level, is not read.
        assert!(
            Anomaly::parse(
                br#"{"score": -0.6, "model": {"id": "m"}, "detected_at": "t",
                     "source": {"topic": "t", "partition": 0, "offset": 1}}"#
            )
            .is_err()
        );
    }
}
