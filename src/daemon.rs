//! The daemon: turns a validated [`Config`] into running, supervised tasks (one consumer and
//! its partition workers per `[detectors.NAME]`), answers on the control socket, reloads every
//! detector's model on request, and stops gracefully.
//!
//! [`run`] is what `anomalyd run` calls: it starts everything, tells systemd when it is ready,
//! feeds the watchdog while every task is alive, reloads on SIGHUP, and on SIGTERM drains
//! within the grace period. Tests call it too, with hand-made [`Signals`].
//!
//! The control server does not know this type: it serves anything that implements
//! [`crate::control::server::Control`], which [`Daemon`] does.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use thiserror::Error;
use tokio::net::UnixListener;

use crate::config::{
    Config, DetectorConfig, FeatureMatch, FeatureSpec, GeneratorProfile, RecordFormat, SlackMode,
    StageConfig,
};
use crate::control::lag::{LagProbe, PartitionLag};
use crate::control::liveness::{self, BrokerLink, Facts, Judgement, Orphan, OrphanWatch};
use crate::control::server::{self, Control, ControlError};
use crate::control::status::{
    DetectorReload, DetectorStatus, ModelStatus, PartitionStatus, ReloadReport, StageStatus,
    Status, StoreStatus,
};
use crate::detect::csv_record::CsvFormat;
// The daemon serves a model file of any kind (Isolation Forest, k-means, bisecting k-means).
use crate::detect::model::{LoadedModel as Model, ModelError};
use crate::detect::rules::RulesError;
use crate::detect::scorer::{Fixed, ModelSource, RulesScorer, Scorer, ScorerSource};
use crate::detect::slot::ModelSlot;
use crate::detect::worker::WorkerEnv;
use crate::metrics::Metrics;
use crate::signals::{Signal, Signals};
use crate::sinks::slack::{self, SlackMetrics};
use crate::sinks::store::{self, StoreMetrics};
use crate::source::consumer::{self, Assignment, Subscription};
use crate::source::generator::{Generator, replay};
use crate::stages::build::StageTask;
use crate::stages::metrics::StageMetrics;
use crate::supervisor::{RestartPolicy, Supervisor, TaskError, TaskState};
use crate::{exit, notify};

/// Longest one request of the lag probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

fn same(a: &Orphan, b: &Orphan) -> bool {
    a.topic == b.topic && a.partition == b.partition
}

/// Tasks whose failure makes the daemon not ready (Slack alerts failing does not: Kafka work
/// never waits on Slack); every detector's task (`detector:<name>`) is critical too.
const CRITICAL_TASKS: &[&str] = &["control"];

/// The supervised task of detector `name`.
fn task_name(name: &str) -> String {
    format!("detector:{name}")
}

#[derive(Debug, Error)]
pub enum DaemonError {
    /// Detector `detector`'s model file is missing or damaged.
    #[error("detector {detector}: {source}")]
    Model {
        detector: String,
        #[source]
        source: ModelError,
    },
    #[error(transparent)]
    Features(#[from] Box<FeatureMismatch>),
    /// Detector `detector`'s rules do not compile: a configuration error.
    #[error("detector {detector}: {source}")]
    Rules {
        detector: String,
        #[source]
        source: RulesError,
    },
    #[error("could not create the Kafka producer: {0}")]
    Producer(KafkaError),
    /// A stage's configuration cannot be built: a configuration error.
    #[error(transparent)]
    Stage(#[from] crate::stages::build::BuildError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Web(#[from] crate::web::WebError),
    #[error("shutdown grace period ended with tasks still running: {}", .0.join(", "))]
    Grace(Vec<&'static str>),
    #[error(
        "second {signal} during shutdown: stopped at once; still running: {}",
        if still_running.is_empty() { "nothing".to_owned() } else { still_running.join(", ") }
    )]
    Interrupted {
        signal: Signal,
        still_running: Vec<&'static str>,
    },
}

impl DaemonError {
    /// The process exit code `anomalyd run` (and `check-config`, for the model) ends with:
    /// 66 a model file that cannot be read, 65 a damaged one, 78 one that does not fit the
    /// configured features, 128 + the signal's number for a second SIGINT/SIGTERM during
    /// shutdown (130, 143), 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Model {
                source: ModelError::Read { .. },
                ..
            } => exit::NO_INPUT,
            Self::Model { .. } => exit::DATA_ERR,
            Self::Features(_) | Self::Rules { .. } | Self::Stage(_) => exit::CONFIG,
            Self::Interrupted { signal, .. } => signal.exit_code(),
            Self::Producer(_) | Self::Control(_) | Self::Web(_) | Self::Grace(_) => exit::FAILURE,
        }
    }
}

/// The model does not fit `detectors.<name>.features`: a configuration error, since either
/// the features or the model file must change.
#[derive(Debug, Error)]
#[error(
    "detectors.{detector}.features: {configured} but the model {} (id {model_id}) has {} features ({}){why}",
    path.display(), model_features.len(), model_features.join(", ")
)]
pub struct FeatureMismatch {
    /// The `[detectors.NAME]` name.
    pub detector: String,
    pub path: PathBuf,
    pub model_id: String,
    pub model_features: Vec<String>,
    /// What the configuration lists, e.g. `3 JSON pointers (/a, /b, /c)`.
    pub configured: String,
    /// Empty for a count mismatch; else which position names which feature, and the fix.
    pub why: String,
}

/// Loads detector `name`'s model file and checks it against its `features` and
/// `match_features`: the one check both `anomalyd run` and `anomalyd check-config` make (and
/// a reload), so they cannot disagree. Blocking (reads and verifies the whole file).
///
/// Errors: [`DaemonError::Model`] when the file is missing or damaged (wrong magic, version,
/// checksum, ...) or the detector names no model file, [`DaemonError::Features`] when it does
/// not fit (see [`check_features`]).
pub fn load_model(name: &str, detector: &DetectorConfig) -> Result<Model, DaemonError> {
    let model_error = |source| DaemonError::Model {
        detector: name.to_owned(),
        source,
    };
    // Validation guarantees a model path for the model scorer; say so rather than panic.
    let path = detector.model.as_deref().ok_or_else(|| {
        model_error(ModelError::Header {
            path: Default::default(),
            reason: format!("detectors.{name}.model is not set"),
        })
    })?;
    let model = Model::load(path).map_err(model_error)?;
    check_detector_features(name, detector, &model)?;
    Ok(model)
}

/// [`check_features`] for `detector`'s features in its format: a CSV detector's columns are
/// checked as the pointers to its line's cells, and a mismatch is told in column names.
fn check_detector_features(
    name: &str,
    detector: &DetectorConfig,
    model: &Model,
) -> Result<(), Box<FeatureMismatch>> {
    let checked = check_features(
        name,
        &feature_pointers(detector),
        detector.match_features,
        model,
    );
    match (&detector.format, &detector.features, checked) {
        (RecordFormat::Csv, FeatureSpec::Pointers(columns), Err(mut m)) => {
            m.configured = format!("{} CSV columns ({})", columns.len(), columns.join(", "));
            let pointers = crate::detect::csv_record::as_pointers(columns);
            for (c, p) in columns.iter().zip(&pointers) {
                m.why = m
                    .why
                    .replace(&format!("{p:?}"), &format!("{c:?}"))
                    .replace(&format!("({p})"), &format!("({c})"));
            }
            m.why = m.why.replace("pointer ", "column ");
            Err(m)
        }
        (_, _, checked) => checked,
    }
}

/// The detector's features as [`check_features`] takes them: its `features` for JSON; for
/// CSV, its column names as the JSON pointers of the line's cells
/// ([`crate::detect::csv_record::as_pointers`]), so a model's feature names match column names.
fn feature_pointers(detector: &DetectorConfig) -> FeatureSpec {
    match (&detector.format, &detector.features) {
        (RecordFormat::Csv, FeatureSpec::Pointers(names)) => {
            FeatureSpec::Pointers(crate::detect::csv_record::as_pointers(names))
        }
        _ => detector.features.clone(),
    }
}

/// A detector's CSV reading (`format = "csv"`): its columns and feature columns; `None` for
/// JSON. Validation guarantees `columns` and that the features are among them.
fn csv_format(detector: &DetectorConfig) -> Option<Arc<CsvFormat>> {
    if detector.format != RecordFormat::Csv {
        return None;
    }
    let features = match &detector.features {
        FeatureSpec::Pointers(names) => names.as_slice(),
        FeatureSpec::Field(_) => &[],
    };
    CsvFormat::new(detector.columns.clone().unwrap_or_default(), features).map(Arc::new)
}

/// A detector's scorer, loaded: a model file, or compiled rules.
#[derive(Debug)]
pub enum Loaded {
    Model(Box<Model>),
    Rules(RulesScorer),
}

/// Detector `name`'s scorer: its model file ([`load_model`]) or its rules, compiled
/// ([`DaemonError::Rules`] when an expression does not compile). Blocking.
pub fn load_scorer(name: &str, detector: &DetectorConfig) -> Result<Loaded, DaemonError> {
    match &detector.rules {
        Some(rules) if detector.model.is_none() => {
            RulesScorer::compile(&crate::config::rule_pairs(rules))
                .map(|r| r.with_for(crate::config::rule_for(rules)))
                .map(|r| match detector.format {
                    RecordFormat::Csv => r.reading_csv(),
                    RecordFormat::Json => r,
                })
                .map(Loaded::Rules)
                .map_err(|source| DaemonError::Rules {
                    detector: name.to_owned(),
                    source,
                })
        }
        _ => load_model(name, detector).map(|m| Loaded::Model(Box::new(m))),
    }
}

/// [`load_scorer`] for every detector, in name order; the first failure is returned. The one
/// check of the scorers that `run` and `check-config` both make.
pub fn load_scorers(config: &Config) -> Result<Vec<(String, Loaded)>, DaemonError> {
    config
        .detectors
        .iter()
        .map(|(name, d)| Ok((name.clone(), load_scorer(name, d)?)))
        .collect()
}

/// The key a rules error is about: `detectors.NAME.rules.RULE`, or the table.
pub fn rules_key(detector: &str, e: &RulesError) -> String {
    match e {
        RulesError::Syntax { rule, .. }
        | RulesError::TooLong { rule, .. }
        | RulesError::TooDeep { rule, .. }
        | RulesError::UnknownFunction { rule, .. }
        | RulesError::DuplicateName { rule } => format!("detectors.{detector}.rules.{rule}"),
        RulesError::Empty | RulesError::EmptyName => format!("detectors.{detector}.rules"),
    }
}

/// With JSON pointers, the model must have one feature per pointer and, matching
/// [`FeatureMatch::ByName`] (the default), each pointer's last reference token (RFC 6901,
/// unescaped: `/sensor/temperature` gives `temperature`) must be the name of the model's
/// feature at the same place, so that features swapped or renamed between training and
/// scoring are caught before a record is scored: names that differ, or the same names in
/// another order, are refused, naming both lists (and, for another order, the order that
/// fits). [`FeatureMatch::ByPosition`] checks only the count. A field holding an array
/// (`features = "data"`) names no features and is positional by nature: each record's array
/// length is checked as it arrives (wrong lengths go to the dead-letter topic). The empty
/// pointer (the whole record is the value) matches any name.
pub fn check_features(
    detector: &str,
    spec: &FeatureSpec,
    matching: FeatureMatch,
    model: &Model,
) -> Result<(), Box<FeatureMismatch>> {
    let FeatureSpec::Pointers(pointers) = spec else {
        return Ok(());
    };
    let names = model.feature_names();
    let mismatch = |why: String| {
        Box::new(FeatureMismatch {
            detector: detector.to_owned(),
            path: model.path().to_owned(),
            model_id: model.id().to_owned(),
            model_features: names.to_vec(),
            configured: format!("{} JSON pointers ({})", pointers.len(), pointers.join(", ")),
            why,
        })
    };
    if pointers.len() != names.len() {
        return Err(mismatch(String::new()));
    }
    if matching == FeatureMatch::ByPosition {
        return Ok(());
    }
    let tokens: Vec<Option<String>> = pointers.iter().map(|p| last_token(p)).collect();
    let wrong: Vec<String> = pointers
        .iter()
        .zip(&tokens)
        .zip(names)
        .enumerate()
        .filter_map(|(i, ((pointer, token), name))| {
            let token = token.as_ref()?;
            (token != name).then(|| {
                format!(
                    "pointer {} ({pointer}) reads `{token}` where the model expects `{name}`",
                    i + 1
                )
            })
        })
        .collect();
    if wrong.is_empty() {
        return Ok(());
    }
    let fix = match in_model_order(pointers, &tokens, names) {
        Some(reordered) => format!(
            "; the same names in the model's order: features = [{}]",
            reordered
                .iter()
                .map(|p| format!("{p:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => {
            "; train the model on these fields, or point at the fields it was trained on".to_owned()
        }
    };
    Err(mismatch(format!(
        ": {}{fix} (or set detectors.{detector}.match_features = \"by_position\" to feed pointer i to \
         feature i whatever the names)",
        wrong.join("; ")
    )))
}

/// A JSON pointer's last reference token, unescaped (RFC 6901); `None` for the empty pointer.
fn last_token(pointer: &str) -> Option<String> {
    let token = pointer.rsplit('/').next().filter(|_| !pointer.is_empty())?;
    Some(token.replace("~1", "/").replace("~0", "~"))
}

/// `pointers` reordered so that each one's last token is the model's name at its place, when
/// they name exactly the model's features (each once); else `None`.
fn in_model_order<'a>(
    pointers: &'a [String],
    tokens: &[Option<String>],
    names: &[String],
) -> Option<Vec<&'a str>> {
    let mut used = vec![false; pointers.len()];
    names
        .iter()
        .map(|name| {
            let i = (0..pointers.len())
                .find(|&i| !used[i] && tokens[i].as_deref() == Some(name.as_str()))?;
            used[i] = true;
            Some(pointers[i].as_str())
        })
        .collect()
}

/// What scores a detector's records.
enum DetectorScorer {
    /// A model file, reloadable.
    Model {
        slot: Arc<ModelSlot>,
        source: Arc<ModelSource>,
    },
    /// Rules, compiled at start.
    Rules(Arc<RulesScorer>),
}

impl DetectorScorer {
    fn source(&self) -> Arc<dyn ScorerSource> {
        match self {
            Self::Model { source, .. } => Arc::clone(source) as _,
            Self::Rules(rules) => Arc::new(Fixed(Arc::clone(rules))),
        }
    }

    fn current(&self) -> Arc<dyn Scorer> {
        match self {
            Self::Model { slot, .. } => slot.current(),
            Self::Rules(rules) => Arc::clone(rules) as _,
        }
    }
}

/// Why a reloaded model file was refused.
#[derive(Debug, Error)]
enum Refusal {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Features(#[from] Box<FeatureMismatch>),
}

/// One running detector: its settings, its scorer, its consumer's assignment, its counters and
/// what the broker says about its input topic.
pub struct Detector {
    name: String,
    config: DetectorConfig,
    subscription: Subscription,
    scorer: DetectorScorer,
    metrics: Arc<Metrics>,
    assignment: Arc<Assignment>,
    lag_probe: Arc<Mutex<Option<LagProbe>>>,
    lag_cache: Mutex<Vec<PartitionLag>>,
    /// The last lag probe found no input topic on the broker.
    topic_missing: AtomicBool,
    orphan_watch: Mutex<OrphanWatch>,
    /// The orphans found by the last look, so that health and the log agree.
    orphans: Mutex<Vec<Orphan>>,
}

impl Detector {
    /// The `[detectors.NAME]` name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// The input topic and the consumer group this detector reads it with.
    pub fn subscription(&self) -> &Subscription {
        &self.subscription
    }

    /// The model serving this detector; `None` for a rules detector.
    pub fn model(&self) -> Option<&Arc<ModelSlot>> {
        match &self.scorer {
            DetectorScorer::Model { slot, .. } => Some(slot),
            DetectorScorer::Rules(_) => None,
        }
    }

    /// The scorer serving this detector now, whatever its kind.
    pub fn scorer(&self) -> Arc<dyn Scorer> {
        self.scorer.current()
    }

    /// This detector's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn assignment(&self) -> &Arc<Assignment> {
        &self.assignment
    }

    /// Partitions of the input topic that looked owned by no live member of this detector's
    /// group at the last look (see [`liveness`]).
    pub fn orphans(&self) -> Vec<Orphan> {
        self.orphans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads this detector's model file and, if it is sound and fits the configured
    /// features, puts it in service from the next batch; a refused file leaves the old model
    /// serving. Blocking (file I/O and a checksum).
    fn reload_blocking(&self) -> DetectorReload {
        let (slot, source) = match &self.scorer {
            DetectorScorer::Model { slot, source } => (slot, source),
            // Rules are compiled once, at start: reported as they are, unchanged.
            DetectorScorer::Rules(rules) => {
                return DetectorReload {
                    detector: self.name.clone(),
                    path: String::new(),
                    model: Some(rules.identity()),
                    error: None,
                };
            }
        };
        let name = self.name.clone();
        let detector = &self.config;
        // The same check as at start: a retrained model with its features renamed or
        // reordered must not start serving.
        let fits = |m: &Model| check_detector_features(&name, detector, m).map_err(Refusal::from);
        let result = slot
            .reload_if(&source.path, fits)
            .map(|m| m.identity())
            .map_err(|e| e.to_string());
        match &result {
            Ok(m) => tracing::info!(
                detector = self.name,
                model_id = m.id,
                path = %source.path.display(),
                "model reloaded"
            ),
            Err(e) => tracing::error!(
                detector = self.name,
                error = %e,
                "model reload refused; the old model keeps serving"
            ),
        }
        DetectorReload {
            detector: self.name.clone(),
            path: source.path.display().to_string(),
            model: result.as_ref().ok().cloned(),
            error: result.err(),
        }
    }

    /// Readiness and warnings of this detector (see [`liveness`]), each prefixed with
    /// `detector NAME: `.
    fn judge(&self, link: &BrokerLink, now: Instant) -> Judgement {
        let orphans = self.orphans();
        let j = liveness::judge(&Facts {
            unreachable: link.unreachable(now),
            joined: self.assignment.generations.load(Relaxed) > 0,
            topic_missing: self.topic_missing.load(Relaxed),
            empty_for: self.assignment.empty_for(now),
            grace: Duration::from_secs(self.config.assignment_grace_s),
            orphans: &orphans,
            topic: &self.config.input_topic,
        });
        let named = |v: Vec<String>| {
            v.into_iter()
                .map(|r| format!("detector {}: {r}", self.name))
                .collect()
        };
        Judgement {
            not_ready: named(j.not_ready),
            warnings: named(j.warnings),
        }
    }

    fn status(&self, judgement: Judgement) -> DetectorStatus {
        let lags = self
            .lag_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let stats = self.metrics.partitions();
        let partitions: Vec<PartitionStatus> = self
            .assignment
            .partitions()
            .into_iter()
            .map(|(topic, partition)| {
                let s = stats
                    .get(&(topic.clone(), partition))
                    .cloned()
                    .unwrap_or_default();
                let offsets = lags
                    .iter()
                    .find(|l| l.topic == topic && l.partition == partition)
                    .cloned()
                    .unwrap_or(PartitionLag {
                        topic,
                        partition,
                        committed: None,
                        high_watermark: None,
                        lag: None,
                    });
                PartitionStatus {
                    offsets,
                    records: s.records,
                    anomalies: s.anomalies,
                    dead_letters: s.dead_letters,
                }
            })
            .collect();
        let scorer = self.scorer.current();
        let identity = scorer.identity();
        let history = match &self.scorer {
            DetectorScorer::Model { slot, .. } => slot.history(),
            DetectorScorer::Rules(_) => Default::default(),
        };
        let counters = self.metrics.snapshot();
        DetectorStatus {
            name: self.name.clone(),
            input_topic: self.subscription.topic.clone(),
            group_id: self.subscription.group.clone(),
            output_topic: self.config.output_topic.clone(),
            scored_topic: self.config.scored_topic.clone(),
            dead_letter_topic: self.config.dead_letter_topic.clone(),
            ready: judgement.not_ready.is_empty(),
            not_ready: judgement.not_ready,
            warnings: judgement.warnings,
            orphaned_partitions: self.orphans(),
            model: ModelStatus {
                id: identity.id,
                kind: identity.kind,
                path: identity
                    .path
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                features: scorer.feature_names().to_vec(),
                history,
            },
            lag: partitions.iter().filter_map(|p| p.offsets.lag).sum(),
            partitions,
            records: counters.records_in,
            anomalies: counters.anomalies_out,
            dead_letters: counters.dead_letters,
            split: self.config.split.clone(),
            records_skipped_by_split: counters.records_skipped_by_split,
        }
    }

    /// Asks the broker for the partitions of the input topic, this detector's group's
    /// committed offsets and the high watermarks (blocking calls, run off the async workers);
    /// see [`Daemon::refresh_lag`].
    async fn refresh_lag(
        &self,
        kafka: &crate::config::KafkaConfig,
        link: &Arc<BrokerLink>,
        orphan_after: Duration,
    ) {
        let probe = Arc::clone(&self.lag_probe);
        let kafka = kafka.clone();
        let Subscription { topic, group } = self.subscription.clone();
        let probe_link = Arc::clone(link);
        let survey = tokio::task::spawn_blocking(move || {
            let mut probe = probe.lock().unwrap_or_else(|p| p.into_inner());
            if probe.is_none() {
                *probe = LagProbe::new(&kafka, &group)
                    .map_err(|e| tracing::warn!(error = %e, "lag probe"))
                    .ok();
            }
            probe.as_ref().map(|p| {
                // Reachable as soon as the metadata comes back, however long the rest takes.
                p.survey(&topic, PROBE_TIMEOUT, || {
                    probe_link.answered(Instant::now())
                })
                .map_err(|e| e.to_string())
            })
        })
        .await
        .unwrap_or_else(|e| Some(Err(format!("lag probe task failed: {e}"))));
        let now = Instant::now();
        let held = self.assignment.partitions();
        let mut watch = self.orphan_watch.lock().unwrap_or_else(|p| p.into_inner());
        let before = self.orphans();
        let missing = matches!(survey, Some(Ok(None)));
        if missing != self.topic_missing.swap(missing, Relaxed) && missing {
            tracing::warn!(
                detector = self.name,
                topic = self.subscription.topic,
                "the input topic does not exist: nothing is read until it is created"
            );
        }
        let fresh = match survey {
            Some(Ok(None)) => {
                watch.forget();
                Vec::new()
            }
            Some(Ok(Some(seen))) => {
                watch.observe(now, &seen, &held);
                seen.iter()
                    .filter(|o| held.contains(&(o.topic.clone(), o.partition)))
                    .map(PartitionLag::from)
                    .collect()
            }
            Some(Err(e)) => {
                link.failed(&e);
                watch.forget();
                Vec::new()
            }
            None => {
                link.failed("the lag probe could not be created (see the log)");
                Vec::new()
            }
        };
        let after = watch.orphans(now, orphan_after);
        drop(watch);
        for o in after.iter().filter(|o| !before.iter().any(|b| same(b, o))) {
            tracing::warn!(
                detector = self.name,
                topic = o.topic,
                partition = o.partition,
                committed = o.committed,
                high_watermark = o.high_watermark,
                stalled_s = o.stalled_s,
                "partition looks orphaned: owned by no live member (its committed offset has not \
                 moved for longer than the session timeout while records wait)"
            );
        }
        for o in before.iter().filter(|o| !after.iter().any(|a| same(a, o))) {
            tracing::info!(
                detector = self.name,
                topic = o.topic,
                partition = o.partition,
                "partition no longer looks orphaned"
            );
        }
        *self.orphans.lock().unwrap_or_else(|p| p.into_inner()) = after;
        *self.lag_cache.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
    }
}

/// One `[stages.NAME]` as the daemon runs it.
struct RunningStage {
    name: String,
    config: StageConfig,
    metrics: Arc<StageMetrics>,
    /// Each consumer task: its task name, what it reads, its runner, and its partitions.
    tasks: Vec<(StageTask, Arc<Assignment>)>,
    partitions: Option<(String, Arc<std::sync::atomic::AtomicUsize>)>,
    /// The client that reads each task's group's committed offsets and watermarks, made on
    /// first use.
    lag_probes: Arc<Mutex<Vec<Option<LagProbe>>>>,
    /// Each task's input partitions with their lag, from the last refresh.
    lag: Mutex<Vec<PartitionLag>>,
}

impl RunningStage {
    /// Asks the broker for each task's committed offsets and watermarks (blocking calls, run
    /// off the async workers): the lag of every partition this stage reads, whoever holds it.
    async fn refresh_lag(&self, kafka: &crate::config::KafkaConfig) {
        let subs: Vec<Subscription> = self
            .tasks
            .iter()
            .map(|(t, _)| t.subscription.clone())
            .collect();
        let (probes, kafka) = (Arc::clone(&self.lag_probes), kafka.clone());
        let fresh = tokio::task::spawn_blocking(move || {
            let mut probes = probes.lock().unwrap_or_else(|p| p.into_inner());
            probes.resize_with(subs.len(), || None);
            let mut out = Vec::new();
            for (sub, probe) in subs.iter().zip(probes.iter_mut()) {
                if probe.is_none() {
                    *probe = LagProbe::new(&kafka, &sub.group).ok();
                }
                if let Some(Ok(Some(seen))) = probe
                    .as_ref()
                    .map(|p| p.survey(&sub.topic, PROBE_TIMEOUT, || {}))
                {
                    out.extend(seen.iter().map(PartitionLag::from));
                }
            }
            out
        })
        .await
        .unwrap_or_default();
        *self.lag.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
    }

    fn status(&self) -> StageStatus {
        let groups = self
            .tasks
            .iter()
            .map(|(t, a)| {
                let held = a
                    .partitions()
                    .into_iter()
                    .map(|(topic, p)| format!("{topic}/{p}"))
                    .collect();
                (t.subscription.group.clone(), held)
            })
            .collect();
        StageStatus {
            name: self.name.clone(),
            kind: self.config.kind.map_or("", |k| k.name()),
            time: self.config.time_mode().name(),
            input_topic: self.config.input_topic.clone(),
            groups,
            lag: self.lag.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            counters: self.metrics.snapshot(),
        }
    }
}

/// A running daemon: its shared state, for the control socket and for tests.
pub struct Daemon {
    config: Arc<Config>,
    supervisor: Supervisor,
    /// Counters over every detector, and the generator's.
    metrics: Arc<Metrics>,
    slack_metrics: Arc<SlackMetrics>,
    store_metrics: Arc<StoreMetrics>,
    /// Every detector, in name order.
    detectors: Vec<Arc<Detector>>,
    /// Every stage, in name order.
    stages: Vec<RunningStage>,
    started: Instant,
    link: Arc<BrokerLink>,
    /// A partition stalled this long counts as orphaned: the session timeout plus the
    /// auto-commit interval (see [`liveness`]).
    orphan_after: Duration,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

impl Daemon {
    /// Loads every detector's model, binds the control socket and starts every configured
    /// task. Fails only on what a restart could not fix (a missing or mismatched model, a
    /// socket in use).
    pub async fn start(config: Config) -> Result<Arc<Self>, DaemonError> {
        let models = load_scorers(&config)?;
        for w in config.warnings() {
            tracing::warn!(key = w.key, "{}", w.message);
        }
        for (name, loaded) in &models {
            match loaded {
                Loaded::Model(model) => {
                    tracing::info!(detector = name, model_id = model.id(), kind = model.kind(), path = %model.path().display(), features = model.n_features(), "model loaded")
                }
                Loaded::Rules(rules) => {
                    tracing::info!(detector = name, rules_id = rules.identity().id, rules = ?rules.feature_names(), "rules compiled")
                }
            }
        }
        let producer: FutureProducer = crate::kafka::producer_config(&config.kafka)
            .create()
            .map_err(DaemonError::Producer)?;
        // The generator stands in for an upstream system, so it gets a producer of its own:
        // its traffic never takes the detector's in-flight requests or waits behind them.
        let generator_producer: Option<FutureProducer> = config
            .generator
            .enabled
            .then(|| match config.generator.profile {
                GeneratorProfile::Replay => replay::producer_config(&config.kafka).create(),
                GeneratorProfile::Transactions | GeneratorProfile::Sensors => {
                    crate::kafka::producer_config(&config.kafka).create()
                }
            })
            .transpose()
            .map_err(DaemonError::Producer)?;
        let listener = Arc::new(server::bind(&config.control.socket).await?);
        tracing::info!(socket = %config.control.socket.display(), "control socket bound");
        let web = match &config.web.listen {
            Some(addr) => {
                let token = crate::web::load_token(&config.web)?;
                let listener = crate::web::bind(addr)?;
                let shown = listener
                    .local_addr()
                    .map_or(addr.clone(), |a| a.to_string());
                tracing::info!(address = %shown, token = token.is_some(), "web view listening");
                Some((Arc::new(listener), token))
            }
            None => None,
        };

        let sv = &config.supervisor;
        let policy = RestartPolicy {
            max_restarts: sv.max_restarts,
            window: Duration::from_secs(sv.restart_window_s),
            ..RestartPolicy::default()
        };
        let orphan_after = crate::kafka::consumer_duration(&config.kafka, "session.timeout.ms")
            + crate::kafka::consumer_duration(&config.kafka, "auto.commit.interval.ms");
        let link = Arc::new(BrokerLink::new(&config.kafka.brokers, Instant::now()));
        let detectors = models
            .into_iter()
            .map(|(name, loaded)| {
                let d = config.detectors[&name].clone();
                let scorer = match loaded {
                    Loaded::Model(model) => {
                        let slot = Arc::new(ModelSlot::new(*model));
                        let source = Arc::new(ModelSource {
                            slot: Arc::clone(&slot),
                            path: d.model.clone().unwrap_or_default(),
                        });
                        DetectorScorer::Model { slot, source }
                    }
                    Loaded::Rules(rules) => DetectorScorer::Rules(Arc::new(rules)),
                };
                Arc::new(Detector {
                    subscription: Subscription {
                        topic: d.input_topic.clone(),
                        group: d.group(&config.kafka.group_id, &name),
                    },
                    name,
                    config: d,
                    scorer,
                    metrics: Arc::new(Metrics::default()),
                    assignment: Arc::new(Assignment::default()),
                    lag_probe: Arc::new(Mutex::new(None)),
                    lag_cache: Mutex::new(Vec::new()),
                    topic_missing: AtomicBool::new(false),
                    orphan_watch: Mutex::new(OrphanWatch::default()),
                    orphans: Mutex::new(Vec::new()),
                })
            })
            .collect();
        if !config.stages.is_empty() {
            let (stages, p) = (config.stages.clone(), producer.clone());
            tokio::task::spawn_blocking(move || crate::stages::build::check_partials(&stages, &p))
                .await
                .unwrap_or(Ok(()))?;
        }
        let mut stages = Vec::new();
        for (name, c) in &config.stages {
            let metrics = Arc::new(StageMetrics::default());
            let built = crate::stages::build::build(name, c, &config.kafka, &producer, &metrics)?;
            stages.push(RunningStage {
                name: name.clone(),
                config: c.clone(),
                metrics,
                tasks: built
                    .tasks
                    .into_iter()
                    .map(|t| (t, Arc::new(Assignment::default())))
                    .collect(),
                partitions: built.partitions,
                lag_probes: Arc::new(Mutex::new(Vec::new())),
                lag: Mutex::new(Vec::new()),
            });
        }
        let daemon = Arc::new(Self {
            config: Arc::new(config),
            supervisor: Supervisor::new(policy),
            metrics: Arc::new(Metrics::default()),
            slack_metrics: Arc::new(SlackMetrics::default()),
            store_metrics: Arc::new(StoreMetrics::default()),
            detectors,
            stages,
            started: Instant::now(),
            link,
            orphan_after,
            reloading: tokio::sync::Mutex::new(()),
        });
        daemon
            .spawn_tasks(producer, generator_producer, listener)
            .await;
        if let Some((listener, token)) = web {
            daemon.spawn_web(listener, token).await;
        }
        Ok(daemon)
    }

    async fn spawn_tasks(
        self: &Arc<Self>,
        producer: FutureProducer,
        generator_producer: Option<FutureProducer>,
        listener: Arc<UnixListener>,
    ) {
        let config = &self.config;
        {
            let daemon = Arc::clone(self);
            self.supervisor
                .spawn("control", move |status, shutdown| {
                    let (daemon, listener) = (Arc::clone(&daemon), Arc::clone(&listener));
                    async move {
                        server::serve(listener, daemon, status, shutdown)
                            .await
                            .map_err(TaskError::from)
                    }
                })
                .await;
        }

        if let Some(generator_producer) = generator_producer {
            let generator = Arc::new(Generator::new(
                config.generator.clone(),
                generator_producer,
                Arc::clone(&self.metrics),
                config.kafka.brokers.clone(),
            ));
            self.supervisor
                .spawn("generator", move |status, shutdown| {
                    let generator = Arc::clone(&generator);
                    async move {
                        generator
                            .run(&status, shutdown)
                            .await
                            .map_err(TaskError::from)
                    }
                })
                .await;
        }

        if config.slack.mode != SlackMode::Off {
            // The notifier reads every detector's output topic, each once: detectors whose
            // schemas match may share one.
            let mut topics: Vec<String> = self
                .detectors
                .iter()
                .map(|d| d.config.output_topic.clone())
                .collect();
            topics.sort();
            topics.dedup();
            if !topics.is_empty() {
                let config = Arc::clone(&self.config);
                let metrics = Arc::clone(&self.slack_metrics);
                self.supervisor
                    .spawn("notifier", move |status, shutdown| {
                        let (config, metrics, topics) =
                            (Arc::clone(&config), Arc::clone(&metrics), topics.clone());
                        async move {
                            slack::run(
                                &config.slack,
                                &config.kafka,
                                &topics,
                                &metrics,
                                || status.heartbeat(),
                                shutdown,
                            )
                            .await
                            .map_err(TaskError::from)
                        }
                    })
                    .await;
            }
        }

        if let Some(store_config) = &config.store {
            // `[store] topics`, else every detector's output topic, each once.
            let mut topics: Vec<String> = if store_config.topics.is_empty() {
                self.detectors
                    .iter()
                    .map(|d| d.config.output_topic.clone())
                    .collect()
            } else {
                store_config.topics.clone()
            };
            topics.sort();
            topics.dedup();
            if !topics.is_empty() {
                let config = Arc::clone(&self.config);
                let metrics = Arc::clone(&self.store_metrics);
                self.supervisor
                    .spawn("store", move |status, shutdown| {
                        let (config, metrics, topics) =
                            (Arc::clone(&config), Arc::clone(&metrics), topics.clone());
                        async move {
                            let Some(store_config) = &config.store else {
                                return Ok(());
                            };
                            store::run(
                                store_config,
                                &config.kafka,
                                &topics,
                                &metrics,
                                || status.heartbeat(),
                                shutdown,
                            )
                            .await
                            .map_err(TaskError::from)
                        }
                    })
                    .await;
            }
        }

        for stage in &self.stages {
            if let Some((topic, count)) = &stage.partitions {
                tokio::spawn(crate::stages::build::watch_partitions(
                    producer.clone(),
                    topic.clone(),
                    Arc::clone(count),
                    self.supervisor.shutdown_token(),
                ));
            }
            for (task, assignment) in &stage.tasks {
                let config = Arc::clone(&self.config);
                let (subscription, runner) = (task.subscription.clone(), Arc::clone(&task.runner));
                let (assignment, link) = (Arc::clone(assignment), Arc::clone(&self.link));
                // Task names live as long as the process; made once per stage task.
                let name: &'static str = Box::leak(task.task.clone().into_boxed_str());
                self.supervisor
                    .spawn(name, move |status, shutdown| {
                        let (config, subscription, runner, assignment, link) = (
                            Arc::clone(&config),
                            subscription.clone(),
                            Arc::clone(&runner),
                            Arc::clone(&assignment),
                            Arc::clone(&link),
                        );
                        async move {
                            consumer::run(
                                &config,
                                &subscription,
                                runner,
                                assignment,
                                link,
                                status,
                                shutdown,
                            )
                            .await
                            .map_err(TaskError::from)
                        }
                    })
                    .await;
            }
        }

        let max_message_bytes =
            crate::sinks::message_max_bytes(&crate::kafka::producer_config(&config.kafka));
        for detector in &self.detectors {
            let d = &detector.config;
            let env = Arc::new(WorkerEnv {
                detector: detector.name.clone(),
                producer: producer.clone(),
                scorer: detector.scorer.source(),
                features: d.features.clone(),
                csv: csv_format(d),
                output_topic: d.output_topic.clone(),
                scored_topic: d.scored_topic.clone(),
                dead_letter_topic: d.dead_letter_topic.clone(),
                batch_max: d.batch_max,
                batch_linger: Duration::from_millis(d.batch_linger_ms),
                metrics: Arc::clone(&detector.metrics),
                total: Arc::clone(&self.metrics),
                max_message_bytes,
                split: d.split.clone(),
            });
            let config = Arc::clone(&self.config);
            let detector = Arc::clone(detector);
            let link = Arc::clone(&self.link);
            // Task names live as long as the process; one per detector, made once.
            let name: &'static str = Box::leak(task_name(&detector.name).into_boxed_str());
            self.supervisor
                .spawn(name, move |status, shutdown| {
                    let (config, env, detector, link) = (
                        Arc::clone(&config),
                        Arc::clone(&env),
                        Arc::clone(&detector),
                        Arc::clone(&link),
                    );
                    async move {
                        consumer::run(
                            &config,
                            &detector.subscription,
                            env,
                            Arc::clone(&detector.assignment),
                            link,
                            status,
                            shutdown,
                        )
                        .await
                        .map_err(TaskError::from)
                    }
                })
                .await;
        }
    }

    /// Starts the web view (`[web] listen`) as the supervised task `web`.
    async fn spawn_web(
        self: &Arc<Self>,
        listener: Arc<std::net::TcpListener>,
        token: Option<crate::web::Token>,
    ) {
        let Some(store) = self.config.store.clone() else {
            return;
        };
        let view = Arc::new(crate::web::View::new(
            store,
            self.config.detectors.keys().cloned().collect(),
            Some(Arc::clone(&self.metrics)),
            self.config.web.refresh_s,
        ));
        let router = crate::web::router(view, token);
        self.supervisor
            .spawn("web", move |status, shutdown| {
                let (listener, router) = (Arc::clone(&listener), router.clone());
                async move {
                    crate::web::run(&listener, router, || status.heartbeat(), shutdown)
                        .await
                        .map_err(TaskError::from)
                }
            })
            .await;
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters over every detector (and the generator's).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Every detector, in name order.
    pub fn detectors(&self) -> &[Arc<Detector>] {
        &self.detectors
    }

    /// The detector called `name`.
    pub fn detector(&self, name: &str) -> Option<&Arc<Detector>> {
        self.detectors.iter().find(|d| d.name == name)
    }

    pub fn slack_metrics(&self) -> &Arc<SlackMetrics> {
        &self.slack_metrics
    }

    /// The anomaly store's counters (zero without `[store]`).
    pub fn store_metrics(&self) -> &Arc<StoreMetrics> {
        &self.store_metrics
    }

    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// Re-reads every detector's model file; each is validated on its own, so a refused file
    /// leaves only its detector on its old model. Tells systemd RELOADING, then READY. The
    /// report lists every detector's result.
    pub async fn reload(&self) -> ReloadReport {
        let _one_at_a_time = self.reloading.lock().await;
        notify::reloading();
        let mut detectors = Vec::with_capacity(self.detectors.len());
        for d in &self.detectors {
            let d = Arc::clone(d);
            let name = d.name.clone();
            let path = d
                .config
                .model
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            detectors.push(
                tokio::task::spawn_blocking(move || d.reload_blocking())
                    .await
                    .unwrap_or_else(|e| DetectorReload {
                        detector: name,
                        path,
                        model: None,
                        error: Some(format!("reload task failed: {e}")),
                    }),
            );
        }
        notify::ready(&self.status_line());
        ReloadReport { detectors }
    }

    /// Why the daemon cannot do its job right now; empty when it can.
    pub fn not_ready(&self) -> Vec<String> {
        self.judge(&self.hung_tasks()).0.not_ready
    }

    /// Readiness and warnings: each detector's broker, assignment and orphaned partitions
    /// (see [`liveness`]), then critical tasks failing or hung. Also each detector's own.
    fn judge(&self, hung: &[&'static str]) -> (Judgement, Vec<Judgement>) {
        let now = Instant::now();
        let mut all = Judgement::default();
        let mut each = Vec::with_capacity(self.detectors.len());
        let reports = self.supervisor.reports();
        for d in &self.detectors {
            let mut j = d.judge(&self.link, now);
            let task = task_name(&d.name);
            for t in reports.iter().filter(|t| t.name == task) {
                if t.state == TaskState::Backoff {
                    let why = t.last_error.clone().unwrap_or_default();
                    j.not_ready.push(format!("task {} failing: {why}", t.name));
                }
            }
            for name in hung.iter().filter(|n| **n == task) {
                j.not_ready.push(format!("task {name} hung (no heartbeat)"));
            }
            all.not_ready.extend(j.not_ready.iter().cloned());
            all.warnings.extend(j.warnings.iter().cloned());
            each.push(j);
        }
        for t in &reports {
            if CRITICAL_TASKS.contains(&t.name) && t.state == TaskState::Backoff {
                let why = t.last_error.clone().unwrap_or_default();
                all.not_ready
                    .push(format!("task {} failing: {why}", t.name));
            }
        }
        for name in hung.iter().filter(|n| !n.starts_with("detector:")) {
            all.not_ready
                .push(format!("task {name} hung (no heartbeat)"));
        }
        (all, each)
    }

    /// Running tasks that have not beaten within `heartbeat_timeout_s`.
    pub fn hung_tasks(&self) -> Vec<&'static str> {
        self.supervisor.hung(Duration::from_secs(
            self.config.supervisor.heartbeat_timeout_s,
        ))
    }

    /// The `/status` document, from memory: lag comes from the last [`Daemon::refresh_lag`].
    pub fn status(&self) -> Status {
        let hung = self.hung_tasks();
        let (
            Judgement {
                not_ready,
                warnings,
            },
            each,
        ) = self.judge(&hung);
        let detectors: Vec<DetectorStatus> = self
            .detectors
            .iter()
            .zip(each)
            .map(|(d, j)| d.status(j))
            .collect();
        let tasks = self.supervisor.reports();
        let refused = detectors
            .iter()
            .any(|d| d.model.history.last_error.is_some());
        Status {
            version: env!("CARGO_PKG_VERSION"),
            uptime_s: self.started.elapsed().as_secs(),
            ready: not_ready.is_empty(),
            not_ready,
            // A refused reload is degraded too: the operator's new model is not serving.
            degraded: tasks.iter().any(|t| t.degraded)
                || !hung.is_empty()
                || refused
                || self.slack_metrics.is_failing()
                || self
                    .store_metrics
                    .failing
                    .load(std::sync::atomic::Ordering::Relaxed)
                || !warnings.is_empty(),
            warnings,
            tasks,
            lag: detectors.iter().map(|d| d.lag).sum::<i64>()
                + self
                    .stages
                    .iter()
                    .flat_map(|s| s.lag.lock().unwrap_or_else(|p| p.into_inner()).clone())
                    .filter_map(|p| p.lag)
                    .sum::<i64>(),
            detectors,
            stages: self.stages.iter().map(RunningStage::status).collect(),
            counters: self.metrics.snapshot(),
            slack: (self.config.slack.mode != SlackMode::Off)
                .then(|| self.slack_metrics.snapshot()),
            store: self.config.store.as_ref().map(|c| StoreStatus {
                backend: c.backend,
                path: c.location(),
                group_id: c.group_id(&self.config.kafka.group_id),
                retain_days: c.retain_days,
                counters: self.store_metrics.snapshot(),
            }),
        }
    }

    /// Refreshes every detector's lag and orphan watch from the broker (see
    /// [`liveness`]): an answer tells that the broker is reachable, the assigned partitions'
    /// lag is kept for `/status` and `/metrics`, and the others feed the orphan watch. The
    /// control server calls it every few seconds, so that `/status` and `/metrics` answer at
    /// once.
    pub async fn refresh_lag(&self) {
        for d in &self.detectors {
            d.refresh_lag(&self.config.kafka, &self.link, self.orphan_after)
                .await;
        }
        for s in &self.stages {
            s.refresh_lag(&self.config.kafka).await;
        }
    }

    /// A short line for systemd's STATUS=.
    fn status_line(&self) -> String {
        let models: Vec<String> = self
            .detectors
            .iter()
            .map(|d| format!("{} {}", d.name, d.scorer.current().identity().id))
            .collect();
        let partitions: usize = self
            .detectors
            .iter()
            .map(|d| d.assignment.partitions().len())
            .sum();
        format!(
            "models {}; {partitions} partitions; {} records scored",
            models.join(", "),
            self.metrics.records_in.load(Relaxed)
        )
    }

    /// Whether every detector's consumer has joined its group.
    fn all_joined(&self) -> bool {
        self.detectors
            .iter()
            .all(|d| d.assignment.generations.load(Relaxed) > 0)
            && self
                .stages
                .iter()
                .all(|s| s.tasks.iter().all(|(_, a)| a.generations.load(Relaxed) > 0))
    }

    /// Stops taking records, lets every worker finish its batch and commit, leaves the
    /// consumer group and removes the control socket, within `grace`.
    pub async fn stop(&self, grace: Duration) -> Result<(), DaemonError> {
        tracing::info!(grace = ?grace, "stopping");
        let still = self.supervisor.shutdown(grace).await;
        let _ = std::fs::remove_file(&self.config.control.socket);
        self.log_summary();
        if still.is_empty() {
            tracing::info!("stopped cleanly");
            Ok(())
        } else {
            Err(DaemonError::Grace(still))
        }
    }

    /// One line an operator (or the demo) reads at exit: counts, the shares of anomalies and
    /// dead letters among the records scored, and rates, all as plain numbers.
    fn log_summary(&self) {
        let m = self.metrics.snapshot();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let dead: u64 = m.dead_letters.values().sum();
        let share = |n: u64| round_to(n as f64 / m.records_in.max(1) as f64, 4);
        tracing::info!(
            records_scored = m.records_in,
            anomalies = m.anomalies_out,
            anomaly_share = share(m.anomalies_out),
            dead_letters = dead,
            dead_letter_share = share(dead),
            generated = m.generated,
            generated_outliers = m.generated_outliers,
            uptime_s = round_to(secs, 1),
            records_per_s = round_to(m.records_in as f64 / secs, 1),
            "summary"
        );
        for stage in &self.stages {
            let c = stage.metrics.snapshot();
            tracing::info!(
                stage = stage.name,
                records = c.records_in,
                emitted = c.emitted,
                invalid = c.invalid,
                late = c.late,
                dead_letters = c.dead_letters,
                open = c.open,
                "stage summary"
            );
        }
    }
}

impl Control for Daemon {
    fn not_ready(&self) -> Vec<String> {
        Daemon::not_ready(self)
    }

    fn status(&self) -> Status {
        Daemon::status(self)
    }

    async fn reload(&self) -> ReloadReport {
        Daemon::reload(self).await
    }

    async fn refresh_lag(&self) {
        Daemon::refresh_lag(self).await
    }
}

/// `x` rounded to `decimals` places, for log fields people read.
fn round_to(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// Runs the daemon until SIGTERM/SIGINT (or the end of `signals`), reloading on SIGHUP.
pub async fn run(config: Config, mut signals: Signals) -> Result<(), DaemonError> {
    let grace = Duration::from_secs(config.supervisor.shutdown_grace_s);
    let daemon = Daemon::start(config).await?;

    // READY=1 once every detector's consumer has joined its group (socket and model are ready already);
    // from then on, feed the watchdog while no task is hung.
    let lifecycle = {
        let daemon = Arc::clone(&daemon);
        tokio::spawn(async move {
            while !daemon.all_joined() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tracing::info!("ready");
            notify::ready(&daemon.status_line());
            let Some(every) = notify::watchdog_interval() else {
                return;
            };
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let hung = daemon.hung_tasks();
                if hung.is_empty() {
                    notify::watchdog();
                } else {
                    tracing::error!(tasks = ?hung, "tasks hung: not feeding the systemd watchdog");
                }
            }
        })
    };

    // SIGTERM/SIGINT, or the end of the signal stream, ends the loop.
    let first = loop {
        match signals.recv().await {
            Some(Signal::Reload) => {
                let _ = daemon.reload().await;
            }
            other => break other,
        }
    };
    lifecycle.abort();
    notify::stopping();
    if let Some(signal) = first {
        tracing::info!(%signal, "stopping; a second SIGINT or SIGTERM stops at once");
    }
    // A second SIGINT/SIGTERM during the grace period ends the wait: the operator has seen
    // enough. What was still running is named, as the tasks are abandoned mid-work.
    let stop = daemon.stop(grace);
    tokio::pin!(stop);
    tokio::select! {
        result = &mut stop => result,
        Some(signal) = signals.next_stop() => {
            let still_running = daemon.supervisor.running();
            tracing::warn!(%signal, still_running = ?still_running, "second signal during shutdown: stopping at once");
            let _ = std::fs::remove_file(&daemon.config.control.socket);
            daemon.log_summary();
            Err(DaemonError::Interrupted { signal, still_running })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offline::train::{TrainOptions, train};
    use FeatureMatch::{ByName, ByPosition};

    fn pointers(p: &[&str]) -> FeatureSpec {
        FeatureSpec::Pointers(p.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn features_must_match_the_model_in_count_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.iforest");
        train(&TrainOptions {
            trees: Some(5),
            ..TrainOptions::synthetic(42, path.clone())
        })
        .unwrap();
        let model = Model::load(&path).unwrap();
        assert_eq!(model.feature_names(), ["x0", "x1"]);

        // A field's arrays name nothing: checked per record.
        assert!(check_features("tx", &FeatureSpec::Field("data".into()), ByName, &model).is_ok());
        assert!(check_features("tx", &pointers(&["/x0", "/x1"]), ByName, &model).is_ok());
        // The last reference token counts, unescaped; the empty pointer matches anything.
        assert!(check_features("tx", &pointers(&["/point/x0", "/x1"]), ByName, &model).is_ok());
        assert!(check_features("tx", &pointers(&["", "/x1"]), ByName, &model).is_ok());

        let count =
            check_features("tx", &pointers(&["/a", "/b", "/c"]), ByName, &model).unwrap_err();
        let msg = count.to_string();
        assert!(
            msg.starts_with("detectors.tx.features: 3 JSON pointers (/a, /b, /c) but the model")
                && msg.contains("m.iforest")
                && msg.ends_with("has 2 features (x0, x1)"),
            "{msg}"
        );
        let swapped = check_features("tx", &pointers(&["/x1", "/x0"]), ByName, &model)
            .unwrap_err()
            .to_string();
        assert!(
            swapped.contains("pointer 1 (/x1) reads `x1` where the model expects `x0`")
                && swapped.contains("pointer 2 (/x0) reads `x0` where the model expects `x1`"),
            "{swapped}"
        );
        let escaped = check_features("tx", &pointers(&["/a~1x0", "/x1"]), ByName, &model)
            .unwrap_err()
            .to_string();
        assert!(escaped.contains("reads `a/x0`"), "{escaped}");
        assert!(
            escaped.contains("train the model on these fields")
                && escaped.contains("match_features = \"by_position\""),
            "{escaped}"
        );
        // Swapped: the fitting order is suggested.
        assert!(
            swapped.contains("the model's order: features = [\"/x0\", \"/x1\"]"),
            "{swapped}"
        );
        // By position, when the user says so: only the count counts.
        assert!(check_features("tx", &pointers(&["/x1", "/x0"]), ByPosition, &model).is_ok());
        assert!(check_features("tx", &pointers(&["/a", "/b"]), ByPosition, &model).is_ok());
        assert!(check_features("tx", &pointers(&["/a"]), ByPosition, &model).is_err());
        assert!(
            check_features("tx", &FeatureSpec::Field("data".into()), ByPosition, &model).is_ok()
        );

        assert_eq!(
            DaemonError::from(count).exit_code(),
            exit::CONFIG,
            "a model that does not fit is a configuration error"
        );
    }

    #[test]
    fn model_problems_have_their_exit_codes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.iforest");
        let detector = DetectorConfig {
            model: Some(path.clone()),
            ..DetectorConfig::default()
        };
        let missing = load_model("tx", &detector).unwrap_err();
        assert_eq!(missing.exit_code(), exit::NO_INPUT, "{missing}");
        assert!(
            missing.to_string().starts_with("detector tx: "),
            "{missing}"
        );
        std::fs::write(&path, b"not a model").unwrap();
        let damaged = load_model("tx", &detector).unwrap_err();
        assert_eq!(damaged.exit_code(), exit::DATA_ERR, "{damaged}");
        let interrupted = DaemonError::Interrupted {
            signal: Signal::Interrupt,
            still_running: vec!["generator", "detector:tx"],
        };
        assert_eq!(interrupted.exit_code(), 130);
        assert_eq!(
            interrupted.to_string(),
            "second SIGINT during shutdown: stopped at once; still running: generator, detector:tx"
        );
    }
}
