//! Grouping, as Prometheus Alertmanager does it: anomalies are grouped by (detector, source
//! topic, model id), so one alert never mixes detectors, even when they share an output topic. A new group gathers for `group_wait`, then sends one alert; anomalies that arrive later
//! go out at most every `group_interval`, again as one alert with their count and the top N by
//! score. A group with nothing new when its interval ends is dropped, so the next anomaly starts
//! a fresh `group_wait`. A storm therefore costs one message per group per interval.
//!
//! Time is passed in, so the rules are tested without sleeping.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::anomaly::Anomaly;

/// What anomalies are grouped by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKey {
    /// The `[detectors.NAME]` that flagged the anomalies.
    pub detector: String,
    /// The topic the scored records were read from.
    pub topic: String,
    /// The scorer's id (for rules, the id of their text).
    pub model_id: String,
}

/// A record's place on an anomalies topic: (topic, partition, offset).
pub type Position = (Arc<str>, i32, i64);

/// The anomalies of one group gathered since its last alert: what one message carries.
#[derive(Debug, Clone)]
pub struct Alert {
    pub key: GroupKey,
    pub model_kind: String,
    /// For a rules detector, every rule that fired in any anomaly gathered (sorted).
    pub rules: BTreeSet<String>,
    /// Every anomaly gathered, shown or not.
    pub count: u64,
    /// The most anomalous (lowest score) first; at most `top_n`.
    pub top: Vec<Anomaly>,
    /// Positions on the anomalies topics of every anomaly counted: committed once sent.
    pub positions: Vec<Position>,
    /// Per source partition, the lowest and highest source offset among the anomalies.
    pub source_ranges: BTreeMap<i32, (i64, i64)>,
    /// Earliest and latest `detected_at` (RFC 3339 strings of one format sort as times).
    pub first_detected: String,
    pub last_detected: String,
}

impl Alert {
    fn new(key: GroupKey, first: &Anomaly) -> Self {
        Self {
            key,
            model_kind: first.model.kind.clone(),
            rules: BTreeSet::new(),
            count: 0,
            top: Vec::new(),
            positions: Vec::new(),
            source_ranges: BTreeMap::new(),
            first_detected: first.detected_at.clone(),
            last_detected: first.detected_at.clone(),
        }
    }

    fn add(&mut self, anomaly: Anomaly, at: Position, top_n: usize) {
        self.count += 1;
        self.positions.push(at);
        self.rules.extend(anomaly.rules.iter().cloned());
        let s = &anomaly.source;
        let range = self
            .source_ranges
            .entry(s.partition)
            .or_insert((s.offset, s.offset));
        range.0 = range.0.min(s.offset);
        range.1 = range.1.max(s.offset);
        if anomaly.detected_at < self.first_detected {
            self.first_detected.clone_from(&anomaly.detected_at);
        }
        if anomaly.detected_at > self.last_detected {
            self.last_detected.clone_from(&anomaly.detected_at);
        }
        // Kept sorted; ties keep arrival order, so the earliest of equal scores is shown.
        let i = self
            .top
            .partition_point(|a| by_score(a, &anomaly) != Ordering::Greater);
        if i < top_n {
            self.top.insert(i, anomaly);
            self.top.truncate(top_n);
        }
    }
}

fn by_score(a: &Anomaly, b: &Anomaly) -> Ordering {
    a.score.total_cmp(&b.score)
}

#[derive(Debug)]
struct Group {
    /// When this group may send next.
    next_flush: Instant,
    pending: Option<Alert>,
}

/// Every open group, with the timing rules.
#[derive(Debug)]
pub struct Grouper {
    wait: Duration,
    interval: Duration,
    top_n: usize,
    groups: BTreeMap<GroupKey, Group>,
    pending: u64,
}

impl Grouper {
    pub fn new(wait: Duration, interval: Duration, top_n: usize) -> Self {
        Self {
            wait,
            interval,
            top_n: top_n.max(1),
            groups: BTreeMap::new(),
            pending: 0,
        }
    }

    pub fn add(&mut self, now: Instant, anomaly: Anomaly, at: Position) {
        let key = GroupKey {
            detector: anomaly.detector.clone(),
            topic: anomaly.source.topic.clone(),
            model_id: anomaly.model.id.clone(),
        };
        let wait = self.wait;
        let group = self.groups.entry(key.clone()).or_insert_with(|| Group {
            next_flush: now + wait,
            pending: None,
        });
        group
            .pending
            .get_or_insert_with(|| Alert::new(key, &anomaly))
            .add(anomaly, at, self.top_n);
        self.pending += 1;
    }

    /// When the next group is due (to send, or to be dropped if it has nothing new).
    pub fn next_due(&self) -> Option<Instant> {
        self.groups.values().map(|g| g.next_flush).min()
    }

    /// The alert of the group most overdue at `now`, if any; its next alert may not go out
    /// before `now + group_interval`. Due groups with nothing new are dropped on the way.
    pub fn take_due(&mut self, now: Instant) -> Option<Alert> {
        loop {
            let (key, group) = self
                .groups
                .iter_mut()
                .filter(|(_, g)| g.next_flush <= now)
                .min_by_key(|(_, g)| g.next_flush)?;
            match group.pending.take() {
                Some(alert) => {
                    group.next_flush = now + self.interval;
                    self.pending -= alert.count;
                    return Some(alert);
                }
                None => {
                    let key = key.clone();
                    self.groups.remove(&key);
                }
            }
        }
    }

    /// Anomalies gathered and not yet taken.
    pub fn pending(&self) -> u64 {
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::slack::anomaly::{ModelRef, Source};

    pub(crate) fn anomaly(topic: &str, model: &str, score: f64, offset: i64) -> Anomaly {
        Anomaly {
            detector: "d".into(),
            rules: vec![],
            score,
            model: ModelRef {
                id: model.into(),
                kind: "isolation_forest".into(),
            },
            source: Source {
                topic: topic.into(),
                partition: (offset % 3) as i32,
                offset,
            },
            detected_at: format!("2026-01-01T00:00:{:02}.000Z", offset % 60),
            explanation: vec![],
            id: Some(offset.to_string()),
        }
    }

    fn at(partition: i32, offset: i64) -> Position {
        ("tx-anomalies".into(), partition, offset)
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_new_group_waits_then_sends_everything_gathered_at_once() {
        let t0 = Instant::now();
        let mut g = Grouper::new(30 * S, 300 * S, 3);
        for i in 0..10 {
            g.add(
                t0 + i * S,
                anomaly("tx", "m1", -0.5 - i as f64 / 100.0, i.into()),
                at(0, i.into()),
            );
        }
        assert_eq!(
            g.next_due(),
            Some(t0 + 30 * S),
            "the first anomaly starts the wait"
        );
        assert!(g.take_due(t0 + 29 * S).is_none());
        let a = g.take_due(t0 + 30 * S).expect("due");
        assert_eq!(a.count, 10);
        assert_eq!(a.positions.len(), 10);
        let top: Vec<i64> = a.top.iter().map(|x| x.source.offset).collect();
        assert_eq!(top, [9, 8, 7], "top 3, lowest score first");
        assert_eq!(a.source_ranges[&0], (0, 9));
        assert_eq!(a.source_ranges[&1], (1, 7));
        assert_eq!(a.first_detected, "2026-01-01T00:00:00.000Z");
        assert_eq!(a.last_detected, "2026-01-01T00:00:09.000Z");
        assert_eq!(g.pending(), 0);
    }

    #[test]
    fn later_anomalies_wait_for_the_group_interval() {
        let t0 = Instant::now();
        let mut g = Grouper::new(30 * S, 300 * S, 5);
        g.add(t0, anomaly("tx", "m1", -0.6, 0), at(0, 0));
        let first = g.take_due(t0 + 30 * S).unwrap();
        assert_eq!(first.count, 1);
        g.add(t0 + 31 * S, anomaly("tx", "m1", -0.7, 1), at(0, 1));
        g.add(t0 + 40 * S, anomaly("tx", "m1", -0.8, 2), at(0, 2));
        assert_eq!(g.next_due(), Some(t0 + 330 * S));
        assert!(g.take_due(t0 + 329 * S).is_none());
        let second = g.take_due(t0 + 330 * S).unwrap();
        assert_eq!(second.count, 2);
        assert_eq!(second.positions, [at(0, 1), at(0, 2)]);
        // Nothing new by the next interval: the group is dropped, and a new anomaly waits
        // group_wait again rather than group_interval.
        assert!(g.take_due(t0 + 630 * S).is_none());
        assert_eq!(g.next_due(), None);
        g.add(t0 + 700 * S, anomaly("tx", "m1", -0.6, 3), at(0, 3));
        assert_eq!(g.next_due(), Some(t0 + 730 * S));
    }

    #[test]
    fn groups_are_by_source_topic_and_model() {
        let t0 = Instant::now();
        let mut g = Grouper::new(S, 10 * S, 5);
        g.add(t0, anomaly("tx", "m1", -0.6, 0), at(0, 0));
        g.add(t0, anomaly("tx", "m2", -0.6, 1), at(0, 1));
        g.add(t0, anomaly("other", "m1", -0.6, 2), at(0, 2));
        g.add(t0, anomaly("tx", "m1", -0.6, 3), at(0, 3));
        assert_eq!(g.pending(), 4);
        let mut keys = Vec::new();
        while let Some(a) = g.take_due(t0 + S) {
            keys.push((a.key.topic, a.key.model_id, a.count));
        }
        keys.sort();
        assert_eq!(
            keys,
            [
                ("other".into(), "m1".into(), 1),
                ("tx".into(), "m1".into(), 2),
                ("tx".into(), "m2".into(), 1)
            ]
        );
    }

    #[test]
    fn a_storm_is_one_alert_per_group_per_interval() {
        let t0 = Instant::now();
        let mut g = Grouper::new(30 * S, 300 * S, 5);
        let mut alerts = Vec::new();
        // 10,000 anomalies over 10 s, checking for due groups every millisecond as the
        // notifier would.
        for i in 0..10_000i64 {
            let now = t0 + Duration::from_millis(i as u64);
            g.add(
                now,
                anomaly("tx", "m1", -0.5 - (i % 97) as f64 / 1000.0, i),
                at(0, i),
            );
            alerts.extend(g.take_due(now));
        }
        alerts.extend(g.take_due(t0 + 30 * S));
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].count, 10_000);
        assert_eq!(alerts[0].top.len(), 5);
        assert!(alerts[0].top.iter().all(|a| a.score == -0.596));
    }

    #[test]
    fn one_alert_never_mixes_detectors() {
        let t0 = Instant::now();
        let mut g = Grouper::new(S, 10 * S, 5);
        // Two detectors on one source topic, with one model file, sharing an output topic.
        let mut a = anomaly("tx", "m1", -0.6, 0);
        a.detector = "fraud".into();
        let mut b = anomaly("tx", "m1", -0.7, 1);
        b.detector = "audit".into();
        b.rules = vec!["big".into()];
        g.add(t0, a.clone(), at(0, 0));
        g.add(t0, b, at(0, 1));
        g.add(t0, a, at(0, 2));
        let mut seen = Vec::new();
        while let Some(alert) = g.take_due(t0 + S) {
            assert!(alert.top.iter().all(|x| x.detector == alert.key.detector));
            seen.push((alert.key.detector, alert.count, alert.rules));
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                ("audit".into(), 1, BTreeSet::from(["big".to_owned()])),
                ("fraud".into(), 2, BTreeSet::new())
            ]
        );
    }
}
