//! `/metrics` in the Prometheus text exposition format 0.0.4.
//!
//! Per-detector series carry a `detector` label (records, anomalies, dead letters, reloads,
//! partitions, lag, the model in service); batches, the latency histograms and the
//! generator's counters are the daemon's, over every detector.

use std::fmt::Write;

use super::status::{DetectorStatus, Status};
use crate::metrics::HistogramSnapshot;
use crate::supervisor::TaskState;

/// Renders the whole exposition from a status snapshot.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    let c = &s.counters;
    let mut counter = |name: &str, help: &str, v: u64| {
        family(&mut out, name, help, "counter");
        let _ = writeln!(out, "{name} {v}");
    };
    counter(
        "anomalyd_batches_total",
        "Batches scored, by every detector.",
        c.batches,
    );
    counter(
        "anomalyd_records_skipped_total",
        "Records none of whose outputs could be produced, not even a dead letter without its value.",
        c.records_skipped,
    );
    counter(
        "anomalyd_generated_total",
        "Records written by the generator and acknowledged.",
        c.generated,
    );
    counter(
        "anomalyd_generated_outliers_total",
        "Generated records drawn as outliers (uniform over the square), acknowledged.",
        c.generated_outliers,
    );
    let per_detector = |out: &mut String,
                        name: &str,
                        help: &str,
                        kind: &str,
                        v: &dyn Fn(&DetectorStatus) -> String| {
        family(out, name, help, kind);
        for d in &s.detectors {
            let _ = writeln!(out, "{name}{{detector=\"{}\"}} {}", escape(&d.name), v(d));
        }
    };
    per_detector(
        &mut out,
        "anomalyd_records_total",
        "Records scored.",
        "counter",
        &|d| d.records.to_string(),
    );
    per_detector(
        &mut out,
        "anomalyd_records_skipped_by_split_total",
        "Records of another A/B variant, skipped unscored (0 without a split).",
        "counter",
        &|d| d.records_skipped_by_split.to_string(),
    );
    per_detector(
        &mut out,
        "anomalyd_anomalies_total",
        "Anomalies published.",
        "counter",
        &|d| d.anomalies.to_string(),
    );
    per_detector(
        &mut out,
        "anomalyd_model_reloads_total",
        "Model reloads that put a new model in service.",
        "counter",
        &|d| d.model.history.reloads.to_string(),
    );
    per_detector(
        &mut out,
        "anomalyd_model_reload_failures_total",
        "Model reloads refused (the old model kept serving).",
        "counter",
        &|d| d.model.history.failed_reloads.to_string(),
    );
    per_detector(
        &mut out,
        "anomalyd_orphaned_partitions",
        "Partitions of the input topic that look owned by no live member of the detector's group.",
        "gauge",
        &|d| d.orphaned_partitions.len().to_string(),
    );
    per_detector(
        &mut out,
        "anomalyd_assigned_partitions",
        "Partitions this instance holds.",
        "gauge",
        &|d| d.partitions.len().to_string(),
    );

    family(
        &mut out,
        "anomalyd_dead_letters_total",
        "Records sent to the dead-letter topic, by reason.",
        "counter",
    );
    for d in &s.detectors {
        for (reason, n) in &d.dead_letters {
            let _ = writeln!(
                out,
                "anomalyd_dead_letters_total{{detector=\"{}\",reason=\"{reason}\"}} {n}",
                escape(&d.name)
            );
        }
    }

    histogram(
        &mut out,
        "anomalyd_batch_size",
        "Records per scored batch.",
        &c.batch_size,
    );
    histogram(
        &mut out,
        "anomalyd_score_seconds",
        "Time to extract features and score a batch.",
        &c.score_latency,
    );
    histogram(
        &mut out,
        "anomalyd_delivery_seconds",
        "Time from producing a batch's results to their acknowledgement.",
        &c.delivery_latency,
    );
    histogram(
        &mut out,
        "anomalyd_end_to_end_seconds",
        "From a source record's timestamp to its anomaly's acknowledgement.",
        &c.end_to_end_latency,
    );

    family(
        &mut out,
        "anomalyd_task_restarts_total",
        "Restarts of each supervised task.",
        "counter",
    );
    for t in &s.tasks {
        let _ = writeln!(
            out,
            "anomalyd_task_restarts_total{{task=\"{}\"}} {}",
            t.name, t.restarts
        );
    }
    family(
        &mut out,
        "anomalyd_task_up",
        "1 while a supervised task runs (or finished its job), 0 while it waits to be restarted.",
        "gauge",
    );
    for t in &s.tasks {
        let up = u8::from(t.state != TaskState::Backoff);
        let _ = writeln!(out, "anomalyd_task_up{{task=\"{}\"}} {up}", t.name);
    }

    family(
        &mut out,
        "anomalyd_partition_lag",
        "Records not yet processed on each assigned partition.",
        "gauge",
    );
    for d in &s.detectors {
        for p in &d.partitions {
            if let Some(lag) = p.offsets.lag {
                let _ = writeln!(
                    out,
                    "anomalyd_partition_lag{{detector=\"{}\",topic=\"{}\",partition=\"{}\"}} {lag}",
                    escape(&d.name),
                    escape(&p.offsets.topic),
                    p.offsets.partition
                );
            }
        }
    }

    if let Some(st) = &s.store {
        let c = &st.counters;
        for (name, help, v) in [
            (
                "anomalyd_store_rows_total",
                "Anomaly rows written to the store.",
                c.rows_stored,
            ),
            (
                "anomalyd_store_duplicates_total",
                "Anomalies already in the store (same topic, partition, offset): ignored.",
                c.duplicates_ignored,
            ),
            (
                "anomalyd_store_skipped_total",
                "Records on the anomalies topics that are not anomalies: not stored.",
                c.skipped_records,
            ),
            (
                "anomalyd_store_event_time_fallbacks_total",
                "Rows stored with the Kafka timestamp: event_time_field missing or not RFC 3339.",
                c.event_time_fallbacks,
            ),
            (
                "anomalyd_store_expired_total",
                "Rows deleted by retention.",
                c.rows_expired,
            ),
        ] {
            family(&mut out, name, help, "counter");
            let _ = writeln!(out, "{name} {v}");
        }
        family(
            &mut out,
            "anomalyd_store_failing",
            "1 when the last store write failed.",
            "gauge",
        );
        let _ = writeln!(out, "anomalyd_store_failing {}", u8::from(c.failing));
    }

    if let Some(sl) = &s.slack {
        for (name, help, v) in [
            (
                "anomalyd_slack_alerts_total",
                "Slack messages accepted.",
                sl.alerts_sent,
            ),
            (
                "anomalyd_slack_anomalies_alerted_total",
                "Anomalies carried by accepted Slack messages.",
                sl.anomalies_alerted,
            ),
            (
                "anomalyd_slack_alerts_reduced_total",
                "Slack messages accepted only in a smaller form after a refusal for content.",
                sl.alerts_reduced,
            ),
            (
                "anomalyd_slack_alerts_refused_total",
                "Alerts Slack refused in every form for their content (not sent).",
                sl.alerts_refused,
            ),
            (
                "anomalyd_slack_retries_total",
                "Slack requests retried (429, 5xx, timeouts, connection errors).",
                sl.retries,
            ),
            (
                "anomalyd_slack_rate_limited_total",
                "Slack answers 429 Too Many Requests.",
                sl.rate_limited,
            ),
            (
                "anomalyd_slack_failures_total",
                "Slack requests that failed.",
                sl.failures,
            ),
        ] {
            family(&mut out, name, help, "counter");
            let _ = writeln!(out, "{name} {v}");
        }
        family(
            &mut out,
            "anomalyd_slack_backoff_seconds",
            "Current wait before the next Slack attempt.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "anomalyd_slack_backoff_seconds {}",
            sl.backoff_ms as f64 / 1000.0
        );
        family(
            &mut out,
            "anomalyd_slack_pending_anomalies",
            "Anomalies read but not yet accepted by Slack.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "anomalyd_slack_pending_anomalies {}",
            sl.pending_anomalies
        );
        family(
            &mut out,
            "anomalyd_slack_failing",
            "1 from a Slack failure until the next accepted message.",
            "gauge",
        );
        let _ = writeln!(out, "anomalyd_slack_failing {}", u8::from(sl.failing));
    }

    let mut gauge = |name: &str, help: &str, v: String| {
        family(&mut out, name, help, "gauge");
        let _ = writeln!(out, "{name} {v}");
    };
    gauge(
        "anomalyd_ready",
        "1 when ready to score.",
        u8::from(s.ready).to_string(),
    );
    gauge(
        "anomalyd_degraded",
        "1 when a task fails repeatedly or hangs.",
        u8::from(s.degraded).to_string(),
    );
    gauge(
        "anomalyd_uptime_seconds",
        "Seconds since start.",
        s.uptime_s.to_string(),
    );
    stage_families(&mut out, &s.stages);
    family(
        &mut out,
        "anomalyd_model_info",
        "The model in service, per detector.",
        "gauge",
    );
    for d in &s.detectors {
        let _ = writeln!(
            out,
            "anomalyd_model_info{{detector=\"{}\",id=\"{}\",kind=\"{}\"}} 1",
            escape(&d.name),
            escape(&d.model.id),
            escape(&d.model.kind)
        );
    }
    out
}

/// Each stage's counters, labelled `stage="NAME"`.
fn stage_families(out: &mut String, stages: &[super::status::StageStatus]) {
    if stages.is_empty() {
        return;
    }
    type Get = fn(&crate::stages::metrics::StageSnapshot) -> i64;
    let rows: [(&str, &str, &str, Get); 10] = [
        (
            "anomalyd_stage_records_total",
            "Records a stage read (re-reads after a restart included).",
            "counter",
            |c| c.records_in as i64,
        ),
        (
            "anomalyd_stage_emitted_total",
            "Results a stage emitted to its main output: valid invoices, partial and final window counts.",
            "counter",
            |c| c.emitted as i64,
        ),
        (
            "anomalyd_stage_invalid_total",
            "Invoices emitted to the invalid output.",
            "counter",
            |c| c.invalid as i64,
        ),
        (
            "anomalyd_stage_late_total",
            "Records for a session or window already emitted, sent to the late output.",
            "counter",
            |c| c.late as i64,
        ),
        (
            "anomalyd_stage_dead_letters_total",
            "Records a stage could not read, sent to the dead letters.",
            "counter",
            |c| c.dead_letters as i64,
        ),
        (
            "anomalyd_stage_skipped_total",
            "Records a stage does not aggregate (cancellation lines for invoices; other lines for cancellations).",
            "counter",
            |c| c.skipped as i64,
        ),
        (
            "anomalyd_stage_closed_early_total",
            "Sessions emitted before their gap because max_open was reached.",
            "counter",
            |c| c.closed_early as i64,
        ),
        (
            "anomalyd_stage_partials_late_total",
            "Partial counts for a window already final, ignored.",
            "counter",
            |c| c.partials_late as i64,
        ),
        (
            "anomalyd_stage_outputs_refused_total",
            "Stage outputs the broker refused for their content, skipped.",
            "counter",
            |c| c.outputs_refused as i64,
        ),
        (
            "anomalyd_stage_open",
            "Sessions or windows open now on this instance.",
            "gauge",
            |c| c.open,
        ),
    ];
    for (name, help, kind, get) in rows {
        family(out, name, help, kind);
        for st in stages {
            let _ = writeln!(
                out,
                "{name}{{stage=\"{}\"}} {}",
                escape(&st.name),
                get(&st.counters)
            );
        }
    }
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, help: &str, h: &HistogramSnapshot) {
    family(out, name, help, "histogram");
    let mut cumulative = 0;
    for (i, n) in h.counts.iter().enumerate() {
        cumulative += n;
        let le = h
            .bounds
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", h.sum, h.count);
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Histogram;

    #[test]
    fn histograms_are_cumulative_with_inf() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(5.0);
        let mut out = String::new();
        histogram(&mut out, "x", "help", &h.snapshot());
        assert!(out.contains("x_bucket{le=\"0.1\"} 1\n"));
        assert!(out.contains("x_bucket{le=\"1\"} 2\n"));
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"));
        assert!(out.contains("x_count 3\n"));
        assert!(out.contains("# TYPE x histogram\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn each_stage_has_its_series_labelled_by_name() {
        let stage = super::super::status::StageStatus {
            name: "invoices".into(),
            kind: "session_window",
            time: "processing",
            input_topic: "purchases".into(),
            groups: Default::default(),
            lag: Vec::new(),
            counters: crate::stages::metrics::StageSnapshot {
                records_in: 120,
                emitted: 9,
                open: 3,
                late: 1,
                ..Default::default()
            },
        };
        let mut out = String::new();
        stage_families(&mut out, &[]);
        assert_eq!(out, "", "no stage, no series");
        stage_families(&mut out, &[stage]);
        for line in [
            "# TYPE anomalyd_stage_records_total counter\n",
            "anomalyd_stage_records_total{stage=\"invoices\"} 120\n",
            "anomalyd_stage_emitted_total{stage=\"invoices\"} 9\n",
            "anomalyd_stage_late_total{stage=\"invoices\"} 1\n",
            "# TYPE anomalyd_stage_open gauge\n",
            "anomalyd_stage_open{stage=\"invoices\"} 3\n",
        ] {
            assert!(out.contains(line), "{line} in\n{out}");
        }
    }
}
