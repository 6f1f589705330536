//! Shared test harness: the real broker that `scripts/test` starts, and fresh topics on it.
//!
//! Tests never mock Kafka. `scripts/test` starts a throw-away tansu broker and exports its
//! address as `KAFKA_TEST_BROKERS` (not `ANOMALYD_*`, which the config loader would read).

#![allow(dead_code)] // each test binary uses its own part of the harness

pub mod store;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anomalyd::config::KafkaConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The test broker's bootstrap address. Panics with instructions when it is not set, so a
/// broker test can never pass by being skipped.
pub fn brokers() -> String {
    std::env::var("KAFKA_TEST_BROKERS").unwrap_or_else(|_| {
        panic!(
            "KAFKA_TEST_BROKERS is not set: run the tests with scripts/test, which starts a \
             throw-away tansu broker and sets it"
        )
    })
}

/// `[kafka]` settings for the test broker, tuned for tansu 0.6.0: it holds every fetch for the
/// full `fetch.wait.max.ms`, and it never delivers a record larger than `fetch.max.bytes`
/// (Kafka delivers one whatever the limit; docs/operations.md, "Memory"), so the tests' records
/// of up to 1.2 MB need more than anomalyd's 384 KiB.
pub fn kafka_config() -> KafkaConfig {
    let mut kafka = KafkaConfig {
        brokers: brokers(),
        ..KafkaConfig::default()
    };
    kafka.properties.insert(
        "fetch.wait.max.ms".into(),
        anomalyd::config::PropertyValue::Int(10),
    );
    kafka.properties.insert(
        "fetch.max.bytes".into(),
        anomalyd::config::PropertyValue::Int(2_097_152),
    );
    kafka
}

/// A name no other test (or earlier run against the same broker) has used.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos % 1_000_000_000
    )
}

/// Creates `name` with `partitions` partitions (tansu has no auto-creation) and waits until the
/// broker reports all of them.
pub async fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = anomalyd::kafka::client_config(&kafka_config())
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .expect("create_topics request");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }

    let probe: BaseConsumer = anomalyd::kafka::client_config(&kafka_config())
        .create()
        .expect("metadata client");
    for _ in 0..100 {
        let ready = probe
            .fetch_metadata(Some(name), Duration::from_secs(5))
            .is_ok_and(|md| {
                md.topics()
                    .iter()
                    .any(|t| t.name() == name && t.partitions().len() == partitions as usize)
            });
        if ready {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("topic {name} did not appear with {partitions} partitions");
}

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anomalyd::config::{Config, DetectorConfig};
use anomalyd::detect::features::FeatureExtractor;
use anomalyd::detect::model::Model;
use anomalyd::offline::train::{TrainOptions, train};
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Trains the demo model (`anomalyd train --synthetic 42`) into `dir`.
pub fn seed_model(dir: &Path) -> PathBuf {
    let out = dir.join("seed.iforest");
    train(&TrainOptions::synthetic(42, out.clone())).expect("train the seed model");
    out
}

/// The name of the one detector [`pipeline_config`] configures.
pub const DETECTOR: &str = "transactions";

/// The detector [`pipeline_config`] configures.
pub fn det(config: &Config) -> &DetectorConfig {
    &config.detectors[DETECTOR]
}

/// [`det`], to change it.
pub fn det_mut(config: &mut Config) -> &mut DetectorConfig {
    config
        .detectors
        .get_mut(DETECTOR)
        .expect("the pipeline config has its detector")
}

/// A detector reading `input` and writing fresh output and dead-letter topics (created here),
/// scoring with `model`.
pub async fn fresh_detector(input: &str, model: &Path) -> DetectorConfig {
    let d = DetectorConfig {
        input_topic: input.to_owned(),
        output_topic: unique("anomalies"),
        dead_letter_topic: unique("dead-letters"),
        model: Some(model.to_owned()),
        ..DetectorConfig::default()
    };
    create_topic(&d.output_topic, 3).await;
    create_topic(&d.dead_letter_topic, 1).await;
    d
}

/// Fresh input (3 partitions), output and dead-letter topics, and a config with one detector,
/// [`DETECTOR`], that uses them.
pub async fn pipeline_config(dir: &Path, model: &Path) -> Config {
    let mut config = Config {
        kafka: kafka_config(),
        ..Config::default()
    };
    // The consumer's group timings are anomalyd's defaults (src/kafka.rs): the crash and
    // liveness tests hold them to their promises.
    config.kafka.group_id = unique("detector");
    let input = unique("transactions");
    create_topic(&input, 3).await;
    let d = fresh_detector(&input, model).await;
    config.generator.topic = input;
    config.detectors.insert(DETECTOR.into(), d);
    config.control.socket = dir.join("anomalyd.sock");
    config
}

/// Turns the daemon's generator on: `count` records (seeded by `seed`) at `rate` records/s
/// (0: as fast as the broker takes them) to the (first) detector's input topic.
pub fn generate(config: &mut Config, count: u64, rate: f64, seed: u64) {
    let topic = config
        .detectors
        .values()
        .next()
        .expect("a detector")
        .input_topic
        .clone();
    let g = &mut config.generator;
    g.enabled = true;
    g.topic = topic;
    g.count = count;
    g.rate = rate;
    g.seed = seed;
}

/// The generator's records `ids`, written straight to `topic`.
pub async fn produce_generated(topic: &str, seed: u64, ids: std::ops::Range<u64>) {
    let producer: FutureProducer = anomalyd::kafka::producer_config(&kafka_config())
        .create()
        .expect("producer");
    let mut pending = Vec::new();
    for id in ids {
        let v = anomalyd::source::generator::record(seed, id, 0.2, std::time::SystemTime::now());
        let payload = v.to_string();
        let key = id.to_string();
        pending.push(
            producer
                .send_result(FutureRecord::to(topic).key(&key).payload(&payload))
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
        if pending.len() >= 5000 {
            for p in pending.drain(..) {
                p.await.expect("delivery").expect("delivered");
            }
        }
    }
    for p in pending {
        p.await.expect("delivery").expect("delivered");
    }
}

/// The ids among the generator's records `ids` that `model` flags offline.
pub fn expected_anomalies(
    model: &Path,
    seed: u64,
    p: f64,
    ids: std::ops::Range<u64>,
) -> BTreeSet<u64> {
    let model = Model::load(model).expect("model");
    let fx = FeatureExtractor::new(anomalyd::config::FeatureSpec::Field("data".into()), 2);
    ids.filter(|&id| {
        let v = anomalyd::source::generator::record(seed, id, p, std::time::SystemTime::now());
        let text = v.to_string();
        let record = FeatureExtractor::parse(Some(text.as_bytes())).expect("json");
        let mut x = Vec::new();
        fx.extract(&record, &mut x).expect("features");
        model.decision(model.score(&x)) < 0.0
    })
    .collect()
}

/// Reads `topic` from the beginning until `done` says the records so far are enough.
pub async fn read_topic(
    topic: &str,
    timeout: Duration,
    done: impl FnMut(&[OwnedMessage]) -> bool,
) -> Vec<OwnedMessage> {
    read_topic_from(&kafka_config(), topic, timeout, done).await
}

/// [`read_topic`] on another broker (the TLS test's).
pub async fn read_topic_from(
    kafka: &KafkaConfig,
    topic: &str,
    timeout: Duration,
    mut done: impl FnMut(&[OwnedMessage]) -> bool,
) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = anomalyd::kafka::consumer_config(kafka, &unique("reader"))
        .create()
        .expect("reader");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut got = Vec::new();
    while !done(&got) {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => got.push(m.detach()),
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => break,
        }
    }
    got
}

/// A [`read_topic`] condition: every id of `expected` has been seen. Looks only at the newest
/// record each time, so reading n records costs O(n).
pub fn covers(expected: &BTreeSet<u64>) -> impl FnMut(&[OwnedMessage]) -> bool + '_ {
    let mut seen = BTreeSet::new();
    move |got| {
        if let Some(last) = got.last() {
            let id = ids(std::slice::from_ref(last))[0];
            if expected.contains(&id) {
                seen.insert(id);
            }
        }
        seen.len() == expected.len()
    }
}

/// The `id` field of each JSON record.
pub fn ids(msgs: &[OwnedMessage]) -> Vec<u64> {
    msgs.iter()
        .map(|m| {
            let v: serde_json::Value =
                serde_json::from_slice(m.payload().expect("payload")).expect("json");
            v["id"].as_u64().expect("id")
        })
        .collect()
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// A child process that is killed when dropped, so a failing test never leaves a daemon
/// running against the broker.
pub struct Reaper(pub std::process::Child);

impl std::ops::Deref for Reaper {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Reaper {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
