//! The anomaly store: a task that reads every detector's output (anomalies) topic in its own
//! consumer group and writes one row per anomaly into a database, so that anomalies can be
//! searched and counted (`anomalyd query`) long after Kafka dropped them.
//!
//! Rows are keyed by their place on the anomalies topic, (topic, partition, offset): inserting
//! one twice (a replay, a restart after a crash) is ignored, so the store holds every anomaly
//! exactly once. The task commits an offset only after the database transaction holding its row
//! has committed, so a crash loses nothing either.
//!
//! - [`config`]: `[store]`, what the user writes.
//! - [`row`]: an anomaly record turned into a row (the filtered columns, and the record).
//! - [`sqlite`]: the embedded SQLite backend (WAL mode), the default.
//! - [`postgres`]: the PostgreSQL backend, for a store shared by several instances or read
//!   by Grafana.
//! - [`task`]: the consumer task; [`run`] is its entry point.
//! - [`query`]: the filters and output of `anomalyd query`.
//! - [`metrics`]: counters for `/metrics` and `/status`.

pub mod config;
pub mod metrics;
pub mod postgres;
pub mod query;
pub mod row;
pub mod sqlite;
pub mod task;

use thiserror::Error;

pub use config::{StoreBackend, StoreConfig};
pub use metrics::{StoreMetrics, StoreMetricsSnapshot};
pub use query::Filter;
pub use row::Row;
pub use task::run;

/// What a backend reports.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("store {path}: cannot create its directory: {source}")]
    Directory {
        path: String,
        source: std::io::Error,
    },
    /// A PostgreSQL request failed (`url` without its password, if any).
    #[error("store {url}: {message}")]
    Postgres { url: String, message: String },
    /// The PostgreSQL server could not be reached or refused the login.
    #[error("store {url}: cannot connect to {endpoints}: {message}")]
    Connect {
        url: String,
        /// Every host:port tried.
        endpoints: String,
        message: String,
    },
    /// `store.url` is not usable (the config check normally says so first).
    #[error("store.url {url}: {why}")]
    Url { url: String, why: String },
    /// `store.password_env` or `store.password_file` gives no password.
    #[error("{0}")]
    Password(String),
    #[error("store {path}: schema version {found} is newer than this anomalyd's ({known})")]
    Version {
        path: String,
        found: i64,
        known: i64,
    },
}

/// What one [`Store::insert`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inserted {
    /// Rows written.
    pub stored: u64,
    /// Rows whose (topic, partition, offset) was already there: ignored.
    pub duplicates: u64,
}

/// A row as read back by a query.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub detector: String,
    pub key: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub event_time_ms: i64,
    /// Where `event_time_ms` came from: `"field"` or `"kafka"`.
    pub event_time_source: String,
    /// Milliseconds since the Unix epoch.
    pub detected_at_ms: i64,
    pub score: f64,
    pub decision: f64,
    pub model_id: String,
    pub model_kind: String,
    /// The rules that fired, comma-separated (empty for a model).
    pub rules: String,
    /// The anomaly record, as read from the topic.
    pub record: String,
}

/// A database holding anomaly rows. Every method is blocking (call it off the async threads).
pub trait Store: Send {
    /// Writes `rows` in one transaction; rows already stored (same topic, partition, offset)
    /// are ignored and counted. When it returns `Ok`, the transaction has committed.
    fn insert(&mut self, rows: &[Row]) -> Result<Inserted, StoreError>;
    /// Deletes the rows whose event time is before `cutoff_ms` (milliseconds since the Unix
    /// epoch); returns how many.
    fn delete_before(&mut self, cutoff_ms: i64) -> Result<u64, StoreError>;
    /// The rows matching `filter`, newest event time first, at most `filter.limit`.
    fn select(&self, filter: &Filter) -> Result<Vec<StoredRow>, StoreError>;
    /// How many rows match `filter` per interval of `bucket_ms` milliseconds (epoch-aligned
    /// `[start, start + bucket_ms)` of event time), as `(start_ms, count)`, oldest first; only
    /// intervals with rows.
    fn count_by(&self, filter: &Filter, bucket_ms: i64) -> Result<Vec<(i64, u64)>, StoreError>;
    /// Every detector with at least one row, in name order (for the web view's checks and
    /// choices).
    fn detectors(&self) -> Result<Vec<String>, StoreError>;
    /// The row stored from `(topic, partition, offset)`, if any (the web view's detail).
    fn row(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<Option<StoredRow>, StoreError>;
}

/// Opens the backend `config` names, creating or migrating its schema. Blocking.
pub fn open(config: &StoreConfig) -> Result<Box<dyn Store>, StoreError> {
    match config.backend {
        StoreBackend::Sqlite => Ok(Box::new(sqlite::SqliteStore::open(&config.db_path())?)),
        StoreBackend::Postgres => Ok(Box::new(postgres::PostgresStore::open(config)?)),
    }
}
