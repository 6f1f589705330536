//! Source records survive (issue 11, items 1 and 2, and the BOM and feature-count items of 3 and
//! 6): an anomaly is its source record byte for byte plus anomalyd's `anomalyd` member; only
//! the features are judged; a record whose output the producer cannot take never stops its
//! partition. A property test of the splice and the record reader over many generated records
//! (no broker), and, against the real broker, the issue's inputs and a generated stream with
//! records around the producer's size limit.

mod support;

#[path = "support/records.rs"]
mod records;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};

use anomalyd::config::FeatureSpec;
use anomalyd::daemon::Daemon;
use anomalyd::detect::features::{FeatureExtractor, Rejection};
use anomalyd::detect::model::LoadedModel as Model;
use anomalyd::record::{self, Record};
use anomalyd::sinks::SourceRef;
use anomalyd::sinks::anomalies::{Additions, Detection, source_text, write_anomaly};
use anomalyd::sinks::dead_letter;
use anomalyd::sinks::slack::anomaly::Anomaly;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

/// The producer limit the daemon runs with in these tests: librdkafka's default.
const LIMIT: usize = 1_000_000;

/// The features the old reader (a `serde_json::Value`) found, for comparison: the same rules,
/// without the cap on long arrays.
fn reference_features(v: &Value) -> Result<Vec<f64>, &'static str> {
    let data = v.get("data").ok_or("missing_feature")?;
    let items = data.as_array().ok_or("not_a_number")?;
    let mut out = Vec::new();
    for item in items {
        let inner = match item {
            Value::Array(inner) => inner.clone(),
            v => vec![v.clone()],
        };
        for x in inner {
            out.push(x.as_f64().ok_or("not_a_number")?);
        }
    }
    if out.len() == 2 {
        Ok(out)
    } else {
        Err("wrong_feature_count")
    }
}

fn small_model(dir: &std::path::Path) -> Model {
    let path = dir.join("m.iforest");
    anomalyd::offline::train::train(&anomalyd::offline::train::TrainOptions {
        trees: Some(20),
        ..anomalyd::offline::train::TrainOptions::synthetic(42, path.clone())
    })
    .unwrap();
    Model::load(&path).unwrap()
}

/// The record without a byte-order mark and surrounding whitespace: what an anomaly keeps.
fn json_text(sent: &str) -> &str {
    sent.trim_start_matches('\u{feff}')
        .trim_matches([' ', '\t', '\n', '\r'])
}

#[test]
fn generated_records_survive_the_splice_and_are_read_as_serde_json_reads_them() {
    const CASES: u64 = 4000;
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let fx = FeatureExtractor::new(FeatureSpec::Field("data".into()), 2);
    let mut g = records::Gen::new(11);
    let (mut inline, mut wrapped, mut not_json, mut compared) = (0, 0, 0, 0);
    let mut out = Vec::new();
    for case in 0..CASES {
        let sent = g.record();
        let ctx = || format!("case {case}: {sent:?}");
        let stripped = sent.strip_prefix('\u{feff}').unwrap_or(&sent);
        let valid = serde_json::from_str::<serde::de::IgnoredAny>(stripped).is_ok();
        let record = match Record::parse(Some(sent.as_bytes())) {
            Ok(r) => r,
            Err(e) => {
                assert!(!valid, "{}: {e}", ctx());
                not_json += 1;
                continue;
            }
        };
        assert!(valid, "{}", ctx());
        assert_eq!(record.text(), json_text(&sent), "{}", ctx());

        // Features, pointers and reformatting agree with serde_json where it can read the
        // record at all (no number out of f64's range).
        let mut x = Vec::new();
        let ours = fx.extract(&record, &mut x).map(|()| x);
        if let Ok(v) = serde_json::from_str::<Value>(stripped) {
            compared += 1;
            assert_eq!(
                ours.clone().map_err(|r| r.reason()),
                reference_features(&v),
                "{}",
                ctx()
            );
            for p in [
                "",
                "/data",
                "/data/0",
                "/data/0/1",
                "/id",
                "/anomalyd",
                "/0",
                "/a~1b",
                "/",
            ] {
                let got = record
                    .pointer(p)
                    .map(|t| serde_json::from_str::<Value>(t).unwrap());
                assert_eq!(got.as_ref(), v.pointer(p), "{p} in {}", ctx());
            }
            for pretty in [false, true] {
                let again: Value =
                    serde_json::from_str(&record::reformat(record.text(), pretty)).unwrap();
                assert_eq!(again, v, "{}", ctx());
            }
        }
        let compact = record::reformat(record.text(), false);
        assert!(!compact.contains('\n'), "{}", ctx());
        assert_eq!(record::reformat(&compact, false), compact);

        // The anomaly: the source text byte for byte, plus our member, read back by the
        // notifier whatever the source's own fields are called.
        let detection = Detection {
            score: -0.7,
            decision: -0.2,
            features: &[3.5, -3.5],
        };
        let from = SourceRef {
            topic: "t",
            partition: 0,
            offset: case as i64,
        };
        let additions = Additions::new(
            &record,
            &detection,
            "transactions",
            &model,
            from,
            SystemTime::now(),
        );
        let at = write_anomaly(&mut out, &record, &additions);
        let anomaly = Record::parse(Some(&out)).unwrap_or_else(|e| panic!("{e}: {}", ctx()));
        assert_eq!(
            source_text(&anomaly).as_deref(),
            Some(record.text()),
            "{}",
            ctx()
        );
        let ours: Value = serde_json::from_slice(&out[at.clone()]).unwrap();
        assert_eq!(
            anomaly.get("anomalyd"),
            Some(std::str::from_utf8(&out[at.clone()]).unwrap())
        );
        assert_eq!(ours["score"], -0.7);
        assert_eq!(ours["source"]["offset"], case);
        let has_ours = record
            .members()
            .is_some_and(|m| m.iter().any(|m| m.key == "anomalyd"));
        if record.members().is_some() && !has_ours {
            inline += 1;
            assert_eq!(ours["layout"], "inline");
            assert!(out.starts_with(&record.text().as_bytes()[..record.text().len() - 1]));
        } else {
            wrapped += 1;
            assert_eq!(ours["layout"], "wrapped");
            assert_eq!(anomaly.get("record"), Some(record.text()));
        }
        let read = Anomaly::parse(&out).unwrap_or_else(|e| panic!("{e}: {}", ctx()));
        assert_eq!(read.score, -0.7);
        assert_eq!(read.source.offset, case as i64);
    }
    // The generator covers every branch often.
    assert!(
        inline > CASES / 2 && wrapped > 50 && not_json > 50,
        "{inline} {wrapped} {not_json}"
    );
    assert!(compared > CASES / 4, "{compared}");
}

/// A producer that may write records up to 2 MB, as an upstream system configured so.
fn big_producer() -> FutureProducer {
    let mut cfg = anomalyd::kafka::producer_config(&support::kafka_config());
    cfg.set("message.max.bytes", "2000000");
    cfg.create().unwrap()
}

async fn send(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");
}

fn headers(m: &OwnedMessage) -> BTreeMap<String, String> {
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every record of `topic` (read until `quiet` passes without a new one).
async fn everything(topic: &str) -> Vec<OwnedMessage> {
    support::read_topic(topic, Duration::from_secs(12), |_| false).await
}

/// The supervisor restarted nothing and nothing is degraded.
fn assert_no_restart(daemon: &Daemon) {
    let status = daemon.status();
    for t in &status.tasks {
        assert_eq!(t.restarts, 0, "{} restarted: {:?}", t.name, t.last_error);
    }
    assert!(!status.degraded, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_source_record_survives_into_its_anomaly_and_only_features_are_judged() {
    let dir = tempfile::tempdir().unwrap();
    let model = support::seed_model(dir.path());
    let config = support::pipeline_config(dir.path(), &model).await;
    let (input, output, dlq) = (
        support::det(&config).input_topic.clone(),
        support::det(&config).output_topic.clone(),
        support::det(&config).dead_letter_topic.clone(),
    );
    let daemon = Daemon::start(config).await.expect("daemon starts");
    let long: Vec<String> = (0..130_000).map(|i| (i % 97).to_string()).collect();
    let long = format!("{{\"id\": 6, \"data\": [{}]}}", long.join(","));
    let sent: Vec<(&str, String)> = vec![
        // Item 1: the record's own source, score, model and explanation stay its own.
        ("1", r#"{"id": 7, "source": "pos-terminal-12", "score": 712, "model": "X200", "explanation": "chargeback dispute", "data": [[3.5, -3.5]]}"#.into()),
        // Item 1: scored on data; note is not ours to judge, and keeps its text.
        ("2", r#"{"id": "x", "note": 1e400, "p": 0.1000000000000000055, "n": 12345678901234567890123, "data": [[3.5, -3.5]]}"#.into()),
        // Our own key in the source: the source is wrapped, not overwritten.
        ("3", r#"{"id": 3, "anomalyd": {"score": 1}, "data": [[3.5, -3.5]]}"#.into()),
        // Item 3: a byte-order mark before valid JSON.
        ("4", "\u{feff}{\"id\": 4, \"data\": [[3.5, -3.5]]}".into()),
        // A feature out of range is still not finite, named.
        ("5", r#"{"id": 5, "data": [[1e400, -3.5]]}"#.into()),
        // Item 6: the real count of a long array.
        ("6", long),
    ];
    let producer = big_producer();
    for (key, payload) in &sent {
        send(&producer, &input, key, payload.as_bytes()).await;
    }
    let m = daemon.metrics().clone();
    assert!(
        support::wait_until(Duration::from_secs(60), || m.records_in.load(Relaxed) >= 6).await,
        "scored {}",
        m.records_in.load(Relaxed)
    );
    let anomalies = support::read_topic(&output, Duration::from_secs(30), |g| g.len() >= 4).await;
    let letters = support::read_topic(&dlq, Duration::from_secs(30), |g| g.len() >= 2).await;
    assert_no_restart(&daemon);
    daemon
        .stop(Duration::from_secs(30))
        .await
        .expect("clean stop");

    let by_key: BTreeMap<&str, &OwnedMessage> = anomalies
        .iter()
        .map(|m| (std::str::from_utf8(m.key().unwrap()).unwrap(), m))
        .collect();
    assert_eq!(
        by_key.keys().copied().collect::<Vec<_>>(),
        ["1", "2", "3", "4"]
    );
    for (key, payload) in &sent[..4] {
        let a = by_key[key].payload().unwrap();
        let record = Record::parse(Some(a)).unwrap();
        assert_eq!(
            source_text(&record).as_deref(),
            Some(json_text(payload)),
            "{key}"
        );
        let read = Anomaly::parse(a).unwrap();
        assert!(read.score < 0.0);
    }
    let first: Value = serde_json::from_slice(by_key["1"].payload().unwrap()).unwrap();
    assert_eq!(first["source"], "pos-terminal-12");
    assert_eq!(first["score"], 712);
    assert_eq!(first["model"], "X200");
    assert_eq!(first["explanation"], "chargeback dispute");
    assert_eq!(first["anomalyd"]["source"]["topic"], input.as_str());
    let third: Value = serde_json::from_slice(by_key["3"].payload().unwrap()).unwrap();
    assert_eq!(third["anomalyd"]["layout"], "wrapped");
    assert_eq!(third["record"]["anomalyd"]["score"], 1);
    assert_eq!(
        Anomaly::parse(by_key["3"].payload().unwrap())
            .unwrap()
            .id
            .as_deref(),
        Some("3")
    );

    assert_eq!(letters.len(), 2);
    let h5 = headers(&letters[0]);
    assert_eq!(h5[dead_letter::REASON], "not_finite");
    assert_eq!(
        h5[dead_letter::ERROR],
        "feature data[0][0] is not a finite number"
    );
    let h6 = headers(&letters[1]);
    assert_eq!(h6[dead_letter::REASON], "wrong_feature_count");
    assert_eq!(h6[dead_letter::ERROR], "expected 2 features, found 130000");
    assert_eq!(
        letters[1].payload().unwrap(),
        sent[5].1.as_bytes(),
        "sent unchanged"
    );

    // `tail` prints the record as sent, 1e400 and all digits included.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_anomalyd"))
        .args([
            "tail",
            &output,
            "--brokers",
            &support::brokers(),
            "--from-beginning",
        ])
        .current_dir(dir.path())
        .env_remove("ANOMALYD_CONFIG")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains(r#""note":1e400,"p":0.1000000000000000055,"n":12345678901234567890123,"#),
        "{printed}"
    );
}

/// Issue 11's JSON record of 999,744 bytes: a valid anomaly whose anomaly record is larger
/// than the producer's `message.max.bytes`.
fn big_anomaly(id: u64, size: usize) -> Vec<u8> {
    let head = format!("{{\"id\": {id}, \"pad\": \"");
    let tail = "\", \"data\": [[3.5, -3.5]]}";
    let pad = size - head.len() - tail.len();
    format!("{head}{}{tail}", "x".repeat(pad)).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_record_goes_to_the_dead_letters_and_its_partition_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let model = support::seed_model(dir.path());
    let config = support::pipeline_config(dir.path(), &model).await;
    let (input, output, dlq) = (
        support::det(&config).input_topic.clone(),
        support::det(&config).output_topic.clone(),
        support::det(&config).dead_letter_topic.clone(),
    );
    let daemon = Daemon::start(config).await.expect("daemon starts");
    let small = |id: u64| format!("{{\"id\": {id}, \"data\": [[3.5, -3.5]]}}").into_bytes();
    let big = big_anomaly(2, 999_744);
    let not_json = vec![b'#'; 1_200_000];
    let producer = big_producer();
    // One key: one partition, in this order.
    for payload in [small(1), big.clone(), small(3), not_json.clone(), small(4)] {
        send(&producer, &input, "k", &payload).await;
    }
    let m = daemon.metrics().clone();
    assert!(
        support::wait_until(Duration::from_secs(60), || m.records_in.load(Relaxed) >= 5).await,
        "scored {} of 5",
        m.records_in.load(Relaxed)
    );
    let anomalies = support::read_topic(&output, Duration::from_secs(30), |g| g.len() >= 3).await;
    let letters = support::read_topic(&dlq, Duration::from_secs(30), |g| g.len() >= 2).await;
    // Any duplicate would show up by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(m.records_in.load(Relaxed), 5, "each record scored once");
    assert_no_restart(&daemon);
    assert_eq!(m.dead_letters()[dead_letter::TOO_LARGE], 2);
    assert_eq!(m.records_skipped.load(Relaxed), 0);
    assert_eq!(m.anomalies_out.load(Relaxed), 3);
    daemon
        .stop(Duration::from_secs(30))
        .await
        .expect("clean stop");

    let again = everything(&output).await;
    assert_eq!(
        support::ids(&again),
        [1, 3, 4],
        "each published exactly once"
    );
    assert_eq!(support::ids(&anomalies), [1, 3, 4]);
    assert_eq!(
        letters.len(),
        2,
        "{:?}",
        letters.iter().map(headers).collect::<Vec<_>>()
    );

    let h = headers(&letters[0]);
    assert_eq!(h[dead_letter::REASON], "too_large");
    assert_eq!(h[dead_letter::ORIGINAL_SIZE], "999744");
    assert_eq!(h[dead_letter::ORIGINAL_REASON], "anomaly");
    let detection: Value = serde_json::from_str(&h[dead_letter::DETECTION]).unwrap();
    assert!(detection["score"].as_f64().unwrap() < 0.0);
    assert!(
        h[dead_letter::ERROR].contains("more than the producer's message.max.bytes (1000000)"),
        "{h:?}"
    );
    let value = letters[0].payload().unwrap();
    assert!(
        value.len() < big.len() && big.starts_with(value),
        "a prefix"
    );
    assert_eq!(letters[0].key().unwrap(), b"k");
    let size = dead_letter::wire_size(1, value.len(), letters[0].headers());
    assert!(size <= LIMIT, "{size}");

    let h = headers(&letters[1]);
    assert_eq!(h[dead_letter::REASON], "too_large");
    assert_eq!(h[dead_letter::ORIGINAL_SIZE], "1200000");
    assert_eq!(h[dead_letter::ORIGINAL_REASON], "not_json");
    assert!(h[dead_letter::ERROR].starts_with("not JSON: "), "{h:?}");
    let value = letters[1].payload().unwrap();
    assert!(
        value.len() > 990_000 && not_json.starts_with(value),
        "{} {h:?}",
        value.len()
    );
}

/// What a sent record should become.
#[derive(Debug, Clone, PartialEq)]
enum Fate {
    Normal,
    Anomaly,
    Letter(&'static str),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_records_are_each_published_once_whole_or_dead_lettered() {
    const SMALL: u64 = 240;
    let dir = tempfile::tempdir().unwrap();
    let model_path = support::seed_model(dir.path());
    let model = Model::load(&model_path).unwrap();
    let config = support::pipeline_config(dir.path(), &model_path).await;
    let (input, output, dlq) = (
        support::det(&config).input_topic.clone(),
        support::det(&config).output_topic.clone(),
        support::det(&config).dead_letter_topic.clone(),
    );
    let daemon = Daemon::start(config).await.expect("daemon starts");

    let mut g = records::Gen::new(7);
    let mut sent: Vec<Vec<u8>> = (0..SMALL).map(|_| g.record().into_bytes()).collect();
    // Around the producer's limit: anomalies that fit and that do not, a dead letter that
    // does not, each with generated fields around the padding.
    for (i, size) in [
        998_000usize,
        999_400,
        999_744,
        999_990,
        1_000_500,
        1_300_000,
    ]
    .into_iter()
    .enumerate()
    {
        let fields = g.object(1, Some("\"data\": [[3.5, -3.5]]"));
        let head = "{\"pad\": \"";
        let tail = format!("\", \"f\": {fields}, \"data\": [[3.5, -3.5]]}}");
        let pad = size.saturating_sub(head.len() + tail.len());
        sent.push(format!("{head}{}{tail}", "x".repeat(pad)).into_bytes());
        if i == 2 {
            let mut broken = sent.last().unwrap().clone();
            broken.pop(); // no closing brace: not JSON
            sent.push(broken);
        }
    }
    let fx = FeatureExtractor::new(FeatureSpec::Field("data".into()), 2);
    let fate = |payload: &[u8]| -> Fate {
        let mut x = Vec::new();
        match FeatureExtractor::parse(Some(payload)).and_then(|r| fx.extract(&r, &mut x)) {
            Ok(()) if model.decision(model.score(&x)) < 0.0 => Fate::Anomaly,
            Ok(()) => Fate::Normal,
            Err(r) => Fate::Letter(Rejection::reason(&r)),
        }
    };
    let fates: Vec<Fate> = sent.iter().map(|p| fate(p)).collect();

    let producer = big_producer();
    // Keys spread the records over the three partitions, in order within each.
    let mut pending = Vec::new();
    for (i, payload) in sent.iter().enumerate() {
        let key = i.to_string();
        pending.push(
            producer
                .send_result(FutureRecord::to(&input).key(&key).payload(payload))
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
    }
    for p in pending {
        p.await.expect("delivery").expect("delivered");
    }
    let n = sent.len() as u64;
    let m = daemon.metrics().clone();
    assert!(
        support::wait_until(Duration::from_secs(60), || m.records_in.load(Relaxed) >= n).await,
        "nothing stuck: scored {} of {n}",
        m.records_in.load(Relaxed)
    );
    assert_no_restart(&daemon);
    let anomalies = everything(&output).await;
    let letters = everything(&dlq).await;
    assert_eq!(m.records_in.load(Relaxed), n, "each record scored once");
    daemon
        .stop(Duration::from_secs(30))
        .await
        .expect("clean stop");

    let mut outputs: BTreeMap<usize, Vec<&OwnedMessage>> = BTreeMap::new();
    for m in anomalies.iter().chain(&letters) {
        let i: usize = std::str::from_utf8(m.key().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        outputs.entry(i).or_default().push(m);
    }
    let (mut whole, mut cut) = (0, 0);
    for (i, (payload, fate)) in sent.iter().zip(&fates).enumerate() {
        let got = outputs.remove(&i).unwrap_or_default();
        let text = String::from_utf8_lossy(payload);
        let ctx = format!(
            "record {i} ({} bytes, {fate:?}): {:.200}",
            payload.len(),
            text
        );
        if *fate == Fate::Normal {
            assert!(got.is_empty(), "{ctx}");
            continue;
        }
        assert_eq!(got.len(), 1, "exactly one output: {ctx}");
        let out = got[0];
        let h = headers(out);
        let value = out.payload().unwrap_or_default();
        match (fate, h.get(dead_letter::REASON).map(String::as_str)) {
            (Fate::Anomaly, None) => {
                let record = Record::parse(Some(value)).unwrap();
                assert_eq!(
                    source_text(&record).as_deref(),
                    Some(json_text(&text)),
                    "byte for byte: {ctx}"
                );
                assert!(value.len() < LIMIT, "{ctx}");
                whole += 1;
            }
            (Fate::Letter(reason), Some(got)) if got == *reason => {
                assert_eq!(value, &payload[..], "unchanged: {ctx}");
            }
            (_, Some("too_large")) => {
                let meant = match fate {
                    Fate::Anomaly => "anomaly",
                    Fate::Letter(r) => r,
                    Fate::Normal => unreachable!(),
                };
                assert_eq!(h[dead_letter::ORIGINAL_REASON], meant, "{ctx}");
                assert_eq!(h[dead_letter::ORIGINAL_SIZE], payload.len().to_string());
                assert!(payload.starts_with(value), "a prefix: {ctx}");
                assert!(
                    value.len() > LIMIT - 2_000,
                    "cut to fit, not emptied: {ctx}"
                );
                assert!(
                    payload.len() > LIMIT - 2_000,
                    "only big records are cut: {ctx}"
                );
                cut += 1;
            }
            (_, reason) => panic!("{reason:?} for {ctx}"),
        }
    }
    assert!(
        outputs.is_empty(),
        "outputs of records never sent: {outputs:?}"
    );
    assert!(whole > 20 && cut >= 3, "{whole} whole anomalies, {cut} cut");
    assert_eq!(m.records_skipped.load(Relaxed), 0);
}
