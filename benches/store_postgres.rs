//! Speed of the PostgreSQL store's write path, per row, beside the same baseline as
//! benches/store.rs (SQLite): an anomaly record parsed into a row (`Row::parse`, what the store
//! task does without writing); parsed and inserted in batches of 5000, one statement (one
//! transaction) each (`INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING`, every
//! index), into a fresh database; and a replay of rows already stored (every one ignored).
//!
//! It needs a server: `PG_BENCH_URL` (a user that may create databases; no password in it) and
//! `PG_BENCH_PASSWORD_FILE`. scripts/pg makes a throw-away one; with `PG_DURABLE=1` it keeps
//! `fsync` on, as a real server has it:
//!
//! ```text
//! export PG_DIR=$(mktemp -d) PG_DURABLE=1
//! PG_BENCH_URL=$(scripts/pg start) PG_BENCH_PASSWORD_FILE=$(scripts/pg password-file) \
//!     cargo bench --bench store_postgres
//! scripts/pg stop
//! ```
//!
//! Without `PG_BENCH_URL` it measures nothing and says why. Figures in docs/benchmarks.md.

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;

use anomalyd::sinks::store::postgres::PostgresStore;
use anomalyd::sinks::store::{Store, StoreBackend, StoreConfig};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const BATCH: usize = 5000;

use common::{record, rows};

/// A fresh database on the server of `url`; returns the admin client (to drop it after) and
/// the store's config.
fn fresh_database(url: &str, password_file: &str) -> (postgres::Client, String, StoreConfig) {
    let password = std::fs::read_to_string(password_file).expect("PG_BENCH_PASSWORD_FILE");
    let mut admin: postgres::Config = url.parse().expect("PG_BENCH_URL");
    admin.password(password.trim_end());
    let mut client = admin
        .connect(postgres::NoTls)
        .expect("connect to PG_BENCH_URL");
    let name = format!("anomalyd_bench_{}", std::process::id());
    // Two statements: in one string they would run as one transaction, which these refuse.
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .expect("drop an earlier bench database");
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create the bench database");
    let (base, _) = url.rsplit_once('/').expect("a URL with a database");
    let store = StoreConfig {
        backend: StoreBackend::Postgres,
        url: Some(format!("{base}/{name}")),
        password_file: Some(password_file.into()),
        ..StoreConfig::default()
    };
    (client, name, store)
}

fn bench(c: &mut Criterion) {
    let (Ok(url), Ok(password_file)) = (
        std::env::var("PG_BENCH_URL"),
        std::env::var("PG_BENCH_PASSWORD_FILE"),
    ) else {
        eprintln!(
            "store_postgres: PG_BENCH_URL and PG_BENCH_PASSWORD_FILE are not set, nothing \
             measured; see benches/store_postgres.rs for starting a server with scripts/pg"
        );
        return;
    };
    let (mut admin, name, config) = fresh_database(&url, &password_file);
    let records: Vec<String> = (0..BATCH).map(record).collect();
    let mut g = c.benchmark_group("store_postgres");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("parse_only", |b| b.iter(|| black_box(rows(&records, 0))));

    let mut store = PostgresStore::open(&config).expect("store");
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
    drop(store);
    // The store's connection closes on a thread of its own; wait for it before dropping.
    for _ in 0..50 {
        match admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")) {
            Ok(()) => break,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
