//! The generator: synthetic transactions for demos and load tests, in the original project's
//! schema `{"id": 7, "data": [[x, y]], "current_time": "2026-11-22T19:57:31.123Z"}`, keyed by id;
//! with `label_outliers`, also `"outlier": true|false`, whether the point was drawn as an
//! outlier (uniform) rather than from a blob.
//!
//! Record `id` is drawn from its own RNG seeded by (`seed`, `id`), so a stream is reproducible
//! and a generator restarted by the supervisor carries on with the next id and the same values.
//!
//! That is the `transactions` profile. The `replay` profile ([`replay`]) writes a CSV file's
//! lines instead, with the code `anomalyd replay` runs; a restarted task resumes at the first
//! line not acknowledged. The `sensors` profile ([`sensors`]) writes sensor readings with
//! injected faults, keyed by sensor id, numbered like the transactions.

pub mod replay;
pub mod sensors;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use thiserror::Error;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{GeneratorConfig, GeneratorProfile};
use crate::metrics::Metrics;
use crate::sinks::{SinkError, enqueue};
use crate::supervisor::TaskStatus;
use crate::synthetic::{blob_point, outlier_point};
use replay::{Position, ReplayError, ReplayOptions};

/// Records awaiting acknowledgement at most; bounds memory when the broker is slow.
const IN_FLIGHT: usize = 10_000;

/// A finished delivery and whether its record was an outlier.
type Delivery = (Result<(), SinkError>, bool);

#[derive(Debug, Error)]
pub enum GeneratorError {
    #[error("generator: {0}")]
    Sink(#[from] SinkError),
    #[error("generator: replay: {0}")]
    Replay(#[from] ReplayError),
}

/// The record with this id in the stream of this seed.
pub fn record(seed: u64, id: u64, outlier_probability: f64, now: SystemTime) -> serde_json::Value {
    labelled_record(seed, id, outlier_probability, now).0
}

/// [`record`], and whether its point was drawn as an outlier (uniform over the square) rather
/// than from one of the blobs. An outlier may still land inside a blob.
pub fn labelled_record(
    seed: u64,
    id: u64,
    outlier_probability: f64,
    now: SystemTime,
) -> (serde_json::Value, bool) {
    // SplitMix-style mixing so neighbouring ids get unrelated streams.
    let mut rng = StdRng::seed_from_u64(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let outlier = rng.random_bool(outlier_probability);
    let point = if outlier {
        outlier_point(&mut rng)
    } else {
        blob_point(&mut rng)
    };
    let value = json!({
        "id": id,
        "data": [point],
        "current_time": humantime::format_rfc3339_millis(now).to_string(),
    });
    (value, outlier)
}

pub struct Generator {
    config: GeneratorConfig,
    producer: FutureProducer,
    metrics: Arc<Metrics>,
    /// The next id to write; survives restarts of [`Generator::run`].
    next_id: AtomicU64,
    /// replay: the next line to write; survives restarts likewise.
    position: Position,
    /// replay: the brokers, for messages.
    brokers: String,
}

impl Generator {
    /// `brokers` names the cluster in messages.
    pub fn new(
        config: GeneratorConfig,
        producer: FutureProducer,
        metrics: Arc<Metrics>,
        brokers: String,
    ) -> Self {
        Self {
            position: Position::new(config.from_line),
            config,
            producer,
            metrics,
            next_id: AtomicU64::new(0),
            brokers,
        }
    }

    /// Writes the configured profile's records until `count` are written or the file ends
    /// (then returns `Ok`), or `shutdown`.
    ///
    /// # Errors
    /// transactions, sensors: none but a record the producer refuses to queue. replay: a file
    /// or topic that is missing, brokers that do not answer, or a delivery that failed (the
    /// next run resumes at the first line not acknowledged).
    pub async fn run(
        &self,
        status: &TaskStatus,
        shutdown: CancellationToken,
    ) -> Result<(), GeneratorError> {
        match self.config.profile {
            GeneratorProfile::Transactions => {
                let c = &self.config;
                let make = |id: u64| {
                    let (mut value, outlier) =
                        labelled_record(c.seed, id, c.outlier_probability, SystemTime::now());
                    if c.label_outliers {
                        value["outlier"] = outlier.into();
                    }
                    (id.to_string(), value.to_string(), outlier)
                };
                self.run_numbered(status, shutdown, make).await
            }
            GeneratorProfile::Sensors => {
                let c = &self.config;
                let make = |n: u64| {
                    let (key, value, fault) = sensors::record(
                        c.seed,
                        c.sensors,
                        c.fault_share,
                        n,
                        SystemTime::now(),
                        c.label_faults,
                    );
                    (key, value.to_string(), fault.is_some())
                };
                self.run_numbered(status, shutdown, make).await
            }
            GeneratorProfile::Replay => self.run_replay(status, shutdown).await,
        }
    }

    /// The replay profile: [`replay::replay`] from the next line not yet acknowledged.
    async fn run_replay(
        &self,
        status: &TaskStatus,
        shutdown: CancellationToken,
    ) -> Result<(), GeneratorError> {
        let c = &self.config;
        let opts = ReplayOptions {
            file: c.file.clone().unwrap_or_default(),
            topic: c.topic.clone(),
            key_column: c.key_column.clone(),
            columns: c.columns.clone(),
            header: c.header,
            pace: c.pace,
            time_column: c.time_column.clone(),
            from_line: c.from_line,
            count: c.count,
            seed: c.seed,
        };
        let first = self.position.next_line.load(Relaxed);
        let acked_before = self.position.acknowledged.load(Relaxed);
        tracing::info!(topic = c.topic, file = %opts.file.display(), pace = %c.pace, from_line = first, "generator started (replay)");
        let progress = indicatif::ProgressBar::hidden();
        let beat = || status.heartbeat();
        let summary = replay::replay(
            &opts,
            &self.producer,
            &self.brokers,
            &self.position,
            &progress,
            &beat,
            shutdown,
        )
        .await;
        let acked = self.position.acknowledged.load(Relaxed) - acked_before;
        self.metrics.generated.fetch_add(acked, Relaxed);
        let mut summary = summary?;
        tracing::info!(
            lines_read = summary.lines_read,
            sent = summary.sent,
            acknowledged = summary.acknowledged,
            failed = summary.failed,
            keyless = summary.keyless,
            seconds = summary.elapsed.as_secs_f64(),
            next_line = ?summary.resume_from,
            "generator stopped (replay)"
        );
        match summary.error.take() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// The transactions and sensors profiles: record `id` is `make(id)`, (key, payload, whether
    /// it was drawn as an outlier or fault), from the next id on. Delivery failures after the
    /// producer's own retries are logged and counted, not fatal: the generator keeps going
    /// through broker hiccups.
    async fn run_numbered(
        &self,
        status: &TaskStatus,
        shutdown: CancellationToken,
        make: impl Fn(u64) -> (String, String, bool),
    ) -> Result<(), GeneratorError> {
        let c = &self.config;
        let interval = (c.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / c.rate));
        let start = tokio::time::Instant::now();
        let first = self.next_id.load(Relaxed);
        let mut deliveries = JoinSet::new();
        let mut failed = 0u64;
        tracing::info!(
            topic = c.topic,
            profile = ?c.profile,
            rate = c.rate,
            count = c.count,
            first_id = first,
            "generator started"
        );
        loop {
            let id = self.next_id.load(Relaxed);
            if c.count != 0 && id >= c.count {
                break;
            }
            status.heartbeat();
            if let Some(every) = interval {
                let due = start + every.mul_f64((id - first) as f64);
                // Wake at least once a second to beat, even at very low rates.
                while tokio::time::Instant::now() < due {
                    let nap = due.min(tokio::time::Instant::now() + Duration::from_secs(1));
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep_until(nap) => status.heartbeat(),
                    }
                }
                if shutdown.is_cancelled() {
                    break;
                }
            } else if shutdown.is_cancelled() {
                break;
            }
            let (key, payload, outlier) = make(id);
            let pending = enqueue(
                &self.producer,
                FutureRecord::to(&c.topic).key(&key).payload(&payload),
            )
            .await?;
            self.next_id.store(id + 1, Relaxed);
            deliveries.spawn(async move { (pending.delivered().await, outlier) });
            while let Some(done) = deliveries.try_join_next() {
                failed += self.settle(Some(done));
            }
            while deliveries.len() >= IN_FLIGHT {
                failed += self.settle(deliveries.join_next().await);
            }
        }
        while let Some(r) = deliveries.join_next().await {
            failed += self.settle(Some(r));
        }
        tracing::info!(
            sent = self.next_id.load(Relaxed) - first,
            acknowledged = self.metrics.generated.load(Relaxed),
            failed,
            "generator stopped"
        );
        Ok(())
    }

    /// Counts one finished delivery (and whether it was an outlier); returns 1 if it failed.
    fn settle(&self, r: Option<Result<Delivery, tokio::task::JoinError>>) -> u64 {
        match r {
            Some(Ok((Ok(()), outlier))) => {
                self.metrics.generated.fetch_add(1, Relaxed);
                if outlier {
                    self.metrics.generated_outliers.fetch_add(1, Relaxed);
                }
                0
            }
            Some(Ok((Err(e), _))) => {
                tracing::warn!(error = %e, "generated record not delivered");
                1
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_reproducible_and_follow_the_schema() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let a = record(42, 7, 0.2, t);
        assert_eq!(a, record(42, 7, 0.2, t));
        assert_ne!(a["data"], record(43, 7, 0.2, t)["data"]);
        assert_eq!(a["id"], 7);
        assert_eq!(a["current_time"], "2023-11-14T22:13:20.123Z");
        let point = a["data"][0].as_array().unwrap();
        assert_eq!(point.len(), 2);
    }

    #[test]
    fn labels_say_how_each_point_was_drawn() {
        let t = SystemTime::now();
        let mut outliers = 0;
        for id in 0..2000 {
            let (r, outlier) = labelled_record(5, id, 0.3, t);
            assert_eq!(r, record(5, id, 0.3, t), "the label changes nothing else");
            let x = r["data"][0][0].as_f64().unwrap();
            let y = r["data"][0][1].as_f64().unwrap();
            let near_blob = (x - 2.0).hypot(y - 2.0).min((x + 2.0).hypot(y + 2.0)) < 2.0;
            // Blob points sit within 2 (6.7 sd) of a centre; only outliers land further.
            if !near_blob {
                assert!(
                    outlier,
                    "id {id}: far point ({x}, {y}) labelled as a blob point"
                );
            }
            outliers += usize::from(outlier);
        }
        let share = outliers as f64 / 2000.0;
        assert!((0.26..0.34).contains(&share), "{share}");
        assert!(!labelled_record(5, 1, 0.0, t).1);
        assert!(labelled_record(5, 1, 1.0, t).1);
    }

    #[test]
    fn labels_are_off_unless_configured() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anomalyd.toml");
        let detector = "[detectors.tx]\ninput_topic = \"t\"\noutput_topic = \"a\"\n\
                        dead_letter_topic = \"d\"\nmodel = \"m.iforest\"\n";
        std::fs::write(&path, format!("[generator]\nenabled = true\n{detector}")).unwrap();
        assert!(!crate::config::load(&path).unwrap().generator.label_outliers);
        std::fs::write(
            &path,
            format!("[generator]\nlabel_outliers = true\n{detector}"),
        )
        .unwrap();
        assert!(crate::config::load(&path).unwrap().generator.label_outliers);
    }

    #[test]
    fn outlier_share_follows_the_probability() {
        let t = SystemTime::now();
        let far = |p: f64| {
            (0..4000)
                .filter(|&id| {
                    let r = record(1, id, p, t);
                    let x = r["data"][0][0].as_f64().unwrap();
                    let y = r["data"][0][1].as_f64().unwrap();
                    // further than 5 sd from both blob centres
                    ((x - 2.0).hypot(y - 2.0)).min((x + 2.0).hypot(y + 2.0)) > 1.5
                })
                .count()
        };
        assert_eq!(far(0.0), 0);
        let share = far(0.2) as f64 / 4000.0;
        // Uniform points in [-4,4]^2 land > 1.5 from both centres about 78 % of the time.
        assert!((0.12..0.20).contains(&share), "{share}");
    }
}
