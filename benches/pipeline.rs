//! The streaming pipeline against the local broker (issue 4's performance bar), in one run:
//!
//! 1. throughput: 200,000 records written twice, uncompressed and lz4-compressed (each in the
//!    producer's batches, as real producers write), and each backlog read by (a) a consume-only
//!    baseline (one consumer group reads every record and stores its offset, commits at the
//!    end; nothing else: the client's and broker's limit), (b) a pass-through relay that
//!    consumes and produces every record with no model and (c) `anomalyd run`, alternating,
//!    three rounds each; records/s and CPU µs per record (whole process, client included),
//!    medians and the ratios of (c) to (a) and (b);
//! 2. latency at a steady 2,000 records/s: `anomalyd run` with its generator on, from each
//!    source record's timestamp to its anomaly's, p50 and p99;
//! 3. memory: the daemon's peak resident set (VmHWM) over both;
//! 4. many detectors (issue 12): one backlog of 100,000 records read by one daemon with three
//!    detectors on it (an Isolation Forest, a k-means model and a CEL rule), each in its own
//!    consumer group with its own output topic, against the forest alone on the same backlog,
//!    alternating, three rounds; each detector's records/s (from its first record scored to its
//!    last, by the per-detector `records` of `/status`), medians.
//!
//! `BENCH_ONLY=throughput` runs part 1 only, `BENCH_ONLY=latency` parts 2 and 3 only,
//! `BENCH_ONLY=detectors` part 4 only.
//!
//! Run with `scripts/bench-pipeline` (it starts a throw-away broker and sets
//! `KAFKA_TEST_BROKERS`). Figures are in docs/benchmarks.md.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anomalyd::config::{Config, KafkaConfig};
use anomalyd::control::client;
use anomalyd::offline::train::{TrainOptions, train};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[path = "common/mod.rs"]
mod common;
use common::{
    Writer, consume_only, median, quantile, records_scored, start_daemon, stop, unique, usage,
};

const RECORDS: u64 = 200_000;
/// The backlog of part 4: smaller than `RECORDS` so that three rounds of the single-detector
/// and three-detector runs fit in about three minutes on a shared two-core machine.
const DETECTOR_RECORDS: u64 = 100_000;
/// Part 4's rules detector: true for the generator's uniform outliers far from both blobs.
const FAR_RULE: &str = "data[0][0] > 3.0 || data[0][0] < -3.0";
const ROUNDS: usize = 3;
const RATE: f64 = 2000.0;
const LATENCY_SECONDS: u64 = 20;
/// Seconds left out at the start of each latency run: the records that waited for the
/// consumer to join its group, and the broker's first requests.
const WARM_UP_SECONDS: u64 = 3;

fn kafka() -> KafkaConfig {
    common::kafka("scripts/bench-pipeline")
}

async fn create_topics(names: &[&str]) {
    let topics: Vec<(String, i32)> = names.iter().map(|n| ((*n).to_owned(), 3)).collect();
    common::create_topics(&kafka(), &topics).await;
}

/// Writes `n` generator records to `topic` in the producer's batches (anomalyd's producer
/// settings, `linger.ms` 20), compressed with `codec` (`none`, `lz4`, ...).
async fn produce(topic: &str, n: u64, codec: &str) {
    let producer: FutureProducer = anomalyd::kafka::producer_config(&kafka())
        .set("compression.type", codec)
        .create()
        .unwrap();
    let mut writer = Writer::new(producer);
    for id in 0..n {
        let payload =
            anomalyd::source::generator::record(42, id, 0.2, SystemTime::now()).to_string();
        writer
            .send(topic, id.to_string().as_bytes(), payload.as_bytes())
            .await;
    }
    writer.finish().await;
}

/// The reference: consume every record and produce it unchanged, acknowledged, with offsets
/// stored after delivery, in batches as the detector makes them (500 records or 5 ms). Returns seconds from the
/// first record to the last delivery, and this process's CPU seconds over the whole run (run
/// it while the process does nothing else).
async fn relay(input: &str, output: &str, records: u64) -> (f64, f64) {
    let cpu = cpu_time::ProcessTime::now();
    let consumer: StreamConsumer = anomalyd::kafka::consumer_config(&kafka(), &unique("relay"))
        .create()
        .unwrap();
    consumer.subscribe(&[input]).unwrap();
    let producer: FutureProducer = anomalyd::kafka::producer_config(&kafka()).create().unwrap();
    let mut started = None;
    let mut done = 0;
    while done < records {
        // Up to 500 records, waiting at most 5 ms after the first: the detector's defaults.
        let mut batch = Vec::with_capacity(500);
        let first = consumer.recv().await.unwrap();
        started.get_or_insert_with(Instant::now);
        batch.push(first.detach());
        let deadline = tokio::time::Instant::now() + Duration::from_millis(5);
        while batch.len() < 500 && done + (batch.len() as u64) < records {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(m) => batch.push(m.unwrap().detach()),
                Err(_) => break,
            }
        }
        let mut pending = Vec::with_capacity(batch.len());
        for m in &batch {
            let mut r = FutureRecord::to(output).payload(m.payload().unwrap());
            if let Some(k) = m.key() {
                r = r.key(k);
            }
            loop {
                match producer.send_result(r) {
                    Ok(f) => break pending.push(f),
                    Err((_, back)) => {
                        r = back;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        }
        for p in pending {
            p.await.unwrap().unwrap();
        }
        for m in &batch {
            consumer
                .store_offset(m.topic(), m.partition(), m.offset())
                .unwrap();
        }
        done += batch.len() as u64;
    }
    (
        started.unwrap().elapsed().as_secs_f64(),
        cpu.elapsed().as_secs_f64(),
    )
}

fn config(dir: &Path, model: &Path, input: &str, output: &str, name: &str) -> PathBuf {
    let mut c = Config {
        kafka: kafka(),
        ..Config::default()
    };
    c.kafka.group_id = unique("bench");
    let mut d = anomalyd::config::DetectorConfig {
        input_topic: input.into(),
        output_topic: output.into(),
        dead_letter_topic: format!("{output}.dlq"),
        model: Some(model.into()),
        ..Default::default()
    };
    c.control.socket = dir.join(format!("{name}.sock"));
    c.log.level = "warn".into();
    if let Ok(ms) = std::env::var("BENCH_BATCH_LINGER_MS") {
        d.batch_linger_ms = ms.parse().expect("BENCH_BATCH_LINGER_MS: milliseconds");
    }
    c.detectors.insert("bench".into(), d);
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml::to_string(&c).unwrap()).unwrap();
    path
}

/// Peak and current resident set of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (kib("VmHWM:"), kib("VmRSS:"))
}

/// The daemon's cumulative `anomalyd_end_to_end_seconds` buckets (source record's timestamp
/// to its anomaly's acknowledgement), as (upper bound, count) pairs.
async fn end_to_end_buckets(socket: &Path) -> Vec<(f64, u64)> {
    let (_, body) = client::request(socket, "GET", "/metrics", Duration::from_secs(2))
        .await
        .expect("/metrics answers");
    body.lines()
        .filter_map(|l| l.strip_prefix("anomalyd_end_to_end_seconds_bucket{le=\""))
        .filter_map(|l| {
            let (le, count) = l.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.parse().ok()?))
        })
        .collect()
}

/// Quantile `q` of the observations between two snapshots of cumulative buckets: the upper
/// bound of the bucket that holds it, in ms (never an understatement).
fn bucket_quantile(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> f64 {
    let diff: Vec<(f64, u64)> = after
        .iter()
        .zip(before)
        .map(|(&(le, a), &(_, b))| (le, a - b))
        .collect();
    let total = diff.last().map_or(0, |d| d.1);
    let rank = ((q * total as f64).ceil() as u64).max(1);
    diff.iter()
        .find(|d| d.1 >= rank)
        .map_or(f64::NAN, |d| d.0 * 1e3)
}

/// Seconds from the first record scored to the last, the daemon's peak RSS (MiB), and its CPU
/// seconds (user + system) from its start (start-up, model load and group join included) and
/// in the window from the first record scored to the last (the client's work for the records,
/// and whatever the daemon does beside them meanwhile).
async fn anomalyd(dir: &Path, model: &Path, input: &str, round: &str) -> (f64, f64, f64, f64) {
    let output = unique("bench-out");
    create_topics(&[&output, &format!("{output}.dlq")]).await;
    let cfg = config(dir, model, input, &output, &format!("round{round}"));
    let socket = dir.join(format!("round{round}.sock"));
    let child = start_daemon(&cfg, &dir.join(format!("round{round}.log")));
    let mut started = None;
    loop {
        let n = records_scored(&socket).await.unwrap_or(0);
        if n > 0 {
            started.get_or_insert_with(|| (Instant::now(), usage(child.id()).1));
        }
        if n >= RECORDS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (t0, cpu0) = started.unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let (peak, cpu) = usage(child.id());
    stop(child);
    (secs, peak, cpu, cpu - cpu0)
}

/// Writes `n` generator records at RATE records/s.
/// Writes `n` records at RATE records/s; returns each one's time from send to
/// acknowledgement (the broker's write latency, which every record pays once before any
/// consumer can see it), in ms, sorted.
async fn steady(topic: &str, n: u64) -> Vec<f64> {
    let producer: FutureProducer = anomalyd::kafka::producer_config(&kafka()).create().unwrap();
    let every = Duration::from_secs_f64(1.0 / RATE);
    let start = tokio::time::Instant::now();
    let mut acks = Vec::new();
    for id in 0..n {
        tokio::time::sleep_until(start + every.mul_f64(id as f64)).await;
        let payload =
            anomalyd::source::generator::record(42, id, 0.2, SystemTime::now()).to_string();
        let key = id.to_string();
        let sent = Instant::now();
        let delivery = producer
            .send_result(FutureRecord::to(topic).key(&key).payload(&payload))
            .map_err(|(e, _)| e)
            .unwrap();
        acks.push(tokio::spawn(async move {
            delivery.await.unwrap().unwrap();
            sent.elapsed().as_secs_f64() * 1e3
        }));
    }
    let mut out = Vec::with_capacity(acks.len());
    for (id, a) in acks.into_iter().enumerate() {
        let ms = a.await.unwrap();
        // The first seconds are the warm-up, as for the other figures.
        if id as f64 >= RATE * WARM_UP_SECONDS as f64 {
            out.push(ms);
        }
    }
    out.sort_by(f64::total_cmp);
    out
}

/// From each record's `current_time` to its Kafka timestamp (set when the record was
/// produced), for records after `from_ms`; and, for anomalies, the part of it up to
/// `anomalyd.detected_at` (when its batch was scored). Both sorted.
async fn latencies(topic: &str, from_ms: f64) -> (Vec<f64>, Vec<f64>) {
    let reader: StreamConsumer = anomalyd::kafka::consumer_config(&kafka(), &unique("lat-reader"))
        .create()
        .unwrap();
    reader.subscribe(&[topic]).unwrap();
    let ms_of = |v: &serde_json::Value| {
        let t = humantime::parse_rfc3339(v.as_str()?).ok()?;
        Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as f64)
    };
    let (mut total, mut scored) = (Vec::new(), Vec::new());
    while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(5), reader.recv()).await {
        let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        let source_ms = ms_of(&v["current_time"]).expect("a current_time");
        if let Some(ms) = m.timestamp().to_millis()
            && source_ms >= from_ms
        {
            total.push(ms as f64 - source_ms);
            if let Some(detected) = ms_of(&v["anomalyd"]["detected_at"]) {
                scored.push(detected - source_ms);
            }
        }
    }
    total.sort_by(f64::total_cmp);
    scored.sort_by(f64::total_cmp);
    (total, scored)
}

fn report(what: &str, sorted: &[f64]) {
    println!(
        "latency at {RATE:.0} records/s for {LATENCY_SECONDS} s, {what}: {} records after a {WARM_UP_SECONDS} s warm-up, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        sorted.len(),
        quantile(sorted, 0.5),
        quantile(sorted, 0.99),
        sorted.last().copied().unwrap_or(f64::NAN)
    );
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("seed.iforest");
    train(&TrainOptions::synthetic(42, model.clone())).unwrap();

    // BENCH_ONLY=latency skips the throughput rounds (for tuning runs); BENCH_ONLY=detectors
    // runs the many-detectors part alone.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only == "throughput" {
        throughput_rounds(dir.path(), &model).await;
        return;
    }
    if only == "detectors" {
        detectors(dir.path(), &model).await;
        return;
    }
    let mut peaks = Vec::new();
    if only != "latency" {
        peaks = throughput_rounds(dir.path(), &model).await;
    }

    latency(dir.path(), &model, &peaks).await;
    if only.is_empty() {
        detectors(dir.path(), &model).await;
    }
}

/// Part 4's daemon configuration, `<run>.toml` with its socket `<run>.sock`: `bench` (the
/// forest), and with `three`, `kmeans` and `rules` too, all reading `input`, each with its own consumer group (the default,
/// `<group_id>-<name>`) and its own output and dead-letter topics, `<output>-<name>`.
fn detectors_config(
    dir: &Path,
    forest: &Path,
    kmeans: &Path,
    input: &str,
    output: &str,
    three: bool,
    run: &str,
) -> PathBuf {
    let path = config(dir, forest, input, &format!("{output}-bench"), run);
    let mut c: Config = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    if three {
        let forest = c.detectors["bench"].clone();
        let other = |name: &str| anomalyd::config::DetectorConfig {
            output_topic: format!("{output}-{name}"),
            dead_letter_topic: format!("{output}-{name}.dlq"),
            model: None,
            ..forest.clone()
        };
        c.detectors.insert(
            "kmeans".into(),
            anomalyd::config::DetectorConfig {
                model: Some(kmeans.into()),
                ..other("kmeans")
            },
        );
        c.detectors.insert(
            "rules".into(),
            anomalyd::config::DetectorConfig {
                rules: Some([("far".to_string(), FAR_RULE.into())].into()),
                ..other("rules")
            },
        );
    }
    std::fs::write(&path, toml::to_string(&c).unwrap()).unwrap();
    path
}

/// Each detector's (name, records) from `/status`.
async fn detector_records(socket: &Path) -> Option<Vec<(String, u64)>> {
    let (_, body) = client::request(socket, "GET", "/status", Duration::from_secs(2))
        .await
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["detectors"]
        .as_array()?
        .iter()
        .map(|d| Some((d["name"].as_str()?.to_string(), d["records"].as_u64()?)))
        .collect()
}

/// Runs one daemon over the backlog until every detector has scored all of it, or for at
/// most 120 s; returns each finished detector's records/s, from its first record scored to its
/// last (polled every 20 ms), by name. A detector that did not finish is named on stdout with
/// its count and left out of the figures (a stalled group is a finding, not a rate).
async fn detectors_run(cfg: &Path, dir: &Path, name: &str) -> Vec<(String, f64)> {
    let socket = dir.join(format!("{name}.sock"));
    let log = dir.join(format!("{name}.log"));
    let child = start_daemon(cfg, &log);
    let mut first: std::collections::BTreeMap<String, Instant> = Default::default();
    let mut last: std::collections::BTreeMap<String, Instant> = Default::default();
    let mut counts = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(120);
    loop {
        let now = Instant::now();
        if let Some(c) = detector_records(&socket).await {
            counts = c;
        }
        for (d, n) in &counts {
            if *n > 0 {
                first.entry(d.clone()).or_insert(now);
            }
            if *n >= DETECTOR_RECORDS {
                last.entry(d.clone()).or_insert(now);
            }
        }
        if !counts.is_empty() && last.len() == counts.len() {
            break;
        }
        if now >= give_up {
            for (d, n) in counts.iter().filter(|(d, _)| !last.contains_key(d)) {
                println!(
                    "{name}: detector {d} scored {n} of {DETECTOR_RECORDS} records in 120 s; left out (log: {})",
                    log.display()
                );
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop(child);
    last.iter()
        .map(|(d, end)| {
            let secs = end.duration_since(first[d]).as_secs_f64();
            (d.clone(), DETECTOR_RECORDS as f64 / secs)
        })
        .collect()
}

/// Part 4: three detectors on one input topic against the forest alone, alternating.
async fn detectors(dir: &Path, forest: &Path) {
    let kmeans = dir.join("bench.kmeans");
    let mut options = anomalyd::offline::train_kmeans::ClusterTrainOptions::new(
        anomalyd::offline::train_kmeans::ClusterKind::KMeans,
        anomalyd::offline::train::TrainInput::Synthetic { seed: 42 },
        kmeans.clone(),
    );
    // top:2000 needs more rows than the synthetic set's 1,000.
    options.threshold = anomalyd::detect::kmeans::ThresholdRule::Quantile(0.99);
    let summary = anomalyd::offline::train_kmeans::train_clusters(&options).unwrap();
    println!(
        "detectors: k-means trained on the synthetic set, k = {} ({})",
        summary.k, summary.k_rule
    );

    let input = unique("bench-det-in");
    create_topics(&[&input]).await;
    let t = Instant::now();
    produce(&input, DETECTOR_RECORDS, "none").await;
    println!(
        "detectors: produced {DETECTOR_RECORDS} records in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let mut rates: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for round in 0..ROUNDS {
        // Fresh output topics and consumer groups each run: every run reads the whole backlog.
        for three in [false, true] {
            let output = unique("bench-det-out");
            let names: &[&str] = if three {
                &["bench", "kmeans", "rules"]
            } else {
                &["bench"]
            };
            let topics: Vec<String> = names
                .iter()
                .flat_map(|n| [format!("{output}-{n}"), format!("{output}-{n}.dlq")])
                .collect();
            create_topics(&topics.iter().map(String::as_str).collect::<Vec<_>>()).await;
            let run = format!("det{round}-{}", if three { "three" } else { "single" });
            let cfg = detectors_config(dir, forest, &kmeans, &input, &output, three, &run);
            let mut line = format!("detectors {run}:");
            for (d, r) in detectors_run(&cfg, dir, &run).await {
                let label = if three {
                    format!("three/{d}")
                } else {
                    "single/forest".to_string()
                };
                line.push_str(&format!(" {label} {r:.0}"));
                rates.entry(label).or_default().push(r);
            }
            println!("{line} records/s");
        }
    }
    let Some(single) = rates.get("single/forest").map(|v| median(v.clone())) else {
        println!("detectors: the forest alone never finished; no figures");
        return;
    };
    let n = rates["single/forest"].len();
    println!(
        "detectors (median of {n}, {DETECTOR_RECORDS} records): forest alone {single:.0} records/s"
    );
    for (label, v) in &rates {
        if label.starts_with("three/") {
            let r = median(v.clone());
            println!(
                "detectors (median of {}): {label} {r:.0} records/s, {:.2} of the forest alone",
                v.len(),
                r / single
            );
        }
    }
}

/// Part 1 on one backlog: RECORDS records written with `codec`, then read ROUNDS times each,
/// alternating, by the consume-only baseline, the relay and anomalyd; records/s, CPU µs per
/// record and ratios against both baselines, medians. Returns anomalyd's peaks.
async fn throughput_backlog(dir: &Path, model: &Path, codec: &str) -> Vec<f64> {
    let input = unique("bench-in");
    let relay_out = unique("bench-relay");
    create_topics(&[&input, &relay_out]).await;
    let t = Instant::now();
    produce(&input, RECORDS, codec).await;
    println!(
        "[{codec}] produced {RECORDS} records in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let n = RECORDS as f64;
    let us = |cpu: f64| cpu / n * 1e6;
    let (mut consumed, mut consumed_cpu) = (Vec::new(), Vec::new());
    let (mut relays, mut relay_cpu) = (Vec::new(), Vec::new());
    let (mut ours, mut our_cpu, mut peaks) = (Vec::new(), Vec::new(), Vec::new());
    let mut our_window_cpu = Vec::new();
    for round in 0..ROUNDS {
        let c = consume_only(&kafka(), &unique("consume"), &input, RECORDS).await;
        let (r, r_cpu) = relay(&input, &relay_out, RECORDS).await;
        let (a, peak, a_cpu, a_window) =
            anomalyd(dir, model, &input, &format!("{codec}{round}")).await;
        println!(
            "[{codec}] round {round}: consume-only {:.0} records/s ({:.2} µs CPU a record), relay {:.0} ({:.2} µs), anomalyd {:.0} ({:.2} µs from start, {:.2} µs in the window), peak RSS {peak:.1} MiB",
            n / c.from_first,
            us(c.cpu),
            n / r,
            us(r_cpu),
            n / a,
            us(a_cpu),
            us(a_window),
        );
        our_window_cpu.push(us(a_window));
        consumed.push(n / c.from_first);
        consumed_cpu.push(us(c.cpu));
        relays.push(n / r);
        relay_cpu.push(us(r_cpu));
        ours.push(n / a);
        our_cpu.push(us(a_cpu));
        peaks.push(peak);
    }
    let (c, r, a) = (median(consumed), median(relays), median(ours));
    let (c_cpu, r_cpu, a_cpu) = (median(consumed_cpu), median(relay_cpu), median(our_cpu));
    println!(
        "[{codec}] throughput (median of {ROUNDS}): consume-only {c:.0} records/s, relay {r:.0}, anomalyd {a:.0}; anomalyd / consume-only {:.2}, anomalyd / relay {:.2}",
        a / c,
        a / r
    );
    println!(
        "[{codec}] CPU a record (median of {ROUNDS}, the whole process, client included): consume-only {c_cpu:.2} µs, relay {r_cpu:.2} µs, anomalyd {a_cpu:.2} µs from its start ({:.2}x consume-only), {:.2} µs from its first record scored to its last; anomalyd peak RSS {:.1} MiB",
        a_cpu / c_cpu,
        median(our_window_cpu),
        median(peaks.clone())
    );
    peaks
}

/// Part 1 on both backlogs, uncompressed then lz4. Returns anomalyd's peaks on both.
async fn throughput_rounds(dir: &Path, model: &Path) -> Vec<f64> {
    let mut peaks = throughput_backlog(dir, model, "none").await;
    peaks.extend(throughput_backlog(dir, model, "lz4").await);
    peaks
}

/// Parts 2 and 3: latency at a steady rate, and memory.
async fn latency(dir: &Path, model: &Path, peaks: &[f64]) {
    // Latency at a steady rate: the daemon's own generator writes RATE records/s.
    let (lat_in, lat_out) = (unique("bench-lat-in"), unique("bench-lat-out"));
    create_topics(&[&lat_in, &lat_out, &format!("{lat_out}.dlq")]).await;
    let cfg = config(dir, model, &lat_in, &lat_out, "latency");
    let mut c: Config = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    c.generator.enabled = true;
    c.generator.topic = lat_in.clone();
    c.generator.rate = RATE;
    c.generator.count = (RATE as u64) * LATENCY_SECONDS;
    std::fs::write(&cfg, toml::to_string(&c).unwrap()).unwrap();
    let child = start_daemon(&cfg, &dir.join("latency.log"));
    let socket = dir.join("latency.sock");
    // The generator starts at once, the consumer only once it has joined its group: records
    // from before that wait for the join. Steady state starts WARM_UP_SECONDS after ready.
    while !matches!(
        client::request(&socket, "GET", "/ready", Duration::from_secs(2)).await,
        Ok((200, _))
    ) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let steady_from_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64
        + WARM_UP_SECONDS as f64 * 1e3;
    tokio::time::sleep(Duration::from_secs(WARM_UP_SECONDS)).await;
    let before = end_to_end_buckets(&socket).await;
    while records_scored(&socket).await.unwrap_or(0) < c.generator.count {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = end_to_end_buckets(&socket).await;
    let (peak, rss) = memory(child.id());
    stop(child);

    let (ours, scored) = latencies(&lat_out, steady_from_ms).await;
    report("anomalyd, source record to anomaly produced", &ours);
    report("anomalyd, source record to its batch scored", &scored);
    println!(
        "latency at {RATE:.0} records/s for {LATENCY_SECONDS} s, anomalyd, source record to anomaly acknowledged (the daemon's anomalyd_end_to_end_seconds, bucket bounds): {} anomalies, p50 <= {:.1} ms, p99 <= {:.1} ms",
        after.last().map_or(0, |a| a.1) - before.last().map_or(0, |b| b.1),
        bucket_quantile(&before, &after, 0.5),
        bucket_quantile(&before, &after, 0.99)
    );

    // The same path without a model, as the baseline: the bench writes RATE records/s while
    // the relay copies each one (not only the anomalies) to its output.
    let (base_in, base_out) = (unique("bench-base-in"), unique("bench-base-out"));
    create_topics(&[&base_in, &base_out]).await;
    let n = (RATE as u64) * LATENCY_SECONDS;
    let relay_done = tokio::spawn({
        let (i, o) = (base_in.clone(), base_out.clone());
        async move { relay(&i, &o, n).await.0 }
    });
    tokio::time::sleep(Duration::from_secs(3)).await; // let the relay join its group
    let steady_from_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64
        + WARM_UP_SECONDS as f64 * 1e3;
    let acks = steady(&base_in, n).await;
    relay_done.await.unwrap();
    report("broker, one write from send to acknowledgement", &acks);
    report(
        "relay (baseline), source record to copy produced",
        &latencies(&base_out, steady_from_ms).await.0,
    );

    if !peaks.is_empty() {
        println!(
            "memory: peak RSS {:.1} MiB in the throughput rounds (median)",
            median(peaks.to_vec())
        );
    }
    println!("memory: {peak:.1} MiB peak and {rss:.1} MiB current at {RATE:.0} records/s");
}
