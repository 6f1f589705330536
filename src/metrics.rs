//! Counters and latency histograms kept by the pipeline, read by the control socket and the
//! shutdown summary.
//!
//! Everything is lock-free atomics on the hot path except the per-partition table, which is
//! touched once per batch.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;

use crate::sinks::dead_letter::REASONS;

/// Upper bounds, in seconds, of the latency buckets: 100 us to 10 s, finest between 5 and
/// 100 ms, where the end-to-end target (p99 <= 50 ms) has to be told apart from its misses.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04,
    0.05, 0.06, 0.075, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds of the batch-size buckets.
pub const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

/// A cumulative histogram with fixed buckets, as Prometheus expects.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, plus the overflow (`+Inf`) bucket; not cumulative.
    counts: Vec<AtomicU64>,
    /// Sum of observations in millionths, so it fits an atomic integer.
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add((v.max(0.0) * 1e6).round() as u64, Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        HistogramSnapshot {
            bounds: self.bounds.to_vec(),
            count: counts.iter().sum(),
            sum: self.sum_micros.load(Relaxed) as f64 / 1e6,
            counts,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HistogramSnapshot {
    pub bounds: Vec<f64>,
    /// Per bucket (not cumulative), the last one being `+Inf`.
    pub counts: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

impl HistogramSnapshot {
    /// The upper bound of the bucket holding quantile `q`: an estimate that never understates.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(self.bounds.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        None
    }
}

/// What one partition has seen since this process took it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionStats {
    pub records: u64,
    pub anomalies: u64,
    pub dead_letters: u64,
    /// Offset of the last record whose results were delivered.
    pub last_offset: Option<i64>,
}

/// The pipeline's metrics, shared by every task.
#[derive(Debug)]
pub struct Metrics {
    pub records_in: AtomicU64,
    pub anomalies_out: AtomicU64,
    dead_letters: [AtomicU64; REASONS.len()],
    /// Records none of whose outputs the producer or broker would take, not even a dead letter
    /// without its value: skipped, each logged with its offset.
    pub records_skipped: AtomicU64,
    /// Records outside the detector's A/B split (another variant's): not read, not scored,
    /// their offsets committed. Not in `records_in`.
    pub records_skipped_by_split: AtomicU64,
    pub batches: AtomicU64,
    pub batch_size: Histogram,
    /// Time to extract features and score one batch.
    pub score_latency: Histogram,
    /// Time from producing a batch's results to their acknowledgement.
    pub delivery_latency: Histogram,
    /// From the source record's timestamp to its anomaly's acknowledgement.
    pub end_to_end_latency: Histogram,
    /// Records written by the generator and acknowledged.
    pub generated: AtomicU64,
    /// Of those, the ones drawn as outliers (what `[generator] label_outliers` labels true),
    /// or with the sensors profile the injected faults (what `label_faults` labels).
    pub generated_outliers: AtomicU64,
    partitions: Mutex<BTreeMap<(String, i32), PartitionStats>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            records_in: AtomicU64::new(0),
            anomalies_out: AtomicU64::new(0),
            dead_letters: Default::default(),
            records_skipped: AtomicU64::new(0),
            records_skipped_by_split: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_size: Histogram::new(BATCH_BUCKETS),
            score_latency: Histogram::new(LATENCY_BUCKETS),
            delivery_latency: Histogram::new(LATENCY_BUCKETS),
            end_to_end_latency: Histogram::new(LATENCY_BUCKETS),
            generated: AtomicU64::new(0),
            generated_outliers: AtomicU64::new(0),
            partitions: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Metrics {
    pub fn dead_letter(&self, reason: &str) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.dead_letters[i].fetch_add(1, Relaxed);
        }
    }

    /// Dead letters by reason code, every reason listed.
    pub fn dead_letters(&self) -> BTreeMap<&'static str, u64> {
        REASONS
            .iter()
            .zip(&self.dead_letters)
            .map(|(r, c)| (*r, c.load(Relaxed)))
            .collect()
    }

    /// Records one delivered batch of a partition.
    pub fn partition_batch(&self, topic: &str, partition: i32, delta: &PartitionStats) {
        let mut parts = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        let s = parts.entry((topic.to_owned(), partition)).or_default();
        s.records += delta.records;
        s.anomalies += delta.anomalies;
        s.dead_letters += delta.dead_letters;
        if delta.last_offset.is_some() {
            s.last_offset = delta.last_offset;
        }
    }

    pub fn partitions(&self) -> BTreeMap<(String, i32), PartitionStats> {
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            records_in: self.records_in.load(Relaxed),
            anomalies_out: self.anomalies_out.load(Relaxed),
            dead_letters: self.dead_letters(),
            records_skipped: self.records_skipped.load(Relaxed),
            records_skipped_by_split: self.records_skipped_by_split.load(Relaxed),
            batches: self.batches.load(Relaxed),
            generated: self.generated.load(Relaxed),
            generated_outliers: self.generated_outliers.load(Relaxed),
            batch_size: self.batch_size.snapshot(),
            score_latency: self.score_latency.snapshot(),
            delivery_latency: self.delivery_latency.snapshot(),
            end_to_end_latency: self.end_to_end_latency.snapshot(),
        }
    }
}

/// A point-in-time copy of [`Metrics`], for `/status` and summaries.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsSnapshot {
    pub records_in: u64,
    pub anomalies_out: u64,
    pub dead_letters: BTreeMap<&'static str, u64>,
    /// See [`Metrics::records_skipped`].
    pub records_skipped: u64,
    /// See [`Metrics::records_skipped_by_split`].
    pub records_skipped_by_split: u64,
    pub batches: u64,
    pub generated: u64,
    pub generated_outliers: u64,
    pub batch_size: HistogramSnapshot,
    pub score_latency: HistogramSnapshot,
    pub delivery_latency: HistogramSnapshot,
    pub end_to_end_latency: HistogramSnapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let h = Histogram::new(&[1.0, 2.0, 5.0]);
        for v in [0.5, 1.0, 1.5, 3.0, 100.0] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.counts, [2, 1, 1, 1]);
        assert_eq!(s.count, 5);
        assert!((s.sum - 106.0).abs() < 1e-9);
        assert_eq!(s.quantile(0.4), Some(1.0));
        assert_eq!(s.quantile(0.5), Some(2.0));
        assert_eq!(s.quantile(0.99), Some(f64::INFINITY));
        assert_eq!(Histogram::new(&[1.0]).snapshot().quantile(0.5), None);
    }

    #[test]
    fn dead_letters_by_reason() {
        let m = Metrics::default();
        m.dead_letter("not_json");
        m.dead_letter("not_json");
        m.dead_letter("wrong_feature_count");
        let d = m.dead_letters();
        assert_eq!(d["not_json"], 2);
        assert_eq!(d["wrong_feature_count"], 1);
        assert_eq!(d["missing_feature"], 0);
    }

    #[test]
    fn partition_stats_accumulate() {
        let m = Metrics::default();
        let batch = PartitionStats {
            records: 10,
            anomalies: 2,
            dead_letters: 1,
            last_offset: Some(9),
        };
        m.partition_batch("t", 0, &batch);
        m.partition_batch("t", 0, &batch);
        let p = &m.partitions()[&("t".to_string(), 0)];
        assert_eq!((p.records, p.anomalies, p.last_offset), (20, 4, Some(9)));
    }
}
