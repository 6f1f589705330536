//! An anomaly record as the notifier reads it back from the anomalies topic: only the fields an
//! alert shows. The record's other fields (the source record's own) are ignored, except a
//! top-level `id`, which people recognise.

use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

#[derive(Debug, Error)]
#[error("not an anomaly record: {0}")]
pub struct ParseError(#[from] serde_json::Error);

/// One anomaly, as written by [`crate::sinks::anomalies::anomaly_record`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Anomaly {
    /// `score_samples`: lower is more anomalous.
    pub score: f64,
    pub model: ModelRef,
    pub source: Source,
    /// RFC 3339, UTC.
    pub detected_at: String,
    #[serde(default)]
    pub explanation: Vec<Explained>,
    /// The source record's `id`, when it has a string or number one.
    #[serde(default, deserialize_with = "display_id")]
    pub id: Option<String>,
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
    pub fn parse(payload: &[u8]) -> Result<Self, ParseError> {
        Ok(serde_json::from_slice(payload)?)
    }
}

fn display_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::detect::model::Model;
    use crate::sinks::SourceRef;
    use crate::sinks::anomalies::{Detection, anomaly_record};

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
        let source = serde_json::json!({"id": 17, "data": [[9.0, 9.0]]});
        let record = anomaly_record(
            source,
            &Detection {
                score: -0.8,
                decision: -0.3,
                features: &[9.0, 9.0],
            },
            "tx",
            &model,
            &SourceRef {
                topic: "transactions",
                partition: 2,
                offset: 41,
            },
            SystemTime::UNIX_EPOCH,
        );
        let a = Anomaly::parse(record.to_string().as_bytes()).unwrap();
        assert_eq!(a.score, -0.8);
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
    }

    #[test]
    fn attribution_entries_are_read_too() {
        let a = Anomaly::parse(
            br#"{"score": -0.6, "model": {"id": "m"}, "detected_at": "t",
                 "source": {"topic": "t", "partition": 0, "offset": 1},
                 "explanation": [{"feature": "x1", "value": 0.2, "share": 0.62}]}"#,
        )
        .unwrap();
        assert_eq!(a.explanation[0].share, Some(0.62));
        assert_eq!(a.explanation[0].low, None);
    }

    #[test]
    fn other_records_are_refused() {
        assert!(Anomaly::parse(b"not json").is_err());
        assert!(Anomaly::parse(br#"{"id": 1, "data": [[1, 2]]}"#).is_err());
    }
}
