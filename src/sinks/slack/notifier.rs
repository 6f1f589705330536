//! The notifier task: reads every detector's anomalies (output) topic in its own consumer
//! group, groups the
//! anomalies, sends one alert at a time, and commits an anomaly's offset only once the message
//! carrying it was accepted. A restart (a crash, a permanent Slack error, a stop) therefore
//! sends again whatever was not yet accepted: at least once, never lost.
//!
//! The one exception is an alert Slack refuses in every form for its content
//! ([`Sent::Refused`]): resending the same content cannot succeed, so it is logged as an error,
//! counted, and its offsets are committed rather than sent again forever.
//!
//! Being its own group, it never holds up the detector, and it can run in another instance.
//! It keeps reading (and so stays in its group) while a message is being retried; past
//! [`MAX_PENDING`] unsent anomalies it pauses its partitions instead of filling memory.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use thiserror::Error;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::anomaly::Anomaly;
use super::client::{ClientError, Destination, Poster, Sent};
use super::group::{Alert, Grouper};
use super::metrics::SlackMetrics;
use super::offsets::Offsets;
use crate::config::{KafkaConfig, SlackConfig};

/// Unsent anomalies held in memory before the notifier stops reading.
pub const MAX_PENDING: u64 = 100_000;
/// Commits after skipped records are spaced by this much (accepted alerts commit at once).
const COMMIT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum NotifierError {
    #[error(transparent)]
    Slack(#[from] ClientError),
    #[error("could not create the notifier's consumer: {0}")]
    Create(KafkaError),
    #[error("could not subscribe the notifier to {topics}: {source}")]
    Subscribe { topics: String, source: KafkaError },
}

/// The notifier's consumer group: `slack.group_id`, else `<kafka.group_id>-notifier`.
pub fn group_id(slack: &SlackConfig, kafka: &KafkaConfig) -> String {
    slack
        .group_id
        .clone()
        .unwrap_or_else(|| format!("{}-notifier", kafka.group_id))
}

type Sending<'a> = Pin<Box<dyn Future<Output = (Alert, Result<Sent, ClientError>)> + Send + 'a>>;

/// Runs the notifier until `shutdown` (then commits what was sent and returns `Ok`), or until
/// Slack refuses an alert for good (then commits what was sent and returns the error, for the
/// supervisor to retry with backoff). Returns `Ok` at once when `slack.mode` is `off`.
/// `heartbeat` is called about once a second while the task is alive.
///
/// `anomalies_topics` are the topics read, one subscription for all: every detector's output
/// topic, each named once (duplicates are dropped here too).
pub async fn run(
    slack: &SlackConfig,
    kafka: &KafkaConfig,
    anomalies_topics: &[String],
    metrics: &SlackMetrics,
    heartbeat: impl Fn() + Sync,
    shutdown: CancellationToken,
) -> Result<(), NotifierError> {
    let Some(dest) = Destination::from_config(slack)? else {
        return Ok(());
    };
    let poster = Poster::new(dest, slack, metrics)?;
    let group = group_id(slack, kafka);
    let consumer: StreamConsumer = crate::kafka::consumer_config(kafka, &group)
        .create()
        .map_err(NotifierError::Create)?;
    let mut topics: Vec<&str> = anomalies_topics.iter().map(String::as_str).collect();
    topics.sort_unstable();
    topics.dedup();
    consumer
        .subscribe(&topics)
        .map_err(|source| NotifierError::Subscribe {
            topics: topics.join(", "),
            source,
        })?;
    let topic_list = topics.join(", ");
    tracing::info!(to = %poster.destination().describe(), topics = topic_list, group, "notifier started");
    // One shared name per topic, so that a position costs no allocation.
    let names: Vec<Arc<str>> = topics.iter().map(|&t| Arc::from(t)).collect();

    let mut state = State {
        consumer: &consumer,
        grouper: Grouper::new(
            Duration::from_secs(slack.group_wait_s),
            Duration::from_secs(slack.group_interval_s),
            slack.top_n,
        ),
        offsets: Offsets::default(),
        last_commit: Instant::now(),
        paused: false,
        metrics,
    };
    let mut sending: Option<(u64, Sending<'_>)> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Far enough never to fire: the timer branch needs some instant even when disabled.
    let never = Instant::now() + Duration::from_secs(86_400 * 365);

    let result = loop {
        if sending.is_none()
            && let Some(alert) = state.grouper.take_due(Instant::now())
        {
            let poster = &poster;
            let count = alert.count;
            sending = Some((
                count,
                Box::pin(async move {
                    let sent = poster.send(&alert).await;
                    (alert, sent)
                }),
            ));
        }
        let in_flight = sending.as_ref().map_or(0, |(n, _)| *n);
        metrics
            .pending_anomalies
            .store(state.grouper.pending() + in_flight, Relaxed);
        state.pace_reading();
        let wake = match sending {
            None => state.grouper.next_due(),
            Some(_) => None,
        };

        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ok(()),
            _ = tick.tick() => heartbeat(),
            (alert, sent) = async { sending.as_mut().expect("guarded by the condition").1.as_mut().await }, if sending.is_some() => {
                sending = None;
                match sent {
                    // Accepted, or refused for its content in every form (logged and counted):
                    // either way done with.
                    Ok(Sent::Accepted(_) | Sent::Refused) => {
                        for at in &alert.positions {
                            state.offsets.done(at);
                        }
                        state.commit(CommitMode::Async);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "alert refused; the notifier stops and will be restarted");
                        break Err(e.into());
                    }
                }
            }
            _ = tokio::time::sleep_until(wake.unwrap_or(never)), if wake.is_some() => {}
            m = consumer.recv() => match m {
                Ok(m) => {
                    let topic = names
                        .iter()
                        .find(|t| ***t == *m.topic())
                        .cloned()
                        .unwrap_or_else(|| Arc::from(m.topic()));
                    let at = (topic, m.partition(), m.offset());
                    match m.payload().map(Anomaly::parse) {
                        Some(Ok(anomaly)) => {
                            state.offsets.read(&at);
                            state.grouper.add(Instant::now(), anomaly, at);
                        }
                        other => {
                            let why = match other {
                                Some(Err(e)) => e.to_string(),
                                _ => "no payload".into(),
                            };
                            tracing::warn!(topic = &*at.0, partition = at.1, offset = at.2, error = %why, "skipping a record that is not an anomaly");
                            metrics.skipped_records.fetch_add(1, Relaxed);
                            state.offsets.skip(&at);
                            if state.last_commit.elapsed() >= COMMIT_EVERY {
                                state.commit(CommitMode::Async);
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "notifier consumer"),
            },
        }
    };
    // An alert still being sent is abandoned: its anomalies are not committed and go out
    // again after the restart.
    drop(sending);
    state.commit(CommitMode::Sync);
    metrics.pending_anomalies.store(0, Relaxed);
    result
}

struct State<'a> {
    consumer: &'a StreamConsumer,
    grouper: Grouper,
    offsets: Offsets,
    last_commit: Instant,
    paused: bool,
    metrics: &'a SlackMetrics,
}

impl State<'_> {
    /// Commits the offsets that moved: those below every unsent anomaly.
    fn commit(&mut self, mode: CommitMode) {
        self.last_commit = Instant::now();
        let moved = self.offsets.to_commit();
        if !moved.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (topic, partition, next) in &moved {
                if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
                    tracing::warn!(topic = &**topic, partition, error = %e, "cannot list an offset to commit");
                }
            }
            // Stored offsets are what librdkafka's auto-commit and its close commit use.
            if let Err(e) = self.consumer.store_offsets(&tpl) {
                tracing::warn!(error = %e, "could not store the notifier's offsets (partitions moved to another member?)");
            }
        } else if matches!(mode, CommitMode::Async) {
            return;
        }
        match self.consumer.commit_consumer_state(mode) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "notifier offset commit failed; a later one will cover it")
            }
        }
    }

    /// Pauses reading while too many anomalies wait to be sent, and resumes once half are out.
    fn pace_reading(&mut self) {
        let pending = self.metrics.pending_anomalies.load(Relaxed);
        let pause = if !self.paused && pending >= MAX_PENDING {
            true
        } else if self.paused && pending < MAX_PENDING / 2 {
            false
        } else {
            return;
        };
        let result = self.consumer.assignment().and_then(|tpl| {
            if pause {
                self.consumer.pause(&tpl)
            } else {
                self.consumer.resume(&tpl)
            }
        });
        match result {
            Ok(()) => {
                self.paused = pause;
                tracing::info!(pending, paused = pause, "notifier reading paused/resumed");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot pause or resume the notifier's partitions")
            }
        }
    }
}
