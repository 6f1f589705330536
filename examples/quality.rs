//! Prints the quality table of docs/benchmarks.md: mean ROC AUC and average precision over
//! five seeds on each data set, beside scikit-learn's ROC AUC on the same protocol.
//!
//! `cargo run --release --example quality [NAME...]` (default: all four data sets).

use std::process::ExitCode;

use anomalyd::offline::benchmark::{SEEDS, SKLEARN_ROC_AUC, data_set_path, quality};

fn main() -> ExitCode {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    println!(
        "| data set | rows | ROC AUC (ours) | ROC AUC (scikit-learn) | difference | average precision (ours) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let mut ok = true;
    for (name, reference) in SKLEARN_ROC_AUC {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == name) {
            continue;
        }
        match quality(&data_set_path(name), SEEDS) {
            Ok(q) => {
                let diff = q.roc_auc - reference;
                ok &= diff.abs() <= 0.01;
                println!(
                    "| {name} | {} | {:.4} | {reference} | {diff:+.4} | {:.4} |",
                    q.rows, q.roc_auc, q.average_precision
                );
            }
            Err(e) => {
                eprintln!("quality: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("quality: a mean ROC AUC is more than 0.01 from scikit-learn's");
        ExitCode::FAILURE
    }
}
