//! The anomaly store at scale (issue 14's two performance bars), in one run:
//!
//! 0. insert: the write path alone (`Row::parse` and `Store::insert` in batches of 5,000 into
//!    a growing SQLite file, as benches/store.rs), the store's SQLite settings against
//!    SQLite's defaults, batch by batch alternating: rows/s over wall and CPU time, medians.
//! 1. ingest: ANOMALIES sensor anomaly records, made by the real output code (the sensors
//!    generator's readings at its largest fault share, judged by the shipped rules detector's
//!    rules, `anomalies::write_anomaly`), are written to a 3-partition topic; then, ROUNDS
//!    times each, alternating (each first in turn): (a) a consume-only baseline, one
//!    consumer group with anomalyd's consumer settings (and the shipped config's
//!    `fetch.wait.max.ms = 10`, as (b)) that reads every record and, as the store does,
//!    stores and commits its offsets every 5,000 (the store's batch) and at the end, nothing
//!    else, beside an idle copy of (b)'s watcher (see `WATCH`); (b) the store task
//!    (`sinks::store::run`, the daemon's own) with `event_time_field = "/timestamp"` into a
//!    fresh SQLite file, until it has stored every row and returned (offsets committed). Both
//!    are timed from creating the consumer; rows/s, medians, their ratio; and the process's
//!    peak resident set in each round (reset before it; the bench's own memory included).
//! 2. query: a store of QUERY_ROWS rows (four detectors, 1,000 keys, 30 days of event time,
//!    batches of 50,000), then QUERY_RUNS times `anomalyd query --detector D --since H
//!    --until H+1h`, and as many with `--count --by 1m`, for a random hour and detector each
//!    time: the flags read by the CLI's parser and `Query::from_args`, the store opened by
//!    `open_for_query` and the query run by `Query::execute` into a buffer, as `anomalyd
//!    query` does (process start and config loading left out); p50, p99, max.
//!
//! Parts 1 and 2 open their store with `store::open(&StoreConfig)`, so the backend is the one
//! a `[store]` section names: `BENCH_STORE_TOML` is such a body (default empty: SQLite in a
//! temp file); a store that outlives a round is emptied first (`delete_before(i64::MAX)`).
//!
//! `BENCH_ONLY=insert|ingest|query` runs one part (only ingest needs the broker).
//! `BENCH_INSERT_BATCHES` (60), `BENCH_ANOMALIES` (100000), `BENCH_ROUNDS` (3),
//! `BENCH_QUERY_ROWS` (1000000) and `BENCH_QUERY_RUNS` (500) change the sizes.
//!
//! Run with `scripts/bench-store` (it starts a throw-away broker and sets
//! `KAFKA_TEST_BROKERS`). Figures are in docs/benchmarks.md.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anomalyd::cli::{Cli, Command};
use anomalyd::config::KafkaConfig;
use anomalyd::detect::scorer::RulesScorer;
use anomalyd::record::Record;
use anomalyd::sinks::SourceRef;
use anomalyd::sinks::anomalies::{Additions, Detection, write_anomaly};
use anomalyd::sinks::store::query::{Query, open_for_query};
use anomalyd::sinks::store::row::{At, Row, format_ms};
use anomalyd::sinks::store::{self, StoreConfig, StoreMetrics};
use anomalyd::source::generator::sensors;
use clap::Parser;
use common::{
    Writer, create_topics, env_or, median, peak_rss_mib, quantile, reset_peak_rss, unique,
};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

const SCRIPT: &str = "scripts/bench-store";
/// Records per transaction of the store task (`batch_max`'s default), and per commit of the
/// baseline.
const BATCH: u64 = 5000;
/// Sensors of the generated stream (keys).
const SENSORS: u64 = 1000;
/// Rows per transaction when building the query store.
const BUILD_BATCH: usize = 50_000;
/// The query store's detectors.
const DETECTORS: [&str; 4] = ["sensors", "sensors_watch", "machines", "purchases"];
/// The query store's event times: 30 days from 2026-10-01T00:00:00Z.
const START_MS: i64 = 1_790_812_800_000;
const SPAN_MS: i64 = 30 * 86_400_000;
const HOUR_MS: i64 = 3_600_000;
/// How often a round's watcher looks at the store's row count. Both (a) and (b) run beside
/// one, on the same thread: a future that wakes every 5 ms also polls the consumer that often,
/// and without it a lone consume loop read 3 to 6 times slower (rdkafka's `StreamConsumer`
/// seems to miss wake-ups), so (a) has an idle one too.
const WATCH: Duration = Duration::from_millis(5);
/// A round that has not finished by then is named and left out of the figures.
const ROUND_LIMIT: Duration = Duration::from_secs(600);

/// `n` anomaly records as the shipped sensors detector writes them, with their keys: readings
/// of the sensors generator (seed 42, `SENSORS` sensors, the largest fault share) stamped a
/// millisecond apart from `start`, judged by the rules `hot` and `high_pressure`; only those a
/// rule fired on are kept.
fn anomalies(n: usize, start: SystemTime) -> Vec<(String, Vec<u8>)> {
    let scorer = RulesScorer::compile(&[
        ("hot".to_owned(), "temperature > 40.0".to_owned()),
        ("high_pressure".to_owned(), "pressure > 120.0".to_owned()),
    ])
    .unwrap();
    let mut out = Vec::with_capacity(n);
    let mut buf = Vec::new();
    let mut i = 0u64;
    while out.len() < n {
        let at = start + Duration::from_millis(i);
        let (key, value, fault) =
            sensors::record(42, SENSORS, sensors::MAX_FAULT_SHARE, i, at, false);
        i += 1;
        // Only faulty readings can fire the rules (the generator's contract); the rules judge.
        if fault.is_none() {
            continue;
        }
        let text = value.to_string();
        let record = Record::parse(Some(text.as_bytes())).unwrap();
        let from = SourceRef {
            topic: "sensor-data",
            partition: (i % 3) as i32,
            offset: (i / 3) as i64,
        };
        let detection = Detection {
            score: 1.0,
            decision: -1.0,
            features: &[],
        };
        let mut additions = Additions::new(&record, &detection, "sensors", &scorer, from, at);
        if additions.explanation.is_empty() {
            continue;
        }
        // The rules' score: how many fired.
        additions.score = additions.explanation.len() as f64;
        write_anomaly(&mut buf, &record, &additions);
        out.push((key, buf.clone()));
    }
    out
}

async fn produce(kafka: &KafkaConfig, topic: &str, records: &[(String, Vec<u8>)]) {
    let producer: FutureProducer = anomalyd::kafka::producer_config(kafka).create().unwrap();
    let mut writer = Writer::new(producer);
    for (key, payload) in records {
        writer.send(topic, key.as_bytes(), payload).await;
    }
    writer.finish().await;
}

/// A commit's result: "no offset stored" only says an earlier commit (or the auto-commit)
/// already covered every offset.
fn committed(result: KafkaResult<()>) {
    match result {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => panic!("commit: {e}"),
    }
}

/// Part 1 (a): seconds from creating the consumer to the last commit, and from the first
/// record. As the store task does, one past each partition's last offset is kept, and stored
/// and committed every [`BATCH`] records.
async fn baseline(kafka: &KafkaConfig, topic: &str, records: u64) -> (f64, f64) {
    let t0 = Instant::now();
    let consumer: StreamConsumer = anomalyd::kafka::consumer_config(kafka, &unique("consume"))
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut first = None;
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let commit = |next: &mut BTreeMap<(String, i32), i64>, mode| {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in std::mem::take(next) {
            tpl.add_partition_offset(&topic, partition, Offset::Offset(offset))
                .unwrap();
        }
        consumer.store_offsets(&tpl).unwrap();
        committed(consumer.commit_consumer_state(mode));
    };
    let done = AtomicBool::new(false);
    let read = async {
        for n in 1..=records {
            let m = consumer.recv().await.unwrap();
            first.get_or_insert_with(Instant::now);
            next.insert((m.topic().to_owned(), m.partition()), m.offset() + 1);
            if n % BATCH == 0 {
                commit(&mut next, CommitMode::Async);
            }
        }
        done.store(true, Relaxed);
    };
    // The store round's watcher, doing nothing here: see [`WATCH`].
    let watch = async {
        while !done.load(Relaxed) {
            tokio::time::sleep(WATCH).await;
        }
    };
    tokio::join!(read, watch);
    if !next.is_empty() {
        commit(&mut next, CommitMode::Async);
    }
    committed(consumer.commit_consumer_state(CommitMode::Sync));
    (
        t0.elapsed().as_secs_f64(),
        first.unwrap().elapsed().as_secs_f64(),
    )
}

/// `BENCH_STORE_TOML`, a `[store]` body (default: empty, SQLite), with `path` set to
/// `default_path` unless it gives one.
fn configured(default_path: PathBuf) -> StoreConfig {
    let body = std::env::var("BENCH_STORE_TOML").unwrap_or_default();
    let mut c: StoreConfig = toml::from_str(&body)
        .unwrap_or_else(|e| panic!("BENCH_STORE_TOML is not a [store] body: {e}"));
    c.path.get_or_insert(default_path);
    c
}

/// The `[store]` of part 1 (b), round `round`: [`configured`] with a fresh SQLite file in
/// `dir`, `event_time_field = "/timestamp"` unless it gives one, a fresh group, `topic`.
fn store_config(dir: &Path, topic: &str, round: usize) -> StoreConfig {
    let mut c = configured(dir.join(format!("ingest-{round}.db")));
    c.event_time_field
        .get_or_insert_with(|| "/timestamp".into());
    c.topics = vec![topic.to_owned()];
    c.group_id = Some(unique("store"));
    c
}

/// Part 1 (b): seconds from starting the store task to its having stored `records` rows and
/// returned (its last offsets committed); `None` past [`ROUND_LIMIT`].
async fn store_round(kafka: &KafkaConfig, config: &StoreConfig, records: u64) -> Option<f64> {
    let metrics = StoreMetrics::default();
    let token = CancellationToken::new();
    let t0 = Instant::now();
    let task = store::run(
        config,
        kafka,
        &config.topics,
        &metrics,
        || {},
        token.clone(),
    );
    let watch = async {
        while metrics.rows_stored.load(Relaxed) < records && t0.elapsed() < ROUND_LIMIT {
            tokio::time::sleep(WATCH).await;
        }
        token.cancel();
    };
    let (result, ()) = tokio::join!(task, watch);
    result.unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let stored = metrics.rows_stored.load(Relaxed);
    if stored < records {
        println!("  store round: only {stored} of {records} rows after {ROUND_LIMIT:?}; left out");
        return None;
    }
    let s = metrics.snapshot();
    assert_eq!(
        (
            s.skipped_records,
            s.event_time_fallbacks,
            s.duplicates_ignored
        ),
        (0, 0, 0),
        "every record is an anomaly with its event time, stored once"
    );
    Some(secs)
}

async fn ingest(dir: &Path) {
    let kafka = common::kafka(SCRIPT);
    let n = env_or("BENCH_ANOMALIES", 100_000usize);
    let rounds = env_or("BENCH_ROUNDS", 3usize);
    let topic = unique("anomalies");
    create_topics(&kafka, &[(topic.clone(), 3)]).await;
    let t = Instant::now();
    let records = anomalies(n, SystemTime::now());
    let bytes: usize = records.iter().map(|(_, p)| p.len()).sum();
    println!(
        "ingest: {n} anomaly records made in {:.1} s, {:.0} bytes each on average",
        t.elapsed().as_secs_f64(),
        bytes as f64 / n as f64
    );
    let t = Instant::now();
    produce(&kafka, &topic, &records).await;
    drop(records);
    println!(
        "ingest: written to {topic} (3 partitions) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let backend = format!("{:?}", store_config(dir, &topic, 0).backend).to_lowercase();
    let (mut base, mut base_first, mut base_rss, mut ours, mut ours_rss) =
        (vec![], vec![], vec![], vec![], vec![]);
    for round in 1..=rounds {
        // Each goes first in turn, so that neither always reads from a warmer broker.
        for consume_only in [round % 2 == 1, round % 2 == 0] {
            if consume_only {
                reset_peak_rss();
                let (all, first) = baseline(&kafka, &topic, n as u64).await;
                let rss = peak_rss_mib().unwrap_or(f64::NAN);
                println!(
                    "  round {round} (a) consume only: {all:.2} s ({:.0} rows/s; {:.0} from the first record), peak RSS {rss:.1} MiB",
                    n as f64 / all,
                    n as f64 / first
                );
                base.push(n as f64 / all);
                base_first.push(n as f64 / first);
                base_rss.push(rss);
                continue;
            }
            let config = store_config(dir, &topic, round);
            // A store that outlives a round (a configured file, a server) is emptied first,
            // so that every round writes every row. On a blocking thread, as the store task
            // does: the PostgreSQL client blocks on a runtime of its own.
            let empty = config.clone();
            tokio::task::spawn_blocking(move || {
                store::open(&empty)
                    .unwrap()
                    .delete_before(i64::MAX)
                    .unwrap();
            })
            .await
            .unwrap();
            reset_peak_rss();
            if let Some(secs) = store_round(&kafka, &config, n as u64).await {
                let rss = peak_rss_mib().unwrap_or(f64::NAN);
                println!(
                    "  round {round} (b) store ({backend}): {secs:.2} s ({:.0} rows/s), peak RSS {rss:.1} MiB",
                    n as f64 / secs
                );
                ours.push(n as f64 / secs);
                ours_rss.push(rss);
            }
            if let Some(path) = config.path.as_ref().filter(|p| p.starts_with(dir)) {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
        }
    }
    let (b, o) = (median(base), median(ours));
    println!(
        "ingest, medians of {rounds} rounds: consume only {b:.0} rows/s ({:.0} from the first record), store ({backend}) {o:.0} rows/s, ratio {:.2}x; peak RSS {:.1} / {:.1} MiB",
        median(base_first),
        o / b,
        median(base_rss),
        median(ours_rss)
    );
}

/// SQLite's own defaults for the settings the store changes: a 2 MiB page cache, a
/// checkpoint every 1,000 pages of WAL.
const SQLITE_DEFAULTS: [(&str, i64); 2] = [("cache_size", -2000), ("wal_autocheckpoint", 1000)];

/// Part 0: the write path alone (as benches/store.rs's `parse_and_insert`: `Row::parse` and
/// `Store::insert` in batches of 5,000 into a growing file), the store's settings against
/// SQLite's defaults, batch by batch alternating, each into its own file: rows/s over wall
/// time and over the thread's CPU time, medians.
fn insert_settings(dir: &Path) {
    use anomalyd::sinks::store::Store;
    use anomalyd::sinks::store::sqlite::SqliteStore;
    let batches = env_or("BENCH_INSERT_BATCHES", 60usize);
    let records = anomalies(5000, SystemTime::now());
    let variants: [(&str, &[(&str, i64)]); 2] = [
        ("SQLite's defaults", &SQLITE_DEFAULTS),
        ("the store's", &[]),
    ];
    let mut stores: Vec<SqliteStore> = variants
        .iter()
        .enumerate()
        .map(|(i, (_, pragmas))| {
            let s = SqliteStore::open(&dir.join(format!("insert-{i}.db"))).unwrap();
            for (p, v) in pragmas.iter() {
                s.connection().pragma_update(None, p, v).unwrap();
            }
            s
        })
        .collect();
    let mut wall = vec![Vec::new(); stores.len()];
    let mut cpu = vec![Vec::new(); stores.len()];
    for b in 0..batches {
        for k in 0..stores.len() {
            // Each variant goes first in turn.
            let v = (k + b) % stores.len();
            let t = Instant::now();
            let c = cpu_time::ThreadTime::now();
            let rows: Vec<Row> = records
                .iter()
                .enumerate()
                .map(|(i, (key, payload))| {
                    Row::parse(
                        At {
                            topic: "sensor-anomalies",
                            partition: 0,
                            offset: (b * records.len() + i) as i64,
                            timestamp_ms: START_MS,
                        },
                        Some(key.as_bytes()),
                        payload,
                        Some("/timestamp"),
                    )
                    .unwrap()
                })
                .collect();
            stores[v].insert(&rows).unwrap();
            cpu[v].push(rows.len() as f64 / c.elapsed().as_secs_f64());
            wall[v].push(rows.len() as f64 / t.elapsed().as_secs_f64());
        }
    }
    for (v, (name, _)) in variants.iter().enumerate() {
        println!(
            "insert, {name}: {:.0} rows/s (wall), {:.0} rows/s (CPU), medians of {batches} batches of 5000",
            median(wall[v].clone()),
            median(cpu[v].clone())
        );
    }
}

/// A 64-bit mix (splitmix64's finaliser), for repeatable pseudo-random picks.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Part 2's store: `rows` rows in `config`'s store (emptied first), row `i` of detector `DETECTORS[i % 4]`, key
/// `sensor-NNN` of a generated anomaly (1,000 keys), event time `START_MS + i * SPAN_MS /
/// rows`, the record one of 4,000 generated anomalies.
fn build(config: &StoreConfig, rows: usize) {
    let templates: Vec<Row> = anomalies(4000, SystemTime::now())
        .iter()
        .enumerate()
        .map(|(i, (key, payload))| {
            Row::parse(
                At {
                    topic: "sensor-anomalies",
                    partition: 0,
                    offset: i as i64,
                    timestamp_ms: START_MS,
                },
                Some(key.as_bytes()),
                payload,
                None,
            )
            .unwrap()
        })
        .collect();
    let mut s = store::open(config).unwrap();
    s.delete_before(i64::MAX).unwrap();
    let mut batch = Vec::with_capacity(BUILD_BATCH);
    for i in 0..rows {
        let mut r = templates[mix(i as u64) as usize % templates.len()].clone();
        r.partition = (i % 3) as i32;
        r.offset = (i / 3) as i64;
        r.detector = DETECTORS[i % DETECTORS.len()].to_owned();
        r.event_time_ms = START_MS + (i as i64 * SPAN_MS) / rows as i64;
        r.detected_at_ms = r.event_time_ms + 40;
        batch.push(r);
        if batch.len() == BUILD_BATCH || i + 1 == rows {
            s.insert(&batch).unwrap();
            batch.clear();
        }
    }
}

/// `anomalyd query` with `flags` over `config`'s store: parsed, opened, run into a buffer;
/// seconds, and the output's lines.
fn query_once(config_file: &Path, store: &StoreConfig, flags: &[String]) -> (f64, usize) {
    let t = Instant::now();
    let mut argv = vec![
        "anomalyd".to_owned(),
        "query".to_owned(),
        "--config".to_owned(),
        config_file.display().to_string(),
    ];
    argv.extend_from_slice(flags);
    let Command::Query(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!("a query command")
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let query = Query::from_args(&args, now_ms).unwrap();
    let opened = open_for_query(store).unwrap();
    let mut out = Vec::new();
    query.execute(opened.as_ref(), &mut out).unwrap();
    let secs = t.elapsed().as_secs_f64();
    (secs, out.iter().filter(|&&b| b == b'\n').count())
}

fn query(dir: &Path) {
    let rows = env_or("BENCH_QUERY_ROWS", 1_000_000usize);
    let runs = env_or("BENCH_QUERY_RUNS", 500usize);
    let config = configured(dir.join("query.db"));
    let path = config.db_path();
    let t = Instant::now();
    build(&config, rows);
    let size: u64 = ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "query: built a store of {rows} rows ({} detectors, {SENSORS} keys, 30 days) in {:.1} s, {:.0} MiB",
        DETECTORS.len(),
        t.elapsed().as_secs_f64(),
        size as f64 / 1_048_576.0
    );
    // Only for the parser: `--config` is not read here.
    let config_file = dir.join("anomalyd.toml");
    for (name, extra) in [
        ("rows (table, default --limit 50)", &[][..]),
        ("--count --by 1m", &["--count", "--by", "1m"][..]),
    ] {
        let mut times = Vec::with_capacity(runs);
        let mut lines = Vec::with_capacity(runs);
        for run in 0..runs {
            let pick = mix(run as u64 ^ 0x5eed);
            let hour = (pick % (SPAN_MS / HOUR_MS) as u64) as i64;
            let since = START_MS + hour * HOUR_MS;
            let mut flags: Vec<String> = [
                "--detector",
                DETECTORS[(pick >> 32) as usize % DETECTORS.len()],
                "--since",
                &format_ms(since),
                "--until",
                &format_ms(since + HOUR_MS),
            ]
            .map(str::to_owned)
            .to_vec();
            flags.extend(extra.iter().map(|s| (*s).to_owned()));
            let (secs, n) = query_once(&config_file, &config, &flags);
            assert!(n > 1, "one hour of one detector has rows");
            times.push(secs * 1000.0);
            lines.push(n as f64);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "query, one hour of one detector, {name}: {runs} runs, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({:.0} output lines, median)",
            quantile(&times, 0.5),
            quantile(&times, 0.99),
            times[times.len() - 1],
            median(lines)
        );
    }
}

#[tokio::main]
async fn main() {
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    if only.is_empty() || only == "insert" {
        insert_settings(dir.path());
    }
    if only.is_empty() || only == "ingest" {
        ingest(dir.path()).await;
    }
    if only.is_empty() || only == "query" {
        query(dir.path());
    }
}
