//! `[stages.NAME]`: stateful stages before the detectors, each its own consumer group with its
//! own partition workers, like a detector.
//!
//! Two kinds, named after the window they keep (Kafka Streams and Flink terms):
//! - `session_window`: purchase lines grouped into invoices, one session per invoice number,
//!   closed by an inactivity gap; each invoice emitted once, `final`.
//! - `hopping_window`: distinct cancelled invoice numbers per hopping window (`size`, advancing
//!   by `advance`, epoch-aligned), each window emitted once when it closes, zero included.

use serde::{Deserialize, Serialize};

/// Which clock a window follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimeMode {
    /// The record's own time, from a field: replays give the same windows every time.
    Event,
    /// The wall clock when the record is read.
    #[default]
    Processing,
}

impl TimeMode {
    /// `event` or `processing`, as written in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::Event => "event",
            Self::Processing => "processing",
        }
    }
}

/// The kind of a stage: the window it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    SessionWindow,
    HoppingWindow,
}

impl StageKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::SessionWindow => "session_window",
            Self::HoppingWindow => "hopping_window",
        }
    }
}

/// What a stage folds its records into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateKind {
    /// Purchase lines into an invoice: features and validity (session windows).
    Invoice,
    /// Distinct invoice numbers of cancellation lines (hopping windows).
    CancelledInvoices,
}

impl AggregateKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Invoice => "invoice",
            Self::CancelledInvoices => "cancelled_invoices",
        }
    }
}

/// The Online Retail columns, the default of `columns`.
pub const ONLINE_RETAIL_COLUMNS: [&str; 8] = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
];

/// One `[stages.NAME]` table. Keys that only one kind reads are refused on the other by
/// [`crate::config::Config::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StageConfig {
    /// `session_window` or `hopping_window`. Required.
    pub kind: Option<StageKind>,
    /// What records are folded into: `invoice` (session windows) or `cancelled_invoices`
    /// (hopping windows). Default: the kind's only one.
    pub aggregate: Option<AggregateKind>,
    /// Topic of the purchase lines (CSV, no header). Required.
    pub input_topic: String,
    /// The CSV columns of a line, in order. Default: the Online Retail columns.
    pub columns: Vec<String>,
    /// `processing` (wall clock) or `event` (InvoiceDate). Default: `processing` for session
    /// windows (the original's meaning), `event` for hopping windows.
    pub time: Option<TimeMode>,
    /// Session windows: seconds without a new line after which an invoice is complete.
    /// Default 40 in processing time, 120 in event time (the data has minute resolution).
    pub inactivity_gap_s: Option<u64>,
    /// Event time only: seconds a window waits past its end for out-of-order records.
    /// Default 60.
    pub grace_s: Option<u64>,
    /// Session windows: most invoices open at once per partition; past it the oldest is
    /// emitted early with `"closed_by": "max_open"`. Default 100000.
    pub max_open: usize,
    /// Session windows: how many emitted invoice numbers each partition remembers, so that a
    /// line arriving after its invoice was emitted is recognised as late. Default 100000.
    pub remember_closed: usize,
    /// Hopping windows: window size in seconds. Default 480 (8 minutes).
    pub size_s: Option<u64>,
    /// Hopping windows: seconds between window starts (`size_s` for tumbling windows).
    /// Default 60.
    pub advance_s: Option<u64>,
    /// Hopping windows, event time: seconds a partition may send nothing before the final
    /// count stops waiting for it (Flink's idleness). Default 30.
    pub idle_timeout_s: Option<u64>,
    /// The main output: `invoices` (valid invoices) or `cancellations` (final counts).
    /// Required.
    pub output_topic: String,
    /// Session windows: the invalid invoices. Required there.
    pub invalid_topic: Option<String>,
    /// Hopping windows: the per-partition partial counts, combined into `output_topic` by
    /// one task of the group. Must have exactly one partition. Required there.
    pub partials_topic: Option<String>,
    /// Records for a session or window already emitted, with reason `late`. Required.
    pub late_topic: String,
    /// Lines that cannot be read (not UTF-8, not CSV, wrong field count). Required.
    pub dead_letter_topic: String,
    /// Consumer group; default `<kafka.group_id>-<NAME>`. The combiner of a hopping window
    /// reads its partials in `<group>-combiner`.
    pub group_id: Option<String>,
}

impl Default for StageConfig {
    fn default() -> Self {
        Self {
            kind: None,
            aggregate: None,
            input_topic: String::new(),
            columns: ONLINE_RETAIL_COLUMNS
                .iter()
                .map(|c| c.to_string())
                .collect(),
            time: None,
            inactivity_gap_s: None,
            grace_s: None,
            max_open: 100_000,
            remember_closed: 100_000,
            size_s: None,
            advance_s: None,
            idle_timeout_s: None,
            output_topic: String::new(),
            invalid_topic: None,
            partials_topic: None,
            late_topic: String::new(),
            dead_letter_topic: String::new(),
            group_id: None,
        }
    }
}

impl StageConfig {
    /// The clock: `time`, else the kind's default.
    pub fn time_mode(&self) -> TimeMode {
        self.time.unwrap_or(match self.kind {
            Some(StageKind::HoppingWindow) => TimeMode::Event,
            _ => TimeMode::Processing,
        })
    }

    /// The inactivity gap in milliseconds.
    pub fn gap_ms(&self) -> i64 {
        let s = self.inactivity_gap_s.unwrap_or(match self.time_mode() {
            TimeMode::Processing => 40,
            TimeMode::Event => 120,
        });
        s as i64 * 1000
    }

    /// The grace period in milliseconds (0 in processing time).
    pub fn grace_ms(&self) -> i64 {
        match self.time_mode() {
            TimeMode::Processing => 0,
            TimeMode::Event => self.grace_s.unwrap_or(60) as i64 * 1000,
        }
    }

    /// Hopping window size in milliseconds.
    pub fn size_ms(&self) -> i64 {
        self.size_s.unwrap_or(480) as i64 * 1000
    }

    /// Hopping window advance in milliseconds.
    pub fn advance_ms(&self) -> i64 {
        self.advance_s.unwrap_or(60) as i64 * 1000
    }

    /// Idle timeout of a partition for the combined count, in milliseconds.
    pub fn idle_timeout_ms(&self) -> i64 {
        self.idle_timeout_s.unwrap_or(30) as i64 * 1000
    }

    /// The aggregate: `aggregate`, else the kind's only one.
    pub fn aggregate_kind(&self) -> AggregateKind {
        self.aggregate.unwrap_or(match self.kind {
            Some(StageKind::HoppingWindow) => AggregateKind::CancelledInvoices,
            _ => AggregateKind::Invoice,
        })
    }

    /// The consumer group: `group_id`, else `<kafka_group>-<name>`.
    pub fn group(&self, kafka_group: &str, name: &str) -> String {
        self.group_id
            .clone()
            .unwrap_or_else(|| format!("{kafka_group}-{name}"))
    }

    /// Every problem with this stage's keys, as (key under `stages.NAME.`, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let Some(kind) = self.kind else {
            out.push((
                "kind",
                "must be set: \"session_window\" (invoices) or \"hopping_window\" (cancellations)"
                    .into(),
            ));
            return out;
        };
        for (key, topic) in [
            ("input_topic", &self.input_topic),
            ("output_topic", &self.output_topic),
            ("late_topic", &self.late_topic),
            ("dead_letter_topic", &self.dead_letter_topic),
        ] {
            if topic.trim().is_empty() {
                out.push((key, "must be set".into()));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.columns {
            if c.trim().is_empty() || !seen.insert(c.as_str()) {
                out.push((
                    "columns",
                    format!("column names must be non-empty and unique ({c:?})"),
                ));
            }
        }
        for need in ["InvoiceNo", "InvoiceDate"] {
            if !self.columns.iter().any(|c| c == need) {
                out.push(("columns", format!("must include {need}")));
            }
        }
        let wrong_kind = |key: &'static str, set: bool, out: &mut Vec<(&'static str, String)>| {
            if set {
                out.push((
                    key,
                    format!("is not read by a {} stage; remove it", kind.name()),
                ));
            }
        };
        match kind {
            StageKind::SessionWindow => {
                if self.aggregate_kind() != AggregateKind::Invoice {
                    out.push((
                        "aggregate",
                        "a session_window aggregates \"invoice\"".into(),
                    ));
                }
                if self
                    .invalid_topic
                    .as_deref()
                    .is_none_or(|t| t.trim().is_empty())
                {
                    out.push(("invalid_topic", "must be set".into()));
                }
                if self.gap_ms() < 1000 || self.gap_ms() > 86_400_000 {
                    out.push(("inactivity_gap_s", "must be 1..=86400".into()));
                }
                if !(1..=10_000_000).contains(&self.max_open) {
                    out.push(("max_open", "must be 1..=10000000".into()));
                }
                if !(1..=10_000_000).contains(&self.remember_closed) {
                    out.push(("remember_closed", "must be 1..=10000000".into()));
                }
                wrong_kind("size_s", self.size_s.is_some(), &mut out);
                wrong_kind("advance_s", self.advance_s.is_some(), &mut out);
                wrong_kind("idle_timeout_s", self.idle_timeout_s.is_some(), &mut out);
                wrong_kind("partials_topic", self.partials_topic.is_some(), &mut out);
            }
            StageKind::HoppingWindow => {
                if self.aggregate_kind() != AggregateKind::CancelledInvoices {
                    out.push((
                        "aggregate",
                        "a hopping_window aggregates \"cancelled_invoices\"".into(),
                    ));
                }
                if self
                    .partials_topic
                    .as_deref()
                    .is_none_or(|t| t.trim().is_empty())
                {
                    out.push((
                        "partials_topic",
                        "must be set (a topic with one partition)".into(),
                    ));
                }
                if self.size_ms() < 1000 || self.size_ms() > 7 * 86_400_000 {
                    out.push(("size_s", "must be 1..=604800".into()));
                }
                if self.advance_ms() < 1000 || self.advance_ms() > self.size_ms() {
                    out.push(("advance_s", "must be 1..=size_s".into()));
                }
                if self.idle_timeout_ms() < 1000 {
                    out.push(("idle_timeout_s", "must be at least 1".into()));
                }
                wrong_kind(
                    "inactivity_gap_s",
                    self.inactivity_gap_s.is_some(),
                    &mut out,
                );
                wrong_kind("invalid_topic", self.invalid_topic.is_some(), &mut out);
            }
        }
        if self.grace_ms() > 86_400_000 {
            out.push(("grace_s", "must be 0..=86400".into()));
        }
        if self.time_mode() == TimeMode::Processing && self.grace_s.is_some() {
            out.push((
                "grace_s",
                "is read only with time = \"event\" (processing time has no out-of-order records)"
                    .into(),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> StageConfig {
        StageConfig {
            kind: Some(StageKind::SessionWindow),
            input_topic: "purchases".into(),
            output_topic: "invoices".into(),
            invalid_topic: Some("invalid_invoices".into()),
            late_topic: "purchases.late".into(),
            dead_letter_topic: "purchases.dead-letter".into(),
            ..StageConfig::default()
        }
    }

    #[test]
    fn defaults_follow_the_kind_and_clock() {
        let s = session();
        assert!(s.problems().is_empty(), "{:?}", s.problems());
        assert_eq!(s.time_mode(), TimeMode::Processing);
        assert_eq!(s.gap_ms(), 40_000);
        assert_eq!(s.grace_ms(), 0);
        let e = StageConfig {
            time: Some(TimeMode::Event),
            ..session()
        };
        assert_eq!(e.gap_ms(), 120_000);
        assert_eq!(e.grace_ms(), 60_000);
        let h = StageConfig {
            kind: Some(StageKind::HoppingWindow),
            invalid_topic: None,
            partials_topic: Some("cancellations.partials".into()),
            output_topic: "cancellations".into(),
            ..session()
        };
        assert!(h.problems().is_empty(), "{:?}", h.problems());
        assert_eq!(h.time_mode(), TimeMode::Event);
        assert_eq!((h.size_ms(), h.advance_ms()), (480_000, 60_000));
        assert_eq!(h.aggregate_kind(), AggregateKind::CancelledInvoices);
    }

    #[test]
    fn problems_name_their_keys() {
        let s = StageConfig {
            size_s: Some(60),
            grace_s: Some(5),
            invalid_topic: None,
            ..session()
        };
        let keys: Vec<_> = s.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["invalid_topic", "size_s", "grace_s"]);
        let h = StageConfig {
            kind: Some(StageKind::HoppingWindow),
            advance_s: Some(600),
            ..StageConfig::default()
        };
        let keys: Vec<_> = h.problems().into_iter().map(|(k, _)| k).collect();
        assert!(
            keys.contains(&"partials_topic") && keys.contains(&"advance_s"),
            "{keys:?}"
        );
        assert_eq!(StageConfig::default().problems()[0].0, "kind");
    }
}
