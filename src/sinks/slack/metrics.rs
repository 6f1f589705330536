//! The notifier's counters: read by `/metrics` and `/status`, written by the notifier task.
//! They outlive each attempt of the task, so a restart does not reset them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use serde::Serialize;

#[derive(Debug, Default)]
pub struct SlackMetrics {
    /// Messages Slack accepted (or, in `log` mode, written to the log).
    pub alerts_sent: AtomicU64,
    /// Anomalies carried by those messages (each counted once per accepted message).
    pub anomalies_alerted: AtomicU64,
    /// Of `alerts_sent`, those accepted only in a smaller form after Slack refused the first
    /// for its content (`msg_blocks_too_long`, ...).
    pub alerts_reduced: AtomicU64,
    /// Alerts Slack refused in every form for their content: logged as errors and not sent
    /// (their anomalies are committed, since resending the same content cannot succeed).
    pub alerts_refused: AtomicU64,
    /// Requests repeated after a failure or a 429.
    pub retries: AtomicU64,
    /// HTTP 429 answers (and `ratelimited` errors).
    pub rate_limited: AtomicU64,
    /// Requests that failed: 5xx, timeouts, connection errors and permanent errors.
    pub failures: AtomicU64,
    /// The wait in progress before the next attempt, in milliseconds; 0 when not waiting.
    pub backoff_ms: AtomicU64,
    /// Anomalies read but not yet in an accepted message.
    pub pending_anomalies: AtomicU64,
    /// Records on the anomalies topic that are not anomaly records (skipped).
    pub skipped_records: AtomicU64,
    /// The last request failed and no message has been accepted since.
    pub failing: AtomicBool,
    /// What went wrong last, without secrets.
    pub last_error: Mutex<Option<String>>,
}

impl SlackMetrics {
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

    /// Whether alerts are failing right now (health says WARNING).
    pub fn is_failing(&self) -> bool {
        self.failing.load(Relaxed)
    }

    pub fn snapshot(&self) -> SlackMetricsSnapshot {
        SlackMetricsSnapshot {
            alerts_sent: self.alerts_sent.load(Relaxed),
            anomalies_alerted: self.anomalies_alerted.load(Relaxed),
            alerts_reduced: self.alerts_reduced.load(Relaxed),
            alerts_refused: self.alerts_refused.load(Relaxed),
            retries: self.retries.load(Relaxed),
            rate_limited: self.rate_limited.load(Relaxed),
            failures: self.failures.load(Relaxed),
            backoff_ms: self.backoff_ms.load(Relaxed),
            pending_anomalies: self.pending_anomalies.load(Relaxed),
            skipped_records: self.skipped_records.load(Relaxed),
            failing: self.is_failing(),
            last_error: self.last_error(),
        }
    }
}

/// A point-in-time copy of [`SlackMetrics`], for `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlackMetricsSnapshot {
    pub alerts_sent: u64,
    pub anomalies_alerted: u64,
    pub alerts_reduced: u64,
    pub alerts_refused: u64,
    pub retries: u64,
    pub rate_limited: u64,
    pub failures: u64,
    pub backoff_ms: u64,
    pub pending_anomalies: u64,
    pub skipped_records: u64,
    pub failing: bool,
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_marks_failing_until_cleared() {
        let m = SlackMetrics::default();
        assert!(!m.snapshot().failing);
        m.set_error("slack answered 500".into());
        let s = m.snapshot();
        assert!(s.failing);
        assert_eq!(s.last_error.as_deref(), Some("slack answered 500"));
        m.failing.store(false, Relaxed);
        assert!(!m.is_failing());
    }
}
