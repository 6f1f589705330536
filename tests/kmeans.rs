//! `anomalyd train --kind kmeans|bisecting_kmeans` and `anomalyd eval` from the command line:
//! the elbow on four obvious blobs, `top:N` flagging N-1 training rows, bit-for-bit
//! reproducible files (but for the training time and source) with the same id, damaged files
//! refused with exit 65, `top:N` beyond the rows refused, options of another kind refused.
//! No broker is involved.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anomalyd::detect::model::LoadedModel;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const KINDS: [&str; 2] = ["kmeans", "bisecting_kmeans"];

fn anomalyd(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anomalyd"));
    for (k, _) in std::env::vars() {
        if k.starts_with("ANOMALYD_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).output().expect("run anomalyd")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// 100 rows around each of four corners 10 apart (uniform noise in +-1, distinct values), and
/// with `outliers`, four labelled rows far from every corner.
fn blobs(dir: &Path, name: &str, seed: u64, outliers: bool) -> PathBuf {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = String::from("a,b,label\n");
    for (cx, cy) in [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0), (10.0, 10.0)] {
        for _ in 0..100 {
            let (x, y): (f64, f64) = (rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0));
            out.push_str(&format!("{},{},0\n", cx + x, cy + y));
        }
    }
    if outliers {
        for (x, y) in [(5.0, 5.0), (-6.0, 4.0), (16.0, 16.0), (5.0, -7.0)] {
            out.push_str(&format!("{x},{y},1\n"));
        }
    }
    let path = dir.join(name);
    std::fs::write(&path, out).unwrap();
    path
}

fn train(kind: &str, input: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--kind",
        kind,
        "--input",
        s(input),
        "--out",
        s(out),
    ];
    args.extend_from_slice(extra);
    anomalyd(&args)
}

/// The model id a train summary prints first.
fn printed_id(out: &Output) -> String {
    let stdout = text(&out.stdout);
    stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn the_elbow_keeps_four_blobs_and_top_n_flags_n_minus_one_training_rows() {
    let dir = tempfile::tempdir().unwrap();
    let data = blobs(dir.path(), "train.csv", 1, false);
    for kind in KINDS {
        let model = dir.path().join(kind);
        let out = train(
            kind,
            &data,
            &model,
            &["--k", "auto", "--k-max", "8", "--threshold", "top:25"],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        for says in [
            format!("({kind})"),
            "k 4 (elbow: r(5)".into(),
            "so k = 4 is kept".into(),
            "top:25; anomaly iff score > threshold".into(),
            "flags 24 training rows".into(),
            "cluster sizes 100,100,100,100".into(),
        ] {
            assert!(stdout.contains(&says), "{kind}: no {says:?} in\n{stdout}");
        }
        // The file says the same, and scores the training rows as training did.
        let loaded = LoadedModel::load(&model).unwrap();
        assert_eq!(loaded.id(), printed_id(&out));
        let eval = anomalyd(&["eval", "--model", s(&model), "--input", s(&data), "--json"]);
        assert!(eval.status.success(), "{}", text(&eval.stderr));
        let report: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
        assert_eq!(report["flagged"], 24, "{report}");
        assert_eq!(report["kind"], kind);
    }
}

#[test]
fn eval_ranks_far_records_as_anomalies_for_both_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let data = blobs(dir.path(), "train.csv", 2, false);
    let labelled = blobs(dir.path(), "test.csv", 3, true);
    for kind in KINDS {
        let model = dir.path().join(kind);
        let out = train(
            kind,
            &data,
            &model,
            &[
                "--k",
                "4",
                "--threshold",
                "quantile:0.999",
                "--scale",
                "standard",
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let eval = anomalyd(&["eval", "-m", s(&model), "--input", s(&labelled), "--json"]);
        assert!(eval.status.success(), "{}", text(&eval.stderr));
        let report: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
        assert_eq!(report["roc_auc"], 1.0, "{kind}: {report}");
        assert_eq!(report["average_precision"], 1.0, "{kind}: {report}");
        assert_eq!(report["recall"], 1.0, "{kind}: {report}");
        assert_eq!(report["anomalies"], 4);
        let human = anomalyd(&["eval", "-m", s(&model), "--input", s(&labelled)]);
        let human = text(&human.stdout);
        assert!(
            human.contains("ROC AUC 1.0000") && human.contains(kind),
            "{human}"
        );
    }
}

/// The header's JSON without `trained_at` and `source`, and every other byte of the file.
fn without_provenance(bytes: &[u8]) -> (Vec<u8>, serde_json::Value, Vec<u8>) {
    let h = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[24..24 + h]).unwrap();
    header["trained_at"] = serde_json::Value::Null;
    header["source"] = serde_json::Value::Null;
    (
        bytes[..12].to_vec(),
        header,
        bytes[24 + h..bytes.len() - 32].to_vec(),
    )
}

#[test]
fn the_same_seed_gives_the_same_file_and_id() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let data_a = blobs(a.path(), "train.csv", 4, false);
    let data_b = blobs(b.path(), "elsewhere.csv", 4, false);
    for kind in KINDS {
        let args = ["--k-max", "6", "--threshold", "top:9", "--seed", "17"];
        let (ma, mb) = (a.path().join(kind), b.path().join(kind));
        let first = train(kind, &data_a, &ma, &args);
        // A second later, so that the training times may differ.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let again = train(kind, &data_b, &mb, &args);
        assert!(first.status.success() && again.status.success());
        assert_eq!(printed_id(&first), printed_id(&again));
        let (fa, fb) = (std::fs::read(&ma).unwrap(), std::fs::read(&mb).unwrap());
        assert_ne!(fa, fb, "the training time and source are recorded");
        assert_eq!(without_provenance(&fa), without_provenance(&fb));
        let header = without_provenance(&fa).1;
        assert_eq!(header["seed"], 17);
        assert_eq!(header["threshold_rule"], "top:9");
        assert_eq!(header["costs"].as_array().unwrap().len(), 6);

        let other = train(
            kind,
            &data_a,
            &a.path().join("other"),
            &["--k-max", "6", "--threshold", "top:9", "--seed", "18"],
        );
        assert_ne!(
            printed_id(&other),
            printed_id(&first),
            "the seed is in the id"
        );
    }
}

#[test]
fn damaged_files_and_impossible_thresholds_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = blobs(dir.path(), "train.csv", 5, false);
    for kind in KINDS {
        let model = dir.path().join(kind);
        assert!(
            train(kind, &data, &model, &["--k", "3", "--threshold", "top:5"])
                .status
                .success()
        );
        let bytes = std::fs::read(&model).unwrap();
        let damaged = dir.path().join("damaged");
        for (what, edit) in [
            ("checksum", bytes.len() - 50),
            ("checksum", 30),
            ("not supported", 8),
        ] {
            let mut b = bytes.clone();
            b[edit] ^= if edit == 8 { 3 } else { 1 };
            std::fs::write(&damaged, &b).unwrap();
            let out = anomalyd(&["eval", "-m", s(&damaged), "--input", s(&data)]);
            assert_eq!(out.status.code(), Some(65), "{kind} byte {edit}");
            let stderr = text(&out.stderr);
            assert!(
                stderr.contains(what) && stderr.contains(s(&damaged)),
                "{stderr}"
            );
        }
        std::fs::write(&damaged, &bytes[..bytes.len() / 2]).unwrap();
        let out = anomalyd(&["eval", "-m", s(&damaged), "--input", s(&data)]);
        assert_eq!(out.status.code(), Some(65));
        assert!(text(&out.stderr).contains("truncated"));

        // 400 rows cannot give the 2,000th largest score (the default rule): refused, and
        // nothing is written.
        let refused = dir.path().join("refused");
        let out = train(kind, &data, &refused, &[]);
        assert_eq!(out.status.code(), Some(65));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("top:2000 needs at least 2000 training rows")
                && stderr.contains("has 400"),
            "{stderr}"
        );
        assert!(!refused.exists());
    }
}

#[test]
fn options_of_another_kind_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = blobs(dir.path(), "train.csv", 6, false);
    let out_path = dir.path().join("m");
    for (kind, extra, says) in [
        (
            "kmeans",
            &["--trees", "5"][..],
            "--trees: only for --kind isolation_forest",
        ),
        (
            "isolation_forest",
            &["--k", "3"],
            "--k: only for --kind kmeans|bisecting_kmeans",
        ),
        (
            "kmeans",
            &["--min-divisible", "2"],
            "--min-divisible: only for --kind bisecting_kmeans",
        ),
        (
            "bisecting_kmeans",
            &["--k", "3", "--elbow-ratio", "0.5"],
            "only for --k auto",
        ),
        ("kmeans", &["--threshold", "top:0"], "invalid threshold"),
    ] {
        let out = train(kind, &data, &out_path, extra);
        assert_eq!(out.status.code(), Some(2), "{kind} {extra:?}");
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
        assert!(!out_path.exists());
    }
}
