//! The transactions detector's work per record without the broker, stage by stage, as
//! `detect::worker` does it for each batch of 500: parse the record (`Record::parse`), extract
//! its features, score the batch, and for each anomaly build its additions (explanation
//! included) and splice them into the output record. The generator's records (20 % drawn as
//! outliers), the synthetic Isolation Forest (seed 42).
//!
//! Each stage is a function of its own (`stage_parse`, `stage_features`, `stage_score`,
//! `stage_build`), never inlined, so that `valgrind --tool=callgrind` attributes instructions
//! to it (docs/benchmarks.md, "CPU per record", has the commands). Run plainly it prints
//! nanoseconds per record per stage, medians of ROUNDS passes. `HOTPATH_RECORDS` (20000)
//! sets the records per pass, `HOTPATH_ROUNDS` (5) the passes.

use std::hint::black_box;
use std::time::{Instant, SystemTime};

use anomalyd::config::FeatureSpec;
use anomalyd::detect::features::FeatureExtractor;
use anomalyd::detect::model::LoadedModel;
use anomalyd::detect::scorer::{Batch, Scored, Scorer, Unscorable};
use anomalyd::offline::train::{TrainOptions, train};
use anomalyd::record::Record;
use anomalyd::sinks::SourceRef;
use anomalyd::sinks::anomalies::{Additions, Detection, write_anomaly};

/// The detector's default `batch_max`.
const BATCH: usize = 500;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[inline(never)]
fn stage_parse<'a>(payloads: &'a [Vec<u8>], records: &mut Vec<Record<'a>>) {
    records.clear();
    for p in payloads {
        records.push(FeatureExtractor::parse(Some(p)).expect("the generator's records parse"));
    }
}

#[inline(never)]
fn stage_features(extractor: &FeatureExtractor, records: &[Record<'_>], rows: &mut Vec<f64>) {
    rows.clear();
    for r in records {
        extractor
            .extract(r, rows)
            .expect("the generator's records have features");
    }
}

#[inline(never)]
fn stage_score(
    model: &LoadedModel,
    records: &[Record<'_>],
    rows: &[f64],
    scored: &mut Vec<Result<Scored, Unscorable>>,
) {
    let refs: Vec<&Record<'_>> = records.iter().collect();
    scored.clear();
    scored.resize(records.len(), Ok(Scored::default()));
    Scorer::score_batch(
        model,
        &Batch {
            rows,
            records: &refs,
        },
        scored,
    );
}

/// Returns the bytes written, so that nothing is optimised away.
#[inline(never)]
fn stage_build(
    model: &LoadedModel,
    records: &[Record<'_>],
    rows: &[f64],
    scored: &[Result<Scored, Unscorable>],
    first_offset: i64,
) -> usize {
    let nf = model.n_features();
    let now = SystemTime::now();
    let mut written = 0;
    for (k, (record, s)) in records.iter().zip(scored).enumerate() {
        let Ok(Scored { score, decision }) = *s else {
            continue;
        };
        if decision >= 0.0 {
            continue;
        }
        let detection = Detection {
            score,
            decision,
            features: &rows[k * nf..(k + 1) * nf],
        };
        let from = SourceRef {
            topic: "transactions",
            partition: 0,
            offset: first_offset + k as i64,
        };
        let additions = Additions::new(record, &detection, "transactions", model, from, now);
        // As the worker: one payload per anomaly, kept for a retry.
        let mut payload = Vec::new();
        write_anomaly(&mut payload, record, &additions);
        written += black_box(payload).len();
    }
    written
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.iforest");
    train(&TrainOptions::synthetic(42, path.clone())).unwrap();
    let model = LoadedModel::load(&path).unwrap();
    let n = env_or("HOTPATH_RECORDS", 20_000);
    let rounds = env_or("HOTPATH_ROUNDS", 5);
    let now = SystemTime::now();
    let payloads: Vec<Vec<u8>> = (0..n as u64)
        .map(|id| {
            anomalyd::source::generator::record(42, id, 0.2, now)
                .to_string()
                .into_bytes()
        })
        .collect();
    let extractor = FeatureExtractor::new(FeatureSpec::Field("data".into()), model.n_features());

    let mut times = [(); 4].map(|()| Vec::new());
    let (mut anomalies, mut bytes) = (0, 0);
    for _ in 0..rounds {
        let mut spent = [0.0; 4];
        let (mut records, mut rows, mut scored) = (Vec::new(), Vec::new(), Vec::new());
        for (b, chunk) in payloads.chunks(BATCH).enumerate() {
            let t = Instant::now();
            stage_parse(chunk, &mut records);
            spent[0] += t.elapsed().as_secs_f64();
            let t = Instant::now();
            stage_features(&extractor, &records, &mut rows);
            spent[1] += t.elapsed().as_secs_f64();
            let t = Instant::now();
            stage_score(&model, &records, &rows, &mut scored);
            spent[2] += t.elapsed().as_secs_f64();
            let t = Instant::now();
            bytes += stage_build(&model, &records, &rows, &scored, (b * BATCH) as i64);
            spent[3] += t.elapsed().as_secs_f64();
            anomalies += scored
                .iter()
                .filter(|s| s.as_ref().is_ok_and(|s| s.decision < 0.0))
                .count();
        }
        for (all, s) in times.iter_mut().zip(spent) {
            all.push(s / n as f64 * 1e9);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let names = ["parse", "features", "score", "build output"];
    let mut line =
        format!("hotpath ({n} records, batches of {BATCH}, median of {rounds}), ns a record:");
    let mut total = 0.0;
    for (name, v) in names.iter().zip(times.iter_mut()) {
        let m = median(v);
        total += m;
        line.push_str(&format!(" {name} {m:.0},"));
    }
    println!("{line} total {total:.0}");
    println!(
        "hotpath: {:.1} % anomalies, {:.0} bytes an anomaly",
        anomalies as f64 / (n * rounds) as f64 * 100.0,
        bytes as f64 / anomalies.max(1) as f64
    );
}
