//! The quality benchmark of issue 3: on a labelled data set, fit on the whole file (100 trees,
//! max_samples 256), score the whole file, and average ROC AUC and average precision over
//! seeds, for comparison with scikit-learn's `IsolationForest` on the same protocol.

use std::path::{Path, PathBuf};

use super::csv::{self, Columns, CsvError};
use super::metrics;
use crate::detect::forest::{ForestError, ForestParams, IsolationForest};

/// Seeds averaged over (`random_state` 0 to 4).
pub const SEEDS: std::ops::Range<u64> = 0..5;

/// scikit-learn's mean ROC AUC on this protocol, measured on the project's machines.
pub const SKLEARN_ROC_AUC: [(&str, f64); 4] = [
    ("shuttle", 0.997),
    ("mammography", 0.859),
    ("cardio", 0.932),
    ("http", 0.9995),
];

/// Errors running the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchmarkError {
    #[error(transparent)]
    Csv(#[from] CsvError),
    #[error("{}: {error}", path.display())]
    Forest { path: PathBuf, error: ForestError },
    #[error("{}: needs both normal and anomalous labels", path.display())]
    Unlabelled { path: PathBuf },
    #[error(
        "data set {name} not found: neither {} nor {} exists. It is the ODDS {name} set as \
         ADBench distributes it (https://github.com/Minqi824/ADBench, \
         datasets/Classical/*_{name}.npz), converted to CSV with a header x0..xN,label as \
         tests/data/README.md describes; put it at {}",
        in_repo.display(),
        beside.display(),
        beside.display()
    )]
    Missing {
        name: String,
        in_repo: PathBuf,
        beside: PathBuf,
    },
}

/// The data sets the test suite needs, in the repository: `tests/data/` (cardio, mammography,
/// shuttle; sources and licences in `tests/data/README.md`).
pub fn repo_data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The larger data sets, beside the repository as the project's machines and CI lay it out:
/// `../shared/data/outliers/` (http, 17 MB; it also holds copies of the three in the
/// repository).
pub fn shared_data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/outliers")
}

/// Where data set `name` is: `tests/data/NAME.csv` when the repository has it, else
/// `../shared/data/outliers/NAME.csv`, which may not exist (see [`find_data_set`]).
pub fn data_set_path(name: &str) -> PathBuf {
    let file = format!("{name}.csv");
    let in_repo = repo_data_dir().join(&file);
    if in_repo.is_file() {
        in_repo
    } else {
        shared_data_dir().join(file)
    }
}

/// As [`data_set_path`], for a file that must exist.
///
/// # Errors
/// [`BenchmarkError::Missing`], naming both places and where the file comes from, when neither
/// holds `NAME.csv`.
pub fn find_data_set(name: &str) -> Result<PathBuf, BenchmarkError> {
    let path = data_set_path(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(BenchmarkError::Missing {
            name: name.into(),
            in_repo: repo_data_dir().join(format!("{name}.csv")),
            beside: path,
        })
    }
}

/// Mean figures over [`SEEDS`] for one data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quality {
    pub rows: usize,
    pub roc_auc: f64,
    pub average_precision: f64,
}

/// Runs the protocol on the CSV at `path` (label column `label`).
pub fn quality(path: &Path, seeds: std::ops::Range<u64>) -> Result<Quality, BenchmarkError> {
    let table = csv::read(path, Columns::Numeric, "label")?;
    let labels = table.labels.as_deref().unwrap_or_default();
    let rows = table.n_rows();
    let mut scores = vec![0.0; rows];
    let (mut auc_sum, mut ap_sum) = (0.0, 0.0);
    let n_seeds = seeds.end.saturating_sub(seeds.start);
    for seed in seeds {
        let params = ForestParams {
            random_state: seed,
            ..ForestParams::default()
        };
        let forest =
            IsolationForest::fit(&table.values, table.n_features(), &params).map_err(|error| {
                BenchmarkError::Forest {
                    path: path.into(),
                    error,
                }
            })?;
        forest.score_samples_par(&table.values, &mut scores);
        let ranking: Vec<f64> = scores.iter().map(|s| -s).collect();
        let unlabelled = || BenchmarkError::Unlabelled { path: path.into() };
        auc_sum += metrics::roc_auc(labels, &ranking).ok_or_else(unlabelled)?;
        ap_sum += metrics::average_precision(labels, &ranking).ok_or_else(unlabelled)?;
    }
    Ok(Quality {
        rows,
        roc_auc: auc_sum / n_seeds as f64,
        average_precision: ap_sum / n_seeds as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfectly_separable_data_scores_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.csv");
        let mut text = String::from("a,b,label\n");
        for i in 0..300 {
            text.push_str(&format!("{},{},0\n", i % 17, i % 13));
        }
        text.push_str("500,-500,1\n-400,900,1\n");
        std::fs::write(&path, text).unwrap();
        let q = quality(&path, 0..2).unwrap();
        assert_eq!(q.rows, 302);
        assert_eq!(q.roc_auc, 1.0);
        assert_eq!(q.average_precision, 1.0);
    }

    #[test]
    fn finds_the_data_sets_in_the_repository() {
        for name in ["cardio", "mammography", "shuttle"] {
            assert_eq!(
                find_data_set(name).unwrap(),
                repo_data_dir().join(format!("{name}.csv"))
            );
        }
    }

    #[test]
    fn a_missing_data_set_says_where_to_put_it() {
        let err = find_data_set("no-such-set").unwrap_err().to_string();
        assert!(err.contains("tests/data/no-such-set.csv"), "{err}");
        assert!(
            err.contains("shared/data/outliers/no-such-set.csv"),
            "{err}"
        );
        assert!(err.contains("ADBench"), "{err}");
    }

    #[test]
    fn refuses_unlabelled_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.csv");
        std::fs::write(&path, "a,label\n1,0\n2,0\n").unwrap();
        assert!(matches!(
            quality(&path, 0..1),
            Err(BenchmarkError::Unlabelled { .. })
        ));
    }
}
