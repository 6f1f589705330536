//! Several named detectors in one daemon, against the real broker (issue 12): two detectors on
//! one topic each see every record exactly once and publish to their own topics, naming
//! themselves; a reload with one good and one bad file swaps the good one, refuses the bad
//! one, and loses nothing.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anomalyd::config::{Config, DetectorConfig};
use anomalyd::control::client;
use anomalyd::daemon::Daemon;
use anomalyd::offline::train::{TrainOptions, train};
use rdkafka::message::{Message, OwnedMessage};
use serde_json::Value;

const SEED: u64 = 21;

/// Trains a model on the synthetic set into `out`; returns its id.
fn train_to(out: &Path, trees: usize, seed: u64) -> String {
    train(&TrainOptions {
        trees: Some(trees),
        seed: Some(seed),
        ..TrainOptions::synthetic(42, out.to_owned())
    })
    .expect("train")
    .model_id
}

/// A configuration with the detectors `models` (name, model file) all reading one fresh
/// input topic (3 partitions), each writing fresh topics of its own.
async fn detectors_on_one_topic(dir: &Path, models: &[(&str, &Path)]) -> Config {
    let mut config = Config {
        kafka: support::kafka_config(),
        ..Config::default()
    };
    config.kafka.group_id = support::unique("detectors");
    config.control.socket = dir.join("anomalyd.sock");
    let input = support::unique("transactions");
    support::create_topic(&input, 3).await;
    for (name, model) in models {
        let d: DetectorConfig = support::fresh_detector(&input, model).await;
        config.detectors.insert((*name).to_owned(), d);
    }
    config.generator.topic = input;
    config
}

/// Every anomaly on `topic` (read until `expected` are there, or `timeout`).
async fn anomalies(topic: &str, expected: usize, timeout: Duration) -> Vec<Value> {
    let got: Vec<OwnedMessage> =
        support::read_topic(topic, timeout, |got| got.len() >= expected).await;
    got.iter()
        .map(|m| serde_json::from_slice(m.payload().expect("payload")).expect("json"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_detectors_on_one_topic_each_see_every_record_once() {
    const N: u64 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let (a_path, b_path) = (dir.path().join("a.iforest"), dir.path().join("b.iforest"));
    let a_id = train_to(&a_path, 100, 1);
    let b_id = train_to(&b_path, 30, 2);
    assert_ne!(a_id, b_id);
    let config =
        detectors_on_one_topic(dir.path(), &[("forest_a", &a_path), ("forest_b", &b_path)]).await;
    let (input, out_a, out_b) = (
        config.generator.topic.clone(),
        config.detectors["forest_a"].output_topic.clone(),
        config.detectors["forest_b"].output_topic.clone(),
    );
    assert_ne!(out_a, out_b);
    support::produce_generated(&input, SEED, 0..N).await;
    // Two models that disagree on some records, so that each topic's content tells which
    // detector wrote it.
    let flagged_a = support::expected_anomalies(&a_path, SEED, 0.2, 0..N);
    let flagged_b = support::expected_anomalies(&b_path, SEED, 0.2, 0..N);
    assert_ne!(flagged_a, flagged_b);

    let daemon = Daemon::start(config).await.expect("daemon starts");
    let (ma, mb) = (
        daemon.detector("forest_a").unwrap().metrics().clone(),
        daemon.detector("forest_b").unwrap().metrics().clone(),
    );
    let total = daemon.metrics().clone();
    let both = support::wait_until(Duration::from_secs(180), || {
        ma.records_in.load(Relaxed) >= N && mb.records_in.load(Relaxed) >= N
    })
    .await;
    assert!(
        both,
        "scored: a {} b {} of {N}",
        ma.records_in.load(Relaxed),
        mb.records_in.load(Relaxed)
    );
    let got_a = anomalies(&out_a, flagged_a.len(), Duration::from_secs(60)).await;
    let got_b = anomalies(&out_b, flagged_b.len(), Duration::from_secs(60)).await;
    // Give a duplicate, if any, the chance to show up before judging.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ma.records_in.load(Relaxed), N, "a scored each record once");
    assert_eq!(mb.records_in.load(Relaxed), N, "b scored each record once");
    assert_eq!(total.records_in.load(Relaxed), 2 * N);

    // Status and metrics per detector, while running.
    let (code, body) = client::request(
        &daemon.config().control.socket,
        "GET",
        "/status",
        Duration::from_secs(10),
    )
    .await
    .expect("status");
    assert_eq!(code, 200);
    let status: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = status["detectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["forest_a", "forest_b"]);
    for (i, (id, name)) in [(&a_id, "forest_a"), (&b_id, "forest_b")]
        .into_iter()
        .enumerate()
    {
        let d = &status["detectors"][i];
        assert_eq!(d["model"]["id"], id.as_str(), "{body}");
        assert_eq!(d["records"], N, "{body}");
        assert_eq!(d["input_topic"], input.as_str());
        assert!(
            d["group_id"]
                .as_str()
                .unwrap()
                .ends_with(&format!("-{name}")),
            "{body}"
        );
    }
    let (_, metrics) = client::request(
        &daemon.config().control.socket,
        "GET",
        "/metrics",
        Duration::from_secs(10),
    )
    .await
    .expect("metrics");
    for line in [
        format!("anomalyd_records_total{{detector=\"forest_a\"}} {N}"),
        format!("anomalyd_records_total{{detector=\"forest_b\"}} {N}"),
        format!("anomalyd_model_info{{detector=\"forest_b\",id=\"{b_id}\""),
    ] {
        assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");
    }
    daemon
        .stop(Duration::from_secs(30))
        .await
        .expect("clean stop");

    for (name, id, got, expected) in [
        ("forest_a", &a_id, &got_a, &flagged_a),
        ("forest_b", &b_id, &got_b, &flagged_b),
    ] {
        let ids: Vec<u64> = got.iter().map(|v| v["id"].as_u64().unwrap()).collect();
        let unique: BTreeSet<u64> = ids.iter().copied().collect();
        assert_eq!(
            ids.len(),
            unique.len(),
            "{name}: no anomaly published twice"
        );
        assert_eq!(
            &unique, expected,
            "{name}: its topic holds what its model flags"
        );
        for v in got {
            assert_eq!(v["anomalyd"]["detector"], name, "{v}");
            assert_eq!(v["anomalyd"]["model"]["id"], id.as_str(), "{v}");
            assert_eq!(v["anomalyd"]["model"]["kind"], "isolation_forest", "{v}");
            assert!(
                v["anomalyd"]["decision"].as_f64().unwrap() < 0.0,
                "negative means anomalous"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_with_one_good_and_one_bad_file_swaps_one_and_loses_nothing() {
    const N: u64 = 16_000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (good_path, bad_path) = (d.join("good.iforest"), d.join("bad.iforest"));
    let (a1, a2, b1) = (
        train_to(&d.join("a1.iforest"), 50, 1),
        train_to(&d.join("a2.iforest"), 60, 2),
        train_to(&d.join("b1.iforest"), 40, 3),
    );
    std::fs::copy(d.join("a1.iforest"), &good_path).unwrap();
    std::fs::copy(d.join("b1.iforest"), &bad_path).unwrap();
    let mut config = detectors_on_one_topic(d, &[("good", &good_path), ("bad", &bad_path)]).await;
    support::generate(&mut config, N, 4000.0, SEED);
    let (out_good, out_bad) = (
        config.detectors["good"].output_topic.clone(),
        config.detectors["bad"].output_topic.clone(),
    );
    let socket = config.control.socket.clone();

    let daemon = Daemon::start(config).await.expect("start");
    let (mg, mb) = (
        daemon.detector("good").unwrap().metrics().clone(),
        daemon.detector("bad").unwrap().metrics().clone(),
    );
    assert!(
        support::wait_until(Duration::from_secs(60), || mg.records_in.load(Relaxed)
            > N / 4
            && mb.records_in.load(Relaxed) > N / 4)
        .await
    );
    // The good file is replaced atomically by another sound model; the bad one is damaged.
    std::fs::copy(d.join("a2.iforest"), d.join("tmp")).unwrap();
    std::fs::rename(d.join("tmp"), &good_path).unwrap();
    let bytes = std::fs::read(&bad_path).unwrap();
    std::fs::write(&bad_path, &bytes[..bytes.len() / 2]).unwrap();

    let (code, body) = client::request(&socket, "POST", "/reload", Duration::from_secs(30))
        .await
        .expect("reload");
    assert_eq!(code, 422, "one file refused: {body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["reloaded"], false);
    let results: BTreeMap<&str, &Value> = answer["detectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["detector"].as_str().unwrap(), r))
        .collect();
    assert_eq!(results.len(), 2, "every detector's result: {body}");
    assert_eq!(results["good"]["model"]["id"], a2.as_str(), "{body}");
    assert!(results["good"]["error"].is_null(), "{body}");
    assert!(results["bad"]["model"].is_null(), "{body}");
    assert!(
        results["bad"]["error"]
            .as_str()
            .unwrap()
            .contains("bad.iforest"),
        "{body}"
    );
    assert_eq!(
        daemon.detector("good").unwrap().model().current().id(),
        a2,
        "the good file swapped"
    );
    assert_eq!(
        daemon.detector("bad").unwrap().model().current().id(),
        b1,
        "the bad file refused: the old model keeps serving"
    );
    let at_reload = mg.records_in.load(Relaxed);
    assert!(at_reload < N, "mid-stream ({at_reload} of {N})");

    assert!(
        support::wait_until(Duration::from_secs(120), || mg.records_in.load(Relaxed)
            >= N
            && mb.records_in.load(Relaxed) >= N)
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mg.records_in.load(Relaxed), N, "good: every record once");
    assert_eq!(mb.records_in.load(Relaxed), N, "bad: every record once");
    let h = daemon.detector("bad").unwrap().model().history();
    assert_eq!((h.reloads, h.failed_reloads), (0, 1));
    assert!(h.last_error.is_some());
    daemon
        .stop(Duration::from_secs(30))
        .await
        .expect("clean stop");

    // Nothing lost: each anomaly names the model that scored it, which flags it offline; the
    // records both of good's models flag are all there; bad's are exactly what b1 flags.
    let flagged: BTreeMap<&str, BTreeSet<u64>> = [
        (a1.as_str(), "a1.iforest"),
        (a2.as_str(), "a2.iforest"),
        (b1.as_str(), "b1.iforest"),
    ]
    .into_iter()
    .map(|(id, file)| {
        (
            id,
            support::expected_anomalies(&d.join(file), SEED, 0.2, 0..N),
        )
    })
    .collect();
    let got_good = anomalies(&out_good, usize::MAX, Duration::from_secs(10)).await;
    let got_bad = anomalies(
        &out_bad,
        flagged[b1.as_str()].len(),
        Duration::from_secs(60),
    )
    .await;
    let mut seen_good = BTreeSet::new();
    for v in &got_good {
        let id = v["id"].as_u64().unwrap();
        let model = v["anomalyd"]["model"]["id"].as_str().unwrap();
        assert_eq!(v["anomalyd"]["detector"], "good");
        assert!(
            model == a1 || model == a2,
            "only a1 and a2 scored for good: {v}"
        );
        assert!(flagged[model].contains(&id), "{model} flags {id} offline");
        assert!(seen_good.insert(id), "{id} published twice");
    }
    let both: BTreeSet<u64> = flagged[a1.as_str()]
        .intersection(&flagged[a2.as_str()])
        .copied()
        .collect();
    assert!(
        both.is_subset(&seen_good),
        "{} records both models flag are missing",
        both.difference(&seen_good).count()
    );
    let ids: Vec<u64> = got_bad.iter().map(|v| v["id"].as_u64().unwrap()).collect();
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "bad: no anomaly twice");
    assert_eq!(unique, flagged[b1.as_str()], "bad: b1 scored everything");
    assert!(
        got_bad
            .iter()
            .all(|v| v["anomalyd"]["detector"] == "bad"
                && v["anomalyd"]["model"]["id"] == b1.as_str())
    );
}
