//! The store's counters: read by `/metrics` and `/status`, written by the store task. They
//! outlive each attempt of the task, so a restart does not reset them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use serde::Serialize;

#[derive(Debug, Default)]
pub struct StoreMetrics {
    /// Rows written (transactions committed).
    pub rows_stored: AtomicU64,
    /// Rows already in the store (same topic, partition, offset): ignored.
    pub duplicates_ignored: AtomicU64,
    /// Records on the anomalies topics that are not anomaly records (skipped, committed).
    pub skipped_records: AtomicU64,
    /// Rows stored with the Kafka timestamp because `event_time_field` was missing or not RFC
    /// 3339 in the record.
    pub event_time_fallbacks: AtomicU64,
    /// Rows deleted by retention.
    pub rows_expired: AtomicU64,
    /// The last write failed and none has succeeded since.
    pub failing: AtomicBool,
    /// What went wrong last.
    pub last_error: Mutex<Option<String>>,
}

impl StoreMetrics {
    pub fn set_error(&self, error: String) {
        self.failing.store(true, Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn snapshot(&self) -> StoreMetricsSnapshot {
        StoreMetricsSnapshot {
            rows_stored: self.rows_stored.load(Relaxed),
            duplicates_ignored: self.duplicates_ignored.load(Relaxed),
            skipped_records: self.skipped_records.load(Relaxed),
            event_time_fallbacks: self.event_time_fallbacks.load(Relaxed),
            rows_expired: self.rows_expired.load(Relaxed),
            failing: self.failing.load(Relaxed),
            last_error: self.last_error(),
        }
    }
}

/// The store's part of `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct StoreMetricsSnapshot {
    pub rows_stored: u64,
    pub duplicates_ignored: u64,
    pub skipped_records: u64,
    pub event_time_fallbacks: u64,
    pub rows_expired: u64,
    pub failing: bool,
    pub last_error: Option<String>,
}
