//! TLS to the broker, end to end: the generator writes and the detector reads and publishes
//! through `security.protocol = "SSL"` only.
//!
//! tansu speaks plaintext, so this test runs its own tansu behind a TLS terminator (socat with
//! a certificate made here by `openssl`), advertising the TLS port: every connection a client
//! makes, bootstrap or not, goes through TLS. A client without TLS cannot talk to that port.

mod support;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anomalyd::config::{Config, KafkaConfig, PropertyValue};
use anomalyd::daemon::Daemon;
use rdkafka::consumer::Consumer;
use support::Reaper;

const SEED: u64 = 7;
const N: u64 = 2_000;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The tansu binary `scripts/broker install` put in place.
fn tansu() -> PathBuf {
    let home = std::env::var("HOME").expect("HOME");
    let installed = Path::new(&home).join(".cargo/bin/tansu");
    if installed.exists() {
        installed
    } else {
        PathBuf::from("tansu")
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A broker reachable only through TLS, and the CA file that trusts it.
struct TlsBroker {
    tls_port: u16,
    ca: PathBuf,
    _tansu: Reaper,
    _socat: Reaper,
}

impl TlsBroker {
    async fn start(dir: &Path, topics: &[&str]) -> Self {
        let (plain_port, tls_port) = (free_port(), free_port());
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null()));
        let tansu_proc = Reaper(
            Command::new(tansu())
                .current_dir(dir)
                .arg("broker")
                .args(["--listener-url", &format!("tcp://127.0.0.1:{plain_port}")])
                .args([
                    "--advertised-listener-url",
                    &format!("tcp://127.0.0.1:{tls_port}"),
                ])
                .args(["--storage-engine", "sqlite://tansu.db"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("tansu starts (scripts/broker install puts it in ~/.cargo/bin)"),
        );
        let socat = Reaper(
            Command::new("socat")
                .arg(format!(
                    "OPENSSL-LISTEN:{tls_port},reuseaddr,fork,verify=0,cert={},key={}",
                    cert.display(),
                    key.display()
                ))
                .arg(format!("TCP:127.0.0.1:{plain_port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("socat starts (.ci/run installs it)"),
        );
        let up = |port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        assert!(
            support::wait_until(Duration::from_secs(30), || up(plain_port) && up(tls_port)).await,
            "tansu and socat listen"
        );
        for topic in topics {
            run(Command::new(tansu())
                .args(["topic", "create", topic, "--partitions", "2"])
                .args(["--broker", &format!("tcp://127.0.0.1:{plain_port}")]));
        }
        Self {
            tls_port,
            ca: cert,
            _tansu: tansu_proc,
            _socat: socat,
        }
    }

    fn kafka(&self) -> KafkaConfig {
        let mut kafka = KafkaConfig {
            brokers: format!("127.0.0.1:{}", self.tls_port),
            group_id: support::unique("tls"),
            ..KafkaConfig::default()
        };
        for (k, v) in [
            ("security.protocol", "SSL"),
            ("ssl.ca.location", &self.ca.display().to_string()),
            ("fetch.wait.max.ms", "10"),
        ] {
            kafka
                .properties
                .insert(k.into(), PropertyValue::String(v.into()));
        }
        kafka
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pipeline_runs_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TlsBroker::start(dir.path(), &["tls-in", "tls-out", "tls-dead"]).await;
    let model = support::seed_model(dir.path());
    let mut config = Config {
        kafka: broker.kafka(),
        ..Config::default()
    };
    config.detectors.insert(
        support::DETECTOR.into(),
        anomalyd::config::DetectorConfig {
            input_topic: "tls-in".into(),
            output_topic: "tls-out".into(),
            dead_letter_topic: "tls-dead".into(),
            model: Some(model.clone()),
            ..Default::default()
        },
    );
    support::generate(&mut config, N, 0.0, SEED);
    config.control.socket = dir.path().join("anomalyd.sock");

    let daemon = Daemon::start(config.clone()).await.expect("daemon starts");
    let m = daemon.metrics().clone();
    let scored =
        support::wait_until(Duration::from_secs(120), || m.records_in.load(Relaxed) >= N).await;
    assert!(
        scored,
        "only {} of {N} scored over TLS",
        m.records_in.load(Relaxed)
    );
    assert_eq!(m.generated.load(Relaxed), N);

    // Read the anomalies back over TLS too.
    let expected = support::expected_anomalies(&model, SEED, 0.2, 0..N);
    let got = support::read_topic_from(
        &broker.kafka(),
        "tls-out",
        Duration::from_secs(60),
        support::covers(&expected),
    )
    .await;
    let got: BTreeSet<u64> = support::ids(&got).into_iter().collect();
    assert_eq!(got, expected);
    daemon
        .stop(Duration::from_secs(30))
        .await
        .expect("clean stop");
}

#[test]
fn without_tls_the_broker_cannot_be_reached() {
    // The same kind of endpoint refuses a plaintext client: the test above really used TLS.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let broker = TlsBroker::start(dir.path(), &["plain"]).await;
        let mut kafka = broker.kafka();
        kafka.properties.remove("security.protocol");
        kafka.properties.remove("ssl.ca.location");
        let probe: rdkafka::consumer::BaseConsumer =
            anomalyd::kafka::client_config(&kafka).create().unwrap();
        assert!(
            probe
                .fetch_metadata(Some("plain"), Duration::from_secs(3))
                .is_err()
        );
    });
}
