//! A group consumer: one member of the configured group, subscribed to one topic, with one
//! worker task per assigned partition fed by that partition's own queue. What a worker does is
//! a [`PartitionRunner`]'s business: a detector scores ([`crate::detect::worker`]), a stage
//! keeps windows ([`crate::stages::worker`]).
//!
//! librdkafka serves group events (rebalances) only while the consumer's main queue is polled,
//! and its rebalance callbacks must not return before a revoked partition is fully handed
//! back. So the main queue is polled on a thread of its own (the "group thread"), where the
//! revoke callback can simply block until the partition's worker has finished its batch and the
//! stored offsets are committed. The workers themselves run on the daemon's runtime.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak, mpsc};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use thiserror::Error;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::control::liveness::BrokerLink;
use crate::detect::worker::{PartitionWorker, WorkerEnv, WorkerError};
use crate::supervisor::TaskStatus;

/// Why a partition's worker stopped with an error (the consumer then stops too, so that the
/// supervisor starts a fresh one from the committed offsets).
pub type PartitionError = Box<dyn std::error::Error + Send + Sync>;

/// The future a [`PartitionRunner`] returns for one partition.
pub type PartitionFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), PartitionError>> + Send>>;

/// What runs one assigned partition: reads its queue in order until `stop` turns true, and
/// stores only offsets that are safe to commit.
pub trait PartitionRunner: Send + Sync + 'static {
    /// The worker of `topic`/`partition`. It must finish soon after `stop` turns true (the
    /// revoke of a rebalance waits for it) and drop `consumer` before it ends.
    fn run(
        self: Arc<Self>,
        consumer: Arc<StreamConsumer<GroupContext>>,
        queue: StreamPartitionQueue<GroupContext>,
        topic: String,
        partition: i32,
        stop: watch::Receiver<bool>,
    ) -> PartitionFuture;
}

impl PartitionRunner for WorkerEnv {
    fn run(
        self: Arc<Self>,
        consumer: Arc<StreamConsumer<GroupContext>>,
        queue: StreamPartitionQueue<GroupContext>,
        topic: String,
        partition: i32,
        stop: watch::Receiver<bool>,
    ) -> PartitionFuture {
        Box::pin(async move {
            let worker = PartitionWorker {
                env: &self,
                consumer: &consumer,
                topic: &topic,
                partition,
            };
            let result = worker.run(queue, stop).await;
            drop(consumer);
            result.map_err(|e: WorkerError| -> PartitionError { Box::new(e) })
        })
    }
}

#[derive(Debug, Error)]
pub enum ConsumerError {
    #[error("could not create the consumer: {0}")]
    Create(KafkaError),
    #[error("could not subscribe to {topic}: {source}")]
    Subscribe { topic: String, source: KafkaError },
    #[error(transparent)]
    Worker(PartitionError),
    #[error("the group thread could not start: {0}")]
    Thread(std::io::Error),
    #[error("the group thread panicked")]
    Panicked,
    /// This member lost its partitions involuntarily (its session timed out) and the group
    /// gave it none back: a fresh consumer rejoins, which makes the group rebalance.
    #[error(
        "lost its partitions {}s ago (session timed out) and was given none back; \
         starting a fresh consumer so that the group rebalances",
        .0.as_secs()
    )]
    Stranded(Duration),
}

type Partition = (String, i32);

/// The partitions this member holds right now, for health and status reports.
#[derive(Debug)]
pub struct Assignment {
    partitions: Mutex<Held>,
    /// How many rebalances (assignments received) this member went through.
    pub generations: AtomicU64,
}

#[derive(Debug)]
struct Held {
    parts: Vec<Partition>,
    /// Since when no partition is held (from the start until the first non-empty assignment).
    empty_since: Option<Instant>,
    /// When the partitions were last taken away involuntarily (librdkafka's "assignment
    /// lost": the session timed out), until partitions are held again.
    lost_at: Option<Instant>,
}

impl Default for Assignment {
    fn default() -> Self {
        Self {
            partitions: Mutex::new(Held {
                parts: Vec::new(),
                empty_since: Some(Instant::now()),
                lost_at: None,
            }),
            generations: AtomicU64::new(0),
        }
    }
}

impl Assignment {
    pub fn partitions(&self) -> Vec<Partition> {
        self.lock().parts.clone()
    }

    /// How long no partition has been held at `now`; `None` while some are.
    pub fn empty_for(&self, now: Instant) -> Option<Duration> {
        self.lock()
            .empty_since
            .map(|t| now.saturating_duration_since(t))
    }

    /// How long ago the partitions were lost involuntarily, while none is held again.
    pub fn stranded_for(&self, now: Instant) -> Option<Duration> {
        let held = self.lock();
        held.lost_at
            .filter(|_| held.parts.is_empty())
            .map(|t| now.saturating_duration_since(t))
    }

    fn lost(&self, at: Instant) {
        self.lock().lost_at = Some(at);
    }

    /// A fresh consumer starts: what its predecessor lost is no longer this one's concern.
    fn fresh(&self) {
        self.lock().lost_at = None;
    }

    fn set(&self, mut parts: Vec<Partition>) {
        parts.sort();
        let mut held = self.lock();
        if !parts.is_empty() {
            held.lost_at = None;
        }
        held.empty_since = match (parts.is_empty(), held.empty_since) {
            (false, _) => None,
            (true, Some(since)) => Some(since),
            (true, None) => Some(Instant::now()),
        };
        held.parts = parts;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct WorkerHandle {
    stop: watch::Sender<bool>,
    done: mpsc::Receiver<()>,
}

/// Our side of librdkafka's callbacks: it starts and stops partition workers.
pub struct GroupContext {
    runner: Arc<dyn PartitionRunner>,
    runtime: tokio::runtime::Handle,
    /// Set right after the consumer is built; weak, since the consumer owns this context.
    consumer: OnceLock<Weak<StreamConsumer<GroupContext>>>,
    workers: Mutex<BTreeMap<Partition, WorkerHandle>>,
    failures: tokio::sync::mpsc::UnboundedSender<PartitionError>,
    /// Longest a revoke waits for a worker to finish its batch.
    drain_timeout: Duration,
    assignment: Arc<Assignment>,
    /// Told when librdkafka finds every broker down.
    link: Arc<BrokerLink>,
}

impl ClientContext for GroupContext {
    fn error(&self, error: KafkaError, reason: &str) {
        note_broker_trouble(&self.link, &error, reason);
        tracing::warn!(error = %error, reason, "kafka consumer");
    }
}

/// Passes librdkafka's "all brokers down" on to `link`; other errors are only logged.
fn note_broker_trouble(link: &BrokerLink, error: &KafkaError, reason: &str) {
    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
        link.all_down(Instant::now(), reason);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts = partitions(tpl);
            tracing::info!(partitions = ?parts, "partitions revoked: draining their workers");
            self.stop_workers(&parts);
            if base.assignment_lost() {
                self.assignment.lost(Instant::now());
            }
            commit(base);
            self.assignment.set(Vec::new());
        }
    }

    fn post_rebalance(&self, _base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts = partitions(tpl);
                tracing::info!(partitions = ?parts, "partitions assigned");
                for (topic, partition) in &parts {
                    self.start_worker(topic, *partition);
                }
                self.assignment.set(parts);
                self.assignment.generations.fetch_add(1, Relaxed);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

impl GroupContext {
    fn start_worker(&self, topic: &str, partition: i32) {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            return; // shutting down
        };
        let Some(queue) = consumer.split_partition_queue(topic, partition) else {
            tracing::error!(topic, partition, "no queue for an assigned partition");
            return;
        };
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done) = mpsc::channel();
        let failures = self.failures.clone();
        let owned_topic = topic.to_owned();
        // The runner releases the consumer before its future ends, so that the group thread
        // holds the last reference and closes it there.
        let work = Arc::clone(&self.runner).run(consumer, queue, owned_topic, partition, stop_rx);
        let name = topic.to_owned();
        self.runtime.spawn(async move {
            let topic = name;
            let result = work.await;
            if let Err(e) = result {
                tracing::error!(topic, partition, error = %e, "partition worker failed");
                let _ = failures.send(e);
            }
            let _ = done_tx.send(());
        });
        self.lock_workers()
            .insert((topic.to_owned(), partition), WorkerHandle { stop, done });
    }

    /// Tells the workers of `parts` to stop and waits (bounded) until each has finished.
    fn stop_workers(&self, parts: &[Partition]) {
        let handles: Vec<(Partition, WorkerHandle)> = {
            let mut workers = self.lock_workers();
            parts
                .iter()
                .filter_map(|p| workers.remove(p).map(|h| (p.clone(), h)))
                .collect()
        };
        for (_, h) in &handles {
            let _ = h.stop.send(true);
        }
        for ((topic, partition), h) in handles {
            if h.done.recv_timeout(self.drain_timeout).is_err() {
                tracing::error!(
                    topic,
                    partition,
                    "worker did not finish its batch in time; its records will be read again"
                );
            }
        }
    }

    fn stop_all(&self) {
        let parts: Vec<Partition> = self.lock_workers().keys().cloned().collect();
        self.stop_workers(&parts);
    }

    fn lock_workers(&self) -> std::sync::MutexGuard<'_, BTreeMap<Partition, WorkerHandle>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<Partition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

/// How long a revoked partition's worker may take to finish its batch: as long as a shutdown
/// may, but 5 s less than `max.poll.interval.ms`. The revoke callback runs on the group thread
/// after librdkafka's poll has returned, so its wait counts against that limit, and passing
/// it would make this member leave the group in the middle of the rebalance.
fn drain_timeout(config: &Config) -> Duration {
    let max_poll = crate::kafka::consumer_duration(&config.kafka, "max.poll.interval.ms");
    Duration::from_secs(config.supervisor.shutdown_grace_s)
        .min(max_poll.saturating_sub(Duration::from_secs(5)))
        .max(Duration::from_secs(1))
}

/// Commits the stored offsets synchronously; having nothing new to commit is fine.
fn commit<C: ConsumerContext>(consumer: &impl Consumer<C>) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::debug!("offsets committed"),
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => {
            tracing::warn!(error = %e, "offset commit failed; the records since the last commit will be read again")
        }
    }
}

/// What one detector's consumer reads: its input topic, in its own consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub topic: String,
    pub group: String,
}

/// Runs one detector's consumer until `shutdown` is cancelled (then drains every worker,
/// commits and leaves the group) or a worker fails (then does the same and returns the error,
/// so the supervisor can start a fresh consumer from the committed offsets).
pub async fn run(
    config: &Config,
    subscription: &Subscription,
    runner: Arc<dyn PartitionRunner>,
    assignment: Arc<Assignment>,
    link: Arc<BrokerLink>,
    status: Arc<TaskStatus>,
    shutdown: CancellationToken,
) -> Result<(), ConsumerError> {
    let (failures_tx, failures) = tokio::sync::mpsc::unbounded_channel();
    assignment.fresh();
    let context = GroupContext {
        runner,
        runtime: tokio::runtime::Handle::current(),
        consumer: OnceLock::new(),
        workers: Mutex::new(BTreeMap::new()),
        failures: failures_tx,
        drain_timeout: drain_timeout(config),
        assignment,
        link,
    };
    let consumer: StreamConsumer<GroupContext> =
        crate::kafka::consumer_config(&config.kafka, &subscription.group)
            .create_with_context(context)
            .map_err(ConsumerError::Create)?;
    let consumer = Arc::new(consumer);
    let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
    let topic = subscription.topic.clone();
    consumer
        .subscribe(&[&topic])
        .map_err(|source| ConsumerError::Subscribe {
            topic: topic.clone(),
            source,
        })?;

    // Long enough for a normal rejoin after a session timeout (a rebalance takes a few
    // seconds); on tansu 0.6.0 the lost member keeps its partitions in the group until a new
    // member joins, so waiting longer would not help.
    let rejoin_limit = 3 * crate::kafka::consumer_duration(&config.kafka, "session.timeout.ms");
    let (result_tx, result_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("anomalyd-group".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            let result = rt.block_on(group_loop(
                rejoin_limit,
                &consumer,
                failures,
                &status,
                shutdown,
            ));
            consumer.context().stop_all();
            commit(consumer.as_ref());
            consumer.unsubscribe();
            // Dropping the last reference closes the consumer: it leaves the group.
            drop(consumer);
            let _ = result_tx.send(result);
        })
        .map_err(ConsumerError::Thread)?;
    result_rx.await.map_err(|_| ConsumerError::Panicked)?
}

async fn group_loop(
    rejoin_limit: Duration,
    consumer: &Arc<StreamConsumer<GroupContext>>,
    mut failures: tokio::sync::mpsc::UnboundedReceiver<PartitionError>,
    status: &TaskStatus,
    shutdown: CancellationToken,
) -> Result<(), ConsumerError> {
    // The group thread's beat: it stops if polling the main queue (and so serving the group)
    // stops, e.g. in a rebalance stuck on a worker that never finishes.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {
                status.heartbeat();
                if let Some(d) = consumer.context().assignment.stranded_for(Instant::now())
                    && d > rejoin_limit
                {
                    return Err(ConsumerError::Stranded(d));
                }
            }
            Some(e) = failures.recv() => return Err(ConsumerError::Worker(e)),
            m = consumer.recv() => match m {
                // Records reach the main queue only if fetched before their partition's queue
                // was split off. Rewinding the partition makes them arrive again through its own
                // worker, in order; nothing is skipped.
                Ok(m) => {
                    let (topic, partition, offset) = (m.topic().to_owned(), m.partition(), m.offset());
                    drop(m);
                    tracing::warn!(topic, partition, offset, "record on the main queue; rewinding the partition");
                    if let Err(e) = consumer.seek(&topic, partition, Offset::Offset(offset), Duration::from_secs(5)) {
                        tracing::error!(topic, partition, offset, error = %e, "rewind failed");
                    }
                }
                // Error events arrive here, not through the context, in a consumer.
                Err(e) => {
                    note_broker_trouble(&consumer.context().link, &e, &e.to_string());
                    tracing::warn!(error = %e, "kafka consumer");
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PropertyValue;

    #[test]
    fn empty_since_counts_from_the_start_or_the_revoke_until_partitions_arrive() {
        let a = Assignment::default();
        let later = Instant::now() + Duration::from_secs(3);
        assert!(a.empty_for(later).unwrap() >= Duration::from_secs(3));
        a.set(vec![("t".into(), 1)]);
        assert_eq!(a.empty_for(later), None);
        a.set(Vec::new()); // revoked
        let revoked = a.empty_for(later).unwrap();
        a.set(Vec::new()); // an empty assignment keeps the clock running
        assert_eq!(a.empty_for(later), Some(revoked));
        assert!(a.empty_for(later).unwrap() > Duration::from_secs(2));
    }

    #[test]
    fn a_revoke_drain_stays_below_the_max_poll_interval() {
        let mut config = Config::default();
        assert_eq!(drain_timeout(&config), Duration::from_secs(25));
        config.supervisor.shutdown_grace_s = 10;
        assert_eq!(drain_timeout(&config), Duration::from_secs(10));
        config
            .kafka
            .properties
            .insert("max.poll.interval.ms".into(), PropertyValue::Int(3000));
        assert_eq!(drain_timeout(&config), Duration::from_secs(1));
    }
}
