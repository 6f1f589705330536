//! The anomaly store against the real broker: a daemon with a detector and `[store]` stores
//! every anomaly of a run exactly once (the rows are the anomalies topic's records, one for
//! one), also across a kill -9 of the binary during ingest; and `anomalyd query` reads them.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anomalyd::config::Config;
use anomalyd::sinks::store::sqlite::SqliteStore;
use anomalyd::sinks::store::{Filter, Store, StoreConfig};

use support::store::{SEED, query, settle, start, status, stop};

/// Every row's (topic, partition, offset), or empty while the file does not exist yet.
fn stored(db: &Path) -> Vec<(String, i32, i64)> {
    let Ok(store) = SqliteStore::open_read_only(db) else {
        return Vec::new();
    };
    let all = Filter {
        limit: usize::MAX >> 1,
        ..Filter::default()
    };
    store
        .select(&all)
        .map(|rows| {
            rows.into_iter()
                .map(|r| (r.topic, r.partition, r.offset))
                .collect()
        })
        .unwrap_or_default()
}

async fn setup(dir: &Path, batch_max: usize) -> (Config, std::path::PathBuf) {
    let model = support::seed_model(dir);
    let mut config = support::pipeline_config(dir, &model).await;
    let db = dir.join("state/anomalies.db");
    config.store = Some(StoreConfig {
        path: Some(db.clone()),
        batch_max,
        ..StoreConfig::default()
    });
    (config, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_run_stores_every_anomaly_once_and_query_reads_them() {
    const N: u64 = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let (config, db) = setup(dir.path(), 500).await;
    let path = dir.path().join("anomalyd.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    support::produce_generated(&support::det(&config).input_topic, SEED, 0..N).await;

    let log = dir.path().join("run.log");
    let daemon = start(&path, &log, &[]);
    let on_topic = settle(&config, || stored(&db), N, &log, Duration::from_secs(120)).await;
    let rows = stored(&db);
    assert_eq!(
        rows.len(),
        on_topic.len(),
        "one row per anomaly, none twice"
    );
    let store = SqliteStore::open_read_only(&db).unwrap();
    assert_eq!(
        store.counts_by_detector().unwrap(),
        [(support::DETECTOR.to_owned(), on_topic.len() as u64)]
    );

    // `anomalyd query` on the same config: JSON lines, a table, counts.
    let lines = query(&path, &["--json", "--limit", "7", "--anomalies-only"]);
    assert_eq!(lines.lines().count(), 7, "{lines}");
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["detector"], support::DETECTOR);
        assert!(v["decision"].as_f64().unwrap() < 0.0);
        assert_eq!(v["record"]["anomalyd"]["detector"], support::DETECTOR);
    }
    let one: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    let id = one["record"]["id"].to_string();
    let by_id = query(&path, &["--json", "--where", &format!("id={id}")]);
    assert!(by_id.lines().count() >= 1, "{by_id}");
    let table = query(
        &path,
        &[
            "--detector",
            support::DETECTOR,
            "--since",
            "1h",
            "--limit",
            "3",
        ],
    );
    assert_eq!(table.lines().count(), 4, "a header and 3 rows:\n{table}");
    let counts = query(&path, &["--count", "--by", "1d"]);
    let total: u64 = counts
        .lines()
        .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, on_topic.len() as u64, "{counts}");
    assert_eq!(query(&path, &["--detector", "nobody"]).lines().count(), 1);

    // /status shows the store and its counters.
    let status = status(&path);
    let store = &status["store"];
    assert_eq!(store["backend"], "sqlite");
    assert_eq!(store["path"], db.display().to_string());
    assert_eq!(
        store["counters"]["rows_stored"],
        on_topic.len() as u64,
        "{store}"
    );
    assert_eq!(store["counters"]["failing"], false);
    stop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_ingest_then_restarted_no_row_is_missing_or_twice() {
    const N: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    // Small batches, so that the kill lands between transactions with rows still to come.
    let (config, db) = setup(dir.path(), 50).await;
    let path = dir.path().join("anomalyd.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    support::produce_generated(&support::det(&config).input_topic, SEED, 0..N).await;

    let first_log = dir.path().join("first.log");
    let mut first = start(&path, &first_log, &[]);
    let some = support::wait_until(Duration::from_secs(120), || stored(&db).len() >= 200).await;
    first.kill().expect("SIGKILL");
    first.wait().unwrap();
    let before = stored(&db).len();
    assert!(
        some,
        "nothing stored before the kill; log:\n{}",
        std::fs::read_to_string(&first_log).unwrap_or_default()
    );

    let second_log = dir.path().join("second.log");
    let second = start(&path, &second_log, &[]);
    let on_topic = settle(
        &config,
        || stored(&db),
        N,
        &second_log,
        Duration::from_secs(120),
    )
    .await;
    let rows = stored(&db);
    println!(
        "store crash test: {before} rows before the kill, {} after the restart, {} records on the topic",
        rows.len(),
        on_topic.len()
    );
    assert!(before < rows.len(), "the kill landed during ingest");
    assert_eq!(rows.len(), on_topic.len());
    assert_eq!(rows.into_iter().collect::<BTreeSet<_>>(), on_topic);

    stop(second);
}

/// A store that cannot be written (its folder is a file) makes health WARNING and /status say
/// the store fails, while detection goes on: the anomalies still reach their topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_fails_makes_health_warn_and_detection_goes_on() {
    const N: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let (mut config, _) = setup(dir.path(), 500).await;
    // Not a folder: no user, root included, can make the database under it.
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, "x").unwrap();
    config.store.as_mut().unwrap().path = Some(file.join("anomalies.db"));
    let path = dir.path().join("anomalyd.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    support::produce_generated(&support::det(&config).input_topic, SEED, 0..N).await;

    let log = dir.path().join("run.log");
    let daemon = start(&path, &log, &[]);
    let model = support::det(&config).model.clone().unwrap();
    let expected = support::expected_anomalies(&model, SEED, 0.2, 0..N);
    let msgs = support::read_topic(
        &support::det(&config).output_topic,
        Duration::from_secs(180),
        support::covers(&expected),
    )
    .await;
    assert!(
        support::ids(&msgs)
            .into_iter()
            .collect::<BTreeSet<_>>()
            .is_superset(&expected),
        "detection stopped with the store; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let mut last = (None, String::new());
    let warned = support::wait_until(Duration::from_secs(60), || {
        last = support::store::health(&path);
        last.0 == Some(1)
    })
    .await;
    assert!(warned, "health: {last:?}");
    assert!(last.1.starts_with("WARNING"), "{last:?}");
    assert!(last.1.contains("store"), "{last:?}");
    let store = &status(&path)["store"];
    assert_eq!(store["counters"]["failing"], true, "{store}");
    assert!(
        store["counters"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not-a-folder")),
        "{store}"
    );
    stop(daemon);
}

/// `query`'s refusals, with their exit codes; no broker needed.
#[test]
fn query_without_a_store_or_with_bad_flags_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.detectors.insert(
        "tx".into(),
        anomalyd::config::DetectorConfig {
            input_topic: "in".into(),
            output_topic: "out".into(),
            dead_letter_topic: "dlq".into(),
            model: Some(dir.path().join("m.model")),
            ..Default::default()
        },
    );
    let path = dir.path().join("anomalyd.toml");
    let run = |config: &Config, args: &[&str]| {
        std::fs::write(&path, toml::to_string(config).unwrap()).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_anomalyd"))
            .args(["query", "--config"])
            .arg(&path)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&config, &[]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("no [store] section"), "{err}");

    let db = dir.path().join("none/anomalies.db");
    config.store = Some(StoreConfig {
        path: Some(db.clone()),
        ..StoreConfig::default()
    });
    let (code, err) = run(&config, &[]);
    assert_eq!(code, Some(66), "{err}");
    assert!(err.contains("no anomaly store at"), "{err}");

    SqliteStore::open(&db).unwrap();
    assert_eq!(run(&config, &[]).0, Some(0));
    for bad in [
        &["--since", "yesterday"][..],
        &["--where", "novalue"],
        &["--count", "--by", "soon"],
    ] {
        let (code, err) = run(&config, bad);
        assert_eq!(code, Some(64), "{bad:?}: {err}");
    }
    // clap: --count needs --by.
    assert_eq!(run(&config, &["--count"]).0, Some(2));
}
