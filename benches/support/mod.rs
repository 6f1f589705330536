//! Helpers for the benchmarks that talk to a throw-away broker (started by a `scripts/bench-*`
//! command, which sets `KAFKA_TEST_BROKERS`): the client settings, unique names, topics, sizes
//! from the environment, medians and quantiles, and the process's peak resident set.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anomalyd::config::{KafkaConfig, PropertyValue};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

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

/// The median of `v` (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The `q` quantile of sorted `sorted`, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
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
