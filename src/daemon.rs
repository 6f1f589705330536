//! The daemon: turns a validated [`Config`] into running, supervised tasks, and stops them
//! gracefully.
//!
//! [`run`] is what `anomalyd run` calls: it starts everything, waits for the shutdown future
//! (a signal in production, anything in tests), then drains within the grace period.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use thiserror::Error;

use crate::config::Config;
use crate::detect::features::FeatureExtractor;
use crate::detect::model::{Model, ModelError};
use crate::detect::slot::ModelSlot;
use crate::detect::worker::WorkerEnv;
use crate::metrics::Metrics;
use crate::source::consumer::{self, Assignment};
use crate::source::generator::Generator;
use crate::supervisor::{RestartPolicy, Supervisor, TaskError};

/// How long a stop waits for in-flight batches before giving up.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(
        "detector.features lists {configured} JSON pointers but the model {model_id} expects {expected} features"
    )]
    FeatureCount {
        configured: usize,
        expected: usize,
        model_id: String,
    },
    #[error("could not create the Kafka producer: {0}")]
    Producer(KafkaError),
    #[error("shutdown grace period ended with tasks still running: {}", .0.join(", "))]
    Grace(Vec<&'static str>),
}

/// A running daemon: its shared state, for the control socket and for tests.
pub struct Daemon {
    config: Arc<Config>,
    supervisor: Supervisor,
    metrics: Arc<Metrics>,
    assignment: Arc<Assignment>,
    model: Arc<ModelSlot>,
}

impl Daemon {
    /// Loads the model and starts every configured task. Fails only on what a restart could
    /// not fix (a missing or mismatched model, a producer that cannot be built).
    pub async fn start(config: Config) -> Result<Self, DaemonError> {
        let model = Model::load(&config.model.path)?;
        if let Some(configured) = FeatureExtractor::configured_count(&config.detector.features)
            && configured != model.n_features()
        {
            return Err(DaemonError::FeatureCount {
                configured,
                expected: model.n_features(),
                model_id: model.id().to_owned(),
            });
        }
        tracing::info!(model_id = model.id(), path = %model.path().display(), features = model.n_features(), "model loaded");

        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::default());
        let assignment = Arc::new(Assignment::default());
        let model = Arc::new(ModelSlot::new(model));
        let supervisor = Supervisor::new(RestartPolicy::default());
        let producer: FutureProducer = crate::kafka::producer_config(&config.kafka)
            .create()
            .map_err(DaemonError::Producer)?;

        if config.generator.enabled {
            let generator = Arc::new(Generator::new(
                config.generator.clone(),
                producer.clone(),
                Arc::clone(&metrics),
            ));
            supervisor
                .spawn("generator", move |_, shutdown| {
                    let generator = Arc::clone(&generator);
                    async move { generator.run(shutdown).await.map_err(TaskError::from) }
                })
                .await;
        }

        let env = Arc::new(WorkerEnv {
            producer,
            model: Arc::clone(&model),
            features: config.detector.features.clone(),
            output_topic: config.detector.output_topic.clone(),
            dead_letter_topic: config.detector.dead_letter_topic.clone(),
            batch_max: config.detector.batch_max,
            batch_linger: Duration::from_millis(config.detector.batch_linger_ms),
            metrics: Arc::clone(&metrics),
        });
        {
            let config = Arc::clone(&config);
            let assignment = Arc::clone(&assignment);
            supervisor
                .spawn("detector", move |_, shutdown| {
                    let (config, env, assignment) = (
                        Arc::clone(&config),
                        Arc::clone(&env),
                        Arc::clone(&assignment),
                    );
                    async move {
                        consumer::run(&config, env, assignment, shutdown)
                            .await
                            .map_err(TaskError::from)
                    }
                })
                .await;
        }

        Ok(Self {
            config,
            supervisor,
            metrics,
            assignment,
            model,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn assignment(&self) -> &Arc<Assignment> {
        &self.assignment
    }

    pub fn model(&self) -> &Arc<ModelSlot> {
        &self.model
    }

    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// Stops taking records, lets every worker finish its batch and commit, and leaves the
    /// consumer group, within `grace`.
    pub async fn stop(self, grace: Duration) -> Result<(), DaemonError> {
        tracing::info!(grace = ?grace, "stopping");
        let still = self.supervisor.shutdown(grace).await;
        self.log_summary();
        if still.is_empty() {
            tracing::info!("stopped cleanly");
            Ok(())
        } else {
            Err(DaemonError::Grace(still))
        }
    }
}

impl Daemon {
    /// One line an operator (or the demo) reads at exit.
    fn log_summary(&self) {
        let m = self.metrics.snapshot();
        let secs = self
            .supervisor
            .started()
            .elapsed()
            .map_or(0.0, |d| d.as_secs_f64())
            .max(1e-3);
        let dead: u64 = m.dead_letters.values().sum();
        tracing::info!(
            records_scored = m.records_in,
            anomalies = m.anomalies_out,
            dead_letters = dead,
            generated = m.generated,
            uptime_s = format!("{secs:.1}"),
            records_per_s = format!("{:.0}", m.records_in as f64 / secs),
            "summary"
        );
    }
}

/// Runs the daemon until `shutdown` completes, then stops it within `grace`.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), DaemonError> {
    let daemon = Daemon::start(config).await?;
    shutdown.await;
    daemon.stop(grace).await
}
