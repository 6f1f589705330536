//! Speed of the SQLite store's write path, per row: an anomaly record parsed into a row
//! (`Row::parse`, the baseline: what the store task does without writing), and parsed and
//! inserted in batches of 5000 in one transaction each (WAL, `synchronous = FULL`, every index),
//! into a fresh file; and a replay of rows already stored (every one ignored).
//!
//! Not measured here: reading the anomalies topic from the broker (issue 14 asks for the
//! store's rate against consuming the same topic without writing; that needs the broker).
//!
//! `cargo bench --bench store`; figures in docs/benchmarks.md.

use std::hint::black_box;

use anomalyd::sinks::store::Store;
#[path = "common/mod.rs"]
mod common;

use anomalyd::sinks::store::sqlite::SqliteStore;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const BATCH: usize = 5000;

use common::{record, rows};

fn bench(c: &mut Criterion) {
    let records: Vec<String> = (0..BATCH).map(record).collect();
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("parse_only", |b| b.iter(|| black_box(rows(&records, 0))));

    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = SqliteStore::open(&dir.path().join("anomalies.db")).expect("store");
    let mut next = 0usize;
    g.bench_function("parse_and_insert", |b| {
        b.iter(|| {
            let batch = rows(&records, next);
            next += BATCH;
            black_box(store.insert(&batch).expect("insert"))
        })
    });
    let again = rows(&records, 0);
    g.bench_function("replay_ignored", |b| {
        b.iter_batched(
            || again.clone(),
            |batch| black_box(store.insert(&batch).expect("insert")),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
