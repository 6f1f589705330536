//! Liveness beyond "the process runs": can the broker be reached, does this instance hold
//! partitions, and does any partition of the input topic look abandoned by the group.
//!
//! Three signals, each judged here by pure functions so the rules are unit-tested:
//!
//! - **The broker** ([`BrokerLink`]). librdkafka reports `AllBrokersDown` (every connection
//!   failed) to the detector's consumer; that marks the broker unreachable at once. Every
//!   [`LAG_REFRESH`](super::server::LAG_REFRESH) a separate client asks for the input topic's
//!   metadata; an answer marks it reachable again. No answer for [`STALE_AFTER`] marks it
//!   unreachable too (librdkafka does not always say "all down", e.g. for a broker that
//!   accepts connections but never answers).
//! - **The assignment** ([`judge`]). Before the first assignment the instance is not ready
//!   ("waiting for partition assignment since 4 s"). Holding no partitions for longer than
//!   `[detector] assignment_grace_s` after that reads two ways: if some partition of the topic
//!   looks orphaned (below), records wait that nobody scores, so it is CRITICAL (not ready);
//!   otherwise every partition is in the hands of a live member, and this instance is a
//!   standby because the group has more members than the topic has partitions: a WARNING,
//!   since it works for nothing but nothing is lost.
//! - **Orphaned partitions** ([`OrphanWatch`]). A partition is "owned by no live member" when
//!   the group's committed offset has not moved for longer than the session timeout plus the
//!   auto-commit interval while records were waiting past it (high watermark above it at every
//!   look). A live anomalyd owner commits after every batch (librdkafka's auto-commit, every
//!   interval, covers a lost commit), and a dead one is evicted after the session timeout on a
//!   sound broker, so this does not fire on a healthy group. It needs nothing but offset fetches and watermarks,
//!   which tansu 0.6.0 answers; the group's own view is no help there, as tansu goes on
//!   assigning partitions to a member killed with SIGKILL. The partitions this instance holds are
//!   left out (its own workers are watched by the supervisor). Shown by `health -v` and
//!   logged as a warning; health says WARNING.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// No metadata answer for this long marks the broker unreachable even without a librdkafka
/// error: three refreshes of the lag probe.
pub const STALE_AFTER: Duration = Duration::from_secs(15);

/// What the lag probe and the consumer's error events tell about the broker.
#[derive(Debug)]
pub struct BrokerLink {
    /// `[kafka] brokers`, to name in the reason.
    brokers: String,
    state: Mutex<LinkState>,
}

#[derive(Debug)]
struct LinkState {
    created: Instant,
    last_answer: Option<Instant>,
    /// librdkafka's "all brokers down": when first reported since the last answer, and why.
    down: Option<(Instant, String)>,
    /// The last failed request of the probe, for the reason.
    last_error: Option<String>,
}

impl BrokerLink {
    pub fn new(brokers: &str, now: Instant) -> Self {
        Self {
            brokers: brokers.to_owned(),
            state: Mutex::new(LinkState {
                created: now,
                last_answer: None,
                down: None,
                last_error: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The broker answered a request.
    pub fn answered(&self, now: Instant) {
        let mut s = self.lock();
        s.last_answer = Some(now);
        s.down = None;
        s.last_error = None;
    }

    /// A request failed (e.g. a metadata request timed out); `why` is kept for the reason.
    pub fn failed(&self, why: &str) {
        self.lock().last_error = Some(why.to_owned());
    }

    /// librdkafka says every broker connection is down.
    pub fn all_down(&self, now: Instant, why: &str) {
        let mut s = self.lock();
        if s.down.is_none() {
            s.down = Some((now, why.to_owned()));
        }
    }

    /// Why the broker counts as unreachable at `now`, naming it; `None` when it answers.
    pub fn unreachable(&self, now: Instant) -> Option<String> {
        let s = self.lock();
        if let Some((since, why)) = &s.down {
            return Some(format!(
                "broker unreachable ({}): {why} (since {} s)",
                self.brokers,
                now.saturating_duration_since(*since).as_secs()
            ));
        }
        let quiet = now.saturating_duration_since(s.last_answer.unwrap_or(s.created));
        (quiet > STALE_AFTER).then(|| {
            format!(
                "broker unreachable ({}): no answer for {} s{}",
                self.brokers,
                quiet.as_secs(),
                s.last_error
                    .as_deref()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            )
        })
    }
}

type Partition = (String, i32);

/// One partition of the input topic as the lag probe saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset, if any.
    pub committed: Option<i64>,
    /// Low and high watermarks: the first offset still stored and the next one to be written.
    pub low: i64,
    pub high: i64,
}

/// A partition that looks owned by no live member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Orphan {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset (`None`: nothing committed yet).
    pub committed: Option<i64>,
    pub high_watermark: i64,
    /// Seconds the committed offset has stood still with records waiting past it.
    pub stalled_s: u64,
}

#[derive(Debug)]
struct Track {
    committed: Option<i64>,
    high: i64,
    /// Since when the committed offset has not moved with records waiting past it.
    stalled_since: Instant,
    /// Records were waiting at the last look.
    backlog: bool,
}

/// The committed-offset progress of the partitions this instance does not hold.
#[derive(Debug, Default)]
pub struct OrphanWatch {
    tracks: BTreeMap<Partition, Track>,
}

impl OrphanWatch {
    /// Takes one look at every partition of the topic; `held` are this instance's own.
    pub fn observe(&mut self, now: Instant, seen: &[Observation], held: &[Partition]) {
        let mut next = BTreeMap::new();
        for o in seen {
            let key = (o.topic.clone(), o.partition);
            if held.contains(&key) {
                continue;
            }
            let position = o.committed.unwrap_or(o.low);
            let backlog = o.high > position;
            let stalled_since = match self.tracks.get(&key) {
                // Still stuck where it was, and records were waiting at both looks.
                Some(t) if t.committed == o.committed && t.backlog && backlog => t.stalled_since,
                _ => now,
            };
            next.insert(
                key,
                Track {
                    committed: o.committed,
                    high: o.high,
                    stalled_since,
                    backlog,
                },
            );
        }
        self.tracks = next;
    }

    /// Forgets everything: after a failed look nobody could commit (the broker was away), so
    /// a stall measured across it says nothing about the owners.
    pub fn forget(&mut self) {
        self.tracks.clear();
    }

    /// The partitions stalled for at least `after`.
    pub fn orphans(&self, now: Instant, after: Duration) -> Vec<Orphan> {
        self.tracks
            .iter()
            .filter(|(_, t)| t.backlog && now.saturating_duration_since(t.stalled_since) >= after)
            .map(|((topic, partition), t)| Orphan {
                topic: topic.clone(),
                partition: *partition,
                committed: t.committed,
                high_watermark: t.high,
                stalled_s: now.saturating_duration_since(t.stalled_since).as_secs(),
            })
            .collect()
    }
}

/// What readiness is judged from.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// Why the broker is unreachable, if it is.
    pub unreachable: Option<String>,
    /// The first assignment has arrived (the consumer joined its group).
    pub joined: bool,
    /// The broker has no input topic (the lag probe's last answer).
    pub topic_missing: bool,
    /// How long this instance has held no partition; `None` while it holds some.
    pub empty_for: Option<Duration>,
    /// `[detector] assignment_grace_s`.
    pub grace: Duration,
    pub orphans: &'a [Orphan],
    /// The input topic.
    pub topic: &'a str,
}

/// Reasons for `/ready` 503 (health CRITICAL) and for a WARNING.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub not_ready: Vec<String>,
    pub warnings: Vec<String>,
}

/// The rules of the module header, applied.
pub fn judge(f: &Facts<'_>) -> Judgement {
    let mut j = Judgement::default();
    if let Some(why) = &f.unreachable {
        j.not_ready.push(why.clone());
    }
    let orphans = || {
        f.orphans
            .iter()
            .map(|o| format!("{}/{}", o.topic, o.partition))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let empty_s = f.empty_for.map(|d| d.as_secs());
    if f.topic_missing {
        // Said first and plainly: "not joined" alone sends people looking at the group.
        j.not_ready.push(format!(
            "input topic {} does not exist on the broker: create it (`anomalyd check-config \
             --topics` lists every topic this configuration reads and writes); it is read \
             within seconds of its creation",
            f.topic
        ));
    } else if !f.joined {
        j.not_ready.push(format!(
            "no partitions assigned yet: waiting for partition assignment since {} s \
             (not joined the consumer group)",
            empty_s.unwrap_or(0)
        ));
    } else if let Some(empty) = f.empty_for.filter(|d| *d >= f.grace) {
        if f.orphans.is_empty() {
            j.warnings.push(format!(
                "no partitions assigned for {} s (the group has more members than {} has \
                 partitions?)",
                empty.as_secs(),
                f.topic
            ));
        } else {
            j.not_ready.push(format!(
                "no partitions assigned for {} s while partitions {} look orphaned",
                empty.as_secs(),
                orphans()
            ));
            return j;
        }
    }
    if !f.orphans.is_empty() {
        j.warnings.push(format!(
            "partitions {} look orphaned (owned by no live member: committed offset still \
             for more than the session timeout with records waiting)",
            orphans()
        ));
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn obs(partition: i32, committed: Option<i64>, high: i64) -> Observation {
        Observation {
            topic: "t".into(),
            partition,
            committed,
            low: 0,
            high,
        }
    }

    #[test]
    fn all_brokers_down_is_unreachable_until_the_next_answer() {
        let t0 = Instant::now();
        let link = BrokerLink::new("127.0.0.1:9092", t0);
        assert_eq!(link.unreachable(t0 + 10 * S), None, "young: no verdict yet");
        link.answered(t0 + S);
        link.all_down(t0 + 2 * S, "1/1 brokers are down");
        link.all_down(t0 + 4 * S, "1/1 brokers are down");
        assert_eq!(
            link.unreachable(t0 + 5 * S).as_deref(),
            Some("broker unreachable (127.0.0.1:9092): 1/1 brokers are down (since 3 s)")
        );
        link.answered(t0 + 6 * S);
        assert_eq!(link.unreachable(t0 + 7 * S), None);
    }

    #[test]
    fn silence_longer_than_stale_after_is_unreachable() {
        let t0 = Instant::now();
        let link = BrokerLink::new("k:9093", t0);
        link.answered(t0);
        link.failed("Local: Timed out");
        assert_eq!(link.unreachable(t0 + STALE_AFTER), None);
        assert_eq!(
            link.unreachable(t0 + STALE_AFTER + S).as_deref(),
            Some("broker unreachable (k:9093): no answer for 16 s (last error: Local: Timed out)")
        );
        // Never answered since start counts from the start.
        let fresh = BrokerLink::new("k:9093", t0);
        assert!(fresh.unreachable(t0 + 20 * S).is_some());
    }

    #[test]
    fn a_stuck_commit_with_waiting_records_is_orphaned_after_the_bound() {
        let t0 = Instant::now();
        let after = 11 * S;
        let mut w = OrphanWatch::default();
        let held = [("t".to_owned(), 0)];
        // 0: ours (ignored). 1: stuck at 100 while records arrive. 2: moving. 3: idle, caught
        // up. 4: nothing ever committed, records waiting.
        for i in 0..=3 {
            let now = t0 + 5 * i * S;
            w.observe(
                now,
                &[
                    obs(0, Some(5), 1000),
                    obs(1, Some(100), 200 + i as i64 * 50),
                    obs(2, Some(100 + i as i64 * 50), 300 + i as i64 * 50),
                    obs(3, Some(700), 700),
                    obs(4, None, 40),
                ],
                &held,
            );
        }
        let now = t0 + 15 * S;
        let orphans = w.orphans(now, after);
        let parts: Vec<i32> = orphans.iter().map(|o| o.partition).collect();
        assert_eq!(parts, [1, 4]);
        assert_eq!(orphans[0].committed, Some(100));
        assert_eq!(orphans[0].high_watermark, 350);
        assert_eq!(orphans[0].stalled_s, 15);
        assert!(w.orphans(now, 16 * S).is_empty(), "not before the bound");
    }

    #[test]
    fn a_commit_or_an_empty_backlog_restarts_the_clock_and_a_failed_look_forgets() {
        let t0 = Instant::now();
        let mut w = OrphanWatch::default();
        w.observe(t0, &[obs(1, Some(10), 20)], &[]);
        w.observe(t0 + 10 * S, &[obs(1, Some(10), 10)], &[]); // caught up: idle, not stuck
        w.observe(t0 + 20 * S, &[obs(1, Some(10), 30)], &[]); // new records just arrived
        assert!(w.orphans(t0 + 20 * S, 5 * S).is_empty());
        assert_eq!(w.orphans(t0 + 25 * S, 5 * S).len(), 1);
        w.observe(t0 + 26 * S, &[obs(1, Some(11), 30)], &[]); // the owner committed
        assert!(w.orphans(t0 + 30 * S, 5 * S).is_empty());
        w.observe(t0 + 40 * S, &[obs(1, Some(11), 30)], &[]);
        assert_eq!(w.orphans(t0 + 40 * S, 5 * S).len(), 1);
        // Taken over by this instance: no longer watched.
        w.observe(t0 + 41 * S, &[obs(1, Some(11), 30)], &[("t".into(), 1)]);
        assert!(w.orphans(t0 + 60 * S, 5 * S).is_empty());
        w.observe(t0 + 42 * S, &[obs(1, Some(11), 30)], &[]);
        w.forget();
        assert!(w.orphans(t0 + 90 * S, 5 * S).is_empty());
    }

    fn facts<'a>(joined: bool, empty_s: Option<u64>, orphans: &'a [Orphan]) -> Facts<'a> {
        Facts {
            unreachable: None,
            joined,
            topic_missing: false,
            empty_for: empty_s.map(Duration::from_secs),
            grace: 20 * S,
            orphans,
            topic: "transactions",
        }
    }

    fn orphan(partition: i32) -> Orphan {
        Orphan {
            topic: "transactions".into(),
            partition,
            committed: Some(1),
            high_watermark: 9,
            stalled_s: 30,
        }
    }

    #[test]
    fn not_joined_yet_says_since_when() {
        let j = judge(&facts(false, Some(4), &[]));
        assert_eq!(
            j.not_ready,
            [
                "no partitions assigned yet: waiting for partition assignment since 4 s \
              (not joined the consumer group)"
            ]
        );
        assert!(j.warnings.is_empty());
    }

    #[test]
    fn a_missing_input_topic_is_said_instead_of_not_joined() {
        for joined in [false, true] {
            let mut f = facts(joined, Some(40), &[]);
            f.topic_missing = true;
            let j = judge(&f);
            assert_eq!(j.not_ready.len(), 1, "{j:?}");
            assert!(
                j.not_ready[0].starts_with("input topic transactions does not exist"),
                "{j:?}"
            );
            assert!(j.warnings.is_empty());
        }
    }

    #[test]
    fn an_unreachable_broker_is_named_first() {
        let mut f = facts(true, None, &[]);
        f.unreachable = Some("broker unreachable (b:1): 1/1 brokers are down (since 2 s)".into());
        assert_eq!(judge(&f).not_ready, [f.unreachable.clone().unwrap()]);
    }

    #[test]
    fn no_partitions_past_the_grace_is_a_warning_unless_records_are_orphaned() {
        assert_eq!(judge(&facts(true, Some(19), &[])), Judgement::default());
        assert_eq!(judge(&facts(true, None, &[])), Judgement::default());
        let standby = judge(&facts(true, Some(45), &[]));
        assert!(standby.not_ready.is_empty());
        assert_eq!(
            standby.warnings,
            [
                "no partitions assigned for 45 s (the group has more members than transactions \
              has partitions?)"
            ]
        );
        let orphans = [orphan(0), orphan(2)];
        let stuck = judge(&facts(true, Some(45), &orphans));
        assert_eq!(
            stuck.not_ready,
            [
                "no partitions assigned for 45 s while partitions transactions/0, transactions/2 \
              look orphaned"
            ]
        );
        assert!(stuck.warnings.is_empty(), "said once");
        let busy = judge(&facts(true, None, &orphans));
        assert!(busy.not_ready.is_empty());
        assert!(
            busy.warnings[0].starts_with("partitions transactions/0, transactions/2 look orphaned"),
            "{:?}",
            busy.warnings
        );
    }
}
