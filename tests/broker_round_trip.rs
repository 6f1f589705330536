//! Proves the test harness is real: records produced with anomalyd's producer settings come
//! back through a consumer group on a 3-partition topic of the scripted tansu broker, and a
//! group member that restarts resumes after its committed offsets.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anomalyd::kafka::{consumer_config, producer_config};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const RECORDS: usize = 300;

async fn produce(topic: &str, range: std::ops::Range<usize>) {
    let producer: FutureProducer = producer_config(&support::kafka_config())
        .create()
        .expect("producer");
    for i in range {
        let key = format!("key-{i}");
        let payload = format!("{{\"id\":{i}}}");
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce {i}: {e}"));
    }
}

/// Reads `n` records, storing each offset after it is handled, then commits synchronously.
async fn consume(topic: &str, group: &str, n: usize) -> BTreeMap<usize, i32> {
    let consumer: StreamConsumer = consumer_config(&support::kafka_config(), group)
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut seen = BTreeMap::new();
    while seen.len() < n {
        let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} records arrived", seen.len()))
            .expect("consume");
        let payload: serde_json::Value =
            serde_json::from_slice(msg.payload().expect("payload")).expect("json");
        let id = payload["id"].as_u64().expect("id") as usize;
        assert!(seen.insert(id, msg.partition()).is_none(), "{id} twice");
        consumer.store_offset_from_message(&msg).expect("store");
    }
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    // The committed positions must be what we stored.
    let committed: TopicPartitionList = consumer
        .committed(Duration::from_secs(10))
        .expect("committed");
    let total: i64 = committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum();
    assert!(total as usize >= n.min(RECORDS), "committed {total}");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_consume_commit_resume() {
    let topic = support::unique("round-trip");
    let group = support::unique("round-trip-group");
    support::create_topic(&topic, 3).await;

    produce(&topic, 0..RECORDS).await;
    let first = consume(&topic, &group, RECORDS).await;
    assert_eq!(
        first.keys().copied().collect::<Vec<_>>(),
        (0..RECORDS).collect::<Vec<_>>()
    );
    let partitions: BTreeSet<i32> = first.values().copied().collect();
    assert_eq!(
        partitions,
        BTreeSet::from([0, 1, 2]),
        "keys spread over 3 partitions"
    );

    // A new member of the same group starts after the committed offsets: it sees only the
    // records produced since.
    produce(&topic, RECORDS..RECORDS + 30).await;
    let second = consume(&topic, &group, 30).await;
    assert_eq!(
        second.keys().copied().collect::<Vec<_>>(),
        (RECORDS..RECORDS + 30).collect::<Vec<_>>()
    );
}
