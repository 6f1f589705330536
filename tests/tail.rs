//! `anomalyd tail` against the real broker, as a user runs it: the last N records like Unix
//! `tail`, `-f` to follow, a missing topic named with exit 66, an empty topic printing nothing
//! with exit 0, `--brokers` without any configuration file, and brokers that do not answer
//! named with exit 69 rather than a silent hang.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const SEED: u64 = 5;

/// The binary, run in `cwd` (a directory without anomalyd.toml unless the test writes one),
/// without the developer's ANOMALYD_* variables.
fn anomalyd(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anomalyd"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ANOMALYD_")) {
        cmd.env_remove(k);
    }
    cmd.current_dir(cwd);
    cmd
}

fn tail(cwd: &Path, topic: &str, args: &[&str]) -> Output {
    anomalyd(cwd)
        .args(["tail", topic, "--brokers", &support::brokers()])
        .args(args)
        .output()
        .expect("run anomalyd tail")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `id` of each printed JSON line.
fn ids(out: &Output) -> Vec<u64> {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout).lines().map(id).collect()
}

fn id(line: &str) -> u64 {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    v["id"].as_u64().expect("id")
}

/// Records `ids`, one at a time a few milliseconds apart, so that their timestamps order them
/// across partitions.
async fn produce_spaced(topic: &str, ids: std::ops::Range<u64>) {
    for i in ids {
        support::produce_generated(topic, SEED, i..i + 1).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_n_records_of_one_and_of_several_partitions() {
    let cwd = tempfile::tempdir().unwrap();
    let one = support::unique("tail-one");
    support::create_topic(&one, 1).await;
    support::produce_generated(&one, SEED, 0..10).await;
    assert_eq!(ids(&tail(cwd.path(), &one, &["-n", "3"])), [7, 8, 9]);
    assert_eq!(
        ids(&tail(cwd.path(), &one, &["-n", "30"])),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(ids(&tail(cwd.path(), &one, &["-n", "0"])), [] as [u64; 0]);

    let three = support::unique("tail-three");
    support::create_topic(&three, 3).await;
    produce_spaced(&three, 0..10).await;
    assert_eq!(ids(&tail(cwd.path(), &three, &["-n", "4"])), [6, 7, 8, 9]);
    // Without -n: the last 10, as Unix tail.
    assert_eq!(
        ids(&tail(cwd.path(), &three, &[])),
        (0..10).collect::<Vec<_>>()
    );
    let mut all = ids(&tail(cwd.path(), &three, &["--from-beginning"]));
    all.sort_unstable();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topic_exits_66_and_empty_topic_prints_nothing() {
    let cwd = tempfile::tempdir().unwrap();
    let missing = support::unique("tail-missing");
    let out = tail(cwd.path(), &missing, &["-n", "3"]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("no topic \"{missing}\" on {}", support::brokers()))
            && stderr.contains("brokers from --brokers"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    let empty = support::unique("tail-empty");
    support::create_topic(&empty, 2).await;
    for args in [&[][..], &["-n", "5"], &["--from-beginning"]] {
        let out = tail(cwd.path(), &empty, args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_prints_the_last_n_then_new_records() {
    let cwd = tempfile::tempdir().unwrap();
    let topic = support::unique("tail-follow");
    support::create_topic(&topic, 2).await;
    produce_spaced(&topic, 0..5).await;

    let mut child = support::Reaper(
        anomalyd(cwd.path())
            .args([
                "tail",
                &topic,
                "--brokers",
                &support::brokers(),
                "-n",
                "2",
                "-f",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || {
        lines
            .recv_timeout(Duration::from_secs(30))
            .map(|l| id(&l))
            .expect("a line within 30 s")
    };
    assert_eq!([next(), next()], [3, 4]);
    produce_spaced(&topic, 5..8).await;
    let mut new = [next(), next(), next()];
    new.sort_unstable();
    assert_eq!(new, [5, 6, 7]);
    assert!(
        child.try_wait().unwrap().is_none(),
        "-f keeps following after the records"
    );
    // Ctrl-C ends it cleanly.
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// The search order serves tail too: a file in the working directory gives the brokers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_come_from_the_working_directory_file() {
    let cwd = tempfile::tempdir().unwrap();
    let topic = support::unique("tail-config");
    support::create_topic(&topic, 1).await;
    support::produce_generated(&topic, SEED, 0..3).await;
    std::fs::write(
        cwd.path().join("anomalyd.toml"),
        format!(
            "[kafka]\nbrokers = \"{}\"\n[kafka.properties]\n\"fetch.wait.max.ms\" = 10\n",
            support::brokers()
        ),
    )
    .unwrap();
    let out = anomalyd(cwd.path())
        .args(["tail", &topic, "-n", "1"])
        .output()
        .unwrap();
    assert_eq!(ids(&out), [2]);
}

#[test]
fn brokers_that_do_not_answer_exit_69_naming_them() {
    let cwd = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = anomalyd(cwd.path())
        .args(["tail", "anything", "--brokers", "127.0.0.1:1", "-n", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no answer from the brokers 127.0.0.1:1 about topic \"anything\""),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}
