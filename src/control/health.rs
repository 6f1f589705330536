//! `anomalyd health`: one line and a Nagios exit code, for monitoring systems.
//!
//! 0 OK, 1 WARNING (degraded: a task failing repeatedly or hung, Slack alerts failing, no
//! partitions held past the grace, partitions of the input topic orphaned), 2 CRITICAL (not
//! ready: the broker unreachable, not joined the group yet, no partitions held while some are
//! orphaned, a critical task failing), 3 UNKNOWN (no socket, or no answer within the timeout).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::client;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Warning => "WARNING",
            Self::Critical => "CRITICAL",
            Self::Unknown => "UNKNOWN",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub verdict: Verdict,
    /// The one line monitoring shows.
    pub line: String,
    /// More lines for `-v`: tasks and partitions.
    pub detail: Vec<String>,
}

/// Asks the daemon on `socket` and judges its answer.
pub async fn check(socket: &Path, timeout: Duration) -> Health {
    match client::request(socket, "GET", "/status", timeout).await {
        Ok((200, body)) => match serde_json::from_str::<Value>(&body) {
            Ok(status) => judge(&status),
            Err(e) => unknown(format!("unreadable /status: {e}")),
        },
        Ok((code, _)) => unknown(format!("/status answered {code}")),
        Err(e) => unknown(e.to_string()),
    }
}

fn unknown(why: String) -> Health {
    Health {
        verdict: Verdict::Unknown,
        line: format!("UNKNOWN anomalyd: {why}"),
        detail: Vec::new(),
    }
}

/// The verdict for a `/status` document.
pub fn judge(s: &Value) -> Health {
    let tasks = s["tasks"].as_array().cloned().unwrap_or_default();
    let notifier = tasks.iter().find(|t| t["name"] == "notifier");
    let slack = match notifier {
        None => "off",
        Some(t) if t["state"] == "backoff" || t["degraded"] == true => "failing",
        Some(_) if s["slack"]["failing"] == true => "failing",
        Some(_) => "ok",
    };
    let detectors = s["detectors"].as_array().cloned().unwrap_or_default();
    let models: Vec<String> = detectors
        .iter()
        .map(|d| {
            format!(
                "{}:{}",
                d["name"].as_str().unwrap_or("?"),
                d["model"]["id"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let partitions: usize = detectors
        .iter()
        .map(|d| d["partitions"].as_array().map_or(0, Vec::len))
        .sum();
    let facts = format!(
        "detectors={} partitions={partitions} lag={} slack={slack}",
        models.join(","),
        s["lag"].as_i64().unwrap_or(0),
    );
    let version = s["version"].as_str().unwrap_or("?");
    let up = human_duration(s["uptime_s"].as_u64().unwrap_or(0));

    let not_ready: Vec<String> = s["not_ready"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut problems = Vec::new();
    for t in &tasks {
        if t["degraded"] == true || t["state"] == "backoff" {
            problems.push(format!(
                "{}: {}",
                t["name"].as_str().unwrap_or("?"),
                t["last_error"].as_str().unwrap_or("failing")
            ));
        }
    }
    if s["slack"]["failing"] == true && !problems.iter().any(|p| p.starts_with("notifier")) {
        problems.push(format!(
            "slack: {}",
            s["slack"]["last_error"].as_str().unwrap_or("failing")
        ));
    }
    for w in s["warnings"].as_array().into_iter().flatten() {
        problems.push(w.as_str().unwrap_or("?").to_owned());
    }
    for d in &detectors {
        if let Some(e) = d["model"]["last_error"].as_str() {
            problems.push(format!(
                "detector {}: last reload refused: {e}",
                d["name"].as_str().unwrap_or("?")
            ));
        }
    }

    let (verdict, line) = if s["ready"] != true {
        (
            Verdict::Critical,
            format!(
                "CRITICAL anomalyd {version} up {up} not ready: {} {facts}",
                not_ready.join("; ")
            ),
        )
    } else if s["degraded"] == true || slack == "failing" {
        (
            Verdict::Warning,
            format!(
                "WARNING anomalyd {version} up {up} {facts} ({})",
                problems.join("; ")
            ),
        )
    } else {
        (
            Verdict::Ok,
            format!("OK anomalyd {version} up {up} {facts}"),
        )
    };
    debug_assert!(line.starts_with(verdict.word()));

    let mut detail: Vec<String> = tasks
        .iter()
        .map(|t| {
            format!(
                "task {} {} restarts={}{}",
                t["name"].as_str().unwrap_or("?"),
                t["state"].as_str().unwrap_or("?"),
                t["restarts"],
                t["last_error"]
                    .as_str()
                    .map(|e| format!(" last_error={e}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    for d in &detectors {
        let name = d["name"].as_str().unwrap_or("?");
        detail.push(format!(
            "detector {name} {} model={} kind={} input={} group={} output={} lag={} records={} \
             anomalies={} dead_letters={}",
            if d["ready"] == true {
                "ready"
            } else {
                "not-ready"
            },
            d["model"]["id"].as_str().unwrap_or("?"),
            d["model"]["kind"].as_str().unwrap_or("?"),
            d["input_topic"].as_str().unwrap_or("?"),
            d["group_id"].as_str().unwrap_or("?"),
            d["output_topic"].as_str().unwrap_or("?"),
            d["lag"],
            d["records"],
            d["anomalies"],
            d["dead_letters"]
                .as_object()
                .map_or(0, |m| m.values().filter_map(Value::as_u64).sum::<u64>()),
        ));
        for p in d["partitions"].as_array().into_iter().flatten() {
            detail.push(format!(
                "  partition {}/{} committed={} lag={} records={}",
                p["topic"].as_str().unwrap_or("?"),
                p["partition"],
                p["committed"],
                p["lag"],
                p["records"]
            ));
        }
        for o in d["orphaned_partitions"].as_array().into_iter().flatten() {
            detail.push(format!(
                "  partition {}/{} looks orphaned: committed={} high_watermark={} stalled={}s (owned by no live member)",
                o["topic"].as_str().unwrap_or("?"),
                o["partition"],
                o["committed"]
                    .as_i64()
                    .map_or_else(|| "none".to_owned(), |c| c.to_string()),
                o["high_watermark"],
                o["stalled_s"]
            ));
        }
    }
    for st in s["stages"].as_array().into_iter().flatten() {
        let c = &st["counters"];
        detail.push(format!(
            "stage {} {} time={} input={} records={} open={} emitted={} invalid={} late={} \
             dead_letters={}",
            st["name"].as_str().unwrap_or("?"),
            st["kind"].as_str().unwrap_or("?"),
            st["time"].as_str().unwrap_or("?"),
            st["input_topic"].as_str().unwrap_or("?"),
            c["records_in"],
            c["open"],
            c["emitted"],
            c["invalid"],
            c["late"],
            c["dead_letters"],
        ));
        for (group, held) in st["groups"].as_object().into_iter().flatten() {
            let held: Vec<&str> = held
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            detail.push(format!("  group {group} partitions={}", held.join(",")));
        }
        for p in st["lag"].as_array().into_iter().flatten() {
            detail.push(format!(
                "  partition {}/{} committed={} lag={} (safe offset)",
                p["topic"].as_str().unwrap_or("?"),
                p["partition"],
                p["committed"]
                    .as_i64()
                    .map_or_else(|| "none".to_owned(), |c| c.to_string()),
                p["lag"]
            ));
        }
    }
    Health {
        verdict,
        line,
        detail,
    }
}

/// `3h`, `12m`, `45s`, `2d`: the largest whole unit.
fn human_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(ready: bool, degraded: bool, notifier_state: Option<&str>) -> Value {
        let mut tasks = vec![
            json!({"name": "detector:tx", "state": "running", "restarts": 0, "degraded": false}),
        ];
        if let Some(state) = notifier_state {
            tasks.push(json!({"name": "notifier", "state": state, "restarts": 3,
                              "degraded": false, "last_error": "invalid_auth"}));
        }
        json!({
            "version": "0.1.0", "uptime_s": 10_800, "ready": ready, "degraded": degraded,
            "not_ready": if ready { json!([]) } else { json!(["no partitions assigned yet"]) },
            "tasks": tasks,
            "detectors": [{
                "name": "tx", "ready": ready, "input_topic": "t", "group_id": "g-tx",
                "output_topic": "a", "lag": 12, "records": 5, "anomalies": 1,
                "dead_letters": {"not_json": 2},
                "model": {"id": "3fa2c1", "kind": "isolation_forest", "last_error": null},
                "partitions": [{"topic": "t", "partition": 0, "committed": 5, "lag": 12, "records": 5}],
            }],
            "lag": 12,
        })
    }

    #[test]
    fn ok_line_has_the_facts() {
        let h = judge(&status(true, false, Some("running")));
        assert_eq!(h.verdict, Verdict::Ok);
        assert_eq!(
            h.line,
            "OK anomalyd 0.1.0 up 3h detectors=tx:3fa2c1 partitions=1 lag=12 slack=ok"
        );
        assert_eq!(
            h.detail[h.detail.len() - 2..],
            [
                "detector tx ready model=3fa2c1 kind=isolation_forest input=t group=g-tx \
                 output=a lag=12 records=5 anomalies=1 dead_letters=2",
                "  partition t/0 committed=5 lag=12 records=5"
            ]
        );
        assert_eq!(
            judge(&status(true, false, None)).line.rsplit(' ').next(),
            Some("slack=off")
        );
    }

    #[test]
    fn failing_slack_is_a_warning_not_critical() {
        let h = judge(&status(true, false, Some("backoff")));
        assert_eq!(h.verdict, Verdict::Warning);
        assert!(
            h.line.contains("slack=failing (notifier: invalid_auth)"),
            "{}",
            h.line
        );
    }

    #[test]
    fn not_ready_is_critical_and_degraded_is_warning() {
        let h = judge(&status(false, false, None));
        assert_eq!(h.verdict, Verdict::Critical);
        assert!(
            h.line.contains("not ready: no partitions assigned yet"),
            "{}",
            h.line
        );
        assert_eq!(judge(&status(true, true, None)).verdict, Verdict::Warning);
    }

    #[test]
    fn warnings_and_orphans_are_shown() {
        let mut s = status(true, false, None);
        s["degraded"] = json!(true);
        s["warnings"] = json!(["partitions t/1 look orphaned (owned by no live member)"]);
        s["detectors"][0]["orphaned_partitions"] = json!([
            {"topic": "t", "partition": 1, "committed": 40, "high_watermark": 90, "stalled_s": 14},
            {"topic": "t", "partition": 2, "committed": null, "high_watermark": 7, "stalled_s": 12}
        ]);
        let h = judge(&s);
        assert_eq!(h.verdict, Verdict::Warning);
        assert!(
            h.line
                .ends_with("(partitions t/1 look orphaned (owned by no live member))"),
            "{}",
            h.line
        );
        assert_eq!(
            &h.detail[h.detail.len() - 2..],
            [
                "  partition t/1 looks orphaned: committed=40 high_watermark=90 stalled=14s (owned by no live member)",
                "  partition t/2 looks orphaned: committed=none high_watermark=7 stalled=12s (owned by no live member)"
            ]
        );
    }

    #[test]
    fn a_refused_reload_names_its_detector() {
        let mut s = status(true, true, None);
        s["detectors"][0]["model"]["last_error"] = json!("bad checksum");
        let h = judge(&s);
        assert_eq!(h.verdict, Verdict::Warning);
        assert!(
            h.line
                .ends_with("(detector tx: last reload refused: bad checksum)"),
            "{}",
            h.line
        );
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(human_duration(59), "59s");
        assert_eq!(human_duration(61), "1m");
        assert_eq!(human_duration(7200), "2h");
        assert_eq!(human_duration(200_000), "2d");
    }

    #[tokio::test]
    async fn no_socket_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let h = check(&dir.path().join("none.sock"), Duration::from_secs(2)).await;
        assert_eq!(h.verdict, Verdict::Unknown);
        assert!(
            h.line.starts_with("UNKNOWN anomalyd: cannot connect to"),
            "{}",
            h.line
        );
    }
    #[test]
    fn verbose_lists_each_stage_with_its_groups_and_safe_offsets() {
        let mut s = status(true, false, None);
        s["stages"] = json!([{
            "name": "invoices", "kind": "session_window", "time": "processing",
            "input_topic": "purchases",
            "groups": {"anomalyd-invoices": ["purchases/0", "purchases/2"]},
            "lag": [{"topic": "purchases", "partition": 0, "committed": 40,
                     "high_watermark": 55, "lag": 15}],
            "counters": {"records_in": 120, "open": 3, "emitted": 9, "invalid": 2, "late": 1,
                         "dead_letters": 0, "committed": {"purchases/0": 40}},
        }]);
        let h = judge(&s);
        assert_eq!(h.verdict, Verdict::Ok);
        let tail: Vec<&str> = h
            .detail
            .iter()
            .rev()
            .take(3)
            .rev()
            .map(String::as_str)
            .collect();
        assert_eq!(
            tail,
            [
                "stage invoices session_window time=processing input=purchases records=120 open=3 \
                 emitted=9 invalid=2 late=1 dead_letters=0",
                "  group anomalyd-invoices partitions=purchases/0,purchases/2",
                "  partition purchases/0 committed=40 lag=15 (safe offset)",
            ]
        );
    }
}
