//! The sensors job against the real broker: a daemon with `[generator] profile = "sensors"`
//! writes `count` readings keyed by sensor_id, in the documented shape, and a rules detector with
//! the original's thresholds flags exactly the injected faults (`label_faults` names them);
//! `examples/sensors.toml` passes `check-config`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anomalyd::daemon::Daemon;
use anomalyd::source::generator::sensors;
use rdkafka::message::Message;
use serde_json::Value;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `examples/sensors.toml` checks, and lists the topics the job needs.
#[test]
fn the_example_sensors_configuration_checks() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sensors.toml");
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_anomalyd"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ANOMALYD_")) {
            cmd.env_remove(k);
        }
        cmd.args(["check-config", "--config", config.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&[]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert_eq!(text(&o.stderr), "", "no warning");
    let topics = text(&run(&["--topics"]).stdout);
    let topics: BTreeSet<&str> = topics.lines().collect();
    assert_eq!(
        topics,
        BTreeSet::from(["sensor-data", "sensor-anomalies", "sensor-data.dead-letter"])
    );
    // The generator's keys are the sensors profile's, and loaded as written.
    let c = anomalyd::config::load(&config).expect("loads");
    assert_eq!(
        c.generator.profile,
        anomalyd::config::GeneratorProfile::Sensors
    );
    assert_eq!((c.generator.sensors, c.generator.fault_share), (10, 0.01));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemon_writes_count_readings_keyed_by_sensor_and_the_rules_flag_the_faults() {
    const COUNT: u64 = 600;
    const SENSORS: u64 = 10;
    const SEED: u64 = 7;
    const SHARE: f64 = 0.05;
    let dir = tempfile::tempdir().unwrap();
    let (input, output, dlq) = (
        support::unique("sensor-data"),
        support::unique("sensor-anomalies"),
        support::unique("sensor-dlq"),
    );
    support::create_topic(&input, 3).await;
    support::create_topic(&output, 1).await;
    support::create_topic(&dlq, 1).await;
    let toml = format!(
        "[kafka]\nbrokers = {brokers:?}\ngroup_id = {group:?}\n\
         [kafka.properties]\n\"fetch.wait.max.ms\" = 10\n\n\
         [generator]\nenabled = true\nprofile = \"sensors\"\ntopic = {input:?}\n\
         sensors = {SENSORS}\nrate = 0\ncount = {COUNT}\nseed = {SEED}\nfault_share = {SHARE}\n\
         label_faults = true\n\n\
         [detectors.sensors]\ninput_topic = {input:?}\noutput_topic = {output:?}\n\
         dead_letter_topic = {dlq:?}\n\
         [detectors.sensors.rules]\nhot = \"temperature > 40.0\"\n\
         high_pressure = \"pressure > 120.0\"\n\n\
         [control]\nsocket = {socket:?}\n",
        brokers = support::brokers(),
        group = support::unique("sensors"),
        socket = dir.path().join("anomalyd.sock").display().to_string(),
    );
    let path = dir.path().join("anomalyd.toml");
    std::fs::write(&path, toml).unwrap();
    let config = anomalyd::config::load(&path).expect("the sensors profile's keys load");

    // What the stream holds, from the library: the faulty readings among the first COUNT.
    let faults = (0..COUNT)
        .filter(|&n| sensors::reading(SEED, SENSORS, SHARE, n).fault.is_some())
        .count();
    assert!(faults > 0, "seed {SEED} injects faults in {COUNT} readings");

    let daemon = Daemon::start(config).await.expect("daemon starts");
    let m = daemon.metrics().clone();
    let done = support::wait_until(Duration::from_secs(60), || {
        m.generated.load(Relaxed) >= COUNT
    })
    .await;
    assert!(done, "only {} readings written", m.generated.load(Relaxed));
    let got = support::read_topic(&input, Duration::from_secs(60), |g| {
        g.len() >= COUNT as usize
    })
    .await;
    let anomalies =
        support::read_topic(&output, Duration::from_secs(60), |g| g.len() >= faults).await;
    // Give an extra record, if any, the chance to show up before judging.
    let extra =
        support::read_topic(&input, Duration::from_secs(2), |g| g.len() > COUNT as usize).await;
    daemon
        .stop(Duration::from_secs(30))
        .await
        .expect("clean stop");
    assert_eq!(got.len() as u64, COUNT);
    assert_eq!(extra.len() as u64, COUNT, "count readings, no more");
    assert_eq!(m.generated.load(Relaxed), COUNT);
    assert_eq!(m.generated_outliers.load(Relaxed), faults as u64);

    // Keyed by sensor_id, every sensor in turn; the documented shape.
    let mut per_sensor: BTreeMap<String, u64> = BTreeMap::new();
    let mut labelled_faults: Vec<Value> = Vec::new();
    for msg in &got {
        let key = text(msg.key().expect("a key"));
        let v: Value = serde_json::from_slice(msg.payload().expect("a value")).unwrap();
        assert_eq!(v["sensor_id"], key.as_str(), "{v}");
        assert!(v["temperature"].is_f64() && v["pressure"].is_f64(), "{v}");
        let stamp = v["timestamp"].as_str().unwrap();
        assert!(stamp.ends_with("+00:00"), "{stamp}");
        chrono::DateTime::parse_from_rfc3339(stamp).expect("RFC 3339");
        let fires =
            v["temperature"].as_f64().unwrap() > 40.0 || v["pressure"].as_f64().unwrap() > 120.0;
        assert_eq!(fires, !v["fault"].is_null(), "{v}");
        if fires {
            labelled_faults.push(v);
        }
        *per_sensor.entry(key).or_default() += 1;
    }
    let want: BTreeMap<String, u64> = (0..SENSORS)
        .map(|i| (sensors::sensor_id(i), COUNT / SENSORS))
        .collect();
    assert_eq!(per_sensor, want);
    assert_eq!(labelled_faults.len(), faults);

    // The rules flag exactly the faults, each naming the threshold it crossed.
    let mut flagged: Vec<Value> = Vec::new();
    for msg in &anomalies {
        let mut v: Value = serde_json::from_slice(msg.payload().expect("a value")).unwrap();
        let a = v
            .as_object_mut()
            .unwrap()
            .remove("anomalyd")
            .expect("anomalyd");
        assert_eq!(text(msg.key().unwrap()), v["sensor_id"].as_str().unwrap());
        let mut rules: Vec<&str> = a["explanation"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["rule"].as_str().unwrap())
            .collect();
        rules.sort_unstable();
        let mut want = Vec::new();
        if v["pressure"].as_f64().unwrap() > 120.0 {
            want.push("high_pressure");
        }
        if v["temperature"].as_f64().unwrap() > 40.0 {
            want.push("hot");
        }
        assert_eq!(rules, want, "{v}");
        flagged.push(v);
    }
    let key = |v: &Value| v.to_string();
    labelled_faults.sort_by_key(key);
    flagged.sort_by_key(key);
    assert_eq!(
        flagged, labelled_faults,
        "every fault flagged once, nothing else"
    );
}

/// A generator task the supervisor restarts after a failure carries on with the next reading:
/// every reading once, each sensor's readings in the stream's order, the values the library
/// computes for the seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_generator_carries_on_with_the_next_reading() {
    use anomalyd::config::{GeneratorConfig, GeneratorProfile};
    use anomalyd::metrics::Metrics;
    use anomalyd::source::generator::Generator;
    use anomalyd::supervisor::{RestartPolicy, Supervisor, TaskError};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, AtomicU64};
    const COUNT: u64 = 300;
    const SENSORS: u64 = 4;
    const SEED: u64 = 11;
    let topic = support::unique("sensor-restart");
    support::create_topic(&topic, 3).await;
    let config = GeneratorConfig {
        enabled: true,
        profile: GeneratorProfile::Sensors,
        topic: topic.clone(),
        rate: 300.0,
        count: COUNT,
        seed: SEED,
        sensors: SENSORS,
        fault_share: 0.1,
        ..GeneratorConfig::default()
    };
    let kafka = support::kafka_config();
    let producer = anomalyd::kafka::producer_config(&kafka).create().unwrap();
    let metrics = Arc::new(Metrics::default());
    let generator = Arc::new(Generator::new(
        config,
        producer,
        Arc::clone(&metrics),
        kafka.brokers.clone(),
    ));
    let attempts = Arc::new(AtomicU32::new(0));
    let supervisor = Supervisor::new(RestartPolicy::default());
    let first_wrote = Arc::new(AtomicU64::new(0));
    let (g, a, m, w) = (
        Arc::clone(&generator),
        Arc::clone(&attempts),
        Arc::clone(&metrics),
        Arc::clone(&first_wrote),
    );
    supervisor
        .spawn("generator", move |status, shutdown| {
            let (g, first) = (Arc::clone(&g), a.fetch_add(1, Relaxed) == 0);
            let (g_metrics, wrote) = (Arc::clone(&m), Arc::clone(&w));
            async move {
                if !first {
                    return g.run(&status, shutdown).await.map_err(TaskError::from);
                }
                // The first attempt stops after a third of a second (about 100 readings, all
                // acknowledged) and fails, as a task does when its broker goes away.
                let stop = shutdown.child_token();
                let stopper = stop.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(330)).await;
                    stopper.cancel();
                });
                g.run(&status, stop).await?;
                wrote.store(g_metrics.generated.load(Relaxed), Relaxed);
                Err::<(), TaskError>("the first attempt fails".into())
            }
        })
        .await;
    let done = support::wait_until(Duration::from_secs(60), || {
        metrics.generated.load(Relaxed) >= COUNT
    })
    .await;
    assert!(done, "only {} written", metrics.generated.load(Relaxed));
    support::read_topic(&topic, Duration::from_secs(60), |g| {
        g.len() >= COUNT as usize
    })
    .await;
    // Give a duplicate, if any, the chance to show up before judging.
    let got =
        support::read_topic(&topic, Duration::from_secs(2), |g| g.len() > COUNT as usize).await;
    supervisor.shutdown(Duration::from_secs(10)).await;
    assert_eq!(attempts.load(Relaxed), 2, "restarted once");
    let first = first_wrote.load(Relaxed);
    assert!(
        (1..COUNT).contains(&first),
        "the first attempt wrote {first}"
    );
    assert_eq!(got.len() as u64, COUNT, "every reading once");

    // Per sensor, in offset order, the library's readings k * SENSORS + sensor.
    let mut sorted: Vec<_> = got.iter().collect();
    sorted.sort_by_key(|m| (m.partition(), m.offset()));
    let mut per_sensor: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for m in sorted {
        let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        per_sensor.entry(text(m.key().unwrap())).or_default().push((
            v["temperature"].as_f64().unwrap(),
            v["pressure"].as_f64().unwrap(),
        ));
    }
    for s in 0..SENSORS {
        let want: Vec<(f64, f64)> = (0..COUNT / SENSORS)
            .map(|k| {
                let r = sensors::reading(SEED, SENSORS, 0.1, k * SENSORS + s);
                (r.temperature, r.pressure)
            })
            .collect();
        assert_eq!(per_sensor[&sensors::sensor_id(s)], want, "sensor {s}");
    }
}
