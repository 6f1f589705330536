//! Helpers shared by the benchmarks that run against a broker (`pipeline`, `purchases`),
//! included with `#[path = "common/mod.rs"] mod common;`: a process's peak RSS and CPU, the
//! consume-only baseline, medians.

#![allow(dead_code)] // each bench uses its own subset

use std::process::{Child, Command};
use std::time::Instant;

use anomalyd::config::KafkaConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;

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
pub async fn consume_only(
    kafka: &KafkaConfig,
    group: &str,
    topic: &str,
    records: u64,
) -> ConsumeOnly {
    let cpu = cpu_time::ProcessTime::now();
    let t0 = Instant::now();
    let consumer: StreamConsumer = anomalyd::kafka::consumer_config(kafka, group)
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut first = None;
    let mut n = 0;
    while n < records {
        let m = consumer.recv().await.unwrap();
        first.get_or_insert_with(Instant::now);
        consumer
            .store_offset(m.topic(), m.partition(), m.offset())
            .unwrap();
        n += 1;
    }
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();
    ConsumeOnly {
        from_start: t0.elapsed().as_secs_f64(),
        from_first: first.unwrap().elapsed().as_secs_f64(),
        cpu: cpu.elapsed().as_secs_f64(),
    }
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
