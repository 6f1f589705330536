//! A stage's counters, shared by its partition workers and read by `/metrics` and `/status`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// Counters of one stage over all its partitions, since start.
#[derive(Debug, Default)]
pub struct StageMetrics {
    /// Records read from the input topic (re-reads after a restart included).
    pub records_in: AtomicU64,
    /// Outputs acknowledged by the broker, every topic.
    pub outputs: AtomicU64,
    /// Outputs the broker refused for their content, skipped.
    pub outputs_refused: AtomicU64,
    /// Results emitted to the main output (valid invoices; final window counts; partials).
    pub emitted: AtomicU64,
    /// Results emitted to the invalid output (invoices with a bad line).
    pub invalid: AtomicU64,
    /// Records for a session or window already emitted, sent to the late output.
    pub late: AtomicU64,
    /// Records that could not be read, sent to the dead letters.
    pub dead_letters: AtomicU64,
    /// Records this stage does not aggregate (cancellation lines for the invoices stage;
    /// other lines for the cancellations count).
    pub skipped: AtomicU64,
    /// Sessions emitted before their gap had passed because `max_open` was reached.
    pub closed_early: AtomicU64,
    /// Partials of a window already final, ignored (a repeat after a crash, or a partition
    /// past the idle timeout).
    pub partials_late: AtomicU64,
    /// Sessions or windows open now, over all partitions of this instance.
    pub open: AtomicI64,
    committed: Mutex<BTreeMap<(String, i32), i64>>,
}

/// A copy of [`StageMetrics`] for reports.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StageSnapshot {
    pub records_in: u64,
    pub outputs: u64,
    pub outputs_refused: u64,
    pub emitted: u64,
    pub invalid: u64,
    pub late: u64,
    pub dead_letters: u64,
    pub skipped: u64,
    pub closed_early: u64,
    pub partials_late: u64,
    pub open: i64,
    /// The last committed (safe) offset of each partition: `"topic/partition": offset`.
    pub committed: BTreeMap<String, i64>,
}

impl StageMetrics {
    /// Notes that `offset` was committed for `topic`/`partition`.
    pub fn committed(&self, topic: &str, partition: i32, offset: i64) {
        let mut c = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        c.insert((topic.to_owned(), partition), offset);
    }

    /// `topic`/`partition` is no longer held here: its committed offset is its next owner's to
    /// report.
    pub fn forget(&self, topic: &str, partition: i32) {
        let mut c = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        c.remove(&(topic.to_owned(), partition));
    }

    pub fn snapshot(&self) -> StageSnapshot {
        let committed = self
            .committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((t, p), o)| (format!("{t}/{p}"), *o))
            .collect();
        StageSnapshot {
            records_in: self.records_in.load(Relaxed),
            outputs: self.outputs.load(Relaxed),
            outputs_refused: self.outputs_refused.load(Relaxed),
            emitted: self.emitted.load(Relaxed),
            invalid: self.invalid.load(Relaxed),
            late: self.late.load(Relaxed),
            dead_letters: self.dead_letters.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            closed_early: self.closed_early.load(Relaxed),
            partials_late: self.partials_late.load(Relaxed),
            open: self.open.load(Relaxed),
            committed,
        }
    }
}
