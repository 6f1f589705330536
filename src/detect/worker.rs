//! One partition's detector worker: takes that partition's records in order from its own
//! queue, scores them in batches, publishes anomalies, dead letters and (with `scored_topic`)
//! every scored record with its verdict, and only once the broker has acknowledged all of them
//! stores the batch's offset.
//!
//! A detector with an A/B split (`split`, see [`super::split`]) takes from each batch only the
//! records of its variant; the others are skipped unread, counted in
//! `records_skipped_by_split`, and covered by the batch's offset like every other record, so
//! they never hold the partition back.
//!
//! That order is the at-least-once guarantee: a stored (and so committed) offset never passes a
//! record whose results are not safely in Kafka. A crash re-scores at most the batches in flight.
//!
//! A scorer with per-key state (rules with `for`, see [`super::streaks`]) gets one state per
//! worker, and the offset stored is then its **safe offset**: no further than the first record
//! an open streak still needs, so that a restarted worker re-reads it and rebuilds the counts.
//! Every other scorer keeps no state and stores the batch's last offset, as before.
//!
//! No single record can stop a partition: an output the producer or broker refuses for its
//! own content (larger than `message.max.bytes`, checked before producing; or refused as too
//! large or invalid when produced or delivered) falls down a ladder, each step tried once: the
//! same output again (only after a refusal on delivery, which may have been a batch-mate's
//! doing), a `too_large` (or `refused`) dead letter with the value cut to fit, the same without
//! a value, and last, skipping the record, with an error log naming its offset and the
//! `records_skipped` metric. Any other produce error still fails the worker, so that nothing is
//! lost to a broker outage.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use thiserror::Error;
use tokio::sync::watch;

use super::csv_record::{CsvFormat, CsvReader};
use super::features::{FeatureExtractor, Rejection};
use super::scorer::{Batch, Needs, Scored, ScorerSource, score_partition_batch};
use super::split::SplitConfig;
use super::streaks::Streaks;
use crate::config::FeatureSpec;
use crate::metrics::{Metrics, PartitionStats};
use crate::sinks::anomalies::{Additions, Detection, Layout, write_anomaly};
use crate::sinks::{Pending, SinkError, SourceRef, dead_letter, enqueue};

/// What every worker of one detector shares.
pub struct WorkerEnv {
    /// The `[detectors.NAME]` name, published in every anomaly.
    pub detector: String,
    pub producer: FutureProducer,
    /// The scorer serving now, taken once per batch.
    pub scorer: Arc<dyn ScorerSource>,
    pub features: FeatureSpec,
    /// `format = "csv"`: the columns and feature columns each line is read with; `None` for
    /// JSON records.
    pub csv: Option<Arc<CsvFormat>>,
    pub output_topic: String,
    /// `scored_topic`: where every scored record goes with its verdict, besides the
    /// anomalies to `output_topic`; `None`: anomalies only.
    pub scored_topic: Option<String>,
    pub dead_letter_topic: String,
    pub batch_max: usize,
    pub batch_linger: Duration,
    /// This detector's counters.
    pub metrics: Arc<Metrics>,
    /// The daemon's counters over every detector.
    pub total: Arc<Metrics>,
    /// The producer's `message.max.bytes`: no output larger than this is produced (see
    /// [`crate::sinks::message_max_bytes`]).
    pub max_message_bytes: usize,
    /// The A/B split: only records whose key is in its range are read and scored; the others
    /// are skipped (counted, their offsets stored with the batch's). `None`: every record.
    pub split: Option<SplitConfig>,
}

#[derive(Debug, Error)]
pub enum WorkerError {
    #[error("partition {topic}/{partition}: {source}")]
    Sink {
        topic: String,
        partition: i32,
        source: SinkError,
    },
    #[error("partition {topic}/{partition}: could not store offset {offset}: {source}")]
    StoreOffset {
        topic: String,
        partition: i32,
        offset: i64,
        source: KafkaError,
    },
}

/// Reads every record of `batch` as a CSV line of `format`: its JSON view, or why not. The
/// features a scorer that [`Needs::Features`] takes are appended to `rows`, one row per line
/// read, in order.
fn read_csv(
    format: &CsvFormat,
    needs: Needs,
    batch: &[OwnedMessage],
    rows: &mut Vec<f64>,
) -> Vec<Result<String, Rejection>> {
    let features = match needs {
        Needs::Features(n) => Some(n),
        Needs::Record => None,
    };
    // A model whose feature count is not the columns' was refused at load and at reload;
    // should one get here, its records go to the dead letters rather than be misread.
    let mismatch = features.filter(|&n| n != format.n_features());
    let mut reader = CsvReader::new(format, features.is_some());
    batch
        .iter()
        .map(|m| match mismatch {
            Some(expected) => Err(Rejection::WrongFeatureCount {
                expected,
                found: format.n_features(),
            }),
            None => reader.read(m.payload(), rows).map(|line| line.json),
        })
        .collect()
}

/// `m` as an owned record, without its headers: a detector never reads a source record's
/// headers (a dead letter gets headers of its own), and copying them
/// ([`BorrowedMessage::detach`]) costs librdkafka a walk of the header section for every
/// record, about 1,000 instructions, a third of handing a record over
/// (docs/benchmarks.md, "CPU per record").
fn take(m: &BorrowedMessage<'_>) -> OwnedMessage {
    OwnedMessage::new(
        m.payload().map(<[u8]>::to_vec),
        m.key().map(<[u8]>::to_vec),
        m.topic().to_owned(),
        m.timestamp(),
        m.partition(),
        m.offset(),
        None,
    )
}

/// One partition, owned by one worker.
pub struct PartitionWorker<'a, C: ConsumerContext + 'static> {
    pub env: &'a WorkerEnv,
    pub consumer: &'a StreamConsumer<C>,
    pub topic: &'a str,
    pub partition: i32,
}

/// Batches whose results are produced but not yet acknowledged, per partition. Scoring the
/// next batch while the broker acknowledges the last keeps a slow broker's round trip out of
/// every batch's latency; a crash re-scores at most these batches.
const MAX_IN_FLIGHT: usize = 4;

/// One scored batch on its way: its results' acknowledgements, then its offset.
struct InFlight {
    /// The batch's records that have an output, kept until settled for the outputs that may
    /// have to fall back (the others are dropped at once).
    batch: Vec<OwnedMessage>,
    outputs: Vec<Output>,
    /// Records in the batch that this detector took (all but those outside its split).
    records: u64,
    /// Records in the batch outside this detector's split: not read, not scored.
    skipped_by_split: u64,
    last_offset: i64,
    /// With per-key state (rules with `for`): the offset to commit, `last_offset + 1` or lower
    /// when an open streak still needs an earlier record ([`Streaks::safe_offset`]). `None`:
    /// stateless, `last_offset + 1`.
    safe: Option<i64>,
    produced: Instant,
    scored_at: SystemTime,
}

/// One produced output of a record, awaiting its acknowledgement.
struct Output {
    pending: Pending,
    /// The record's place in [`InFlight::batch`].
    index: usize,
    intent: Intent,
    step: Step,
    /// Why the output is down the ladder, from [`Step::Cut`] on.
    fall: Option<Fall>,
}

/// What a record's output is meant to be.
enum Intent {
    /// An anomaly: its payload (kept for a retry), and where in it anomalyd's additions are.
    Anomaly {
        payload: Vec<u8>,
        additions: std::ops::Range<usize>,
        source_ms: Option<i64>,
    },
    /// A scored record with its verdict, for the scored topic: its payload and where in it
    /// anomalyd's additions are, and whether it is an anomaly.
    Scored {
        payload: Vec<u8>,
        additions: std::ops::Range<usize>,
        anomaly: bool,
    },
    DeadLetter(Rejection),
}

impl Intent {
    /// `anomaly`, or the dead letter's reason code.
    fn reason(&self) -> &'static str {
        match self {
            Self::Anomaly { .. } => "anomaly",
            Self::Scored { .. } => "scored",
            Self::DeadLetter(r) => r.reason(),
        }
    }
}

/// The ladder an output falls down when it is refused for its own content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The output as meant.
    Intended,
    /// The same again, once: a refusal on delivery may be a batch-mate's doing.
    Again,
    /// A `too_large` or `refused` dead letter, its value cut to fit.
    Cut,
    /// The same without a value: the headers still say where the record is.
    NoValue,
}

impl Step {
    /// The step after this one was refused (`Again` only after a refusal on delivery).
    fn next(self, on_delivery: bool) -> Option<Self> {
        match self {
            Self::Intended if on_delivery => Some(Self::Again),
            Self::Intended | Self::Again => Some(Self::Cut),
            Self::Cut => Some(Self::NoValue),
            Self::NoValue => None,
        }
    }
}

/// Why an output is falling down the ladder, for the dead letter's headers.
#[derive(Debug, Clone)]
struct Fall {
    /// [`dead_letter::TOO_LARGE`] or [`dead_letter::REFUSED`].
    reason: &'static str,
    /// What was refused and why, in words.
    why: String,
}

/// What the output of `intent` at `step` is, in words.
fn describe(step: Step, intent: &Intent) -> &'static str {
    match (step, intent) {
        (Step::Intended | Step::Again, Intent::Anomaly { .. }) => "the anomaly record",
        (Step::Intended | Step::Again, Intent::Scored { .. }) => "the scored record",
        (Step::Intended | Step::Again, Intent::DeadLetter(_)) => "the dead letter",
        (Step::Cut, _) => "the dead letter with its value cut",
        (Step::NoValue, _) => "the dead letter without its value",
    }
}

/// The [`Fall`] for a refusal by the producer or broker.
fn refusal(e: &SinkError, too_large: bool, step: Step, intent: &Intent) -> Fall {
    Fall {
        reason: if too_large {
            dead_letter::TOO_LARGE
        } else {
            dead_letter::REFUSED
        },
        why: format!("{} was refused: {e}", describe(step, intent)),
    }
}

/// What a settled output turned out to be.
struct Settled {
    intent: Intent,
    step: Step,
    fall: Option<Fall>,
}

impl<C: ConsumerContext + 'static> PartitionWorker<'_, C> {
    /// Runs until `stop` is set (then finishes the batch in hand and waits for every batch in
    /// flight) or a result cannot be delivered (then returns the error without storing the
    /// offset of that batch or any later one).
    pub async fn run(
        &self,
        queue: StreamPartitionQueue<C>,
        stop: watch::Receiver<bool>,
    ) -> Result<(), WorkerError> {
        let (tx, rx) = tokio::sync::mpsc::channel(MAX_IN_FLIGHT);
        let (intake, settled) = tokio::join!(self.intake(queue, stop, tx), self.settle_all(rx));
        settled.and(intake)
    }

    /// Takes records in batches, scores them and hands them over for settling, in order.
    async fn intake(
        &self,
        queue: StreamPartitionQueue<C>,
        mut stop: watch::Receiver<bool>,
        tx: tokio::sync::mpsc::Sender<InFlight>,
    ) -> Result<(), WorkerError> {
        let mut batch = Vec::with_capacity(self.env.batch_max);
        // Per-key state, for a scorer that keeps some (rules with `for`): this worker's alone,
        // rebuilt by re-reading from the safe offset after a restart or a rebalance.
        let mut streaks: Option<Streaks> = None;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            tokio::select! {
                biased;
                _ = stop.changed() => return Ok(()),
                // Settling failed: stop taking records; its error is the one reported.
                _ = tx.closed() => return Ok(()),
                m = queue.recv() => match m {
                    Ok(m) => batch.push(take(&m)),
                    Err(e) => {
                        tracing::warn!(topic = self.topic, partition = self.partition, error = %e, "consume error");
                        continue;
                    }
                },
            }
            let deadline = tokio::time::Instant::now() + self.env.batch_linger;
            while batch.len() < self.env.batch_max {
                tokio::select! {
                    biased;
                    m = queue.recv() => match m {
                        Ok(m) => batch.push(take(&m)),
                        Err(e) => tracing::warn!(topic = self.topic, partition = self.partition, error = %e, "consume error"),
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = stop.changed() => break,
                }
            }
            let full = std::mem::replace(&mut batch, Vec::with_capacity(self.env.batch_max));
            let scored = self.score_and_publish(full, &mut streaks).await?;
            if tx.send(scored).await.is_err() {
                return Ok(());
            }
        }
    }

    /// Waits for each batch's acknowledgements, in order, then stores and commits its offset.
    async fn settle_all(
        &self,
        mut rx: tokio::sync::mpsc::Receiver<InFlight>,
    ) -> Result<(), WorkerError> {
        // The offset stored last, so that a safe offset never moves it back.
        let mut stored = None;
        while let Some(batch) = rx.recv().await {
            self.settle(batch, &mut stored).await?;
        }
        Ok(())
    }

    /// Scores one batch and produces its anomalies and dead letters (not yet acknowledged).
    async fn score_and_publish(
        &self,
        batch: Vec<OwnedMessage>,
        streaks: &mut Option<Streaks>,
    ) -> Result<InFlight, WorkerError> {
        let last_offset = batch
            .last()
            .expect("a batch has at least one record")
            .offset();
        let env = self.env;
        // Another variant's records: the offset above still covers them, nothing else does.
        let (batch, skipped_by_split) = match &env.split {
            Some(split) => {
                let all = batch.len();
                let mine: Vec<OwnedMessage> =
                    batch.into_iter().filter(|m| split.takes(m.key())).collect();
                let skipped = (all - mine.len()) as u64;
                (mine, skipped)
            }
            None => (batch, 0),
        };
        if batch.is_empty() {
            return Ok(InFlight {
                batch,
                outputs: Vec::new(),
                records: 0,
                skipped_by_split,
                last_offset,
                safe: streaks.as_ref().map(|s| s.safe_offset(last_offset + 1)),
                produced: Instant::now(),
                scored_at: SystemTime::now(),
            });
        }
        // Taken once per batch: a reload takes effect at the next batch, never inside one.
        let scorer = env.scorer.current();
        let needs = scorer.needs();
        let nf = match needs {
            Needs::Features(n) => n,
            Needs::Record => 0,
        };
        let extractor = FeatureExtractor::new(env.features.clone(), nf);

        let started = Instant::now();
        let mut rows = Vec::with_capacity(batch.len() * nf);
        let mut scorable = Vec::with_capacity(batch.len());
        let mut rejected = Vec::new();
        // A CSV line's JSON view (`csv_record`), owned here so its record can borrow it.
        let csv_lines = env
            .csv
            .as_deref()
            .map(|format| read_csv(format, needs, &batch, &mut rows));
        for (i, m) in batch.iter().enumerate() {
            let outcome = match &csv_lines {
                Some(lines) => match &lines[i] {
                    // Built by `csv_record` from escaped strings, so always JSON: the rows
                    // `read_csv` appended stay in step with `scorable`.
                    Ok(json) => FeatureExtractor::parse(Some(json.as_bytes())),
                    Err(r) => Err(r.clone()),
                },
                None => FeatureExtractor::parse(m.payload()).and_then(|r| match needs {
                    Needs::Features(_) => extractor.extract(&r, &mut rows).map(|()| r),
                    Needs::Record => Ok(r),
                }),
            };
            match outcome {
                Ok(r) => scorable.push((i, r)),
                Err(r) => rejected.push((i, r)),
            }
        }
        let mut scored = vec![Ok(Scored::default()); scorable.len()];
        let mut explanations = {
            let records: Vec<_> = scorable.iter().map(|(_, r)| r).collect();
            let input = Batch {
                rows: &rows,
                records: &records,
            };
            let keyed = || {
                scorable
                    .iter()
                    .map(|(i, _)| (batch[*i].key(), batch[*i].offset()))
                    .unzip()
            };
            score_partition_batch(&*scorer, &input, streaks, keyed, &mut scored)
        };
        let elapsed = started.elapsed();
        for m in [&env.metrics, &env.total] {
            m.score_latency.observe_duration(elapsed);
        }

        let produced = Instant::now();
        let now = SystemTime::now();
        let mut intents = Vec::new();
        for (k, (i, record)) in scorable.into_iter().enumerate() {
            let Scored { score, decision } = match &scored[k] {
                Ok(s) => *s,
                // The scorer cannot judge this record: a dead letter with its reason.
                Err(why) => {
                    rejected.push((i, Rejection::Rule(why.0.clone())));
                    continue;
                }
            };
            let anomaly = decision < 0.0;
            if !anomaly && env.scored_topic.is_none() {
                continue;
            }
            let m = &batch[i];
            let detection = Detection {
                score,
                decision,
                features: &rows[k * nf..(k + 1) * nf],
            };
            // Rules with `for` say per fired rule the count that fired it.
            let mut additions = Additions::judged(
                &record,
                &detection,
                &env.detector,
                &*scorer,
                self.source(m),
                now,
                explanations.get_mut(k),
            );
            if env.csv.is_some() {
                additions.layout = Layout::Csv;
            }
            additions.variant = env.split.as_ref().map(|s| s.variant.as_str());
            if anomaly {
                let mut payload = Vec::new();
                let at = write_anomaly(&mut payload, &record, &additions);
                intents.push((
                    i,
                    Intent::Anomaly {
                        payload,
                        additions: at,
                        source_ms: m.timestamp().to_millis(),
                    },
                ));
            }
            if env.scored_topic.is_some() {
                additions.anomaly = Some(anomaly);
                let mut payload = Vec::new();
                let at = write_anomaly(&mut payload, &record, &additions);
                intents.push((
                    i,
                    Intent::Scored {
                        payload,
                        additions: at,
                        anomaly,
                    },
                ));
            }
        }
        intents.extend(
            rejected
                .into_iter()
                .map(|(i, r)| (i, Intent::DeadLetter(r))),
        );
        let mut outputs = Vec::with_capacity(intents.len());
        for (i, intent) in intents {
            if let Some(out) = self
                .produce(&batch, i, intent, Step::Intended, None)
                .await?
            {
                outputs.push(out);
            }
        }
        // Keep only the records a fallback may need: those with an output.
        let records = batch.len() as u64;
        let mut place = vec![None; batch.len()];
        for o in &outputs {
            place[o.index] = Some(0);
        }
        let mut kept = Vec::with_capacity(outputs.len());
        for (m, p) in batch.into_iter().zip(&mut place) {
            if p.is_some() {
                *p = Some(kept.len());
                kept.push(m);
            }
        }
        for o in &mut outputs {
            o.index = place[o.index].expect("kept above");
        }
        Ok(InFlight {
            batch: kept,
            outputs,
            records,
            skipped_by_split,
            last_offset,
            safe: streaks.as_ref().map(|s| s.safe_offset(last_offset + 1)),
            produced,
            scored_at: now,
        })
    }

    /// Produces record `index`'s output at `step` of the ladder or, when it is too large for
    /// `message.max.bytes` or the producer refuses it for its content, at the next step.
    /// `None` when every step was refused and the record is skipped.
    async fn produce(
        &self,
        batch: &[OwnedMessage],
        index: usize,
        intent: Intent,
        mut step: Step,
        mut fall: Option<Fall>,
    ) -> Result<Option<Output>, WorkerError> {
        let env = self.env;
        let m = &batch[index];
        let key = m.key().unwrap_or_default();
        let from = self.source(m);
        let original = m.payload().unwrap_or_default();
        loop {
            let (topic, value, headers) = match (step, &intent, &fall) {
                (Step::Intended | Step::Again, Intent::Anomaly { payload, .. }, _) => {
                    (&env.output_topic, &payload[..], None)
                }
                (Step::Intended | Step::Again, Intent::Scored { payload, .. }, _) => (
                    env.scored_topic
                        .as_ref()
                        .expect("a scored output is made only with a scored_topic"),
                    &payload[..],
                    None,
                ),
                (Step::Intended | Step::Again, Intent::DeadLetter(why), _) => (
                    &env.dead_letter_topic,
                    original,
                    Some(dead_letter::headers(why, &from)),
                ),
                (Step::Cut | Step::NoValue, _, fall) => {
                    // Always set on the way down; the default only keeps this total.
                    let unknown = Fall {
                        reason: dead_letter::TOO_LARGE,
                        why: format!("{} was refused", describe(Step::Intended, &intent)),
                    };
                    let fall = fall.as_ref().unwrap_or(&unknown);
                    let kept = if step == Step::Cut {
                        // Sized with the longest text they can hold ("cut to its first N-1 of
                        // N bytes"): with less kept, they only shrink.
                        let longest = original.len().saturating_sub(1);
                        let headers =
                            fallback_headers(&intent, fall, &from, original.len(), longest);
                        let fixed = dead_letter::wire_size(key.len(), 0, Some(&headers));
                        let room = env.max_message_bytes.saturating_sub(fixed);
                        dead_letter::cut(original, room).len()
                    } else {
                        0
                    };
                    let headers = fallback_headers(&intent, fall, &from, original.len(), kept);
                    (&env.dead_letter_topic, &original[..kept], Some(headers))
                }
            };
            let size = dead_letter::wire_size(key.len(), value.len(), headers.as_ref());
            let refused = if size > env.max_message_bytes {
                Fall {
                    reason: dead_letter::TOO_LARGE,
                    why: format!(
                        "{} would be {size} bytes, more than the producer's message.max.bytes ({})",
                        describe(step, &intent),
                        env.max_message_bytes
                    ),
                }
            } else {
                let mut out = FutureRecord::to(topic).payload(value);
                if let Some(h) = headers {
                    out = out.headers(h);
                }
                if m.key().is_some() {
                    out = out.key(key);
                }
                match enqueue(&env.producer, out).await {
                    Ok(pending) => {
                        return Ok(Some(Output {
                            pending,
                            index,
                            intent,
                            step,
                            fall,
                        }));
                    }
                    Err(e) => match e.refused_record() {
                        Some(too_large) => refusal(&e, too_large, step, &intent),
                        None => return Err(self.sink_error(e)),
                    },
                }
            };
            let Some(next) = self.fall_back(m, step, &intent, &refused, false) else {
                return Ok(None);
            };
            // The first cause is the one the dead letter names.
            fall.get_or_insert(refused);
            step = next;
        }
    }

    /// The step after `step` was refused for `why`, logged; or `None` (logged as an error and
    /// counted) when there is none left and the record is skipped.
    fn fall_back(
        &self,
        m: &OwnedMessage,
        step: Step,
        intent: &Intent,
        why: &Fall,
        on_delivery: bool,
    ) -> Option<Step> {
        let next = step.next(on_delivery);
        match next {
            Some(next) => tracing::warn!(
                topic = self.topic, partition = self.partition, offset = m.offset(),
                output = intent.reason(), ?next, error = %why.why,
                "output refused for its content; falling back"
            ),
            None => {
                tracing::error!(
                    topic = self.topic, partition = self.partition, offset = m.offset(),
                    output = intent.reason(), error = %why.why,
                    "no output of this record could be produced, not even a dead letter without its value: record skipped"
                );
                for m in [&self.env.metrics, &self.env.total] {
                    m.records_skipped.fetch_add(1, Relaxed);
                }
            }
        }
        next
    }

    /// Waits for `out`'s acknowledgement; a refusal for its content moves it down the ladder
    /// (produced and awaited here, in order). `None` when the record was skipped.
    async fn delivered(
        &self,
        batch: &[OwnedMessage],
        mut out: Output,
    ) -> Result<Option<Settled>, WorkerError> {
        loop {
            let Output {
                pending,
                index,
                intent,
                step,
                fall,
            } = out;
            let e = match pending.delivered().await {
                Ok(()) => return Ok(Some(Settled { intent, step, fall })),
                Err(e) => e,
            };
            let Some(too_large) = e.refused_record() else {
                return Err(self.sink_error(e));
            };
            let refused = refusal(&e, too_large, step, &intent);
            let Some(next) = self.fall_back(&batch[index], step, &intent, &refused, true) else {
                return Ok(None);
            };
            let fall = if next == Step::Again {
                fall
            } else {
                fall.or(Some(refused))
            };
            match self.produce(batch, index, intent, next, fall).await? {
                Some(again) => out = again,
                None => return Ok(None),
            }
        }
    }

    /// Waits for one batch's acknowledgements; only then may its offset move.
    async fn settle(&self, b: InFlight, stored: &mut Option<i64>) -> Result<(), WorkerError> {
        let env = self.env;
        let mut anomalies = 0u64;
        let mut letters: Vec<&'static str> = Vec::new();
        for out in b.outputs {
            let Some(done) = self.delivered(&b.batch, out).await? else {
                continue;
            };
            match (&done.intent, done.step, &done.fall) {
                (Intent::Anomaly { source_ms, .. }, Step::Intended | Step::Again, _) => {
                    anomalies += 1;
                    if let Some(ms) = source_ms {
                        let age = b
                            .scored_at
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .map(|d| d.as_millis() as i64 - ms)
                            .unwrap_or(0)
                            .max(0);
                        let seconds = age as f64 / 1e3 + b.produced.elapsed().as_secs_f64();
                        for m in [&env.metrics, &env.total] {
                            m.end_to_end_latency.observe(seconds);
                        }
                    }
                }
                // Not counted as an anomaly: its anomaly, if it is one, is an output of its own.
                (Intent::Scored { .. }, Step::Intended | Step::Again, _) => {}
                (Intent::DeadLetter(r), Step::Intended | Step::Again, _) => {
                    letters.push(r.reason())
                }
                (_, Step::Cut | Step::NoValue, fall) => {
                    letters.push(fall.as_ref().map_or(dead_letter::TOO_LARGE, |f| f.reason))
                }
            }
        }
        let delivery = b.produced.elapsed();
        if b.records > 0 {
            for m in [&env.metrics, &env.total] {
                m.delivery_latency.observe_duration(delivery);
            }
        }

        // Every result of this batch (and, settling in order, of every earlier one) is in
        // Kafka: now, and only now, the offset may move.
        if let Some(safe) = b.safe {
            // Per-key state: no further than the lowest offset it still needs.
            self.commit_safe(safe, stored)
                .map_err(|source| WorkerError::StoreOffset {
                    topic: self.topic.to_owned(),
                    partition: self.partition,
                    offset: safe,
                    source,
                })?;
        } else {
            self.consumer
                .store_offset(self.topic, self.partition, b.last_offset)
                .map_err(|source| WorkerError::StoreOffset {
                    topic: self.topic.to_owned(),
                    partition: self.partition,
                    offset: b.last_offset,
                    source,
                })?;
            // Commit right away rather than at the next auto-commit, so that a crash re-reads at
            // most the batches in flight. Asynchronous: the next batch need not wait for it, and a
            // lost commit is covered by the next one (or the synchronous commit on revoke).
            let mut tpl = TopicPartitionList::new();
            let next = Offset::Offset(b.last_offset + 1);
            if let Err(e) = tpl
                .add_partition_offset(self.topic, self.partition, next)
                .and_then(|()| self.consumer.commit(&tpl, CommitMode::Async))
            {
                tracing::warn!(topic = self.topic, partition = self.partition, error = %e, "offset commit failed; a later one will cover it");
            }
        }

        let records = b.records;
        for m in [&env.metrics, &env.total] {
            m.records_skipped_by_split
                .fetch_add(b.skipped_by_split, Relaxed);
            // Nothing was scored in a batch wholly another variant's.
            if records == 0 {
                continue;
            }
            m.records_in.fetch_add(records, Relaxed);
            m.anomalies_out.fetch_add(anomalies, Relaxed);
            m.batches.fetch_add(1, Relaxed);
            m.batch_size.observe(records as f64);
            for reason in &letters {
                m.dead_letter(reason);
            }
        }
        // Per partition only in the detector's own counters: two detectors on one topic hold
        // the same partitions.
        env.metrics.partition_batch(
            self.topic,
            self.partition,
            &PartitionStats {
                records,
                anomalies,
                dead_letters: letters.len() as u64,
                last_offset: Some(b.last_offset),
            },
        );
        Ok(())
    }

    /// Stores and commits `safe` as the next offset to read, unless an offset at or after it
    /// was stored already: a restart re-reads from there, which rebuilds the open streaks.
    fn commit_safe(&self, safe: i64, stored: &mut Option<i64>) -> Result<(), KafkaError> {
        if stored.is_some_and(|s| s >= safe) {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(self.topic, self.partition, Offset::Offset(safe))
            .and_then(|()| self.consumer.store_offsets(&tpl))?;
        *stored = Some(safe);
        // As for a stateless batch: right away, asynchronously, a lost one covered by the next.
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(topic = self.topic, partition = self.partition, error = %e, "offset commit failed; a later one will cover it");
        }
        Ok(())
    }

    fn source(&self, m: &OwnedMessage) -> SourceRef<'_> {
        SourceRef {
            topic: self.topic,
            partition: self.partition,
            offset: m.offset(),
        }
    }

    fn sink_error(&self, source: SinkError) -> WorkerError {
        WorkerError::Sink {
            topic: self.topic.to_owned(),
            partition: self.partition,
            source,
        }
    }
}

/// The headers of a fallback dead letter that keeps `kept` of the value's `original` bytes:
/// reason and error (what the output was meant to be, why it could not be, what is kept), the
/// source position, the original size and reason, and for an anomaly its additions.
fn fallback_headers(
    intent: &Intent,
    fall: &Fall,
    from: &SourceRef<'_>,
    original: usize,
    kept: usize,
) -> OwnedHeaders {
    let before = match intent {
        Intent::Anomaly { .. } => "scored as an anomaly".to_owned(),
        Intent::Scored { anomaly: true, .. } => {
            "scored as an anomaly, for the scored topic".to_owned()
        }
        Intent::Scored { anomaly: false, .. } => {
            "scored as no anomaly, for the scored topic".to_owned()
        }
        Intent::DeadLetter(r) => r.to_string(),
    };
    let value = if kept == original {
        "the value is whole".to_owned()
    } else if kept == 0 {
        format!("the value ({original} bytes) is left out")
    } else {
        format!("the value is cut to its first {kept} of {original} bytes")
    };
    let error = format!("{before}; {}; {value}", fall.why);
    let detection = match intent {
        Intent::Anomaly {
            payload, additions, ..
        }
        | Intent::Scored {
            payload, additions, ..
        } => Some(&payload[additions.clone()]),
        Intent::DeadLetter(_) => None,
    };
    dead_letter::with_original(
        dead_letter::letter_headers(fall.reason, &error, from),
        original,
        intent.reason(),
        detection,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ladder_retries_only_after_a_delivery_refusal_and_ends() {
        assert_eq!(Step::Intended.next(true), Some(Step::Again));
        assert_eq!(Step::Intended.next(false), Some(Step::Cut));
        assert_eq!(Step::Again.next(true), Some(Step::Cut));
        assert_eq!(Step::Cut.next(true), Some(Step::NoValue));
        assert_eq!(Step::NoValue.next(false), None);
    }

    #[test]
    fn fallback_headers_are_largest_for_a_value_cut_by_one_byte() {
        let fall = Fall {
            reason: dead_letter::TOO_LARGE,
            why: "too big".into(),
        };
        let from = SourceRef {
            topic: "t",
            partition: 0,
            offset: 5,
        };
        let intent = Intent::DeadLetter(Rejection::NotJson("x".into()));
        for original in [1usize, 9, 10, 11, 999_744, 1_000_000, 1_200_000] {
            let size = |kept| {
                dead_letter::wire_size(
                    0,
                    0,
                    Some(&fallback_headers(&intent, &fall, &from, original, kept)),
                )
            };
            let longest = size(original - 1);
            for kept in [0, 1, original / 2, original - 1, original] {
                assert!(size(kept) <= longest, "{kept} of {original}");
            }
        }
    }

    #[test]
    fn fallback_headers_say_what_was_meant_and_what_is_kept() {
        use rdkafka::message::Headers;
        let intent = Intent::Anomaly {
            payload: br#"{"id":2,"anomalyd":{"score":-0.7}}"#.to_vec(),
            additions: 19..33,
            source_ms: None,
        };
        let fall = Fall {
            reason: dead_letter::TOO_LARGE,
            why: "the anomaly record would be 1000180 bytes, more than the producer's message.max.bytes (1000000)".into(),
        };
        let from = SourceRef {
            topic: "t",
            partition: 0,
            offset: 5,
        };
        let h = fallback_headers(&intent, &fall, &from, 999_744, 999_600);
        let get = |k: &str| {
            h.iter()
                .find(|h| h.key == k)
                .map(|h| String::from_utf8_lossy(h.value.unwrap()).into_owned())
                .unwrap()
        };
        assert_eq!(get(dead_letter::REASON), "too_large");
        assert_eq!(get(dead_letter::ORIGINAL_SIZE), "999744");
        assert_eq!(get(dead_letter::ORIGINAL_REASON), "anomaly");
        assert_eq!(get(dead_letter::DETECTION), r#"{"score":-0.7}"#);
        assert_eq!(get(dead_letter::SOURCE_OFFSET), "5");
        let error = get(dead_letter::ERROR);
        assert!(
            error.starts_with("scored as an anomaly; the anomaly record would be"),
            "{error}"
        );
        assert!(
            error.ends_with("cut to its first 999600 of 999744 bytes"),
            "{error}"
        );
        let rejected = Intent::DeadLetter(Rejection::NotJson("expected value".into()));
        let h = fallback_headers(&rejected, &fall, &from, 1_200_000, 0);
        assert!(
            h.iter()
                .any(|h| h.key == dead_letter::ORIGINAL_REASON && h.value == Some(b"not_json"))
        );
        assert!(!h.iter().any(|h| h.key == dead_letter::DETECTION));
    }
}
