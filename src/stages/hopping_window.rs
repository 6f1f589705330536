//! Distinct counts in hopping windows over a whole topic: per-partition [`DistinctWindows`]
//! emit [`Partial`]s, and one [`Combiner`] merges every partition's partials into [`Final`]s.
//!
//! Windows are Kafka Streams `TimeWindows` (size, `advanceBy`, grace) and Flink sliding windows
//! (size, slide): epoch-aligned `[window_start, window_end)` ([`Hopping`]). Each window is
//! emitted once, when it closes (Kafka Streams' `EmitStrategy.onWindowClose` / `suppress
//! (untilWindowCloses)`; Flink's default trigger), **empty windows included**: unlike Kafka
//! Streams and Flink, which only know windows that hold a record, the series here has a value
//! (zero) for every window from its first to its last.
//!
//! # Two steps
//! A partition worker owns one [`DistinctWindows`]: it adds each record's key to every window
//! containing the record's time and, on the timer (punctuate), emits the closed windows as
//! partials (the sorted distinct keys of one window from one partition) to an internal topic.
//! One [`Combiner`] task reads that topic: a window is **final** once every partition's progress
//! (the highest `window_end` it reported) has reached the window's end, leaving out partitions
//! that reported nothing for an idle timeout of processing time (Flink's source idleness). The
//! count is the number of distinct keys in the union of the window's partials, so a partial
//! repeated after a crash changes nothing, and several anomalyd instances sharing the
//! partitions give one series.
//!
//! # Time
//! Event time: a window closes when `window_end + grace <= stream_time` (the stream time is the
//! partition's highest record time); a record whose windows are all closed is late. Processing
//! time: the caller passes the wall clock; a window closes when `window_end <= now`. Every time
//! is milliseconds since the Unix epoch.
//!
//! # Restart
//! Both steps give a safe offset: the lowest input offset that state not yet emitted depends
//! on. With it travel the **frontier** (the start of the next window to emit: every window
//! before it was emitted) and, for a partition in event time, the stream time at the safe
//! offset. Restored before the replay ([`DistinctWindows::restore`],
//! [`Combiner::restore_frontier`]), they make the replay emit exactly what the first run did
//! from the frontier on, so repeated windows carry the same keys and counts.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::time::{TimeMode, rfc3339};
use super::window::{Hopping, Window};

/// The most windows one `advance` emits, so a far jump of time (a record from the far future,
/// a long pause) makes a bounded batch; the next `advance` goes on where it stopped.
pub const MAX_WINDOWS_PER_ADVANCE: usize = 100_000;

/// A hopping-window stage that was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HoppingError {
    /// The grace period cannot be negative.
    #[error("grace period cannot be negative, got {0} ms")]
    GraceNegative(i64),
    /// The idle timeout cannot be negative.
    #[error("idle timeout cannot be negative, got {0} ms")]
    IdleTimeoutNegative(i64),
}

/// A record whose every window was already closed: it was counted nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("late: every window containing {time} ms is closed")]
pub struct Late {
    /// The record's time, ms.
    pub time: i64,
}

/// The distinct keys of one window from one partition, emitted once when the window closes.
///
/// JSON: `{"window_start": ms, "window_end": ms, "partition": n, "keys": [..]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "PartialWire", into = "PartialWire")]
pub struct Partial {
    /// The window.
    pub window: Window,
    /// The input partition.
    pub partition: i32,
    /// The keys seen in the window, sorted and distinct (empty for an empty window).
    pub keys: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct PartialWire {
    window_start: i64,
    window_end: i64,
    partition: i32,
    keys: Vec<String>,
}

impl From<PartialWire> for Partial {
    fn from(w: PartialWire) -> Self {
        Self {
            window: Window {
                start: w.window_start,
                end: w.window_end,
            },
            partition: w.partition,
            keys: w.keys,
        }
    }
}

impl From<Partial> for PartialWire {
    fn from(p: Partial) -> Self {
        Self {
            window_start: p.window.start,
            window_end: p.window.end,
            partition: p.partition,
            keys: p.keys,
        }
    }
}

/// Where a [`DistinctWindows`] may be rebuilt from, and what to restore with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafePoint {
    /// The lowest input offset a restart must re-read from.
    pub offset: i64,
    /// Event time: the stream time (ms) just before the record at `offset`; `None` before any.
    pub stream_time: Option<i64>,
    /// The start (ms) of the next window to emit; `None` before the first.
    pub frontier: Option<i64>,
}

/// Counters of a [`DistinctWindows`], for metrics; they only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DistinctCounters {
    /// Records counted in at least one window.
    pub records: u64,
    /// Records counted in no window: [`Late`].
    pub late_records: u64,
    /// Windows a record was not counted in because they were closed (a record in several
    /// windows may be late for some only).
    pub late_windows: u64,
    /// Partials emitted (empty windows included).
    pub windows_emitted: u64,
}

#[derive(Debug)]
struct OpenWindow {
    keys: BTreeSet<String>,
    first_offset: i64,
    stream_time_before: Option<i64>,
}

/// Distinct keys per hopping window of one partition. Pure: no I/O, no clock.
///
/// Memory: the windows not yet emitted that hold a record, each with its distinct keys.
#[derive(Debug)]
pub struct DistinctWindows {
    hopping: Hopping,
    grace_ms: i64,
    time: TimeMode,
    partition: i32,
    windows: BTreeMap<i64, OpenWindow>,
    /// The first window of the series, while nothing is emitted.
    origin: Option<i64>,
    /// The start of the next window to emit.
    frontier: Option<i64>,
    stream_time: Option<i64>,
    safe: Option<SafePoint>,
    counters: DistinctCounters,
}

impl DistinctWindows {
    /// Windows `hopping` for input `partition`, with `grace_ms` (event time only).
    ///
    /// # Errors
    /// [`HoppingError::GraceNegative`].
    pub fn new(
        hopping: Hopping,
        grace_ms: i64,
        time: TimeMode,
        partition: i32,
    ) -> Result<Self, HoppingError> {
        if grace_ms < 0 {
            return Err(HoppingError::GraceNegative(grace_ms));
        }
        Ok(Self {
            hopping,
            grace_ms,
            time,
            partition,
            windows: BTreeMap::new(),
            origin: None,
            frontier: None,
            stream_time: None,
            safe: None,
            counters: DistinctCounters::default(),
        })
    }

    /// The input partition.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The highest record time seen (event time: the stream time), or in processing time the
    /// latest wall-clock time passed in; ms.
    pub fn stream_time(&self) -> Option<i64> {
        self.stream_time
    }

    /// The start (ms) of the next window to emit; every window before it was emitted.
    pub fn frontier(&self) -> Option<i64> {
        self.frontier
    }

    /// Windows holding a record, not yet emitted.
    pub fn open_len(&self) -> usize {
        self.windows.len()
    }

    /// The counters.
    pub fn counters(&self) -> DistinctCounters {
        self.counters
    }

    /// Before a replay from `point.offset`: restores the stream time and the frontier the
    /// commit carried, so windows emitted before are closed and lateness is judged as before.
    pub fn restore(&mut self, point: &SafePoint) {
        if let Some(t) = point.stream_time {
            self.raise_stream_time(t);
        }
        if let Some(f) = point.frontier {
            self.frontier = Some(self.frontier.map_or(f, |g| g.max(f)));
            self.windows.retain(|&start, _| start >= f);
        }
    }

    /// Counts `key` (the record at `offset`, time `t` ms) in every open window containing `t`.
    ///
    /// In event time the stream time rises to `t` first. A window is closed once emitted, or,
    /// in event time, once `window_end + grace <= stream_time` even before the next
    /// [`Self::advance`] (so the timer's timing changes nothing).
    ///
    /// # Errors
    /// [`Late`] when every window containing `t` is closed: the record was counted nowhere.
    /// A record late for some of its windows only is counted in the others (Kafka Streams
    /// decides per window too) and counted in [`DistinctCounters::late_windows`].
    pub fn add(&mut self, key: &str, t: i64, offset: i64) -> Result<(), Late> {
        let before = self.stream_time;
        self.raise_stream_time(t);
        let mut added = false;
        for w in self.hopping.windows_containing(t) {
            if self.is_closed(w) {
                self.counters.late_windows += 1;
                continue;
            }
            let entry = self.windows.entry(w.start).or_insert_with(|| OpenWindow {
                keys: BTreeSet::new(),
                first_offset: offset,
                stream_time_before: before,
            });
            if !entry.keys.contains(key) {
                entry.keys.insert(key.to_owned());
            }
            if self.frontier.is_none() {
                self.origin = Some(self.origin.map_or(w.start, |o| o.min(w.start)));
            }
            added = true;
        }
        if added {
            self.counters.records += 1;
            Ok(())
        } else {
            self.counters.late_records += 1;
            Err(Late { time: t })
        }
    }

    /// A record that is not counted (a line that is not a cancellation) still says how far
    /// its partition's time has come: in event time the stream time rises to `t`, and the
    /// series starts no later than the first window containing `t`, so that the empty windows
    /// before the first counted record are emitted too. Processing time: nothing to do.
    pub fn observe(&mut self, t: i64) {
        if self.time != TimeMode::Event {
            return;
        }
        self.raise_stream_time(t);
        if self.frontier.is_none() {
            let first = self.hopping.first_start_containing(t);
            self.origin = Some(self.origin.map_or(first, |o| o.min(first)));
        }
    }

    /// Emits every window that closed, in start order, empty ones included: from the first
    /// window of this partition's series (event time: the earliest window holding a record
    /// before the first emission; processing time: that or the earliest window containing the
    /// first `advance`'s `now`) up to the last closed. At most [`MAX_WINDOWS_PER_ADVANCE`].
    ///
    /// Event time: closed when `window_end + grace <= stream_time`; `now` is not used.
    /// Processing time: closed when `window_end <= now` (ms).
    pub fn advance(&mut self, now: i64) -> Vec<Partial> {
        let limit = match self.time {
            TimeMode::Event => match self.stream_time {
                Some(st) => st.saturating_sub(self.grace_ms),
                None => return Vec::new(),
            },
            TimeMode::Processing => {
                self.raise_stream_time(now);
                if self.frontier.is_none() {
                    let first = self.hopping.first_start_containing(now);
                    self.origin = Some(self.origin.map_or(first, |o| o.min(first)));
                }
                now
            }
        };
        let Some(mut start) = self.frontier.or(self.origin) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while out.len() < MAX_WINDOWS_PER_ADVANCE {
            let window = self.hopping.window_at(start);
            if window.end > limit {
                break;
            }
            let keys = self
                .windows
                .remove(&start)
                .map(|w| w.keys.into_iter().collect())
                .unwrap_or_default();
            out.push(Partial {
                window,
                partition: self.partition,
                keys,
            });
            let next = self.hopping.next_start(start);
            self.frontier = Some(next);
            if next == start {
                break;
            }
            start = next;
        }
        self.counters.windows_emitted += out.len() as u64;
        out
    }

    /// The lowest offset a restart must re-read from: the lowest first offset of a record in a
    /// window not yet emitted, else `next` (the offset after the last record processed, counted
    /// or not). Never decreases. See [`Self::safe_point`] for what travels with it.
    pub fn safe_offset(&mut self, next: i64) -> i64 {
        self.safe_point(next).offset
    }

    /// [`Self::safe_offset`] with the stream time at it and the frontier, for the commit
    /// metadata and [`Self::restore`]. Partials already returned by [`Self::advance`] must be
    /// delivered before the offset is committed.
    pub fn safe_point(&mut self, next: i64) -> SafePoint {
        let mut point = SafePoint {
            offset: next,
            stream_time: self.stream_time,
            frontier: self.frontier,
        };
        for w in self.windows.values() {
            if w.first_offset < point.offset {
                point.offset = w.first_offset;
                point.stream_time = w.stream_time_before;
            }
        }
        if let Some(prev) = self.safe
            && prev.offset > point.offset
        {
            point.offset = prev.offset;
            point.stream_time = prev.stream_time;
        }
        self.safe = Some(point);
        point
    }

    fn raise_stream_time(&mut self, t: i64) {
        self.stream_time = Some(self.stream_time.map_or(t, |s| s.max(t)));
    }

    fn is_closed(&self, w: Window) -> bool {
        if self.frontier.is_some_and(|f| w.start < f) {
            return true;
        }
        match (self.time, self.stream_time) {
            (TimeMode::Event, Some(st)) => w.end.saturating_add(self.grace_ms) <= st,
            _ => false,
        }
    }
}

/// One window of the whole topic, final: every partition's partial is in (or the partition is
/// idle).
///
/// JSON: `{"window_start": "2011-12-09T12:00:00Z", "window_end": "...", "count": n}` (RFC 3339
/// UTC, whole seconds: windows are whole seconds in practice; serializing fails for a time
/// outside chrono's range, about ±262,000 years).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Final {
    /// Window start, ms.
    pub window_start: i64,
    /// Window end, ms.
    pub window_end: i64,
    /// Distinct keys in the window over every partition.
    pub count: u64,
}

impl Serialize for Final {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire {
            window_start: String,
            window_end: String,
            count: u64,
        }
        let time = |ms: i64| {
            rfc3339(ms).ok_or_else(|| {
                serde::ser::Error::custom(format!("{ms} ms is outside the RFC 3339 range"))
            })
        };
        Wire {
            window_start: time(self.window_start)?,
            window_end: time(self.window_end)?,
            count: self.count,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Final {
    /// Reads the JSON [`Final`] writes (any RFC 3339 offset is accepted), e.g. in tests and
    /// tools reading the output topic.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wire {
            window_start: String,
            window_end: String,
            count: u64,
        }
        let time = |text: &str| {
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|d| d.timestamp_millis())
                .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
        };
        let w = Wire::deserialize(deserializer)?;
        Ok(Self {
            window_start: time(&w.window_start)?,
            window_end: time(&w.window_end)?,
            count: w.count,
        })
    }
}

/// What [`Combiner::add`] did with a partial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// Merged into its window.
    Added,
    /// This partition had already reported this window (a repeat after a crash): merged,
    /// which changes nothing when the keys are the same.
    Duplicate,
    /// The window was already final: dropped.
    Late,
    /// Not a window of this combiner (wrong size or alignment), or an unknown partition:
    /// dropped.
    Rejected,
}

/// Counters of a [`Combiner`], for metrics; they only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CombinerCounters {
    /// Partials merged.
    pub added: u64,
    /// Partials repeating a window for a partition ([`AddOutcome::Duplicate`]).
    pub duplicates: u64,
    /// Partials for a window already final.
    pub late: u64,
    /// Partials refused ([`AddOutcome::Rejected`]).
    pub rejected: u64,
    /// Finals emitted (zero counts included).
    pub finals: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// The highest window end reported, ms.
    window_end: Option<i64>,
    /// Processing time (ms) of the last partial, or of when the partition was first known.
    since: Option<i64>,
}

#[derive(Debug)]
struct CombinedWindow {
    keys: HashSet<String>,
    first_offset: i64,
    reported: BTreeSet<i32>,
}

/// Merges the partials of every partition into one final series.
///
/// Memory: the windows not yet final that some partial reported, with their distinct keys.
#[derive(Debug)]
pub struct Combiner {
    hopping: Hopping,
    idle_timeout_ms: i64,
    partitions: Vec<Progress>,
    windows: BTreeMap<i64, CombinedWindow>,
    origin: Option<i64>,
    frontier: Option<i64>,
    safe: Option<i64>,
    counters: CombinerCounters,
}

impl Combiner {
    /// A combiner of `partitions` partitions' partials of windows `hopping`; a partition that
    /// reports nothing for `idle_timeout_ms` of processing time is left out of finality.
    ///
    /// # Errors
    /// [`HoppingError::IdleTimeoutNegative`].
    pub fn new(
        hopping: Hopping,
        partitions: usize,
        idle_timeout_ms: i64,
    ) -> Result<Self, HoppingError> {
        if idle_timeout_ms < 0 {
            return Err(HoppingError::IdleTimeoutNegative(idle_timeout_ms));
        }
        Ok(Self {
            hopping,
            idle_timeout_ms,
            partitions: vec![Progress::default(); partitions],
            windows: BTreeMap::new(),
            origin: None,
            frontier: None,
            safe: None,
            counters: CombinerCounters::default(),
        })
    }

    /// The input topic now has `n` partitions (new ones count from the next call's `now`;
    /// partials from removed ones are rejected).
    pub fn set_partitions(&mut self, n: usize) {
        self.partitions.resize(n, Progress::default());
    }

    /// The start (ms) of the next window to emit; every window before it is final and emitted.
    pub fn frontier(&self) -> Option<i64> {
        self.frontier
    }

    /// Before a replay of the partials topic from the committed offset: the frontier the commit
    /// carried. Partials of windows before it are then late.
    pub fn restore_frontier(&mut self, start: i64) {
        self.frontier = Some(self.frontier.map_or(start, |f| f.max(start)));
        self.windows.retain(|&s, _| s >= start);
    }

    /// The windows this combiner combines.
    pub fn hopping(&self) -> Hopping {
        self.hopping
    }

    /// Windows with a partial, not yet final.
    pub fn open_len(&self) -> usize {
        self.windows.len()
    }

    /// The counters.
    pub fn counters(&self) -> CombinerCounters {
        self.counters
    }

    /// Merges `partial` (read at `offset` of the partials topic, at processing time `now` ms).
    /// Any valid partial, late ones too, raises its partition's progress to its window end
    /// and marks the partition active at `now`.
    pub fn add(&mut self, partial: Partial, offset: i64, now: i64) -> AddOutcome {
        self.note_now(now);
        let w = partial.window;
        let Some(progress) = usize::try_from(partial.partition)
            .ok()
            .and_then(|p| self.partitions.get_mut(p))
        else {
            self.counters.rejected += 1;
            return AddOutcome::Rejected;
        };
        if !self.hopping.is_aligned(w.start) || self.hopping.window_at(w.start) != w {
            self.counters.rejected += 1;
            return AddOutcome::Rejected;
        }
        progress.window_end = Some(progress.window_end.map_or(w.end, |e| e.max(w.end)));
        progress.since = Some(now);
        if self.frontier.is_some_and(|f| w.start < f) {
            self.counters.late += 1;
            return AddOutcome::Late;
        }
        if self.frontier.is_none() {
            self.origin = Some(self.origin.map_or(w.start, |o| o.min(w.start)));
        }
        let entry = self
            .windows
            .entry(w.start)
            .or_insert_with(|| CombinedWindow {
                keys: HashSet::new(),
                first_offset: offset,
                reported: BTreeSet::new(),
            });
        entry.first_offset = entry.first_offset.min(offset);
        entry.keys.extend(partial.keys);
        if entry.reported.insert(partial.partition) {
            self.counters.added += 1;
            AddOutcome::Added
        } else {
            self.counters.duplicates += 1;
            AddOutcome::Duplicate
        }
    }

    /// Emits, in start order, every window that is final: from the earliest window start seen
    /// to the last window whose end every active partition's progress has reached, zero
    /// counts included; each once. A partition is active unless it reported nothing for the
    /// idle timeout before `now` (ms, processing time); at least one partition must have
    /// reported. When every partition is idle, windows up to the highest progress are final
    /// (nothing more is coming). At most [`MAX_WINDOWS_PER_ADVANCE`].
    pub fn advance(&mut self, now: i64) -> Vec<Final> {
        self.note_now(now);
        let Some(limit) = self.watermark(now) else {
            return Vec::new();
        };
        let Some(mut start) = self.frontier.or(self.origin) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while out.len() < MAX_WINDOWS_PER_ADVANCE {
            let window = self.hopping.window_at(start);
            if window.end > limit {
                break;
            }
            let count = self
                .windows
                .remove(&start)
                .map_or(0, |w| w.keys.len() as u64);
            out.push(Final {
                window_start: window.start,
                window_end: window.end,
                count,
            });
            let next = self.hopping.next_start(start);
            self.frontier = Some(next);
            if next == start {
                break;
            }
            start = next;
        }
        self.counters.finals += out.len() as u64;
        out
    }

    /// The lowest offset of the partials topic a restart must re-read from: the lowest offset
    /// of a partial of a window not yet final, else `next`. Never decreases; commit it with
    /// [`Self::frontier`], once the finals emitted are delivered.
    pub fn safe_offset(&mut self, next: i64) -> i64 {
        let mut x = self
            .windows
            .values()
            .map(|w| w.first_offset)
            .min()
            .map_or(next, |o| o.min(next));
        if let Some(prev) = self.safe {
            x = x.max(prev);
        }
        self.safe = Some(x);
        x
    }

    /// The time every window ending at or before it is final for, or `None` while waiting.
    fn watermark(&self, now: i64) -> Option<i64> {
        let idle = |p: &Progress| {
            p.since
                .is_some_and(|s| now.saturating_sub(s) >= self.idle_timeout_ms)
        };
        let mut active = self.partitions.iter().filter(|p| !idle(p)).peekable();
        if active.peek().is_none() {
            return self.partitions.iter().filter_map(|p| p.window_end).max();
        }
        let mut lowest: Option<i64> = None;
        for p in active {
            let end = p.window_end?;
            lowest = Some(lowest.map_or(end, |l| l.min(end)));
        }
        lowest
    }

    fn note_now(&mut self, now: i64) {
        for p in &mut self.partitions {
            p.since.get_or_insert(now);
        }
    }
}

#[cfg(test)]
mod tests;
