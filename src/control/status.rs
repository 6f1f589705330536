//! The `/status` document: everything an operator asks first, in one JSON object.

use serde::Serialize;

use super::lag::PartitionLag;
use super::liveness::Orphan;
use crate::detect::slot::History;
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
    /// partitions.
    pub warnings: Vec<String>,
    /// Partitions of the input topic that look owned by no live member.
    pub orphaned_partitions: Vec<Orphan>,
    pub model: ModelStatus,
    pub tasks: Vec<TaskReport>,
    pub partitions: Vec<PartitionStatus>,
    /// Sum of the known lags.
    pub lag: i64,
    pub counters: MetricsSnapshot,
    /// Slack alerts; absent when `[slack] mode = "off"`.
    pub slack: Option<SlackMetricsSnapshot>,
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
