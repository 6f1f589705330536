//! Prints the quality table of docs/benchmarks.md: mean ROC AUC and average precision over
//! five seeds on each data set, beside scikit-learn's ROC AUC on the same protocol.
//!
//! `cargo run --release --example quality [NAME...]` (default: all four data sets).
//! `cargo run --release --example quality -- --seeds 200 cardio` prints instead the mean,
//! standard deviation and standard error of one-seed ROC AUCs over seeds 0..200, to compare
//! with `scripts/sklearn-quality 200 cardio`.

use std::process::ExitCode;

use anomalyd::offline::benchmark::{SEEDS, SKLEARN_ROC_AUC, find_data_set, quality};

fn main() -> ExitCode {
    let mut wanted: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = wanted.iter().position(|a| a == "--seeds") {
        let Some(Ok(n)) = wanted.get(i + 1).map(|n| n.parse::<u64>()) else {
            eprintln!("quality: --seeds takes a count of at least 2");
            return ExitCode::FAILURE;
        };
        wanted.drain(i..i + 2);
        return spread(&wanted, n);
    }
    println!(
        "| data set | rows | ROC AUC (ours) | ROC AUC (scikit-learn) | difference | average precision (ours) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let mut ok = true;
    for (name, reference) in SKLEARN_ROC_AUC {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == name) {
            continue;
        }
        match find_data_set(name).and_then(|path| quality(&path, SEEDS)) {
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
        eprintln!(
            "quality: a mean ROC AUC is more than 0.01 from scikit-learn's (five seeds are few: \
             compare over more with --seeds 200 and scripts/sklearn-quality, see docs/benchmarks.md)"
        );
        ExitCode::FAILURE
    }
}

/// One ROC AUC per seed in `0..n`: mean, standard deviation and standard error.
fn spread(names: &[String], n: u64) -> ExitCode {
    if n < 2 {
        eprintln!("quality: --seeds takes a count of at least 2");
        return ExitCode::FAILURE;
    }
    for (name, _) in SKLEARN_ROC_AUC {
        if !names.is_empty() && !names.iter().any(|w| w == name) {
            continue;
        }
        let mut aucs = Vec::new();
        for seed in 0..n {
            match find_data_set(name).and_then(|path| quality(&path, seed..seed + 1)) {
                Ok(q) => aucs.push(q.roc_auc),
                Err(e) => {
                    eprintln!("quality: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let mean = aucs.iter().sum::<f64>() / n as f64;
        let var = aucs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        println!(
            "{name}: seeds 0..{n}, ROC AUC mean {mean:.4}, sd {:.4}, se {:.4}",
            var.sqrt(),
            (var / n as f64).sqrt()
        );
    }
    ExitCode::SUCCESS
}
