//! The daemon's memory against its settings (issue 16, deliver 3): a backlog written
//! lz4-compressed in the producer's batches, read by `anomalyd run` once per variant of the
//! settings, one setting changed at a time; each run's peak resident set (VmHWM), its
//! records/s against a consume-only baseline of the same backlog and run, and the peak the
//! formula of docs/operations.md ("Memory") predicts from the settings. A measured peak above
//! the prediction is flagged `OVER` and makes the bench exit 1 at the end.
//!
//! Backlogs: 200,000 generator records on 3 partitions and on 1, and 50,000 records padded to
//! about 2 KiB on 3 partitions (larger records). `BENCH_MEMORY=quick` runs the defaults only,
//! on every backlog.
//!
//! Run with `scripts/bench-memory` (a throw-away broker on a free port, `KAFKA_TEST_BROKERS`).
//! Figures are in docs/benchmarks.md ("Memory bounded by configuration").

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anomalyd::config::{Config, KafkaConfig, PropertyValue};
use anomalyd::control::client;
use anomalyd::offline::train::{TrainOptions, train};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[path = "common/mod.rs"]
mod common;
use common::{consume_only, stop, unique, usage};

fn kafka() -> KafkaConfig {
    common::kafka("scripts/bench-memory")
}

async fn create_topics(names: &[&str], partitions: i32) {
    let topics: Vec<(String, i32)> = names
        .iter()
        .map(|n| ((*n).to_owned(), partitions))
        .collect();
    common::create_topics(&kafka(), &topics).await;
}

/// Writes `n` generator records, each with a `pad` field of `pad` bytes when `pad > 0`, to
/// `topic`, lz4-compressed in the producer's batches (librdkafka's defaults). Returns the
/// mean record size in bytes (uncompressed value).
async fn produce(topic: &str, n: u64, pad: usize) -> f64 {
    let producer: FutureProducer = anomalyd::kafka::producer_config(&kafka())
        .set("compression.type", "lz4")
        .create()
        .unwrap();
    let padding = "x".repeat(pad);
    let mut pending = Vec::new();
    let mut bytes = 0u64;
    for id in 0..n {
        let mut record = anomalyd::source::generator::record(42, id, 0.2, SystemTime::now());
        if pad > 0 {
            record["pad"] = padding.clone().into();
        }
        let payload = record.to_string();
        bytes += payload.len() as u64;
        let key = id.to_string();
        loop {
            match producer.send_result(FutureRecord::to(topic).key(&key).payload(&payload)) {
                Ok(f) => break pending.push(f),
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
        if pending.len() >= 20_000 {
            for p in pending.drain(..) {
                p.await.unwrap().unwrap();
            }
        }
    }
    for p in pending {
        p.await.unwrap().unwrap();
    }
    bytes as f64 / n as f64
}

/// One variant: consumer properties over anomalyd's defaults, and environment variables of
/// the daemon.
struct Variant {
    name: &'static str,
    properties: &'static [(&'static str, i64)],
    env: &'static [(&'static str, &'static str)],
}

const DEFAULTS: Variant = Variant {
    name: "defaults",
    properties: &[],
    env: &[],
};

/// One setting changed at a time from the defaults.
const VARIANTS: &[Variant] = &[
    DEFAULTS,
    Variant {
        name: "MALLOC_ARENA_MAX=2",
        properties: &[],
        env: &[("MALLOC_ARENA_MAX", "2")],
    },
    Variant {
        name: "MALLOC_ARENA_MAX=1",
        properties: &[],
        env: &[("MALLOC_ARENA_MAX", "1")],
    },
    Variant {
        name: "MALLOC_TRIM_THRESHOLD_=65536",
        properties: &[],
        env: &[("MALLOC_TRIM_THRESHOLD_", "65536")],
    },
    Variant {
        name: "queued.max.messages.kbytes=2048",
        properties: &[("queued.max.messages.kbytes", 2048)],
        env: &[],
    },
    Variant {
        name: "queued.max.messages.kbytes=1024",
        properties: &[("queued.max.messages.kbytes", 1024)],
        env: &[],
    },
    Variant {
        name: "queued.min.messages=1000",
        properties: &[("queued.min.messages", 1000)],
        env: &[],
    },
    Variant {
        name: "queue.buffering.max.kbytes=4096",
        properties: &[("queue.buffering.max.kbytes", 4096)],
        env: &[],
    },
    Variant {
        name: "fetch.message.max.bytes=65536",
        properties: &[
            ("fetch.message.max.bytes", 65536),
            ("fetch.max.bytes", 1_000_000),
        ],
        env: &[],
    },
    Variant {
        name: "fetch.message.max.bytes=262144",
        properties: &[("fetch.message.max.bytes", 262_144)],
        env: &[],
    },
];

/// The daemon's configuration for one run.
fn config(dir: &Path, model: &Path, input: &str, variant: &Variant, name: &str) -> PathBuf {
    let mut c = Config {
        kafka: kafka(),
        ..Config::default()
    };
    c.kafka.group_id = unique("mem");
    for (k, v) in variant.properties {
        c.kafka
            .properties
            .insert((*k).into(), PropertyValue::Int(*v));
    }
    let output = format!("{input}-out");
    let d = anomalyd::config::DetectorConfig {
        input_topic: input.into(),
        output_topic: output.clone(),
        dead_letter_topic: format!("{output}.dlq"),
        model: Some(model.into()),
        ..Default::default()
    };
    c.control.socket = dir.join(format!("{name}.sock"));
    c.log.level = "warn".into();
    c.detectors.insert("bench".into(), d);
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml::to_string(&c).unwrap()).unwrap();
    path
}

fn start(config: &Path, log: &Path, env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_anomalyd"))
        .args(["run", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

async fn records_scored(socket: &Path) -> Option<u64> {
    let (_, body) = client::request(socket, "GET", "/status", Duration::from_secs(2))
        .await
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["counters"]["records_in"].as_u64()
}

/// Reads `records` records of `input` with one daemon: records/s from its first record scored
/// to its last, and its peak RSS in MiB.
async fn run(dir: &Path, model: &Path, input: &str, records: u64, variant: &Variant) -> (f64, f64) {
    let name = unique("run");
    let cfg = config(dir, model, input, variant, &name);
    let socket = dir.join(format!("{name}.sock"));
    let child = start(&cfg, &dir.join(format!("{name}.log")), variant.env);
    let mut started = None;
    let give_up = Instant::now() + Duration::from_secs(300);
    // The resident set (MiB) when each further tenth of the records has been scored: whether
    // the peak comes at the start (prefetch) or grows with the records read.
    let mut trace = Vec::new();
    loop {
        let n = records_scored(&socket).await.unwrap_or(0);
        if n > 0 {
            started.get_or_insert_with(Instant::now);
        }
        if n * 10 >= records * (trace.len() as u64 + 1) {
            trace.push(format!("{}%: {:.0}", n * 100 / records, rss(child.id())));
        }
        if n >= records {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "{name}: {n} of {records} records in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.unwrap().elapsed().as_secs_f64();
    let (peak, _) = usage(child.id());
    stop(child);
    println!("  resident MiB by records scored: {}", trace.join(", "));
    (records as f64 / secs, peak)
}

/// A process's current resident set (VmRSS), MiB.
fn rss(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// librdkafka's value of a consumer setting in the daemon's configuration with `variant`.
fn setting(variant: &Variant, name: &str) -> f64 {
    if let Some((_, v)) = variant.properties.iter().find(|(k, _)| *k == name) {
        return *v as f64;
    }
    let k = kafka();
    anomalyd::kafka::consumer_config(&k, "g")
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| match name {
            "fetch.message.max.bytes" => 1_048_576.0,
            "fetch.max.bytes" => 52_428_800.0,
            "queued.min.messages" => 100_000.0,
            "queued.max.messages.kbytes" => 65_536.0,
            _ => panic!("no default for {name}"),
        })
}

/// The peak docs/operations.md ("Memory") predicts, in MiB.
fn predicted(variant: &Variant, partitions: f64, record_bytes: f64) -> f64 {
    let mib = 1_048_576.0;
    let qmk = setting(variant, "queued.max.messages.kbytes") * 1024.0;
    let qmin = setting(variant, "queued.min.messages");
    let fmm = setting(variant, "fetch.message.max.bytes");
    let fmax = setting(variant, "fetch.max.bytes");
    // Each partition's queue: at most the smaller of its two bounds, overshot by one fetch.
    let queue = qmk.min(qmin * record_bytes) + fmm.min(fmax);
    BASE_MIB + partitions * queue / mib + fmax / mib
}

/// The daemon's resident set with nothing queued (code, runtime, model, thread stacks
/// touched), MiB: measured idle.
const BASE_MIB: f64 = 12.0;

/// The daemon with its own generator writing 2,000 records/s to a 3-partition topic for 20 s:
/// its peak RSS in MiB once every record is scored.
async fn steady(dir: &Path, model: &Path) -> f64 {
    const RATE: f64 = 2000.0;
    let input = unique("mem-steady");
    let output = format!("{input}-out");
    create_topics(&[&input, &output, &format!("{output}.dlq")], 3).await;
    let name = unique("steady");
    let cfg = config(dir, model, &input, &DEFAULTS, &name);
    let mut c: Config = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    c.generator.enabled = true;
    c.generator.topic = input.clone();
    c.generator.rate = RATE;
    c.generator.count = RATE as u64 * 20;
    std::fs::write(&cfg, toml::to_string(&c).unwrap()).unwrap();
    let child = start(&cfg, &dir.join(format!("{name}.log")), &[]);
    let socket = dir.join(format!("{name}.sock"));
    let give_up = Instant::now() + Duration::from_secs(120);
    while records_scored(&socket).await.unwrap_or(0) < c.generator.count {
        assert!(
            Instant::now() < give_up,
            "steady: not every record scored in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (peak, _) = usage(child.id());
    stop(child);
    peak
}

struct Backlog {
    name: &'static str,
    partitions: i32,
    records: u64,
    pad: usize,
}

const BACKLOGS: &[Backlog] = &[
    Backlog {
        name: "200k lz4, 3 partitions",
        partitions: 3,
        records: 200_000,
        pad: 0,
    },
    Backlog {
        name: "200k lz4, 1 partition",
        partitions: 1,
        records: 200_000,
        pad: 0,
    },
    Backlog {
        name: "50k lz4 of ~2 KiB, 3 partitions",
        partitions: 3,
        records: 50_000,
        pad: 2000,
    },
];

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("seed.iforest");
    train(&TrainOptions::synthetic(42, model.clone())).unwrap();
    let quick = std::env::var("BENCH_MEMORY").is_ok_and(|v| v == "quick");
    let mut over = Vec::new();
    // BENCH_MEMORY_BACKLOGS=N: the first N backlogs only.
    let backlogs = std::env::var("BENCH_MEMORY_BACKLOGS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(BACKLOGS.len());
    for (i, backlog) in BACKLOGS.iter().take(backlogs).enumerate() {
        let input = unique("mem-in");
        let output = format!("{input}-out");
        create_topics(&[&input], backlog.partitions).await;
        create_topics(&[&output, &format!("{output}.dlq")], 3).await;
        let record_bytes = produce(&input, backlog.records, backlog.pad).await;
        let c = consume_only(&kafka(), &unique("consume"), &input, backlog.records).await;
        let base = backlog.records as f64 / c.from_first;
        println!(
            "[{}] {:.0} bytes a record; consume-only {base:.0} records/s",
            backlog.name, record_bytes
        );
        // Every variant on the first backlog; the defaults (and the arena cap) on the others.
        let variants: Vec<&Variant> = if quick {
            vec![&DEFAULTS]
        } else if i == 0 {
            VARIANTS.iter().collect()
        } else {
            VARIANTS.iter().take(2).collect()
        };
        // BENCH_MEMORY_ONLY=NAME,NAME: only the variants whose names contain one of these.
        let only = std::env::var("BENCH_MEMORY_ONLY").unwrap_or_default();
        let variants: Vec<&Variant> = variants
            .into_iter()
            .filter(|v| only.is_empty() || only.split(',').any(|o| v.name.contains(o)))
            .collect();
        if variants.is_empty() {
            continue;
        }
        for v in variants {
            let (rate, peak) = run(dir.path(), &model, &input, backlog.records, v).await;
            let p = predicted(v, backlog.partitions as f64, record_bytes);
            let flag = if peak > p { "  OVER" } else { "" };
            println!(
                "[{}] {:<34} {rate:>7.0} records/s ({:.2}x consume-only), peak RSS {peak:5.1} MiB, predicted <= {p:5.1} MiB{flag}",
                backlog.name,
                v.name,
                rate / base
            );
            if peak > p {
                over.push(format!("{} / {}", backlog.name, v.name));
            }
        }
    }
    let peak = steady(dir.path(), &model).await;
    let p = predicted(&DEFAULTS, 3.0, 80.0);
    let flag = if peak > p { "  OVER" } else { "" };
    println!(
        "[steady 2,000 records/s, 3 partitions, the daemon's generator] peak RSS {peak:.1} MiB, predicted <= {p:.1} MiB{flag}"
    );
    if peak > p {
        over.push("steady 2,000 records/s".into());
    }
    if !over.is_empty() {
        eprintln!("measured peak above the formula's prediction: {over:?}");
        std::process::exit(1);
    }
}
