//! Shared test harness: the real broker that `scripts/test` starts, and fresh topics on it.
//!
//! Tests never mock Kafka. `scripts/test` starts a throw-away tansu broker and exports its
//! address as `KAFKA_TEST_BROKERS` (not `ANOMALYD_*`, which the config loader would read).

#![allow(dead_code)] // each test binary uses its own part of the harness

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

/// `[kafka]` settings for the test broker, tuned for tansu's long fetch waits.
pub fn kafka_config() -> KafkaConfig {
    let mut kafka = KafkaConfig {
        brokers: brokers(),
        ..KafkaConfig::default()
    };
    kafka
        .properties
        .insert("fetch.wait.max.ms".into(), anomalyd::config::PropertyValue::Int(10));
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
        if let Ok(md) = probe.fetch_metadata(Some(name), Duration::from_secs(5)) {
            if md
                .topics()
                .iter()
                .any(|t| t.name() == name && t.partitions().len() == partitions as usize)
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("topic {name} did not appear with {partitions} partitions");
}
