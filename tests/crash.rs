//! At-least-once across a crash: the `anomalyd` process is killed (SIGKILL) mid-stream and
//! started again; every anomaly of a clean run must then be in the anomalies topic.
//! Duplicates are allowed (the batches in flight at the kill are scored again) and counted.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const SEED: u64 = 7;
const N: u64 = 20_000;

fn start(config: &Path, log: &Path) -> support::Reaper {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anomalyd"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ANOMALYD_")) {
        cmd.env_remove(k);
    }
    cmd.args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .map(support::Reaper)
        .expect("start anomalyd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_stream_then_restarted_loses_no_anomaly() {
    let dir = tempfile::tempdir().unwrap();
    let model = support::seed_model(dir.path());
    let mut config = support::pipeline_config(dir.path(), &model).await;
    config.log.level = "info,anomalyd=debug".into();
    let path = dir.path().join("anomalyd.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();

    support::produce_generated(&support::det(&config).input_topic, SEED, 0..N).await;
    let expected = support::expected_anomalies(&model, SEED, 0.2, 0..N);

    let mut first = start(&path, &dir.path().join("first.log"));
    let early = support::read_topic(
        &support::det(&config).output_topic,
        Duration::from_secs(120),
        |g| g.len() >= expected.len() / 4,
    )
    .await;
    first.kill().expect("SIGKILL");
    first.wait().unwrap();
    assert!(
        early.len() >= expected.len() / 4,
        "the first process published {} anomalies before the kill; log:\n{}",
        early.len(),
        std::fs::read_to_string(dir.path().join("first.log")).unwrap_or_default()
    );

    let t = std::time::Instant::now();
    let mut second = start(&path, &dir.path().join("second.log"));
    let all = support::read_topic(
        &support::det(&config).output_topic,
        Duration::from_secs(180),
        support::covers(&expected),
    )
    .await;
    println!("crash test: second process caught up in {:?}", t.elapsed());
    // SIGTERM: a graceful stop exits 0.
    let status = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = second.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("second.log")).unwrap_or_default();
    println!("crash test: stopped {:?} after start", t.elapsed());
    for line in log
        .lines()
        .filter(|l| l.contains("partitions") || l.contains("WARN"))
    {
        println!("crash test: {line}");
    }

    let ids = support::ids(&all);
    let got: BTreeSet<u64> = ids.iter().copied().collect();
    let missing: Vec<&u64> = expected.difference(&got).take(10).collect();
    assert!(
        missing.is_empty(),
        "{} missing, e.g. {missing:?}; log:\n{log}",
        expected.len() - got.len().min(expected.len())
    );
    assert!(
        got.is_subset(&expected),
        "only real anomalies are published"
    );
    println!(
        "crash test: {} anomalies expected, {} published, {} duplicates ({} before the kill)",
        expected.len(),
        ids.len(),
        ids.len() - got.len(),
        early.len()
    );
    assert_eq!(exit.code(), Some(0), "graceful stop; log:\n{log}");
}
