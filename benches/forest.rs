//! Speed of the Isolation Forest (issue 3's speed bar): one record, a batch, and training on
//! http, each beside a baseline measured in the same run: the textbook walk (one branch per
//! node, the layout before optimisation) and the `extended-isolation-forest` crate at
//! extension level 0 (the reference the issue names).
//!
//! Also the cost of explaining an anomaly by attribution (which features isolated it) beside
//! the cost of scoring it, on the records each model flags.
//!
//! `cargo bench --bench forest`; figures and how to read them are in docs/benchmarks.md.

use std::hint::black_box;
use std::time::Duration;

use anomalyd::detect::forest::{ForestParams, IsolationForest};
use anomalyd::offline::benchmark::find_data_set;
use anomalyd::offline::csv::{self, Columns, Table};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use extended_isolation_forest::{Forest, ForestOptions};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// shuttle has 9 features; the reference crate fixes the dimension at compile time.
const SHUTTLE_FEATURES: usize = 9;

/// The data set, or `None` after saying on stderr what is missing and where to get it (http is
/// not in the repository).
fn load(name: &str) -> Option<Table> {
    let table = find_data_set(name)
        .map_err(|e| e.to_string())
        .and_then(|path| csv::read(&path, Columns::Numeric, "label").map_err(|e| e.to_string()));
    match table {
        Ok(table) => Some(table),
        Err(e) => {
            eprintln!("forest bench: skipping the benchmarks on {name}: {e}");
            None
        }
    }
}

fn params() -> ForestParams {
    ForestParams {
        random_state: 0,
        ..ForestParams::default()
    }
}

fn reference_forest(table: &Table) -> Forest<f64, SHUTTLE_FEATURES> {
    let rows: Vec<[f64; SHUTTLE_FEATURES]> = table
        .values
        .chunks_exact(SHUTTLE_FEATURES)
        .map(|r| r.try_into().expect("9 features"))
        .collect();
    let options = ForestOptions {
        n_trees: 100,
        sample_size: 256,
        max_tree_depth: None,
        extension_level: 0,
    };
    Forest::from_slice(&rows, &options).expect("a valid reference forest")
}

fn scoring(c: &mut Criterion) {
    let Some(table) = load("shuttle") else {
        return;
    };
    assert_eq!(table.n_features(), SHUTTLE_FEATURES);
    let d = table.n_features();
    let n = table.n_rows();
    let ours = IsolationForest::fit(&table.values, d, &params()).expect("training succeeds");
    let reference = reference_forest(&table);
    let rows: Vec<[f64; SHUTTLE_FEATURES]> = table
        .values
        .chunks_exact(d)
        .map(|r| r.try_into().expect("9 features"))
        .collect();

    // Records are taken in file order, cycling, so the branch predictor cannot learn one path.
    let mut group = c.benchmark_group("score_one");
    group.measurement_time(Duration::from_secs(4));
    let mut i = 0;
    group.bench_function("anomalyd", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            ours.score_samples(black_box(&rows[i]))
        })
    });
    group.bench_function("textbook_walk", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            ours.mean_path_length_by_walking(black_box(&rows[i]))
        })
    });
    group.bench_function("extended_isolation_forest", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            reference.score(black_box(&rows[i]))
        })
    });
    group.finish();

    // Batches of 1,024 records (cycling through the file), as the daemon scores them: each
    // iteration takes about a millisecond, so on a busy machine fewer of them are preempted
    // than the whole-file iterations below, and the median is closer to the CPU cost.
    const BATCH: usize = 1024;
    let batches: Vec<&[f64]> = table.values.chunks_exact(BATCH * d).collect();
    let row_batches: Vec<&[[f64; SHUTTLE_FEATURES]]> = rows.chunks_exact(BATCH).collect();
    let mut group = c.benchmark_group("score_batch_1024");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.measurement_time(Duration::from_secs(5));
    let mut out = vec![0.0; BATCH];
    let mut k = 0;
    group.bench_function("anomalyd_batch", |b| {
        b.iter(|| {
            k = (k + 1) % batches.len();
            ours.score_samples_batch(black_box(batches[k]), &mut out)
        })
    });
    group.bench_function("textbook_walk", |b| {
        b.iter(|| {
            k = (k + 1) % batches.len();
            for (o, x) in out.iter_mut().zip(batches[k].chunks_exact(d)) {
                *o = ours.mean_path_length_by_walking(black_box(x));
            }
        })
    });
    group.bench_function("extended_isolation_forest", |b| {
        b.iter(|| {
            k = (k + 1) % row_batches.len();
            for (o, x) in out.iter_mut().zip(row_batches[k]) {
                *o = reference.score(black_box(x));
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("score_batch_shuttle");
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(6));
    let mut out = vec![0.0; n];
    group.bench_function("anomalyd_batch", |b| {
        b.iter(|| ours.score_samples_batch(black_box(&table.values), &mut out))
    });
    group.bench_function("anomalyd_one_by_one", |b| {
        b.iter(|| {
            for (o, x) in out.iter_mut().zip(table.values.chunks_exact(d)) {
                *o = ours.score_samples(black_box(x));
            }
        })
    });
    group.bench_function("extended_isolation_forest", |b| {
        b.iter(|| {
            for (o, x) in out.iter_mut().zip(&rows) {
                *o = reference.score(black_box(x));
            }
        })
    });
    group.finish();
}

fn training(c: &mut Criterion) {
    let Some(table) = load("http") else {
        return;
    };
    let d = table.n_features();
    let mut group = c.benchmark_group("fit_http");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("anomalyd_100_trees", |b| {
        b.iter(|| IsolationForest::fit(black_box(&table.values), d, &params()))
    });
    group.finish();
}

/// Attribution ([`IsolationForest::attribution`]) against scoring one record, on records the
/// model flags (the daemon explains only those): shuttle's anomalies, and for the demo's model
/// (the synthetic two-blob set, `train --synthetic`'s parameters) uniform points it flags.
fn attribution(c: &mut Criterion) {
    let flagged = |forest: &IsolationForest, rows: &[f64], d: usize| -> Vec<Vec<f64>> {
        rows.chunks_exact(d)
            .filter(|x| forest.predict(x) == -1)
            .map(<[f64]>::to_vec)
            .collect()
    };
    let mut cases = Vec::new();
    // Without the shared data sets, only the demo's model is measured.
    if let Some(table) = load("shuttle") {
        let d = table.n_features();
        let shuttle = IsolationForest::fit(&table.values, d, &params()).expect("training succeeds");
        let rows = flagged(&shuttle, &table.values, d);
        cases.push(("explain_shuttle", shuttle, rows));
    }

    let training: Vec<f64> = anomalyd::synthetic::training_set(42)
        .into_iter()
        .flatten()
        .collect();
    let demo = IsolationForest::fit(&training, 2, &anomalyd::offline::train::SYNTHETIC_PARAMS)
        .expect("training succeeds");
    let mut rng = StdRng::seed_from_u64(1);
    let uniform: Vec<f64> = (0..20_000).map(|_| rng.random_range(-4.0..4.0)).collect();
    let demo_rows = flagged(&demo, &uniform, 2);
    cases.push(("explain_demo", demo, demo_rows));

    for (name, forest, rows) in &cases {
        assert!(!rows.is_empty(), "{name}: the model flags some records");
        let mut group = c.benchmark_group(*name);
        group.measurement_time(Duration::from_secs(3));
        let mut i = 0;
        group.bench_function("score_one", |b| {
            b.iter(|| {
                i = (i + 1) % rows.len();
                forest.score_samples(black_box(&rows[i]))
            })
        });
        group.bench_function("attribution", |b| {
            b.iter(|| {
                i = (i + 1) % rows.len();
                forest.attribution(black_box(&rows[i]))
            })
        });
        group.finish();
    }
}

criterion_group!(benches, scoring, attribution, training);
criterion_main!(benches);
