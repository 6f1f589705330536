//! anomalyd: real-time anomaly detection on Kafka streams, as one small daemon.
//!
//! Records flow from a Kafka topic through a model and out to an anomalies topic, a dead-letter
//! topic and Slack. Everything is configured by one TOML file ([`config`]). Scaling out means
//! running more instances in the same consumer group: Kafka is the distributed engine.
//!
//! # Layout
//!
//! The modules follow the data:
//!
//! - [`config`]: the `anomalyd.toml` schema, loading with env overrides, and validation.
//! - [`source`]: where records come from: the detector's group consumer and the generator
//!   (synthetic transactions, or a CSV file's lines replayed in order, as `anomalyd replay`).
//! - [`stages`]: stateful steps before detection (session and hopping windows), and time.
//! - [`detect`]: features, the models (Isolation Forest, k-means, bisecting k-means) and their
//!   one file format, CEL rules, the A/B split between detectors, and the partition workers.
//! - [`sinks`]: where results go: the anomalies topic, the dead-letter topic, Slack alerts and the anomaly store (`anomalyd query`).
//! - [`web`]: the web view and its JSON API (`[web] listen`), reading the anomaly store.
//! - [`daemon`]: wires the configuration into supervised tasks; [`supervisor`] restarts them.
//! - [`control`]: the control socket (`/live`, `/ready`, `/status`, `/metrics`, `/reload`),
//!   and `anomalyd health` / `anomalyd ctl` that talk to it.
//! - [`notify`]: systemd readiness, reload, stopping and watchdog notifications.
//! - [`metrics`]: counters and latency histograms.
//! - [`signals`]: SIGTERM/SIGINT (stop) and SIGHUP (reload) as async messages.
//! - [`record`]: a record's JSON text read without converting it (features, splicing).
//! - [`tail`]: `anomalyd tail`, a topic's records as JSON lines.
//! - [`synthetic`]: the two-blob demo data shared by `train --synthetic` and the generator.
//! - [`offline`]: CSV input, ROC AUC and average precision, and the `train` and `eval` commands.
//! - [`kafka`]: librdkafka client settings shared by every consumer and producer.
//! - [`cli`]: the command line; `main.rs` only dispatches to the library.
//! - [`logging`]: tracing output as text or JSON on stderr.
//! - [`exit`]: process exit codes (`78` for a bad configuration).

#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod detect;
pub mod exit;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod offline;
pub mod record;
pub mod signals;
pub mod sinks;
pub mod source;
pub mod stages;
pub mod supervisor;
pub mod synthetic;
pub mod tail;
pub mod web;
