//! Streaks: the per-key state of rules with `for` (fire only after N consecutive matching
//! readings of the same key), and the safe offset that lets it survive a crash without a store.
//!
//! Semantics, as Prometheus alerting rules' `for` (counted in readings rather than time): each
//! rule with `for = N` keeps, per Kafka record key, the length of its current streak of
//! consecutive matching readings. A matching reading extends the streak and fires the rule
//! once the streak is N long, and again on every further matching reading (Prometheus keeps
//! firing while the condition holds). A reading of that key on which the rule is false ends
//! the streak (back to 0). A reading the rules cannot judge (a dead letter) neither extends nor
//! ends it. Records without a key share one streak per rule, as one key.
//!
//! # Surviving a crash: the safe offset
//!
//! The state lives only in memory, one [`Streaks`] per partition worker. What a restarted
//! worker needs to reach the same verdicts is, for each open streak, its last `N - 1`
//! matching readings (or all of them when it is shorter): re-read, they rebuild a count of
//! `N - 1`, so the next matching reading fires as it would have. [`Streaks::safe_offset`] is
//! the lowest offset any open streak still needs, and the detector worker commits no further
//! than it (issue 14; the stages do the same, [`crate::stages`]). A streak that had already
//! fired (count above N) is rebuilt as `N - 1`: after a restart its count starts again from
//! N, it does not resume from where it was.
//!
//! # Bounds
//!
//! A key has an entry only while one of its streaks is open (length at least 1); it is
//! dropped when they all end. Each open streak holds at most `N - 1` offsets (8 bytes each),
//! and `for` is at most [`MAX_FOR`].

use std::collections::{HashMap, VecDeque};

/// The largest `for` accepted: an open streak keeps up to `for - 1` offsets.
pub const MAX_FOR: u32 = 1000;

/// One rule's streak for one key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Streak {
    /// Consecutive matching readings so far.
    len: u64,
    /// Offsets of the last `min(len, for - 1)` of them, oldest first: what a restart re-reads.
    recent: VecDeque<i64>,
}

/// The streaks of one partition: per key, per rule. See the module header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streaks {
    /// Each rule's `for`, in the rule set's order (1: fires on one reading, keeps no state).
    need: Vec<u32>,
    /// Keys with at least one open streak.
    keys: HashMap<Box<[u8]>, Vec<Streak>>,
    /// The records without a key, when one of their streaks is open.
    keyless: Option<Vec<Streak>>,
}

impl Streaks {
    /// Empty streaks for rules whose `for` values are `need`, in the rule set's order (a 0 is
    /// taken as 1).
    pub fn new(need: Vec<u32>) -> Self {
        Self {
            need: need.into_iter().map(|n| n.max(1)).collect(),
            keys: HashMap::new(),
            keyless: None,
        }
    }

    /// Feeds one judged reading of `key` at `offset` (offsets increase): `matched(r)` says
    /// whether rule `r` (index in the rule set) was true on it. Appends to `fired` each rule
    /// that fires, in rule order, with its streak length: `(rule, count)`; a rule with
    /// `for = 1` fires on every match with count 1.
    pub fn observe(
        &mut self,
        key: Option<&[u8]>,
        offset: i64,
        matched: impl Fn(usize) -> bool,
        fired: &mut Vec<(usize, u64)>,
    ) {
        let open = match key {
            Some(k) => self.keys.contains_key(k),
            None => self.keyless.is_some(),
        };
        if !open && !(0..self.need.len()).any(|r| self.need[r] > 1 && matched(r)) {
            // Nothing to remember: only `for = 1` rules can fire.
            fired.extend(
                (0..self.need.len())
                    .filter(|&r| self.need[r] == 1 && matched(r))
                    .map(|r| (r, 1)),
            );
            return;
        }
        let fresh = || vec![Streak::default(); self.need.len()];
        let entry = match key {
            Some(k) if open => self.keys.get_mut(k).expect("open"),
            Some(k) => self.keys.entry(Box::from(k)).or_insert_with(fresh),
            None => self.keyless.get_or_insert_with(fresh),
        };
        for (r, (streak, &n)) in entry.iter_mut().zip(&self.need).enumerate() {
            if !matched(r) {
                streak.len = 0;
                streak.recent.clear();
                continue;
            }
            if n == 1 {
                fired.push((r, 1));
                continue;
            }
            streak.len += 1;
            if streak.recent.len() == (n - 1) as usize {
                streak.recent.pop_front();
            }
            streak.recent.push_back(offset);
            if streak.len >= u64::from(n) {
                fired.push((r, streak.len));
            }
        }
        if entry.iter().all(|s| s.len == 0) {
            match key {
                Some(k) => {
                    self.keys.remove(k);
                }
                None => self.keyless = None,
            }
        }
    }

    /// The offset to commit: the lowest offset an open streak still needs re-read after a
    /// restart, or `next` (the offset after the last record seen) when none is lower.
    pub fn safe_offset(&self, next: i64) -> i64 {
        self.keys
            .values()
            .chain(&self.keyless)
            .flatten()
            .filter_map(|s| s.recent.front().copied())
            .fold(next, i64::min)
    }

    /// How many keys have an open streak.
    pub fn open_keys(&self) -> usize {
        self.keys.len() + usize::from(self.keyless.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `(key, offset, matches)` readings; returns what fired at each.
    fn feed(s: &mut Streaks, readings: &[(&str, i64, &[bool])]) -> Vec<Vec<(usize, u64)>> {
        readings
            .iter()
            .map(|(key, offset, m)| {
                let mut fired = Vec::new();
                s.observe(Some(key.as_bytes()), *offset, |r| m[r], &mut fired);
                fired
            })
            .collect()
    }

    const T: &[bool] = &[true];
    const F: &[bool] = &[false];

    #[test]
    fn n_minus_one_matches_do_not_fire_n_do_and_it_keeps_firing() {
        let mut s = Streaks::new(vec![3]);
        let out = feed(
            &mut s,
            &[("a", 0, T), ("a", 1, T), ("a", 2, T), ("a", 3, T)],
        );
        assert_eq!(out, [vec![], vec![], vec![(0, 3)], vec![(0, 4)]]);
    }

    #[test]
    fn a_non_match_resets_and_drops_the_key() {
        let mut s = Streaks::new(vec![3]);
        let out = feed(
            &mut s,
            &[
                ("a", 0, T),
                ("a", 1, T),
                ("a", 2, F),
                ("a", 3, T),
                ("a", 4, T),
            ],
        );
        assert!(out.iter().all(Vec::is_empty), "{out:?}");
        assert_eq!(s.open_keys(), 1);
        feed(&mut s, &[("a", 5, F)]);
        assert_eq!(s.open_keys(), 0);
        assert_eq!(s.safe_offset(6), 6);
    }

    #[test]
    fn streaks_are_per_key() {
        let mut s = Streaks::new(vec![2]);
        let out = feed(
            &mut s,
            &[
                ("a", 0, T),
                ("b", 1, T),
                ("b", 2, F),
                ("a", 3, T),
                ("b", 4, T),
            ],
        );
        assert_eq!(out, [vec![], vec![], vec![], vec![(0, 2)], vec![]]);
        // Records without a key are one key of their own.
        let mut fired = Vec::new();
        s.observe(None, 5, |_| true, &mut fired);
        s.observe(None, 6, |_| true, &mut fired);
        assert_eq!(fired, [(0, 2)]);
    }

    #[test]
    fn streaks_are_per_rule_and_for_one_keeps_no_state() {
        let mut s = Streaks::new(vec![1, 2, 3]);
        let out = feed(
            &mut s,
            &[
                ("a", 0, &[true, true, true]),
                ("a", 1, &[true, true, false]),
                ("a", 2, &[false, true, true]),
                ("a", 3, &[false, true, true]),
                ("a", 4, &[false, false, true]),
            ],
        );
        assert_eq!(
            out,
            [
                vec![(0, 1)],
                vec![(0, 1), (1, 2)],
                vec![(1, 3)],
                vec![(1, 4)],
                vec![(2, 3)],
            ]
        );
        let mut only_for_one = Streaks::new(vec![1]);
        assert_eq!(feed(&mut only_for_one, &[("a", 0, T)]), [vec![(0, 1)]]);
        assert_eq!(only_for_one.open_keys(), 0);
        assert_eq!(only_for_one.safe_offset(1), 1);
    }

    #[test]
    fn the_safe_offset_keeps_the_last_n_minus_one_matches_of_open_streaks() {
        let mut s = Streaks::new(vec![3]);
        assert_eq!(s.safe_offset(0), 0);
        feed(&mut s, &[("a", 10, T)]);
        assert_eq!(s.safe_offset(11), 10);
        feed(&mut s, &[("b", 11, T), ("a", 12, T)]);
        assert_eq!(s.safe_offset(13), 10);
        // `a` has fired: it needs only its last 2 readings (12, 14); `b` still needs 11.
        feed(&mut s, &[("a", 14, T)]);
        assert_eq!(s.safe_offset(15), 11);
        feed(&mut s, &[("b", 15, F)]);
        assert_eq!(s.safe_offset(16), 12);
        feed(&mut s, &[("a", 16, F)]);
        assert_eq!(s.safe_offset(17), 17);
    }

    #[test]
    fn re_reading_from_the_safe_offset_rebuilds_the_same_verdicts() {
        // A partition of readings of three keys; at every point, a worker restarted from the
        // safe offset reaches the same verdicts on the rest (counts of a streak that had
        // fired start again from `for`).
        let pattern = [true, true, false, true, true, true, true, false, true];
        let readings: Vec<(String, i64, bool)> = (0..60)
            .map(|i: i64| {
                let key = ["a", "b", "c"][(i % 3) as usize].to_owned();
                (key, i, pattern[((i * 7 + i / 3) % 9) as usize])
            })
            .collect();
        let run = |s: &mut Streaks, from: usize| -> Vec<bool> {
            readings[from..]
                .iter()
                .map(|(k, o, m)| {
                    let mut fired = Vec::new();
                    s.observe(Some(k.as_bytes()), *o, |_| *m, &mut fired);
                    !fired.is_empty()
                })
                .collect()
        };
        let mut whole = Streaks::new(vec![3]);
        let all = run(&mut whole, 0);
        assert!(all.iter().any(|f| *f) && !all.iter().all(|f| *f));
        for crash in 1..readings.len() {
            let mut before = Streaks::new(vec![3]);
            run_prefix(&mut before, &readings[..crash]);
            let safe = before.safe_offset(crash as i64) as usize;
            assert!(safe <= crash);
            let mut after = Streaks::new(vec![3]);
            let again = run(&mut after, safe);
            assert_eq!(again[crash - safe..], all[crash..], "crash after {crash}");
        }
    }

    fn run_prefix(s: &mut Streaks, readings: &[(String, i64, bool)]) {
        for (k, o, m) in readings {
            s.observe(Some(k.as_bytes()), *o, |_| *m, &mut Vec::new());
        }
    }
}
