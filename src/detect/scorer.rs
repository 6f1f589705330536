//! The one scorer abstraction the partition worker calls without knowing the kind.
//!
//! A detector scores with a [`Scorer`]: an Isolation Forest model file today (any model kind
//! behind [`Model`], since the model file's header names its kind), rules or other model kinds
//! through small adapters. The worker asks the detector's [`ScorerSource`] for the scorer once
//! per batch (so a reload takes effect at the next batch and never splits one), reads what the
//! scorer [`Needs`] from each record, calls [`Scorer::score_batch`], and publishes every record
//! whose [`Scored::decision`] is negative, naming the scorer by its [`ScorerIdentity`].
//!
//! One meaning of the numbers for every kind (issue 12): `score` is in the scorer's native
//! unit, and `decision < 0` means anomalous. For the Isolation Forest, `score` is
//! scikit-learn's `score_samples` (in [-1, 0], lower is more anomalous) and `decision` its
//! `decision_function` (`score - offset`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::model::Model;
use super::slot::ModelSlot;
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
    /// 12 hex digits of the model's digest (see [`Model::id`]).
    pub id: String,
    /// The model file's kind, e.g. `isolation_forest`.
    pub kind: String,
    /// The model file it was loaded from.
    pub path: PathBuf,
}

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

    /// Scores every record of `batch` into `out` (one entry per record, same order).
    ///
    /// # Panics
    /// If `out.len() != batch.len()`, or the rows do not hold `batch.len()` times the
    /// feature count.
    fn score_batch(&self, batch: &Batch<'_, '_>, out: &mut [Scored]);

    /// Why a flagged record is an anomaly, the entries published under `explanation`;
    /// `features` is the record's row (empty for [`Needs::Record`]).
    fn explain(&self, features: &[f64], record: &Record<'_>) -> Vec<Value>;
}

impl Scorer for Model {
    fn identity(&self) -> ScorerIdentity {
        ScorerIdentity {
            id: self.id().to_owned(),
            kind: self.kind().to_owned(),
            path: self.path().to_owned(),
        }
    }

    fn needs(&self) -> Needs {
        Needs::Features(self.n_features())
    }

    fn feature_names(&self) -> &[String] {
        Model::feature_names(self)
    }

    fn score_batch(&self, batch: &Batch<'_, '_>, out: &mut [Scored]) {
        assert_eq!(out.len(), batch.len(), "one output per record");
        let mut scores = vec![0.0; batch.len()];
        Model::score_batch(self, batch.rows, &mut scores);
        for (o, s) in out.iter_mut().zip(scores) {
            *o = Scored {
                score: s,
                decision: self.decision(s),
            };
        }
    }

    fn explain(&self, features: &[f64], _record: &Record<'_>) -> Vec<Value> {
        crate::sinks::anomalies::explanation(features, self)
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
        let model = Model::load(&path).unwrap();
        let source = ModelSource {
            slot: Arc::new(ModelSlot::new(Model::load(&path).unwrap())),
            path: path.clone(),
        };
        let scorer = source.current();
        assert_eq!(scorer.needs(), Needs::Features(2));
        assert_eq!(scorer.identity().id, model.id());
        assert_eq!(scorer.identity().path, path);
        assert_eq!(source.reload_path(), Some(path.as_path()));

        let rows = [2.0, 2.0, 0.0, 0.1, 9.0, -9.0];
        let record = Record::parse(Some(b"{}")).unwrap();
        let records = [&record, &record, &record];
        let mut out = [Scored::default(); 3];
        scorer.score_batch(
            &Batch {
                rows: &rows,
                records: &records,
            },
            &mut out,
        );
        for (i, o) in out.iter().enumerate() {
            let s = model.score(&rows[2 * i..2 * i + 2]);
            assert_eq!(o.score, s);
            assert_eq!(o.decision, model.decision(s));
        }
        // A blob centre is normal; far outside is anomalous: negative means anomalous.
        assert!(out[0].decision > 0.0 && out[2].decision < 0.0, "{out:?}");
        assert!(!scorer.explain(&rows[4..6], &record).is_empty());
    }
}
