//! `anomalyd eval`: score every row of a CSV file with a model of any kind and report how well
//! the scores rank labelled anomalies, what the model's threshold flags, and how fast it scored.
//!
//! Ranking metrics rank "more anomalous" high, so rows are ranked by `-decision`: for the
//! Isolation Forest that is `offset - score` (a lower score is more anomalous), for the k-means
//! kinds `score - threshold` (a larger distance is more anomalous). Both are monotone in the
//! score, so ROC AUC and average precision are those of the score pointed the right way.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::csv::{self, Columns, CsvError};
use super::metrics::{self, Confusion};
use super::report::{self, Histogram, ReportError};
use crate::detect::model::{LoadedModel, ModelError};
use crate::exit;

/// Errors from `eval`.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Csv(#[from] CsvError),
    #[error(transparent)]
    Report(#[from] ReportError),
}

impl EvalError {
    /// The process exit code this error should end `anomalyd eval` with.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Model(e) if e.is_missing() => exit::NO_INPUT,
            Self::Csv(e) if e.is_missing() => exit::NO_INPUT,
            Self::Model(_) | Self::Csv(_) => exit::DATA_ERR,
            Self::Report(_) => exit::CANT_CREATE,
        }
    }
}

/// `anomalyd eval`'s options.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    pub model: PathBuf,
    pub input: PathBuf,
    /// Name of the 0/1 label column; metrics that need labels are skipped without it.
    pub label: String,
    pub report: Option<PathBuf>,
}

/// The outcome of `eval`; `--json` prints it as one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    pub model_id: String,
    /// `isolation_forest`, `kmeans` or `bisecting_kmeans`.
    pub kind: String,
    pub model_path: PathBuf,
    pub input: PathBuf,
    pub rows: usize,
    /// Labelled anomalies, when the file has labels.
    pub anomalies: Option<usize>,
    pub roc_auc: Option<f64>,
    pub average_precision: Option<f64>,
    /// Rows the model's threshold flags (decision < 0: for the k-means kinds, score >
    /// threshold).
    pub flagged: usize,
    pub flagged_share: f64,
    /// Among flagged rows, the share labelled anomalous.
    pub precision: Option<f64>,
    /// Among labelled anomalies, the share flagged.
    pub recall: Option<f64>,
    /// Scoring throughput on one thread, batch path.
    pub rows_per_s: f64,
    /// Where the decision is 0, in score units: the forest's offset, the k-means threshold.
    pub offset: f64,
}

impl std::fmt::Display for EvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.4}"));
        writeln!(
            f,
            "model {} ({}, {})",
            self.model_id,
            self.kind,
            self.model_path.display()
        )?;
        match self.anomalies {
            Some(a) => writeln!(f, "rows {} ({} labelled anomalies)", self.rows, a)?,
            None => writeln!(f, "rows {} (no label column)", self.rows)?,
        }
        if self.anomalies.is_some() {
            writeln!(f, "ROC AUC {}", opt(self.roc_auc))?;
            writeln!(f, "average precision {}", opt(self.average_precision))?;
        }
        let at = if self.kind == crate::detect::model::KIND_ISOLATION_FOREST {
            "offset"
        } else {
            "threshold"
        };
        writeln!(
            f,
            "flagged {} ({:.2}%) at {at} {:.6}",
            self.flagged,
            100.0 * self.flagged_share,
            self.offset
        )?;
        if self.anomalies.is_some() {
            writeln!(
                f,
                "precision {}, recall {} at the model's threshold",
                opt(self.precision),
                opt(self.recall)
            )?;
        }
        write!(f, "{:.0} rows/s (one thread)", self.rows_per_s)
    }
}

/// Scores `options.input` with `options.model` and measures the result.
pub fn eval(options: &EvalOptions) -> Result<EvalReport, EvalError> {
    let model = LoadedModel::load(&options.model)?;
    let table = csv::read(
        &options.input,
        Columns::Named(model.feature_names()),
        &options.label,
    )?;
    let rows = table.n_rows();
    let mut scores = vec![0.0; rows];
    let started = Instant::now();
    model.score_batch(&table.values, &mut scores);
    let seconds = started.elapsed().as_secs_f64();
    let flags: Vec<bool> = scores.iter().map(|&s| model.is_anomaly(s)).collect();
    let flagged = flags.iter().filter(|&&f| f).count();

    let (mut anomalies, mut roc_auc, mut average_precision) = (None, None, None);
    let (mut precision, mut recall) = (None, None);
    if let Some(labels) = &table.labels {
        // Metrics rank "more anomalous" high: -decision does for every kind.
        let ranking: Vec<f64> = scores.iter().map(|&s| -model.decision(s)).collect();
        anomalies = Some(labels.iter().filter(|&&l| l).count());
        roc_auc = metrics::roc_auc(labels, &ranking);
        average_precision = metrics::average_precision(labels, &ranking);
        let confusion = Confusion::count(labels, &flags);
        precision = confusion.precision();
        recall = confusion.recall();
    }
    if let Some(path) = &options.report {
        let title = format!(
            "scores of {}, model {}",
            options.input.display(),
            model.id()
        );
        report::draw(
            path,
            &Histogram {
                title: &title,
                scores: &scores,
                labels: table.labels.as_deref(),
                threshold: model.threshold(),
            },
        )?;
    }
    Ok(EvalReport {
        model_id: model.id().into(),
        kind: model.kind().into(),
        model_path: options.model.clone(),
        input: options.input.clone(),
        rows,
        anomalies,
        roc_auc,
        average_precision,
        flagged,
        flagged_share: flagged as f64 / rows as f64,
        precision,
        recall,
        rows_per_s: rows as f64 / seconds.max(1e-9),
        offset: model.threshold(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offline::train::{TrainOptions, train};
    use std::path::Path;

    fn trained(dir: &Path) -> PathBuf {
        let out = dir.join("m.iforest");
        train(&TrainOptions::synthetic(42, out.clone())).unwrap();
        out
    }

    #[test]
    fn separates_blobs_from_outliers() {
        let dir = tempfile::tempdir().unwrap();
        let model = trained(dir.path());
        let input = dir.path().join("e.csv");
        let mut text = String::from("x0,x1,label\n");
        for (x, y) in [(2.1, 1.9), (-2.0, -2.2), (1.8, 2.0), (-1.9, -1.9)] {
            text.push_str(&format!("{x},{y},0\n"));
        }
        for (x, y) in [(3.9, -3.8), (-3.5, 3.7)] {
            text.push_str(&format!("{x},{y},1\n"));
        }
        std::fs::write(&input, text).unwrap();
        let options = EvalOptions {
            model,
            input,
            label: "label".into(),
            report: Some(dir.path().join("r.svg")),
        };
        let report = eval(&options).unwrap();
        assert_eq!(report.rows, 6);
        assert_eq!(report.anomalies, Some(2));
        assert_eq!(report.roc_auc, Some(1.0));
        assert_eq!(report.average_precision, Some(1.0));
        assert_eq!(report.flagged, 2);
        assert_eq!((report.precision, report.recall), (Some(1.0), Some(1.0)));
        assert!(report.rows_per_s > 0.0);
        let json = serde_json::to_value(&report).unwrap();
        for key in [
            "rows",
            "roc_auc",
            "average_precision",
            "flagged",
            "rows_per_s",
            "model_id",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
        assert!(report.to_string().contains("ROC AUC 1.0000"));
        assert!(dir.path().join("r.svg").exists());
    }

    #[test]
    fn without_labels_reports_only_what_it_can() {
        let dir = tempfile::tempdir().unwrap();
        let model = trained(dir.path());
        let input = dir.path().join("e.csv");
        std::fs::write(&input, "x1,x0\n2,2\n4,-4\n").unwrap();
        let report = eval(&EvalOptions {
            model,
            input,
            label: "label".into(),
            report: None,
        })
        .unwrap();
        assert_eq!((report.anomalies, report.roc_auc), (None, None));
        // Columns are matched by name, not position: (x0, x1) = (-4, 4) is the outlier.
        assert_eq!(report.flagged, 1);
        assert!(!report.to_string().contains("ROC AUC"));
    }

    #[test]
    fn missing_columns_and_files_get_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let model = trained(dir.path());
        let input = dir.path().join("e.csv");
        std::fs::write(&input, "a,b\n1,2\n").unwrap();
        let options = EvalOptions {
            model: model.clone(),
            input: input.clone(),
            label: "label".into(),
            report: None,
        };
        let err = eval(&options).unwrap_err();
        assert!(err.to_string().contains("no column named \"x0\""), "{err}");
        assert_eq!(err.exit_code(), exit::DATA_ERR);
        let err = eval(&EvalOptions {
            model: dir.path().join("nope"),
            ..options
        })
        .unwrap_err();
        assert_eq!(err.exit_code(), exit::NO_INPUT);
    }

    #[test]
    fn ranks_far_records_high_for_the_k_means_kinds() {
        use crate::detect::kmeans::{KChoice, ThresholdRule};
        use crate::offline::train::TrainInput;
        use crate::offline::train_kmeans::{ClusterKind, ClusterTrainOptions, train_clusters};
        let dir = tempfile::tempdir().unwrap();
        for kind in [ClusterKind::KMeans, ClusterKind::BisectingKMeans] {
            let out = dir.path().join(format!("{}.model", kind.name()));
            let mut options =
                ClusterTrainOptions::new(kind, TrainInput::Synthetic { seed: 42 }, out.clone());
            options.k = KChoice::Fixed(2);
            options.threshold = ThresholdRule::Top(5);
            train_clusters(&options).unwrap();
            let input = dir.path().join("e.csv");
            let mut text = String::from("x1,label,x0\n");
            for (x, y) in [(2.1, 1.9), (-2.0, -2.2), (1.8, 2.0), (-1.9, -1.9)] {
                text.push_str(&format!("{y},0,{x}\n"));
            }
            for (x, y) in [(3.9, -3.8), (-3.5, 3.7), (0.0, 0.1)] {
                text.push_str(&format!("{y},1,{x}\n"));
            }
            std::fs::write(&input, text).unwrap();
            let report = eval(&EvalOptions {
                model: out,
                input,
                label: "label".into(),
                report: Some(dir.path().join("r.svg")),
            })
            .unwrap();
            assert_eq!(report.kind, kind.name());
            assert_eq!(report.roc_auc, Some(1.0), "{kind:?}");
            assert_eq!(report.average_precision, Some(1.0));
            assert_eq!(report.flagged, 3);
            assert_eq!((report.precision, report.recall), (Some(1.0), Some(1.0)));
            let text = report.to_string();
            assert!(
                text.contains(kind.name()) && text.contains("at threshold"),
                "{text}"
            );
        }
    }
}
