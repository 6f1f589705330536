//! The quality bar of issue 3 on the smaller data sets, in the ordinary test run: mean ROC AUC
//! over five seeds within 0.01 of scikit-learn's on the same protocol. The full table,
//! including http, is `cargo run --release --example quality` (docs/benchmarks.md).

use anomalyd::offline::benchmark::{SEEDS, SKLEARN_ROC_AUC, data_set_path, quality};

fn check(name: &str) {
    let reference = SKLEARN_ROC_AUC
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, auc)| *auc)
        .expect("a data set with a scikit-learn figure");
    let q = quality(&data_set_path(name), SEEDS).unwrap();
    assert!(
        (q.roc_auc - reference).abs() <= 0.01,
        "{name}: mean ROC AUC {:.4}, scikit-learn {reference}",
        q.roc_auc
    );
}

#[test]
fn cardio_matches_scikit_learn() {
    check("cardio");
}

#[test]
fn mammography_matches_scikit_learn() {
    check("mammography");
}

#[test]
fn shuttle_matches_scikit_learn() {
    check("shuttle");
}
