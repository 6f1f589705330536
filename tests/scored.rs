//! Every scored record, not only the anomalies (issue 14, item 3), against the real broker: a
//! rules detector with `scored_topic` publishes each sensor reading it scores once to that
//! topic, keyed like the reading and shaped as an anomaly with `"anomaly": true|false`, while
//! its anomalies still go to `output_topic` unchanged and a reading no rule can judge goes to
//! the dead letters only; after a clean stop the committed offsets cover every reading. A
//! scored record too large for `message.max.bytes` becomes a `too_large` dead letter and its
//! partition goes on.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anomalyd::config::{Config, DetectorConfig};
use anomalyd::daemon::Daemon;
use anomalyd::record::Record;
use anomalyd::sinks::anomalies::source_text;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

const N: u64 = 2_000;
const SENSORS: u64 = 7;
const DETECTOR: &str = "sensors";

/// Reading `i`: `(key, value)`. Temperatures step through 20.0..45.0 by 0.1 (so 40.0 itself,
/// normal under a strict `>`, comes up too), timestamps one second apart from a fixed start
/// (RFC 3339 with an offset), so every reading's text is unique.
fn reading(i: u64) -> (String, String) {
    let sensor = format!("sensor-{}", i % SENSORS);
    let temperature = 20.0 + ((i * 37) % 250) as f64 / 10.0;
    let pressure = 100.0 + (i % 30) as f64;
    let (minute, second) = (i / 60 % 60, i % 60);
    let hour = 10 + i / 3600;
    let value = format!(
        r#"{{"sensor_id":"{sensor}","temperature":{temperature:.1},"pressure":{pressure:.1},"timestamp":"2026-11-30T{hour:02}:{minute:02}:{second:02}.000+01:00"}}"#
    );
    (sensor, value)
}

fn is_hot(value: &str) -> bool {
    let v: Value = serde_json::from_str(value).unwrap();
    v["temperature"].as_f64().unwrap() > 40.0
}

async fn produce(topic: &str, records: &[(String, String)]) {
    let producer: FutureProducer = anomalyd::kafka::producer_config(&support::kafka_config())
        .create()
        .expect("producer");
    let mut pending = Vec::new();
    for (key, value) in records {
        pending.push(
            producer
                .send_result(FutureRecord::to(topic).key(key).payload(value))
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
    }
    for p in pending {
        p.await.expect("delivery").expect("delivered");
    }
}

/// A config with one rules detector, `hot = "temperature > 40.0"`, on fresh topics, with a
/// scored topic.
async fn config(dir: &std::path::Path) -> Config {
    let mut config = Config {
        kafka: support::kafka_config(),
        ..Config::default()
    };
    config.kafka.group_id = support::unique("scored");
    config.control.socket = dir.join("anomalyd.sock");
    let d = DetectorConfig {
        input_topic: support::unique("sensor-data"),
        output_topic: support::unique("sensor-anomalies"),
        scored_topic: Some(support::unique("sensor-readings")),
        dead_letter_topic: support::unique("sensor-dead-letters"),
        rules: Some(BTreeMap::from([(
            "hot".to_owned(),
            "temperature > 40.0".into(),
        )])),
        ..DetectorConfig::default()
    };
    for (topic, partitions) in [
        (&d.input_topic, 3),
        (&d.output_topic, 3),
        (d.scored_topic.as_ref().unwrap(), 3),
        (&d.dead_letter_topic, 1),
    ] {
        support::create_topic(topic, partitions).await;
    }
    config.generator.topic = d.input_topic.clone();
    config.detectors.insert(DETECTOR.into(), d);
    assert_eq!(config.validate(), vec![]);
    config
}

fn json(m: &OwnedMessage) -> Value {
    serde_json::from_slice(m.payload().expect("payload")).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scored_reading_arrives_once_with_its_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path()).await;
    let d = config.detectors[DETECTOR].clone();
    let scored_topic = d.scored_topic.clone().unwrap();

    let readings: Vec<(String, String)> = (0..N).map(reading).collect();
    let hot: BTreeSet<&str> = readings
        .iter()
        .filter(|(_, v)| is_hot(v))
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(!hot.is_empty() && hot.len() < readings.len() / 2);
    assert!(
        readings
            .iter()
            .any(|(_, v)| v.contains(r#""temperature":40.0,"#)),
        "40.0 itself is among the readings"
    );
    produce(&d.input_topic, &readings).await;
    // One reading no rule can judge: no temperature. A dead letter, not a scored record.
    let broken = (
        "sensor-x".to_owned(),
        r#"{"sensor_id":"sensor-x","pressure":101.0,"timestamp":"2026-11-30T10:00:00Z"}"#
            .to_owned(),
    );
    produce(&d.input_topic, std::slice::from_ref(&broken)).await;

    let daemon = Daemon::start(config.clone()).await.expect("daemon starts");
    let metrics = daemon.detector(DETECTOR).unwrap().metrics().clone();
    let all = support::wait_until(Duration::from_secs(180), || {
        metrics.records_in.load(Relaxed) > N
    })
    .await;
    assert!(
        all,
        "scored {} of {}",
        metrics.records_in.load(Relaxed),
        N + 1
    );
    let scored = support::read_topic(&scored_topic, Duration::from_secs(60), |g| {
        g.len() >= N as usize
    })
    .await;
    let anomalies = support::read_topic(&d.output_topic, Duration::from_secs(60), |g| {
        g.len() >= hot.len()
    })
    .await;
    let letters = support::read_topic(&d.dead_letter_topic, Duration::from_secs(30), |g| {
        !g.is_empty()
    })
    .await;
    // Give a duplicate, if any, the chance to show up before judging.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(metrics.records_in.load(Relaxed), N + 1, "each reading once");
    assert_eq!(metrics.anomalies_out.load(Relaxed), hot.len() as u64);
    let (code, body) = anomalyd::control::client::request(
        &config.control.socket,
        "GET",
        "/status",
        Duration::from_secs(10),
    )
    .await
    .expect("status");
    assert_eq!(code, 200);
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        status["detectors"][0]["scored_topic"],
        scored_topic.as_str(),
        "{status}"
    );
    daemon
        .stop(Duration::from_secs(30))
        .await
        .expect("clean stop");

    // The scored topic: every reading once, keyed like it, its text intact, with its verdict.
    let by_text: BTreeMap<&str, &str> = readings
        .iter()
        .map(|(k, v)| (v.as_str(), k.as_str()))
        .collect();
    let mut seen = BTreeSet::new();
    let mut positions = BTreeSet::new();
    for m in &scored {
        let v = json(m);
        let a = &v["anomalyd"];
        let text = source_text(&Record::parse(m.payload()).unwrap()).expect("an anomaly's shape");
        let key = by_text
            .get(text.as_str())
            .unwrap_or_else(|| panic!("not a reading that was sent: {text}"));
        assert!(seen.insert(text.clone()), "scored twice: {text}");
        assert_eq!(m.key(), Some(key.as_bytes()), "keyed like its reading");
        let flagged = hot.contains(text.as_str());
        assert_eq!(a["anomaly"], flagged, "{v}");
        assert_eq!(a["detector"], DETECTOR);
        assert_eq!(a["layout"], "inline");
        assert_eq!(a["model"]["kind"], "rules");
        assert_eq!(a["source"]["topic"], d.input_topic.as_str());
        assert!(positions.insert((
            a["source"]["partition"].as_i64().unwrap(),
            a["source"]["offset"].as_i64().unwrap()
        )));
        if flagged {
            assert_eq!(
                (a["score"].as_f64(), a["decision"].as_f64()),
                (Some(1.0), Some(-1.0))
            );
            assert_eq!(
                a["explanation"],
                serde_json::json!([{"rule": "hot"}]),
                "{v}"
            );
        } else {
            assert_eq!(
                (a["score"].as_f64(), a["decision"].as_f64()),
                (Some(0.0), Some(1.0))
            );
            assert_eq!(a["explanation"], serde_json::json!([]), "{v}");
        }
        // The reading's own fields are where they were.
        assert!(v["temperature"].is_number() && v["sensor_id"] == *key);
    }
    assert_eq!(seen.len(), N as usize, "every reading on the scored topic");

    // The output topic: the anomalies alone, as before (no `anomaly` member), each once.
    let mut flagged = BTreeSet::new();
    for m in &anomalies {
        let v = json(m);
        assert!(v["anomalyd"].get("anomaly").is_none(), "{v}");
        let text = source_text(&Record::parse(m.payload()).unwrap()).unwrap();
        assert!(flagged.insert(text), "an anomaly twice");
    }
    let expected: BTreeSet<String> = hot.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(flagged, expected);

    // The reading no rule could judge: a dead letter, and nothing on the scored topic.
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].payload(), Some(broken.1.as_bytes()));
    assert!(!seen.contains(&broken.1));

    // Every output was acknowledged before the offsets moved, and they moved to the end.
    let group = d.group(&config.kafka.group_id, DETECTOR);
    let probe: BaseConsumer = anomalyd::kafka::consumer_config(&support::kafka_config(), &group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition(&d.input_topic, p);
    }
    let committed = probe
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let mut total = 0;
    for e in committed.elements() {
        let (_, high) = probe
            .fetch_watermarks(&d.input_topic, e.partition(), Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            e.offset(),
            Offset::Offset(high),
            "partition {}",
            e.partition()
        );
        total += high;
    }
    assert_eq!(total, N as i64 + 1);
}

/// A scored record too large for `message.max.bytes` (its reading fits, the reading with the
/// `anomalyd` member does not) goes down the same ladder as an anomaly: a `too_large` dead
/// letter, value cut to fit, naming `scored` as what it was meant to be; the readings after it
/// on its partition are scored and published as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scored_record_too_large_is_a_dead_letter_and_its_partition_goes_on() {
    use anomalyd::sinks::dead_letter;
    use rdkafka::message::Headers;
    const LIMIT: i64 = 20_000;

    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path()).await;
    config.kafka.properties.insert(
        "message.max.bytes".into(),
        anomalyd::config::PropertyValue::Int(LIMIT),
    );
    let d = config.detectors[DETECTOR].clone();
    let scored_topic = d.scored_topic.clone().unwrap();
    let key = "sensor-1".to_owned();
    let big = format!(
        r#"{{"sensor_id":"sensor-1","temperature":20.0,"pressure":100.0,"timestamp":"2026-11-30T10:00:01.000+01:00","note":"{}"}}"#,
        "x".repeat(19_700)
    );
    assert!(big.len() < 19_900, "{}", big.len());
    // One key: one partition, in this order.
    let sent = [
        (key.clone(), reading(0).1),
        (key.clone(), big.clone()),
        (key.clone(), reading(2).1),
    ];
    produce(&d.input_topic, &sent).await;

    let daemon = Daemon::start(config).await.expect("daemon starts");
    let metrics = daemon.detector(DETECTOR).unwrap().metrics().clone();
    assert!(
        support::wait_until(Duration::from_secs(60), || metrics.records_in.load(Relaxed)
            >= 3)
        .await
    );
    let scored =
        support::read_topic(&scored_topic, Duration::from_secs(30), |g| g.len() >= 2).await;
    let letters = support::read_topic(&d.dead_letter_topic, Duration::from_secs(30), |g| {
        !g.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(metrics.records_in.load(Relaxed), 3);
    assert_eq!(metrics.dead_letters()[dead_letter::TOO_LARGE], 1);
    assert_eq!(metrics.records_skipped.load(Relaxed), 0);
    daemon
        .stop(Duration::from_secs(30))
        .await
        .expect("clean stop");

    let texts: Vec<String> = scored
        .iter()
        .map(|m| source_text(&Record::parse(m.payload()).unwrap()).unwrap())
        .collect();
    assert_eq!(texts, [sent[0].1.clone(), sent[2].1.clone()]);

    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    let header = |name: &str| {
        letter
            .headers()
            .unwrap()
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| panic!("no header {name}"))
    };
    assert_eq!(header(dead_letter::REASON), "too_large");
    assert_eq!(header(dead_letter::ORIGINAL_REASON), "scored");
    assert_eq!(header(dead_letter::ORIGINAL_SIZE), big.len().to_string());
    let detection: Value = serde_json::from_str(&header(dead_letter::DETECTION)).unwrap();
    assert_eq!(detection["anomaly"], false);
    assert!(
        header(dead_letter::ERROR)
            .starts_with("scored as no anomaly, for the scored topic; the scored record would be"),
        "{}",
        header(dead_letter::ERROR)
    );
    assert_eq!(letter.key(), Some(key.as_bytes()));
    let value = letter.payload().unwrap();
    assert!(big.as_bytes().starts_with(value), "a prefix of the reading");
}
