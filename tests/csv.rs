//! The CSV record format against the real broker (issue 12): two detectors read one topic of
//! CSV lines like those of the UCI Online Retail data set, one scoring with a rule on a column
//! and one with an Isolation Forest trained on two numeric columns. Anomalies keep the exact
//! line and its cells by column; bad lines go to the dead letters with their reasons; nothing
//! is lost.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anomalyd::config::{Config, DetectorConfig, FeatureSpec, RecordFormat};
use anomalyd::daemon::Daemon;
use anomalyd::detect::model::Model;
use anomalyd::offline::train::{TrainInput, TrainOptions, train};
use anomalyd::sinks::dead_letter;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

const COLUMNS: [&str; 8] = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
];

/// How many ordinary lines are sent (and the forest is trained on).
const NORMAL: usize = 200;

/// Quantity and unit price of ordinary line `i`.
fn normal_values(i: usize) -> (u32, f64) {
    (1 + (i * 7 % 20) as u32, 0.5 + (i * 13 % 40) as f64 / 10.0)
}

/// Ordinary line `i`: small quantities, prices of a few pounds, a quoted description with a
/// comma in it.
fn normal_line(i: usize) -> String {
    let (q, p) = normal_values(i);
    format!(
        "{},8512{}A,\"WHITE HANGING HEART T-LIGHT HOLDER, SIZE {}\",{q},12/1/2010 8:26,{p},17850,United Kingdom",
        536_000 + i,
        i % 7,
        i % 3
    )
}

/// Lines that both detectors flag: two huge quantities (one with doubled quotes and a CRLF
/// ending a producer reading a file may leave).
const BIG: [&str; 2] = [
    "581483,23843,\"PAPER CRAFT , LITTLE BIRDIE\",80995,12/9/2011 9:15,2.08,16446,United Kingdom",
    "540000,22000,\"12\"\" RULER, \"\"WOODEN\"\"\",5000,1/4/2011 10:00,0.42,12346,France\r\n",
];

/// Bad lines, each with the reason the forest detector (which reads Quantity and UnitPrice)
/// and the rules detector (which reads Quantity through its rule) give it.
const BAD: [(&[u8], &str, &str); 5] = [
    (
        b"536366,22633,HAND WARMER, UNION JACK,6,12/1/2010 8:28,1.85,17850,United Kingdom",
        "wrong_field_count",
        "wrong_field_count",
    ),
    (
        b"536367,84879,BIRD ORNAMENT,six,12/1/2010 8:34,1.69,13047,United Kingdom",
        "not_a_number",
        "rule_error",
    ),
    (
        b"536368,22960,JAM MAKING SET,6,12/1/2010 8:34,,13047,United Kingdom",
        "missing_feature",
        "",
    ),
    (
        b"536369,21756,BATH \xff BUILDING BLOCK WORD,3,12/1/2010 8:35,5.95,13047,United Kingdom",
        "not_utf8",
        "not_utf8",
    ),
    (
        b"536370,22728,ALARM CLOCK,24,12/1/2010 8:45,3.75,12583,France\n536371,22727,ALARM CLOCK,24,12/1/2010 8:45,3.75,12583,France",
        "not_csv",
        "not_csv",
    ),
];

/// A forest trained on the ordinary lines' Quantity and UnitPrice (a CSV with those headers,
/// so the model's feature names are the columns').
fn train_forest(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("retail.csv");
    let mut text = String::from("Quantity,UnitPrice\n");
    for i in 0..NORMAL {
        let (q, p) = normal_values(i);
        text.push_str(&format!("{q},{p}\n"));
    }
    std::fs::write(&data, text).unwrap();
    let out = dir.join("retail.iforest");
    train(&TrainOptions {
        input: TrainInput::Csv {
            path: data,
            features: None,
            label: "label".into(),
        },
        trees: Some(50),
        seed: Some(7),
        ..TrainOptions::synthetic(0, out.clone())
    })
    .expect("train on the retail columns");
    out
}

fn csv_detector(input: &str, d: DetectorConfig) -> DetectorConfig {
    DetectorConfig {
        input_topic: input.to_owned(),
        format: RecordFormat::Csv,
        columns: Some(COLUMNS.map(String::from).to_vec()),
        ..d
    }
}

async fn produce(topic: &str, values: &[Vec<u8>]) {
    let producer: FutureProducer = anomalyd::kafka::producer_config(&support::kafka_config())
        .create()
        .expect("producer");
    for (i, v) in values.iter().enumerate() {
        let key = i.to_string();
        producer
            .send_result(FutureRecord::to(topic).key(&key).payload(v))
            .map_err(|(e, _)| e)
            .expect("enqueue")
            .await
            .expect("delivery")
            .expect("delivered");
    }
}

fn header(m: &OwnedMessage, name: &str) -> String {
    m.headers()
        .and_then(|h| h.iter().find(|h| h.key == name))
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn csv_lines_are_scored_by_rules_and_a_forest_and_bad_lines_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let model_path = train_forest(dir.path());
    let mut config = Config {
        kafka: support::kafka_config(),
        ..Config::default()
    };
    config.kafka.group_id = support::unique("csv");
    config.control.socket = dir.path().join("anomalyd.sock");
    let input = support::unique("retail");
    support::create_topic(&input, 3).await;
    let forest = csv_detector(
        &input,
        DetectorConfig {
            features: FeatureSpec::Pointers(vec!["Quantity".into(), "UnitPrice".into()]),
            ..support::fresh_detector(&input, &model_path).await
        },
    );
    let rules = csv_detector(
        &input,
        DetectorConfig {
            model: None,
            rules: Some(BTreeMap::from([(
                "big".to_owned(),
                "Quantity > 1000.0".into(),
            )])),
            ..support::fresh_detector(&input, &model_path).await
        },
    );
    config.detectors.insert("retail_forest".into(), forest);
    config.detectors.insert("retail_rules".into(), rules);
    assert_eq!(config.validate(), vec![]);

    // What the forest flags among the good lines, offline.
    let model = Model::load(&model_path).expect("model");
    assert_eq!(model.feature_names(), ["Quantity", "UnitPrice"]);
    let mut values: Vec<Vec<u8>> = Vec::new();
    let mut forest_expected = Vec::new();
    for i in 0..NORMAL {
        let (q, p) = normal_values(i);
        let line = normal_line(i);
        if model.decision(model.score(&[f64::from(q), p])) < 0.0 {
            forest_expected.push(line.clone());
        }
        values.push(line.into_bytes());
    }
    for (line, x) in BIG.iter().zip([[80995.0, 2.08], [5000.0, 0.42]]) {
        assert!(
            model.decision(model.score(&x)) < 0.0,
            "the forest flags {line}"
        );
        forest_expected.push(line.trim_end().to_owned());
        values.push(line.as_bytes().to_vec());
    }
    for (bad, _, _) in BAD {
        values.push(bad.to_vec());
    }
    let n = values.len() as u64;
    produce(&input, &values).await;

    let daemon = Daemon::start(config.clone()).await.expect("daemon starts");
    let mf = daemon.detector("retail_forest").unwrap().metrics().clone();
    let mr = daemon.detector("retail_rules").unwrap().metrics().clone();
    let both = support::wait_until(Duration::from_secs(120), || {
        mf.records_in.load(Relaxed) >= n && mr.records_in.load(Relaxed) >= n
    })
    .await;
    assert!(
        both,
        "scored: forest {} rules {} of {n}",
        mf.records_in.load(Relaxed),
        mr.records_in.load(Relaxed)
    );

    // The rules detector: the two big lines, each kept as received and by column.
    let d = &config.detectors["retail_rules"];
    let got = support::read_topic(&d.output_topic, Duration::from_secs(30), |g| g.len() >= 2).await;
    let mut by_invoice = BTreeMap::new();
    for m in &got {
        let v: Value = serde_json::from_slice(m.payload().unwrap()).expect("an anomaly is JSON");
        by_invoice.insert(v["record"]["InvoiceNo"].as_str().unwrap().to_owned(), v);
    }
    assert_eq!(by_invoice.len(), 2, "{by_invoice:?}");
    let birdie = &by_invoice["581483"];
    assert_eq!(birdie["line"], BIG[0]);
    assert_eq!(
        birdie["record"]["Description"],
        "PAPER CRAFT , LITTLE BIRDIE"
    );
    assert_eq!(birdie["record"]["Quantity"], "80995");
    assert_eq!(birdie["record"]["Country"], "United Kingdom");
    assert_eq!(birdie["anomalyd"]["detector"], "retail_rules");
    assert_eq!(birdie["anomalyd"]["layout"], "csv");
    assert_eq!(birdie["anomalyd"]["model"]["kind"], "rules");
    assert_eq!(birdie["anomalyd"]["decision"], -1.0);
    assert_eq!(
        birdie["anomalyd"]["explanation"],
        serde_json::json!([{"rule": "big"}])
    );
    let ruler = &by_invoice["540000"];
    assert_eq!(ruler["line"], BIG[1].trim_end());
    assert_eq!(ruler["record"]["Description"], "12\" RULER, \"WOODEN\"");
    assert_eq!(ruler["record"].as_object().unwrap().len(), COLUMNS.len());

    // The forest detector: exactly the lines flagged offline.
    let d = &config.detectors["retail_forest"];
    let got = support::read_topic(&d.output_topic, Duration::from_secs(30), |g| {
        g.len() >= forest_expected.len()
    })
    .await;
    let mut lines: Vec<String> = got
        .iter()
        .map(|m| {
            let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            assert_eq!(v["anomalyd"]["detector"], "retail_forest");
            assert_eq!(v["anomalyd"]["layout"], "csv");
            assert_eq!(v["anomalyd"]["model"]["id"], model.id());
            assert!(v["anomalyd"]["decision"].as_f64().unwrap() < 0.0);
            v["line"].as_str().unwrap().to_owned()
        })
        .collect();
    lines.sort();
    forest_expected.sort();
    assert_eq!(lines, forest_expected);

    // The dead letters: every bad line, unchanged, with its reason.
    for (name, pick) in [("retail_forest", 1usize), ("retail_rules", 2usize)] {
        let expected: Vec<(Vec<u8>, &str)> = BAD
            .iter()
            .map(|b| (b.0.to_vec(), if pick == 1 { b.1 } else { b.2 }))
            .filter(|(_, reason)| !reason.is_empty())
            .collect();
        let d = &config.detectors[name];
        let got = support::read_topic(&d.dead_letter_topic, Duration::from_secs(30), |g| {
            g.len() >= expected.len()
        })
        .await;
        let mut letters: Vec<(Vec<u8>, String)> = got
            .iter()
            .map(|m| {
                let error = header(m, dead_letter::ERROR);
                assert!(!error.is_empty(), "{name}: a dead letter says why");
                (
                    m.payload().unwrap().to_vec(),
                    header(m, dead_letter::REASON),
                )
            })
            .collect();
        letters.sort();
        let mut expected: Vec<(Vec<u8>, String)> = expected
            .into_iter()
            .map(|(v, r)| (v, r.to_owned()))
            .collect();
        expected.sort();
        assert_eq!(letters, expected, "{name}");
        if name == "retail_forest" {
            let errors: Vec<String> = got.iter().map(|m| header(m, dead_letter::ERROR)).collect();
            assert!(
                errors.iter().any(|e| e == "expected 8 fields, found 9"),
                "{errors:?}"
            );
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains("column Quantity (\"six\") is not a number")),
                "{errors:?}"
            );
        }
    }

    // Nothing lost: every line scored exactly once by each detector.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mf.records_in.load(Relaxed), n);
    assert_eq!(mr.records_in.load(Relaxed), n);
    daemon
        .stop(Duration::from_secs(30))
        .await
        .expect("clean stop");
}

/// `anomalyd check-config` on `toml` (written into `dir`): its exit code and stderr.
fn check_config(dir: &Path, toml: &str) -> (Option<i32>, String) {
    let path = dir.join("anomalyd.toml");
    std::fs::write(&path, toml).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_anomalyd"));
    for (k, _) in std::env::vars() {
        if k.starts_with("ANOMALYD_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run anomalyd");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A CSV detector's config: `body` holds its format, columns, features and scorer.
fn csv_toml(body: &str) -> String {
    format!(
        "[detectors.retail]\ninput_topic = \"retail\"\noutput_topic = \"retail-anomalies\"\n\
         dead_letter_topic = \"retail-dead-letters\"\nformat = \"csv\"\n{body}"
    )
}

#[test]
fn csv_config_errors_exit_78_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let model = train_forest(dir.path());
    let model = model.to_str().unwrap();
    let columns = "columns = [\"InvoiceNo\", \"Quantity\", \"UnitPrice\"]\n";
    let rules = "[detectors.retail.rules]\nbig = \"Quantity > 1000.0\"\n";
    // Valid: rules over columns; a model whose features are columns, matched by name.
    for body in [
        format!("{columns}{rules}"),
        format!("{columns}features = [\"Quantity\", \"UnitPrice\"]\nmodel = {model:?}\n"),
    ] {
        let (code, stderr) = check_config(dir.path(), &csv_toml(&body));
        assert_eq!(code, Some(0), "{body}\n{stderr}");
    }
    for (body, expected) in [
        (
            rules.to_owned(),
            // A key left out has no line of its own: the file and the key.
            "anomalyd.toml: detectors.retail.columns: must be set with format = \"csv\"".to_owned(),
        ),
        (
            format!("columns = [\"a\", \"b\", \"a\"]\n{rules}"),
            ":6:11: detectors.retail.columns: column \"a\" is named twice".to_owned(),
        ),
        (
            format!("{columns}features = [\"Quantity\", \"Price\"]\nmodel = {model:?}\n"),
            ":7:12: detectors.retail.features: \"Price\" is not one of the columns".to_owned(),
        ),
        // Columns in another order than the model's features: refused by name, with the fix.
        (
            format!("{columns}features = [\"UnitPrice\", \"Quantity\"]\nmodel = {model:?}\n"),
            "detectors.retail.features: 2 CSV columns (UnitPrice, Quantity) but the model"
                .to_owned(),
        ),
        (
            format!("{columns}features = [\"UnitPrice\", \"Quantity\"]\nmodel = {model:?}\n"),
            "column 1 (UnitPrice) reads `UnitPrice` where the model expects `Quantity`; column 2 \
             (Quantity) reads `Quantity` where the model expects `UnitPrice`; the same names in \
             the model's order: features = [\"Quantity\", \"UnitPrice\"]"
                .to_owned(),
        ),
    ] {
        let (code, stderr) = check_config(dir.path(), &csv_toml(&body));
        assert_eq!(code, Some(78), "{body}\n{stderr}");
        assert!(stderr.contains(&expected), "{expected} not in:\n{stderr}");
    }
}
