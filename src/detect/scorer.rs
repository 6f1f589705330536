//! The one scorer abstraction the partition worker calls without knowing the kind.
//!
//! A detector scores with a [`Scorer`]: a model file of any kind ([`LoadedModel`]: Isolation
//! Forest, k-means, bisecting k-means; the file's header names its kind) or named CEL rules
//! ([`RulesScorer`]); another kind plugs in with an implementation of the trait. The worker asks the detector's [`ScorerSource`] for the scorer once
//! per batch (so a reload takes effect at the next batch and never splits one), reads what the
//! scorer [`Needs`] from each record, calls [`Scorer::score_batch`], and publishes every record
//! whose [`Scored::decision`] is negative, naming the scorer by its [`ScorerIdentity`].
//!
//! One meaning of the numbers for every kind (issue 12): `score` is in the scorer's native
//! unit, and `decision < 0` means anomalous. For the Isolation Forest, `score` is
//! scikit-learn's `score_samples` (in [-1, 0], lower is more anomalous) and `decision` its
//! `decision_function` (`score - offset`). For rules ([`RulesScorer`]), `score` is the number
//! of rules that fired and `decision` is -1 when one fired, +1 otherwise.
//!
//! A scorer may refuse a record it cannot judge (a rule that cannot be evaluated on it): that
//! record goes to the dead letters with the reason, never a panic.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::model::LoadedModel;
use super::rules::{RuleSet, RulesError};
use super::slot::ModelSlot;
use super::streaks::Streaks;
use crate::record::Record;

/// What a scorer said about one record.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Scored {
    /// In the scorer's native unit (see the module header).
    pub score: f64,
    /// Negative means anomalous, for every kind.
    pub decision: f64,
}

/// Which scorer scored a record: published in every anomaly (as `model`) and in `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScorerIdentity {
    /// 12 hex digits of the model's digest (see [`LoadedModel::id`]), or of the rules' text.
    pub id: String,
    /// The model file's kind, e.g. `isolation_forest`, or `rules`.
    pub kind: String,
    /// The model file it was loaded from; absent for rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

/// Why a scorer could not judge one record: its text names the cause (for rules, the rule and
/// the reason), for the record's dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unscorable(pub String);

/// What the worker must take from each record for this scorer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// A feature vector of this many values, found by the detector's `features` setting.
    Features(usize),
    /// The parsed record itself (a scorer that reads fields by name, such as rules): the
    /// worker extracts no features and [`Batch::rows`] is empty.
    Record,
}

/// One batch's input: the feature rows (row-major, [`Needs::Features`] values per record;
/// empty for [`Needs::Record`]) and the records (their JSON text, split at the top level, see
/// [`Record`]), in the same order.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a, 'r> {
    pub rows: &'a [f64],
    pub records: &'a [&'a Record<'r>],
}

impl Batch<'_, '_> {
    /// How many records the batch holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// A scorer, whatever its kind. Implementations must be cheap to share across partition
/// workers (they are behind an `Arc` and called concurrently).
pub trait Scorer: Send + Sync + fmt::Debug {
    /// Which scorer this is, for anomalies and `/status`.
    fn identity(&self) -> ScorerIdentity;

    /// What the worker must take from each record.
    fn needs(&self) -> Needs;

    /// The names of the features, in the order the rows hold them (empty for
    /// [`Needs::Record`]).
    fn feature_names(&self) -> &[String];

    /// Scores every record of `batch` into `out` (one entry per record, same order): a
    /// [`Scored`], or why the record cannot be judged.
    ///
    /// # Panics
    /// If `out.len() != batch.len()`, or the rows do not hold `batch.len()` times the
    /// feature count.
    fn score_batch(&self, batch: &Batch<'_, '_>, out: &mut [Result<Scored, Unscorable>]);

    /// Why a flagged record is an anomaly, the entries published under `explanation`;
    /// `features` is the record's row (empty for [`Needs::Record`]).
    fn explain(&self, features: &[f64], record: &Record<'_>) -> Vec<Value>;

    /// A fresh per-partition state, for a scorer whose verdict on a record depends on the
    /// earlier records of its key (rules with `for`); `None`, the default, for a scorer that
    /// judges each record alone. A worker holding a state scores with
    /// [`Scorer::score_keyed`] and commits no further than [`Streaks::safe_offset`].
    fn partition_state(&self) -> Option<Streaks> {
        None
    }

    /// [`Scorer::score_batch`] for a scorer with a partition state: record `i` of `batch` has
    /// Kafka key `keys[i]` and offset `offsets[i]` (increasing) and is fed to `state` in order;
    /// `explanations[i]` gets the `explanation` of each record that is anomalous. The default
    /// ignores the state and explains with [`Scorer::explain`] later.
    ///
    /// # Panics
    /// If the slices' lengths differ from `batch.len()`.
    fn score_keyed(
        &self,
        batch: &Batch<'_, '_>,
        keys: &[Option<&[u8]>],
        offsets: &[i64],
        state: &mut Streaks,
        out: &mut [Result<Scored, Unscorable>],
        explanations: &mut [Vec<Value>],
    ) {
        let _ = (keys, offsets, state, explanations);
        self.score_batch(batch, out);
    }
}

/// Scores one batch of a partition as its worker does (`detect::worker`, and the benches that
/// measure it): [`Scorer::score_batch`] for a scorer that judges each record alone, or, once
/// the partition has a state (`state`, made on its first batch by
/// [`Scorer::partition_state`]), [`Scorer::score_keyed`] with each record's Kafka key and
/// offset, which `keyed` gives (called only then). Returns one entry per record for a keyed
/// scorer, the `explanation` of each anomalous record (which replaces [`Scorer::explain`]'s),
/// and an empty vector otherwise.
///
/// # Panics
/// As [`Scorer::score_batch`] and [`Scorer::score_keyed`].
pub fn score_partition_batch<'k>(
    scorer: &dyn Scorer,
    batch: &Batch<'_, '_>,
    state: &mut Option<Streaks>,
    keyed: impl FnOnce() -> (Vec<Option<&'k [u8]>>, Vec<i64>),
    out: &mut [Result<Scored, Unscorable>],
) -> Vec<Vec<Value>> {
    if state.is_none() {
        *state = scorer.partition_state();
    }
    match state.as_mut() {
        None => {
            scorer.score_batch(batch, out);
            Vec::new()
        }
        Some(state) => {
            let (keys, offsets) = keyed();
            let mut explanations = vec![Vec::new(); out.len()];
            scorer.score_keyed(batch, &keys, &offsets, state, out, &mut explanations);
            explanations
        }
    }
}

/// Every model kind a model file holds: Isolation Forest, k-means, bisecting k-means.
impl Scorer for LoadedModel {
    fn identity(&self) -> ScorerIdentity {
        ScorerIdentity {
            id: self.id().to_owned(),
            kind: self.kind().to_owned(),
            path: Some(self.path().to_owned()),
        }
    }

    fn needs(&self) -> Needs {
        Needs::Features(self.n_features())
    }

    fn feature_names(&self) -> &[String] {
        LoadedModel::feature_names(self)
    }

    fn score_batch(&self, batch: &Batch<'_, '_>, out: &mut [Result<Scored, Unscorable>]) {
        assert_eq!(out.len(), batch.len(), "one output per record");
        let mut scores = vec![0.0; batch.len()];
        LoadedModel::score_batch(self, batch.rows, &mut scores);
        for (o, s) in out.iter_mut().zip(scores) {
            *o = Ok(Scored {
                score: s,
                decision: self.decision(s),
            });
        }
    }

    fn explain(&self, features: &[f64], _record: &Record<'_>) -> Vec<Value> {
        crate::sinks::anomalies::explanation(features, self)
    }
}

/// Named CEL rules as a scorer ([`RuleSet`]): a record is anomalous when any rule fired.
/// Reads the record's fields, so it [`Needs::Record`]. Compiled once, at start; nothing to
/// reload.
#[derive(Debug)]
pub struct RulesScorer {
    rules: RuleSet,
    identity: ScorerIdentity,
    names: Vec<String>,
    /// Each rule's `for` (consecutive matching readings of a key before it fires), in the
    /// rules' order; all 1 unless [`RulesScorer::with_for`] said otherwise.
    need: Vec<u32>,
    /// The records are CSV lines' JSON views ([`crate::detect::csv_record`]): the rules read
    /// the cells under `record` as text (a number when it parses as one).
    csv: bool,
}

impl RulesScorer {
    /// Compiles `rules` (`(name, expression)` pairs, in the order anomalies list them). The
    /// identity's id is 12 hex digits of a SHA-256 over the names and expressions, so the same
    /// rules give the same id.
    ///
    /// # Errors
    /// [`RulesError`], as [`RuleSet::compile`] gives it.
    pub fn compile(rules: &[(String, String)]) -> Result<Self, RulesError> {
        use sha2::{Digest, Sha256};
        let set = RuleSet::compile(rules)?;
        let mut digest = Sha256::new();
        for (name, expr) in rules {
            // Lengths first, so that no two lists hash alike by moving text between entries.
            digest.update((name.len() as u64).to_le_bytes());
            digest.update(name.as_bytes());
            digest.update((expr.len() as u64).to_le_bytes());
            digest.update(expr.as_bytes());
        }
        let id: String = digest
            .finalize()
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Self {
            need: vec![1; rules.len()],
            names: rules.iter().map(|(n, _)| n.clone()).collect(),
            rules: set,
            csv: false,
            identity: ScorerIdentity {
                id,
                kind: RULES_KIND.to_owned(),
                path: None,
            },
        })
    }

    /// The same rules over CSV lines (`format = "csv"`): each record is a line's JSON view
    /// ([`crate::detect::csv_record::CsvLine::json`]) and the rules read its cells by column
    /// name, each a number when it parses as one, else a string.
    pub fn reading_csv(mut self) -> Self {
        self.csv = true;
        self
    }

    /// The same rules, each firing only after `need[r]` consecutive matching readings of a
    /// key (`for`, see [`super::streaks`]; 1 is every matching reading), in the rules' order.
    /// The identity's id then covers the `for` values too (unchanged when they are all 1).
    ///
    /// # Panics
    /// If `need` does not hold one value per rule.
    pub fn with_for(mut self, need: Vec<u32>) -> Self {
        use sha2::{Digest, Sha256};
        assert_eq!(need.len(), self.names.len(), "one `for` per rule");
        let need: Vec<u32> = need.into_iter().map(|n| n.max(1)).collect();
        if need.iter().any(|&n| n > 1) {
            let mut digest = Sha256::new();
            digest.update(self.identity.id.as_bytes());
            for n in &need {
                digest.update(n.to_le_bytes());
            }
            self.identity.id = digest
                .finalize()
                .iter()
                .take(6)
                .map(|b| format!("{b:02x}"))
                .collect();
        }
        self.need = need;
        self
    }

    /// Whether a rule has a `for` above 1, so that the scorer keeps per-key state.
    fn keyed(&self) -> bool {
        self.need.iter().any(|&n| n > 1)
    }

    /// The record as the rules see it: its JSON text as a value (a record whose text holds a
    /// number JSON values cannot hold, such as `1e400`, cannot be judged).
    fn fields(record: &Record<'_>) -> Result<Value, Unscorable> {
        serde_json::from_str(record.text())
            .map_err(|e| Unscorable(format!("the rules cannot read the record: {e}")))
    }

    /// What the rules say about `record`.
    fn verdict(&self, record: &Record<'_>) -> Result<super::rules::Verdict, Unscorable> {
        let verdict = if self.csv {
            #[derive(serde::Deserialize)]
            struct CsvView {
                record: std::collections::HashMap<String, String>,
            }
            let view: CsvView = serde_json::from_str(record.text())
                .map_err(|e| Unscorable(format!("the rules cannot read the CSV line: {e}")))?;
            self.rules.evaluate(&view.record)
        } else {
            self.rules.evaluate(&Self::fields(record)?)
        };
        verdict.map_err(|e| Unscorable(e.to_string()))
    }
}

/// The kind a [`RulesScorer`] reports.
pub const RULES_KIND: &str = "rules";

impl Scorer for RulesScorer {
    fn identity(&self) -> ScorerIdentity {
        self.identity.clone()
    }

    fn needs(&self) -> Needs {
        Needs::Record
    }

    /// The rules' names, in order.
    fn feature_names(&self) -> &[String] {
        &self.names
    }

    fn score_batch(&self, batch: &Batch<'_, '_>, out: &mut [Result<Scored, Unscorable>]) {
        assert_eq!(out.len(), batch.len(), "one output per record");
        for (o, record) in out.iter_mut().zip(batch.records) {
            *o = self.verdict(record).map(|verdict| Scored {
                score: verdict.score(),
                decision: verdict.decision(),
            });
        }
    }

    /// Per-key streaks when a rule has a `for` above 1; else `None` (stateless, as before).
    fn partition_state(&self) -> Option<Streaks> {
        self.keyed().then(|| Streaks::new(self.need.clone()))
    }

    /// The rules' verdicts fed through the streaks: `score` is the number of rules that fired
    /// (a rule with `for` only from its N-th consecutive matching reading of the key on),
    /// `decision` is -1 when one did; the explanation lists them with their counts
    /// (`{"rule", "for", "count"}`).
    fn score_keyed(
        &self,
        batch: &Batch<'_, '_>,
        keys: &[Option<&[u8]>],
        offsets: &[i64],
        state: &mut Streaks,
        out: &mut [Result<Scored, Unscorable>],
        explanations: &mut [Vec<Value>],
    ) {
        let n = batch.len();
        assert!(
            out.len() == n && keys.len() == n && offsets.len() == n && explanations.len() == n,
            "one key, offset, output and explanation per record"
        );
        let mut fired = Vec::new();
        for (i, record) in batch.records.iter().enumerate() {
            let verdict = match self.verdict(record) {
                Ok(v) => v,
                // Unjudged: the streaks stay as they are (see `streaks`).
                Err(why) => {
                    out[i] = Err(why);
                    continue;
                }
            };
            fired.clear();
            // `fired` holds the names in rule order, each once: walk them in step.
            let matched: Vec<bool> = {
                let mut it = verdict.fired.iter().peekable();
                self.names
                    .iter()
                    .map(|name| match it.peek() {
                        Some(f) if &***f == name.as_str() => {
                            it.next();
                            true
                        }
                        _ => false,
                    })
                    .collect()
            };
            state.observe(keys[i], offsets[i], |r| matched[r], &mut fired);
            out[i] = Ok(Scored {
                score: fired.len() as f64,
                decision: if fired.is_empty() { 1.0 } else { -1.0 },
            });
            explanations[i] = fired
                .iter()
                .map(|&(r, count)| fired_entry(&self.names[r], self.need[r], count))
                .collect();
        }
    }

    /// The rules that fired, each `{"rule": name}`, in the rule set's order.
    fn explain(&self, _features: &[f64], record: &Record<'_>) -> Vec<Value> {
        self.verdict(record)
            .ok()
            .map(|verdict| {
                verdict
                    .fired
                    .iter()
                    .map(|name| serde_json::json!({ "rule": &**name }))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// What a streak's rule adds to an anomaly's `explanation`: `{"rule": name}` for a rule
/// without `for`, `{"rule": name, "for": N, "count": C}` for one with (C >= N: the
/// consecutive matching readings of the key that fired it).
fn fired_entry(name: &str, need: u32, count: u64) -> Value {
    if need > 1 {
        serde_json::json!({ "rule": name, "for": need, "count": count })
    } else {
        serde_json::json!({ "rule": name })
    }
}

/// A scorer that never changes: the [`ScorerSource`] of a rules detector.
#[derive(Debug)]
pub struct Fixed(pub Arc<RulesScorer>);

impl ScorerSource for Fixed {
    fn current(&self) -> Arc<dyn Scorer> {
        Arc::clone(&self.0) as _
    }

    fn reload_path(&self) -> Option<&Path> {
        None
    }
}

/// Where a detector's worker gets the scorer to use for the next batch.
pub trait ScorerSource: Send + Sync {
    /// The scorer serving now.
    fn current(&self) -> Arc<dyn Scorer>;

    /// The model file a reload re-reads, if this scorer has one.
    fn reload_path(&self) -> Option<&Path>;
}

/// A model slot with the model file it reloads from: the [`ScorerSource`] of a detector that
/// scores with a model file.
#[derive(Debug)]
pub struct ModelSource {
    pub slot: Arc<ModelSlot>,
    pub path: PathBuf,
}

impl ScorerSource for ModelSource {
    fn current(&self) -> Arc<dyn Scorer> {
        self.slot.current()
    }

    fn reload_path(&self) -> Option<&Path> {
        Some(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offline::train::{TrainOptions, train};

    #[test]
    fn a_model_scores_through_the_trait_as_it_does_directly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.iforest");
        train(&TrainOptions {
            trees: Some(10),
            ..TrainOptions::synthetic(42, path.clone())
        })
        .unwrap();
        let model = LoadedModel::load(&path).unwrap();
        let source = ModelSource {
            slot: Arc::new(ModelSlot::new(LoadedModel::load(&path).unwrap())),
            path: path.clone(),
        };
        let scorer = source.current();
        assert_eq!(scorer.needs(), Needs::Features(2));
        assert_eq!(scorer.identity().id, model.id());
        assert_eq!(scorer.identity().path, Some(path.clone()));
        assert_eq!(source.reload_path(), Some(path.as_path()));

        let rows = [2.0, 2.0, 0.0, 0.1, 9.0, -9.0];
        let record = Record::parse(Some(b"{}")).unwrap();
        let records = [&record, &record, &record];
        let mut out = vec![Ok(Scored::default()); 3];
        scorer.score_batch(
            &Batch {
                rows: &rows,
                records: &records,
            },
            &mut out,
        );
        let out: Vec<Scored> = out.into_iter().map(Result::unwrap).collect();
        for (i, o) in out.iter().enumerate() {
            let s = model.score(&rows[2 * i..2 * i + 2]);
            assert_eq!(o.score, s);
            assert_eq!(o.decision, model.decision(s));
        }
        // A blob centre is normal; far outside is anomalous: negative means anomalous.
        assert!(out[0].decision > 0.0 && out[2].decision < 0.0, "{out:?}");
        assert!(!scorer.explain(&rows[4..6], &record).is_empty());
    }

    #[test]
    fn csv_rules_read_cells_by_column_as_numbers_when_they_parse() {
        use crate::detect::csv_record::{CsvFormat, CsvReader};
        let rules = [
            ("big".to_owned(), "Quantity > 1000.0".to_owned()),
            ("uk".to_owned(), "Country == 'United Kingdom'".to_owned()),
        ];
        let scorer = RulesScorer::compile(&rules).unwrap().reading_csv();
        let columns = ["InvoiceNo", "Quantity", "Country"]
            .map(String::from)
            .to_vec();
        let format = CsvFormat::new(columns, &[]).unwrap();
        let mut reader = CsvReader::new(&format, false);
        let lines = [
            "536365,6,France",
            "536366,\"2000\",United Kingdom",
            "536367,many,France",
        ];
        let json: Vec<String> = lines
            .iter()
            .map(|l| reader.read(Some(l.as_bytes()), &mut vec![]).unwrap().json)
            .collect();
        let records: Vec<Record<'_>> = json
            .iter()
            .map(|t| Record::parse(Some(t.as_bytes())).unwrap())
            .collect();
        let refs: Vec<&Record<'_>> = records.iter().collect();
        let mut out = vec![Ok(Scored::default()); 3];
        scorer.score_batch(
            &Batch {
                rows: &[],
                records: &refs,
            },
            &mut out,
        );
        assert_eq!(out[0].as_ref().unwrap().decision, 1.0);
        assert_eq!(out[1].as_ref().unwrap().score, 2.0);
        assert_eq!(out[1].as_ref().unwrap().decision, -1.0);
        let why = out[2].as_ref().unwrap_err();
        assert!(why.0.contains("big"), "{why:?}");
        assert_eq!(
            scorer.explain(&[], &records[1]),
            [
                serde_json::json!({"rule": "big"}),
                serde_json::json!({"rule": "uk"})
            ]
        );
    }

    #[test]
    fn rules_score_through_the_trait_and_refuse_what_they_cannot_judge() {
        let rules = [
            ("hot".to_owned(), "temperature > 40.0".to_owned()),
            ("over_pressure".to_owned(), "pressure > 120.0".to_owned()),
        ];
        let scorer = RulesScorer::compile(&rules).unwrap();
        assert_eq!(scorer.needs(), Needs::Record);
        assert_eq!(scorer.identity().kind, "rules");
        assert_eq!(scorer.identity().path, None);
        assert_eq!(
            scorer.identity(),
            RulesScorer::compile(&rules).unwrap().identity()
        );
        let texts = [
            r#"{"temperature": 20, "pressure": 100}"#,
            r#"{"temperature": 41.5, "pressure": 130}"#,
            r#"{"pressure": 100}"#,
            r#"{"temperature": 1e400, "pressure": 1}"#,
        ];
        let records: Vec<Record<'_>> = texts
            .iter()
            .map(|t| Record::parse(Some(t.as_bytes())).unwrap())
            .collect();
        let refs: Vec<&Record<'_>> = records.iter().collect();
        let mut out = vec![Ok(Scored::default()); 4];
        scorer.score_batch(
            &Batch {
                rows: &[],
                records: &refs,
            },
            &mut out,
        );
        assert_eq!(
            out[0],
            Ok(Scored {
                score: 0.0,
                decision: 1.0
            })
        );
        assert_eq!(
            out[1],
            Ok(Scored {
                score: 2.0,
                decision: -1.0
            })
        );
        let missing = out[2].clone().unwrap_err().0;
        assert!(
            missing.contains("rule `hot`") && missing.contains("temperature"),
            "{missing}"
        );
        assert!(out[3].is_err(), "{:?}", out[3]);
        assert_eq!(
            scorer.explain(&[], &records[1]),
            [
                serde_json::json!({"rule": "hot"}),
                serde_json::json!({"rule": "over_pressure"})
            ]
        );
        assert!(RulesScorer::compile(&[("bad".into(), "a >".into())]).is_err());
    }

    #[test]
    fn rules_with_for_fire_from_the_nth_reading_of_a_key_and_say_the_count() {
        let rules = [
            ("hot".to_owned(), "temperature > 40.0".to_owned()),
            ("high".to_owned(), "pressure > 120.0".to_owned()),
        ];
        let plain = RulesScorer::compile(&rules).unwrap();
        assert!(plain.partition_state().is_none(), "stateless without `for`");
        assert_eq!(
            plain.identity(),
            RulesScorer::compile(&rules)
                .unwrap()
                .with_for(vec![1, 1])
                .identity()
        );
        let scorer = RulesScorer::compile(&rules).unwrap().with_for(vec![3, 1]);
        assert_ne!(scorer.identity(), plain.identity());
        let mut state = scorer.partition_state().expect("keyed");
        let texts = [
            (b"s1", r#"{"temperature": 41, "pressure": 100}"#),
            (b"s2", r#"{"temperature": 41, "pressure": 100}"#),
            (b"s1", r#"{"temperature": 41, "pressure": 130}"#),
            (b"s1", r#"{"pressure": 1}"#),
            (b"s1", r#"{"temperature": 41, "pressure": 100}"#),
            (b"s1", r#"{"temperature": 41, "pressure": 100}"#),
            (b"s2", r#"{"temperature": 40, "pressure": 100}"#),
        ];
        let records: Vec<Record<'_>> = texts
            .iter()
            .map(|(_, t)| Record::parse(Some(t.as_bytes())).unwrap())
            .collect();
        let refs: Vec<&Record<'_>> = records.iter().collect();
        let keys: Vec<Option<&[u8]>> = texts.iter().map(|(k, _)| Some(&k[..])).collect();
        let offsets: Vec<i64> = (10..17).collect();
        let mut out = vec![Ok(Scored::default()); 7];
        let mut why = vec![Vec::new(); 7];
        scorer.score_keyed(
            &Batch {
                rows: &[],
                records: &refs,
            },
            &keys,
            &offsets,
            &mut state,
            &mut out,
            &mut why,
        );
        let decisions: Vec<f64> = out
            .iter()
            .map(|o| o.as_ref().map_or(0.0, |s| s.decision))
            .collect();
        // s1: 1st hot (no), 2nd hot + high (high fires alone), unjudged (the streak stays),
        // 3rd hot fires with count 3, 4th with 4; s2's one reading never fires.
        assert_eq!(decisions, [1.0, 1.0, -1.0, 0.0, -1.0, -1.0, 1.0]);
        assert!(out[3].is_err());
        assert_eq!(why[2], [serde_json::json!({"rule": "high"})]);
        assert_eq!(
            why[4],
            [serde_json::json!({"rule": "hot", "for": 3, "count": 3})]
        );
        assert_eq!(
            why[5],
            [serde_json::json!({"rule": "hot", "for": 3, "count": 4})]
        );
        assert_eq!(out[5].as_ref().unwrap().score, 1.0);
        // s1's streak is open: its last two matching readings are still needed.
        assert_eq!(state.safe_offset(17), 14);
    }

    #[test]
    fn a_partition_batch_is_keyed_only_for_a_scorer_with_state_which_it_keeps() {
        let rules = [("hot".to_owned(), "temperature > 40.0".to_owned())];
        let text = br#"{"temperature": 41}"#;
        let record = Record::parse(Some(text.as_slice())).unwrap();
        let refs = [&record, &record];
        let batch = Batch {
            rows: &[],
            records: &refs,
        };
        let mut out = vec![Ok(Scored::default()); 2];

        let plain = RulesScorer::compile(&rules).unwrap();
        let mut state = None;
        let why = score_partition_batch(
            &plain,
            &batch,
            &mut state,
            || unreachable!("no keys without state"),
            &mut out,
        );
        assert!(why.is_empty() && state.is_none());
        assert_eq!(out[0].as_ref().unwrap().decision, -1.0);

        let keyed = RulesScorer::compile(&rules).unwrap().with_for(vec![3]);
        let key: &[u8] = b"s1";
        let mut state = None;
        let mut next = 10;
        let mut decisions = Vec::new();
        for _ in 0..2 {
            let keys = || (vec![Some(key); 2], vec![next, next + 1]);
            let why = score_partition_batch(&keyed, &batch, &mut state, keys, &mut out);
            next += 2;
            assert_eq!(why.len(), 2);
            decisions.extend(out.iter().map(|o| o.as_ref().unwrap().decision));
        }
        // The state made on the first batch carries the streak into the second: the third
        // reading fires.
        assert_eq!(decisions, [1.0, 1.0, -1.0, -1.0]);
        assert!(state.is_some());
    }
}
