//! The quality bar of issue 3 on the smaller data sets, in the ordinary test run: mean ROC AUC
//! within 0.01 of scikit-learn's on the same protocol. The full table, including http, is
//! `cargo run --release --example quality` (docs/benchmarks.md).
//!
//! The three data sets are in the repository (`tests/data/`, sources and licences in its
//! README), so this runs on a fresh clone; http, too large for it, is left to the example.

use std::path::PathBuf;

use anomalyd::offline::benchmark::{SEEDS, SKLEARN_ROC_AUC, quality};

/// `tests/data/NAME.csv`, and nowhere else: this test must not depend on files beside the
/// repository.
fn data_set(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(format!("{name}.csv"))
}

/// On cardio one seed's ROC AUC has a standard deviation of about 0.012 (measured for both
/// implementations), so two 5-seed means differ by more than 0.01 about one time in five by
/// chance alone. Cardio is therefore compared over 20 seeds against scikit-learn 1.9.1's mean
/// over seeds 0..200, measured here: 0.9243 (standard error 0.0008; its 5-seed figure is
/// 0.932). anomalyd's own 200-seed mean is 0.9231.
const CARDIO_SKLEARN_200_SEEDS: f64 = 0.9243;

fn check(name: &str) {
    let reference = SKLEARN_ROC_AUC
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, auc)| *auc)
        .expect("a data set with a scikit-learn figure");
    let q = quality(&data_set(name), SEEDS).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        (q.roc_auc - reference).abs() <= 0.01,
        "{name}: mean ROC AUC {:.4}, scikit-learn {reference}",
        q.roc_auc
    );
}

#[test]
fn cardio_matches_scikit_learn() {
    let q = quality(&data_set("cardio"), 0..20).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        (q.roc_auc - CARDIO_SKLEARN_200_SEEDS).abs() <= 0.01,
        "cardio: mean ROC AUC {:.4} over 20 seeds, scikit-learn {CARDIO_SKLEARN_200_SEEDS}",
        q.roc_auc
    );
}

#[test]
fn mammography_matches_scikit_learn() {
    check("mammography");
}

#[test]
fn shuttle_matches_scikit_learn() {
    check("shuttle");
}
