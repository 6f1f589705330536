//! The cancellations stage, in two steps so that the count is right over the whole topic
//! with any number of anomalyd instances in the group (Kafka Streams does the same with a
//! repartition topic):
//!
//! 1. [`CancellationStage`], one per input partition: the distinct cancelled InvoiceNos of
//!    each hopping window seen on that partition ([`DistinctWindows`]), emitted when the window
//!    closes there as a partial `{window_start, window_end, partition, keys}`, keyed by the
//!    window start, to the partials topic. An empty window is sent only when it is the first or
//!    the last the partition closes at one tick: the combiner counts a window no partial named
//!    as zero, and a partition's progress is the last window it reported, so the rest would say
//!    nothing new (over months of event time they would be hundreds of thousands of records).
//!    A heartbeat (the last closed window again, every [`HEARTBEAT_MS`]) keeps a partition that
//!    is reading records, holds cancellations in windows it has not closed, or runs in
//!    processing time, from looking idle: the combined count waits for it. Only a partition
//!    with nothing to add goes idle.
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
    partition: i32,
    metrics: Arc<StageMetrics>,
    /// The last window this partition closed, without its keys, for heartbeats.
    last_closed: Option<Partial>,
    /// When a partial was last sent (processing time, ms).
    last_sent_ms: i64,
    /// A record came since the last partial.
    read_since_sent: bool,
}

/// How often a partition repeats its last closed window when it has nothing else to send, ms;
/// well under the default `idle_timeout_s` (30 s).
pub const HEARTBEAT_MS: i64 = 10_000;

impl CancellationStage {
    pub fn new(
        windows: DistinctWindows,
        mode: TimeMode,
        columns: Arc<Columns>,
        outputs: Arc<CancellationOutputs>,
        partition: i32,
        metrics: Arc<StageMetrics>,
    ) -> Self {
        Self {
            windows,
            columns,
            mode,
            outputs,
            partition,
            metrics,
            last_closed: None,
            last_sent_ms: i64::MIN,
            read_since_sent: false,
        }
    }

    fn send(&mut self, partial: &Partial, now_ms: i64, out: &mut Vec<Emit>) {
        self.metrics.emitted.fetch_add(1, Relaxed);
        self.last_sent_ms = now_ms;
        self.read_since_sent = false;
        out.push(Emit {
            topic: Arc::clone(&self.outputs.partials),
            key: Some(partial.window.start.to_string().into_bytes()),
            value: serde_json::to_vec(partial).expect("a partial serializes"),
            headers: None,
        });
    }
}

impl Stage for CancellationStage {
    fn process(&mut self, m: &OwnedMessage, now_ms: i64, out: &mut Vec<Emit>) {
        self.read_since_sent = true;
        let line = match parse_line(m.payload().unwrap_or_default(), &self.columns) {
            Ok(line) => line,
            Err(e) => {
                self.metrics.dead_letters.fetch_add(1, Relaxed);
                out.push(Emit::letter(
                    m,
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
            out.push(Emit::letter(
                m,
                &self.outputs.dead_letter,
                "no_event_time",
                "the InvoiceDate of this cancellation cannot be read, so it has no window",
            ));
            return;
        };
        if self.windows.add(line.invoice_no(), t, m.offset()).is_err() {
            self.metrics.late.fetch_add(1, Relaxed);
            out.push(Emit::letter(
                m,
                &self.outputs.late,
                LATE,
                "every window of this cancellation's time has already closed on this partition",
            ));
        }
    }

    fn punctuate(&mut self, now_ms: i64, out: &mut Vec<Emit>) {
        let closed = self.windows.advance(now_ms);
        let n = closed.len();
        for (i, partial) in closed.into_iter().enumerate() {
            debug_assert_eq!(partial.partition, self.partition);
            let first = self.last_closed.is_none() && i == 0;
            if first || i + 1 == n || !partial.keys.is_empty() {
                self.send(&partial, now_ms, out);
            }
            if i + 1 == n {
                self.last_closed = Some(Partial {
                    keys: Vec::new(),
                    ..partial
                });
            }
        }
        // A partition holding cancellations in windows it has not closed must not look idle:
        // the combined count would go on without them.
        let alive = self.read_since_sent
            || self.mode == TimeMode::Processing
            || self.windows.open_len() > 0;
        if n == 0
            && alive
            && now_ms.saturating_sub(self.last_sent_ms) >= HEARTBEAT_MS
            && let Some(last) = self.last_closed.clone()
        {
            self.send(&last, now_ms, out);
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
    metrics: Arc<StageMetrics>,
}

impl CombineStage {
    /// A combiner that, before emitting anything, reads the last final of `outputs.counts`
    /// with a client made from `reader` (a consumer configuration).
    pub fn new(
        combiner: Combiner,
        partitions: Arc<AtomicUsize>,
        outputs: Arc<CancellationOutputs>,
        metrics: Arc<StageMetrics>,
        reader: rdkafka::ClientConfig,
    ) -> Self {
        Self {
            restoring: Some(Restore::start(reader, Arc::clone(&outputs.counts))),
            combiner,
            partitions,
            outputs,
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
                out.push(Emit::letter(
                    m,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::window::Hopping;
    use rdkafka::Timestamp;

    fn stage(mode: TimeMode) -> CancellationStage {
        let hopping = Hopping::of_size_and_advance(480_000, 60_000).unwrap();
        CancellationStage::new(
            DistinctWindows::new(hopping, 0, mode, 2).unwrap(),
            mode,
            Arc::new(Columns::online_retail()),
            Arc::new(CancellationOutputs {
                partials: "partials".into(),
                counts: "counts".into(),
                late: "late".into(),
                dead_letter: "dead".into(),
            }),
            2,
            Arc::new(StageMetrics::default()),
        )
    }

    fn line(invoice: &str, time: &str) -> OwnedMessage {
        let text = format!("{invoice},D,Discount,-1,{time},27.5,14527,United Kingdom");
        OwnedMessage::new(
            Some(text.into_bytes()),
            Some(invoice.as_bytes().to_vec()),
            "purchases".into(),
            Timestamp::NotAvailable,
            2,
            0,
            None,
        )
    }

    fn partials(out: &[Emit]) -> Vec<Partial> {
        out.iter()
            .map(|e| serde_json::from_slice(&e.value).unwrap())
            .collect()
    }

    #[test]
    fn only_windows_that_say_something_are_sent_and_heartbeats_repeat_the_last() {
        let mut s = stage(TimeMode::Event);
        let mut out = Vec::new();
        s.process(&line("536400", "1/4/2011 9:00"), 0, &mut out);
        s.process(&line("C536401", "1/4/2011 9:30"), 0, &mut out);
        s.process(&line("536402", "1/4/2011 11:00"), 0, &mut out);
        s.punctuate(0, &mut out);
        let sent = partials(&out);
        // Windows from 8:53 (the first holding 9:00) to 10:52 (the last ending by 11:00)
        // closed: the first, the eight holding 9:30, and the last are sent.
        let minute = |h: i64, m: i64| (1_294_131_600_000 - 9 * 3_600_000) + (h * 60 + m) * 60_000;
        let starts: Vec<i64> = sent.iter().map(|p| p.window.start).collect();
        let mut expected = vec![minute(8, 53)];
        expected.extend((0..8).map(|i| minute(9, 23) + i * 60_000));
        expected.push(minute(10, 52));
        assert_eq!(starts, expected);
        assert!(sent[1..9].iter().all(|p| p.keys == ["C536401"]));
        assert!(sent[0].keys.is_empty() && sent[9].keys.is_empty());
        // Nothing closes without new records; a record since the last partial makes a
        // heartbeat once HEARTBEAT_MS have passed.
        out.clear();
        s.punctuate(HEARTBEAT_MS - 1, &mut out);
        assert!(out.is_empty());
        s.process(&line("536403", "1/4/2011 11:00"), 0, &mut out);
        s.punctuate(HEARTBEAT_MS + 1, &mut out);
        assert_eq!(partials(&out)[0].window.start, minute(10, 52));
        out.clear();
        s.punctuate(3 * HEARTBEAT_MS, &mut out);
        assert!(
            out.is_empty(),
            "no record since: an idle partition in event time says nothing"
        );
        // A cancellation in windows not yet closed keeps the partition beating, records or not.
        s.process(&line("C536404", "1/4/2011 11:00"), 0, &mut out);
        s.punctuate(4 * HEARTBEAT_MS, &mut out);
        s.punctuate(5 * HEARTBEAT_MS, &mut out);
        s.punctuate(6 * HEARTBEAT_MS, &mut out);
        assert_eq!(
            out.len(),
            3,
            "a heartbeat every HEARTBEAT_MS while it holds C536404"
        );
    }
}
