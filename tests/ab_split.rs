//! The A/B split between detectors (issue 13, item 7), against the real broker: two rules
//! detectors on one topic, split 50/50 by key, each flagging every record it scores. Every
//! record is scored by exactly one of them, the one whose range its key hashes into, and its
//! anomaly names that variant; keyless records go to the variant holding 0.0; a bad record
//! is dead-lettered by its own variant only; and both groups' committed offsets reach the
//! end of every partition, even where the last record is the other variant's.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anomalyd::config::{Config, SplitConfig};
use anomalyd::control::client;
use anomalyd::daemon::Daemon;
use anomalyd::detect::split::key_position;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

const SEED: u64 = 13;
const N: u64 = 4_000;
const PARTITIONS: i32 = 3;

/// The variant a record keyed `key` belongs to under the test's 50/50 split.
fn variant_of(key: Option<&str>) -> &'static str {
    if key_position(key.map(str::as_bytes)) < 0.5 {
        "A"
    } else {
        "B"
    }
}

/// The first id from `from` on whose key (its decimal text) is `variant`'s.
fn id_of_variant(from: u64, variant: &str) -> u64 {
    (from..)
        .find(|id| variant_of(Some(&id.to_string())) == variant)
        .unwrap()
}

/// `topic`'s high watermark and `group`'s committed offset, per partition.
fn offsets(topic: &str, group: &str) -> Vec<(i64, Option<i64>)> {
    let consumer: BaseConsumer = anomalyd::kafka::consumer_config(&support::kafka_config(), group)
        .create()
        .expect("offsets client");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..PARTITIONS)
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            let at = committed
                .find_partition(topic, p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            (high, at)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fifty_fifty_split_scores_every_record_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        kafka: support::kafka_config(),
        ..Config::default()
    };
    config.kafka.group_id = support::unique("ab");
    config.control.socket = dir.path().join("anomalyd.sock");
    let input = support::unique("invoices");
    support::create_topic(&input, PARTITIONS).await;
    // The model file is never read: rules score.
    let unused = dir.path().join("unused.iforest");
    for (name, variant, from, to) in [("kmeans", "A", 0.0, 0.5), ("bisect", "B", 0.5, 1.0)] {
        let mut d = support::fresh_detector(&input, &unused).await;
        d.model = None;
        // True for every generator record: every record scored becomes an anomaly.
        d.rules = Some(BTreeMap::from([(
            "always".to_owned(),
            "size(data) >= 1".into(),
        )]));
        d.split = Some(SplitConfig {
            variant: variant.into(),
            from,
            to,
        });
        config.detectors.insert(name.to_owned(), d);
    }
    assert_eq!(config.validate(), vec![]);
    assert_eq!(config.warnings(), vec![], "50/50 covers every key");
    let out = |name: &str| config.detectors[name].output_topic.clone();
    let (out_a, out_b) = (out("kmeans"), out("bisect"));
    let dead_b = config.detectors["bisect"].dead_letter_topic.clone();

    // Records 0..N keyed by id, spread by the default partitioner.
    support::produce_generated(&input, SEED, 0..N).await;
    // Then, once the daemon has read those, the end of each partition, chosen so that each
    // group's last record somewhere is the other variant's, alone in its batch: partition 0
    // ends with a B record (A must still commit past it), partition 1 with an A record,
    // partition 2 with a keyless record (A's: keyless records are at 0.0) after a bad record
    // keyed for B.
    let bad_id = id_of_variant(N, "B");
    let tail_b = id_of_variant(bad_id + 1, "B");
    let tail_a = id_of_variant(N, "A");
    let keyless = tail_b.max(tail_a) + 1;

    // Who should score what: the ids each variant flags, and how many records each takes.
    let mut expected: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for id in (0..N).chain([tail_a, tail_b]) {
        expected
            .entry(variant_of(Some(&id.to_string())))
            .or_default()
            .insert(id);
    }
    expected.get_mut("A").unwrap().insert(keyless);
    let (want_a, want_b) = (&expected["A"], &expected["B"]);
    // The bad record is B's too: taken (and dead-lettered), not flagged.
    let (takes_a, takes_b) = (want_a.len() as u64, want_b.len() as u64 + 1);
    let total = N + 4;
    assert_eq!(takes_a + takes_b, total);
    // A fair split of 4,000 keys: far from lopsided (the hash's own share test is tighter).
    assert!((1_700..=2_300).contains(&takes_a), "{takes_a}");

    let daemon = Daemon::start(config).await.expect("daemon starts");
    let (ma, mb) = (
        daemon.detector("kmeans").unwrap().metrics().clone(),
        daemon.detector("bisect").unwrap().metrics().clone(),
    );
    let seen = |m: &anomalyd::metrics::Metrics| {
        m.records_in.load(Relaxed) + m.records_skipped_by_split.load(Relaxed)
    };
    let body_read = support::wait_until(Duration::from_secs(180), || {
        seen(&ma) >= N && seen(&mb) >= N
    })
    .await;
    assert!(
        body_read,
        "read: kmeans {} bisect {} of {N}",
        seen(&ma),
        seen(&mb)
    );
    let producer: FutureProducer = anomalyd::kafka::producer_config(&support::kafka_config())
        .create()
        .expect("producer");
    let record = |id: u64| {
        anomalyd::source::generator::record(SEED, id, 0.2, std::time::SystemTime::now()).to_string()
    };
    let bad_key = bad_id.to_string();
    for (partition, key, payload) in [
        (0, Some(tail_b.to_string()), record(tail_b)),
        (1, Some(tail_a.to_string()), record(tail_a)),
        (2, Some(bad_key.clone()), "not json".to_owned()),
        (2, None, record(keyless)),
    ] {
        let mut r = FutureRecord::to(&input)
            .partition(partition)
            .payload(&payload);
        if let Some(k) = &key {
            r = r.key(k);
        }
        producer
            .send(r, Duration::from_secs(10))
            .await
            .expect("tail record sent");
    }
    let all_read = support::wait_until(Duration::from_secs(60), || {
        seen(&ma) >= total && seen(&mb) >= total
    })
    .await;
    assert!(
        all_read,
        "read: kmeans {} bisect {} of {total}",
        seen(&ma),
        seen(&mb)
    );
    let count_a = |got: &[rdkafka::message::OwnedMessage]| got.len() >= want_a.len();
    let got_a = support::read_topic(&out_a, Duration::from_secs(60), count_a).await;
    let count_b = |got: &[rdkafka::message::OwnedMessage]| got.len() >= want_b.len();
    let got_b = support::read_topic(&out_b, Duration::from_secs(60), count_b).await;
    let letters = support::read_topic(&dead_b, Duration::from_secs(30), |g| !g.is_empty()).await;

    // Both groups commit to the end of every partition, past the other variant's records.
    for name in ["kmeans", "bisect"] {
        let group = daemon.detector(name).unwrap().subscription().group.clone();
        let mut last = Vec::new();
        let reached = support::wait_until(Duration::from_secs(60), || {
            last = offsets(&input, &group);
            last.iter().all(|(high, at)| *at == Some(*high))
        })
        .await;
        assert!(reached, "{name}: (high watermark, committed) {last:?}");
    }
    // Give a duplicate, if any, the chance to show up before judging.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ma.records_in.load(Relaxed),
        takes_a,
        "A scored its own once"
    );
    assert_eq!(
        mb.records_in.load(Relaxed),
        takes_b,
        "B scored its own once"
    );
    assert_eq!(ma.records_skipped_by_split.load(Relaxed), takes_b);
    assert_eq!(mb.records_skipped_by_split.load(Relaxed), takes_a);
    assert_eq!(
        ma.dead_letters().values().sum::<u64>(),
        0,
        "A skips B's bad record, it does not dead-letter it"
    );
    assert_eq!(mb.dead_letters()["not_json"], 1);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].key(), Some(bad_key.as_bytes()));

    // Status and metrics show the split and the skipped records.
    let socket = daemon.config().control.socket.clone();
    let (code, body) = client::request(&socket, "GET", "/status", Duration::from_secs(10))
        .await
        .expect("status");
    assert_eq!(code, 200);
    let status: Value = serde_json::from_str(&body).unwrap();
    let by_name = |name: &str| {
        status["detectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .cloned()
            .unwrap()
    };
    let (sa, sb) = (by_name("kmeans"), by_name("bisect"));
    assert_eq!(sa["split"], json!({"variant": "A", "from": 0.0, "to": 0.5}));
    assert_eq!(sb["split"], json!({"variant": "B", "from": 0.5, "to": 1.0}));
    assert_eq!(sa["records"], takes_a);
    assert_eq!(sa["records_skipped_by_split"], takes_b);
    let (_, metrics) = client::request(&socket, "GET", "/metrics", Duration::from_secs(10))
        .await
        .expect("metrics");
    for line in [
        format!("anomalyd_records_skipped_by_split_total{{detector=\"kmeans\"}} {takes_b}"),
        format!("anomalyd_records_skipped_by_split_total{{detector=\"bisect\"}} {takes_a}"),
        format!("anomalyd_records_total{{detector=\"bisect\"}} {takes_b}"),
    ] {
        assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");
    }
    daemon
        .stop(Duration::from_secs(30))
        .await
        .expect("clean stop");

    // Each key in exactly one output topic, the one of its variant, named in its anomaly.
    let mut scored_by: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for (variant, detector, got) in [("A", "kmeans", &got_a), ("B", "bisect", &got_b)] {
        for m in got.iter() {
            let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            let id = v["id"].as_u64().unwrap();
            let key = m.key().map(|k| std::str::from_utf8(k).unwrap().to_owned());
            assert_eq!(
                key.as_deref(),
                (id != keyless).then(|| id.to_string()).as_deref()
            );
            assert_eq!(variant_of(key.as_deref()), variant, "{v}");
            assert_eq!(v["anomalyd"]["variant"], variant, "{v}");
            assert_eq!(v["anomalyd"]["detector"], detector, "{v}");
            assert_eq!(v["anomalyd"]["explanation"][0]["rule"], "always", "{v}");
            scored_by.entry(id).or_default().push(variant);
        }
    }
    let once: BTreeSet<u64> = scored_by.keys().copied().collect();
    let all: BTreeSet<u64> = want_a.union(want_b).copied().collect();
    assert_eq!(once, all, "every record scored");
    let twice: Vec<_> = scored_by.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(twice.is_empty(), "scored more than once: {twice:?}");
}
