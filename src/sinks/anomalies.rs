//! The anomaly record published to the output topic: the source record's fields unchanged,
//! plus what the scorer said about it, which detector and which scorer said it, and why
//! (`explanation`).

use std::time::SystemTime;

use serde_json::{Map, Value, json};

use super::SourceRef;
use crate::detect::model::Model;
use crate::detect::scorer::Scorer;

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
/// level; any other JSON value is kept whole under `record`. `detector` is the name of the
/// `[detectors.NAME]` that flagged it; `model` is the scorer's [identity](Scorer::identity).
pub fn anomaly_record(
    source: Value,
    detection: &Detection<'_>,
    detector: &str,
    scorer: &dyn Scorer,
    from: &SourceRef<'_>,
    detected_at: SystemTime,
) -> Value {
    let explanation = scorer.explain(detection.features, &source);
    let mut out = match source {
        Value::Object(map) => map,
        other => Map::from_iter([("record".to_owned(), other)]),
    };
    out.insert("score".into(), json!(detection.score));
    out.insert("decision".into(), json!(detection.decision));
    out.insert("detector".into(), Value::String(detector.to_owned()));
    out.insert("model".into(), json!(scorer.identity()));
    out.insert("source".into(), json!(from));
    out.insert(
        "detected_at".into(),
        Value::String(humantime::format_rfc3339_millis(detected_at).to_string()),
    );
    out.insert("explanation".into(), explanation);
    Value::Object(out)
}

/// Attribution entries listed at most; the rest of the share is left out.
const MAX_ATTRIBUTED: usize = 3;
/// Attribution entries are listed, most first, until they cover this share.
const ATTRIBUTION_COVER: f64 = 0.8;
/// Below this share, an entry after the first is not listed.
const MIN_SHARE: f64 = 0.01;

/// Why the record is an anomaly, as a JSON array of one of two kinds of entry:
///
/// - the features outside the middle 99 % of the training data (their 0.5th to 99.5th
///   percentiles), each `{"feature", "value", "low", "high"}`;
/// - when no feature is, the features that isolated the record in the trees
///   ([`IsolationForest::attribution`](crate::detect::forest::IsolationForest::attribution)),
///   each `{"feature", "value", "share"}` with `share` the feature's part of the whole
///   attribution (3 decimals), most first, as many as cover 80 % of it, at most 3, and none
///   after the first below 1 %.
///
/// The attribution walks every tree once more, so it is computed only here, for anomalies,
/// and only when the ranges say nothing.
pub fn explanation(features: &[f64], model: &Model) -> Vec<Value> {
    let name = |i: usize| {
        model
            .feature_names()
            .get(i)
            .map_or_else(|| format!("x{i}"), Clone::clone)
    };
    let outside: Vec<Value> = features
        .iter()
        .enumerate()
        .filter_map(|(i, &value)| {
            let (low, high) = model.training_range(i);
            (value < low || value > high).then(|| {
                json!({
                    "feature": name(i),
                    "value": value,
                    "low": low,
                    "high": high,
                })
            })
        })
        .collect();
    if !outside.is_empty() || features.len() != model.n_features() {
        return outside;
    }
    let shares = model.forest().attribution(features);
    let mut ranked: Vec<(usize, f64)> = shares
        .into_iter()
        .enumerate()
        .filter(|(_, s)| *s > 0.0)
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut covered = 0.0;
    let mut out = Vec::new();
    for (i, share) in ranked.into_iter().take(MAX_ATTRIBUTED) {
        // Sorted, so once covered (or down to crumbs) the rest adds nothing a reader needs.
        if covered >= ATTRIBUTION_COVER || (!out.is_empty() && share < MIN_SHARE) {
            break;
        }
        covered += share;
        out.push(json!({
            "feature": name(i),
            "value": features[i],
            "share": (share * 1000.0).round() / 1000.0,
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_model(dir: &std::path::Path) -> Model {
        let path = dir.join("m.iforest");
        crate::offline::train::train(&crate::offline::train::TrainOptions::synthetic(
            42,
            path.clone(),
        ))
        .unwrap();
        Model::load(&path).unwrap()
    }

    #[test]
    fn out_of_range_features_are_named_with_their_range() {
        let dir = tempfile::tempdir().unwrap();
        let model = demo_model(dir.path());
        let e = explanation(&[9.0, 2.0], &model);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0]["feature"], "x0");
        assert_eq!(e[0]["value"], 9.0);
        assert!(e[0]["high"].as_f64().unwrap() < 9.0);
        assert!(e[0].get("share").is_none());
    }

    #[test]
    fn in_range_anomalies_name_what_isolated_them() {
        let dir = tempfile::tempdir().unwrap();
        let model = demo_model(dir.path());
        // Between the two blobs: inside both features' ranges, yet anomalous.
        let x = [0.0, 0.1];
        assert!(model.decision(model.score(&x)) < 0.0);
        let e = explanation(&x, &model);
        assert!(!e.is_empty() && e.len() <= MAX_ATTRIBUTED, "{e:?}");
        let shares: Vec<f64> = e.iter().map(|v| v["share"].as_f64().unwrap()).collect();
        assert!(shares.windows(2).all(|w| w[0] >= w[1]), "most first: {e:?}");
        assert!(shares.iter().sum::<f64>() <= 1.0 + 1e-9);
        for v in &e {
            assert!(v.get("low").is_none());
            let i: usize = v["feature"].as_str().unwrap()[1..].parse().unwrap();
            assert_eq!(v["value"], x[i]);
        }
    }
}
