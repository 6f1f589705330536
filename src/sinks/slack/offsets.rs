//! Which offsets of the anomalies topic may be committed: per partition, everything below the
//! oldest anomaly not yet in an accepted message. Anomalies of different groups interleave on a
//! partition and are sent in a different order, so a partition's committed offset waits for its
//! oldest unsent anomaly, even when later ones went out first.

use std::collections::BTreeMap;

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

/// Offsets read, sent and committable, per partition of the anomalies topic.
#[derive(Debug, Default)]
pub struct Offsets {
    parts: BTreeMap<i32, Partition>,
}

impl Offsets {
    /// A record was read; it holds its partition's commit back until [`Offsets::done`].
    pub fn read(&mut self, (partition, offset): Position) {
        let p = self.part(partition, offset);
        *p.outstanding.entry(offset).or_default() += 1;
        p.next = p.next.max(offset + 1);
    }

    /// A record that needs no alert (not an anomaly record) was read.
    pub fn skip(&mut self, (partition, offset): Position) {
        let p = self.part(partition, offset);
        p.next = p.next.max(offset + 1);
    }

    /// A record's anomaly is in an accepted message.
    pub fn done(&mut self, (partition, offset): Position) {
        if let Some(p) = self.parts.get_mut(&partition)
            && let Some(n) = p.outstanding.get_mut(&offset)
        {
            *n -= 1;
            if *n == 0 {
                p.outstanding.remove(&offset);
            }
        }
    }

    /// The partitions whose committable offset (the next offset to read) moved since the last
    /// call, with that offset.
    pub fn to_commit(&mut self) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for (&partition, p) in &mut self.parts {
            let safe = p.safe();
            if safe > p.committed {
                p.committed = safe;
                out.push((partition, safe));
            }
        }
        out
    }

    fn part(&mut self, partition: i32, first_offset: i64) -> &mut Partition {
        // A partition starts at its first record read: the committed offset it was read from.
        self.parts.entry(partition).or_insert_with(|| Partition {
            outstanding: BTreeMap::new(),
            next: first_offset,
            committed: first_offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_committed_past_an_unsent_anomaly() {
        let mut o = Offsets::default();
        for off in 10..15 {
            o.read((0, off));
        }
        assert_eq!(o.to_commit(), []);
        // A later group went out first: offset 10 still holds the partition back.
        o.done((0, 12));
        o.done((0, 13));
        assert_eq!(o.to_commit(), []);
        o.done((0, 10));
        assert_eq!(o.to_commit(), [(0, 11)]);
        o.done((0, 11));
        assert_eq!(o.to_commit(), [(0, 14)]);
        assert_eq!(o.to_commit(), [], "only changes are reported");
        o.done((0, 14));
        assert_eq!(o.to_commit(), [(0, 15)]);
    }

    #[test]
    fn skipped_records_commit_once_everything_before_is_sent() {
        let mut o = Offsets::default();
        o.read((1, 0));
        o.skip((1, 1));
        o.skip((1, 2));
        assert_eq!(o.to_commit(), []);
        o.done((1, 0));
        assert_eq!(o.to_commit(), [(1, 3)]);
        o.skip((2, 7));
        assert_eq!(o.to_commit(), [(2, 8)], "partitions are independent");
    }

    #[test]
    fn a_record_read_twice_is_done_when_both_are_sent() {
        let mut o = Offsets::default();
        o.read((0, 5));
        o.read((0, 5));
        o.done((0, 5));
        assert_eq!(o.to_commit(), []);
        o.done((0, 5));
        assert_eq!(o.to_commit(), [(0, 6)]);
    }
}
