//! Helpers shared by the benchmarks that run against a throw-away broker (started by a
//! `scripts/bench-*` command, which sets `KAFKA_TEST_BROKERS`), included with
//! `#[path = "common/mod.rs"] mod common;`: the client settings, unique names, topics, sizes from
//! the environment, a process's peak RSS and CPU, the consume-only baseline, medians and
//! quantiles.

#![allow(dead_code)] // each bench uses its own subset

use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anomalyd::config::{KafkaConfig, PropertyValue};
use anomalyd::sinks::store::row::{At, Row};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

/// Peak resident set (VmHWM, MiB) and CPU seconds (user + system) of a live process.
pub fn usage(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let ticks: f64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|t| t.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0);
    let hz = String::from_utf8_lossy(
        &Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .parse::<f64>()
    .unwrap_or(100.0);
    (peak, ticks / hz)
}

/// Stops a daemon the way an operator does (SIGTERM) and waits for it.
pub fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// What the consume-only baseline measured.
pub struct ConsumeOnly {
    /// Seconds from creating the consumer to the final commit (group join included).
    pub from_start: f64,
    /// Seconds from the first record to the final commit.
    pub from_first: f64,
    /// CPU seconds (user + system) of this process over the whole read: the client's cost
    /// of fetching, decompressing and handing over every record, with nothing done to it.
    pub cpu: f64,
}

/// The consume-only baseline: one consumer group (`group`, anomalyd's consumer settings from
/// `kafka`) reads `records` records of `topic`, storing each offset, and commits synchronously
/// at the end; nothing else. Run it while this process does nothing else: its CPU is the
/// process's.
///
/// It reads as the daemon does, each partition from its own queue (`split_partition_queue`,
/// so librdkafka's prefetch limits apply per partition): through the consumer's one queue it
/// took twice as long with anomalyd's 384 KiB fetches. And it polls a `BaseConsumer` on a
/// thread of its own: rdkafka's `StreamConsumer::recv` alone was measured 3 to 6 times slower
/// on a backlog (a missed wake-up, as fede1024/rust-rdkafka#665).
pub async fn consume_only(
    kafka: &KafkaConfig,
    group: &str,
    topic: &str,
    records: u64,
) -> ConsumeOnly {
    let config = anomalyd::kafka::consumer_config(kafka, group);
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let cpu = cpu_time::ProcessTime::now();
        let t0 = Instant::now();
        let consumer: Arc<BaseConsumer> = Arc::new(config.create().unwrap());
        consumer.subscribe(&[&topic]).unwrap();
        let mut first = None;
        let mut n = 0;
        let mut take = |m: &BorrowedMessage<'_>, n: &mut u64| {
            first.get_or_insert_with(Instant::now);
            consumer
                .store_offset(m.topic(), m.partition(), m.offset())
                .unwrap();
            *n += 1;
        };
        // Records fetched before the assignment is known come through the consumer's queue.
        while consumer.assignment().unwrap().count() == 0 {
            if let Some(m) = consumer.poll(Duration::from_millis(10)) {
                take(&m.unwrap(), &mut n);
            }
        }
        let queues: Vec<_> = consumer
            .assignment()
            .unwrap()
            .elements()
            .iter()
            .map(|e| {
                consumer
                    .split_partition_queue(&topic, e.partition())
                    .unwrap()
            })
            .collect();
        while n < records {
            let mut idle = true;
            if let Some(m) = consumer.poll(Duration::ZERO) {
                take(&m.unwrap(), &mut n);
                idle = false;
            }
            for q in &queues {
                while let Some(m) = q.poll(Duration::ZERO) {
                    take(&m.unwrap(), &mut n);
                    idle = false;
                }
            }
            if idle {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        consumer.commit_consumer_state(CommitMode::Sync).unwrap();
        ConsumeOnly {
            from_start: t0.elapsed().as_secs_f64(),
            from_first: first.unwrap().elapsed().as_secs_f64(),
            cpu: cpu.elapsed().as_secs_f64(),
        }
    })
    .await
    .unwrap()
}

/// Starts `anomalyd run --config CONFIG`, its stderr to `log`, from an
/// executable read from disk as after a reboot: how a file's pages came into the page cache
/// changes how many the kernel maps around each fault, and so the resident set (straight after
/// the linker wrote it, the steady daemon was about 1 MiB lower, 2026-11-30). GNU dd's
/// `iflag=nocache count=0` drops a whole file's cached pages first.
pub fn start_daemon(config: &Path, log: &Path) -> Child {
    let exe = env!("CARGO_BIN_EXE_anomalyd");
    let dropped = Command::new("dd")
        .arg(format!("if={exe}"))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status();
    assert!(
        dropped.is_ok_and(|s| s.success()),
        "dd could not drop {exe} from the page cache"
    );
    Command::new(exe)
        .args(["run", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Writes a backlog as fast as the producer's queue takes it: a send the full queue refuses is
/// tried again a millisecond later, and the acknowledgements are awaited 20,000 at a time.
pub struct Writer {
    producer: FutureProducer,
    pending: Vec<DeliveryFuture>,
}

impl Writer {
    pub fn new(producer: FutureProducer) -> Self {
        Self {
            producer,
            pending: Vec::new(),
        }
    }

    /// Queues one record; panics if an acknowledgement awaited here reports an error.
    pub async fn send(&mut self, topic: &str, key: &[u8], payload: &[u8]) {
        loop {
            match self
                .producer
                .send_result(FutureRecord::to(topic).key(key).payload(payload))
            {
                Ok(f) => break self.pending.push(f),
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
        if self.pending.len() >= 20_000 {
            for p in self.pending.drain(..) {
                p.await.unwrap().unwrap();
            }
        }
    }

    /// Waits for every record sent to be acknowledged.
    pub async fn finish(self) {
        for p in self.pending {
            p.await.unwrap().unwrap();
        }
    }
}

/// The daemon's count of records scored (`records_in` in `/status` on its control socket),
/// `None` while it does not answer.
pub async fn records_scored(socket: &Path) -> Option<u64> {
    let (_, body) =
        anomalyd::control::client::request(socket, "GET", "/status", Duration::from_secs(2))
            .await
            .ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["counters"]["records_in"].as_u64()
}

/// The median (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The `q` quantile of sorted values, by nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// The client settings of the shipped anomalyd.toml on `KAFKA_TEST_BROKERS` (`script` is
/// named when it is unset): anomalyd's defaults and `fetch.wait.max.ms = 10` (tansu holds
/// every fetch for the full wait); `BENCH_KAFKA="linger.ms=50,..."` adds client properties.
pub fn kafka(script: &str) -> KafkaConfig {
    let mut k = KafkaConfig {
        brokers: std::env::var("KAFKA_TEST_BROKERS")
            .unwrap_or_else(|_| panic!("KAFKA_TEST_BROKERS: run {script}")),
        ..KafkaConfig::default()
    };
    k.properties
        .insert("fetch.wait.max.ms".into(), PropertyValue::Int(10));
    for pair in std::env::var("BENCH_KAFKA").unwrap_or_default().split(',') {
        if let Some((key, value)) = pair.split_once('=') {
            let value = value.trim().parse().map_or_else(
                |_| PropertyValue::String(value.trim().into()),
                PropertyValue::Int,
            );
            k.properties.insert(key.trim().into(), value);
        }
    }
    k
}

/// The environment variable `name` as a number, else `default`; panics naming a bad value.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: not a valid number: {v}"))
        })
        .unwrap_or(default)
}

/// `prefix-<digits of the clock>`: a topic or group no earlier run used.
pub fn unique(prefix: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}", n % 1_000_000_000_000)
}

/// Creates `(name, partitions)` topics and waits a second for the broker to settle.
pub async fn create_topics(kafka: &KafkaConfig, topics: &[(String, i32)]) {
    let admin: AdminClient<DefaultClientContext> =
        anomalyd::kafka::client_config(kafka).create().unwrap();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(1)))
        .collect();
    for r in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Resets this process's peak resident set (Linux `clear_refs` 5); `false` if it cannot.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// This process's peak resident set since the start or the last [`reset_peak_rss`], MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Sensor anomaly record number `i`, as the rules detector writes them (the store benches).
pub fn record(i: usize) -> String {
    format!(
        r#"{{"sensor_id":"s-{}","temperature":{}.5,"pressure":101.2,"timestamp":"2026-03-01T10:00:{:02}+01:00","anomalyd":{{"detector":"sensors","score":1.0,"decision":-1.0,"model":{{"id":"3fa2c1","kind":"rules"}},"source":{{"topic":"sensor-data","partition":{},"offset":{i}}},"detected_at":"2026-03-01T09:00:05.123Z","explanation":[{{"rule":"hot"}}],"layout":"inline"}}}}"#,
        i % 100,
        40 + i % 10,
        i % 60,
        i % 3
    )
}

/// `records` as store rows at offsets from `first_offset` of one anomalies partition.
pub fn rows(records: &[String], first_offset: usize) -> Vec<Row> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Row::parse(
                At {
                    topic: "sensor-anomalies",
                    partition: 0,
                    offset: (first_offset + i) as i64,
                    timestamp_ms: 1_772_355_600_000,
                },
                Some(b"s-1"),
                r.as_bytes(),
                Some("/timestamp"),
            )
            .expect("a row")
        })
        .collect()
}
