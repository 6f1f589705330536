//! The cancellations stage, in two steps so that the count is right over the whole topic
//! with any number of anomalyd instances in the group (Kafka Streams does the same with a
//! repartition topic):
//!
//! 1. [`CancellationStage`], one per input partition: the distinct cancelled InvoiceNos of
//!    each hopping window seen on that partition ([`DistinctWindows`]), emitted when the window
//!    closes there as a partial `{window_start, window_end, partition, keys}`, empty windows
//!    included, keyed by the window start, to the partials topic.
//! 2. [`CombineStage`], on the partials topic (one partition, so one member of the combiner's
//!    group holds it at a time): the union of every partition's partials per window
//!    ([`Combiner`]), emitted once every input partition has passed the window (or gone idle),
//!    as `{window_start, window_end, count}` keyed by window start, zero counts included.
//!
//! Both commit only their safe offsets, so their open windows survive a crash; a partial sent
//! twice after a crash is harmless (a union), and a final sent twice has the same key.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use rdkafka::message::{Message, OwnedMessage};

use super::aggregate::invoice::{Columns, parse_line};
use super::hopping_window::{Combiner, DistinctWindows, Partial};
use super::invoices::LATE;
use super::metrics::StageMetrics;
use super::time::TimeMode;
use super::worker::{Emit, Stage};
use crate::sinks::SourceRef;
use crate::sinks::dead_letter::letter_headers;

/// Where a cancellations stage writes.
#[derive(Debug)]
pub struct CancellationOutputs {
    pub partials: Arc<str>,
    pub counts: Arc<str>,
    pub late: Arc<str>,
    pub dead_letter: Arc<str>,
}

/// Step 1: one input partition's windows.
pub struct CancellationStage {
    windows: DistinctWindows,
    columns: Arc<Columns>,
    mode: TimeMode,
    outputs: Arc<CancellationOutputs>,
    topic: String,
    partition: i32,
    metrics: Arc<StageMetrics>,
}

impl CancellationStage {
    pub fn new(
        windows: DistinctWindows,
        mode: TimeMode,
        columns: Arc<Columns>,
        outputs: Arc<CancellationOutputs>,
        topic: &str,
        partition: i32,
        metrics: Arc<StageMetrics>,
    ) -> Self {
        Self {
            windows,
            columns,
            mode,
            outputs,
            topic: topic.to_owned(),
            partition,
            metrics,
        }
    }
}

/// A record of `topic` copied to `to` with reason headers.
fn letter(m: &OwnedMessage, topic: &str, to: &Arc<str>, reason: &str, why: &str) -> Emit {
    let from = SourceRef {
        topic,
        partition: m.partition(),
        offset: m.offset(),
    };
    Emit {
        topic: Arc::clone(to),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().unwrap_or_default().to_vec(),
        headers: Some(letter_headers(reason, why, &from)),
    }
}

impl Stage for CancellationStage {
    fn process(&mut self, m: &OwnedMessage, now_ms: i64, out: &mut Vec<Emit>) {
        let line = match parse_line(m.payload().unwrap_or_default(), &self.columns) {
            Ok(line) => line,
            Err(e) => {
                self.metrics.dead_letters.fetch_add(1, Relaxed);
                out.push(letter(
                    m,
                    &self.topic,
                    &self.outputs.dead_letter,
                    e.reason(),
                    &e.to_string(),
                ));
                return;
            }
        };
        if !line.is_cancellation() {
            self.metrics.skipped.fetch_add(1, Relaxed);
            return;
        }
        let t = match self.mode {
            TimeMode::Processing => Some(now_ms),
            TimeMode::Event => line.time_ms(),
        };
        let Some(t) = t else {
            // A cancellation without a time cannot be placed in a window.
            self.metrics.dead_letters.fetch_add(1, Relaxed);
            out.push(letter(
                m,
                &self.topic,
                &self.outputs.dead_letter,
                "no_event_time",
                "the InvoiceDate of this cancellation cannot be read, so it has no window",
            ));
            return;
        };
        if self.windows.add(line.invoice_no(), t, m.offset()).is_err() {
            self.metrics.late.fetch_add(1, Relaxed);
            out.push(letter(
                m,
                &self.topic,
                &self.outputs.late,
                LATE,
                "every window of this cancellation's time has already closed on this partition",
            ));
        }
    }

    fn punctuate(&mut self, now_ms: i64, out: &mut Vec<Emit>) {
        for partial in self.windows.advance(now_ms) {
            debug_assert_eq!(partial.partition, self.partition);
            self.metrics.emitted.fetch_add(1, Relaxed);
            out.push(Emit {
                topic: Arc::clone(&self.outputs.partials),
                key: Some(partial.window.start.to_string().into_bytes()),
                value: serde_json::to_vec(&partial).expect("a partial serializes"),
                headers: None,
            });
        }
    }

    fn safe_offset(&self, next: i64) -> i64 {
        self.windows.safe_offset(next)
    }
}

/// Step 2: the partials of every input partition combined into one series.
pub struct CombineStage {
    combiner: Combiner,
    /// The input topic's partition count, refreshed from the broker by the daemon.
    partitions: Arc<AtomicUsize>,
    outputs: Arc<CancellationOutputs>,
    topic: String,
    metrics: Arc<StageMetrics>,
}

impl CombineStage {
    pub fn new(
        combiner: Combiner,
        partitions: Arc<AtomicUsize>,
        outputs: Arc<CancellationOutputs>,
        topic: &str,
        metrics: Arc<StageMetrics>,
    ) -> Self {
        Self {
            combiner,
            partitions,
            outputs,
            topic: topic.to_owned(),
            metrics,
        }
    }
}

impl Stage for CombineStage {
    fn process(&mut self, m: &OwnedMessage, now_ms: i64, out: &mut Vec<Emit>) {
        let partial: Partial = match serde_json::from_slice(m.payload().unwrap_or_default()) {
            Ok(p) => p,
            Err(e) => {
                self.metrics.dead_letters.fetch_add(1, Relaxed);
                out.push(letter(
                    m,
                    &self.topic,
                    &self.outputs.dead_letter,
                    "not_a_partial",
                    &format!(
                        "not a partial count {{window_start, window_end, partition, keys}}: {e}"
                    ),
                ));
                return;
            }
        };
        if !self.combiner.add(partial, m.offset(), now_ms).is_added() {
            self.metrics.partials_late.fetch_add(1, Relaxed);
        }
    }

    fn punctuate(&mut self, now_ms: i64, out: &mut Vec<Emit>) {
        let n = self.partitions.load(Relaxed);
        if n > 0 {
            self.combiner.set_partitions(n);
        }
        for fin in self.combiner.advance(now_ms) {
            self.metrics.emitted.fetch_add(1, Relaxed);
            let value = serde_json::to_vec(&fin).expect("a count serializes");
            let key = serde_json::to_value(&fin)
                .ok()
                .and_then(|v| v["window_start"].as_str().map(str::to_owned))
                .unwrap_or_default();
            out.push(Emit {
                topic: Arc::clone(&self.outputs.counts),
                key: Some(key.into_bytes()),
                value,
                headers: None,
            });
        }
    }

    fn safe_offset(&self, next: i64) -> i64 {
        self.combiner.safe_offset(next)
    }
}
