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
        daemon
            .detector("good")
            .unwrap()
            .model()
            .unwrap()
            .current()
            .id(),
        a2,
        "the good file swapped"
    );
    assert_eq!(
        daemon
            .detector("bad")
            .unwrap()
            .model()
            .unwrap()
            .current()
            .id(),
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
    let h = daemon.detector("bad").unwrap().model().unwrap().history();
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

/// The issue's pair: an Isolation Forest and a rules detector on one topic. Each sees every
/// record once and publishes to its own topic, naming itself; the rules' anomalies name the
/// rules that fired; a record a rule cannot be evaluated on goes to the rules detector's dead
/// letters with the rule's name, while the forest dead-letters it for its own reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forest_and_rules_on_one_topic() {
    use anomalyd::detect::features::FeatureExtractor;
    use rdkafka::message::Headers;

    const N: u64 = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let model = support::seed_model(dir.path());
    let mut config = detectors_on_one_topic(dir.path(), &[("forest", &model)]).await;
    let input = config.generator.topic.clone();
    let mut rules = support::fresh_detector(&input, &model).await;
    rules.model = None;
    rules.rules = Some(BTreeMap::from([
        ("far_east".to_owned(), "data[0][0] > 3.0".into()),
        ("far_north".to_owned(), "data[0][1] >= 3.0".into()),
    ]));
    config.detectors.insert("limits".to_owned(), rules);
    let (out_forest, out_rules, dead_rules) = (
        config.detectors["forest"].output_topic.clone(),
        config.detectors["limits"].output_topic.clone(),
        config.detectors["limits"].dead_letter_topic.clone(),
    );
    support::produce_generated(&input, SEED, 0..N).await;
    // One record no rule can judge (and no forest either): no `data`.
    {
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let producer: FutureProducer = anomalyd::kafka::producer_config(&support::kafka_config())
            .create()
            .unwrap();
        producer
            .send(
                FutureRecord::to(&input)
                    .key("x")
                    .payload(r#"{"id":999999}"#),
                Duration::from_secs(10),
            )
            .await
            .expect("sent");
    }

    // What each flags offline.
    let flagged_forest = support::expected_anomalies(&model, SEED, 0.2, 0..N);
    let fx = FeatureExtractor::new(anomalyd::config::FeatureSpec::Field("data".into()), 2);
    let mut fired: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for id in 0..N {
        let v = anomalyd::source::generator::record(SEED, id, 0.2, std::time::SystemTime::now());
        let text = v.to_string();
        let r = anomalyd::record::Record::parse(Some(text.as_bytes())).unwrap();
        let mut x = Vec::new();
        fx.extract(&r, &mut x).unwrap();
        let names: Vec<&str> = [(x[0] > 3.0, "far_east"), (x[1] >= 3.0, "far_north")]
            .into_iter()
            .filter_map(|(hit, name)| hit.then_some(name))
            .collect();
        if !names.is_empty() {
            fired.insert(id, names);
        }
    }
    assert!(!fired.is_empty() && fired.len() < N as usize / 2);

    let daemon = Daemon::start(config).await.expect("daemon starts");
    let (mf, mr) = (
        daemon.detector("forest").unwrap().metrics().clone(),
        daemon.detector("limits").unwrap().metrics().clone(),
    );
    let both = support::wait_until(Duration::from_secs(180), || {
        mf.records_in.load(Relaxed) > N && mr.records_in.load(Relaxed) > N
    })
    .await;
    assert!(
        both,
        "scored: forest {} rules {}",
        mf.records_in.load(Relaxed),
        mr.records_in.load(Relaxed)
    );
    let got_forest = anomalies(&out_forest, flagged_forest.len(), Duration::from_secs(60)).await;
    let got_rules = anomalies(&out_rules, fired.len(), Duration::from_secs(60)).await;
    let letters =
        support::read_topic(&dead_rules, Duration::from_secs(30), |g| !g.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        mf.records_in.load(Relaxed),
        N + 1,
        "forest: every record once"
    );
    assert_eq!(
        mr.records_in.load(Relaxed),
        N + 1,
        "rules: every record once"
    );
    assert_eq!(mr.dead_letters()["rule_error"], 1);
    assert_eq!(mf.dead_letters()["missing_feature"], 1);
    assert!(daemon.detector("limits").unwrap().model().is_none());
    assert_eq!(
        daemon.detector("limits").unwrap().scorer().identity().kind,
        "rules"
    );
    // A reload reports the rules unchanged and reloads the model.
    let report = daemon.reload().await;
    assert!(report.all_ok(), "{report:?}");
    assert_eq!(report.detectors.len(), 2);
    daemon
        .stop(Duration::from_secs(30))
        .await
        .expect("clean stop");

    let ids: BTreeSet<u64> = got_forest
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), got_forest.len(), "forest: no duplicates");
    assert_eq!(ids, flagged_forest);
    assert!(
        got_forest
            .iter()
            .all(|v| v["anomalyd"]["detector"] == "forest")
    );

    let mut seen = BTreeSet::new();
    for v in &got_rules {
        let a = &v["anomalyd"];
        let id = v["id"].as_u64().unwrap();
        assert!(seen.insert(id), "rules: {id} twice");
        assert_eq!(a["detector"], "limits", "{v}");
        assert_eq!(a["model"]["kind"], "rules", "{v}");
        assert!(a["model"].get("path").is_none(), "{v}");
        assert_eq!(a["decision"], -1.0, "{v}");
        let names: Vec<&str> = a["explanation"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["rule"].as_str().unwrap())
            .collect();
        assert_eq!(names, fired[&id], "the rules that fired on {id}");
        assert_eq!(a["score"], fired[&id].len() as f64);
    }
    assert_eq!(
        seen,
        fired.keys().copied().collect(),
        "rules: what the rules flag"
    );

    assert_eq!(letters.len(), 1);
    let header = |name: &str| {
        letters[0]
            .headers()
            .unwrap()
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header("anomalyd-reason").as_deref(), Some("rule_error"));
    let error = header("anomalyd-error").unwrap();
    assert!(
        error.contains("rule `far_east`") && error.contains("data"),
        "{error}"
    );
}

/// Issue 12's "done when": detectors of every kind (an Isolation Forest, a k-means, a bisecting
/// k-means and rules) on one topic in one daemon, each publishing exactly the anomalies its
/// scorer gives offline, to its own topic, named, with one meaning of `decision`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_kind_runs_side_by_side() {
    use anomalyd::detect::kmeans::{KChoice, ThresholdRule};
    use anomalyd::detect::model::LoadedModel;
    use anomalyd::offline::train::TrainInput;
    use anomalyd::offline::train_kmeans::{ClusterKind, ClusterTrainOptions, train_clusters};

    const N: u64 = 4_000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let forest = support::seed_model(d);
    let cluster = |kind, file: &str| {
        let out = d.join(file);
        train_clusters(&ClusterTrainOptions {
            k: KChoice::Fixed(2),
            threshold: ThresholdRule::Quantile(0.98),
            ..ClusterTrainOptions::new(kind, TrainInput::Synthetic { seed: 42 }, out.clone())
        })
        .expect("train a cluster model");
        out
    };
    let kmeans = cluster(ClusterKind::KMeans, "k.kmeans");
    let bisecting = cluster(ClusterKind::BisectingKMeans, "b.kmeans");
    let mut config = detectors_on_one_topic(
        d,
        &[
            ("forest", &forest),
            ("kmeans", &kmeans),
            ("bisecting", &bisecting),
        ],
    )
    .await;
    let input = config.generator.topic.clone();
    let mut rules = support::fresh_detector(&input, &forest).await;
    rules.model = None;
    rules.rules = Some(BTreeMap::from([(
        "far".to_owned(),
        "data[0][0] > 3.0 || data[0][0] < -3.0".into(),
    )]));
    config.detectors.insert("rules".to_owned(), rules);
    support::produce_generated(&input, SEED, 0..N).await;

    // What each flags offline, by the model file or the rule itself.
    let mut expected: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for (name, path) in [
        ("forest", &forest),
        ("kmeans", &kmeans),
        ("bisecting", &bisecting),
    ] {
        let m = LoadedModel::load(path).unwrap();
        let set: BTreeSet<u64> = (0..N)
            .filter(|&id| {
                let v = anomalyd::source::generator::record(
                    SEED,
                    id,
                    0.2,
                    std::time::SystemTime::now(),
                );
                let x: Vec<f64> = v["data"][0]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_f64().unwrap())
                    .collect();
                m.decision(m.score(&x)) < 0.0
            })
            .collect();
        assert!(
            !set.is_empty() && set.len() < N as usize / 2,
            "{name}: {}",
            set.len()
        );
        expected.insert(name, set);
    }
    expected.insert(
        "rules",
        (0..N)
            .filter(|&id| {
                let v = anomalyd::source::generator::record(
                    SEED,
                    id,
                    0.2,
                    std::time::SystemTime::now(),
                );
                v["data"][0][0].as_f64().unwrap().abs() > 3.0
            })
            .collect(),
    );
    let outputs: BTreeMap<String, String> = config
        .detectors
        .iter()
        .map(|(n, d)| (n.clone(), d.output_topic.clone()))
        .collect();

    let daemon = Daemon::start(config).await.expect("daemon starts");
    let metrics: Vec<_> = daemon
        .detectors()
        .iter()
        .map(|d| (d.name().to_owned(), d.metrics().clone()))
        .collect();
    let all = support::wait_until(Duration::from_secs(180), || {
        metrics.iter().all(|(_, m)| m.records_in.load(Relaxed) >= N)
    })
    .await;
    assert!(
        all,
        "scored: {:?}",
        metrics
            .iter()
            .map(|(n, m)| (n, m.records_in.load(Relaxed)))
            .collect::<Vec<_>>()
    );
    let mut got = BTreeMap::new();
    for (name, topic) in &outputs {
        got.insert(
            name.clone(),
            anomalies(
                topic,
                expected[name.as_str()].len(),
                Duration::from_secs(60),
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (name, m) in &metrics {
        assert_eq!(m.records_in.load(Relaxed), N, "{name}: every record once");
    }
    let kinds: BTreeMap<String, String> = daemon
        .detectors()
        .iter()
        .map(|d| (d.name().to_owned(), d.scorer().identity().kind))
        .collect();
    daemon
        .stop(Duration::from_secs(30))
        .await
        .expect("clean stop");

    assert_eq!(kinds["forest"], "isolation_forest");
    assert_eq!(kinds["kmeans"], "kmeans");
    assert_eq!(kinds["bisecting"], "bisecting_kmeans");
    assert_eq!(kinds["rules"], "rules");
    for (name, anomalies) in &got {
        let ids: Vec<u64> = anomalies
            .iter()
            .map(|v| v["id"].as_u64().unwrap())
            .collect();
        let unique: BTreeSet<u64> = ids.iter().copied().collect();
        assert_eq!(ids.len(), unique.len(), "{name}: no duplicates");
        assert_eq!(
            unique,
            expected[name.as_str()],
            "{name}: what its scorer flags offline"
        );
        for v in anomalies {
            let a = &v["anomalyd"];
            assert_eq!(a["detector"], name.as_str(), "{v}");
            assert_eq!(a["model"]["kind"], kinds[name].as_str(), "{v}");
            assert!(
                a["decision"].as_f64().unwrap() < 0.0,
                "negative means anomalous: {v}"
            );
        }
    }
}
