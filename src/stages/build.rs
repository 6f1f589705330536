//! From a `[stages.NAME]` table to the consumer tasks that run it: the one `build` match over
//! stage kinds.
//!
//! A session window is one task (the input's partition workers). A hopping window is two: the
//! input's partition workers, which send partial counts, and the combiner on the partials
//! topic, which needs the input topic's partition count (refreshed from the broker every few
//! seconds by [`watch_partitions`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use rdkafka::producer::{FutureProducer, Producer};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use super::aggregate::invoice::Columns;
use super::cancellations::{CancellationOutputs, CancellationStage, CombineStage};
use super::hopping_window::{Combiner, DistinctWindows};
use super::invoices::{InvoiceOutputs, InvoiceStage};
use super::metrics::StageMetrics;
use super::session_window::{SessionConfig, SessionWindows};
use super::window::Hopping;
use super::worker::StageRunner;
use crate::config::{KafkaConfig, StageConfig, StageKind};
use crate::source::consumer::{PartitionRunner, Subscription};

#[derive(Debug, Error)]
pub enum BuildError {
    #[error("stages.{stage}.columns: {why}")]
    Columns { stage: String, why: String },
    #[error("stages.{stage}: {why}")]
    Window { stage: String, why: String },
    #[error("stages.{stage}.kind: must be set")]
    NoKind { stage: String },
    #[error(
        "stages.{stage}.partials_topic: {topic:?} has {partitions} partitions; it needs exactly \
         one, so that one member combines every partition's counts (recreate it with one)"
    )]
    PartialsPartitions {
        stage: String,
        topic: String,
        partitions: usize,
    },
}

/// One consumer task of a stage: what it reads, in which group, and what runs each partition.
pub struct StageTask {
    /// `stage-NAME`, or `stage-NAME-combiner`.
    pub task: String,
    pub subscription: Subscription,
    pub runner: Arc<dyn PartitionRunner>,
}

/// A stage ready to run.
pub struct BuiltStage {
    pub tasks: Vec<StageTask>,
    /// A hopping window's input topic and the partition count its combiner waits for.
    pub partitions: Option<(String, Arc<AtomicUsize>)>,
}

fn topic(t: &str) -> Arc<str> {
    Arc::from(t)
}

/// Builds the tasks of stage `name`, all producing with `producer` and counting into `metrics`.
///
/// # Errors
/// [`BuildError`] for columns that do not name the purchase columns or window sizes the window
/// code refuses (normally caught by `validate` first).
pub fn build(
    name: &str,
    c: &StageConfig,
    kafka: &KafkaConfig,
    producer: &FutureProducer,
    metrics: &Arc<StageMetrics>,
) -> Result<BuiltStage, BuildError> {
    let columns = Arc::new(
        Columns::from_names(&c.columns).map_err(|e| BuildError::Columns {
            stage: name.into(),
            why: e.to_string(),
        })?,
    );
    let group = c.group(&kafka.group_id, name);
    let max_message_bytes = crate::sinks::message_max_bytes(&crate::kafka::producer_config(kafka));
    let mode = c.time_mode();
    let kind = c
        .kind
        .ok_or_else(|| BuildError::NoKind { stage: name.into() })?;
    match kind {
        StageKind::SessionWindow => {
            let outputs = Arc::new(InvoiceOutputs {
                invoices: topic(&c.output_topic),
                invalid: topic(c.invalid_topic.as_deref().unwrap_or_default()),
                late: topic(&c.late_topic),
                dead_letter: topic(&c.dead_letter_topic),
            });
            let session = SessionConfig {
                inactivity_gap_ms: c.gap_ms(),
                grace_ms: c.grace_ms(),
                max_open: c.max_open,
                remember_closed: c.remember_closed,
                time: mode,
            };
            // Checked here once, so that building each partition's windows cannot fail.
            session.validate().map_err(|e| BuildError::Window {
                stage: name.into(),
                why: e.to_string(),
            })?;
            let stage_metrics = Arc::clone(metrics);
            let runner = StageRunner {
                name: name.to_owned(),
                producer: producer.clone(),
                max_message_bytes,
                metrics: Arc::clone(metrics),
                build: move |topic: &str, partition: i32| {
                    InvoiceStage::new(
                        SessionWindows::new(session).expect("a session config validated at build"),
                        mode,
                        Arc::clone(&columns),
                        Arc::clone(&outputs),
                        topic,
                        partition,
                        Arc::clone(&stage_metrics),
                    )
                },
            };
            Ok(BuiltStage {
                tasks: vec![StageTask {
                    task: format!("stage-{name}"),
                    subscription: Subscription {
                        topic: c.input_topic.clone(),
                        group,
                    },
                    runner: Arc::new(runner),
                }],
                partitions: None,
            })
        }
        StageKind::HoppingWindow => {
            let window_error = |e: &dyn std::fmt::Display| BuildError::Window {
                stage: name.into(),
                why: e.to_string(),
            };
            let hopping = Hopping::of_size_and_advance(c.size_ms(), c.advance_ms())
                .map_err(|e| window_error(&e))?;
            // Checked here once, so that building each partition's windows cannot fail.
            DistinctWindows::new(hopping, c.grace_ms(), mode, 0).map_err(|e| window_error(&e))?;
            Combiner::new(hopping, 1, c.idle_timeout_ms()).map_err(|e| window_error(&e))?;
            let partials = c.partials_topic.clone().unwrap_or_default();
            let outputs = Arc::new(CancellationOutputs {
                partials: topic(&partials),
                counts: topic(&c.output_topic),
                late: topic(&c.late_topic),
                dead_letter: topic(&c.dead_letter_topic),
            });
            let grace = c.grace_ms();
            let (m1, o1) = (Arc::clone(metrics), Arc::clone(&outputs));
            let windows = StageRunner {
                name: name.to_owned(),
                producer: producer.clone(),
                max_message_bytes,
                metrics: Arc::clone(metrics),
                build: move |_topic: &str, partition: i32| {
                    CancellationStage::new(
                        DistinctWindows::new(hopping, grace, mode, partition)
                            .expect("window settings validated at build"),
                        mode,
                        Arc::clone(&columns),
                        Arc::clone(&o1),
                        partition,
                        Arc::clone(&m1),
                    )
                },
            };
            let count = Arc::new(AtomicUsize::new(0));
            let (m2, o2, n2) = (
                Arc::clone(metrics),
                Arc::clone(&outputs),
                Arc::clone(&count),
            );
            let idle = c.idle_timeout_ms();
            let mut reader = crate::kafka::consumer_config(kafka, &format!("{group}-restore"));
            // It only reads the output's last records by assignment: nothing to commit.
            reader.set("enable.auto.commit", "false");
            let combiner = StageRunner {
                name: format!("{name}-combiner"),
                producer: producer.clone(),
                max_message_bytes,
                metrics: Arc::clone(metrics),
                build: move |_topic: &str, _partition: i32| {
                    CombineStage::new(
                        Combiner::new(hopping, n2.load(Relaxed).max(1), idle)
                            .expect("window settings validated at build"),
                        Arc::clone(&n2),
                        Arc::clone(&o2),
                        Arc::clone(&m2),
                        reader.clone(),
                    )
                },
            };
            Ok(BuiltStage {
                tasks: vec![
                    StageTask {
                        task: format!("stage-{name}"),
                        subscription: Subscription {
                            topic: c.input_topic.clone(),
                            group: group.clone(),
                        },
                        runner: Arc::new(windows),
                    },
                    StageTask {
                        task: format!("stage-{name}-combiner"),
                        subscription: Subscription {
                            topic: partials,
                            group: format!("{group}-combiner"),
                        },
                        runner: Arc::new(combiner),
                    },
                ],
                partitions: Some((c.input_topic.clone(), count)),
            })
        }
    }
}

/// Checks that every hopping window's partials topic has exactly one partition, asking the
/// broker (a blocking call: run it off the async workers). A topic the broker does not answer
/// for is not judged here (the daemon starts while the broker is down, and says so).
///
/// # Errors
/// [`BuildError::PartialsPartitions`] naming the stage and the topic.
pub fn check_partials(
    stages: &std::collections::BTreeMap<String, StageConfig>,
    producer: &FutureProducer,
) -> Result<(), BuildError> {
    for (name, c) in stages {
        let Some(topic) = c.partials_topic.as_deref() else {
            continue;
        };
        let Ok(md) = producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(5))
        else {
            tracing::warn!(
                stage = name,
                topic,
                "could not check the partials topic's partitions"
            );
            continue;
        };
        let n = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len());
        if n > 1 {
            return Err(BuildError::PartialsPartitions {
                stage: name.clone(),
                topic: topic.to_owned(),
                partitions: n,
            });
        }
    }
    Ok(())
}

/// How often the input topic's partition count is asked for.
const PARTITIONS_EVERY: Duration = Duration::from_secs(5);

/// Keeps `count` at the number of partitions of `topic` until `shutdown`: asks the broker now
/// and every few seconds (a blocking metadata call, off the async workers).
pub async fn watch_partitions(
    producer: FutureProducer,
    topic: String,
    count: Arc<AtomicUsize>,
    shutdown: CancellationToken,
) {
    loop {
        let (p, t) = (producer.clone(), topic.clone());
        let answer = tokio::task::spawn_blocking(move || {
            p.client()
                .fetch_metadata(Some(&t), Duration::from_secs(5))
                .map(|md| {
                    md.topics()
                        .iter()
                        .find(|x| x.name() == t)
                        .map_or(0, |x| x.partitions().len())
                })
        })
        .await;
        match answer {
            Ok(Ok(n)) if n > 0 => {
                if count.swap(n, Relaxed) != n {
                    tracing::info!(
                        topic,
                        partitions = n,
                        "input partitions for the combined count"
                    );
                }
            }
            Ok(Ok(_)) => {
                tracing::warn!(topic, "the input topic has no partitions (does it exist?)")
            }
            Ok(Err(e)) => {
                tracing::warn!(topic, error = %e, "could not read the input topic's partition count")
            }
            Err(e) => tracing::warn!(topic, error = %e, "partition count task failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PARTITIONS_EVERY) => {}
        }
    }
}
