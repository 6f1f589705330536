//! The daemon's one configuration: `anomalyd.toml`, overridden by `ANOMALYD_<SECTION>__<KEY>`.
//!
//! Every section is a plain struct with `deny_unknown_fields`, so a misspelled key is an error
//! rather than a silently ignored setting. [`load`] reads the file, merges the environment and
//! runs the semantic checks in [`Config::validate`]; every error it reports names where the
//! offending value came from (file, line and column, or the environment variable) and its key.

mod librdkafka;
mod load;
mod rule;
pub mod stages;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::detect::split::SplitConfig;
use crate::source::generator::replay::{ColumnRef, HeaderMode, Pace};
pub use librdkafka::property_problem;
pub use load::{
    CONFIG_VAR, ConfigError, ConfigErrors, DEFAULT_PATH, ENV_PREFIX, LOCAL_NAME, Located, NO_FILE,
    Origin, Rule, defaults_with_env, load, load_located, load_located_for_tools, load_with_env,
    locate, origin_of, resolve, shorten,
};
pub use rule::RuleSpec;
pub use stages::{StageConfig, StageKind, TimeMode};

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    /// `[detectors.NAME]`: every detector, by name (`[a-z0-9_-]`, at most 64 characters).
    /// At least one is needed to `run`; none is the built-in default.
    pub detectors: BTreeMap<String, DetectorConfig>,
    /// The single `[detector]` section of earlier versions: refused by [`Config::validate`]
    /// with the way to convert it (kept as a field so the message can be precise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detector: Option<serde_json::Value>,
    /// The single `[model]` section of earlier versions: refused likewise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<serde_json::Value>,
    /// `[stages.NAME]`: stateful stages (invoice session windows, cancellation counts in
    /// hopping windows), each with its own consumer group. Default: none.
    pub stages: BTreeMap<String, StageConfig>,
    pub generator: GeneratorConfig,
    pub slack: SlackConfig,
    /// `[store]`: the anomaly store (`anomalyd query`); absent = nothing stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<crate::sinks::store::StoreConfig>,
    /// `[web]`: the web view (off unless `listen` is set).
    pub web: crate::web::WebConfig,
    pub control: ControlConfig,
    pub supervisor: SupervisorConfig,
    pub log: LogConfig,
}

/// `[kafka]`: how to reach the cluster and which consumer group to join.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` bootstrap list.
    pub brokers: String,
    /// Consumer group shared by every anomalyd instance that splits the same input.
    pub group_id: String,
    /// Extra librdkafka properties, passed through unchanged (e.g. security settings).
    pub properties: BTreeMap<String, PropertyValue>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: "anomalyd".into(),
            properties: BTreeMap::new(),
        }
    }
}

/// librdkafka takes every property as a string; TOML users naturally write numbers and
/// booleans, so all three are accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PropertyValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
}

impl fmt::Display for PropertyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::String(s) => f.write_str(s),
        }
    }
}

impl PropertyValue {
    /// The value as librdkafka's parse is checked against it: as [`Display`](fmt::Display),
    /// except that a float keeps its fraction or exponent (`2.0`, `-1e308`), so that a TOML
    /// float given for an integer property is refused rather than passed as `2`.
    pub fn as_checked(&self) -> String {
        match self {
            Self::Float(x) => format!("{x:?}"),
            other => other.to_string(),
        }
    }
}

/// Properties whose values anomalyd's delivery guarantees depend on: overriding them from the
/// config would silently break at-least-once processing, so they are refused.
pub const MANAGED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "transactional.id",
    "isolation.level",
];

/// `[detectors.NAME]`: one detector: where its records come from, how they are read and
/// scored, where its results go, and how they are batched. Every detector has its own
/// consumer group and its own partition workers, so two detectors on one topic each see
/// every record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Topic of the records to score. Required.
    pub input_topic: String,
    /// How a record is read: `"json"` (one JSON value per Kafka record) or `"csv"` (one CSV
    /// line per Kafka record, its cells named by `columns`).
    pub format: RecordFormat,
    /// `format = "csv"` only, and required there: the name of each CSV column, in order
    /// (unique, non-empty). Features and rules name these columns.
    pub columns: Option<Vec<String>>,
    /// Either the name of a field holding `[x, y, ...]` (or `[[x, y, ...]]`), or a list of JSON
    /// pointers, one per feature.
    pub features: FeatureSpec,
    /// How JSON pointers are matched to the model's features: by name (the default), or by
    /// position when the user says so.
    pub match_features: FeatureMatch,
    /// Which scorer: inferred from the scorer's own key when left out (`model` gives
    /// [`ScorerKind::Model`]); when given, it must agree with that key.
    pub scorer: Option<ScorerKind>,
    /// The model file (any kind the file's header names). Relative paths are resolved
    /// against the working directory.
    pub model: Option<PathBuf>,
    /// `[detectors.NAME.rules]`: named CEL expressions over the record's fields
    /// (`hot = "temperature > 40.0"`), the scorer of a detector without a model. A record is
    /// anomalous when any rule is true; anomalies list the rules that fired in name order.
    /// A rule may be a table with a `for`: `hot = { expr = "temperature > 40.0", for = 3 }`
    /// fires only from the 3rd consecutive matching reading of a key on ([`RuleSpec`]).
    pub rules: Option<BTreeMap<String, RuleSpec>>,
    /// Topic the anomalies are published to. Required.
    pub output_topic: String,
    /// `scored_topic = "sensor-readings"`: also publish every scored record, anomaly or not,
    /// to this topic, shaped as an anomaly with `"anomaly": true|false` in its `anomalyd`
    /// member (see [`crate::sinks::anomalies`]). Must differ from the detector's other topics.
    /// `None` (the default): anomalies only.
    pub scored_topic: Option<String>,
    /// Topic for records that cannot be scored. Required.
    pub dead_letter_topic: String,
    /// Most records scored in one batch.
    pub batch_max: usize,
    /// Longest a worker waits to fill a batch before scoring what it has.
    pub batch_linger_ms: u64,
    /// Seconds this detector may hold no partition (after it first joined its group) before
    /// health says so: CRITICAL if partitions look orphaned, else WARNING.
    pub assignment_grace_s: u64,
    /// Consumer group; default `<kafka.group_id>-<NAME>`.
    pub group_id: Option<String>,
    /// `split = { variant = "A", from = 0.0, to = 0.5 }`: an A/B split. The detector scores
    /// only the records whose key hashes into `[from, to)` (see [`crate::detect::split`]) and
    /// names `variant` in every output; the others are skipped and their offsets committed.
    /// Detectors splitting one input topic must not overlap. Without it, every record.
    pub split: Option<SplitConfig>,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            input_topic: String::new(),
            format: RecordFormat::Json,
            columns: None,
            features: FeatureSpec::Field("data".into()),
            match_features: FeatureMatch::ByName,
            scorer: None,
            model: None,
            rules: None,
            output_topic: String::new(),
            scored_topic: None,
            dead_letter_topic: String::new(),
            batch_max: 500,
            batch_linger_ms: 5,
            assignment_grace_s: 20,
            group_id: None,
            split: None,
        }
    }
}

impl DetectorConfig {
    /// The scorer this detector uses: the explicit `scorer`, else the one whose key is set.
    /// `None` when neither says (a configuration error that [`Config::validate`] reports).
    pub fn scorer_kind(&self) -> Option<ScorerKind> {
        self.scorer.or(match (&self.model, &self.rules) {
            (Some(_), _) => Some(ScorerKind::Model),
            (None, Some(_)) => Some(ScorerKind::Rules),
            (None, None) => None,
        })
    }

    /// The consumer group: `group_id`, else `<kafka_group>-<name>`.
    pub fn group(&self, kafka_group: &str, name: &str) -> String {
        self.group_id
            .clone()
            .unwrap_or_else(|| format!("{kafka_group}-{name}"))
    }

    /// What the records on `output_topic` look like, for the check that detectors sharing an
    /// output topic agree: the scorer kind and the features. Two detectors with the same
    /// schema write anomalies that a reader can take alike; the model files may differ (an
    /// A/B comparison keeps one topic and tells the anomalies apart by `detector`).
    fn schema(
        &self,
    ) -> (
        Option<ScorerKind>,
        RecordFormat,
        Option<&[String]>,
        &FeatureSpec,
    ) {
        // A CSV line's anomaly holds its cells by column: other columns, another schema.
        (
            self.scorer_kind(),
            self.format,
            self.columns.as_deref(),
            &self.features,
        )
    }
}

/// `[detectors.NAME] format`: how a Kafka record's value is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordFormat {
    /// One JSON value per record; features are found by `features`.
    #[default]
    Json,
    /// One CSV line per record (RFC 4180, no header line), its cells named by `columns`;
    /// `features` name columns. See [`crate::detect::csv_record`].
    Csv,
}

/// `[detectors.NAME] scorer`: what scores the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScorerKind {
    /// A model file (`model = "path"`); its header names its kind.
    Model,
    /// Named CEL rules (`[detectors.NAME.rules]`).
    Rules,
}

impl fmt::Display for ScorerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Model => "model",
            Self::Rules => "rules",
        })
    }
}

/// Longest detector name: it becomes part of a consumer group, a metric label and a key.
pub const MAX_DETECTOR_NAME: usize = 64;

/// Why `name` cannot name a detector: names are 1..=64 characters of `[a-z0-9_-]`, so that
/// the environment override `ANOMALYD_DETECTORS__<NAME>__<KEY>` (lower-cased by the loader)
/// finds it, and it is safe in a metric label and a group id.
pub fn detector_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a detector name must not be empty".into());
    }
    if name.len() > MAX_DETECTOR_NAME {
        return Some(format!(
            "a detector name is at most {MAX_DETECTOR_NAME} characters"
        ));
    }
    name.chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-')))
        .map(|c| {
            format!(
                "detector name {name:?} has {c:?}; names use only a-z, 0-9, '_' and '-' (so that \
                 ANOMALYD_DETECTORS__<NAME>__<KEY> can reach it)"
            )
        })
}

/// How feature values are found in a record: in a JSON record, a field or JSON pointers; in a
/// CSV line (`format = "csv"`), a list of column names ([`FeatureSpec::Pointers`] holds them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FeatureSpec {
    /// A field holding a flat `[x, y]` or nested `[[x, y]]` array of numbers.
    Field(String),
    /// JSON pointers (RFC 6901), one per feature, e.g. `["/temperature", "/pressure"]`; for
    /// CSV, column names, e.g. `["Quantity", "UnitPrice"]`.
    Pointers(Vec<String>),
}

/// `[detectors.NAME] match_features`: how `features` (JSON pointers) are matched to the features
/// the model was trained on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureMatch {
    /// Each pointer's last reference token must be the model's feature name at the same
    /// place: names that differ, or the same names in another order, are a configuration error.
    #[default]
    ByName,
    /// Pointer `i` feeds the model's feature `i`, whatever the names; only the count is
    /// checked. For models whose column names differ from the record's field names.
    ByPosition,
}

/// `[generator]`: records for demos and load tests: synthetic transactions (`profile =
/// "transactions"`), a CSV file's lines (`profile = "replay"`,
/// [`crate::source::generator::replay`]) or sensor readings with injected faults (`profile =
/// "sensors"`, [`crate::source::generator::sensors`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorConfig {
    pub enabled: bool,
    /// What to write.
    pub profile: GeneratorProfile,
    pub topic: String,
    /// Records per second (transactions; sensors, over all sensors); 0 means as fast as the
    /// broker takes them.
    pub rate: f64,
    /// Records to write before stopping; 0 means forever (transactions, sensors) or to the end
    /// of the file (replay).
    pub count: u64,
    /// replay: the CSV file whose lines are written, one record per line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// replay: the cell that keys each line, by name or 1-based position.
    pub key_column: ColumnRef,
    /// replay: column names for columns given by name; none: the header's, else the Online
    /// Retail columns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// replay: whether the first line is a header (`"auto"`: its first cell is the first
    /// column name).
    pub header: HeaderMode,
    /// replay: `"original"` (5-9 ms a line), `"max"`, or `"speedup:N"` over `time_column`.
    pub pace: Pace,
    /// replay: the cell whose `M/D/YYYY H:MM` times `speedup:N` follows.
    pub time_column: ColumnRef,
    /// replay: the first data line to write (1-based; a header is not counted).
    pub from_line: u64,
    /// Share of records drawn uniformly from [-4, 4]^2 instead of from the two blobs.
    pub outlier_probability: f64,
    /// Seed of the random stream, so a run can be reproduced.
    pub seed: u64,
    /// Add `"outlier": true|false` to each record (whether it was drawn as an outlier), so
    /// precision and recall can be computed from the stream.
    pub label_outliers: bool,
    /// sensors: how many sensors take turns, 1..=1,000,000.
    pub sensors: u64,
    /// sensors: share of readings that are injected faults (spikes, drifts, stuck sensors), in
    /// [0, [`crate::source::generator::sensors::MAX_FAULT_SHARE`]].
    pub fault_share: f64,
    /// sensors: add `"fault": "spike"|"drift"|"stuck"|null` to each reading.
    pub label_faults: bool,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            profile: GeneratorProfile::Transactions,
            topic: "transactions".into(),
            rate: 100.0,
            count: 0,
            file: None,
            key_column: ColumnRef::Name("InvoiceNo".into()),
            columns: None,
            header: HeaderMode::Auto,
            pace: Pace::Original,
            time_column: ColumnRef::Name("InvoiceDate".into()),
            from_line: 1,
            outlier_probability: 0.2,
            seed: 42,
            label_outliers: false,
            sensors: 10,
            fault_share: 0.01,
            label_faults: false,
        }
    }
}

/// `[generator] profile`: what the generator writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GeneratorProfile {
    /// Synthetic two-blob transactions at `rate`.
    #[default]
    Transactions,
    /// The lines of `file`, in order, keyed by `key_column`, at `pace`.
    Replay,
    /// Readings of `sensors` sensors with a `fault_share` of injected faults, keyed by sensor id,
    /// at `rate` ([`crate::source::generator::sensors`]).
    Sensors,
}

/// `[slack]`: where alerts go, how they are grouped and how fast they may be sent.
///
/// The secrets (bot token, webhook URL) are never read from this file: they come from the
/// environment or from the files named here, so the TOML can be shared and versioned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlackConfig {
    pub mode: SlackMode,
    /// Channel for `bot` mode (`#name` or a channel id).
    pub channel: String,
    /// Slack Web API base URL for `bot` mode; another value points at a proxy or a test server.
    pub api_base: String,
    /// File holding the bot token; without it the token comes from `SLACK_API_TOKEN`.
    pub token_file: Option<PathBuf>,
    /// File holding the incoming-webhook URL; without it the URL comes from `SLACK_WEBHOOK_URL`.
    pub webhook_url_file: Option<PathBuf>,
    /// Consumer group of the notifier; default `<kafka.group_id>-notifier`.
    pub group_id: Option<String>,
    /// How long a new group of anomalies gathers before its first alert.
    pub group_wait_s: u64,
    /// Least time between two alerts of the same group.
    pub group_interval_s: u64,
    /// Anomalies shown in one alert, the most anomalous (lowest score) first.
    pub top_n: usize,
    /// Least time between two messages to the channel (Slack allows about one a second).
    pub min_interval_ms: u64,
    /// Longest one HTTP request to Slack may take before it is retried.
    pub request_timeout_s: u64,
}

impl Default for SlackConfig {
    fn default() -> Self {
        Self {
            mode: SlackMode::Off,
            channel: "#anomalies".into(),
            api_base: "https://slack.com/api".into(),
            token_file: None,
            webhook_url_file: None,
            group_id: None,
            group_wait_s: 30,
            group_interval_s: 300,
            top_n: 5,
            min_interval_ms: 1000,
            request_timeout_s: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlackMode {
    /// No alerts.
    Off,
    /// Alerts are written to the log instead of Slack.
    Log,
    /// `chat.postMessage` with a bot token.
    Bot,
    /// An incoming-webhook URL.
    Webhook,
}

/// `[control]`: the local control socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    pub socket: PathBuf,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            socket: default_socket_path(),
        }
    }
}

/// Longest Unix socket path `bind` takes on Linux: `sun_path` is 108 bytes, including the
/// terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// systemd's `RuntimeDirectory=` exports `$RUNTIME_DIRECTORY`; outside systemd the
/// conventional `/run/anomalyd` is used.
pub fn default_socket_path() -> PathBuf {
    match std::env::var_os("RUNTIME_DIRECTORY") {
        // systemd may pass several colon-separated directories; the first is ours.
        Some(dirs) if !dirs.is_empty() => {
            let dirs = dirs.to_string_lossy();
            let first = dirs.split(':').next().unwrap_or_default();
            PathBuf::from(first).join("anomalyd.sock")
        }
        _ => PathBuf::from("/run/anomalyd/anomalyd.sock"),
    }
}

/// `[supervisor]`: restarts, hang detection and shutdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorConfig {
    /// More restarts of one task than this within `restart_window_s` mark the daemon degraded.
    pub max_restarts: usize,
    pub restart_window_s: u64,
    /// A running task silent for longer than this counts as hung: the systemd watchdog stops
    /// being fed, so systemd restarts the service.
    pub heartbeat_timeout_s: u64,
    /// How long a stop may take to finish in-flight batches and commit; past it the process
    /// exits non-zero, naming what was still running.
    pub shutdown_grace_s: u64,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            restart_window_s: 300,
            heartbeat_timeout_s: 30,
            shutdown_grace_s: 30,
        }
    }
}

/// `[log]`: verbosity and format of the log on stderr.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: `info`, or per target such as `anomalyd=debug,rdkafka=warn`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A semantic problem with one key, found after the file and environment parsed cleanly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Dotted key, e.g. `detectors.transactions.batch_max`.
    pub key: String,
    pub message: String,
}

impl Config {
    /// Checks that need more than types: ranges, non-empty names, consistency between keys.
    /// Returns every problem found, not just the first.
    pub fn validate(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        let mut bad = |key: &str, message: String| {
            out.push(Invalid {
                key: key.into(),
                message,
            })
        };

        if self.kafka.brokers.trim().is_empty() {
            bad("kafka.brokers", "must name at least one host:port".into());
        }
        if self.kafka.group_id.trim().is_empty() {
            bad("kafka.group_id", "must not be empty".into());
        }
        for (name, value) in &self.kafka.properties {
            if MANAGED_PROPERTIES.contains(&name.as_str()) {
                bad(
                    &format!("kafka.properties.{name}"),
                    "is set by anomalyd itself and cannot be overridden (it guards delivery guarantees)"
                        .into(),
                );
            } else if let Some(why) = property_problem(name, &value.as_checked()) {
                bad(&format!("kafka.properties.{name}"), why);
            }
        }

        if self.detector.is_some() {
            bad(
                "detector",
                "the single [detector] section is gone: move its keys to a named detector, \
                 [detectors.<name>] (e.g. [detectors.transactions]), with input_topic, \
                 output_topic and dead_letter_topic written out, and model = \"<the old \
                 [model] path>\" in it"
                    .into(),
            );
        }
        if self.model.is_some() {
            bad(
                "model",
                "the [model] section is gone: write model = \"<path>\" in the \
                 [detectors.<name>] table that scores with it"
                    .into(),
            );
        }
        if self.detectors.is_empty() && self.detector.is_none() && self.stages.is_empty() {
            bad(
                NO_DETECTOR_KEY,
                "no detector: add a [detectors.<name>] table with input_topic, output_topic, \
                 dead_letter_topic, features and model"
                    .into(),
            );
        }
        for (name, d) in &self.detectors {
            validate_detector(name, d, &mut bad);
        }
        self.validate_stage_groups_and_loops(&mut bad);
        for (name, stage) in &self.stages {
            if let Some(why) = detector_name_problem(name) {
                bad(&format!("stages.{name}"), why);
            }
            if self.detectors.contains_key(name) {
                bad(
                    &format!("stages.{name}"),
                    "a detector has the same name; names are shared by consumer groups and metrics"
                        .into(),
                );
            }
            for (key, why) in stage.problems() {
                bad(&format!("stages.{name}.{key}"), why);
            }
            for (key, topic) in [
                ("input_topic", Some(&stage.input_topic)),
                ("output_topic", Some(&stage.output_topic)),
                ("late_topic", Some(&stage.late_topic)),
                ("dead_letter_topic", Some(&stage.dead_letter_topic)),
                ("invalid_topic", stage.invalid_topic.as_ref()),
                ("partials_topic", stage.partials_topic.as_ref()),
            ] {
                if let Some(why) = topic
                    .filter(|t| !t.trim().is_empty())
                    .and_then(|t| topic_problem(t))
                {
                    bad(&format!("stages.{name}.{key}"), why);
                }
            }
        }
        self.validate_between_detectors(&mut bad);
        self.validate_splits(&mut bad);

        let g = &self.generator;
        if let Some(why) = topic_problem(&g.topic) {
            bad("generator.topic", why);
        }
        if !g.rate.is_finite() || g.rate < 0.0 {
            bad(
                "generator.rate",
                "must be a finite number >= 0 (0 = unthrottled)".into(),
            );
        }
        if !(0.0..=1.0).contains(&g.outlier_probability) {
            bad(
                "generator.outlier_probability",
                "must be between 0 and 1".into(),
            );
        }
        if !(1..=1_000_000).contains(&g.sensors) {
            bad("generator.sensors", "must be between 1 and 1000000".into());
        }
        let max_share = crate::source::generator::sensors::MAX_FAULT_SHARE;
        if !(0.0..=max_share).contains(&g.fault_share) {
            bad(
                "generator.fault_share",
                format!(
                    "must be between 0 and {max_share:.4} (one fault episode in every {} \
                     readings of a sensor)",
                    crate::source::generator::sensors::BLOCK
                ),
            );
        }
        if g.profile == GeneratorProfile::Replay {
            if g.file.as_ref().is_none_or(|f| f.as_os_str().is_empty()) {
                bad(
                    "generator.file",
                    "profile \"replay\" needs the CSV file whose lines it writes".into(),
                );
            }
            if g.from_line == 0 {
                bad(
                    "generator.from_line",
                    "data lines are numbered from 1".into(),
                );
            }
        }
        if let Some(columns) = &g.columns {
            let mut seen = std::collections::BTreeSet::new();
            if columns.is_empty() || columns.iter().any(|c| c.is_empty() || !seen.insert(c)) {
                bad(
                    "generator.columns",
                    "must list at least one column, each named once and not empty".into(),
                );
            } else {
                for (key, column) in [
                    ("generator.key_column", &g.key_column),
                    ("generator.time_column", &g.time_column),
                ] {
                    if let ColumnRef::Name(name) = column
                        && !columns.contains(name)
                        && (key == "generator.key_column" || matches!(g.pace, Pace::Speedup(_)))
                    {
                        bad(key, format!("{name:?} is not among generator.columns"));
                    }
                }
            }
        }

        let sl = &self.slack;
        if sl.mode == SlackMode::Bot && sl.channel.trim().is_empty() {
            bad("slack.channel", "must name a channel in bot mode".into());
        }
        if sl.mode == SlackMode::Bot
            && !(sl.api_base.starts_with("https://") || sl.api_base.starts_with("http://"))
        {
            bad(
                "slack.api_base",
                "must be an http:// or https:// URL, e.g. \"https://slack.com/api\"".into(),
            );
        }
        for (key, file) in [
            ("slack.token_file", &sl.token_file),
            ("slack.webhook_url_file", &sl.webhook_url_file),
        ] {
            if file.as_ref().is_some_and(|f| f.as_os_str().is_empty()) {
                bad(
                    key,
                    "must not be empty (leave it out to use the environment)".into(),
                );
            }
        }
        if sl.group_id.as_ref().is_some_and(|g| g.trim().is_empty()) {
            bad(
                "slack.group_id",
                "must not be empty (leave it out for <kafka.group_id>-notifier)".into(),
            );
        }
        if sl.group_wait_s > 3600 {
            bad("slack.group_wait_s", "must be <= 3600 (one hour)".into());
        }
        if !(1..=86_400).contains(&sl.group_interval_s) {
            bad(
                "slack.group_interval_s",
                "must be between 1 and 86400 (one day)".into(),
            );
        }
        if !(1..=20).contains(&sl.top_n) {
            bad(
                "slack.top_n",
                "must be between 1 and 20 (Slack allows 50 blocks per message)".into(),
            );
        }
        if !(1000..=60_000).contains(&sl.min_interval_ms) {
            bad(
                "slack.min_interval_ms",
                "must be between 1000 (Slack's one message a second per channel) and 60000".into(),
            );
        }
        if !(1..=300).contains(&sl.request_timeout_s) {
            bad(
                "slack.request_timeout_s",
                "must be between 1 and 300".into(),
            );
        }

        if let Some(store) = &self.store {
            for (key, why) in store.problems() {
                bad(key, why);
            }
        }
        for (key, why) in self.web.problems(self.store.is_some()) {
            bad(key, why);
        }

        let sv = &self.supervisor;
        if sv.restart_window_s == 0 {
            bad("supervisor.restart_window_s", "must be >= 1".into());
        }
        if sv.heartbeat_timeout_s < 2 {
            bad(
                "supervisor.heartbeat_timeout_s",
                "must be >= 2 (tasks beat once a second)".into(),
            );
        }
        if sv.shutdown_grace_s == 0 || sv.shutdown_grace_s > 3600 {
            bad(
                "supervisor.shutdown_grace_s",
                "must be between 1 and 3600".into(),
            );
        }

        let socket = self.control.socket.as_os_str().len();
        if socket == 0 {
            bad("control.socket", "must not be empty".into());
        } else if socket > MAX_SOCKET_PATH {
            bad(
                "control.socket",
                format!(
                    "is {socket} bytes long; a Unix socket path is at most {MAX_SOCKET_PATH} \
                     bytes (sun_path holds 108 with the final NUL): choose a shorter path"
                ),
            );
        }

        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log.level) {
            bad("log.level", format!("is not a valid filter: {e}"));
        }

        out
    }

    /// Checks across detectors: an output topic is written with one schema (see
    /// [`DetectorConfig`]'s scorer kind and features), no detector reads what one writes, and
    /// no two detectors read one topic in one consumer group (they would split its records
    /// rather than each see all of them).
    /// Every consumer group (stages', combiners' and detectors') is used by one reader only,
    /// or they would split a topic's records; and no stage writes to the topic it reads.
    fn validate_stage_groups_and_loops(&self, bad: &mut impl FnMut(&str, String)) {
        let kafka = &self.kafka.group_id;
        let mut groups: Vec<(String, String)> = self
            .detectors
            .iter()
            .map(|(n, d)| (d.group(kafka, n), format!("detector {n}")))
            .collect();
        for (name, st) in &self.stages {
            let group = st.group(kafka, name);
            let mut own = vec![group.clone()];
            if st.kind == Some(StageKind::HoppingWindow) {
                own.push(format!("{group}-combiner"));
            }
            for g in own {
                if let Some((_, who)) = groups.iter().find(|(other, _)| *other == g) {
                    bad(
                        &format!("stages.{name}.group_id"),
                        format!(
                            "the consumer group {g:?} is also {who}'s: two readers in one \
                             group would split the records; give one another group_id"
                        ),
                    );
                }
                groups.push((g, format!("stage {name}")));
            }
            for (key, topic) in [
                ("output_topic", Some(&st.output_topic)),
                ("late_topic", Some(&st.late_topic)),
                ("dead_letter_topic", Some(&st.dead_letter_topic)),
                ("invalid_topic", st.invalid_topic.as_ref()),
                ("partials_topic", st.partials_topic.as_ref()),
            ] {
                if topic.is_some_and(|t| *t == st.input_topic) {
                    bad(
                        &format!("stages.{name}.{key}"),
                        format!(
                            "{:?} is the stage's own input_topic: it would read what it writes",
                            st.input_topic
                        ),
                    );
                }
            }
        }
    }

    fn validate_between_detectors(&self, bad: &mut impl FnMut(&str, String)) {
        let all: Vec<(&String, &DetectorConfig)> = self.detectors.iter().collect();
        for (i, (name, d)) in all.iter().enumerate() {
            for (other, o) in &all[..i] {
                if d.output_topic == o.output_topic && d.schema() != o.schema() {
                    bad(
                        &format!("detectors.{name}.output_topic"),
                        format!(
                            "{:?} is also detector {other}'s output topic, with another schema \
                             (scorer {} and features {} of {} records, against {} and {} of {} \
                             records): detectors sharing an output topic need the same scorer \
                             kind, record format (and CSV columns) and features",
                            d.output_topic,
                            kind_name(d.scorer_kind()),
                            features_text(&d.features),
                            format_text(d),
                            kind_name(o.scorer_kind()),
                            features_text(&o.features),
                            format_text(o),
                        ),
                    );
                }
                if let Some(scored) = &d.scored_topic
                    && o.scored_topic.as_ref() == Some(scored)
                    && d.schema() != o.schema()
                {
                    bad(
                        &format!("detectors.{name}.scored_topic"),
                        format!(
                            "{scored:?} is also detector {other}'s scored topic, with another \
                             schema: detectors sharing a scored topic need the same scorer \
                             kind, record format (and CSV columns) and features"
                        ),
                    );
                }
                if d.input_topic == o.input_topic
                    && d.group(&self.kafka.group_id, name) == o.group(&self.kafka.group_id, other)
                {
                    bad(
                        &format!("detectors.{name}.group_id"),
                        format!(
                            "detector {other} reads {:?} in the same consumer group {:?}: they \
                             would split its records; give one another group_id",
                            d.input_topic,
                            d.group(&self.kafka.group_id, name)
                        ),
                    );
                }
            }
            // A detector's own topics are checked by validate_detector.
            for (other, o) in all.iter().filter(|(other, _)| other != name) {
                if o.input_topic == d.output_topic || o.input_topic == d.dead_letter_topic {
                    bad(
                        &format!("detectors.{name}.output_topic"),
                        format!(
                            "detector {other} reads {:?}, which detector {name} writes: \
                             its results would be scored again",
                            o.input_topic
                        ),
                    );
                }
                if let Some(scored) = &d.scored_topic {
                    if o.input_topic == *scored {
                        bad(
                            &format!("detectors.{name}.scored_topic"),
                            format!(
                                "detector {other} reads {scored:?}, which detector {name} \
                                 writes: its results would be scored again"
                            ),
                        );
                    }
                    if o.output_topic == *scored || o.dead_letter_topic == *scored {
                        bad(
                            &format!("detectors.{name}.scored_topic"),
                            format!(
                                "{scored:?} is also detector {other}'s output_topic or \
                                 dead_letter_topic: a topic carries one kind of record"
                            ),
                        );
                    }
                }
            }
        }
    }

    /// Checks of the A/B splits between detectors of one input topic: their ranges must not
    /// overlap (a record would be scored by two variants) and their variants differ.
    fn validate_splits(&self, bad: &mut impl FnMut(&str, String)) {
        let splits: Vec<(&String, &DetectorConfig, &SplitConfig)> = self
            .detectors
            .iter()
            .filter_map(|(n, d)| Some((n, d, d.split.as_ref()?)))
            // One with a bad range of its own is reported by validate_detector alone.
            .filter(|(_, _, s)| s.problems().is_empty())
            .collect();
        for (i, (name, d, s)) in splits.iter().enumerate() {
            for (other, o, t) in splits[..i]
                .iter()
                .filter(|(_, o, _)| o.input_topic == d.input_topic)
            {
                if s.overlaps(t) {
                    bad(
                        &format!("detectors.{name}.split"),
                        format!(
                            "{} overlaps detector {other}'s split {} of the same input topic \
                             {:?}: a record would be scored by both variants; make the ranges \
                             disjoint, e.g. [0, 0.5) and [0.5, 1)",
                            s.range_text(),
                            t.range_text(),
                            d.input_topic
                        ),
                    );
                }
                if s.variant == t.variant {
                    bad(
                        &format!("detectors.{name}.split.variant"),
                        format!(
                            "{:?} is also detector {other}'s variant on {:?}: the variants of \
                             one input topic need names of their own",
                            s.variant, o.input_topic
                        ),
                    );
                }
            }
        }
    }

    /// What is allowed but probably not meant, each at its key (`check-config` prints them as
    /// warnings; `run` logs them): the A/B splits of an input topic that leave part of `[0, 1)`
    /// to no variant, so that records keyed there are scored by none of them.
    pub fn warnings(&self) -> Vec<Invalid> {
        let mut by_topic: BTreeMap<&str, Vec<(&String, &SplitConfig)>> = BTreeMap::new();
        for (name, d) in &self.detectors {
            if let Some(s) = &d.split {
                by_topic.entry(&d.input_topic).or_default().push((name, s));
            }
        }
        by_topic
            .into_iter()
            .filter_map(|(topic, splits)| {
                let gaps = crate::detect::split::uncovered(splits.iter().map(|(_, s)| *s));
                if gaps.is_empty() {
                    return None;
                }
                let keyless = gaps[0].0 == 0.0;
                let gaps: Vec<String> = gaps.iter().map(|(a, b)| format!("[{a}, {b})")).collect();
                let names: Vec<String> = splits
                    .iter()
                    .map(|(n, s)| format!("{n} {}", s.range_text()))
                    .collect();
                Some(Invalid {
                    key: format!("detectors.{}.split", splits[0].0),
                    message: format!(
                        "the splits of input topic {topic:?} ({}) leave {} to no variant: \
                         records whose key hashes there are scored by none of them{}",
                        names.join(", "),
                        gaps.join(" and "),
                        if keyless {
                            ", and so are records without a key (they are at 0)"
                        } else {
                            ""
                        }
                    ),
                })
            })
            .chain(self.stages.iter().filter_map(|(name, st)| {
                let short = st.kind == Some(StageKind::SessionWindow)
                    && st.time_mode() == TimeMode::Event
                    && st.gap_ms() <= 60_000;
                short.then(|| Invalid {
                    key: format!("stages.{name}.inactivity_gap_s"),
                    message: format!(
                        "{} s in event time splits the invoices whose lines straddle a minute \
                         (InvoiceDate has minute resolution): use more than 60",
                        st.gap_ms() / 1000
                    ),
                })
            }))
            .collect()
    }

    /// The detectors, in name order.
    pub fn detector_names(&self) -> Vec<&str> {
        self.detectors.keys().map(String::as_str).collect()
    }

    /// The resolved value of a dotted key such as `model.path` (`check-config --get`): strings
    /// as they are, anything else as JSON; `None` for a key the configuration does not have.
    /// Keys under `kafka.properties` hold dots themselves (`kafka.properties.linger.ms`);
    /// credentials among them print as `<redacted>`.
    pub fn value_of(&self, key: &str) -> Option<String> {
        fn lookup<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
            let map = v.as_object()?;
            if let Some(found) = map.get(path) {
                return Some(found);
            }
            path.match_indices('.')
                .find_map(|(i, _)| lookup(map.get(&path[..i])?, &path[i + 1..]))
        }
        let mut tree = serde_json::to_value(self).ok()?;
        if let Some(properties) = tree["kafka"]["properties"].as_object_mut() {
            for (name, value) in properties.iter_mut() {
                if is_secret_property(name) {
                    *value = serde_json::Value::String("<redacted>".into());
                }
            }
        }
        match lookup(&tree, key)? {
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    /// [`Config::topics`] as `check-config --topics` prints them: a topic that must have
    /// exactly one partition (a hopping window's partials) as `NAME:1`, others as `NAME`.
    pub fn topic_lines(&self) -> Vec<String> {
        self.topics()
            .into_iter()
            .map(|t| {
                let single = self
                    .stages
                    .values()
                    .any(|s| s.partials_topic.as_deref() == Some(t));
                if single {
                    format!("{t}:1")
                } else {
                    t.to_owned()
                }
            })
            .collect()
    }

    /// Every topic the daemon reads or writes, without duplicates (`check-config --topics`).
    pub fn topics(&self) -> Vec<&str> {
        let mut topics: Vec<&str> = self
            .detectors
            .values()
            .flat_map(|d| {
                [
                    Some(d.input_topic.as_str()),
                    Some(d.output_topic.as_str()),
                    d.scored_topic.as_deref(),
                    Some(d.dead_letter_topic.as_str()),
                ]
                .into_iter()
                .flatten()
            })
            .collect();
        for st in self.stages.values() {
            topics.extend([
                st.input_topic.as_str(),
                st.output_topic.as_str(),
                st.late_topic.as_str(),
                st.dead_letter_topic.as_str(),
            ]);
            topics.extend(st.invalid_topic.as_deref());
            topics.extend(st.partials_topic.as_deref());
        }
        if self.generator.enabled {
            topics.push(self.generator.topic.as_str());
        }
        let mut seen = Vec::new();
        topics.retain(|t| {
            let fresh = !seen.contains(t);
            seen.push(*t);
            fresh
        });
        topics
    }
}

/// librdkafka properties that hold credentials (`sasl.password`, `ssl.key.password`,
/// `sasl.oauthbearer.client.secret`, `ssl.key.pem`, ...): never printed.
pub fn is_secret_property(name: &str) -> bool {
    name.contains("password")
        || name.contains("secret")
        || name.ends_with(".pem")
        || name == "sasl.oauthbearer.config"
}

/// The key that names "no detector at all".
pub const NO_DETECTOR_KEY: &str = "detectors";

/// The checks of a `format = "csv"` detector: `columns` set, non-empty and unique; `features`
/// (needed by a model, optional for rules) a list of those columns.
fn validate_csv(
    d: &DetectorConfig,
    key: &impl Fn(&str) -> String,
    bad: &mut impl FnMut(&str, String),
) {
    let Some(columns) = &d.columns else {
        bad(
            &key("columns"),
            "must be set with format = \"csv\": the name of each column, in order, e.g. \
             columns = [\"InvoiceNo\", \"Quantity\"]"
                .into(),
        );
        return;
    };
    if columns.is_empty() {
        bad(&key("columns"), "needs at least one column name".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in columns {
        if c.is_empty() {
            bad(&key("columns"), "a column name must not be empty".into());
        } else if !seen.insert(c.as_str()) {
            bad(&key("columns"), format!("column {c:?} is named twice"));
        }
    }
    match &d.features {
        FeatureSpec::Pointers(names) if names.is_empty() => {
            bad(&key("features"), "needs at least one column name".into())
        }
        FeatureSpec::Pointers(names) => {
            for n in names.iter().filter(|n| !columns.contains(n)) {
                bad(
                    &key("features"),
                    format!(
                        "{n:?} is not one of the columns (with format = \"csv\", features name \
                         columns)"
                    ),
                );
            }
        }
        // The default (`"data"`) is harmless for rules, which read columns by name.
        FeatureSpec::Field(_) if d.scorer_kind() != Some(ScorerKind::Model) => {}
        FeatureSpec::Field(f) => bad(
            &key("features"),
            format!(
                "with format = \"csv\", features is a list of column names, e.g. \
                 features = [\"Quantity\", \"UnitPrice\"] (found {f:?})"
            ),
        ),
    }
}

/// A detector's record format in words: `JSON`, or `CSV (a, b, c)` with its columns.
fn format_text(d: &DetectorConfig) -> String {
    match d.format {
        RecordFormat::Json => "JSON".into(),
        RecordFormat::Csv => format!(
            "CSV ({})",
            d.columns.as_deref().unwrap_or_default().join(", ")
        ),
    }
}

/// One detector's own checks, with keys `detectors.<name>.<key>`.
fn validate_detector(name: &str, d: &DetectorConfig, bad: &mut impl FnMut(&str, String)) {
    let key = |k: &str| format!("detectors.{name}.{k}");
    if let Some(why) = detector_name_problem(name) {
        bad(&format!("detectors.{name}"), why);
    }
    for (k, topic) in [
        ("input_topic", &d.input_topic),
        ("output_topic", &d.output_topic),
        ("dead_letter_topic", &d.dead_letter_topic),
    ] {
        if topic.is_empty() {
            bad(&key(k), "must be set (a Kafka topic name)".into());
        } else if let Some(why) = topic_problem(topic) {
            bad(&key(k), why);
        }
    }
    if !d.input_topic.is_empty() && d.output_topic == d.input_topic {
        bad(
            &key("output_topic"),
            "must differ from input_topic (anomalies would be scored again)".into(),
        );
    }
    if !d.input_topic.is_empty() && d.dead_letter_topic == d.input_topic {
        bad(
            &key("dead_letter_topic"),
            "must differ from input_topic (bad records would loop)".into(),
        );
    }
    if let Some(scored) = &d.scored_topic {
        validate_scored_topic(scored, d, &key, bad);
    }
    if d.format == RecordFormat::Csv {
        validate_csv(d, &key, bad);
    } else if d.columns.is_some() {
        bad(
            &key("columns"),
            "is read only with format = \"csv\" (a JSON record names its own fields)".into(),
        );
    }
    match &d.features {
        // Column names, checked by `validate_csv`.
        _ if d.format == RecordFormat::Csv => {}
        FeatureSpec::Field(field) if field.trim().is_empty() => {
            bad(&key("features"), "field name must not be empty".into())
        }
        FeatureSpec::Pointers(ptrs) if ptrs.is_empty() => bad(
            &key("features"),
            "needs at least one JSON pointer, or a field name".into(),
        ),
        FeatureSpec::Pointers(ptrs) => {
            for p in ptrs.iter().filter(|p| !p.starts_with('/')) {
                bad(
                    &key("features"),
                    format!("{p:?} is not a JSON pointer (it must start with '/')"),
                );
            }
        }
        FeatureSpec::Field(_) => {}
    }
    match (d.scorer_kind(), &d.model, &d.rules) {
        (_, Some(_), Some(_)) => bad(
            &key("rules"),
            "a detector has one scorer: a model file or rules, not both".into(),
        ),
        (Some(ScorerKind::Model), Some(path), None) if path.as_os_str().is_empty() => {
            bad(&key("model"), "must not be empty".into())
        }
        (Some(ScorerKind::Model), Some(_), None) => {}
        (Some(ScorerKind::Model), None, _) => bad(
            &key("model"),
            "scorer = \"model\" needs model = \"<model file>\"".into(),
        ),
        // The expressions are compiled where the model files are loaded (the daemon's
        // `load_scorers`, which `check-config` and `run` both call), so that this module does
        // not depend on the rules engine.
        (Some(ScorerKind::Rules), None, Some(rules)) if rules.is_empty() => bad(
            &key("rules"),
            "needs at least one rule (name = \"CEL expression\")".into(),
        ),
        (Some(ScorerKind::Rules), None, Some(rules)) => {
            let max = crate::detect::streaks::MAX_FOR;
            for (name, rule) in rules {
                if !(1..=max).contains(&rule.for_readings) {
                    bad(
                        &key(&format!("rules.{name}.for")),
                        format!("must be between 1 and {max} (consecutive matching readings)"),
                    );
                }
            }
        }
        (Some(ScorerKind::Rules), _, None) => bad(
            &key("rules"),
            "scorer = \"rules\" needs a [detectors.<name>.rules] table".into(),
        ),
        (None, _, _) => bad(
            &key("model"),
            "the detector has no scorer: set model = \"<model file>\", or rules in a \
             [detectors.<name>.rules] table"
                .into(),
        ),
    }
    if d.batch_max < 1 {
        bad(&key("batch_max"), "must be >= 1".into());
    }
    if d.batch_max > 100_000 {
        bad(&key("batch_max"), "must be <= 100000".into());
    }
    if d.batch_linger_ms > 60_000 {
        bad(
            &key("batch_linger_ms"),
            "must be <= 60000 (one minute)".into(),
        );
    }
    if !(1..=3600).contains(&d.assignment_grace_s) {
        bad(
            &key("assignment_grace_s"),
            "must be between 1 and 3600 (one hour)".into(),
        );
    }
    if d.group_id.as_ref().is_some_and(|g| g.trim().is_empty()) {
        bad(
            &key("group_id"),
            "must not be empty (leave it out for <kafka.group_id>-<name>)".into(),
        );
    }
    if let Some(split) = &d.split {
        for (k, why) in split.problems() {
            bad(&key(&format!("split.{k}")), why);
        }
    }
}

/// The checks of `scored_topic`: a valid topic name, none of the detector's other topics
/// (each of those carries one kind of record only).
fn validate_scored_topic(
    scored: &str,
    d: &DetectorConfig,
    key: &impl Fn(&str) -> String,
    bad: &mut impl FnMut(&str, String),
) {
    if let Some(why) = topic_problem(scored) {
        bad(&key("scored_topic"), why);
        return;
    }
    for (other, topic, why) in [
        (
            "input_topic",
            &d.input_topic,
            "every record would be scored again",
        ),
        (
            "output_topic",
            &d.output_topic,
            "it carries anomalies only; each would arrive twice among the other records",
        ),
        (
            "dead_letter_topic",
            &d.dead_letter_topic,
            "it carries records that could not be scored",
        ),
    ] {
        if scored == topic {
            bad(
                &key("scored_topic"),
                format!("must differ from {other} ({why})"),
            );
        }
    }
}

/// A rules table as `(name, expression)` pairs, in name order.
pub fn rule_pairs(rules: &BTreeMap<String, RuleSpec>) -> Vec<(String, String)> {
    rules
        .iter()
        .map(|(n, r)| (n.clone(), r.expr.clone()))
        .collect()
}

/// A rules table's `for` values, in name order (the order of [`rule_pairs`]).
pub fn rule_for(rules: &BTreeMap<String, RuleSpec>) -> Vec<u32> {
    rules.values().map(|r| r.for_readings).collect()
}

fn kind_name(kind: Option<ScorerKind>) -> String {
    kind.map_or_else(|| "none".to_owned(), |k| k.to_string())
}

fn features_text(f: &FeatureSpec) -> String {
    match f {
        FeatureSpec::Field(name) => format!("{name:?}"),
        FeatureSpec::Pointers(p) => format!("{p:?}"),
    }
}

/// Kafka's own topic-name rule: 1..=249 characters of `[a-zA-Z0-9._-]`.
fn topic_problem(topic: &str) -> Option<String> {
    if topic.is_empty() {
        return Some("must not be empty".into());
    }
    if topic.len() > 249 {
        return Some("must be at most 249 characters".into());
    }
    if topic == "." || topic == ".." {
        return Some("cannot be \".\" or \"..\"".into());
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!(
            "{topic:?} has {c:?}; Kafka topic names use only letters, digits, '.', '_' and '-'"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector(input: &str, output: &str, model: &str) -> DetectorConfig {
        DetectorConfig {
            input_topic: input.into(),
            output_topic: output.into(),
            dead_letter_topic: format!("{input}.dead-letter"),
            model: Some(model.into()),
            ..DetectorConfig::default()
        }
    }

    /// A valid configuration with one detector, `tx`.
    fn one() -> Config {
        let mut c = Config::default();
        c.detectors.insert(
            "tx".into(),
            detector("transactions", "anomalies", "m.iforest"),
        );
        c
    }

    fn keys(c: &Config) -> Vec<String> {
        c.validate().into_iter().map(|i| i.key).collect()
    }

    #[test]
    fn one_detector_is_valid_and_none_is_an_error() {
        assert_eq!(one().validate(), vec![]);
        let none = Config::default().validate();
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].key, NO_DETECTOR_KEY);
        assert!(none[0].message.contains("[detectors.<name>]"), "{none:?}");
    }

    #[test]
    fn the_sensors_keys_are_checked() {
        let mut c = one();
        c.generator.profile = GeneratorProfile::Sensors;
        assert_eq!(keys(&c), Vec::<String>::new(), "the defaults are valid");
        c.generator.sensors = 0;
        c.generator.fault_share = 0.2;
        assert_eq!(keys(&c), ["generator.sensors", "generator.fault_share"]);
        let why = c.validate()[1].message.clone();
        assert!(why.contains("between 0 and 0.1667"), "{why}");
        c.generator.sensors = 1_000_000;
        c.generator.fault_share = crate::source::generator::sensors::MAX_FAULT_SHARE;
        assert_eq!(keys(&c), Vec::<String>::new());
        c.generator.fault_share = f64::NAN;
        assert_eq!(keys(&c), ["generator.fault_share"]);
    }

    #[test]
    fn validate_reports_every_problem_with_its_key() {
        let mut c = one();
        let d = c.detectors.get_mut("tx").unwrap();
        d.batch_max = 0;
        d.output_topic = d.input_topic.clone();
        c.generator.outlier_probability = 1.5;
        assert_eq!(
            keys(&c),
            [
                "detectors.tx.output_topic",
                "detectors.tx.batch_max",
                "generator.outlier_probability"
            ]
        );
    }

    #[test]
    fn a_detector_needs_its_topics_and_a_scorer() {
        let mut c = Config::default();
        c.detectors.insert("tx".into(), DetectorConfig::default());
        assert_eq!(
            keys(&c),
            [
                "detectors.tx.input_topic",
                "detectors.tx.output_topic",
                "detectors.tx.dead_letter_topic",
                "detectors.tx.model",
            ]
        );
    }

    #[test]
    fn detector_names_are_lower_case_words() {
        for (name, ok) in [
            ("transactions", true),
            ("a-b_9", true),
            ("Upper", false),
            ("has space", false),
            ("dot.ted", false),
            ("", false),
        ] {
            let mut c = Config::default();
            c.detectors
                .insert(name.into(), detector("in", "out", "m.iforest"));
            let k = keys(&c);
            assert_eq!(k.is_empty(), ok, "{name:?}: {k:?}");
            if !ok {
                assert_eq!(k, [format!("detectors.{name}")]);
            }
        }
    }

    #[test]
    fn two_detectors_on_one_topic_get_their_own_groups() {
        let mut c = one();
        c.detectors.insert(
            "ab".into(),
            detector("transactions", "anomalies-b", "b.iforest"),
        );
        assert_eq!(c.validate(), vec![]);
        assert_eq!(c.detectors["tx"].group("anomalyd", "tx"), "anomalyd-tx");
        assert_eq!(c.detectors["ab"].group("anomalyd", "ab"), "anomalyd-ab");
        // The same group by hand: they would split the records.
        c.detectors.get_mut("ab").unwrap().group_id = Some("anomalyd-tx".into());
        assert_eq!(keys(&c), ["detectors.tx.group_id"]);
    }

    /// Two detectors on `transactions`: `tx`, variant A over `a_range`, and `ab`, variant B
    /// over `b_range`.
    fn ab(a_range: (f64, f64), b_range: (f64, f64)) -> Config {
        let mut c = one();
        c.detectors.insert(
            "ab".into(),
            detector("transactions", "anomalies-b", "b.iforest"),
        );
        for (name, variant, (from, to)) in [("tx", "A", a_range), ("ab", "B", b_range)] {
            c.detectors.get_mut(name).unwrap().split = Some(SplitConfig {
                variant: variant.into(),
                from,
                to,
            });
        }
        c
    }

    #[test]
    fn splits_of_one_topic_may_not_overlap() {
        let c = ab((0.0, 0.5), (0.5, 1.0));
        assert_eq!(c.validate(), vec![]);
        assert_eq!(c.warnings(), vec![]);
        let c = ab((0.0, 0.6), (0.5, 1.0));
        let errs = c.validate();
        assert_eq!(errs.len(), 1, "{errs:?}");
        // Name order: `ab` before `tx`, so the error is at the later one, tx.
        assert_eq!(errs[0].key, "detectors.tx.split");
        assert!(
            errs[0]
                .message
                .contains("[0, 0.6) overlaps detector ab's split [0.5, 1)"),
            "{errs:?}"
        );
        // On another topic, the same ranges are another A/B.
        let mut c = ab((0.0, 0.6), (0.5, 1.0));
        c.detectors.get_mut("ab").unwrap().input_topic = "other".into();
        assert_eq!(c.validate(), vec![]);
        // The same variant twice on one topic.
        let mut c = ab((0.0, 0.5), (0.5, 1.0));
        c.detectors
            .get_mut("ab")
            .unwrap()
            .split
            .as_mut()
            .unwrap()
            .variant = "A".into();
        assert_eq!(keys(&c), ["detectors.tx.split.variant"]);
    }

    #[test]
    fn a_split_names_its_bad_key() {
        let mut c = ab((0.0, 0.5), (0.5, 1.0));
        let s = c.detectors.get_mut("tx").unwrap().split.as_mut().unwrap();
        s.from = 0.7;
        s.variant = "A/1".into();
        // Its own problems only: no overlap reported for a range that is wrong already.
        assert_eq!(
            keys(&c),
            ["detectors.tx.split.variant", "detectors.tx.split.to"]
        );
        let mut c = ab((0.0, 0.5), (0.5, 1.0));
        c.detectors
            .get_mut("ab")
            .unwrap()
            .split
            .as_mut()
            .unwrap()
            .to = 1.01;
        assert_eq!(keys(&c), ["detectors.ab.split.to"]);
    }

    #[test]
    fn a_split_that_leaves_keys_to_no_variant_is_a_warning() {
        let c = ab((0.0, 0.4), (0.5, 0.9));
        assert_eq!(c.validate(), vec![]);
        let w = c.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].key, "detectors.ab.split");
        assert!(
            w[0].message
                .contains("leave [0.4, 0.5) and [0.9, 1) to no variant"),
            "{w:?}"
        );
        assert!(!w[0].message.contains("without a key"), "{w:?}");
        let c = ab((0.1, 0.5), (0.5, 1.0));
        assert!(c.warnings()[0].message.contains("without a key"));
        // No split, no warning.
        assert_eq!(one().warnings(), vec![]);
    }

    #[test]
    fn a_split_reads_from_toml() {
        let text = r#"
            input_topic = "invoices"
            output_topic = "anomalies_kmeans"
            dead_letter_topic = "invoices.dead-letter"
            model = "k.kmeans"
            split = { variant = "A", from = 0, to = 0.5 }
        "#;
        let d: DetectorConfig = toml::from_str(text).unwrap();
        let s = d.split.unwrap();
        assert_eq!((s.variant.as_str(), s.from, s.to), ("A", 0.0, 0.5));
        let e = toml::from_str::<DetectorConfig>(&text.replace("to =", "end =")).unwrap_err();
        assert!(e.to_string().contains("unknown field `end`"), "{e}");
    }

    #[test]
    fn one_output_topic_takes_one_schema() {
        let mut c = one();
        // Same features and scorer kind, another model file: an A/B pair may share a topic.
        c.detectors
            .insert("ab".into(), detector("other", "anomalies", "b.iforest"));
        assert_eq!(c.validate(), vec![]);
        c.detectors.get_mut("ab").unwrap().features =
            FeatureSpec::Pointers(vec!["/a".into(), "/b".into()]);
        let errs = c.validate();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].key, "detectors.tx.output_topic");
        assert!(errs[0].message.contains("another schema"), "{errs:?}");
        // Same scorer kind and features (columns may be named like pointers), another
        // format: anomalies of two shapes.
        let names = vec!["/a".to_owned(), "/b".to_owned()];
        let ab = c.detectors.get_mut("ab").unwrap();
        ab.format = RecordFormat::Csv;
        ab.columns = Some(names.clone());
        ab.features = FeatureSpec::Pointers(names.clone());
        c.detectors.get_mut("tx").unwrap().features = FeatureSpec::Pointers(names);
        let errs = c.validate();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].message.contains("of CSV (/a, /b) records"),
            "{errs:?}"
        );
    }

    #[test]
    fn scored_topic_is_optional_and_apart_from_every_other_topic() {
        let mut c = one();
        assert_eq!(c.detectors["tx"].scored_topic, None);
        c.detectors.get_mut("tx").unwrap().scored_topic = Some("scored".into());
        assert_eq!(c.validate(), vec![]);
        assert_eq!(
            c.topics(),
            [
                "transactions",
                "anomalies",
                "scored",
                "transactions.dead-letter"
            ]
        );
        for (topic, why) in [
            ("transactions", "must differ from input_topic"),
            ("anomalies", "must differ from output_topic"),
            (
                "transactions.dead-letter",
                "must differ from dead_letter_topic",
            ),
            ("bad topic", "Kafka topic names use only"),
            ("", "must not be empty"),
        ] {
            c.detectors.get_mut("tx").unwrap().scored_topic = Some(topic.into());
            let errs = c.validate();
            assert_eq!(errs.len(), 1, "{topic:?}: {errs:?}");
            assert_eq!(errs[0].key, "detectors.tx.scored_topic");
            assert!(errs[0].message.contains(why), "{topic:?}: {errs:?}");
        }
    }

    #[test]
    fn scored_topics_are_checked_across_detectors() {
        let mut c = one();
        c.detectors.get_mut("tx").unwrap().scored_topic = Some("scored".into());
        // Another detector reading it would score every record again.
        c.detectors.insert(
            "loop".into(),
            detector("scored", "anomalies-2", "b.iforest"),
        );
        assert_eq!(keys(&c), ["detectors.tx.scored_topic"]);
        // Another detector's output topic: anomalies and every record in one topic.
        c.detectors
            .insert("loop".into(), detector("other", "scored", "b.iforest"));
        let errs = c.validate();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].key, "detectors.tx.scored_topic");
        assert!(errs[0].message.contains("one kind of record"), "{errs:?}");
        // Shared by two detectors of one schema: fine; of two schemas: refused.
        let mut other = detector("other", "anomalies-2", "b.iforest");
        other.scored_topic = Some("scored".into());
        c.detectors.insert("loop".into(), other);
        assert_eq!(c.validate(), vec![]);
        c.detectors.get_mut("loop").unwrap().features =
            FeatureSpec::Pointers(vec!["/a".into(), "/b".into()]);
        let errs = c.validate();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].key, "detectors.tx.scored_topic");
        assert!(errs[0].message.contains("another schema"), "{errs:?}");
    }

    #[test]
    fn a_detector_may_not_read_what_one_writes() {
        let mut c = one();
        c.detectors.insert(
            "loop".into(),
            detector("anomalies", "anomalies-2", "b.iforest"),
        );
        assert_eq!(keys(&c), ["detectors.tx.output_topic"]);
    }

    #[test]
    fn a_detector_has_exactly_one_scorer() {
        let rules = || {
            Some(BTreeMap::from([(
                "hot".to_owned(),
                RuleSpec::from("t > 40.0"),
            )]))
        };
        let mut c = one();
        let d = c.detectors.get_mut("tx").unwrap();
        assert_eq!(d.scorer_kind(), Some(ScorerKind::Model));
        d.rules = rules();
        assert_eq!(keys(&c), ["detectors.tx.rules"], "both");
        let d = c.detectors.get_mut("tx").unwrap();
        d.model = None;
        assert_eq!(d.scorer_kind(), Some(ScorerKind::Rules));
        assert_eq!(c.validate(), vec![]);
        let d = c.detectors.get_mut("tx").unwrap();
        d.scorer = Some(ScorerKind::Model);
        assert_eq!(keys(&c), ["detectors.tx.model"], "says model, has rules");
        let d = c.detectors.get_mut("tx").unwrap();
        d.scorer = None;
        d.rules = Some(BTreeMap::new());
        assert_eq!(keys(&c), ["detectors.tx.rules"], "no rule");
        let d = c.detectors.get_mut("tx").unwrap();
        let mut spec = RuleSpec::from("t > 40.0");
        spec.for_readings = 0;
        d.rules = Some(BTreeMap::from([("hot".to_owned(), spec.clone())]));
        assert_eq!(keys(&c), ["detectors.tx.rules.hot.for"], "for = 0");
        let d = c.detectors.get_mut("tx").unwrap();
        spec.for_readings = 3;
        d.rules = Some(BTreeMap::from([("hot".to_owned(), spec)]));
        assert_eq!(c.validate(), vec![], "for = 3");
    }

    #[test]
    fn the_old_single_detector_shape_is_refused_with_the_way_out() {
        let c = Config {
            detector: Some(serde_json::json!({"input_topic": "t"})),
            model: Some(serde_json::json!({"path": "m.iforest"})),
            ..Config::default()
        };
        let errs = c.validate();
        let k: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(k, ["detector", "model"]);
        assert!(errs[0].message.contains("[detectors.transactions]"));
        assert!(errs[1].message.contains("model = \"<path>\""));
    }

    #[test]
    fn the_assignment_grace_is_bounded() {
        let mut c = one();
        for (grace, ok) in [(0, false), (1, true), (3600, true), (3601, false)] {
            c.detectors.get_mut("tx").unwrap().assignment_grace_s = grace;
            let keys: Vec<_> = c.validate().into_iter().map(|i| i.key).collect();
            assert_eq!(keys.is_empty(), ok, "{grace}: {keys:?}");
        }
    }

    #[test]
    fn managed_kafka_properties_are_refused() {
        let mut c = one();
        c.kafka
            .properties
            .insert("enable.auto.offset.store".into(), PropertyValue::Bool(true));
        c.kafka
            .properties
            .insert("fetch.wait.max.ms".into(), PropertyValue::Int(10));
        let errs = c.validate();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].key, "kafka.properties.enable.auto.offset.store");
    }

    /// Issue 11: check-config accepted a 200-character socket path and `run` then exited 1.
    #[test]
    fn a_socket_path_longer_than_sun_path_is_refused() {
        let mut c = one();
        c.control.socket = PathBuf::from(format!("/tmp/{}", "s".repeat(102)));
        assert_eq!(c.control.socket.as_os_str().len(), 107);
        assert_eq!(c.validate(), vec![]);
        c.control.socket = PathBuf::from(format!("/tmp/{}", "s".repeat(103)));
        let errs = c.validate();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].key, "control.socket");
        assert!(errs[0].message.contains("108 bytes long"), "{:?}", errs[0]);
    }

    #[test]
    fn a_float_for_an_integer_property_is_refused() {
        for (name, value) in [
            ("fetch.wait.max.ms", PropertyValue::Float(1.5)),
            ("fetch.wait.max.ms", PropertyValue::Float(2.0)),
            (
                "topic.metadata.refresh.interval.ms",
                PropertyValue::Float(-1e308),
            ),
            ("fetch.wait.max.ms", PropertyValue::String("1.5".into())),
        ] {
            let mut c = one();
            c.kafka.properties.insert(name.into(), value.clone());
            let errs = c.validate();
            assert_eq!(errs.len(), 1, "{name} = {value:?}");
            assert_eq!(errs[0].key, format!("kafka.properties.{name}"));
        }
        let mut c = one();
        c.kafka
            .properties
            .insert("linger.ms".into(), PropertyValue::Float(2.5));
        c.kafka
            .properties
            .insert("fetch.wait.max.ms".into(), PropertyValue::Int(10));
        assert_eq!(c.validate(), vec![]);
        assert_eq!(PropertyValue::Float(2.0).as_checked(), "2.0");
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert_eq!(topic_problem("transactions.dead-letter_1"), None);
        assert!(topic_problem("").is_some());
        assert!(topic_problem("has space").is_some());
        assert!(topic_problem("..").is_some());
        assert!(topic_problem(&"a".repeat(250)).is_some());
    }

    #[test]
    fn json_pointers_must_start_with_slash() {
        let mut c = one();
        c.detectors.get_mut("tx").unwrap().features =
            FeatureSpec::Pointers(vec!["/a".into(), "b".into()]);
        let errs = c.validate();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("\"b\""), "{:?}", errs[0]);
    }

    #[test]
    fn topics_are_listed_once() {
        let mut c = one();
        assert_eq!(
            c.topics(),
            ["transactions", "anomalies", "transactions.dead-letter"]
        );
        c.generator.enabled = true;
        assert_eq!(c.topics().len(), 3);
        c.generator.topic = "other".into();
        assert_eq!(c.topics().len(), 4);
        c.detectors.insert(
            "ab".into(),
            detector("transactions", "anomalies-b", "b.iforest"),
        );
        assert_eq!(
            c.topics(),
            [
                "transactions",
                "anomalies-b",
                "transactions.dead-letter",
                "anomalies",
                "other"
            ]
        );
        assert_eq!(c.detector_names(), ["ab", "tx"]);
    }

    #[test]
    fn slack_settings_are_checked() {
        let mut c = one();
        c.slack.mode = SlackMode::Bot;
        c.slack.api_base = "slack.com/api".into();
        c.slack.group_id = Some(" ".into());
        c.slack.top_n = 0;
        c.slack.min_interval_ms = 10;
        c.slack.group_interval_s = 0;
        c.slack.request_timeout_s = 0;
        c.slack.token_file = Some(PathBuf::new());
        let keys: Vec<_> = c.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            [
                "slack.api_base",
                "slack.token_file",
                "slack.group_id",
                "slack.group_interval_s",
                "slack.top_n",
                "slack.min_interval_ms",
                "slack.request_timeout_s",
            ]
        );
        // The base URL only matters in bot mode.
        let mut c = one();
        c.slack.mode = SlackMode::Log;
        c.slack.api_base = String::new();
        assert_eq!(c.validate(), vec![]);
    }

    #[test]
    fn property_values_render_as_librdkafka_strings() {
        assert_eq!(PropertyValue::Int(10).to_string(), "10");
        assert_eq!(PropertyValue::Bool(false).to_string(), "false");
        assert_eq!(
            PropertyValue::String("SASL_SSL".into()).to_string(),
            "SASL_SSL"
        );
    }
}
