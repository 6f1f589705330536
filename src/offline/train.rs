//! `anomalyd train`: fit an Isolation Forest on a CSV file or the synthetic set, and write the
//! model file (and optionally the score-distribution picture).

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::csv::{self, Columns, CsvError};
use super::purchases::{self, PurchasesError};
use super::report::{self, Histogram, ReportError};
use crate::detect::forest::{
    Contamination, ForestError, ForestParams, IsolationForest, MaxSamples,
};
use crate::detect::model::{self, ModelError, TrainingMeta};
use crate::exit;
use crate::stages::aggregate::invoice::FEATURE_NAMES;
use crate::synthetic;

/// The original project's parameters for its synthetic training set.
pub const SYNTHETIC_PARAMS: ForestParams = ForestParams {
    n_estimators: 50,
    max_samples: MaxSamples::Count(500),
    contamination: Contamination::Fraction(0.01),
    random_state: 42,
};

/// Errors from `train`.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Csv(#[from] CsvError),
    #[error(transparent)]
    Purchases(#[from] PurchasesError),
    #[error("{input}: {error}")]
    Forest { input: String, error: ForestError },
    #[error(
        "{input}: every feature is constant ({}): an Isolation Forest has nothing to split on, \
         so every record would score alike; train on data that varies",
        columns.join(", ")
    )]
    AllConstant { input: String, columns: Vec<String> },
    #[error("{input}: {error}")]
    Clusters {
        input: String,
        error: crate::detect::kmeans::ClusterError,
    },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Report(#[from] ReportError),
}

impl TrainError {
    /// The process exit code this error should end `anomalyd train` with.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Csv(e) if e.is_missing() => exit::NO_INPUT,
            Self::Purchases(e) if e.is_missing() => exit::NO_INPUT,
            Self::Csv(_)
            | Self::Purchases(_)
            | Self::Forest { .. }
            | Self::AllConstant { .. }
            | Self::Clusters { .. } => exit::DATA_ERR,
            Self::Model(_) | Self::Report(_) => exit::CANT_CREATE,
        }
    }
}

/// Where the training rows come from.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainInput {
    Csv {
        path: PathBuf,
        /// `None`: every numeric column except the label.
        features: Option<Vec<String>>,
        label: String,
    },
    /// [`synthetic::training_set`] with this seed, and [`SYNTHETIC_PARAMS`] by default.
    Synthetic { seed: u64 },
    /// Purchase lines, one training row per invoice ([`purchases::read`]), features
    /// [`invoice::FEATURE_NAMES`](crate::stages::aggregate::invoice::FEATURE_NAMES).
    Purchases { path: PathBuf },
}

/// `anomalyd train`'s options; `None` parameters take the input's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    pub input: TrainInput,
    pub trees: Option<usize>,
    pub max_samples: Option<MaxSamples>,
    pub contamination: Option<Contamination>,
    pub seed: Option<u64>,
    pub out: PathBuf,
    pub report: Option<PathBuf>,
    /// Draw a progress bar on stderr (the caller checks it is a terminal).
    pub progress: bool,
}

impl TrainOptions {
    /// `anomalyd train --synthetic SEED --out OUT` with every other option at its default.
    pub fn synthetic(seed: u64, out: impl Into<PathBuf>) -> Self {
        Self {
            input: TrainInput::Synthetic { seed },
            trees: None,
            max_samples: None,
            contamination: None,
            seed: None,
            out: out.into(),
            report: None,
            progress: false,
        }
    }
}

/// What `train` did, for printing.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    pub model_id: String,
    pub path: PathBuf,
    pub rows: usize,
    pub feature_names: Vec<String>,
    pub params: ForestParams,
    pub max_samples_used: usize,
    pub offset: f64,
    /// Growing the trees and, for a fractional contamination, scoring the training set.
    pub fit_seconds: f64,
    /// Everything, including reading the input and writing the file.
    pub total_seconds: f64,
    pub report: Option<PathBuf>,
    /// Problems with the training data that did not stop training (constant columns), for
    /// stderr; the summary itself does not show them.
    pub warnings: Vec<String>,
}

impl std::fmt::Display for TrainSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "model {} ({}) written to {}",
            self.model_id,
            model::KIND_ISOLATION_FOREST,
            self.path.display()
        )?;
        writeln!(
            f,
            "rows {}, features {} ({}), trees {}, max_samples {} (used {}), contamination {}, seed {}",
            self.rows,
            self.feature_names.len(),
            self.feature_names.join(","),
            self.params.n_estimators,
            self.params.max_samples,
            self.max_samples_used,
            self.params.contamination,
            self.params.random_state
        )?;
        writeln!(f, "offset {:.6}", self.offset)?;
        write!(
            f,
            "training time {:.3} s (total {:.3} s)",
            self.fit_seconds, self.total_seconds
        )?;
        if let Some(report) = &self.report {
            write!(f, "\nreport written to {}", report.display())?;
        }
        Ok(())
    }
}

/// Trains and writes a model as `options` say.
pub fn train(options: &TrainOptions) -> Result<TrainSummary, TrainError> {
    let started = Instant::now();
    let (data, feature_names, source, defaults) = load(&options.input)?;
    let constant = constant_columns(&data, &feature_names);
    if !constant.is_empty() && constant.len() == feature_names.len() {
        return Err(TrainError::AllConstant {
            input: source,
            columns: constant,
        });
    }
    let warnings: Vec<String> = if constant.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "{source}: constant column{} {} (the same value in every row): the model never \
             splits on {}, so a record is not judged on {}",
            if constant.len() == 1 { "" } else { "s" },
            constant.join(", "),
            if constant.len() == 1 { "it" } else { "them" },
            if constant.len() == 1 { "it" } else { "them" },
        )]
    };
    let params = ForestParams {
        n_estimators: options.trees.unwrap_or(defaults.n_estimators),
        max_samples: options.max_samples.unwrap_or(defaults.max_samples),
        contamination: options.contamination.unwrap_or(defaults.contamination),
        random_state: options.seed.unwrap_or(defaults.random_state),
    };

    let bar = if options.progress {
        ProgressBar::new(params.n_estimators as u64).with_style(
            ProgressStyle::with_template("training {bar:40} {pos}/{len} trees {elapsed}")
                .expect("a valid template"),
        )
    } else {
        ProgressBar::hidden()
    };
    let fit_started = Instant::now();
    let forest =
        IsolationForest::fit_with_progress(&data, feature_names.len(), &params, &|| bar.inc(1))
            .map_err(|error| TrainError::Forest {
                input: source.clone(),
                error,
            })?;
    let fit_seconds = fit_started.elapsed().as_secs_f64();
    bar.finish_and_clear();

    let meta = TrainingMeta::describe(&data, feature_names.clone(), source);
    let model_id = model::save(&options.out, &forest, &meta)?;
    if let Some(path) = &options.report {
        draw_report(path, &forest, &data, &model_id)?;
    }
    Ok(TrainSummary {
        model_id,
        path: options.out.clone(),
        rows: data.len() / feature_names.len(),
        feature_names,
        params,
        max_samples_used: forest.max_samples(),
        offset: forest.offset(),
        fit_seconds,
        total_seconds: started.elapsed().as_secs_f64(),
        report: options.report.clone(),
        warnings,
    })
}

/// The names of the features that hold one value in every row of `data` (row-major, one
/// value per name per row). With one row, all of them.
fn constant_columns(data: &[f64], names: &[String]) -> Vec<String> {
    let d = names.len();
    if d == 0 || data.is_empty() {
        return Vec::new();
    }
    names
        .iter()
        .enumerate()
        .filter(|&(f, _)| {
            let mut column = data.iter().skip(f).step_by(d);
            let first = column.next();
            column.all(|v| Some(v) == first)
        })
        .map(|(_, name)| name.clone())
        .collect()
}

/// Row-major training values, feature names, a description of the source, and the forest
/// parameters that suit it.
pub(crate) type Loaded = (Vec<f64>, Vec<String>, String, ForestParams);

/// Reads the training rows `input` names.
pub(crate) fn load(input: &TrainInput) -> Result<Loaded, TrainError> {
    match input {
        TrainInput::Csv {
            path,
            features,
            label,
        } => {
            let columns = match features {
                Some(names) => Columns::Named(names),
                None => Columns::Numeric,
            };
            let table = csv::read(path, columns, label)?;
            Ok((
                table.values,
                table.feature_names,
                path.display().to_string(),
                ForestParams::default(),
            ))
        }
        TrainInput::Purchases { path } => {
            let set = purchases::read(path)?;
            Ok((
                set.values,
                FEATURE_NAMES.map(String::from).to_vec(),
                path.display().to_string(),
                ForestParams::default(),
            ))
        }
        TrainInput::Synthetic { seed } => {
            let data = synthetic::training_set(*seed)
                .into_iter()
                .flatten()
                .collect();
            Ok((
                data,
                vec!["x0".into(), "x1".into()],
                format!("synthetic:{seed}"),
                SYNTHETIC_PARAMS,
            ))
        }
    }
}

fn draw_report(
    path: &Path,
    forest: &IsolationForest,
    data: &[f64],
    model_id: &str,
) -> Result<(), ReportError> {
    let mut scores = vec![0.0; data.len() / forest.n_features()];
    forest.score_samples_par(data, &mut scores);
    let title = format!("training scores, model {model_id}");
    report::draw(
        path,
        &Histogram {
            title: &title,
            scores: &scores,
            labels: None,
            threshold: forest.offset(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::model::Model;

    fn options(dir: &Path, input: TrainInput) -> TrainOptions {
        TrainOptions {
            input,
            trees: None,
            max_samples: None,
            contamination: None,
            seed: None,
            out: dir.join("m.iforest"),
            report: None,
            progress: false,
        }
    }

    #[test]
    fn synthetic_uses_the_original_parameters_and_is_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path(), TrainInput::Synthetic { seed: 42 });
        opts.report = Some(dir.path().join("r.svg"));
        let summary = train(&opts).unwrap();
        assert_eq!(summary.params, SYNTHETIC_PARAMS);
        assert_eq!(summary.rows, 1000);
        assert_eq!(summary.max_samples_used, 500);
        assert!(
            summary.offset < -0.5,
            "1% contamination: {}",
            summary.offset
        );
        let model = Model::load(&opts.out).unwrap();
        assert_eq!(model.id(), summary.model_id);
        assert_eq!(model.header().source, "synthetic:42");
        assert!(model.score(&[3.5, -3.5]) < model.offset());
        assert!(model.score(&[2.0, 2.0]) > model.offset());
        assert!(
            std::fs::read_to_string(dir.path().join("r.svg"))
                .unwrap()
                .contains("threshold")
        );
        let text = summary.to_string();
        assert!(
            text.contains(&summary.model_id)
                && text.contains("(isolation_forest)")
                && text.contains("offset"),
            "{text}"
        );
    }

    #[test]
    fn same_training_twice_gives_the_same_id() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = train(&options(a.path(), TrainInput::Synthetic { seed: 42 })).unwrap();
        // At least a second later, so that the recorded training times differ.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let again = train(&options(b.path(), TrainInput::Synthetic { seed: 42 })).unwrap();
        assert_eq!(again.model_id, first.model_id);
        let (first_model, again_model) = (
            Model::load(&first.path).unwrap(),
            Model::load(&again.path).unwrap(),
        );
        assert_ne!(
            first_model.header().trained_at,
            again_model.header().trained_at
        );
        assert_eq!(again_model.id(), first.model_id);

        // The same CSV from another path: the same model.
        let mut text = String::from("a,b,label\n");
        for i in 0..300 {
            text.push_str(&format!("{},{},{}\n", i % 17, (i * 7) % 23, i % 2));
        }
        let csv = |dir: &Path| {
            let path = dir.join("data.csv");
            std::fs::write(&path, &text).unwrap();
            TrainInput::Csv {
                path,
                features: None,
                label: "label".into(),
            }
        };
        let from_a = train(&options(a.path(), csv(a.path()))).unwrap();
        let from_b = train(&options(b.path(), csv(b.path()))).unwrap();
        assert_eq!(from_a.model_id, from_b.model_id);

        // Another seed, or another synthetic set: another model.
        let mut reseeded = options(b.path(), TrainInput::Synthetic { seed: 42 });
        reseeded.seed = Some(43);
        let reseeded = train(&reseeded).unwrap();
        let other_data = train(&options(b.path(), TrainInput::Synthetic { seed: 7 })).unwrap();
        assert_ne!(reseeded.model_id, first.model_id);
        assert_ne!(other_data.model_id, first.model_id);
        assert_ne!(other_data.model_id, reseeded.model_id);
    }

    #[test]
    fn overrides_win_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path(), TrainInput::Synthetic { seed: 1 });
        opts.trees = Some(7);
        opts.max_samples = Some(MaxSamples::Auto);
        opts.contamination = Some(Contamination::Auto);
        opts.seed = Some(9);
        let summary = train(&opts).unwrap();
        assert_eq!(summary.params.n_estimators, 7);
        assert_eq!(summary.max_samples_used, 256);
        assert_eq!(summary.offset, -0.5);
        assert_eq!(summary.params.random_state, 9);
    }

    #[test]
    fn csv_input_with_nan_is_refused_with_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.csv");
        std::fs::write(&path, "a,b,label\n1,2,0\n3,NaN,1\n").unwrap();
        let input = TrainInput::Csv {
            path,
            features: None,
            label: "label".into(),
        };
        let err = train(&options(dir.path(), input)).unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        assert_eq!(err.exit_code(), exit::DATA_ERR);
        assert!(!dir.path().join("m.iforest").exists());
    }

    fn csv(dir: &Path, text: &str) -> TrainInput {
        let path = dir.join("d.csv");
        std::fs::write(&path, text).unwrap();
        TrainInput::Csv {
            path,
            features: None,
            label: "label".into(),
        }
    }

    /// Issue 11: 200 rows of `1,5` trained silently, and the model then flagged every record.
    #[test]
    fn all_constant_columns_are_refused_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let input = csv(dir.path(), &format!("amount,hour\n{}", "1,5\n".repeat(200)));
        let err = train(&options(dir.path(), input)).unwrap_err();
        assert_eq!(err.exit_code(), exit::DATA_ERR);
        let msg = err.to_string();
        assert!(
            msg.contains("d.csv: every feature is constant (amount, hour)"),
            "{msg}"
        );
        assert!(!dir.path().join("m.iforest").exists());
        // One row: nothing varies either.
        let input = csv(dir.path(), "a,b\n1,2\n");
        let err = train(&options(dir.path(), input)).unwrap_err();
        assert!(
            matches!(err, TrainError::AllConstant { ref columns, .. } if columns == &["a", "b"])
        );
    }

    #[test]
    fn a_constant_column_among_others_warns_and_trains() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::from("a,b,c,label\n");
        for i in 0..100 {
            text.push_str(&format!("{},5,-0,{}\n", i % 13, i % 2));
        }
        let summary = train(&options(dir.path(), csv(dir.path(), &text))).unwrap();
        assert_eq!(summary.feature_names, ["a", "b", "c"]);
        assert_eq!(summary.warnings.len(), 1, "{:?}", summary.warnings);
        assert!(
            summary.warnings[0].contains("constant columns b, c"),
            "{:?}",
            summary.warnings
        );
        // The summary (stdout) does not repeat it.
        assert!(!summary.to_string().contains("constant"));
        let varied = train(&options(dir.path(), TrainInput::Synthetic { seed: 1 })).unwrap();
        assert!(varied.warnings.is_empty());
    }

    /// Issue 11: a column with -1e308 and 1e308 panicked training (exit 101); the training
    /// ranges in the model header overflowed too.
    #[test]
    fn values_near_the_float_limit_train() {
        let dir = tempfile::tempdir().unwrap();
        let input = csv(dir.path(), "x\n-1e308\n1e308\n");
        let summary = train(&options(dir.path(), input)).unwrap();
        assert_eq!(summary.rows, 2);
        let model = Model::load(&summary.path).unwrap();
        assert_eq!(model.decision(model.score(&[0.0])), 0.0);
        let input = csv(
            dir.path(),
            "x,y\n-1.7976931348623157e308,1\n1.7976931348623157e308,2\n0,3\n5e-324,4\n",
        );
        let summary = train(&options(dir.path(), input)).unwrap();
        assert!(summary.warnings.is_empty());
        assert!(
            Model::load(&summary.path)
                .unwrap()
                .score(&[1e308, 2.5])
                .is_finite()
        );
    }

    #[test]
    fn csv_input_picks_features_and_skips_the_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.csv");
        let mut text = String::from("a,b,c,label\n");
        for i in 0..50 {
            text.push_str(&format!("{},{},{},{}\n", i, i * 2, i % 3, i % 2));
        }
        std::fs::write(&path, text).unwrap();
        let input = TrainInput::Csv {
            path,
            features: Some(vec!["c".into(), "a".into()]),
            label: "label".into(),
        };
        let summary = train(&options(dir.path(), input)).unwrap();
        assert_eq!(summary.feature_names, ["c", "a"]);
        assert_eq!(summary.rows, 50);
        assert_eq!(summary.params, ForestParams::default());
    }
}
