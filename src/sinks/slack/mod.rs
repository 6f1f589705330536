//! Slack alerts: a notifier task that reads every detector's output (anomalies) topic with its
//! own consumer group, groups anomalies as Prometheus Alertmanager does, and posts readable
//! Block Kit messages, committing the anomalies' offsets only once Slack has accepted the message carrying them
//! (or refused every form of it for its content, which resending cannot change).
//!
//! - [`anomaly`]: an anomaly record as read back from the anomalies topic.
//! - [`group`]: grouping by (detector, source topic, scorer id) with `group_wait` and
//!   `group_interval`.
//! - [`message`]: the Block Kit message of one alert, within Slack's limits and a size budget.
//! - [`client`]: posting to Slack (bot token or webhook) with rate limits and retries, and a
//!   smaller or text-only message when Slack refuses one for its content.
//! - [`offsets`]: which offsets, per (topic, partition) of the anomalies topics, are safe to
//!   commit.
//! - [`secret`]: the token and webhook URL, which never print.
//! - [`metrics`]: counters for `/metrics` and `/status`.
//! - [`notifier`]: the task that ties them together; [`run`] is its entry point.

pub mod anomaly;
pub mod client;
pub mod group;
pub mod message;
pub mod metrics;
pub mod notifier;
pub mod offsets;
pub mod secret;

pub use metrics::{SlackMetrics, SlackMetricsSnapshot};
pub use notifier::{NotifierError, run};
