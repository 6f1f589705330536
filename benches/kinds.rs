//! CPU and memory per record for every detector kind and stage, without the broker, each
//! through the code the daemon runs for it (issue 16, deliver 4), against the transactions
//! forest detector of the same run:
//!
//! - **detectors** (`forest`, `kmeans`, `bisecting`, `rules`, `rules_for`): batches of 500 as
//!   `detect::worker` scores them: `Record::parse`, features when the scorer needs them,
//!   the worker's own scoring step, `scorer::score_partition_batch` (`Scorer::score_batch`, or
//!   `score_keyed` with the partition's `Streaks` for rules with `for`), and for each anomaly
//!   its `Additions::judged` (explanation included) spliced into the output record by
//!   `write_anomaly`. Inputs: the forest gets the generator's records (20 %
//!   outliers, synthetic model, seed 42), as `benches/hotpath.rs`; the rules get the sensors
//!   generator's readings (100 sensors, 1 % faults), keyed by `sensor_id`, with the shipped
//!   rules `temperature > 40.0` and `pressure > 120.0` (`rules_for`: `for = 3` on both); k-means
//!   and bisecting k-means get the invoices the `invoices` stage assembles from
//!   `tests/data/retail/stream_slice.csv` (repeated to 10,000 records), scored by models
//!   trained here on `tests/data/retail/train_slice.csv` with `train_clusters` (k auto, seed 42,
//!   threshold `quantile:0.95`, since `top:2000` needs more invoices than the slice holds).
//! - **stages** (`invoices`, `cancellations`): `Stage::process` for each line of
//!   `stream_slice.csv` (3,000 lines) in event time, `Stage::punctuate` after every 1,000, as
//!   `stages::worker` does; a fresh stage each pass.
//! - **store**: the scored readings the `rules` kind publishes with a `scored_topic` (every
//!   reading, anomalies marked), as the store task writes them:
//!   `Row::parse` and `SqliteStore::insert` in transactions of 5,000 rows, into a fresh file
//!   each pass (WAL, `synchronous = FULL`; `benches/store.rs` has the criterion figures).
//!
//! Run plainly, the bench runs each kind in a child process of its own (itself, with
//! `KINDS_ONLY=<kind>`), so that each kind's peak RSS (`VmHWM`) is its own, and prints one line
//! per kind: ns a record (median of `KINDS_ROUNDS`, 5, passes), the child's peak RSS, and for
//! the kinds with per-key state the bytes one open state takes, measured as the growth of the
//! process's resident set (`VmRSS`) while 100,000 states are opened, divided by 100,000: an
//! open `for` streak key (`Streaks`), an open invoice session (`InvoiceStage`, one line each),
//! and one cancelled invoice counted in its 8 open hopping windows (`CancellationStage`).
//!
//! Instructions a record: each pass is the function `measured_pass`, never inlined, so
//! `valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured_pass*'` counts
//! only it (docs/benchmarks.md, "Per detector kind and stage", has the commands).

use std::collections::HashMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anomalyd::config::FeatureSpec;
use anomalyd::config::stages::TimeMode;
use anomalyd::detect::features::FeatureExtractor;
use anomalyd::detect::kmeans::ThresholdRule;
use anomalyd::detect::model::LoadedModel;
use anomalyd::detect::scorer::{
    Batch, Needs, RulesScorer, Scored, Scorer, Unscorable, score_partition_batch,
};
use anomalyd::detect::streaks::Streaks;
use anomalyd::offline::train::{TrainInput, TrainOptions, train};
use anomalyd::offline::train_kmeans::{ClusterKind, ClusterTrainOptions, train_clusters};
use anomalyd::sinks::SourceRef;
use anomalyd::sinks::anomalies::{Additions, Detection, write_anomaly};
use anomalyd::sinks::store::Store;
use anomalyd::sinks::store::row::{At, Row};
use anomalyd::sinks::store::sqlite::SqliteStore;
use anomalyd::stages::aggregate::invoice::Columns;
use anomalyd::stages::cancellations::{CancellationOutputs, CancellationStage};
use anomalyd::stages::hopping_window::DistinctWindows;
use anomalyd::stages::invoices::{InvoiceOutputs, InvoiceStage};
use anomalyd::stages::metrics::StageMetrics;
use anomalyd::stages::session_window::{SessionConfig, SessionWindows};
use anomalyd::stages::window::Hopping;
use anomalyd::stages::worker::{Emit, Stage};
use rdkafka::Timestamp;
use rdkafka::message::{Message, OwnedMessage};

/// The detector's default `batch_max`.
const BATCH: usize = 500;
/// Records a stage worker processes before it looks at the clock (`stages::worker`).
const STAGE_BATCH: usize = 1000;
/// Rows a store transaction holds here (as `benches/store.rs`).
const STORE_BATCH: usize = 5000;
/// States opened to measure the bytes one takes.
const STATES: usize = 100_000;

const KINDS: [&str; 8] = [
    "forest",
    "kmeans",
    "bisecting",
    "rules",
    "rules_for",
    "invoices",
    "cancellations",
    "store",
];

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/retail")
        .join(name)
}

/// A line of the process's `/proc/self/status`, in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("the field in /proc/self/status")
}

fn message(payload: Vec<u8>, key: Option<Vec<u8>>, offset: i64) -> OwnedMessage {
    OwnedMessage::new(
        Some(payload),
        key,
        "in".into(),
        Timestamp::NotAvailable,
        0,
        offset,
        None,
    )
}

/// The lines of a retail slice, each a Kafka record keyed by its InvoiceNo.
fn retail_lines(name: &str) -> Vec<OwnedMessage> {
    let text = std::fs::read(data(name)).expect("a tests/data/retail slice");
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, l)| {
            let key = l.split(|&b| b == b',').next().unwrap_or_default().to_vec();
            message(l.to_vec(), Some(key), i as i64)
        })
        .collect()
}

fn invoice_stage(mode: TimeMode, max_open: usize) -> InvoiceStage {
    let sessions = SessionWindows::new(SessionConfig {
        time: mode,
        inactivity_gap_ms: 120_000,
        grace_ms: 60_000,
        max_open,
        remember_closed: 100_000,
    })
    .expect("a valid session config");
    let outputs = Arc::new(InvoiceOutputs {
        invoices: "invoices".into(),
        invalid: "invalid_invoices".into(),
        late: "purchases.late".into(),
        dead_letter: "purchases.dead-letter".into(),
    });
    InvoiceStage::new(
        sessions,
        mode,
        Arc::new(Columns::online_retail()),
        outputs,
        "purchases",
        0,
        Arc::new(StageMetrics::default()),
    )
}

fn cancellation_stage() -> CancellationStage {
    let hopping = Hopping::of_size_and_advance(480_000, 60_000).expect("8 min / 1 min");
    let windows = DistinctWindows::new(hopping, 60_000, TimeMode::Event, 0).expect("a valid grace");
    let outputs = Arc::new(CancellationOutputs {
        partials: "cancellations.partials".into(),
        counts: "cancellations".into(),
        late: "cancellations.late".into(),
        dead_letter: "cancellations.dead-letter".into(),
    });
    CancellationStage::new(
        windows,
        TimeMode::Event,
        Arc::new(Columns::online_retail()),
        outputs,
        0,
        Arc::new(StageMetrics::default()),
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What one kind works on.
enum Work {
    Detector {
        scorer: Arc<dyn Scorer>,
        extractor: FeatureExtractor,
        payloads: Vec<Vec<u8>>,
        keys: Vec<Option<Vec<u8>>>,
    },
    Stage {
        make: fn() -> Box<dyn Stage>,
        lines: Vec<OwnedMessage>,
    },
    Store {
        payloads: Vec<Vec<u8>>,
        dir: tempfile::TempDir,
    },
}

impl Work {
    fn records(&self) -> usize {
        match self {
            Work::Detector { payloads, .. } | Work::Store { payloads, .. } => payloads.len(),
            Work::Stage { lines, .. } => lines.len(),
        }
    }
}

/// The transactions detector's model and records, as `benches/hotpath.rs`.
fn forest(dir: &Path, n: usize) -> Work {
    let path = dir.join("seed.iforest");
    train(&TrainOptions::synthetic(42, path.clone())).expect("the synthetic forest trains");
    let model = LoadedModel::load(&path).expect("the forest loads");
    let now = SystemTime::now();
    let payloads: Vec<Vec<u8>> = (0..n as u64)
        .map(|id| {
            anomalyd::source::generator::record(42, id, 0.2, now)
                .to_string()
                .into_bytes()
        })
        .collect();
    let extractor = FeatureExtractor::new(FeatureSpec::Field("data".into()), model.n_features());
    Work::Detector {
        scorer: Arc::new(model),
        extractor,
        keys: vec![None; payloads.len()],
        payloads,
    }
}

/// The sensors generator's readings (100 sensors, 1 % faults), keyed by `sensor_id`.
fn readings(n: usize) -> (Vec<Vec<u8>>, Vec<Option<Vec<u8>>>) {
    let now = SystemTime::now();
    (0..n as u64)
        .map(|i| {
            let (key, value, _) =
                anomalyd::source::generator::sensors::record(42, 100, 0.01, i, now, false);
            (value.to_string().into_bytes(), Some(key.into_bytes()))
        })
        .unzip()
}

fn rules(n: usize, need: u32) -> Work {
    let pairs = vec![
        ("hot".to_owned(), "temperature > 40.0".to_owned()),
        ("high_pressure".to_owned(), "pressure > 120.0".to_owned()),
    ];
    let scorer = RulesScorer::compile(&pairs)
        .expect("the shipped rules compile")
        .with_for(vec![need; 2]);
    let (payloads, keys) = readings(n);
    Work::Detector {
        scorer: Arc::new(scorer),
        extractor: FeatureExtractor::new(FeatureSpec::Field(String::new()), 0),
        payloads,
        keys,
    }
}

/// The invoices the `invoices` stage assembles from the stream slice (valid ones, as the
/// detectors read them), repeated to `n` records; the model trained on the train slice.
fn clusters(dir: &Path, kind: ClusterKind, n: usize) -> Work {
    let path = dir.join(kind.name());
    let mut options = ClusterTrainOptions::new(
        kind,
        TrainInput::Purchases {
            path: data("train_slice.csv"),
        },
        path.clone(),
    );
    options.threshold = ThresholdRule::Quantile(0.95);
    train_clusters(&options).expect("the cluster model trains on the train slice");
    let model = LoadedModel::load(&path).expect("the cluster model loads");
    let mut stage = invoice_stage(TimeMode::Event, 100_000);
    let mut out = Vec::new();
    for m in retail_lines("stream_slice.csv") {
        stage.process(&m, 0, &mut out);
    }
    stage.punctuate(i64::MAX / 2, &mut out);
    let invoices: Vec<Vec<u8>> = out
        .into_iter()
        .filter(|e| &*e.topic == "invoices")
        .map(|e| e.value)
        .collect();
    assert!(
        !invoices.is_empty(),
        "the stream slice gives valid invoices"
    );
    let payloads: Vec<Vec<u8>> = invoices.iter().cycle().take(n).cloned().collect();
    let pointers = [
        "mean_unit_price",
        "min_unit_price",
        "max_unit_price",
        "hour",
        "quantity_sum",
    ]
    .map(|f| format!("/features/{f}"))
    .to_vec();
    Work::Detector {
        extractor: FeatureExtractor::new(FeatureSpec::Pointers(pointers), model.n_features()),
        scorer: Arc::new(model),
        keys: vec![None; payloads.len()],
        payloads,
    }
}

/// What the `rules` kind publishes to a `scored_topic` for `n` readings: every reading with
/// its verdict (the store charts them with the anomalies marked).
fn store(n: usize) -> Work {
    let Work::Detector {
        scorer,
        extractor,
        payloads,
        keys,
    } = rules(n, 1)
    else {
        unreachable!("rules are a detector")
    };
    let mut anomalies = Vec::new();
    detector_pass(
        &*scorer,
        &extractor,
        &payloads,
        &keys,
        &mut None,
        Some(&mut anomalies),
    );
    Work::Store {
        payloads: anomalies,
        dir: tempfile::tempdir().expect("a temp dir"),
    }
}

/// The records through the detector worker's stages, in batches of `BATCH`; returns the bytes
/// of the anomalies built. With `keep`, every record's output is built and kept, as for a
/// detector with a `scored_topic` (the anomalies and the others, each marked).
fn detector_pass(
    scorer: &dyn Scorer,
    extractor: &FeatureExtractor,
    payloads: &[Vec<u8>],
    keys: &[Option<Vec<u8>>],
    streaks: &mut Option<Streaks>,
    mut keep: Option<&mut Vec<Vec<u8>>>,
) -> usize {
    let nf = match scorer.needs() {
        Needs::Features(n) => n,
        Needs::Record => 0,
    };
    let mut written = 0;
    for (b, (chunk, chunk_keys)) in payloads.chunks(BATCH).zip(keys.chunks(BATCH)).enumerate() {
        let first = (b * BATCH) as i64;
        let mut rows = Vec::with_capacity(chunk.len() * nf);
        let mut records = Vec::with_capacity(chunk.len());
        for p in chunk {
            let r = FeatureExtractor::parse(Some(p)).expect("the bench's records parse");
            if nf > 0 {
                extractor
                    .extract(&r, &mut rows)
                    .expect("the bench's records have features");
            }
            records.push(r);
        }
        let mut scored: Vec<Result<Scored, Unscorable>> = vec![Ok(Scored::default()); chunk.len()];
        let refs: Vec<_> = records.iter().collect();
        let input = Batch {
            rows: &rows,
            records: &refs,
        };
        let keyed = || {
            let keys = chunk_keys.iter().map(|k| k.as_deref()).collect();
            (keys, (0..chunk.len() as i64).map(|i| first + i).collect())
        };
        let mut explanations = score_partition_batch(scorer, &input, streaks, keyed, &mut scored);
        let now = SystemTime::now();
        for (k, record) in records.iter().enumerate() {
            let Ok(Scored { score, decision }) = scored[k] else {
                panic!("the bench's records can be judged");
            };
            let anomaly = decision < 0.0;
            if !anomaly && keep.is_none() {
                continue;
            }
            let detection = Detection {
                score,
                decision,
                features: &rows[k * nf..(k + 1) * nf],
            };
            let from = SourceRef {
                topic: "in",
                partition: 0,
                offset: first + k as i64,
            };
            let mut additions = Additions::judged(
                record,
                &detection,
                "bench",
                scorer,
                from,
                now,
                explanations.get_mut(k),
            );
            if keep.is_some() {
                // As with `scored_topic`: every record, its verdict marked.
                additions.anomaly = Some(anomaly);
            }
            let mut payload = Vec::new();
            write_anomaly(&mut payload, record, &additions);
            written += payload.len();
            match keep.as_deref_mut() {
                Some(kept) => kept.push(payload),
                None => drop(black_box(payload)),
            }
        }
    }
    written
}

/// Every line through a fresh stage, punctuated every `STAGE_BATCH` lines; returns the
/// outputs' bytes.
fn stage_pass(make: fn() -> Box<dyn Stage>, lines: &[OwnedMessage]) -> usize {
    let mut stage = make();
    let mut out: Vec<Emit> = Vec::new();
    let mut bytes = 0;
    let now = now_ms();
    for chunk in lines.chunks(STAGE_BATCH) {
        for m in chunk {
            stage.process(m, now, &mut out);
        }
        stage.punctuate(now, &mut out);
        black_box(stage.safe_offset(chunk.last().map_or(0, |m| m.offset() + 1)));
        bytes += out.iter().map(|e| e.value.len()).sum::<usize>();
        out.clear();
    }
    bytes
}

/// The anomalies parsed into rows and written in transactions of `STORE_BATCH`; returns the
/// rows inserted.
fn store_pass(payloads: &[Vec<u8>], dir: &Path, round: usize) -> usize {
    let file = dir.join(format!("anomalies-{round}.db"));
    let mut store = SqliteStore::open(&file).expect("the store opens");
    let mut inserted = 0;
    for (b, chunk) in payloads.chunks(STORE_BATCH).enumerate() {
        let rows: Vec<Row> = chunk
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Row::parse(
                    At {
                        topic: "sensor-anomalies",
                        partition: 0,
                        offset: (b * STORE_BATCH + i) as i64,
                        timestamp_ms: 1_772_355_600_000,
                    },
                    Some(b"sensor-001"),
                    p,
                    Some("/timestamp"),
                )
                .expect("an anomaly is a row")
            })
            .collect();
        store.insert(&rows).expect("the rows are written");
        inserted += rows.len();
    }
    drop(store);
    let _ = std::fs::remove_file(&file);
    inserted
}

/// One pass of `work`: what callgrind is told to count.
#[inline(never)]
fn measured_pass(work: &Work, round: usize) -> usize {
    match work {
        Work::Detector {
            scorer,
            extractor,
            payloads,
            keys,
        } => detector_pass(&**scorer, extractor, payloads, keys, &mut None, None),
        Work::Stage { make, lines } => stage_pass(*make, lines),
        Work::Store { payloads, dir } => store_pass(payloads, dir.path(), round),
    }
}

/// Bytes one open state takes, for the kinds that keep state per key: `VmRSS` growth while
/// `STATES` are opened, over `STATES`. `None` for the stateless kinds.
fn bytes_per_state(kind: &str) -> Option<f64> {
    match kind {
        "rules_for" => {
            let mut streaks = Streaks::new(vec![3, 3]);
            let keys: Vec<Vec<u8>> = (0..STATES as u64)
                .map(|i| anomalyd::source::generator::sensors::sensor_id(i).into_bytes())
                .collect();
            let mut fired = Vec::new();
            let before = status_kib("VmRSS");
            for (i, k) in keys.iter().enumerate() {
                streaks.observe(Some(k), i as i64, |_| true, &mut fired);
            }
            let after = status_kib("VmRSS");
            assert_eq!(streaks.open_keys(), STATES);
            Some((after - before) as f64 * 1024.0 / STATES as f64)
        }
        "invoices" => {
            // One line each of STATES invoices: real lines with fresh InvoiceNos, all at the
            // same InvoiceDate (event time), so that none closes.
            let lines = retail_lines("stream_slice.csv");
            let sample: Vec<&[u8]> = lines
                .iter()
                .filter_map(|m| m.payload())
                .filter(|p| !p.starts_with(b"C"))
                .collect();
            let msgs: Vec<OwnedMessage> = (0..STATES)
                .map(|i| {
                    let line = sample[i % sample.len()];
                    let rest = &line[line.iter().position(|&b| b == b',').expect("a CSV line")..];
                    // The same InvoiceDate on every line: nothing closes.
                    let text = format!("{}{}", 600_000 + i, with_date(rest, "12/1/2010 8:26"));
                    message(text.into_bytes(), None, i as i64)
                })
                .collect();
            let mut stage = invoice_stage(TimeMode::Event, STATES * 2);
            let mut out = Vec::new();
            let before = status_kib("VmRSS");
            for m in &msgs {
                stage.process(m, 0, &mut out);
            }
            let after = status_kib("VmRSS");
            assert!(
                out.is_empty(),
                "every line opened an invoice: {:?}",
                out.first()
                    .map(|e| String::from_utf8_lossy(&e.value).into_owned())
            );
            black_box(&stage);
            Some((after - before) as f64 * 1024.0 / STATES as f64)
        }
        "cancellations" => {
            let msgs: Vec<OwnedMessage> = (0..STATES)
                .map(|i| {
                    let text = format!(
                        "C{},22633,HAND WARMER UNION JACK,-6,12/1/2010 8:28,1.85,17850,United Kingdom",
                        600_000 + i
                    );
                    message(text.into_bytes(), None, i as i64)
                })
                .collect();
            let mut stage = cancellation_stage();
            let mut out = Vec::new();
            let before = status_kib("VmRSS");
            for m in &msgs {
                stage.process(m, 0, &mut out);
            }
            let after = status_kib("VmRSS");
            black_box(&stage);
            Some((after - before) as f64 * 1024.0 / STATES as f64)
        }
        _ => None,
    }
}

/// `rest` (a line from its first comma on) with its InvoiceDate (the 4th field after the
/// InvoiceNo) replaced by `date`; descriptions in quotes are kept as they are.
fn with_date(rest: &[u8], date: &str) -> String {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(&rest[1..]);
    let record = r.records().next().expect("a line").expect("a CSV line");
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    let fields: Vec<&str> = record
        .iter()
        .enumerate()
        .map(|(i, f)| if i == 3 { date } else { f })
        .collect();
    w.write_record(&fields).expect("a CSV line");
    let mut text = String::from(",");
    text.push_str(
        std::str::from_utf8(&w.into_inner().expect("written"))
            .expect("UTF-8")
            .trim_end(),
    );
    text
}

fn build(kind: &str, dir: &Path, n: usize) -> Work {
    match kind {
        "forest" => forest(dir, n),
        "kmeans" => clusters(dir, ClusterKind::KMeans, n),
        "bisecting" => clusters(dir, ClusterKind::BisectingKMeans, n),
        "rules" => rules(n, 1),
        "rules_for" => rules(n, 3),
        "invoices" => Work::Stage {
            make: || Box::new(invoice_stage(TimeMode::Event, 100_000)),
            lines: retail_lines("stream_slice.csv"),
        },
        "cancellations" => Work::Stage {
            make: || Box::new(cancellation_stage()),
            lines: retail_lines("stream_slice.csv"),
        },
        "store" => store(n),
        other => panic!("no kind {other}; kinds: {KINDS:?}"),
    }
}

/// One kind in this process: prints `kind ns peak_kib state_bytes records`.
fn run_kind(kind: &str) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let n = env_or("KINDS_RECORDS", 10_000);
    let rounds = env_or("KINDS_ROUNDS", 5).max(1);
    let work = build(kind, dir.path(), n);
    let records = work.records();
    let mut times = Vec::with_capacity(rounds);
    let mut bytes = 0;
    for round in 0..rounds {
        let t = Instant::now();
        bytes += measured_pass(&work, round);
        times.push(t.elapsed().as_secs_f64() / records as f64 * 1e9);
    }
    black_box(bytes);
    times.sort_by(f64::total_cmp);
    let ns = times[times.len() / 2];
    // Before the states below are opened: the pass's own peak.
    let peak = status_kib("VmHWM");
    let state = if std::env::var_os("KINDS_NO_STATE").is_some() {
        None
    } else {
        bytes_per_state(kind)
    };
    println!(
        "{kind} {ns:.1} {peak} {} {records}",
        state.map_or("-".to_owned(), |b| format!("{b:.0}"))
    );
}

fn main() {
    if let Ok(kind) = std::env::var("KINDS_ONLY") {
        run_kind(&kind);
        return;
    }
    let me = std::env::current_exe().expect("the bench's own path");
    let mut lines = Vec::new();
    for kind in KINDS {
        let out = Command::new(&me)
            .env("KINDS_ONLY", kind)
            .output()
            .expect("the bench runs itself");
        assert!(
            out.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).expect("UTF-8");
        lines.push(line.trim().to_owned());
    }
    let parsed: HashMap<&str, Vec<&str>> = lines
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0], f)
        })
        .collect();
    let base: f64 = parsed["forest"][1].parse().expect("ns");
    println!(
        "{:<14} {:>8} {:>10} {:>12} {:>14} {:>8}",
        "kind", "records", "ns/record", "vs forest", "peak RSS MiB", "B/state"
    );
    for kind in KINDS {
        let f = &parsed[kind];
        let ns: f64 = f[1].parse().expect("ns");
        let peak: f64 = f[2].parse::<f64>().expect("KiB") / 1024.0;
        println!(
            "{kind:<14} {:>8} {ns:>10.1} {:>11.2}x {peak:>14.1} {:>8}",
            f[4],
            ns / base,
            f[3]
        );
    }
}
