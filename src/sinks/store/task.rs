//! The store task: reads the anomalies topics in its own consumer group, gathers rows into
//! batches (at most `batch_max` rows, or what arrived within [`FLUSH_AFTER`]), writes each
//! batch in one transaction (on a blocking thread, while the next batch is read; one write at
//! a time, in order), and only then stores and commits the offsets of its records. A
//! crash between the two re-reads the batch after the restart, and the rows' (topic,
//! partition, offset) key ignores what is already stored: no row is lost or duplicated.
//!
//! A failed write stops the task with the error (the supervisor restarts it with backoff, and
//! `/status` shows the error); nothing past the last committed transaction was committed to
//! Kafka, so nothing is lost. Retention runs in the same task every [`RETENTION_EVERY`], so
//! a write and a delete never wait on each other's locks. The database calls are blocking and
//! run on tokio's blocking threads.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use thiserror::Error;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::row::{At, EventTimeSource, Row};
use super::{Inserted, Store, StoreConfig, StoreError, StoreMetrics};
use crate::config::KafkaConfig;

/// Longest a row waits in a batch before it is written.
pub const FLUSH_AFTER: Duration = Duration::from_millis(200);
/// How often rows older than `retain_days` are deleted.
pub const RETENTION_EVERY: Duration = Duration::from_secs(300);
/// While records flow, the consumer is polled again at least this often. rdkafka's
/// `StreamConsumer::recv` was seen to sleep on a queue that had records (a missed wake-up, as
/// in fede1024/rust-rdkafka#665): a consume loop read 3 to 6 times slower alone than beside a
/// 5 ms timer (`scripts/bench-store`). Idle, nothing is polled.
const NUDGE: Duration = Duration::from_millis(5);
/// Records read within this long count as flowing, for [`NUDGE`].
const FLOWING: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum TaskError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not create the store's consumer: {0}")]
    Create(KafkaError),
    #[error("could not subscribe the store to {topics}: {source}")]
    Subscribe { topics: String, source: KafkaError },
    #[error("the store's database thread failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs `f` on the store on a blocking thread, handing the store back.
async fn blocking<T: Send + 'static>(
    store: Box<dyn Store>,
    f: impl FnOnce(&mut dyn Store) -> T + Send + 'static,
) -> Result<(Box<dyn Store>, T), TaskError> {
    Ok(tokio::task::spawn_blocking(move || {
        let mut store = store;
        let out = f(store.as_mut());
        (store, out)
    })
    .await?)
}

/// Runs the store until `shutdown` (then writes the batch in hand, commits and returns `Ok`)
/// or until a write fails (returns the error). `topics` are the anomalies topics read (each
/// once); `heartbeat` is called about once a second.
pub async fn run(
    config: &StoreConfig,
    kafka: &KafkaConfig,
    topics: &[String],
    metrics: &StoreMetrics,
    heartbeat: impl Fn() + Sync,
    shutdown: CancellationToken,
) -> Result<(), TaskError> {
    let open_config = config.clone();
    let store = match tokio::task::spawn_blocking(move || super::open(&open_config)).await? {
        Ok(s) => {
            // The database answers again: /status and health stop saying it fails (a write
            // that fails says so again).
            metrics.failing.store(false, Relaxed);
            s
        }
        Err(e) => {
            metrics.set_error(e.to_string());
            return Err(e.into());
        }
    };
    let group = config.group_id(&kafka.group_id);
    let consumer: StreamConsumer = crate::kafka::consumer_config(kafka, &group)
        .create()
        .map_err(TaskError::Create)?;
    let mut names: Vec<&str> = topics.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    consumer
        .subscribe(&names)
        .map_err(|source| TaskError::Subscribe {
            topics: names.join(", "),
            source,
        })?;
    tracing::info!(at = %config.location(), topics = names.join(", "), group, "store started");

    let mut state = Batch {
        store: Some(store),
        rows: Vec::with_capacity(config.batch_max),
        spare: Vec::with_capacity(config.batch_max),
        next: BTreeMap::new(),
        since: None,
        writing: None,
    };
    let retain_ms = i64::from(config.retain_days) * 86_400_000;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut nudge = tokio::time::interval(NUDGE);
    nudge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_record: Option<Instant> = None;
    let mut last_retention: Option<Instant> = None;
    let never = Instant::now() + Duration::from_secs(86_400 * 365);
    let pointer = config.event_time_field.clone();

    let result: Result<(), TaskError> = loop {
        if last_retention.is_none_or(|t| t.elapsed() >= RETENTION_EVERY)
            && state.rows.is_empty()
            && state.writing.is_none()
        {
            last_retention = Some(Instant::now());
            let cutoff = now_ms() - retain_ms;
            let store = state
                .store
                .take()
                .expect("no write in flight holds the store");
            let (store, deleted) = blocking(store, move |s| s.delete_before(cutoff)).await?;
            state.store = Some(store);
            match deleted {
                Ok(n) => {
                    metrics.rows_expired.fetch_add(n, Relaxed);
                    if n > 0 {
                        tracing::info!(deleted = n, "store retention");
                    }
                }
                Err(e) => {
                    metrics.set_error(e.to_string());
                    tracing::warn!(error = %e, "store retention failed; tried again later");
                }
            }
        }
        let due = state.since.map(|t| t + FLUSH_AFTER);
        let flowing = last_record.is_some_and(|t| t.elapsed() < FLOWING);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                break match state.flush(&consumer, metrics).await {
                    Ok(()) => state.settle(&consumer, metrics).await,
                    Err(e) => Err(e),
                };
            }
            _ = tick.tick() => heartbeat(),
            done = in_flight(&mut state.writing) => {
                let writing = state.writing.take().expect("a write was in flight");
                if let Err(e) = state.finish(done, writing.next, &consumer, metrics) {
                    break Err(e);
                }
            }
            _ = tokio::time::sleep_until(due.unwrap_or(never)), if due.is_some() => {
                if let Err(e) = state.flush(&consumer, metrics).await {
                    break Err(e);
                }
            }
            _ = nudge.tick(), if flowing => {}
            m = consumer.recv() => match m {
                Ok(m) => {
                    last_record = Some(Instant::now());
                    let at = At {
                        topic: m.topic(),
                        partition: m.partition(),
                        offset: m.offset(),
                        timestamp_ms: m.timestamp().to_millis().unwrap_or_else(now_ms),
                    };
                    let parsed = m
                        .payload()
                        .map(|p| Row::parse(at, m.key(), p, pointer.as_deref()));
                    match parsed {
                        Some(Ok(row)) => {
                            if pointer.is_some() && row.event_time_source == EventTimeSource::Kafka {
                                metrics.event_time_fallbacks.fetch_add(1, Relaxed);
                            }
                            state.rows.push(row);
                        }
                        other => {
                            let why = match other {
                                Some(Err(e)) => e.to_string(),
                                _ => "no payload".into(),
                            };
                            tracing::warn!(topic = at.topic, partition = at.partition, offset = at.offset, error = %why, "store: skipping a record that is not an anomaly");
                            metrics.skipped_records.fetch_add(1, Relaxed);
                        }
                    }
                    state.next.insert((at.topic.to_owned(), at.partition), at.offset + 1);
                    state.since.get_or_insert_with(Instant::now);
                    if state.rows.len() >= config.batch_max
                        && let Err(e) = state.flush(&consumer, metrics).await
                    {
                        break Err(e);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "store consumer"),
            },
        }
    };
    match &result {
        Ok(()) => {
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync)
                && !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))
            {
                tracing::warn!(error = %e, "store: final offset commit failed; the rows are re-read and ignored");
            }
        }
        Err(e) => metrics.set_error(e.to_string()),
    }
    result
}

/// What a write on a blocking thread hands back: the store, the rows' allocation, the result.
type Written = (Box<dyn Store>, Vec<Row>, Result<Inserted, StoreError>);

/// A batch being written, and the offsets its commit releases.
struct Writing {
    handle: JoinHandle<Written>,
    /// Per (topic, partition), one past the last offset of the batch.
    next: BTreeMap<(String, i32), i64>,
}

/// The write in flight, awaited; never completes when there is none (the branch is then
/// idle in the `select!` of [`run`]).
async fn in_flight(writing: &mut Option<Writing>) -> Result<Written, tokio::task::JoinError> {
    match writing {
        Some(w) => (&mut w.handle).await,
        None => std::future::pending().await,
    }
}

/// Rows read and not yet written, the write in flight, and the offsets each releases.
struct Batch {
    /// `None` only while a blocking call (a write in flight, retention) holds it.
    store: Option<Box<dyn Store>>,
    rows: Vec<Row>,
    /// The allocation of the last batch written, for the next one.
    spare: Vec<Row>,
    /// Per (topic, partition), one past the last offset read.
    next: BTreeMap<(String, i32), i64>,
    /// When the oldest record in hand was read.
    since: Option<Instant>,
    /// At most one batch is written at a time, while the next is read.
    writing: Option<Writing>,
}

impl Batch {
    /// Hands the rows in hand to a blocking thread to write in one transaction, after the
    /// write before it (if any) has settled: batches commit in order, and each batch's
    /// offsets are committed only after its own transaction, so a crash loses nothing.
    async fn flush(
        &mut self,
        consumer: &StreamConsumer,
        metrics: &StoreMetrics,
    ) -> Result<(), TaskError> {
        self.since = None;
        self.settle(consumer, metrics).await?;
        if self.next.is_empty() {
            return Ok(());
        }
        let rows = std::mem::replace(&mut self.rows, std::mem::take(&mut self.spare));
        let next = std::mem::take(&mut self.next);
        let mut store = self
            .store
            .take()
            .expect("no write in flight holds the store");
        let handle = tokio::task::spawn_blocking(move || {
            let r = store.insert(&rows);
            (store, rows, r)
        });
        self.writing = Some(Writing { handle, next });
        Ok(())
    }

    /// Waits for the write in flight, if any, and settles it ([`Batch::finish`]).
    async fn settle(
        &mut self,
        consumer: &StreamConsumer,
        metrics: &StoreMetrics,
    ) -> Result<(), TaskError> {
        match self.writing.take() {
            Some(w) => {
                let done = w.handle.await;
                self.finish(done, w.next, consumer, metrics)
            }
            None => Ok(()),
        }
    }

    /// Takes the store back from a finished write; once its transaction committed, stores and
    /// commits the offsets it releases.
    fn finish(
        &mut self,
        done: Result<Written, tokio::task::JoinError>,
        next: BTreeMap<(String, i32), i64>,
        consumer: &StreamConsumer,
        metrics: &StoreMetrics,
    ) -> Result<(), TaskError> {
        let (store, mut rows, inserted) = done?;
        self.store = Some(store);
        rows.clear();
        self.spare = rows;
        let inserted = inserted?;
        metrics.rows_stored.fetch_add(inserted.stored, Relaxed);
        metrics
            .duplicates_ignored
            .fetch_add(inserted.duplicates, Relaxed);
        metrics.failing.store(false, Relaxed);

        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in next {
            if let Err(e) = tpl.add_partition_offset(&topic, partition, Offset::Offset(next)) {
                tracing::warn!(topic, partition, error = %e, "cannot list an offset to commit");
            }
        }
        if let Err(e) = consumer.store_offsets(&tpl) {
            tracing::warn!(error = %e, "could not store the store's offsets (partitions moved to another member?)");
        }
        match consumer.commit_consumer_state(CommitMode::Async) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "store offset commit failed; a later one will cover it")
            }
        }
        Ok(())
    }
}
