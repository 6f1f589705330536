//! `anomalyd train --format purchases` on slices of the Online Retail data
//! (`tests/data/retail/`): both cluster kinds, invoice counts checked against a grouping done
//! here, features checked by scoring this test's own invoice features with `anomalyd eval`, the
//! elbow's k recomputed from the costs the file records, the same file and id for the same
//! seed, and the default `top:2000` refused on a slice too small for it. No broker is involved.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anomalyd::detect::model::{AnyHeader, LoadedModel};

const KINDS: [&str; 2] = ["kmeans", "bisecting_kmeans"];
const FEATURES: [&str; 5] = [
    "mean_unit_price",
    "min_unit_price",
    "max_unit_price",
    "hour",
    "quantity_sum",
];

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/retail")
        .join(name)
}

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

fn train(kind: &str, input: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--kind",
        kind,
        "--input",
        s(input),
        "--format",
        "purchases",
        "--out",
        s(out),
    ];
    args.extend_from_slice(extra);
    anomalyd(&args)
}

/// What this test expects training to keep and leave out, worked out with the `csv` crate
/// alone: invoices by InvoiceNo in order of first appearance, features as the issue defines
/// them.
struct Expected {
    lines: usize,
    invoices: usize,
    cancellations: usize,
    no_customer: usize,
    no_description: usize,
    rows: Vec<[f64; 5]>,
}

fn expected(path: &Path, header: bool) -> Expected {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(header)
        .from_path(path)
        .unwrap();
    // Per invoice: first line's fields, prices, quantities.
    type Inv = (csv::StringRecord, Vec<f64>, i64);
    let mut order: Vec<String> = Vec::new();
    let mut by_no: HashMap<String, Inv> = HashMap::new();
    let mut lines = 0;
    for record in reader.records() {
        let r = record.unwrap();
        lines += 1;
        let no = r[0].to_owned();
        let price: f64 = r[5].parse().unwrap();
        let quantity: i64 = r[3].parse().unwrap();
        let inv = by_no.entry(no.clone()).or_insert_with(|| {
            order.push(no);
            (r.clone(), Vec::new(), 0)
        });
        inv.1.push(price);
        inv.2 += quantity;
    }
    let mut e = Expected {
        lines,
        invoices: order.len(),
        cancellations: 0,
        no_customer: 0,
        no_description: 0,
        rows: Vec::new(),
    };
    for no in &order {
        let (first, prices, quantity) = &by_no[no];
        if no.starts_with('C') {
            e.cancellations += 1;
        } else if first[6].is_empty() {
            e.no_customer += 1;
        } else if first[2].is_empty() {
            e.no_description += 1;
        } else {
            // "12/1/2010 8:26": the hour is what stands before the colon of the time.
            let time = first[4].split(' ').nth(1).unwrap();
            let hour: f64 = time.split(':').next().unwrap().parse().unwrap();
            let sum: f64 = prices.iter().sum();
            let min = prices.iter().copied().fold(f64::INFINITY, f64::min);
            let max = prices.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            e.rows
                .push([sum / prices.len() as f64, min, max, hour, *quantity as f64]);
        }
    }
    e
}

/// `rows` as a CSV file `eval` can score.
fn features_csv(dir: &Path, rows: &[[f64; 5]]) -> PathBuf {
    let mut out = FEATURES.join(",") + "\n";
    for r in rows {
        let cells: Vec<String> = r.iter().map(|v| format!("{v:?}")).collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    let path = dir.join("features.csv");
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn both_kinds_train_on_invoices_with_the_elbow_and_threshold_as_reported() {
    let dir = tempfile::tempdir().unwrap();
    let input = data("train_slice.csv");
    let e = expected(&input, true);
    assert!(
        e.cancellations > 0 && e.no_customer > 0,
        "the slice has both"
    );
    let features = features_csv(dir.path(), &e.rows);
    for kind in KINDS {
        let model = dir.path().join(kind);
        let out = train(
            kind,
            &input,
            &model,
            &["--threshold", "top:20", "--seed", "42"],
        );
        assert!(out.status.success(), "{kind}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let counts = format!(
            "purchase lines {} after a header, invoices {}; left out {} cancellations, {} \
             without CustomerID, {} without Description, 0 without features; trained on {}",
            e.lines,
            e.invoices,
            e.cancellations,
            e.no_customer,
            e.no_description,
            e.rows.len()
        );
        assert!(
            stdout.contains(&counts),
            "{kind}: no {counts:?} in\n{stdout}"
        );
        assert!(
            stdout.contains(&format!("rows {},", e.rows.len())),
            "{stdout}"
        );

        let loaded = LoadedModel::load(&model).unwrap();
        assert_eq!(loaded.feature_names(), FEATURES);
        let AnyHeader::Clusters(h) = loaded.header() else {
            panic!("{kind}: not a cluster model")
        };
        assert_eq!(h.rows, e.rows.len() as u64);
        assert_eq!((h.seed, h.elbow_ratio), (42, Some(0.7)));
        assert_eq!(h.threshold_rule, "top:20");
        assert_eq!(h.costs.len(), 20, "k = 1..=20 tried");
        // The elbow: K the first k with cost(k)/cost(k-1) > 0.7, K-1 kept.
        let k = h
            .costs
            .windows(2)
            .find(|w| w[1].cost / w[0].cost > 0.7)
            .map_or(20, |w| w[0].k);
        assert_eq!(h.k, k, "{kind}: {}", h.k_rule);
        assert!(
            stdout.contains(&format!("k {k} (elbow: r({})", k + 1)),
            "{stdout}"
        );
        assert!(
            stdout.contains("top:20; anomaly iff score > threshold"),
            "{stdout}"
        );
        assert!(stdout.contains("flags 19 training rows"), "{stdout}");

        // The invoices' features as this test computes them score as training scored its own.
        let eval = anomalyd(&["eval", "-m", s(&model), "--input", s(&features), "--json"]);
        assert!(eval.status.success(), "{}", text(&eval.stderr));
        let report: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
        assert_eq!(report["rows"], e.rows.len(), "{report}");
        assert_eq!(report["flagged"], 19, "{kind}: {report}");
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
fn the_same_seed_gives_the_same_model_and_id() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let input = data("train_slice.csv");
    // The same lines from another path.
    let elsewhere = b.path().join("elsewhere.csv");
    std::fs::copy(&input, &elsewhere).unwrap();
    for kind in KINDS {
        let args = ["--threshold", "top:20", "--seed", "7"];
        let (ma, mb) = (a.path().join(kind), b.path().join(kind));
        let first = train(kind, &input, &ma, &args);
        let again = train(kind, &elsewhere, &mb, &args);
        assert!(first.status.success() && again.status.success());
        let id = |o: &Output| text(&o.stdout).split_whitespace().nth(1).map(String::from);
        assert_eq!(id(&first), id(&again));
        let (fa, fb) = (std::fs::read(&ma).unwrap(), std::fs::read(&mb).unwrap());
        // Byte for byte but for when and where from the data came.
        assert_eq!(without_provenance(&fa), without_provenance(&fb));
        let other = train(
            kind,
            &input,
            &a.path().join("other"),
            &["--threshold", "top:20"],
        );
        assert!(other.status.success());
        assert_ne!(id(&other), id(&first), "the seed is in the id");
    }
}

#[test]
fn a_header_less_stream_slice_trains_and_top_2000_needs_2000_invoices() {
    let dir = tempfile::tempdir().unwrap();
    let input = data("stream_slice.csv");
    let e = expected(&input, false);
    for kind in KINDS {
        let model = dir.path().join(kind);
        let out = train(
            kind,
            &input,
            &model,
            &["--k", "3", "--threshold", "quantile:0.9"],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let says = format!(
            "purchase lines {}, invoices {}; left out {} cancellations",
            e.lines, e.invoices, e.cancellations
        );
        assert!(stdout.contains(&says), "no {says:?} in\n{stdout}");
        assert!(
            stdout.contains(&format!("trained on {}", e.rows.len())),
            "{stdout}"
        );

        // The default threshold, top:2000, is refused on a few hundred invoices, with nothing
        // written.
        let refused = dir.path().join("refused");
        let out = train(kind, &input, &refused, &[]);
        assert_eq!(out.status.code(), Some(65), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "top:2000 needs at least 2000 training rows, the training set has {}",
                e.rows.len()
            )),
            "{stderr}"
        );
        assert!(!refused.exists());
    }
}

#[test]
fn purchases_refuses_a_features_list_and_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = train(
        "kmeans",
        &data("train_slice.csv"),
        &dir.path().join("m"),
        &["--features", "a,b"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--features: not with --format purchases"));
    let out = train(
        "kmeans",
        &dir.path().join("none.csv"),
        &dir.path().join("m"),
        &[],
    );
    assert_eq!(out.status.code(), Some(66), "{}", text(&out.stderr));
}

/// `examples/purchases.toml`, the purchases job's configuration, passes `check-config` with
/// models trained on the slice (the shipped paths point at models/, which the demo fills), and
/// lists its one-partition partials topic as such.
#[test]
fn the_example_purchases_configuration_checks() {
    let dir = tempfile::tempdir().unwrap();
    let (kmeans, bisecting) = (dir.path().join("k.model"), dir.path().join("b.model"));
    for (kind, out) in [("kmeans", &kmeans), ("bisecting_kmeans", &bisecting)] {
        let o = train(
            kind,
            &data("train_slice.csv"),
            out,
            &["--threshold", "top:20"],
        );
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/purchases.toml");
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_anomalyd"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ANOMALYD_")) {
            cmd.env_remove(k);
        }
        cmd.args(["check-config", "--config", s(&config)])
            .args(extra)
            .env("ANOMALYD_DETECTORS__KMEANS__MODEL", &kmeans)
            .env("ANOMALYD_DETECTORS__BISECTING__MODEL", &bisecting)
            .output()
            .unwrap()
    };
    let o = run(&[]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert_eq!(text(&o.stderr), "", "no warning");
    let topics = text(&run(&["--topics"]).stdout);
    let topics: Vec<&str> = topics.lines().collect();
    for t in [
        "purchases",
        "invoices",
        "invalid_invoices",
        "anomalies_kmeans",
        "anomalies_kmeans_bisect",
        "cancellations",
        "cancellations.partials:1",
    ] {
        assert!(topics.contains(&t), "{t} in {topics:?}");
    }
    // An event-time gap that would split invoices straddling a minute is warned about.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anomalyd"));
    let o = cmd
        .args(["check-config", "--config", s(&config)])
        .env("ANOMALYD_DETECTORS__KMEANS__MODEL", &kmeans)
        .env("ANOMALYD_DETECTORS__BISECTING__MODEL", &bisecting)
        .env("ANOMALYD_STAGES__INVOICES__TIME", "event")
        .env("ANOMALYD_STAGES__INVOICES__INACTIVITY_GAP_S", "60")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "a warning, not an error: {}",
        text(&o.stderr)
    );
    assert!(
        text(&o.stderr).contains("stages.invoices.inactivity_gap_s: 60 s in event time splits"),
        "{}",
        text(&o.stderr)
    );
    // Two readers in one consumer group would split the topic: refused, naming the key.
    let o = Command::new(env!("CARGO_BIN_EXE_anomalyd"))
        .args(["check-config", "--config", s(&config)])
        .env(
            "ANOMALYD_STAGES__INVOICES__GROUP_ID",
            "anomalyd-cancellations",
        )
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr)
            .contains("stages.invoices.group_id: the consumer group \"anomalyd-cancellations\""),
        "{}",
        text(&o.stderr)
    );
    // A key of the other kind names itself and exits 78.
    let o = Command::new(env!("CARGO_BIN_EXE_anomalyd"))
        .args(["check-config", "--config", s(&config)])
        .env("ANOMALYD_STAGES__INVOICES__SIZE_S", "60")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("stages.invoices.size_s: is not read by a session_window stage"),
        "{}",
        text(&o.stderr)
    );
}
