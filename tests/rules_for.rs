//! Rules with `for` against the real broker: a rule with `for = 3` does not fire on the first
//! two matching readings of a key, and its count survives a kill -9 of the daemon between the
//! 2nd and the 3rd reading, because the worker commits no further than the first reading of
//! the open streak (the safe offset) and the restarted daemon re-reads from there.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anomalyd::config::{Config, DetectorConfig, RuleSpec};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

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

/// Produces `(key, temperature)` readings to `topic`, in order, each `{"sensor_id", "seq",
/// "temperature"}`; `seq` numbers them from `first`.
async fn produce(topic: &str, first: u64, readings: &[(&str, f64)]) {
    let producer: FutureProducer = anomalyd::kafka::producer_config(&support::kafka_config())
        .create()
        .expect("producer");
    for (i, (key, temperature)) in readings.iter().enumerate() {
        let payload = serde_json::json!({
            "sensor_id": key, "seq": first + i as u64, "temperature": temperature,
        })
        .to_string();
        producer
            .send(
                FutureRecord::to(topic).key(*key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
}

/// `(seq, explanation)` of each anomaly.
fn anomalies(msgs: &[OwnedMessage]) -> Vec<(u64, serde_json::Value)> {
    let mut out: Vec<_> = msgs
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            (
                v["seq"].as_u64().unwrap(),
                v["anomalyd"]["explanation"].clone(),
            )
        })
        .collect();
    out.sort_by_key(|(seq, _)| *seq);
    out.dedup_by_key(|(seq, _)| *seq);
    out
}

fn seen(seq: u64) -> impl FnMut(&[OwnedMessage]) -> bool {
    move |got| anomalies(got).iter().any(|(s, _)| *s == seq)
}

/// The group's committed offset of partition 0 of `topic`, if any.
fn committed(group: &str, topic: &str) -> Option<i64> {
    let consumer: BaseConsumer = anomalyd::kafka::consumer_config(&support::kafka_config(), group)
        .create()
        .expect("offsets client");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .ok()?;
    match got.find_partition(topic, 0)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streak_survives_a_kill_between_its_readings() {
    let dir = tempfile::tempdir().unwrap();
    let input = support::unique("sensor-data");
    support::create_topic(&input, 1).await;
    let output = support::unique("sensor-anomalies");
    support::create_topic(&output, 1).await;
    let dead = support::unique("sensor-dead-letters");
    support::create_topic(&dead, 1).await;
    let group = support::unique("rules-for");
    let mut config = Config {
        kafka: support::kafka_config(),
        ..Config::default()
    };
    config.kafka.group_id = support::unique("detector");
    config.control.socket = dir.path().join("anomalyd.sock");
    config.log.level = "info,anomalyd=debug".into();
    let rules = [
        (
            "hot".to_owned(),
            RuleSpec {
                expr: "temperature > 40.0".into(),
                for_readings: 3,
            },
        ),
        // Fires on one reading: a marker that the daemon has scored everything before it.
        ("probe".to_owned(), RuleSpec::from("temperature < -100.0")),
    ];
    config.detectors.insert(
        "sensors".into(),
        DetectorConfig {
            input_topic: input.clone(),
            output_topic: output.clone(),
            dead_letter_topic: dead,
            rules: Some(rules.into_iter().collect()),
            group_id: Some(group.clone()),
            ..DetectorConfig::default()
        },
    );
    let path = dir.path().join("anomalyd.toml");
    let text = toml::to_string(&config).unwrap();
    assert!(
        text.contains("for = 3"),
        "the inline-table form is written: {text}"
    );
    std::fs::write(&path, text).unwrap();

    // Offsets 0-4: normal readings; then s1's first two hot readings (5, 7); s2 hot, normal
    // (its streak reset), hot again (6, 8, 9); a probe last (10).
    let before = [
        ("p", 20.0),
        ("p", 21.0),
        ("p", 20.5),
        ("p", 19.0),
        ("p", 22.0),
        ("s1", 41.0),
        ("s2", 45.0),
        ("s1", 42.0),
        ("s2", 39.0),
        ("s2", 44.0),
        ("p", -200.0),
    ];
    produce(&input, 0, &before).await;
    let mut first = start(&path, &dir.path().join("first.log"));
    let got = support::read_topic(&output, Duration::from_secs(90), seen(10)).await;
    let log = || std::fs::read_to_string(dir.path().join("first.log")).unwrap_or_default();
    assert_eq!(
        anomalies(&got),
        [(10, serde_json::json!([{"rule": "probe"}]))],
        "two hot readings of a key do not fire `for = 3`; log:\n{}",
        log()
    );
    // The probe's batch is settled: its offset would be 11 without the streaks. The safe
    // offset stops at s1's first hot reading.
    let stopped = support::wait_until(Duration::from_secs(20), || {
        committed(&group, &input) == Some(5)
    })
    .await;
    assert!(
        stopped,
        "committed {:?}, not 5; log:\n{}",
        committed(&group, &input),
        log()
    );
    first.kill().expect("SIGKILL");
    first.wait().unwrap();

    let mut second = start(&path, &dir.path().join("second.log"));
    // s1's third hot reading fires; s2's second does not (its streak was reset); s3's first
    // never.
    produce(
        &input,
        11,
        &[("s1", 43.0), ("s2", 46.0), ("s3", 50.0), ("p", -300.0)],
    )
    .await;
    let got = support::read_topic(&output, Duration::from_secs(90), seen(14)).await;
    let log = std::fs::read_to_string(dir.path().join("second.log")).unwrap_or_default();
    assert_eq!(
        anomalies(&got),
        [
            (10, serde_json::json!([{"rule": "probe"}])),
            (
                11,
                serde_json::json!([{"rule": "hot", "for": 3, "count": 3}])
            ),
            (14, serde_json::json!([{"rule": "probe"}])),
        ],
        "the restarted daemon rebuilt s1's count; log:\n{log}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(second.wait().unwrap().code(), Some(0), "log:\n{log}");
}
