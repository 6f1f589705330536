//! Operations against the real broker: hot model reload mid-stream, the control socket's
//! endpoints and permissions, `anomalyd health`'s Nagios exit codes, and a reload held to the
//! start's feature check.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anomalyd::control::client;
use anomalyd::daemon::Daemon;
use anomalyd::offline::train::{TrainOptions, train};
use rdkafka::message::Message;
use serde_json::Value;

const SEED: u64 = 11;

fn train_to(out: &Path, trees: usize, seed: u64) -> String {
    train(&TrainOptions {
        trees: Some(trees),
        seed: Some(seed),
        ..TrainOptions::synthetic(42, out.to_owned())
    })
    .expect("train")
    .model_id
}

fn health(socket: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_anomalyd"))
        .args(["health", "--socket"])
        .arg(socket)
        .output()
        .expect("run anomalyd health");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

async fn get(socket: &Path, method: &str, path: &str) -> (u16, String) {
    client::request(socket, method, path, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_mid_stream_loses_nothing_and_scores_nothing_twice() {
    const N: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.iforest");
    let (a_path, b_path) = (dir.path().join("a.iforest"), dir.path().join("b.iforest"));
    let a = train_to(&a_path, 50, 1);
    let b = train_to(&b_path, 60, 2);
    assert_ne!(a, b);
    std::fs::copy(&a_path, &path).unwrap();
    let mut config = support::pipeline_config(dir.path(), &path).await;
    support::generate(&mut config, N, 4000.0, SEED);
    let (input, output) = (
        support::det(&config).input_topic.clone(),
        support::det(&config).output_topic.clone(),
    );

    let daemon = Daemon::start(config).await.expect("start");
    let m = daemon.metrics().clone();
    assert!(
        support::wait_until(Duration::from_secs(60), || m.records_in.load(Relaxed)
            > N / 4)
        .await
    );
    // Replace the file the way an operator should (atomically), then reload.
    std::fs::copy(&b_path, dir.path().join("tmp")).unwrap();
    std::fs::rename(dir.path().join("tmp"), &path).unwrap();
    let report = daemon.reload().await;
    assert!(report.all_ok(), "good model accepted: {report:?}");
    assert_eq!(report.detectors[0].model.as_ref().unwrap().id, b);
    let at_reload = m.records_in.load(Relaxed);
    assert!(
        at_reload < N,
        "the reload happened mid-stream ({at_reload} of {N} scored)"
    );

    // A corrupt file is refused; B keeps serving and scoring goes on.
    std::fs::write(&path, b"not a model").unwrap();
    let report = daemon.reload().await;
    assert!(!report.all_ok(), "corrupt model refused");
    let err = report.errors().join("; ");
    assert!(err.contains("live.iforest"), "{err}");
    assert_eq!(daemon.detectors()[0].model().unwrap().current().id(), b);
    let status: Value = serde_json::from_str(
        &get(&daemon.config().control.socket, "GET", "/status")
            .await
            .1,
    )
    .unwrap();
    assert_eq!(status["detectors"][0]["model"]["id"], b.as_str());
    assert!(
        status["detectors"][0]["model"]["last_error"]
            .as_str()
            .unwrap()
            .contains("live.iforest")
    );

    assert!(
        support::wait_until(Duration::from_secs(120), || m.records_in.load(Relaxed) >= N).await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        m.records_in.load(Relaxed),
        N,
        "every record scored exactly once"
    );
    daemon
        .stop(Duration::from_secs(30))
        .await
        .expect("clean stop");

    // Where each record sits, and which model each published anomaly names.
    let records =
        support::read_topic(&input, Duration::from_secs(60), |g| g.len() as u64 >= N).await;
    let position: BTreeMap<u64, (i32, i64)> = support::ids(&records)
        .into_iter()
        .zip(records.iter().map(|r| (r.partition(), r.offset())))
        .collect();
    let flagged_a = support::expected_anomalies(&a_path, SEED, 0.2, 0..N);
    let flagged_b = support::expected_anomalies(&b_path, SEED, 0.2, 0..N);
    let anomalies = support::read_topic(&output, Duration::from_secs(10), |_| false).await;
    let mut named: BTreeMap<u64, String> = BTreeMap::new();
    let (mut last_a, mut first_b) = (BTreeMap::new(), BTreeMap::new());
    for msg in &anomalies {
        let v: Value = serde_json::from_slice(msg.payload().unwrap()).unwrap();
        let id = v["id"].as_u64().unwrap();
        let model = v["anomalyd"]["model"]["id"].as_str().unwrap().to_owned();
        let (p, o) = position[&id];
        if model == a {
            let e = last_a.entry(p).or_insert(o);
            *e = (*e).max(o);
        } else {
            assert_eq!(model, b, "only A and B ever scored");
            let e = first_b.entry(p).or_insert(o);
            *e = (*e).min(o);
        }
        assert!(
            named.insert(id, model).is_none(),
            "anomaly {id} published twice"
        );
    }
    assert!(
        !last_a.is_empty() && !first_b.is_empty(),
        "anomalies name both models"
    );
    for (id, &(p, o)) in &position {
        let (la, fb) = (
            last_a.get(&p).copied().unwrap_or(-1),
            first_b.get(&p).copied().unwrap_or(i64::MAX),
        );
        assert!(la < fb, "partition {p}: model A after model B");
        let published = named.get(id);
        if o <= la {
            assert_eq!(
                published.is_some(),
                flagged_a.contains(id),
                "record {id} scored by A"
            );
        } else if o >= fb {
            assert_eq!(
                published.is_some(),
                flagged_b.contains(id),
                "record {id} scored by B"
            );
        } else if let Some(model) = published {
            let flagged = if *model == a { &flagged_a } else { &flagged_b };
            assert!(
                flagged.contains(id),
                "record {id} published by a model that does not flag it"
            );
        } else {
            assert!(
                !flagged_a.contains(id) || !flagged_b.contains(id),
                "record {id} lost at the switch"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_socket_endpoints_mode_and_health_codes() {
    let dir = tempfile::tempdir().unwrap();
    let model = support::seed_model(dir.path());
    let config = support::pipeline_config(dir.path(), &model).await;
    let socket = config.control.socket.clone();

    assert_eq!(health(&socket).0, 3, "UNKNOWN without a daemon");

    // A daemon whose broker does not answer never joins its group: CRITICAL.
    let mut lost = config.clone();
    lost.kafka.brokers = "127.0.0.1:1".into();
    lost.control.socket = dir.path().join("lost.sock");
    let unjoined = Daemon::start(lost).await.expect("start without a broker");
    let (code, line) = health(&dir.path().join("lost.sock"));
    assert_eq!(code, 2, "{line}");
    assert!(line.starts_with("CRITICAL anomalyd"), "{line}");
    let (status, body) = get(&dir.path().join("lost.sock"), "GET", "/ready").await;
    assert_eq!(status, 503);
    assert!(body.contains("no partitions assigned yet"), "{body}");
    unjoined.stop(Duration::from_secs(10)).await.ok();

    let daemon = Daemon::start(config).await.expect("start");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    assert!(
        support::wait_until(Duration::from_secs(30), || daemon.not_ready().is_empty()).await,
        "{:?}",
        daemon.not_ready()
    );

    assert_eq!(get(&socket, "GET", "/live").await, (200, "live\n".into()));
    assert_eq!(get(&socket, "GET", "/ready").await, (200, "ready\n".into()));
    // Lag is refreshed in the background every few seconds.
    let mut body = String::new();
    for _ in 0..100 {
        let (code, b) = get(&socket, "GET", "/status").await;
        assert_eq!(code, 200);
        body = b;
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["detectors"][0]["partitions"][0]["high_watermark"].is_i64() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["ready"], true);
    let det = &status["detectors"][0];
    assert_eq!(det["name"], support::DETECTOR);
    assert_eq!(det["partitions"].as_array().unwrap().len(), 3);
    assert!(det["partitions"][0]["lag"].is_i64(), "{body}");
    let names: BTreeSet<&str> = status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains("detector:transactions") && names.contains("control"),
        "{names:?}"
    );
    assert_eq!(
        det["model"]["id"],
        daemon.detectors()[0].model().unwrap().current().id()
    );

    let (code, metrics) = get(&socket, "GET", "/metrics").await;
    assert_eq!(code, 200);
    for family in [
        "anomalyd_records_total{detector=\"transactions\"} ",
        "anomalyd_anomalies_total{detector=\"transactions\"} ",
        "anomalyd_dead_letters_total{detector=\"transactions\",reason=\"not_json\"} ",
        "anomalyd_score_seconds_bucket{le=\"+Inf\"} ",
        "anomalyd_task_restarts_total{task=\"detector:transactions\"} ",
        "anomalyd_model_reloads_total{detector=\"transactions\"} ",
        "anomalyd_partition_lag{detector=\"transactions\",topic=",
        "anomalyd_model_info{detector=\"transactions\",id=",
        "anomalyd_ready 1",
    ] {
        assert!(
            metrics.contains(family),
            "{family} missing from:\n{metrics}"
        );
    }
    assert_eq!(get(&socket, "GET", "/nope").await.0, 404);
    assert_eq!(get(&socket, "POST", "/status").await.0, 405);

    let (code, line) = health(&socket);
    assert_eq!(code, 0, "{line}");
    assert!(
        line.starts_with(&format!("OK anomalyd {} up ", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    assert!(line.contains("partitions=3"), "{line}");

    // POST /reload: the same good file is accepted...
    let (code, body) = get(&socket, "POST", "/reload").await;
    assert_eq!(code, 200, "{body}");
    // ...a bad one is refused with 422, and health turns WARNING until a good reload.
    let good = std::fs::read(&model).unwrap();
    std::fs::write(&model, &good[..good.len() / 2]).unwrap();
    let (code, body) = get(&socket, "POST", "/reload").await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("seed.iforest"), "{body}");
    let (code, line) = health(&socket);
    assert_eq!(code, 1, "{line}");
    assert!(
        line.contains("detector transactions: last reload refused"),
        "{line}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_anomalyd"))
        .args(["ctl", "reload", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "ctl reload fails on a refused model"
    );
    std::fs::write(&model, &good).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_anomalyd"))
        .args(["ctl", "reload", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(health(&socket).0, 0);

    // A live socket is not taken over by a second daemon...
    let second = Daemon::start(daemon.config().clone()).await;
    assert!(matches!(
        second,
        Err(anomalyd::daemon::DaemonError::Control(_))
    ));
    daemon
        .stop(Duration::from_secs(30))
        .await
        .expect("clean stop");
    assert!(!socket.exists(), "the socket is removed at stop");
    // ...but a stale one (no process behind it) is replaced.
    let _stale = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    drop(_stale);
    let third = Daemon::start(daemon.config().clone())
        .await
        .expect("stale socket replaced");
    third
        .stop(Duration::from_secs(30))
        .await
        .expect("clean stop");
}

#[path = "fake_slack/mod.rs"]
mod fake_slack;

/// Slack failing is a WARNING, never a readiness problem: Kafka work does not wait on Slack.
/// Once Slack accepts again, the restarted notifier sends what was held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slack_failing_is_a_warning_and_the_detector_stays_ready() {
    use anomalyd::config::SlackMode;
    use fake_slack::{FakeSlack, Reply};

    let dir = tempfile::tempdir().unwrap();
    let model = support::seed_model(dir.path());
    let mut config = support::pipeline_config(dir.path(), &model).await;
    let server = FakeSlack::start().await;
    server.set_default(Reply::SlackError("invalid_auth"));
    let token = dir.path().join("token");
    std::fs::write(&token, "xoxb-test-token-not-to-be-shown").unwrap();
    config.slack.mode = SlackMode::Bot;
    config.slack.api_base = server.api_base();
    config.slack.token_file = Some(token);
    config.slack.group_wait_s = 0;
    config.slack.group_interval_s = 1;
    config.slack.request_timeout_s = 2;
    let socket = config.control.socket.clone();
    let input = support::det(&config).input_topic.clone();

    let daemon = Daemon::start(config).await.expect("start");
    support::produce_generated(&input, SEED, 0..200).await;
    let m = daemon.slack_metrics().clone();
    assert!(
        support::wait_until(Duration::from_secs(60), || m.is_failing()).await,
        "Slack's refusal is noticed"
    );
    let (code, line) = health(&socket);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("slack=failing"), "{line}");
    assert!(!line.contains("xoxb-"), "no secret in health output");
    assert_eq!(
        get(&socket, "GET", "/ready").await.0,
        200,
        "the detector stays ready"
    );
    let (_, status) = get(&socket, "GET", "/status").await;
    assert!(!status.contains("xoxb-"), "no secret in /status");

    server.set_default(Reply::Ok);
    assert!(
        support::wait_until(Duration::from_secs(60), || m.alerts_sent.load(Relaxed) > 0
            && !m.is_failing())
        .await,
        "the restarted notifier sends once Slack accepts"
    );
    let (code, line) = health(&socket);
    assert_eq!(code, 0, "{line}");
    assert!(line.ends_with("slack=ok"), "{line}");
    let expected = support::expected_anomalies(&model, SEED, 0.2, 0..200).len() as u64;
    assert!(
        support::wait_until(Duration::from_secs(60), || m
            .anomalies_alerted
            .load(Relaxed)
            >= expected)
        .await,
        "every anomaly alerted: {} of {expected}",
        m.anomalies_alerted.load(Relaxed)
    );
    daemon
        .stop(Duration::from_secs(30))
        .await
        .expect("clean stop");
}

/// Issue 11: features are matched to the model by name, and a reload is held to the same
/// check as the start: a retrained model whose columns came out in another order is refused
/// and the old model keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reloaded_model_with_features_in_another_order_is_refused() {
    use anomalyd::config::FeatureSpec;
    use anomalyd::offline::train::TrainInput;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.iforest");
    let serving = train_to(&path, 5, 1);
    let mut config = support::pipeline_config(dir.path(), &path).await;
    support::det_mut(&mut config).features =
        FeatureSpec::Pointers(vec!["/x0".into(), "/x1".into()]);
    let daemon = Daemon::start(config).await.expect("start");

    let csv = dir.path().join("swapped.csv");
    let rows: String = (0..200)
        .map(|i| format!("{},{}\n", i % 7, i % 11))
        .collect();
    std::fs::write(&csv, format!("x1,x0\n{rows}")).unwrap();
    train(&TrainOptions {
        input: TrainInput::Csv {
            path: csv,
            features: None,
            label: "label".into(),
        },
        trees: Some(5),
        ..TrainOptions::synthetic(0, path.clone())
    })
    .expect("train the swapped model");
    let report = daemon.reload().await;
    assert!(!report.all_ok(), "swapped features refused");
    let err = report.errors().join("; ");
    assert!(
        err.contains("detectors.transactions.features")
            && err.contains("where the model expects `x1`"),
        "{err}"
    );
    assert_eq!(
        daemon.detectors()[0].model().unwrap().current().id(),
        serving
    );
    assert_eq!(
        daemon.detectors()[0]
            .model()
            .unwrap()
            .history()
            .failed_reloads,
        1
    );
    daemon.stop(Duration::from_secs(10)).await.expect("stop");
}
