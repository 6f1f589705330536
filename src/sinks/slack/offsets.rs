//! Which offsets of the anomalies topics may be committed: per (topic, partition), everything
//! below the oldest anomaly not yet in an accepted message. The notifier reads every detector's
//! output topic, so a partition is named by its topic too: partition 0 of one topic never
//! holds back, or releases, partition 0 of another. Anomalies of different groups interleave on a
//! partition and are sent in a different order, so a partition's committed offset waits for its
//! oldest unsent anomaly, even when later ones went out first.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::group::Position;

#[derive(Debug, Default)]
struct Partition {
    /// Offsets read and not yet sent, with how many times each was read (a rebalance can
    /// deliver a record twice).
    outstanding: BTreeMap<i64, u32>,
    /// One past the highest offset read.
    next: i64,
    /// The last offset handed out for committing.
    committed: i64,
}

impl Partition {
    fn safe(&self) -> i64 {
        self.outstanding.keys().next().copied().unwrap_or(self.next)
    }
}

/// Offsets read, sent and committable, per (topic, partition) of the anomalies topics.
#[derive(Debug, Default)]
pub struct Offsets {
    parts: BTreeMap<(Arc<str>, i32), Partition>,
}

impl Offsets {
    /// A record was read; it holds its partition's commit back until [`Offsets::done`].
    pub fn read(&mut self, (topic, partition, offset): &Position) {
        let offset = *offset;
        let p = self.part(topic, *partition, offset);
        *p.outstanding.entry(offset).or_default() += 1;
        p.next = p.next.max(offset + 1);
    }

    /// A record that needs no alert (not an anomaly record) was read.
    pub fn skip(&mut self, (topic, partition, offset): &Position) {
        let offset = *offset;
        let p = self.part(topic, *partition, offset);
        p.next = p.next.max(offset + 1);
    }

    /// A record's anomaly is in an accepted message.
    pub fn done(&mut self, (topic, partition, offset): &Position) {
        if let Some(p) = self.parts.get_mut(&(Arc::clone(topic), *partition))
            && let Some(n) = p.outstanding.get_mut(offset)
        {
            *n -= 1;
            if *n == 0 {
                p.outstanding.remove(offset);
            }
        }
    }

    /// The (topic, partition)s whose committable offset (the next offset to read) moved since
    /// the last call, with that offset, as `(topic, partition, offset)`.
    pub fn to_commit(&mut self) -> Vec<Position> {
        let mut out = Vec::new();
        for ((topic, partition), p) in &mut self.parts {
            let safe = p.safe();
            if safe > p.committed {
                p.committed = safe;
                out.push((Arc::clone(topic), *partition, safe));
            }
        }
        out
    }

    fn part(&mut self, topic: &Arc<str>, partition: i32, first_offset: i64) -> &mut Partition {
        // A partition starts at its first record read: the committed offset it was read from.
        let key = (Arc::clone(topic), partition);
        self.parts.entry(key).or_insert_with(|| Partition {
            outstanding: BTreeMap::new(),
            next: first_offset,
            committed: first_offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(topic: &str, partition: i32, offset: i64) -> Position {
        (topic.into(), partition, offset)
    }

    fn c(list: &[(&str, i32, i64)]) -> Vec<Position> {
        list.iter().map(|&(t, p, o)| at(t, p, o)).collect()
    }

    #[test]
    fn nothing_is_committed_past_an_unsent_anomaly() {
        let mut o = Offsets::default();
        for off in 10..15 {
            o.read(&at("a", 0, off));
        }
        assert_eq!(o.to_commit(), c(&[]));
        // A later group went out first: offset 10 still holds the partition back.
        o.done(&at("a", 0, 12));
        o.done(&at("a", 0, 13));
        assert_eq!(o.to_commit(), c(&[]));
        o.done(&at("a", 0, 10));
        assert_eq!(o.to_commit(), c(&[("a", 0, 11)]));
        o.done(&at("a", 0, 11));
        assert_eq!(o.to_commit(), c(&[("a", 0, 14)]));
        assert_eq!(o.to_commit(), c(&[]), "only changes are reported");
        o.done(&at("a", 0, 14));
        assert_eq!(o.to_commit(), c(&[("a", 0, 15)]));
    }

    #[test]
    fn skipped_records_commit_once_everything_before_is_sent() {
        let mut o = Offsets::default();
        o.read(&at("a", 1, 0));
        o.skip(&at("a", 1, 1));
        o.skip(&at("a", 1, 2));
        assert_eq!(o.to_commit(), c(&[]));
        o.done(&at("a", 1, 0));
        assert_eq!(o.to_commit(), c(&[("a", 1, 3)]));
        o.skip(&at("a", 2, 7));
        assert_eq!(
            o.to_commit(),
            c(&[("a", 2, 8)]),
            "partitions are independent"
        );
    }

    #[test]
    fn a_record_read_twice_is_done_when_both_are_sent() {
        let mut o = Offsets::default();
        o.read(&at("a", 0, 5));
        o.read(&at("a", 0, 5));
        o.done(&at("a", 0, 5));
        assert_eq!(o.to_commit(), c(&[]));
        o.done(&at("a", 0, 5));
        assert_eq!(o.to_commit(), c(&[("a", 0, 6)]));
    }

    #[test]
    fn two_topics_with_the_same_partitions_are_tracked_apart() {
        let mut o = Offsets::default();
        // Partition 0 of both topics, read interleaved as one consumer of both reads them.
        o.read(&at("tx-anomalies", 0, 10));
        o.read(&at("sensor-anomalies", 0, 3));
        o.read(&at("tx-anomalies", 0, 11));
        o.read(&at("sensor-anomalies", 0, 4));
        // Sending one topic's anomalies commits that topic only.
        o.done(&at("sensor-anomalies", 0, 3));
        o.done(&at("sensor-anomalies", 0, 4));
        assert_eq!(o.to_commit(), c(&[("sensor-anomalies", 0, 5)]));
        // Done on the other topic's offsets does not release this one.
        o.done(&at("sensor-anomalies", 0, 10));
        o.done(&at("tx-anomalies", 0, 11));
        assert_eq!(o.to_commit(), c(&[]), "tx-anomalies 0:10 is still unsent");
        o.done(&at("tx-anomalies", 0, 10));
        assert_eq!(o.to_commit(), c(&[("tx-anomalies", 0, 12)]));
        // A skipped record on one topic moves only that topic.
        o.skip(&at("tx-anomalies", 0, 12));
        o.read(&at("sensor-anomalies", 0, 5));
        assert_eq!(o.to_commit(), c(&[("tx-anomalies", 0, 13)]));
        o.done(&at("sensor-anomalies", 0, 5));
        assert_eq!(o.to_commit(), c(&[("sensor-anomalies", 0, 6)]));
        assert_eq!(o.to_commit(), c(&[]));
    }
}
