//! One partition's detector worker: takes that partition's records in order from its own
//! queue, scores them in batches, publishes anomalies and dead letters, and only once the broker
//! has acknowledged all of them stores the batch's offset.
//!
//! That order is the at-least-once guarantee: a stored (and so committed) offset never passes a
//! record whose results are not safely in Kafka. A crash re-scores at most the batches in flight.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use thiserror::Error;
use tokio::sync::watch;

use super::features::{FeatureExtractor, Rejection};
use super::scorer::{Batch, Needs, Scored, ScorerSource};
use crate::config::FeatureSpec;
use crate::metrics::{Metrics, PartitionStats};
use crate::sinks::anomalies::{Detection, anomaly_record};
use crate::sinks::{Pending, SinkError, SourceRef, dead_letter, enqueue};

/// What every worker of one detector shares.
pub struct WorkerEnv {
    /// The `[detectors.NAME]` name, published in every anomaly.
    pub detector: String,
    pub producer: FutureProducer,
    /// The scorer serving now, taken once per batch.
    pub scorer: Arc<dyn ScorerSource>,
    pub features: FeatureSpec,
    pub output_topic: String,
    pub dead_letter_topic: String,
    pub batch_max: usize,
    pub batch_linger: Duration,
    /// This detector's counters.
    pub metrics: Arc<Metrics>,
    /// The daemon's counters over every detector.
    pub total: Arc<Metrics>,
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
    pending: Vec<(Pending, Option<i64>)>,
    last_offset: i64,
    records: u64,
    anomalies: u64,
    rejected: Vec<&'static str>,
    produced: Instant,
    scored_at: SystemTime,
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
                    Ok(m) => batch.push(m.detach()),
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
                        Ok(m) => batch.push(m.detach()),
                        Err(e) => tracing::warn!(topic = self.topic, partition = self.partition, error = %e, "consume error"),
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = stop.changed() => break,
                }
            }
            let scored = self.score_and_publish(&batch).await?;
            batch.clear();
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
        while let Some(batch) = rx.recv().await {
            self.settle(batch).await?;
        }
        Ok(())
    }

    /// Scores one batch and produces its anomalies and dead letters (not yet acknowledged).
    async fn score_and_publish(&self, batch: &[OwnedMessage]) -> Result<InFlight, WorkerError> {
        let last = batch.last().expect("a batch has at least one record");
        let env = self.env;
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
        for (i, m) in batch.iter().enumerate() {
            let outcome = FeatureExtractor::parse(m.payload()).and_then(|v| match needs {
                Needs::Features(_) => extractor.extract(&v, &mut rows).map(|()| v),
                Needs::Record => Ok(v),
            });
            match outcome {
                Ok(v) => scorable.push((i, v)),
                Err(r) => rejected.push((i, r)),
            }
        }
        let mut scored = vec![Scored::default(); scorable.len()];
        {
            let records: Vec<&serde_json::Value> = scorable.iter().map(|(_, v)| v).collect();
            let input = Batch {
                rows: &rows,
                records: &records,
            };
            scorer.score_batch(&input, &mut scored);
        }
        let elapsed = started.elapsed();
        for m in [&env.metrics, &env.total] {
            m.score_latency.observe_duration(elapsed);
        }

        let produced = Instant::now();
        let now = SystemTime::now();
        let mut pending: Vec<(Pending, Option<i64>)> = Vec::new();
        for (k, (i, value)) in scorable.into_iter().enumerate() {
            let Scored { score, decision } = scored[k];
            if decision >= 0.0 {
                continue;
            }
            let m = &batch[i];
            let from = self.source(m);
            let detection = Detection {
                score,
                decision,
                features: &rows[k * nf..(k + 1) * nf],
            };
            let record = anomaly_record(value, &detection, &env.detector, &*scorer, &from, now);
            let payload = serde_json::to_vec(&record).expect("a JSON value always serialises");
            let mut out = FutureRecord::to(&env.output_topic).payload(&payload);
            if let Some(key) = m.key() {
                out = out.key(key);
            }
            let p = enqueue(&env.producer, out)
                .await
                .map_err(|e| self.sink_error(e))?;
            pending.push((p, m.timestamp().to_millis()));
        }
        let anomalies = pending.len() as u64;
        for (i, rejection) in &rejected {
            pending.push((self.dead_letter(&batch[*i], rejection).await?, None));
        }
        Ok(InFlight {
            pending,
            last_offset: last.offset(),
            records: batch.len() as u64,
            anomalies,
            rejected: rejected.iter().map(|(_, r)| r.reason()).collect(),
            produced,
            scored_at: now,
        })
    }

    /// Waits for one batch's acknowledgements; only then may its offset move.
    async fn settle(&self, b: InFlight) -> Result<(), WorkerError> {
        let env = self.env;
        for (p, source_ms) in b.pending {
            p.delivered().await.map_err(|e| self.sink_error(e))?;
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
        let delivery = b.produced.elapsed();
        for m in [&env.metrics, &env.total] {
            m.delivery_latency.observe_duration(delivery);
        }

        // Every result of this batch (and, settling in order, of every earlier one) is in
        // Kafka: now, and only now, the offset may move.
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

        for m in [&env.metrics, &env.total] {
            m.records_in.fetch_add(b.records, Relaxed);
            m.anomalies_out.fetch_add(b.anomalies, Relaxed);
            m.batches.fetch_add(1, Relaxed);
            m.batch_size.observe(b.records as f64);
            for reason in &b.rejected {
                m.dead_letter(reason);
            }
        }
        // Per partition only in the detector's own counters: two detectors on one topic hold
        // the same partitions.
        env.metrics.partition_batch(
            self.topic,
            self.partition,
            &PartitionStats {
                records: b.records,
                anomalies: b.anomalies,
                dead_letters: b.rejected.len() as u64,
                last_offset: Some(b.last_offset),
            },
        );
        Ok(())
    }

    async fn dead_letter(&self, m: &OwnedMessage, why: &Rejection) -> Result<Pending, WorkerError> {
        tracing::debug!(
            topic = self.topic, partition = self.partition, offset = m.offset(),
            reason = why.reason(), error = %why, "dead letter"
        );
        let headers = dead_letter::headers(why, &self.source(m));
        let mut out = FutureRecord::to(&self.env.dead_letter_topic).headers(headers);
        if let Some(payload) = m.payload() {
            out = out.payload(payload);
        }
        if let Some(key) = m.key() {
            out = out.key(key);
        }
        enqueue(&self.env.producer, out)
            .await
            .map_err(|e| self.sink_error(e))
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
