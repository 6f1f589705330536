//! The SQLite backend: one database file (bundled SQLite, so nothing to install), in WAL mode
//! so that `anomalyd query` reads while the daemon writes.
//!
//! Schema version 1 (`PRAGMA user_version`), see docs/store.md: one table, `anomalies`, keyed
//! by (kafka_topic, kafka_partition, kafka_offset), with an index per filtered column. Times
//! are integers, milliseconds since the Unix epoch, so that ranges are index scans.
//! `synchronous = FULL`: a committed transaction survives a power cut, since the task commits
//! the Kafka offsets of its rows right after. The writer keeps a larger page cache and
//! checkpoints less often than SQLite's defaults ([`WRITE_CACHE_KIB`], [`CHECKPOINT_PAGES`]):
//! about 1.3x the rows per second (`benches/store_scale.rs`, docs/benchmarks.md).

use std::path::Path;
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, params, params_from_iter};

use super::query::Filter;
use super::row::Row;
use super::{Inserted, Store, StoreError, StoredRow};

/// The writer's page cache, KiB: 64 MiB (SQLite's default is 2 MiB). Every row goes into
/// eleven B-trees, some (key, rules) written all over; once the file outgrows a small cache,
/// each batch reads those pages back from the OS. Filled only as the file grows.
pub const WRITE_CACHE_KIB: i64 = 65_536;
/// Pages of WAL (4 KiB each, so about 40 MiB) after which a commit copies them into the
/// database (SQLite's default is 1,000): the index pages that every batch changes are copied,
/// and the file synced, once per several batches rather than once per batch. Durability is
/// unchanged: with `synchronous = FULL` every commit still syncs the WAL before it returns.
pub const CHECKPOINT_PAGES: i64 = 10_000;

/// The schema this code writes and reads.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS anomalies (
    kafka_topic TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset INTEGER NOT NULL,
    detector TEXT NOT NULL,
    key TEXT,
    event_time INTEGER NOT NULL,
    event_time_source TEXT NOT NULL CHECK (event_time_source IN ('field', 'kafka')),
    detected_at INTEGER NOT NULL,
    score REAL NOT NULL,
    decision REAL NOT NULL,
    model_id TEXT NOT NULL,
    model_kind TEXT NOT NULL,
    rules TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);
CREATE INDEX IF NOT EXISTS anomalies_detector_time ON anomalies (detector, event_time);
CREATE INDEX IF NOT EXISTS anomalies_key_time ON anomalies (key, event_time);
CREATE INDEX IF NOT EXISTS anomalies_event_time ON anomalies (event_time);
CREATE INDEX IF NOT EXISTS anomalies_detected_at ON anomalies (detected_at);
CREATE INDEX IF NOT EXISTS anomalies_score ON anomalies (score);
CREATE INDEX IF NOT EXISTS anomalies_decision ON anomalies (decision);
CREATE INDEX IF NOT EXISTS anomalies_model ON anomalies (model_id, model_kind);
CREATE INDEX IF NOT EXISTS anomalies_model_kind ON anomalies (model_kind);
CREATE INDEX IF NOT EXISTS anomalies_rules ON anomalies (rules);
";

const INSERT: &str = "INSERT OR IGNORE INTO anomalies (kafka_topic, kafka_partition, \
    kafka_offset, detector, key, event_time, event_time_source, detected_at, score, decision, \
    model_id, model_kind, rules, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, \
    ?12, ?13, ?14)";

const COLUMNS: &str = "kafka_topic, kafka_partition, kafka_offset, detector, key, event_time, \
    event_time_source, detected_at, score, decision, model_id, model_kind, rules, record";

/// An open SQLite store.
pub struct SqliteStore {
    conn: Connection,
    path: String,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) the database at `path` for writing, in
    /// WAL mode, and creates the schema. Errors: the directory or file cannot be made, the file
    /// is not a database, or its schema is newer than [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
                path: shown.clone(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|e| err(&shown, e))?;
        let store = Self { conn, path: shown };
        store.setup(true)?;
        Ok(store)
    }

    /// Opens an existing database read-only (for `anomalyd query`).
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| err(&shown, e))?;
        let store = Self { conn, path: shown };
        store.setup(false)?;
        Ok(store)
    }

    fn setup(&self, write: bool) -> Result<(), StoreError> {
        let e = |e| err(&self.path, e);
        self.conn.busy_timeout(Duration::from_secs(10)).map_err(e)?;
        let found: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(e)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::Version {
                path: self.path.clone(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        if write {
            let mode: String = self
                .conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
                .map_err(e)?;
            debug_assert_eq!(mode.to_ascii_lowercase(), "wal");
            self.conn
                .pragma_update(None, "synchronous", "FULL")
                .map_err(e)?;
            self.conn
                .pragma_update(None, "cache_size", -WRITE_CACHE_KIB)
                .map_err(e)?;
            self.conn
                .pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)
                .map_err(e)?;
            self.conn.execute_batch(SCHEMA).map_err(e)?;
            self.conn
                .pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(e)?;
        }
        Ok(())
    }

    /// The open connection, for diagnostics and benchmarks (`EXPLAIN QUERY PLAN`, comparing
    /// settings against SQLite's defaults in `benches/store.rs`).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The schema version of the open database.
    pub fn version(&self) -> Result<i64, StoreError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| err(&self.path, e))
    }

    /// How many rows, per detector.
    pub fn counts_by_detector(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let e = |e| err(&self.path, e);
        let mut st = self
            .conn
            .prepare("SELECT detector, COUNT(*) FROM anomalies GROUP BY detector ORDER BY detector")
            .map_err(e)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(e)?;
        rows.collect::<Result<_, _>>().map_err(e)
    }
}

fn err(path: &str, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        path: path.to_owned(),
        source,
    }
}

/// The WHERE clause of `filter` and its parameters: every value is bound, never spliced.
fn where_clause(filter: &Filter) -> (String, Vec<Value>) {
    let mut terms: Vec<String> = Vec::new();
    let mut params: Vec<Value> = Vec::new();
    let bind = |params: &mut Vec<Value>, v: Value| {
        params.push(v);
        format!("?{}", params.len())
    };
    if let Some(d) = &filter.detector {
        let p = bind(&mut params, Value::Text(d.clone()));
        terms.push(format!("detector = {p}"));
    }
    if let Some(k) = &filter.key {
        let p = bind(&mut params, Value::Text(k.clone()));
        terms.push(format!("key = {p}"));
    }
    if let Some(t) = filter.since_ms {
        let p = bind(&mut params, Value::Integer(t));
        terms.push(format!("event_time >= {p}"));
    }
    if let Some(t) = filter.until_ms {
        let p = bind(&mut params, Value::Integer(t));
        terms.push(format!("event_time < {p}"));
    }
    if filter.anomalies_only {
        terms.push("decision < 0".into());
    }
    for (field, value) in &filter.wheres {
        let path = bind(&mut params, Value::Text(json_path(field)));
        let text = bind(&mut params, Value::Text(value.clone()));
        // A number given matches the same number however written (40 = 40.0), a string the
        // string; the JSON value is compared as SQLite converts it (json_extract).
        match value.parse::<f64>() {
            Ok(n) if n.is_finite() => {
                let num = bind(&mut params, Value::Real(n));
                terms.push(format!(
                    "(json_extract(record, {path}) = {num} OR json_extract(record, {path}) = {text})"
                ));
            }
            _ => terms.push(format!("json_extract(record, {path}) = {text}")),
        }
    }
    if terms.is_empty() {
        (String::new(), params)
    } else {
        (format!(" WHERE {}", terms.join(" AND ")), params)
    }
}

/// The query of [`Store::select`] and its parameters.
fn select_sql(filter: &Filter) -> (String, Vec<Value>) {
    let (clause, mut params) = where_clause(filter);
    params.push(Value::Integer(filter.limit as i64));
    let sql = format!(
        "SELECT {COLUMNS} FROM anomalies{clause} ORDER BY event_time DESC, kafka_topic, \
         kafka_partition, kafka_offset DESC LIMIT ?{}",
        params.len()
    );
    (sql, params)
}

/// The query of [`Store::count_by`] and its parameters.
fn count_sql(filter: &Filter, bucket_ms: i64) -> (String, Vec<Value>) {
    let (clause, mut params) = where_clause(filter);
    params.push(Value::Integer(bucket_ms.max(1)));
    let b = params.len();
    // Floor division, so that times before 1970 fall into the right interval too.
    let sql = format!(
        "SELECT ((event_time - ((event_time % ?{b}) + ?{b}) % ?{b})) AS start, COUNT(*) \
         FROM anomalies{clause} GROUP BY start ORDER BY start"
    );
    (sql, params)
}

/// A field of the record (`a.b.c`: member `c` of `b` of `a`) as an SQLite JSON path, each
/// member quoted so that any name works.
pub fn json_path(field: &str) -> String {
    let mut path = String::from("$");
    for part in field.split('.') {
        path.push_str(".\"");
        path.push_str(&part.replace('\\', "\\\\").replace('"', "\\\""));
        path.push('"');
    }
    path
}

impl Store for SqliteStore {
    fn insert(&mut self, rows: &[Row]) -> Result<Inserted, StoreError> {
        let path = self.path.clone();
        let e = |e| err(&path, e);
        let tx = self.conn.transaction().map_err(e)?;
        let mut done = Inserted::default();
        {
            let mut st = tx.prepare_cached(INSERT).map_err(e)?;
            for r in rows {
                let n = st
                    .execute(params![
                        r.topic,
                        r.partition,
                        r.offset,
                        r.detector,
                        r.key,
                        r.event_time_ms,
                        r.event_time_source.as_str(),
                        r.detected_at_ms,
                        r.score,
                        r.decision,
                        r.model_id,
                        r.model_kind,
                        r.rules,
                        r.record,
                    ])
                    .map_err(e)?;
                if n == 1 {
                    done.stored += 1;
                } else {
                    done.duplicates += 1;
                }
            }
        }
        tx.commit().map_err(e)?;
        Ok(done)
    }

    fn delete_before(&mut self, cutoff_ms: i64) -> Result<u64, StoreError> {
        self.conn
            .execute("DELETE FROM anomalies WHERE event_time < ?1", [cutoff_ms])
            .map(|n| n as u64)
            .map_err(|e| err(&self.path, e))
    }

    fn select(&self, filter: &Filter) -> Result<Vec<StoredRow>, StoreError> {
        let e = |e| err(&self.path, e);
        let (sql, params) = select_sql(filter);
        let mut st = self.conn.prepare(&sql).map_err(e)?;
        let rows = st
            .query_map(params_from_iter(params), stored_row)
            .map_err(e)?;
        rows.collect::<Result<_, _>>().map_err(e)
    }

    fn count_by(&self, filter: &Filter, bucket_ms: i64) -> Result<Vec<(i64, u64)>, StoreError> {
        let e = |e| err(&self.path, e);
        let (sql, params) = count_sql(filter, bucket_ms);
        let mut st = self.conn.prepare(&sql).map_err(e)?;
        let rows = st
            .query_map(params_from_iter(params), |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(e)?;
        rows.collect::<Result<_, _>>().map_err(e)
    }

    fn detectors(&self) -> Result<Vec<String>, StoreError> {
        let e = |e| err(&self.path, e);
        // A loose index scan on (detector, event_time): one lookup per detector, not one
        // step per row, so it stays fast on millions of rows.
        let mut st = self
            .conn
            .prepare_cached(
                "WITH RECURSIVE d(name) AS (SELECT MIN(detector) FROM anomalies UNION ALL \
                 SELECT (SELECT MIN(detector) FROM anomalies WHERE detector > d.name) FROM d \
                 WHERE d.name IS NOT NULL) SELECT name FROM d WHERE name IS NOT NULL",
            )
            .map_err(e)?;
        let rows = st.query_map([], |r| r.get(0)).map_err(e)?;
        rows.collect::<Result<_, _>>().map_err(e)
    }

    fn row(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<Option<StoredRow>, StoreError> {
        let e = |e| err(&self.path, e);
        let sql = format!(
            "SELECT {COLUMNS} FROM anomalies WHERE kafka_topic = ?1 AND kafka_partition = ?2 \
             AND kafka_offset = ?3"
        );
        let mut st = self.conn.prepare_cached(&sql).map_err(e)?;
        let mut rows = st
            .query_map(params![topic, partition, offset], stored_row)
            .map_err(e)?;
        rows.next().transpose().map_err(e)
    }
}

/// A row of `SELECT {COLUMNS}`.
fn stored_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRow> {
    Ok(StoredRow {
        topic: r.get(0)?,
        partition: r.get(1)?,
        offset: r.get(2)?,
        detector: r.get(3)?,
        key: r.get(4)?,
        event_time_ms: r.get(5)?,
        event_time_source: r.get(6)?,
        detected_at_ms: r.get(7)?,
        score: r.get(8)?,
        decision: r.get(9)?,
        model_id: r.get(10)?,
        model_kind: r.get(11)?,
        rules: r.get(12)?,
        record: r.get(13)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::store::row::{At, EventTimeSource, tests::INLINE};

    fn row(detector: &str, offset: i64, event_time_ms: i64, key: &str, decision: f64) -> Row {
        let mut r = Row::parse(
            At {
                topic: "anomalies",
                partition: (offset % 2) as i32,
                offset,
                timestamp_ms: event_time_ms,
            },
            Some(key.as_bytes()),
            INLINE.as_bytes(),
            None,
        )
        .unwrap();
        r.detector = detector.into();
        r.decision = decision;
        r
    }

    fn temp() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("sub/anomalies.db")).unwrap();
        (dir, s)
    }

    fn all() -> Filter {
        Filter {
            limit: 1000,
            ..Filter::default()
        }
    }

    #[test]
    fn the_schema_is_created_in_wal_mode_with_its_version() {
        let (dir, s) = temp();
        assert_eq!(s.version().unwrap(), SCHEMA_VERSION);
        let mode: String = s
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let setting =
            |name| -> i64 { s.conn.pragma_query_value(None, name, |r| r.get(0)).unwrap() };
        assert_eq!(setting("cache_size"), -WRITE_CACHE_KIB);
        assert_eq!(setting("wal_autocheckpoint"), CHECKPOINT_PAGES);
        assert_eq!(setting("synchronous"), 2, "FULL");
        let indexes: Vec<String> = s
            .conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'anomalies_%'",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(indexes.len(), 9, "{indexes:?}");
        drop(s);
        // Opening again keeps the rows and the version; a newer version is refused.
        let path = dir.path().join("sub/anomalies.db");
        let s = SqliteStore::open(&path).unwrap();
        s.conn.pragma_update(None, "user_version", 2).unwrap();
        drop(s);
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::Version { found: 2, .. })
        ));
    }

    #[test]
    fn inserting_twice_stores_once() {
        let (_dir, mut s) = temp();
        let rows: Vec<Row> = (0..10).map(|i| row("a", i, 1000 * i, "k", -1.0)).collect();
        assert_eq!(
            s.insert(&rows).unwrap(),
            Inserted {
                stored: 10,
                duplicates: 0
            }
        );
        // A replay overlapping the first batch.
        let more: Vec<Row> = (5..15).map(|i| row("a", i, 1000 * i, "k", -1.0)).collect();
        assert_eq!(
            s.insert(&more).unwrap(),
            Inserted {
                stored: 5,
                duplicates: 5
            }
        );
        assert_eq!(s.counts_by_detector().unwrap(), [("a".to_owned(), 15)]);
        let got = s.select(&all()).unwrap();
        assert_eq!(got.len(), 15);
        assert_eq!(got[0].offset, 14, "newest first");
        assert_eq!(got[0].record, INLINE);
        assert_eq!(got[0].event_time_source, EventTimeSource::Kafka.as_str());
        assert_eq!(got[0].rules, "hot,high_pressure");
    }

    #[test]
    fn retention_removes_only_old_rows() {
        let (_dir, mut s) = temp();
        let rows: Vec<Row> = (0..10).map(|i| row("a", i, 1000 * i, "k", -1.0)).collect();
        s.insert(&rows).unwrap();
        assert_eq!(s.delete_before(4000).unwrap(), 4);
        let left: Vec<i64> = s
            .select(&all())
            .unwrap()
            .iter()
            .map(|r| r.event_time_ms)
            .collect();
        assert_eq!(left, [9000, 8000, 7000, 6000, 5000, 4000]);
        assert_eq!(s.delete_before(4000).unwrap(), 0);
    }

    #[test]
    fn every_filter_narrows_the_rows() {
        let (_dir, mut s) = temp();
        let mut rows = Vec::new();
        for i in 0..20 {
            let det = if i % 2 == 0 { "even" } else { "odd" };
            let key = format!("k{}", i % 5);
            let decision = if i % 4 == 0 { 0.5 } else { -0.5 };
            rows.push(row(det, i, 60_000 * i, &key, decision));
        }
        // One record with a different sensor_id, for --where.
        let mut other = row("odd", 100, 60_000 * 3, "k9", -0.5);
        other.record = INLINE.replace("\"s-1\"", "\"s-2\"").replace("41.5", "40");
        rows.push(other);
        s.insert(&rows).unwrap();
        let n = |f: Filter| s.select(&Filter { limit: 1000, ..f }).unwrap().len();
        assert_eq!(n(Filter::default()), 21);
        assert_eq!(
            n(Filter {
                detector: Some("even".into()),
                ..Filter::default()
            }),
            10
        );
        assert_eq!(
            n(Filter {
                key: Some("k9".into()),
                ..Filter::default()
            }),
            1
        );
        assert_eq!(
            n(Filter {
                key: Some("k1".into()),
                ..Filter::default()
            }),
            4
        );
        assert_eq!(
            n(Filter {
                since_ms: Some(60_000 * 10),
                until_ms: Some(60_000 * 15),
                ..Filter::default()
            }),
            5,
            "[since, until)"
        );
        assert_eq!(
            n(Filter {
                anomalies_only: true,
                ..Filter::default()
            }),
            16
        );
        let w = |f: &str, v: &str| Filter {
            wheres: vec![(f.into(), v.into())],
            ..Filter::default()
        };
        assert_eq!(n(w("sensor_id", "s-2")), 1);
        assert_eq!(n(w("sensor_id", "s-1")), 20);
        assert_eq!(n(w("temperature", "40.0")), 1, "numbers compare as numbers");
        assert_eq!(n(w("temperature", "41.5")), 20);
        assert_eq!(n(w("anomalyd.model.kind", "rules")), 21, "nested fields");
        // A value that looks like SQL is just a value.
        assert_eq!(n(w("sensor_id", "x' OR 1=1 --")), 0);
        assert_eq!(n(w("sensor_id\" OR 1=1 --", "s-1")), 0);
        assert_eq!(
            n(Filter {
                detector: Some("odd".into()),
                key: Some("k3".into()),
                anomalies_only: true,
                ..Filter::default()
            }),
            2
        );
        assert_eq!(
            s.select(&Filter {
                limit: 3,
                ..Filter::default()
            })
            .unwrap()
            .len(),
            3
        );
    }

    #[test]
    fn counts_per_interval() {
        let (_dir, mut s) = temp();
        // 10 rows over 0..5 minutes, two a minute.
        let rows: Vec<Row> = (0..10)
            .map(|i| row("a", i, 30_000 * i, "k", -1.0))
            .collect();
        s.insert(&rows).unwrap();
        let by_minute = s.count_by(&Filter::default(), 60_000).unwrap();
        assert_eq!(
            by_minute,
            [
                (0, 2),
                (60_000, 2),
                (120_000, 2),
                (180_000, 2),
                (240_000, 2)
            ]
        );
        let f = Filter {
            since_ms: Some(60_000),
            until_ms: Some(180_000),
            ..Filter::default()
        };
        assert_eq!(s.count_by(&f, 120_000).unwrap(), [(0, 2), (120_000, 2)]);
        // Epoch-aligned floor also before 1970.
        s.insert(&[row("a", 99, -30_000, "k", -1.0)]).unwrap();
        assert_eq!(
            s.count_by(&Filter::default(), 60_000).unwrap()[0],
            (-60_000, 1)
        );
    }

    /// The plan SQLite picks for `sql`, one line per step.
    fn plan(s: &SqliteStore, (sql, params): (String, Vec<Value>)) -> String {
        let mut st = s
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let steps: Vec<String> = st
            .query_map(params_from_iter(params), |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        steps.join("\n")
    }

    #[test]
    fn a_time_range_is_an_index_range_scan() {
        let (_dir, mut s) = temp();
        let rows: Vec<Row> = (0..200)
            .map(|i| row(["a", "b", "c"][i as usize % 3], i, 60_000 * i, "k", -1.0))
            .collect();
        s.insert(&rows).unwrap();
        // `anomalyd query --detector a --since .. --until ..`, rows and counts.
        let hour = Filter {
            detector: Some("a".into()),
            since_ms: Some(0),
            until_ms: Some(3_600_000),
            limit: 50,
            ..Filter::default()
        };
        let by_detector =
            "USING INDEX anomalies_detector_time (detector=? AND event_time>? AND event_time<?)";
        let p = plan(&s, select_sql(&hour));
        assert!(p.contains(by_detector), "{p}");
        let p = plan(&s, count_sql(&hour, 60_000));
        assert!(
            p.contains(&by_detector.replace("USING", "USING COVERING")),
            "{p}"
        );
        // Without a detector, the event time index.
        let any = Filter {
            detector: None,
            ..hour
        };
        let p = plan(&s, select_sql(&any));
        assert!(
            p.contains("INDEX anomalies_event_time (event_time>? AND event_time<?)"),
            "{p}"
        );
    }

    #[test]
    fn detectors_and_one_row_by_its_place() {
        let (_dir, mut s) = temp();
        assert!(s.detectors().unwrap().is_empty());
        s.insert(&[
            row("b", 1, 1, "k", -1.0),
            row("a", 2, 2, "k", -1.0),
            row("b", 3, 3, "k", -1.0),
        ])
        .unwrap();
        assert_eq!(s.detectors().unwrap(), ["a", "b"]);
        let r = s.row("anomalies", 0, 2).unwrap().unwrap();
        assert_eq!((r.detector.as_str(), r.offset), ("a", 2));
        assert_eq!(s.row("anomalies", 1, 2).unwrap(), None);
        assert_eq!(s.row("x' OR 1=1 --", 0, 2).unwrap(), None);
    }

    #[test]
    fn a_reader_sees_the_writers_rows() {
        let (dir, mut s) = temp();
        s.insert(&[row("a", 1, 1, "k", -1.0)]).unwrap();
        let r = SqliteStore::open_read_only(&dir.path().join("sub/anomalies.db")).unwrap();
        assert_eq!(r.select(&all()).unwrap().len(), 1);
        assert!(SqliteStore::open_read_only(&dir.path().join("missing.db")).is_err());
    }
}
