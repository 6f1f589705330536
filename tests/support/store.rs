//! Shared by the anomaly store's tests (tests/store.rs on SQLite, tests/store_postgres.rs on
//! PostgreSQL): the daemon and `anomalyd query` as processes, waiting until the store holds
//! exactly the anomalies topic's records, and the throw-away PostgreSQL server.
//!
//! `scripts/test` starts a PostgreSQL cluster (scripts/pg) and exports its URL as
//! `PG_TEST_URL` (a superuser, no password in it) and the password's file as
//! `PG_TEST_PASSWORD_FILE`. Each test makes a database of its own there.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anomalyd::config::Config;
use rdkafka::Message;

/// The generator seed of the store tests' records.
pub const SEED: u64 = 11;

/// Starts `anomalyd run --config config`, its stderr to `log`, with no `ANOMALYD_*` variable
/// of the test's environment and `env` added.
pub fn start(config: &Path, log: &Path, env: &[(&str, &str)]) -> super::Reaper {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anomalyd"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ANOMALYD_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied())
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .map(super::Reaper)
        .expect("start anomalyd")
}

/// Stops a daemon with SIGTERM and waits for it.
pub fn stop(mut daemon: super::Reaper) {
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    daemon.wait().unwrap();
}

/// Waits until the detector has published every anomaly of the first `n` records, then until
/// `stored` (the store's rows of the anomalies topic) holds exactly the topic's records;
/// returns the topic's (topic, partition, offset)s.
pub async fn settle(
    config: &Config,
    mut stored: impl FnMut() -> Vec<(String, i32, i64)>,
    n: u64,
    log: &Path,
    wait: Duration,
) -> BTreeSet<(String, i32, i64)> {
    let model = super::det(config).model.clone().unwrap();
    let expected = super::expected_anomalies(&model, SEED, 0.2, 0..n);
    let topic = super::det(config).output_topic.clone();
    let msgs = super::read_topic(&topic, Duration::from_secs(180), super::covers(&expected)).await;
    assert!(
        super::ids(&msgs)
            .into_iter()
            .collect::<BTreeSet<_>>()
            .is_superset(&expected),
        "the detector did not publish every anomaly; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    // The topic is complete once it stops growing (duplicates after a crash come before).
    let mut on_topic = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let all = super::read_topic(&topic, Duration::from_secs(3), |_| false).await;
        let now: BTreeSet<_> = all
            .iter()
            .map(|m| (m.topic().to_owned(), m.partition(), m.offset()))
            .collect();
        let rows: Vec<_> = stored();
        let set: BTreeSet<_> = rows.iter().cloned().collect();
        if now == on_topic && set == now {
            assert_eq!(rows.len(), set.len(), "a row stored twice");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store holds {} rows, the topic {} records; log:\n{}",
            set.len(),
            now.len(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        on_topic = now;
    }
    on_topic
}

/// `anomalyd query --config config args`: (exit code, stdout, stderr).
pub fn query_output(config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_anomalyd"))
        .args(["query", "--config"])
        .arg(config)
        .args(args)
        .output()
        .expect("run anomalyd query");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `anomalyd query`'s output, asserting it succeeded.
pub fn query(config: &Path, args: &[&str]) -> String {
    let (code, out, err) = query_output(config, args);
    assert_eq!(code, Some(0), "query {args:?}: {err}");
    out
}

/// The daemon's `/status` (`anomalyd ctl status`).
pub fn status(config: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_anomalyd"))
        .args(["ctl", "status", "--config"])
        .arg(config)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ctl status: {e}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// `anomalyd health`: (exit code, its line).
pub fn health(config: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_anomalyd"))
        .args(["health", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The test PostgreSQL server's URL (a superuser). Panics with instructions when it is not
/// set, so a PostgreSQL test can never pass by being skipped.
pub fn pg_url() -> String {
    std::env::var("PG_TEST_URL").unwrap_or_else(|_| {
        panic!(
            "PG_TEST_URL is not set: run the tests with scripts/test, which starts a throw-away \
             PostgreSQL cluster (scripts/pg; Debian's postgresql package) and sets it and \
             PG_TEST_PASSWORD_FILE"
        )
    })
}

/// The file holding the test server's password.
pub fn pg_password_file() -> PathBuf {
    std::env::var_os("PG_TEST_PASSWORD_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "PG_TEST_PASSWORD_FILE is not set: run the tests with scripts/test (see \
                 PG_TEST_URL)"
            )
        })
}

/// Runs `f` on a thread of its own: the blocking PostgreSQL client panics on a thread that
/// runs async tasks.
pub fn on_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().expect("the thread panicked"))
}

/// `url` with its database replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{db}")
}

/// A new, empty database on the server of `url` (a superuser's), logging in with the password
/// in `password_file`; returns its URL.
pub fn pg_database_on(url: &str, password_file: &Path, prefix: &str) -> String {
    let name = super::unique(prefix).replace('-', "_");
    let password = std::fs::read_to_string(password_file).expect("the password file");
    let (url_owned, name_owned) = (url.to_owned(), name.clone());
    on_thread(move || {
        let mut config: postgres::Config = url_owned.parse().expect("PG_TEST_URL");
        config.password(password.trim_end());
        let mut client = config
            .connect(postgres::NoTls)
            .expect("connect to the test PostgreSQL server");
        client
            .batch_execute(&format!("CREATE DATABASE \"{name_owned}\""))
            .expect("create a database");
    });
    with_database(url, &name)
}

/// [`pg_database_on`] the test server.
pub fn pg_database(prefix: &str) -> String {
    pg_database_on(&pg_url(), &pg_password_file(), prefix)
}
