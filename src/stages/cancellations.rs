//! The cancellations stage, in two steps so that the count is right over the whole topic
//! with any number of anomalyd instances in the group (Kafka Streams does the same with a
//! repartition topic):
//!
//! 1. [`CancellationStage`], one per input partition: the distinct cancelled InvoiceNos of
//!    each hopping window seen on that partition ([`DistinctWindows`]), emitted when the window
//!    closes there as a partial `{window_start, window_end, partition, keys}`, keyed by the
//!    window start, to the partials topic. Of the empty windows closed together only the last
//!    is sent (with the series' first): it carries the partition's progress, and a window no
//!    partial reported counts zero.
//! 2. [`CombineStage`], on the partials topic (one partition, so one member of the combiner's
//!    group holds it at a time): the union of every partition's partials per window
//!    ([`Combiner`]), emitted once every input partition has passed the window (or gone idle),
//!    as `{window_start, window_end, count}` keyed by window start, zero counts included.
//!
//! Both commit only their safe offsets, so their open windows survive a crash; a partial sent
//! twice after a crash is harmless (a union). The combiner must not emit a window twice with
//! different counts: a partial re-read after a restart may belong to a window already final.
//! So when it takes the partials topic over, it first reads the last final it (or the member
//! before it) wrote to the output topic, and emits nothing before the window after that one:
//! the output topic itself is the record of what was emitted, and Kafka stays the only store.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use rdkafka::message::{Message, OwnedMessage};

use super::aggregate::invoice::{Columns, parse_line};
use super::hopping_window::{AddOutcome, Combiner, DistinctWindows, Partial};
use super::invoices::LATE;
use super::metrics::StageMetrics;
use super::time::TimeMode;
use super::time::rfc3339;
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
    /// Whether this partition has sent a partial since it was assigned.
    sent_any: bool,
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
            sent_any: false,
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
            // Not counted, but its time moves the partition's stream time.
            if let (TimeMode::Event, Some(t)) = (self.mode, line.time_ms()) {
                self.windows.observe(t);
            }
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
        let closed = self.windows.advance(now_ms);
        let last = closed.len().saturating_sub(1);
        for (i, partial) in closed.into_iter().enumerate() {
            debug_assert_eq!(partial.partition, self.partition);
            // An empty window's partial only says that this partition is past it. The combiner
            // counts a window no partial reported as zero and takes a partition's progress
            // from its latest partial, so of the empty windows closed together only the last
            // is sent, and the series' first (where the combined series starts). Nights and
            // weekends are thousands of empty windows: sending each one cost more than the
            // rest of the job (docs/benchmarks.md, "Purchases").
            if partial.keys.is_empty() && i != last && self.sent_any {
                continue;
            }
            self.sent_any = true;
            self.metrics.emitted.fetch_add(1, Relaxed);
            out.push(Emit {
                topic: Arc::clone(&self.outputs.partials),
                key: Some(partial.window.start.to_string().into_bytes()),
                value: serde_json::to_vec(&partial).expect("a partial serializes"),
                headers: None,
            });
        }
    }

    fn safe_offset(&mut self, next: i64) -> i64 {
        self.windows.safe_offset(next)
    }
}

/// Step 2: the partials of every input partition combined into one series.
pub struct CombineStage {
    combiner: Combiner,
    /// Until the last final already written is known: where its answer comes from.
    restoring: Option<Restore>,
    /// The input topic's partition count, refreshed from the broker by the daemon.
    partitions: Arc<AtomicUsize>,
    outputs: Arc<CancellationOutputs>,
    topic: String,
    metrics: Arc<StageMetrics>,
}

impl CombineStage {
    /// A combiner that, before emitting anything, reads the last final of `outputs.counts`
    /// with a client made from `reader` (a consumer configuration).
    pub fn new(
        combiner: Combiner,
        partitions: Arc<AtomicUsize>,
        outputs: Arc<CancellationOutputs>,
        topic: &str,
        metrics: Arc<StageMetrics>,
        reader: rdkafka::ClientConfig,
    ) -> Self {
        Self {
            restoring: Some(Restore::start(reader, Arc::clone(&outputs.counts))),
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
        match self.combiner.add(partial, m.offset(), now_ms) {
            AddOutcome::Added | AddOutcome::Duplicate => {}
            AddOutcome::Late | AddOutcome::Rejected => {
                self.metrics.partials_late.fetch_add(1, Relaxed);
            }
        }
    }

    fn punctuate(&mut self, now_ms: i64, out: &mut Vec<Emit>) {
        if let Some(restore) = &mut self.restoring {
            match restore.poll() {
                None => return,
                Some(last) => {
                    if let Some(start) = last {
                        let next = start + self.combiner.hopping().advance_ms();
                        tracing::info!(window_start = ?rfc3339(next), "the combined count carries on after the last final written");
                        self.combiner.restore_frontier(next);
                    }
                    self.restoring = None;
                }
            }
        }
        let n = self.partitions.load(Relaxed);
        if n > 0 {
            self.combiner.set_partitions(n);
        }
        for fin in self.combiner.advance(now_ms) {
            self.metrics.emitted.fetch_add(1, Relaxed);
            let Ok(value) = serde_json::to_vec(&fin) else {
                tracing::error!(
                    window_start = fin.window_start,
                    "a window outside the representable dates is skipped"
                );
                continue;
            };
            let key = rfc3339(fin.window_start).unwrap_or_default();
            out.push(Emit {
                topic: Arc::clone(&self.outputs.counts),
                key: Some(key.into_bytes()),
                value,
                headers: None,
            });
        }
    }

    fn safe_offset(&mut self, next: i64) -> i64 {
        self.combiner.safe_offset(next)
    }
}

/// Reading the last final already written, on a thread of its own (blocking client calls),
/// retried every few seconds until it succeeds.
struct Restore {
    reader: rdkafka::ClientConfig,
    topic: Arc<str>,
    answer: std::sync::mpsc::Receiver<Result<Option<i64>, String>>,
    retry_at: Option<std::time::Instant>,
}

impl Restore {
    fn start(reader: rdkafka::ClientConfig, topic: Arc<str>) -> Self {
        let answer = Self::spawn(reader.clone(), Arc::clone(&topic));
        Self {
            reader,
            topic,
            answer,
            retry_at: None,
        }
    }

    fn spawn(
        reader: rdkafka::ClientConfig,
        topic: Arc<str>,
    ) -> std::sync::mpsc::Receiver<Result<Option<i64>, String>> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(last_final(&reader, &topic).map_err(|e| e.to_string()));
        });
        rx
    }

    /// `Some(last window start written, if any)` once known.
    fn poll(&mut self) -> Option<Option<i64>> {
        if let Some(at) = self.retry_at {
            if std::time::Instant::now() < at {
                return None;
            }
            self.retry_at = None;
            self.answer = Self::spawn(self.reader.clone(), Arc::clone(&self.topic));
        }
        match self.answer.try_recv() {
            Ok(Ok(last)) => Some(last),
            Ok(Err(e)) => {
                tracing::warn!(topic = %self.topic, error = e, "could not read the last final count written; retrying in 2 s");
                self.retry_at = Some(std::time::Instant::now() + std::time::Duration::from_secs(2));
                None
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => None,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                self.retry_at = Some(std::time::Instant::now());
                None
            }
        }
    }
}

/// The latest `window_start` (ms) among the last record of each partition of `topic`: finals
/// are written in window order, so that is the last one written. `None` for an empty topic.
fn last_final(
    reader: &rdkafka::ClientConfig,
    topic: &str,
) -> Result<Option<i64>, rdkafka::error::KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use std::time::Duration;
    let consumer: BaseConsumer = reader.create()?;
    let timeout = Duration::from_secs(5);
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut last = None;
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        if high <= low {
            continue;
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(high - 1))?;
        consumer.assign(&tpl)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                if std::time::Instant::now() > deadline {
                    return Err(rdkafka::error::KafkaError::MessageConsumption(
                        rdkafka::types::RDKafkaErrorCode::RequestTimedOut,
                    ));
                }
                continue;
            };
            let m = m?;
            if m.partition() != p {
                continue;
            }
            let start = m
                .payload()
                .and_then(|v| serde_json::from_slice::<super::hopping_window::Final>(v).ok())
                .map(|f| f.window_start);
            last = last.max(start);
            break;
        }
    }
    Ok(last)
}
