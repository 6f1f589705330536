//! The anomaly record published to the output topic: the source record, byte for byte, with
//! what the scorer said about it, which detector and which scorer said it, and why, under one
//! reserved key, [`RESERVED`] (`"anomalyd"`).
//!
//! # Layout
//!
//! - **inline** (the usual case): the source is a JSON object without a top-level `anomalyd`
//!   member. The anomaly is the source's text with `,"anomalyd":{…}` spliced in before its
//!   final `}`: every byte of the source's own members survives (numbers such as `1e400` or
//!   `0.1000000000000000055`, key order, repeated keys, escapes, whitespace), and a consumer
//!   reads the source's fields where they were.
//! - **wrapped**: the source already has a top-level `anomalyd` member (an anomaly fed back in,
//!   say), or is not an object (an array, when `features` are pointers into one). The anomaly
//!   is `{"record":<source text>,"anomalyd":{…}}`, so nothing of the source is overwritten or
//!   shadowed.
//!
//! - **csv**: the source is a CSV line (`format = "csv"`). The anomaly is
//!   `{"line":"<the line>","record":{"<column>":"<cell>",…},"anomalyd":{…}}`: the exact line
//!   (without its trailing line ending) as a JSON string, and its cells as strings by column
//!   name ([`crate::detect::csv_record`]).
//!
//! With `scored_topic`, every scored record, anomaly or not, goes there too in the same shape,
//! its `anomalyd` member saying `"anomaly": true` or `false` right after `detector` (and
//! `variant`); a record that is not an anomaly has an empty `explanation`. The anomalies on the
//! output topic have no `anomaly` member.
//!
//! `anomalyd.layout` says which (`"inline"`, `"wrapped"` or `"csv"`); the source record is the anomaly
//! without its `anomalyd` member, or its `record` member. The splice is built straight into a
//! byte buffer: no JSON tree of the source is ever made.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::SourceRef;
use crate::detect::model::{LoadedModel, Model};
use crate::detect::scorer::{Scorer, ScorerIdentity};
use crate::record::Record;

/// The top-level key holding anomalyd's additions.
pub const RESERVED: &str = "anomalyd";
/// The top-level key holding the source record in the wrapped layout.
pub const WRAPPED_RECORD: &str = "record";

/// One scored record that the model flagged.
#[derive(Debug, Clone, Copy)]
pub struct Detection<'a> {
    /// `score_samples`: lower is more abnormal.
    pub score: f64,
    /// `decision_function`: negative means anomaly.
    pub decision: f64,
    pub features: &'a [f64],
}

/// Where the source record is in an anomaly (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// The anomaly is the source object plus an `anomalyd` member.
    Inline,
    /// The source is the anomaly's `record` member.
    Wrapped,
    /// The source is a CSV line: the anomaly's `line` member, its cells in `record`.
    Csv,
}

impl Layout {
    /// Inline for an object without a top-level [`RESERVED`] member, else wrapped.
    pub fn of(source: &Record<'_>) -> Self {
        match source.members() {
            Some(m) if !m.iter().any(|m| m.key == RESERVED) => Self::Inline,
            _ => Self::Wrapped,
        }
    }
}

/// anomalyd's additions, the value of the [`RESERVED`] member, in this order.
#[derive(Debug, Clone, Serialize)]
pub struct Additions<'a> {
    /// The `[detectors.NAME]` that flagged the record.
    pub detector: &'a str,
    /// The detector's A/B variant (`split.variant`); absent without a split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<&'a str>,
    /// On the scored topic only (`scored_topic`): whether the record is an anomaly
    /// (`decision < 0`). Absent on the output topic, whose records all are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<bool>,
    /// In the scorer's native unit (Isolation Forest: `score_samples`, lower is more
    /// abnormal).
    pub score: f64,
    /// Negative means anomaly, for every kind (Isolation Forest: `decision_function`).
    pub decision: f64,
    /// The scorer that flagged it: `{id, kind, path}`.
    pub model: ScorerIdentity,
    pub source: SourceRef<'a>,
    /// RFC 3339, UTC, milliseconds.
    pub detected_at: String,
    /// See [`explanation`] (or the scorer's own [`Scorer::explain`]); empty for a scored
    /// record that is not an anomaly.
    pub explanation: Vec<Value>,
    pub layout: Layout,
}

impl<'a> Additions<'a> {
    /// What anomalyd adds to `source`, scored as `detection` by `scorer` for `detector`
    /// (without a variant: set [`Additions::variant`] for a split detector).
    pub fn new(
        source: &Record<'_>,
        detection: &Detection<'_>,
        detector: &'a str,
        scorer: &dyn Scorer,
        from: SourceRef<'a>,
        detected_at: SystemTime,
    ) -> Self {
        let mut additions =
            Self::not_anomalous(source, detection, detector, scorer, from, detected_at);
        additions.anomaly = None;
        additions.explanation = scorer.explain(detection.features, source);
        additions
    }

    /// What anomalyd adds to a record its detector has judged: [`Additions::new`] for an
    /// anomaly (`detection.decision < 0.0`), whose `explanation` is `fired` when the scorer
    /// gave one (rules with `for`: [`crate::detect::scorer::score_partition_batch`]; taken,
    /// leaving it empty), and [`Additions::not_anomalous`] otherwise.
    pub fn judged(
        source: &Record<'_>,
        detection: &Detection<'_>,
        detector: &'a str,
        scorer: &dyn Scorer,
        from: SourceRef<'a>,
        detected_at: SystemTime,
        fired: Option<&mut Vec<Value>>,
    ) -> Self {
        let mut additions =
            Self::not_anomalous(source, detection, detector, scorer, from, detected_at);
        // As the worker decides (a NaN decision is not an anomaly).
        if detection.decision < 0.0 {
            additions.anomaly = None;
            additions.explanation = match fired {
                // Explained as it was scored: [`Scorer::explain`] would be thrown away.
                Some(fired) => std::mem::take(fired),
                None => scorer.explain(detection.features, source),
            };
        }
        additions
    }

    /// What anomalyd adds to `source` on the scored topic when `detection` is not an
    /// anomaly: `anomaly: false` and an empty `explanation` (explaining costs a walk of every
    /// tree, and there is nothing to explain).
    pub fn not_anomalous(
        source: &Record<'_>,
        detection: &Detection<'_>,
        detector: &'a str,
        scorer: &dyn Scorer,
        from: SourceRef<'a>,
        detected_at: SystemTime,
    ) -> Self {
        Self {
            detector,
            variant: None,
            anomaly: Some(false),
            score: detection.score,
            decision: detection.decision,
            model: scorer.identity(),
            source: from,
            detected_at: humantime::format_rfc3339_millis(detected_at).to_string(),
            explanation: Vec::new(),
            layout: Layout::of(source),
        }
    }
}

/// Writes the anomaly record of `source` with `additions` into `out` (cleared first), per
/// `additions.layout`, and returns where in `out` the additions' JSON object is. `out` can be
/// reused from record to record.
pub fn write_anomaly(
    out: &mut Vec<u8>,
    source: &Record<'_>,
    additions: &Additions<'_>,
) -> std::ops::Range<usize> {
    out.clear();
    let text = source.text().as_bytes();
    out.reserve(text.len() + 512);
    match additions.layout {
        // A CSV line's JSON view is an object without an `anomalyd` member.
        Layout::Inline | Layout::Csv => {
            // `text` is an object: it ends with its `}`.
            out.extend_from_slice(&text[..text.len() - 1]);
            if source.members().is_some_and(|m| !m.is_empty()) {
                out.push(b',');
            }
        }
        Layout::Wrapped => {
            out.extend_from_slice(b"{\"");
            out.extend_from_slice(WRAPPED_RECORD.as_bytes());
            out.extend_from_slice(b"\":");
            out.extend_from_slice(text);
            out.push(b',');
        }
    }
    out.push(b'"');
    out.extend_from_slice(RESERVED.as_bytes());
    out.extend_from_slice(b"\":");
    let start = out.len();
    serde_json::to_writer(&mut *out, additions).expect("additions always serialise");
    let end = out.len();
    out.push(b'}');
    start..end
}

/// The source record's text inside an anomaly written by [`write_anomaly`]: what a consumer
/// gets by removing `,"anomalyd":{…}` (inline) or taking `record` (wrapped). `None` when
/// `anomaly` is not such a record.
pub fn source_text<'a>(anomaly: &Record<'a>) -> Option<String> {
    let members = anomaly.members()?;
    let additions = members.iter().rev().find(|m| m.key == RESERVED)?;
    let layout: Layout = serde_json::from_str::<LayoutOnly>(additions.value)
        .ok()?
        .layout;
    match layout {
        Layout::Wrapped => anomaly.get(WRAPPED_RECORD).map(str::to_owned),
        Layout::Inline | Layout::Csv => {
            // The additions are the last member, spliced in as `,"anomalyd":` (or without the
            // comma in an empty object) right before the final `}`.
            let text = anomaly.text();
            let at = text.len().checked_sub(1 + additions.value.len())?;
            if text.get(at..text.len() - 1)? != additions.value {
                return None;
            }
            let head = text.get(..at)?.strip_suffix("\"anomalyd\":")?;
            let head = if members.len() > 1 {
                head.strip_suffix(',')?
            } else {
                head
            };
            Some(format!("{head}}}"))
        }
    }
}

#[derive(Deserialize)]
struct LayoutOnly {
    layout: Layout,
}

/// What [`explanation`] needs of a model: its features' names and training ranges, and each
/// feature's share of a record's score.
pub trait Explained {
    fn feature_names(&self) -> &[String];
    fn n_features(&self) -> usize;
    /// `(p0.5, p99.5)` of `feature` in the training data.
    fn training_range(&self, feature: usize) -> (f64, f64);
    /// Each feature's share of why `x` scored as it did (see
    /// [`crate::detect::model::Scorer::attribution`]).
    fn attribution(&self, x: &[f64]) -> Vec<f64>;
}

impl Explained for Model {
    fn feature_names(&self) -> &[String] {
        Model::feature_names(self)
    }
    fn n_features(&self) -> usize {
        Model::n_features(self)
    }
    fn training_range(&self, feature: usize) -> (f64, f64) {
        Model::training_range(self, feature)
    }
    fn attribution(&self, x: &[f64]) -> Vec<f64> {
        self.forest().attribution(x)
    }
}

impl Explained for LoadedModel {
    fn feature_names(&self) -> &[String] {
        LoadedModel::feature_names(self)
    }
    fn n_features(&self) -> usize {
        LoadedModel::n_features(self)
    }
    fn training_range(&self, feature: usize) -> (f64, f64) {
        LoadedModel::training_range(self, feature)
    }
    fn attribution(&self, x: &[f64]) -> Vec<f64> {
        LoadedModel::attribution(self, x)
    }
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
pub fn explanation(features: &[f64], model: &impl Explained) -> Vec<Value> {
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
    let shares = model.attribution(features);
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

    fn anomaly(source: &str, model: &LoadedModel) -> Vec<u8> {
        let record = Record::parse(Some(source.as_bytes())).unwrap();
        let from = SourceRef {
            topic: "t",
            partition: 1,
            offset: 7,
        };
        let detection = Detection {
            score: -0.7,
            decision: -0.2,
            features: &[3.5, -3.5],
        };
        let additions = Additions::new(
            &record,
            &detection,
            "tx",
            model,
            from,
            SystemTime::UNIX_EPOCH,
        );
        let mut out = b"left over".to_vec();
        write_anomaly(&mut out, &record, &additions);
        out
    }

    #[test]
    fn the_source_record_survives_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let model = demo_model(dir.path());
        // Issue 11: the record's own source, score, model and explanation stay its own.
        let src = r#"{"id": 7, "source": "pos-terminal-12", "score": 712, "model": "X200", "explanation": "chargeback dispute", "data": [[3.5, -3.5]]}"#;
        let out = anomaly(src, &model);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with(&src[..src.len() - 1]), "{text}");
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["source"], "pos-terminal-12");
        assert_eq!(v["score"], 712);
        assert_eq!(v["model"], "X200");
        assert_eq!(v["explanation"], "chargeback dispute");
        assert_eq!(v["anomalyd"]["score"], -0.7);
        assert_eq!(v["anomalyd"]["decision"], -0.2);
        assert_eq!(v["anomalyd"]["model"]["id"], model.id());
        assert_eq!(
            v["anomalyd"]["source"],
            json!({"topic": "t", "partition": 1, "offset": 7})
        );
        assert_eq!(v["anomalyd"]["detected_at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["anomalyd"]["layout"], "inline");
        assert!(v["anomalyd"]["explanation"].is_array());
        let back = Record::parse(Some(&out)).unwrap();
        assert_eq!(source_text(&back).as_deref(), Some(src));
    }

    #[test]
    fn judged_explains_anomalies_only_and_a_scorers_own_explanation_wins() {
        let dir = tempfile::tempdir().unwrap();
        let model = demo_model(dir.path());
        let record = Record::parse(Some(br#"{"data": [[3.5, -3.5]]}"#.as_slice())).unwrap();
        let from = SourceRef {
            topic: "t",
            partition: 0,
            offset: 1,
        };
        let judge = |decision: f64, fired: Option<&mut Vec<Value>>| {
            let detection = Detection {
                score: -0.7,
                decision,
                features: &[3.5, -3.5],
            };
            Additions::judged(
                &record,
                &detection,
                "tx",
                &model,
                from,
                SystemTime::now(),
                fired,
            )
        };
        let anomaly = judge(-0.2, None);
        assert_eq!(anomaly.anomaly, None);
        assert!(!anomaly.explanation.is_empty(), "the forest explains it");
        let mut fired = vec![json!({"rule": "hot", "count": 3})];
        let keyed = judge(-0.2, Some(&mut fired));
        assert_eq!(keyed.explanation, vec![json!({"rule": "hot", "count": 3})]);
        assert!(fired.is_empty(), "taken, not copied");
        for decision in [0.0, 0.3, f64::NAN] {
            let mut fired = vec![json!("unused")];
            let not = judge(decision, Some(&mut fired));
            assert_eq!(not.anomaly, Some(false), "{decision}");
            assert!(not.explanation.is_empty(), "{decision}");
            assert_eq!(fired.len(), 1, "{decision}: left alone");
        }
    }

    #[test]
    fn a_split_detector_names_its_variant_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let model = demo_model(dir.path());
        let src = r#"{"id": 1, "data": [[3.5, -3.5]]}"#;
        let plain: Value = serde_json::from_slice(&anomaly(src, &model)).unwrap();
        assert!(plain["anomalyd"].get("variant").is_none(), "{plain}");

        let record = Record::parse(Some(src.as_bytes())).unwrap();
        let detection = Detection {
            score: -0.7,
            decision: -0.2,
            features: &[3.5, -3.5],
        };
        let from = SourceRef {
            topic: "t",
            partition: 0,
            offset: 1,
        };
        let mut additions = Additions::new(
            &record,
            &detection,
            "tx",
            &model,
            from,
            SystemTime::UNIX_EPOCH,
        );
        additions.variant = Some("B");
        let mut out = Vec::new();
        write_anomaly(&mut out, &record, &additions);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(r#""anomalyd":{"detector":"tx","variant":"B","score":"#),
            "{text}"
        );
        let back = Record::parse(Some(text.as_bytes())).unwrap();
        assert_eq!(source_text(&back).as_deref(), Some(src));
    }

    #[test]
    fn a_scored_record_says_whether_it_is_an_anomaly_and_an_anomaly_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let model = demo_model(dir.path());
        let src = r#"{"id": 3, "data": [[0.1, 0.2]]}"#;
        let record = Record::parse(Some(src.as_bytes())).unwrap();
        let from = SourceRef {
            topic: "t",
            partition: 2,
            offset: 9,
        };
        let detection = Detection {
            score: -0.4,
            decision: 0.1,
            features: &[0.1, 0.2],
        };
        let quiet = Additions::not_anomalous(
            &record,
            &detection,
            "tx",
            &model,
            from,
            SystemTime::UNIX_EPOCH,
        );
        let mut out = Vec::new();
        write_anomaly(&mut out, &record, &quiet);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(r#"{"id": 3, "data": [[0.1, 0.2]],"anomalyd":{"detector":"tx","anomaly":false,"score":-0.4,"decision":0.1,"#),
            "{text}"
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["anomalyd"]["explanation"], json!([]));
        assert_eq!(v["anomalyd"]["model"]["id"], model.id());
        let back = Record::parse(Some(text.as_bytes())).unwrap();
        assert_eq!(source_text(&back).as_deref(), Some(src));

        // The anomaly as on the output topic: no `anomaly` member; flagged for the scored topic.
        let mut flagged = Additions::new(
            &record,
            &detection,
            "tx",
            &model,
            from,
            SystemTime::UNIX_EPOCH,
        );
        let mut out = Vec::new();
        write_anomaly(&mut out, &record, &flagged);
        let plain: Value = serde_json::from_slice(&out).unwrap();
        assert!(plain["anomalyd"].get("anomaly").is_none(), "{plain}");
        flagged.anomaly = Some(true);
        write_anomaly(&mut out, &record, &flagged);
        let scored: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(scored["anomalyd"]["anomaly"], true);
        let mut without = scored["anomalyd"].clone();
        without.as_object_mut().unwrap().remove("anomaly");
        assert_eq!(without, plain["anomalyd"]);
    }

    #[test]
    fn numbers_and_odd_text_are_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let model = demo_model(dir.path());
        for src in [
            r#"{"id": "x", "note": 1e400, "data": [[3.5, -3.5]]}"#,
            "{\"a\":0.1000000000000000055,\"a\":12345678901234567890123 ,\n \"\\u00e9\": -0.0}",
            "{}",
            "{ \n }",
        ] {
            let out = anomaly(src, &model);
            let back = Record::parse(Some(&out)).unwrap_or_else(|e| panic!("{e}: {src}"));
            assert!(back.get("anomalyd").is_some());
            assert_eq!(source_text(&back).as_deref(), Some(src), "{src}");
        }
    }

    #[test]
    fn source_text_refuses_what_write_anomaly_did_not_write() {
        for text in [
            r#"{"a": 1}"#,
            r#"{"anomalyd": {"layout": "inline"}, "é": 1}"#,
            r#"{"anomalyd": {"layout": "wrapped"}}"#,
            r#"{"x":1 , "anomalyd":{"layout":"inline"}}"#,
        ] {
            let r = Record::parse(Some(text.as_bytes())).unwrap();
            assert_eq!(source_text(&r), None, "{text}");
        }
    }

    #[test]
    fn a_source_with_our_key_or_not_an_object_is_wrapped() {
        let dir = tempfile::tempdir().unwrap();
        let model = demo_model(dir.path());
        for src in [
            r#"{"anomalyd": {"score": 1}, "data": [[3.5, -3.5]]}"#,
            r#"{"anomaly\u0064": 1}"#,
            "[3.5, -3.5]",
            "1e400",
        ] {
            let out = anomaly(src, &model);
            let back = Record::parse(Some(&out)).unwrap();
            assert_eq!(back.get("record"), Some(src), "{src}");
            let v: Value =
                serde_json::from_str(&String::from_utf8_lossy(&out).replace("1e400", "1")).unwrap();
            assert_eq!(v["anomalyd"]["layout"], "wrapped");
            assert_eq!(back.members().unwrap().len(), 2);
            assert_eq!(source_text(&back).as_deref(), Some(src));
        }
    }

    fn demo_model(dir: &std::path::Path) -> LoadedModel {
        let path = dir.join("m.iforest");
        crate::offline::train::train(&crate::offline::train::TrainOptions::synthetic(
            42,
            path.clone(),
        ))
        .unwrap();
        LoadedModel::load(&path).unwrap()
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
