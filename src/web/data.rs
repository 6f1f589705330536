//! What the API and the page show, read from the anomaly store: the store is opened
//! read-only (as `anomalyd query` does), a few connections kept for reuse, and every call runs
//! on tokio's blocking threads. The shapes here are the API's JSON.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use thiserror::Error;

use crate::metrics::Metrics;
use crate::sinks::store::query::{OpenError, open_for_query};
use crate::sinks::store::row::format_ms;
use crate::sinks::store::{Filter, Store, StoreConfig, StoreError, StoredRow};

/// Connections kept open between requests.
const POOL: usize = 4;

#[derive(Debug, Error)]
pub enum DataError {
    /// The store has no file yet (the store task creates it on its first start).
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store's database thread failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What the web view reads, shared by every request.
pub struct View {
    store: StoreConfig,
    pool: Mutex<Vec<Box<dyn Store>>>,
    /// The configured detectors, in name order.
    configured: Vec<String>,
    /// The daemon's counters, when the view runs inside the daemon.
    metrics: Option<Arc<Metrics>>,
    /// Seconds between the page's refreshes.
    pub refresh_s: u32,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("store", &self.store.db_path())
            .field("configured", &self.configured)
            .finish()
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl View {
    /// A view of the store `store`; `configured`: the detectors of the configuration;
    /// `metrics`: the daemon's counters (absent outside a daemon: the overview then has no
    /// totals).
    pub fn new(
        store: StoreConfig,
        configured: Vec<String>,
        metrics: Option<Arc<Metrics>>,
        refresh_s: u32,
    ) -> Self {
        Self {
            store,
            pool: Mutex::new(Vec::new()),
            configured,
            metrics,
            refresh_s,
        }
    }

    /// Runs `f` on a read-only connection, on a blocking thread.
    pub async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, DataError> {
        let view = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let taken = view.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let store = match taken {
                Some(s) => s,
                None => open_for_query(&view.store)?,
            };
            let out = f(store.as_ref());
            if out.is_ok() {
                let mut pool = view.pool.lock().unwrap_or_else(|p| p.into_inner());
                if pool.len() < POOL {
                    pool.push(store);
                }
            }
            Ok(out?)
        })
        .await?
    }

    /// Every detector: the configured ones and those with rows, in name order.
    pub async fn detectors(self: &Arc<Self>) -> Result<Vec<String>, DataError> {
        let mut all: BTreeSet<String> = self.configured.iter().cloned().collect();
        match self.read(|s| s.detectors()).await {
            Ok(stored) => all.extend(stored),
            // No store file yet: only the configured detectors.
            Err(DataError::Open(OpenError::Missing(_))) => {}
            Err(e) => return Err(e),
        }
        Ok(all.into_iter().collect())
    }

    /// The daemon's totals since it started, when known.
    pub fn totals(&self) -> Option<Totals> {
        self.metrics.as_ref().map(|m| {
            let s = m.snapshot();
            Totals {
                source: "daemon counters since start (/status counters)",
                records_scored: s.records_in,
                anomalies: s.anomalies_out,
                dead_letters: s.dead_letters.values().sum(),
            }
        })
    }
}

/// The daemon's counters shown by the overview.
#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    /// Where the numbers come from.
    pub source: &'static str,
    pub records_scored: u64,
    pub anomalies: u64,
    pub dead_letters: u64,
}

/// One anomaly as the API shows it.
#[derive(Debug, Serialize)]
pub struct ApiRow {
    /// `topic/partition/offset`: its place on the anomalies topic, and its detail's path
    /// (`/api/anomalies/{id}`).
    pub id: String,
    pub event_time: String,
    pub event_time_source: String,
    pub detected_at: String,
    pub detector: String,
    pub key: Option<String>,
    pub score: f64,
    pub decision: f64,
    pub model_id: String,
    pub model_kind: String,
    pub rules: Vec<String>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The anomaly record as stored (the source record and anomalyd's additions, with the
    /// explanation under `anomalyd.explanation`); only in a single anomaly's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<Box<RawValue>>,
}

impl ApiRow {
    /// `r` for the API; `with_record`: include the record.
    pub fn new(r: StoredRow, with_record: bool) -> Self {
        Self {
            id: format!("{}/{}/{}", r.topic, r.partition, r.offset),
            event_time: format_ms(r.event_time_ms),
            event_time_source: r.event_time_source,
            detected_at: format_ms(r.detected_at_ms),
            detector: r.detector,
            key: r.key,
            score: r.score,
            decision: r.decision,
            model_id: r.model_id,
            model_kind: r.model_kind,
            rules: r
                .rules
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            topic: r.topic,
            partition: r.partition,
            offset: r.offset,
            record: with_record
                .then(|| RawValue::from_string(r.record).ok())
                .flatten(),
        }
    }
}

/// Anomalies (`decision < 0`) matching the API's filter.
pub fn anomaly_filter(
    detector: Option<String>,
    key: Option<String>,
    since_ms: i64,
    until_ms: Option<i64>,
    limit: usize,
) -> Filter {
    Filter {
        detector,
        key,
        since_ms: Some(since_ms),
        until_ms,
        anomalies_only: true,
        limit,
        ..Filter::default()
    }
}

/// One interval's count.
#[derive(Debug, Clone, Serialize)]
pub struct Count {
    /// The interval's start, RFC 3339; it lasts `by`.
    pub start: String,
    #[serde(skip)]
    pub start_ms: i64,
    pub count: u64,
}

/// One detector's counts per interval.
#[derive(Debug, Clone, Serialize)]
pub struct DetectorCounts {
    pub detector: String,
    /// The sum of `counts`.
    pub anomalies: u64,
    /// Only intervals with anomalies, oldest first.
    pub counts: Vec<Count>,
}

/// Anomalies per interval of `bucket_ms` for each of `detectors`, in one blocking call.
pub async fn counts(
    view: &Arc<View>,
    detectors: Vec<String>,
    key: Option<String>,
    since_ms: i64,
    until_ms: Option<i64>,
    bucket_ms: i64,
) -> Result<Vec<DetectorCounts>, DataError> {
    view.read(move |s| {
        detectors
            .into_iter()
            .map(|d| {
                let f = anomaly_filter(Some(d.clone()), key.clone(), since_ms, until_ms, 0);
                let counts: Vec<Count> = s
                    .count_by(&f, bucket_ms)?
                    .into_iter()
                    .map(|(start_ms, count)| Count {
                        start: format_ms(start_ms),
                        start_ms,
                        count,
                    })
                    .collect();
                Ok(DetectorCounts {
                    detector: d,
                    anomalies: counts.iter().map(|c| c.count).sum(),
                    counts,
                })
            })
            .collect()
    })
    .await
}

/// One point of a series.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub time: String,
    #[serde(skip)]
    pub time_ms: i64,
    pub value: f64,
    /// The record was an anomaly (`decision < 0`).
    pub anomaly: bool,
    /// The row's `topic/partition/offset`.
    pub id: String,
}

/// A series and what could not be drawn.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub points: Vec<Point>,
    /// Rows whose record has no number at the field.
    pub skipped: u64,
}

/// The numeric `field` (`a.b` for member `b` of `a`) of a record as stored: at the top (an
/// inline anomaly or scored record) or under `record` (a wrapped one).
pub fn field_value(record: &str, field: &str) -> Option<f64> {
    let v: Value = serde_json::from_str(record).ok()?;
    let find = |root: &Value| {
        field
            .split('.')
            .try_fold(root, |v, part| v.get(part))
            .and_then(Value::as_f64)
    };
    find(&v).or_else(|| v.get("record").and_then(find))
}

/// The source record a stored row was scored from (`anomalyd.source`), so the same reading
/// stored from both the anomalies and the scored topic is drawn once.
fn source_of(record: &str) -> Option<(String, i64, i64)> {
    let v: Value = serde_json::from_str(record).ok()?;
    let s = v.get("anomalyd")?.get("source")?;
    Some((
        s.get("topic")?.as_str()?.to_owned(),
        s.get("partition")?.as_i64()?,
        s.get("offset")?.as_i64()?,
    ))
}

/// The rows of `detector` and `key` in range (scored records and anomalies alike), as the
/// numeric `field` over time, oldest first, at most `limit` (the newest).
pub async fn series(
    view: &Arc<View>,
    detector: String,
    key: String,
    field: String,
    since_ms: i64,
    until_ms: Option<i64>,
    limit: usize,
) -> Result<Series, DataError> {
    view.read(move |s| {
        let f = Filter {
            detector: Some(detector),
            key: Some(key),
            since_ms: Some(since_ms),
            until_ms,
            limit,
            ..Filter::default()
        };
        let rows = s.select(&f)?;
        let mut seen = BTreeSet::new();
        let mut skipped = 0;
        let mut points = Vec::with_capacity(rows.len());
        for r in rows.into_iter().rev() {
            if let Some(src) = source_of(&r.record)
                && !seen.insert(src)
            {
                continue;
            }
            match field_value(&r.record, &field) {
                Some(value) => points.push(Point {
                    time: format_ms(r.event_time_ms),
                    time_ms: r.event_time_ms,
                    value,
                    anomaly: r.decision < 0.0,
                    id: format!("{}/{}/{}", r.topic, r.partition, r.offset),
                }),
                None => skipped += 1,
            }
        }
        Ok(Series { points, skipped })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_is_found_inline_or_wrapped() {
        assert_eq!(field_value(r#"{"t":41.5,"anomalyd":{}}"#, "t"), Some(41.5));
        assert_eq!(field_value(r#"{"a":{"b":2}}"#, "a.b"), Some(2.0));
        assert_eq!(
            field_value(r#"{"record":{"t":3},"anomalyd":{}}"#, "t"),
            Some(3.0)
        );
        assert_eq!(field_value(r#"{"t":"hot"}"#, "t"), None);
        assert_eq!(field_value("not json", "t"), None);
    }
}
