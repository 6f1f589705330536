//! The `/status` document: everything an operator asks first, in one JSON object.

use std::collections::BTreeMap;

use serde::Serialize;

use super::lag::PartitionLag;
use super::liveness::Orphan;
use crate::detect::scorer::ScorerIdentity;
use crate::detect::slot::History;
use crate::detect::split::SplitConfig;
use crate::metrics::MetricsSnapshot;
use crate::sinks::slack::SlackMetricsSnapshot;
use crate::supervisor::TaskReport;

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub uptime_s: u64,
    pub ready: bool,
    /// Why not ready; empty when ready.
    pub not_ready: Vec<String>,
    /// A task fails repeatedly or hangs, or a warning below (health says WARNING).
    pub degraded: bool,
    /// Degraded conditions that are not a task's: no partitions past the grace, orphaned
    /// partitions (each detector's, prefixed `detector NAME: `).
    pub warnings: Vec<String>,
    pub tasks: Vec<TaskReport>,
    /// Sum of the known lags of every detector.
    pub lag: i64,
    /// Every detector, in name order.
    pub detectors: Vec<DetectorStatus>,
    /// Every stage (`[stages.NAME]`), in name order; absent when none is configured.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageStatus>,
    /// Counters over every detector (and the generator's).
    pub counters: MetricsSnapshot,
    /// Slack alerts; absent when `[slack] mode = "off"`.
    pub slack: Option<SlackMetricsSnapshot>,
    /// The anomaly store; absent without `[store]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreStatus>,
}

/// `[store]`: where rows go, in which group, how long they stay, and the counters.
#[derive(Debug, Clone, Serialize)]
pub struct StoreStatus {
    /// `sqlite` or `postgres`.
    pub backend: crate::sinks::store::StoreBackend,
    /// The SQLite database file, or the PostgreSQL URL (never with a password).
    pub path: String,
    pub group_id: String,
    pub retain_days: u32,
    pub counters: crate::sinks::store::StoreMetricsSnapshot,
}

/// One `[stages.NAME]`: its kind, clock, what it reads and in which groups, the partitions
/// this instance holds, and its counters.
#[derive(Debug, Clone, Serialize)]
pub struct StageStatus {
    pub name: String,
    /// `session_window` or `hopping_window`.
    pub kind: &'static str,
    /// `processing` or `event`.
    pub time: &'static str,
    pub input_topic: String,
    /// Each consumer task's group and the partitions it holds, `topic/partition`.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Every partition the stage reads (input and, for a hopping window, partials), whoever
    /// holds it: its group's committed (safe) offset, high watermark and lag, from the last
    /// refresh (every few seconds). A safe offset stays behind the records open state needs,
    /// so a stage's lag includes them.
    pub lag: Vec<PartitionLag>,
    pub counters: crate::stages::metrics::StageSnapshot,
}

/// One `[detectors.NAME]`: what it reads and writes, its model, partitions, lag and counts.
#[derive(Debug, Clone, Serialize)]
pub struct DetectorStatus {
    pub name: String,
    pub input_topic: String,
    /// The consumer group it reads `input_topic` with.
    pub group_id: String,
    pub output_topic: String,
    /// Where every scored record goes (`scored_topic`); absent when not configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scored_topic: Option<String>,
    pub dead_letter_topic: String,
    /// Whether this detector can do its job (see `not_ready`).
    pub ready: bool,
    pub not_ready: Vec<String>,
    pub warnings: Vec<String>,
    /// Partitions of its input topic that look owned by no live member of its group.
    pub orphaned_partitions: Vec<Orphan>,
    pub model: ModelStatus,
    pub partitions: Vec<PartitionStatus>,
    /// Sum of the known lags of its partitions.
    pub lag: i64,
    /// Records scored, anomalies published and dead letters by reason, since start.
    pub records: u64,
    pub anomalies: u64,
    pub dead_letters: BTreeMap<&'static str, u64>,
    /// The A/B split, `{variant, from, to}`; absent when the detector scores every record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitConfig>,
    /// Records of other variants skipped since start (0 without a split); not in `records`.
    pub records_skipped_by_split: u64,
}

/// One detector's reload: the model now serving, or why the file was refused (the old
/// model keeps serving).
#[derive(Debug, Clone, Serialize)]
pub struct DetectorReload {
    pub detector: String,
    /// The model file that was read.
    pub path: String,
    /// The new model, when accepted.
    pub model: Option<ScorerIdentity>,
    /// Why the file was refused.
    pub error: Option<String>,
}

/// The answer to a reload: every detector's result. `POST /reload` answers 200 when every
/// file was accepted, 422 when any was refused; the body is this, with `reloaded` = all ok.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    pub detectors: Vec<DetectorReload>,
}

impl ReloadReport {
    /// Whether every detector's file was accepted.
    pub fn all_ok(&self) -> bool {
        self.detectors.iter().all(|d| d.error.is_none())
    }

    /// The refused detectors' errors, one `detector NAME: why` each.
    pub fn errors(&self) -> Vec<String> {
        self.detectors
            .iter()
            .filter_map(|d| Some(format!("detector {}: {}", d.detector, d.error.as_ref()?)))
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelStatus {
    pub id: String,
    pub kind: String,
    pub path: String,
    pub features: Vec<String>,
    #[serde(flatten)]
    pub history: History,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    #[serde(flatten)]
    pub offsets: PartitionLag,
    pub records: u64,
    pub anomalies: u64,
    pub dead_letters: u64,
}
