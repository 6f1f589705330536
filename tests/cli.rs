//! The `anomalyd` binary's contract with scripts and systemd: `check-config` prints `ok` or
//! every error, and a bad configuration exits with 78 (EX_CONFIG).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn anomalyd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anomalyd"));
    // The tests must not see a developer's own overrides.
    for (k, _) in std::env::vars() {
        if k.starts_with("ANOMALYD_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn repo_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("anomalyd.toml")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn check(config: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = anomalyd();
    cmd.args(["check-config", "--config"]).arg(config);
    cmd.envs(env.iter().copied());
    cmd.output().expect("run anomalyd")
}

#[test]
fn shipped_config_is_valid() {
    let out = check(&repo_config(), &[]);
    assert_eq!(text(&out.stdout), "ok\n", "stderr: {}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn misspelled_key_exits_78_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let shipped = std::fs::read_to_string(repo_config()).unwrap();
    let line = shipped
        .lines()
        .position(|l| l.starts_with("batch_max ="))
        .expect("shipped config has batch_max")
        + 1;
    std::fs::write(&bad, shipped.replace("batch_max =", "batch_mx =")).unwrap();

    let out = check(&bad, &[]);
    assert_eq!(out.status.code(), Some(78));
    assert_eq!(text(&out.stdout), "");
    let stderr = text(&out.stderr);
    let expected = format!(
        "{}:{line}:1: detector.batch_mx: unknown field",
        bad.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn missing_file_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(&dir.path().join("absent.toml"), &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(text(&out.stderr).contains("absent.toml: cannot read"));
}

#[test]
fn env_override_is_validated() {
    let out = check(&repo_config(), &[("ANOMALYD_DETECTOR__BATCH_MAX", "0")]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out.stderr)
            .contains("ANOMALYD_DETECTOR__BATCH_MAX: detector.batch_max: must be >= 1"),
        "{}",
        text(&out.stderr)
    );

    let out = check(&repo_config(), &[("ANOMALYD_KAFKA_BROKERS", "h:1")]);
    assert_eq!(out.status.code(), Some(78), "single underscore is a typo");
}

#[test]
fn config_path_comes_from_environment() {
    let out = anomalyd()
        .arg("check-config")
        .env("ANOMALYD_CONFIG", repo_config())
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "ok\n", "{}", text(&out.stderr));

    let out = anomalyd()
        .arg("check-config")
        .env("ANOMALYD_CONFIG", "/nonexistent/anomalyd.toml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
}

#[test]
fn topics_are_listed_with_overrides_applied() {
    let out = check(&repo_config(), &[]);
    assert_eq!(out.status.code(), Some(0));
    let mut cmd = anomalyd();
    let out = cmd
        .args(["check-config", "--topics", "--config"])
        .arg(repo_config())
        .env("ANOMALYD_DETECTOR__OUTPUT_TOPIC", "flagged")
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout),
        "transactions\nflagged\ntransactions.dead-letter\n",
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn one_value_is_printed_with_overrides_applied() {
    let get = |key: &str| {
        anomalyd()
            .args(["check-config", "--get", key, "--config"])
            .arg(repo_config())
            .env("ANOMALYD_DETECTOR__BATCH_MAX", "64")
            .output()
            .unwrap()
    };
    let out = get("model.path");
    assert_eq!(
        text(&out.stdout),
        "models/seed.iforest\n",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&get("detector.batch_max").stdout), "64\n");
    // A librdkafka property whose name has dots of its own.
    assert_eq!(
        text(&get("kafka.properties.fetch.wait.max.ms").stdout),
        "10\n"
    );
    // Credentials are never printed.
    let out = anomalyd()
        .args(["check-config", "--get", "kafka.properties", "--config"])
        .arg(repo_config())
        .env(
            "ANOMALYD_KAFKA__PROPERTIES__SASL_PASSWORD",
            "hunter2-secret",
        )
        .output()
        .unwrap();
    let printed = text(&out.stdout);
    assert!(
        printed.contains("\"sasl.password\":\"<redacted>\""),
        "{printed}"
    );
    assert!(!printed.contains("hunter2"));
    let out = get("detector.batch_mx");
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("no key detector.batch_mx"));
    assert!(out.stdout.is_empty());
}

#[test]
fn version_is_printed() {
    let out = anomalyd().arg("--version").output().unwrap();
    assert_eq!(
        text(&out.stdout),
        format!("anomalyd {}\n", env!("CARGO_PKG_VERSION"))
    );
}
