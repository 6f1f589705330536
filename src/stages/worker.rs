//! One partition's stage worker: feeds the partition's records, in offset order, to a
//! [`Stage`], fires its timers, produces what it emits, and commits only the stage's **safe
//! offset** once everything emitted before it is acknowledged.
//!
//! The safe offset is the lowest input offset that open state (an invoice still gathering
//! lines, a window not yet closed) still needs. Committing it, and never more, is how a stage's
//! state survives a crash without a state store of its own: a restarted worker re-reads from
//! there and rebuilds exactly the state that was open (Kafka Streams keeps a changelog topic
//! for this; we keep nothing but the input). Outputs are keyed deterministically (invoice
//! number, window start), so what is emitted again after a crash is recognisable as a repeat.
//!
//! An output the broker refuses for its own content (too large, invalid) is logged, counted in
//! `outputs_refused` and skipped, so that no single output stops a partition; any other produce
//! error fails the worker (nothing is lost: the offset did not move).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};

use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use thiserror::Error;
use tokio::sync::watch;

use super::metrics::StageMetrics;
use crate::sinks::{Pending, SinkError, enqueue};
use crate::source::consumer::{GroupContext, PartitionError, PartitionFuture, PartitionRunner};

/// What a stage emits: one record for one output topic.
#[derive(Debug)]
pub struct Emit {
    /// Which of the stage's outputs (its topic is the stage's business).
    pub topic: Arc<str>,
    /// The deterministic key (invoice number, window start): a repeat after a crash has the
    /// same key as the first.
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Option<OwnedHeaders>,
}

impl Emit {
    /// `m` copied unchanged (key and value) to `to`, with headers saying why (`reason`, a
    /// code; `why`, in words) and where it came from: a late record, or a dead letter.
    pub fn letter(m: &OwnedMessage, to: &Arc<str>, reason: &str, why: &str) -> Self {
        let from = crate::sinks::SourceRef {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
        };
        Self {
            topic: Arc::clone(to),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().unwrap_or_default().to_vec(),
            headers: Some(crate::sinks::dead_letter::letter_headers(
                reason, why, &from,
            )),
        }
    }
}

/// A stateful step driven by a partition worker. One instance per assigned partition; it
/// starts empty and rebuilds its state from the records it is given (re-read from the last
/// committed safe offset after a restart or a rebalance).
pub trait Stage: Send + 'static {
    /// One record of this partition, in offset order. `now_ms` is the wall clock (ms since the
    /// epoch), the record's time in processing-time mode.
    fn process(&mut self, record: &OwnedMessage, now_ms: i64, out: &mut Vec<Emit>);

    /// A timer tick (every [`TICK`]): close what is due by `now_ms` (processing time) or by
    /// stream time, and emit it.
    fn punctuate(&mut self, now_ms: i64, out: &mut Vec<Emit>);

    /// The offset to commit: the lowest offset open state still needs, or `next` (the offset
    /// after the last record processed) when none.
    fn safe_offset(&mut self, next: i64) -> i64;
}

/// How often a worker fires its stage's timers. A session closes at most this late after its
/// gap has passed.
pub const TICK: Duration = Duration::from_millis(100);

/// Most records processed before their outputs are produced and the offset considered.
const BATCH_MAX: usize = 1000;

/// Steps whose outputs are produced but not yet acknowledged.
const MAX_IN_FLIGHT: usize = 8;

/// An output too large for `max` bytes on the wire (`message.max.bytes`), cut to fit: its
/// value keeps its first bytes (at a UTF-8 boundary), and headers say it was cut
/// (`anomalyd-reason: too_large`, unless it already had a reason, and
/// `anomalyd-original-size`). Outputs that fit are returned as they are. Without this a
/// broker refusal would skip it (a late line, a dead letter of a huge line).
pub fn fit(e: Emit, max: usize) -> Emit {
    use crate::sinks::dead_letter::{self, ORIGINAL_SIZE, REASON, TOO_LARGE};
    use rdkafka::message::{Header, Headers};
    let key = e.key.as_ref().map_or(0, Vec::len);
    if dead_letter::wire_size(key, e.value.len(), e.headers.as_ref()) <= max {
        return e;
    }
    let size = e.value.len().to_string();
    let had_reason = e
        .headers
        .as_ref()
        .is_some_and(|h| h.iter().any(|x| x.key == REASON));
    let mut headers = e.headers.unwrap_or_default().insert(Header {
        key: ORIGINAL_SIZE,
        value: Some(&size),
    });
    if !had_reason {
        headers = headers.insert(Header {
            key: REASON,
            value: Some(TOO_LARGE),
        });
    }
    let room = max.saturating_sub(dead_letter::wire_size(key, 0, Some(&headers)));
    let kept = dead_letter::cut(&e.value, room).len();
    tracing::warn!(topic = %e.topic, size = e.value.len(), kept, "an output over message.max.bytes is cut to fit");
    let mut value = e.value;
    value.truncate(kept);
    Emit {
        topic: e.topic,
        key: e.key,
        value,
        headers: Some(headers),
    }
}

/// Builds one [`Stage`] per assigned partition and runs it; a [`PartitionRunner`].
pub struct StageRunner<F> {
    /// Which stage (for logs).
    pub name: String,
    pub producer: FutureProducer,
    /// The producer's `message.max.bytes`: larger outputs are cut to fit ([`fit`]).
    pub max_message_bytes: usize,
    pub metrics: Arc<StageMetrics>,
    /// Makes the stage of one partition.
    pub build: F,
}

#[derive(Debug, Error)]
pub enum StageError {
    #[error("stage {stage}, partition {topic}/{partition}: {source}")]
    Sink {
        stage: String,
        topic: String,
        partition: i32,
        source: Box<SinkError>,
    },
    #[error(
        "stage {stage}, partition {topic}/{partition}: could not store offset {offset}: {source}"
    )]
    StoreOffset {
        stage: String,
        topic: String,
        partition: i32,
        offset: i64,
        source: Box<rdkafka::error::KafkaError>,
    },
}

/// A group of outputs and the safe offset that may be committed once they are acknowledged.
struct Step {
    pending: Vec<Pending>,
    safe: i64,
}

impl<S, F> PartitionRunner for StageRunner<F>
where
    S: Stage,
    F: Fn(&str, i32) -> S + Send + Sync + 'static,
{
    fn run(
        self: Arc<Self>,
        consumer: Arc<StreamConsumer<GroupContext>>,
        queue: StreamPartitionQueue<GroupContext>,
        topic: String,
        partition: i32,
        stop: watch::Receiver<bool>,
    ) -> PartitionFuture {
        Box::pin(async move {
            let stage = (self.build)(&topic, partition);
            let (tx, rx) = tokio::sync::mpsc::channel(MAX_IN_FLIGHT);
            let worker = Worker {
                runner: &self,
                consumer: &consumer,
                topic: &topic,
                partition,
            };
            let (intake, settled) =
                tokio::join!(worker.intake(stage, queue, stop, tx), worker.settle_all(rx));
            drop(consumer);
            self.metrics.forget(&topic, partition);
            settled
                .and(intake)
                .map_err(|e| -> PartitionError { Box::new(e) })
        })
    }
}

struct Worker<'a, F> {
    runner: &'a StageRunner<F>,
    consumer: &'a StreamConsumer<GroupContext>,
    topic: &'a str,
    partition: i32,
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl<S, F> Worker<'_, F>
where
    S: Stage,
    F: Fn(&str, i32) -> S + Send + Sync + 'static,
{
    async fn intake(
        &self,
        mut stage: S,
        queue: StreamPartitionQueue<GroupContext>,
        mut stop: watch::Receiver<bool>,
        tx: tokio::sync::mpsc::Sender<Step>,
    ) -> Result<(), StageError> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next: Option<i64> = None;
        let mut last_safe: Option<i64> = None;
        let mut out = Vec::new();
        let metrics = &self.runner.metrics;
        let mut punctuated = tokio::time::Instant::now();
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            // Records come first (biased), so under a backlog the timer branch may never be
            // picked: fire the timers here once a tick has passed, whatever the queue holds.
            if punctuated.elapsed() >= TICK {
                punctuated = tokio::time::Instant::now();
                stage.punctuate(now_ms(), &mut out);
            }
            tokio::select! {
                biased;
                _ = stop.changed() => return Ok(()),
                _ = tx.closed() => return Ok(()),
                m = queue.recv() => {
                    let mut taken = 0;
                    let mut m = Some(m);
                    // Take what is already fetched, up to BATCH_MAX, before producing.
                    while let Some(r) = m.take() {
                        match r {
                            Ok(msg) => {
                                let msg = msg.detach();
                                next = Some(msg.offset() + 1);
                                stage.process(&msg, now_ms(), &mut out);
                                metrics.records_in.fetch_add(1, Relaxed);
                            }
                            Err(e) => tracing::warn!(topic = self.topic, partition = self.partition, error = %e, "consume error"),
                        }
                        taken += 1;
                        if taken < BATCH_MAX {
                            tokio::select! {
                                biased;
                                r = queue.recv() => m = Some(r),
                                () = std::future::ready(()) => {}
                            }
                        }
                    }
                }
                _ = tick.tick() => {
                    punctuated = tokio::time::Instant::now();
                    stage.punctuate(now_ms(), &mut out);
                }
            }
            let Some(n) = next else {
                // Nothing read yet: timers may still emit (processing-time windows), but there
                // is no offset to move.
                if !out.is_empty() {
                    let pending = self.produce(&mut out).await?;
                    if tx.send(Step { pending, safe: -1 }).await.is_err() {
                        return Ok(());
                    }
                }
                continue;
            };
            let safe = stage.safe_offset(n);
            if out.is_empty() && last_safe == Some(safe) {
                continue;
            }
            last_safe = Some(safe);
            let pending = self.produce(&mut out).await?;
            if tx.send(Step { pending, safe }).await.is_err() {
                return Ok(());
            }
        }
    }

    /// Produces every output in `out` (emptying it); their acknowledgements are awaited later.
    /// An output larger than the producer's `message.max.bytes` goes out cut to fit (see
    /// [`fit`]).
    async fn produce(&self, out: &mut Vec<Emit>) -> Result<Vec<Pending>, StageError> {
        let mut pending = Vec::with_capacity(out.len());
        for e in out.drain(..) {
            let e = fit(e, self.runner.max_message_bytes);
            let mut record = FutureRecord::to(&e.topic).payload(&e.value);
            if let Some(k) = &e.key {
                record = record.key(k);
            }
            if let Some(h) = e.headers {
                record = record.headers(h);
            }
            match enqueue(&self.runner.producer, record).await {
                Ok(p) => pending.push(p),
                Err(err) => self.refused(err)?,
            }
        }
        Ok(pending)
    }

    /// A produce error: a refusal of this one output is logged and counted; anything else
    /// fails the worker.
    fn refused(&self, err: SinkError) -> Result<(), StageError> {
        if err.refused_record().is_some() {
            tracing::error!(stage = self.runner.name, topic = self.topic, partition = self.partition, error = %err, "an output was refused for its content and is skipped");
            self.runner.metrics.outputs_refused.fetch_add(1, Relaxed);
            Ok(())
        } else {
            Err(StageError::Sink {
                stage: self.runner.name.clone(),
                topic: self.topic.to_owned(),
                partition: self.partition,
                source: Box::new(err),
            })
        }
    }

    /// Waits for each step's acknowledgements in order, then stores and commits its safe
    /// offset.
    async fn settle_all(
        &self,
        mut rx: tokio::sync::mpsc::Receiver<Step>,
    ) -> Result<(), StageError> {
        let mut stored = -1;
        while let Some(step) = rx.recv().await {
            for p in step.pending {
                match p.delivered().await {
                    Ok(()) => {
                        self.runner.metrics.outputs.fetch_add(1, Relaxed);
                    }
                    Err(e) => self.refused(e)?,
                }
            }
            if step.safe > stored {
                stored = step.safe;
                self.store(step.safe)?;
            }
        }
        Ok(())
    }

    /// Stores `offset` as the next offset to read (for the commit on revoke or shutdown) and
    /// commits it now, asynchronously (a lost commit is covered by the next one).
    fn store(&self, offset: i64) -> Result<(), StageError> {
        let mut tpl = TopicPartitionList::new();
        let stored = tpl
            .add_partition_offset(self.topic, self.partition, Offset::Offset(offset))
            .and_then(|()| self.consumer.store_offsets(&tpl));
        stored.map_err(|source| StageError::StoreOffset {
            stage: self.runner.name.clone(),
            topic: self.topic.to_owned(),
            partition: self.partition,
            offset,
            source: Box::new(source),
        })?;
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(stage = self.runner.name, topic = self.topic, partition = self.partition, error = %e, "offset commit failed; a later one will cover it");
        }
        self.runner
            .metrics
            .committed(self.topic, self.partition, offset);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::dead_letter::wire_size;
    use rdkafka::message::Headers;

    fn header(e: &Emit, name: &str) -> Option<String> {
        e.headers
            .as_ref()?
            .iter()
            .find(|h| h.key == name)
            .map(|h| String::from_utf8(h.value.unwrap_or_default().to_vec()).unwrap())
    }

    #[test]
    fn an_output_over_the_limit_is_cut_to_fit_and_says_so() {
        let small = Emit {
            topic: "t".into(),
            key: Some(b"536365".to_vec()),
            value: b"{}".to_vec(),
            headers: None,
        };
        let kept = fit(small, 1000);
        assert_eq!(kept.value, b"{}");
        assert!(kept.headers.is_none(), "what fits is left alone");

        let big = Emit {
            topic: "t".into(),
            key: Some(b"536365".to_vec()),
            value: "é".repeat(5000).into_bytes(),
            headers: None,
        };
        let cut = fit(big, 4000);
        let size = wire_size(6, cut.value.len(), cut.headers.as_ref());
        assert!(size <= 4000 && size > 3900, "{size}");
        assert!(
            std::str::from_utf8(&cut.value).is_ok(),
            "cut at a character boundary"
        );
        assert_eq!(
            header(&cut, "anomalyd-reason").as_deref(),
            Some("too_large")
        );
        assert_eq!(
            header(&cut, "anomalyd-original-size").as_deref(),
            Some("10000")
        );

        let late = Emit::letter(
            &OwnedMessage::new(
                Some(vec![b'x'; 9000]),
                None,
                "purchases".into(),
                rdkafka::Timestamp::NotAvailable,
                0,
                7,
                None,
            ),
            &Arc::from("late"),
            "late",
            "after its gap",
        );
        let cut = fit(late, 4000);
        assert_eq!(
            header(&cut, "anomalyd-reason").as_deref(),
            Some("late"),
            "its own reason stays"
        );
        assert_eq!(
            header(&cut, "anomalyd-original-size").as_deref(),
            Some("9000")
        );
        assert!(cut.value.len() < 4000);
    }
}
