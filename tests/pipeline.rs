//! The streaming pipeline against the real broker: every record scored, anomalies equal to
//! offline scoring, bad records in the dead-letter topic, partitions shared between instances.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anomalyd::daemon::Daemon;
use anomalyd::sinks::dead_letter;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

const SEED: u64 = 42;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clean_run_scores_every_record_once_and_matches_offline_scoring() {
    const N: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let model = support::seed_model(dir.path());
    let mut config = support::pipeline_config(dir.path(), &model).await;
    support::generate(&mut config, N, 0.0, SEED);
    let (output, input) = (
        support::det(&config).output_topic.clone(),
        support::det(&config).input_topic.clone(),
    );

    let daemon = Daemon::start(config).await.expect("daemon starts");
    let m = daemon.metrics().clone();
    let scored =
        support::wait_until(Duration::from_secs(180), || m.records_in.load(Relaxed) >= N).await;
    assert!(scored, "only {} of {N} scored", m.records_in.load(Relaxed));
    let expected = support::expected_anomalies(&model, SEED, 0.2, 0..N);
    let got = support::read_topic(&output, Duration::from_secs(60), |got| {
        got.len() >= expected.len()
    })
    .await;
    // Give a duplicate, if any, the chance to show up before judging.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        m.records_in.load(Relaxed),
        N,
        "each record scored exactly once"
    );
    assert_eq!(m.generated.load(Relaxed), N);
    assert_eq!(m.dead_letters().values().sum::<u64>(), 0);
    daemon
        .stop(Duration::from_secs(30))
        .await
        .expect("clean stop");

    let ids = support::ids(&got);
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "no anomaly published twice");
    assert_eq!(
        unique, expected,
        "the stream flags what offline scoring flags"
    );
    assert!(
        expected.len() > N as usize / 10,
        "{} anomalies",
        expected.len()
    );

    // Enrichment, under "anomalyd": score, decision, model identity, source position, time,
    // explanation; the source record's own fields where they were.
    let model_id = anomalyd::detect::model::Model::load(&model)
        .unwrap()
        .id()
        .to_owned();
    for m in &got {
        let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        let a = &v["anomalyd"];
        assert!(a["score"].as_f64().unwrap() < 0.0);
        assert!(a["decision"].as_f64().unwrap() < 0.0);
        assert_eq!(a["model"]["id"], model_id.as_str());
        assert_eq!(a["model"]["kind"], "isolation_forest");
        assert_eq!(a["source"]["topic"], input.as_str());
        assert_eq!(a["layout"], "inline");
        assert!(v["data"][0].is_array() && v["current_time"].is_string());
        assert!(a["detected_at"].as_str().unwrap().ends_with('Z'));
        assert!(a["explanation"].is_array());
        assert_eq!(
            m.key().unwrap(),
            v["id"].to_string().as_bytes(),
            "keyed like its source"
        );
    }
    // Every anomaly says why: by the training ranges, or else by attribution (shares).
    let (mut ranged, mut attributed) = (0, 0);
    for m in &got {
        let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        let entries = v["anomalyd"]["explanation"].as_array().unwrap();
        assert!(!entries.is_empty(), "an anomaly without a reason: {v}");
        if entries
            .iter()
            .all(|e| e["low"].is_f64() && e["high"].is_f64())
        {
            ranged += 1;
        } else {
            assert!(entries.iter().all(|e| e["share"].is_f64()), "{v}");
            attributed += 1;
        }
    }
    assert!(
        ranged > 0 && attributed > 0,
        "{ranged} by range, {attributed} by share"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_records_go_to_dead_letters_and_the_stream_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let model = support::seed_model(dir.path());
    let config = support::pipeline_config(dir.path(), &model).await;
    let (input, dlq) = (
        support::det(&config).input_topic.clone(),
        support::det(&config).dead_letter_topic.clone(),
    );
    let daemon = Daemon::start(config).await.expect("daemon starts");

    let bad: [(&str, &[u8]); 7] = [
        ("not_json", b"this is not json"),
        ("not_json", b"{\"data\": [[1, 2]"),
        ("missing_feature", br#"{"id": 1, "other": [[1, 2]]}"#),
        ("not_a_number", br#"{"data": [[1, "two"]]}"#),
        ("not_a_number", br#"{"data": [[1, null]]}"#),
        ("not_finite", br#"{"data": [[1e999, 2]]}"#),
        ("wrong_feature_count", br#"{"data": [[1, 2, 3]]}"#),
    ];
    // Good records around the bad ones, all on one key so they share a partition.
    let producer: FutureProducer = anomalyd::kafka::producer_config(&support::kafka_config())
        .create()
        .unwrap();
    let mut sent = 0u64;
    for (i, (_, payload)) in bad.iter().enumerate() {
        let good = format!(r#"{{"id": {i}, "data": [[2.0, 2.0]]}}"#);
        for p in [good.as_bytes(), payload] {
            producer
                .send(
                    FutureRecord::to(&input).key("k").payload(p),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
            sent += 1;
        }
    }
    let m = daemon.metrics().clone();
    assert!(
        support::wait_until(Duration::from_secs(60), || m.records_in.load(Relaxed)
            >= sent)
        .await,
        "scored {} of {sent}",
        m.records_in.load(Relaxed)
    );
    let letters =
        support::read_topic(&dlq, Duration::from_secs(30), |g| g.len() >= bad.len()).await;
    daemon
        .stop(Duration::from_secs(30))
        .await
        .expect("clean stop");

    assert_eq!(m.records_in.load(Relaxed), sent);
    assert_eq!(letters.len(), bad.len());
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    for (letter, (reason, payload)) in letters.iter().zip(bad.iter()) {
        let headers: BTreeMap<String, String> = letter
            .headers()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    String::from_utf8_lossy(h.value.unwrap()).into_owned(),
                )
            })
            .collect();
        assert_eq!(headers[dead_letter::REASON], *reason, "{headers:?}");
        assert_eq!(letter.payload().unwrap(), *payload, "sent unchanged");
        assert_eq!(letter.key().unwrap(), b"k");
        assert_eq!(headers[dead_letter::SOURCE_TOPIC], input);
        assert!(headers[dead_letter::SOURCE_OFFSET].parse::<i64>().is_ok());
        assert!(!headers[dead_letter::ERROR].is_empty());
        *by_reason.entry(reason.to_string()).or_default() += 1;
    }
    let counted: BTreeMap<String, usize> = m
        .dead_letters()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r.to_owned(), n as usize))
        .collect();
    assert_eq!(counted, by_reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_in_one_group_share_partitions_and_take_over() {
    const N: u64 = 6_000;
    let dir = tempfile::tempdir().unwrap();
    let model = support::seed_model(dir.path());
    let config = support::pipeline_config(dir.path(), &model).await;
    let (input, output) = (
        support::det(&config).input_topic.clone(),
        support::det(&config).output_topic.clone(),
    );

    let a = Daemon::start(config.clone()).await.expect("a starts");
    let parts = |d: &Daemon| -> BTreeSet<i32> {
        d.detectors()[0]
            .assignment()
            .partitions()
            .iter()
            .map(|p| p.1)
            .collect()
    };
    assert!(
        support::wait_until(Duration::from_secs(60), || parts(&a).len() == 3).await,
        "one instance takes all 3 partitions: {:?}",
        parts(&a)
    );
    support::produce_generated(&input, SEED, 0..N / 3).await;

    // Each instance has its own control socket (a live one is never taken over).
    let mut config_b = config.clone();
    config_b.control.socket = dir.path().join("b.sock");
    let b = Daemon::start(config_b).await.expect("b starts");
    let shared = support::wait_until(Duration::from_secs(60), || {
        let (pa, pb) = (parts(&a), parts(&b));
        !pa.is_empty() && !pb.is_empty() && pa.is_disjoint(&pb) && pa.len() + pb.len() == 3
    })
    .await;
    assert!(shared, "a {:?} b {:?}", parts(&a), parts(&b));
    support::produce_generated(&input, SEED, N / 3..2 * N / 3).await;
    let (ma, mb) = (a.metrics().clone(), b.metrics().clone());
    assert!(
        support::wait_until(Duration::from_secs(60), || {
            ma.records_in.load(Relaxed) + mb.records_in.load(Relaxed) >= 2 * N / 3
        })
        .await
    );
    assert!(mb.records_in.load(Relaxed) > 0, "b did part of the work");

    b.stop(Duration::from_secs(30))
        .await
        .expect("b stops cleanly");
    assert!(
        support::wait_until(Duration::from_secs(60), || parts(&a).len() == 3).await,
        "a takes the partitions back: {:?}",
        parts(&a)
    );
    support::produce_generated(&input, SEED, 2 * N / 3..N).await;

    let expected = support::expected_anomalies(&model, SEED, 0.2, 0..N);
    let got =
        support::read_topic(&output, Duration::from_secs(90), support::covers(&expected)).await;
    a.stop(Duration::from_secs(30))
        .await
        .expect("a stops cleanly");
    let got: BTreeSet<u64> = support::ids(&got).into_iter().collect();
    assert_eq!(got, expected, "nothing lost across the hand-overs");
}
