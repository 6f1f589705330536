//! The anomaly record published to the output topic: the source record's fields unchanged,
//! plus what the model said about it and which model said it.

use std::time::SystemTime;

use serde_json::{Map, Value, json};

use super::SourceRef;
use crate::detect::model::Model;

/// One scored record that the model flagged.
#[derive(Debug, Clone, Copy)]
pub struct Detection<'a> {
    /// `score_samples`: lower is more abnormal.
    pub score: f64,
    /// `decision_function`: negative means anomaly.
    pub decision: f64,
    pub features: &'a [f64],
}

/// Builds the anomaly record. A source record that is a JSON object keeps its fields at the top
/// level; any other JSON value is kept whole under `record`.
pub fn anomaly_record(
    source: Value,
    detection: &Detection<'_>,
    model: &Model,
    from: &SourceRef<'_>,
    detected_at: SystemTime,
) -> Value {
    let mut out = match source {
        Value::Object(map) => map,
        other => Map::from_iter([("record".to_owned(), other)]),
    };
    out.insert("score".into(), json!(detection.score));
    out.insert("decision".into(), json!(detection.decision));
    out.insert(
        "model".into(),
        json!({"id": model.id(), "kind": model.kind(), "path": model.path()}),
    );
    out.insert("source".into(), json!(from));
    out.insert(
        "detected_at".into(),
        Value::String(humantime::format_rfc3339_millis(detected_at).to_string()),
    );
    out.insert(
        "explanation".into(),
        Value::Array(explanation(detection.features, model)),
    );
    Value::Object(out)
}

/// The features that lie outside the middle 99 % of the training data, with that range.
fn explanation(features: &[f64], model: &Model) -> Vec<Value> {
    let names = model.feature_names();
    features
        .iter()
        .enumerate()
        .filter_map(|(i, &value)| {
            let (low, high) = model.training_range(i);
            (value < low || value > high).then(|| {
                json!({
                    "feature": names.get(i).map_or_else(|| format!("x{i}"), Clone::clone),
                    "value": value,
                    "low": low,
                    "high": high,
                })
            })
        })
        .collect()
}
