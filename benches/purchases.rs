//! The purchases job against the local broker (issue 13's performance bar), in one run:
//!
//! 1. training: `anomalyd train --format purchases` of both kinds (k-means, bisecting k-means,
//!    the full k sweep, seed 42) on the train file under `/usr/bin/time -v`: seconds, CPU and
//!    peak RSS; the models are the ones the next parts load;
//! 2. throughput: the stream file replayed at full speed to a 3-partition topic, then read
//!    ROUNDS times each, alternating, by (a) a consume-only baseline (one consumer group with
//!    anomalyd's consumer settings that reads every record, stores its offset and commits at
//!    the end; nothing else) and (b) `anomalyd run` with `examples/purchases.toml`'s two stages
//!    and two detectors, both stages in event time (deterministic: the same invoices every
//!    round); (b) is done when both stages have read every line and both detectors have scored
//!    every invoice emitted by then (`/status`, polled every 20 ms); lines/s, CPU seconds and
//!    peak RSS of the daemon, medians and their ratio;
//! 3. latency: a running `anomalyd run` in processing time (gap 40 s) while `anomalyd replay`
//!    writes the first LATENCY_LINES lines at the original's pace (5-9 ms a line); per
//!    invoice, its record's Kafka timestamp (in `invoices` or `invalid_invoices`) minus its
//!    last line's Kafka timestamp in the input, minus the gap: p50, p99, max.
//!
//! `BENCH_ONLY=training|throughput|latency` runs one part (the models are trained for any);
//! `BENCH_WITHOUT=cancellations` runs the daemon without that stage.
//! `BENCH_ROUNDS` (default 3) and `BENCH_LATENCY_LINES` (default 20000) change the sizes.
//!
//! Run with `scripts/bench-purchases` (it checks the data, starts a throw-away broker and sets
//! `KAFKA_TEST_BROKERS` and `RETAIL_DIR`). Figures are in docs/benchmarks.md.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anomalyd::config::{KafkaConfig, PropertyValue};
use anomalyd::control::client;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;

#[path = "common/mod.rs"]
mod common;
use common::{consume_only, env_or, median, quantile, stop, unique, usage};

/// Lines of `online_retail_stream.csv` (no header).
const STREAM_LINES: u64 = 271_534;
/// The processing-time gap of the latency part: examples/purchases.toml's (the original's SLA).
const GAP_MS: f64 = 40_000.0;
/// A round that has not finished by then is named and left out of the figures.
const ROUND_LIMIT: Duration = Duration::from_secs(300);

fn kafka() -> KafkaConfig {
    common::kafka("scripts/bench-purchases")
}

/// The retail data folder and its two files; exits 66 naming the first one missing.
fn data() -> (PathBuf, PathBuf) {
    let dir = std::env::var("RETAIL_DIR").map_or_else(
        |_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/retail"),
        PathBuf::from,
    );
    let train = dir.join("online_retail_train.csv");
    let stream = dir.join("online_retail_stream.csv");
    for f in [&train, &stream] {
        if !f.is_file() {
            eprintln!(
                "missing {}: the purchases benchmark needs the UCI Online Retail files (../shared/data/README.md)",
                f.display()
            );
            std::process::exit(66);
        }
    }
    (train, stream)
}

async fn create_topics(topics: &[(String, i32)]) {
    common::create_topics(&kafka(), topics).await;
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_anomalyd")
}

/// Part 1: one model, `anomalyd train` under `/usr/bin/time -v`. Prints the figures.
fn train(kind: &str, input: &Path, out: &Path) -> (f64, f64, f64) {
    let output = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(bin())
        .args([
            "train",
            "--kind",
            kind,
            "--format",
            "purchases",
            "--k",
            "auto",
        ])
        .args(["--seed", "42", "--input"])
        .arg(input)
        .arg("--out")
        .arg(out)
        .output()
        .expect("/usr/bin/time runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "anomalyd train --kind {kind} failed:\n{stderr}"
    );
    let field = |name: &str| -> &str {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .unwrap_or_else(|| panic!("/usr/bin/time printed no {name}"))
            .trim()
    };
    let wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss):")
        .split(':')
        .fold(0.0, |acc, p| acc * 60.0 + p.parse::<f64>().unwrap());
    let cpu = field("User time (seconds):").parse::<f64>().unwrap()
        + field("System time (seconds):").parse::<f64>().unwrap();
    let peak_mib = field("Maximum resident set size (kbytes):")
        .parse::<f64>()
        .unwrap()
        / 1024.0;
    let said = String::from_utf8_lossy(&output.stdout);
    for l in said.lines().chain(
        stderr
            .lines()
            .take_while(|l| !l.starts_with("\tCommand being timed")),
    ) {
        println!("training {kind}: | {l}");
    }
    println!("training {kind}: {wall:.1} s wall, {cpu:.1} s CPU, peak RSS {peak_mib:.1} MiB");
    (wall, cpu, peak_mib)
}

/// `anomalyd replay FILE --topic T --pace PACE`; returns its wall seconds.
fn replay(file: &Path, topic: &str, pace: &str) -> f64 {
    let t = Instant::now();
    let out = Command::new(bin())
        .arg("replay")
        .arg(file)
        .args([
            "--topic",
            topic,
            "--brokers",
            &kafka().brokers,
            "--pace",
            pace,
        ])
        .output()
        .expect("anomalyd replay runs");
    assert!(
        out.status.success(),
        "anomalyd replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secs = t.elapsed().as_secs_f64();
    for l in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        println!("replay: | {l}");
    }
    secs
}

/// examples/purchases.toml, pointed at this run's broker, input topic, models and socket,
/// with every other topic suffixed by `tag` (fresh outputs and groups each run) and the
/// invoices stage in `time`. Writes `<dir>/<tag>.toml`; returns it, the socket and the topics
/// to create (name, partitions).
fn purchases_config(
    dir: &Path,
    tag: &str,
    input: &str,
    models: &Path,
    time: &str,
) -> (PathBuf, PathBuf, Vec<(String, i32)>) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/purchases.toml");
    let mut c: toml::Table = std::fs::read_to_string(&example).unwrap().parse().unwrap();
    let k = c["kafka"].as_table_mut().unwrap();
    k.insert("brokers".into(), kafka().brokers.into());
    k.insert("group_id".into(), format!("bench-{tag}").into());
    let props = k
        .entry("properties")
        .or_insert_with(|| toml::Table::new().into())
        .as_table_mut()
        .unwrap();
    for (key, value) in kafka().properties {
        let value = match value {
            PropertyValue::Int(i) => toml::Value::Integer(i),
            PropertyValue::String(s) => toml::Value::String(s),
            PropertyValue::Bool(b) => toml::Value::Boolean(b),
            PropertyValue::Float(f) => toml::Value::Float(f),
        };
        props.insert(key, value);
    }
    let mut topics: Vec<(String, i32)> = Vec::new();
    let mut rename = |t: &mut toml::Table, key: &str, partitions: i32| {
        if let Some(v) = t.get(key).and_then(|v| v.as_str()) {
            let name = format!("{v}-{tag}");
            if !topics.iter().any(|(n, _)| *n == name) {
                topics.push((name.clone(), partitions));
            }
            t.insert(key.into(), name.into());
        }
    };
    // BENCH_WITHOUT=cancellations leaves that stage out (to see what it costs).
    let without = std::env::var("BENCH_WITHOUT").unwrap_or_default();
    let stages = c["stages"].as_table_mut().unwrap();
    for name in without.split(',').filter(|n| !n.is_empty()) {
        stages
            .remove(name)
            .unwrap_or_else(|| panic!("BENCH_WITHOUT: no stage {name} in examples/purchases.toml"));
    }
    for (name, s) in stages.iter_mut() {
        let s = s.as_table_mut().unwrap();
        s.insert("input_topic".into(), input.into());
        for key in [
            "output_topic",
            "invalid_topic",
            "late_topic",
            "dead_letter_topic",
        ] {
            rename(s, key, 3);
        }
        rename(s, "partials_topic", 1);
        if name == "invoices" {
            s.insert("time".into(), time.into());
            if time == "event" {
                // The event-time defaults (gap 120 s, grace 60 s): InvoiceDate has minute
                // resolution, and a 40 s gap would split invoices that straddle a minute.
                s.remove("inactivity_gap_s");
            }
        }
    }
    for (_, d) in c["detectors"].as_table_mut().unwrap().iter_mut() {
        let d = d.as_table_mut().unwrap();
        let input = format!("{}-{tag}", d["input_topic"].as_str().unwrap());
        d.insert("input_topic".into(), input.into());
        rename(d, "output_topic", 3);
        rename(d, "dead_letter_topic", 3);
        let model = models.join(Path::new(d["model"].as_str().unwrap()).file_name().unwrap());
        d.insert("model".into(), model.to_str().unwrap().into());
    }
    let socket = dir.join(format!("{tag}.sock"));
    c["control"]
        .as_table_mut()
        .unwrap()
        .insert("socket".into(), socket.to_str().unwrap().into());
    c["log"]
        .as_table_mut()
        .unwrap()
        .insert("level".into(), "warn".into());
    let path = dir.join(format!("{tag}.toml"));
    std::fs::write(&path, toml::to_string(&c).unwrap()).unwrap();
    (path, socket, topics)
}

fn start(config: &Path, log: &Path) -> Child {
    Command::new(bin())
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

async fn status(socket: &Path) -> Option<serde_json::Value> {
    let (_, body) = client::request(socket, "GET", "/status", Duration::from_secs(2))
        .await
        .ok()?;
    serde_json::from_str(&body).ok()
}

fn stage<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    s["stages"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == name))
        .map_or(&serde_json::Value::Null, |x| &x["counters"])
}

/// One round of part 2 (b).
struct Round {
    from_start: f64,
    from_first: f64,
    cpu: f64,
    peak: f64,
    summary: String,
}

/// Part 2 (b): `anomalyd run` over the replayed topic until both stages have read every line
/// and both detectors have scored every invoice the invoices stage had emitted by then.
async fn anomalyd_round(
    dir: &Path,
    models: &Path,
    input: &str,
    round: usize,
    not_cancellations: u64,
) -> Option<Round> {
    let tag = unique(&format!("r{round}"));
    let (cfg, socket, topics) = purchases_config(dir, &tag, input, models, "event");
    create_topics(&topics).await;
    let log = dir.join(format!("{tag}.log"));
    let t0 = Instant::now();
    let child = start(&cfg, &log);
    let mut first = None;
    let mut last = serde_json::Value::Null;
    loop {
        if let Some(s) = status(&socket).await {
            let (inv, can) = (stage(&s, "invoices"), stage(&s, "cancellations"));
            let read = |c: &serde_json::Value| c["records_in"].as_u64().unwrap_or(0);
            if read(inv) + read(can) > 0 {
                first.get_or_insert_with(Instant::now);
            }
            let emitted = inv["emitted"].as_u64().unwrap_or(0);
            let scored = s["detectors"].as_array().is_some_and(|d| {
                d.len() == 2
                    && d.iter()
                        .all(|d| d["records"].as_u64().unwrap_or(0) >= emitted)
            });
            // A stage left out (BENCH_WITHOUT) counts as done. The cancellations stage's
            // records_in also counts the partials its combiner reads, so it is done when it
            // has also skipped every line that is not a cancellation (at most the cancellation
            // lines after a partition's last other line may then be unread).
            let all = |c: &serde_json::Value| {
                c.is_null()
                    || (read(c) >= STREAM_LINES
                        && c["skipped"].as_u64().unwrap_or(0) >= not_cancellations)
            };
            let done = read(inv) >= STREAM_LINES && all(can) && scored;
            last = s;
            if done {
                break;
            }
        }
        if t0.elapsed() > ROUND_LIMIT {
            println!(
                "round {round}: anomalyd not done after {} s; left out (log {}); last status: {}",
                ROUND_LIMIT.as_secs(),
                log.display(),
                last
            );
            stop(child);
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let end = Instant::now();
    let (peak, cpu) = usage(child.id());
    stop(child);
    let inv = stage(&last, "invoices");
    let can = stage(&last, "cancellations");
    let dets: Vec<String> = last["detectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{} scored {} flagged {}",
                d["name"], d["records"], d["anomalies"]
            )
        })
        .collect();
    let summary = format!(
        "invoices stage: emitted {} invalid {} late {} open {} skipped {} dead letters {}; cancellations stage: emitted {} open {}; {}",
        inv["emitted"],
        inv["invalid"],
        inv["late"],
        inv["open"],
        inv["skipped"],
        inv["dead_letters"],
        can["emitted"],
        can["open"],
        dets.join(", ")
    );
    Some(Round {
        from_start: end.duration_since(t0).as_secs_f64(),
        from_first: end.duration_since(first.unwrap()).as_secs_f64(),
        cpu,
        peak,
        summary,
    })
}

async fn throughput(dir: &Path, models: &Path, stream: &Path) {
    let rounds = env_or("BENCH_ROUNDS", 3usize);
    let input = unique("purchases");
    create_topics(&[(input.clone(), 3)]).await;
    let secs = replay(stream, &input, "max");
    println!("throughput: replayed {STREAM_LINES} lines to {input} (3 partitions) in {secs:.1} s");
    // Lines whose InvoiceNo does not start with C: what the cancellations stage skips.
    let not_cancellations = std::fs::read_to_string(stream)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('C'))
        .count() as u64;
    let (mut base, mut ours, mut cpus, mut peaks) = (vec![], vec![], vec![], vec![]);
    let n = STREAM_LINES as f64;
    for round in 0..rounds {
        let b = consume_only(&kafka(), &unique("consume"), &input, STREAM_LINES).await;
        let (b_start, b_first) = (b.from_start, b.from_first);
        println!(
            "round {round}: consume-only {:.0} lines/s from the first record ({b_first:.2} s), {:.0} from start ({b_start:.2} s)",
            n / b_first,
            n / b_start
        );
        base.push(n / b_first);
        if let Some(r) = anomalyd_round(dir, models, &input, round, not_cancellations).await {
            println!(
                "round {round}: anomalyd {:.0} lines/s from the first record ({:.2} s), {:.0} from start ({:.2} s), CPU {:.1} s, peak RSS {:.1} MiB; {}",
                n / r.from_first,
                r.from_first,
                n / r.from_start,
                r.from_start,
                r.cpu,
                r.peak,
                r.summary
            );
            ours.push(n / r.from_first);
            cpus.push(r.cpu);
            peaks.push(r.peak);
        }
    }
    if ours.is_empty() {
        println!("throughput: no anomalyd round finished; no figures");
        return;
    }
    let (b, o) = (median(base.clone()), median(ours.clone()));
    println!(
        "throughput (median of {} and {}): consume-only {b:.0} lines/s, anomalyd {o:.0} lines/s, ratio {:.2}; anomalyd CPU {:.1} s, peak RSS {:.1} MiB (medians)",
        base.len(),
        ours.len(),
        o / b,
        median(cpus),
        median(peaks)
    );
}

/// Every record of `topic` as (key, Kafka timestamp in ms), read until 5 s pass with nothing
/// new.
async fn read_all(topic: &str) -> Vec<(String, i64)> {
    let reader: StreamConsumer = anomalyd::kafka::consumer_config(&kafka(), &unique("lat-reader"))
        .create()
        .unwrap();
    reader.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(5), reader.recv()).await {
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        out.push((key, m.timestamp().to_millis().expect("a timestamp")));
    }
    out
}

async fn latency(dir: &Path, models: &Path, stream: &Path) {
    let lines = env_or("BENCH_LATENCY_LINES", 20_000usize);
    let slice = dir.join("latency-slice.csv");
    let text = std::fs::read_to_string(stream).unwrap();
    let mut part: String = text.lines().take(lines).collect::<Vec<_>>().join("\n");
    part.push('\n');
    std::fs::write(&slice, part).unwrap();
    let input = unique("purchases-lat");
    let tag = unique("lat");
    let (cfg, socket, mut topics) = purchases_config(dir, &tag, &input, models, "processing");
    topics.push((input.clone(), 3));
    create_topics(&topics).await;
    let child = start(&cfg, &dir.join(format!("{tag}.log")));
    while !matches!(
        client::request(&socket, "GET", "/ready", Duration::from_secs(2)).await,
        Ok((200, _))
    ) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = tokio::task::spawn_blocking({
        let (slice, input) = (slice.clone(), input.clone());
        move || replay(&slice, &input, "original")
    })
    .await
    .unwrap();
    println!(
        "latency: replayed {lines} lines at the original's pace in {secs:.1} s ({:.2} ms a line)",
        secs * 1e3 / lines as f64
    );
    // Every invoice closes one gap after its last line; wait for the last and a margin.
    let give_up = Instant::now() + Duration::from_secs(120);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(s) = status(&socket).await {
            let inv = stage(&s, "invoices");
            if inv["records_in"].as_u64() >= Some(lines as u64) && inv["open"].as_i64() == Some(0) {
                break;
            }
        }
        if Instant::now() > give_up {
            println!(
                "latency: invoices still open 120 s after the replay; measuring what was emitted"
            );
            break;
        }
    }
    let (peak, cpu) = usage(child.id());
    stop(child);

    let mut last_line: HashMap<String, Vec<i64>> = HashMap::new();
    for (key, ts) in read_all(&input).await {
        last_line.entry(key).or_default().push(ts);
    }
    let topic_of = |key: &str| {
        topics
            .iter()
            .find(|(n, _)| n.starts_with(&format!("{key}-")))
            .unwrap()
            .0
            .clone()
    };
    let mut late = Vec::new();
    let mut unmatched = 0;
    let mut count = [0usize; 2];
    for (i, t) in ["invoices", "invalid_invoices"].iter().enumerate() {
        for (key, ts) in read_all(&topic_of(t)).await {
            count[i] += 1;
            // The invoice's last line: its latest line written before the invoice.
            match last_line
                .get(&key)
                .and_then(|v| v.iter().filter(|&&l| l <= ts).max())
            {
                Some(&l) => late.push((ts - l) as f64 - GAP_MS),
                None => unmatched += 1,
            }
        }
    }
    late.sort_by(f64::total_cmp);
    if late.is_empty() {
        println!("latency: no invoice emitted; no figures");
        return;
    }
    println!(
        "latency (processing time, gap 40 s, {lines} lines at the original's pace): {} invoices ({} valid, {} invalid, {unmatched} without a line before them), emitted after last line + gap: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, min {:.0} ms; daemon CPU {cpu:.1} s, peak RSS {peak:.1} MiB",
        late.len(),
        count[0],
        count[1],
        quantile(&late, 0.5),
        quantile(&late, 0.99),
        late.last().unwrap(),
        late[0],
    );
}

#[tokio::main]
async fn main() {
    let (train_file, stream) = data();
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    // The file names examples/purchases.toml gives the models.
    train("kmeans", &train_file, &models.join("purchases.kmeans"));
    train(
        "bisecting_kmeans",
        &train_file,
        &models.join("purchases.bisecting"),
    );
    if only.is_empty() || only == "throughput" {
        throughput(dir.path(), &models, &stream).await;
    }
    if only.is_empty() || only == "latency" {
        latency(dir.path(), &models, &stream).await;
    }
}
