//! Keyed session windows over one partition's records: [`SessionWindows`].
//!
//! A session (Kafka Streams `SessionWindows.ofInactivityGapAndGrace`, Flink
//! `EventTimeSessionWindows.withGap` / `ProcessingTimeSessionWindows.withGap`) gathers the
//! records of one key until no record has come for the **inactivity gap**. Here a key has at most
//! one session: it is the unit the caller emits once (an invoice), so a record that cannot join
//! its key's session is **late** and goes to the caller's late output, never into a second,
//! half session. That is narrower than Kafka Streams, where two sessions of one key may exist
//! and merge when a record bridges them.
//!
//! # Time
//! Times are milliseconds since the Unix epoch ([`TimeMode`]).
//! - **Event time**: the caller passes each record's own time. [`SessionWindows`] keeps the
//!   **stream time** (the highest event time seen on the partition, as Kafka Streams'
//!   `observedStreamTime`). A record joins its key's session when it lies strictly within the
//!   gap of the session's `[first_time, last_time]` span, on either side (records may come out
//!   of order). A session closes when `stream_time >= last_time + gap + grace`; the **close
//!   time** (Kafka Streams' `closeTime`) is `stream_time - gap - grace`, and a record at or
//!   before it could only belong to a closed session, so it is late.
//! - **Processing time**: the caller passes the wall clock as a record's time and as `now`. A
//!   session closes when `now >= last_time + gap`; the grace period is unused.
//!
//! A silence of exactly the gap ends a session (a record `gap` after the last one does not join).
//! So with minute-resolution times (the purchase data), an event-time gap must exceed 60 s for
//! an invoice whose lines straddle a minute to stay whole.
//!
//! # Driving it
//! A partition worker calls [`SessionWindows::add`] for each record in offset order (and
//! [`SessionWindows::restore_stream_time`] for a record that enters no session, in event time),
//! [`SessionWindows::advance`] on its timer, emitting each [`Closed`], and, once those outputs
//! are acknowledged, commits [`SessionWindows::safe_point`]. On assignment it restores the
//! committed stream time and replays from the committed offset; repeated sessions carry the
//! same key, so a reader recognises them as duplicates.
//!
//! # Safe offset
//! Kafka is the only durable store: the state is rebuilt after a crash by re-reading the
//! partition from the committed offset. [`SessionWindows::safe_offset`] is the lowest offset
//! a restart must re-read from so that every session still open, and every closed session with
//! a record at or after it, is rebuilt whole, never in part (the rule is on the method). In
//! event time the stream time at that offset ([`SafePoint::stream_time`]) should travel with the
//! commit (Kafka Streams writes partition time into the commit metadata) and be handed to
//! [`SessionWindows::restore_stream_time`] before the replay, so the replay judges lateness as
//! the first run did.
//!
//! What a restart cannot know: keys whose session closed before the committed offset (the
//! late-record memory is in memory only), and which sessions `max_open` closed early; a record
//! for such a key is judged afresh after a restart. Within one run, nothing is emitted twice.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use thiserror::Error;

use super::time::TimeMode;

/// A [`SessionConfig`] that was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SessionError {
    /// The inactivity gap must be at least 1 ms.
    #[error("inactivity gap must be positive, got {0} ms")]
    GapNotPositive(i64),
    /// The grace period cannot be negative.
    #[error("grace period cannot be negative, got {0} ms")]
    GraceNegative(i64),
    /// At least one session must be allowed open.
    #[error("max_open must be at least 1")]
    MaxOpenZero,
}

/// How sessions are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Event time or processing time.
    pub time: TimeMode,
    /// Silence (ms) that ends a session; positive.
    pub inactivity_gap_ms: i64,
    /// Event time only: how long (ms of stream time) after its gap a session still accepts
    /// out-of-order records; zero or more.
    pub grace_ms: i64,
    /// The most sessions open at once; opening one more closes the open session with the
    /// lowest first offset ([`CloseReason::MaxOpen`]).
    pub max_open: usize,
    /// How many closed keys are remembered (first in, first out) to recognise a later record
    /// for them as late; zero remembers none.
    pub remember_closed: usize,
}

impl SessionConfig {
    /// Checks the limits.
    ///
    /// # Errors
    /// [`SessionError`] naming the first value out of range.
    pub fn validate(&self) -> Result<(), SessionError> {
        if self.inactivity_gap_ms <= 0 {
            return Err(SessionError::GapNotPositive(self.inactivity_gap_ms));
        }
        if self.grace_ms < 0 {
            return Err(SessionError::GraceNegative(self.grace_ms));
        }
        if self.max_open == 0 {
            return Err(SessionError::MaxOpenZero);
        }
        Ok(())
    }
}

/// What [`SessionWindows::add`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The record opened a new session for its key.
    Opened,
    /// The record joined its key's open session.
    Joined,
    /// The record is late: no session holds it, and nothing changed but the counters.
    Late {
        /// Why.
        reason: LateReason,
    },
}

/// Why a record is late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateReason {
    /// Its key's session is closed (remembered closed, or due to close when the record came).
    Closed,
    /// Event time: its time is at or before the close time (`stream_time - gap - grace`), so
    /// any session it could belong to is closed.
    BehindCloseTime {
        /// The close time when the record came, ms.
        close_time: i64,
    },
    /// Its key has an open session, but the record's time is a gap or more away from it.
    OutsideSession,
}

impl LateReason {
    /// A short name for outputs and metrics: `closed`, `behind_close_time`, `outside_session`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::BehindCloseTime { .. } => "behind_close_time",
            Self::OutsideSession => "outside_session",
        }
    }
}

/// Why a session closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The inactivity gap (plus grace, in event time) passed.
    Gap,
    /// Closed early to keep at most `max_open` sessions open.
    MaxOpen,
}

impl CloseReason {
    /// `gap` or `max_open`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gap => "gap",
            Self::MaxOpen => "max_open",
        }
    }
}

/// A closed session, emitted once.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed<A> {
    /// The session's key.
    pub key: String,
    /// The aggregate of every record of the session.
    pub aggregate: A,
    /// Offset of the session's first record.
    pub first_offset: i64,
    /// Offset of the session's last record.
    pub last_offset: i64,
    /// Earliest record time, ms.
    pub first_time: i64,
    /// Latest record time, ms.
    pub last_time: i64,
    /// How many records joined (the first included).
    pub records: u64,
    /// Why it closed.
    pub reason: CloseReason,
}

/// An offset to commit, with the stream time to commit beside it (event time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SafePoint {
    /// The lowest offset a restart must re-read from.
    pub offset: i64,
    /// Stream time (ms) just before the record at `offset` was read; `None` before any.
    pub stream_time: Option<i64>,
}

/// Counters for metrics; they only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounters {
    /// Sessions opened.
    pub opened: u64,
    /// Records that joined an open session.
    pub joined: u64,
    /// Sessions closed by the gap.
    pub closed_gap: u64,
    /// Sessions closed early by `max_open`.
    pub closed_max_open: u64,
    /// Late records, [`LateReason::Closed`].
    pub late_closed: u64,
    /// Late records, [`LateReason::BehindCloseTime`].
    pub late_behind_close_time: u64,
    /// Late records, [`LateReason::OutsideSession`].
    pub late_outside_session: u64,
}

impl SessionCounters {
    /// Every late record.
    pub fn late(&self) -> u64 {
        self.late_closed + self.late_behind_close_time + self.late_outside_session
    }
}

#[derive(Debug)]
struct Session<A> {
    aggregate: A,
    first_offset: i64,
    last_offset: i64,
    first_time: i64,
    last_time: i64,
    records: u64,
    stream_time_before: Option<i64>,
    /// The highest offset of a record for this key, late ones included: the span a safe
    /// offset must not fall inside.
    held_to: i64,
}

/// The offsets of a closed session, kept while a safe offset could fall inside them.
#[derive(Debug, Clone, Copy)]
struct Span {
    last_offset: i64,
    stream_time_before: Option<i64>,
}

/// Keyed sessions of one partition, with aggregate `A` per session. Pure: no I/O, no clock.
///
/// Feed it the partition's records in offset order ([`Self::add`]) and call [`Self::advance`]
/// on a timer (punctuate) to take the sessions that closed. Memory: at most `max_open` open
/// sessions, `remember_closed` closed keys, and the offset spans (three integers each) of the
/// closed sessions a safe offset could still fall inside: those ending at or after the last
/// safe offset, so about the sessions closed since the oldest open session opened.
#[derive(Debug)]
pub struct SessionWindows<A> {
    config: SessionConfig,
    open: HashMap<String, Session<A>>,
    /// Open sessions by first offset (with the key, so a repeated offset loses nothing).
    open_by_offset: BTreeSet<(i64, String)>,
    /// Closed, not yet returned by `advance`.
    pending: Vec<Closed<A>>,
    /// Remembered closed keys -> their session's first offset (the key of `spans`).
    closed_keys: HashMap<String, i64>,
    closed_fifo: VecDeque<String>,
    /// Closed sessions' spans by first offset.
    spans: BTreeMap<i64, Span>,
    stream_time: Option<i64>,
    safe: Option<SafePoint>,
    counters: SessionCounters,
}

impl<A> SessionWindows<A> {
    /// Empty sessions with `config`.
    ///
    /// # Errors
    /// [`SessionError`] when the config is out of range ([`SessionConfig::validate`]).
    pub fn new(config: SessionConfig) -> Result<Self, SessionError> {
        config.validate()?;
        Ok(Self {
            config,
            open: HashMap::new(),
            open_by_offset: BTreeSet::new(),
            pending: Vec::new(),
            closed_keys: HashMap::new(),
            closed_fifo: VecDeque::new(),
            spans: BTreeMap::new(),
            stream_time: None,
            safe: None,
            counters: SessionCounters::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Sessions open now (closed ones waiting for [`Self::advance`] not included).
    pub fn open_len(&self) -> usize {
        self.open.len()
    }

    /// The highest record time seen (event time: the stream time), or in processing time the
    /// latest wall-clock time passed in; `None` before any. Ms.
    pub fn stream_time(&self) -> Option<i64> {
        self.stream_time
    }

    /// The counters (opened, joined, closed, late by reason).
    pub fn counters(&self) -> SessionCounters {
        self.counters
    }

    /// Every late record so far.
    pub fn late(&self) -> u64 {
        self.counters.late()
    }

    /// The open session of `key`, if any.
    pub fn get(&self, key: &str) -> Option<&A> {
        self.open.get(key).map(|s| &s.aggregate)
    }

    /// The open sessions' keys and aggregates, in first-offset order.
    pub fn iter_open(&self) -> impl Iterator<Item = (&str, &A)> {
        self.open_by_offset
            .iter()
            .filter_map(|(_, k)| self.open.get(k).map(|s| (k.as_str(), &s.aggregate)))
    }

    /// Event time: raises the stream time to at least `t` (ms), e.g. from the commit metadata
    /// before a replay ([`SafePoint::stream_time`]), or for a record that enters no session.
    pub fn restore_stream_time(&mut self, t: i64) {
        self.stream_time = Some(self.stream_time.map_or(t, |s| s.max(t)));
    }

    /// Adds the record at `offset` with time `t` (ms; event time, or the wall clock in
    /// processing time) to `key`'s session.
    ///
    /// A new session's aggregate is made by `open()`, then `update` is applied to it: `update`
    /// sees every record of a session, the first included. `open` and `update` are called only
    /// when the record is admitted ([`Admit::Opened`] / [`Admit::Joined`]).
    ///
    /// In event time the stream time rises to `t` first, for every record (late ones too), as
    /// in Kafka Streams. A record for a key whose session is due to close (its gap passed
    /// before the next [`Self::advance`]) closes that session now (returned by the next
    /// `advance`) and is late: the outcome does not depend on when the timer fires. Opening a
    /// session beyond `max_open` closes the open session with the lowest first offset, also
    /// returned by the next `advance`.
    pub fn add(
        &mut self,
        key: &str,
        t: i64,
        offset: i64,
        open: impl FnOnce() -> A,
        update: impl FnOnce(&mut A),
    ) -> Admit {
        let before = self.stream_time;
        self.restore_stream_time(t);
        let gap = self.config.inactivity_gap_ms;
        if let Some(s) = self.open.get_mut(key) {
            let at = match self.config.time {
                TimeMode::Event => self.stream_time.unwrap_or(t),
                TimeMode::Processing => t,
            };
            if is_due(&self.config, s.last_time, at) {
                s.held_to = s.held_to.max(offset);
                self.close(key, CloseReason::Gap);
                return self.reject(LateReason::Closed);
            }
            if t > s.first_time.saturating_sub(gap) && t < s.last_time.saturating_add(gap) {
                update(&mut s.aggregate);
                s.first_time = s.first_time.min(t);
                s.last_time = s.last_time.max(t);
                s.last_offset = s.last_offset.max(offset);
                s.held_to = s.held_to.max(offset);
                s.records += 1;
                self.counters.joined += 1;
                return Admit::Joined;
            }
            // As for a closed key below: the late record stays inside the session's span.
            s.held_to = s.held_to.max(offset);
            return self.reject(LateReason::OutsideSession);
        }
        if let Some(first) = self.closed_keys.get(key) {
            // While the closed session's span is kept, the late record extends it, so a safe
            // offset never falls between them: a replay rebuilds the session and finds the
            // record late again instead of opening a second session for the key.
            if let Some(span) = self.spans.get_mut(first) {
                span.last_offset = span.last_offset.max(offset);
            }
            return self.reject(LateReason::Closed);
        }
        if self.config.time == TimeMode::Event
            && let Some(st) = self.stream_time
        {
            let close_time = st.saturating_sub(gap).saturating_sub(self.config.grace_ms);
            if t <= close_time {
                return self.reject(LateReason::BehindCloseTime { close_time });
            }
        }
        if self.open.len() >= self.config.max_open
            && let Some((_, oldest)) = self.open_by_offset.first().cloned()
        {
            self.close(&oldest, CloseReason::MaxOpen);
        }
        let mut aggregate = open();
        update(&mut aggregate);
        self.open.insert(
            key.to_owned(),
            Session {
                aggregate,
                first_offset: offset,
                last_offset: offset,
                first_time: t,
                last_time: t,
                records: 1,
                stream_time_before: before,
                held_to: offset,
            },
        );
        self.open_by_offset.insert((offset, key.to_owned()));
        self.counters.opened += 1;
        Admit::Opened
    }

    /// Closes every session that is due and returns them with those closed since the last call
    /// (by `max_open`, or by a record for a due session), ordered by first offset.
    ///
    /// Event time: due when `stream_time >= last_time + gap + grace`; `now` is not used.
    /// Processing time: due when `now >= last_time + gap` (ms).
    pub fn advance(&mut self, now: i64) -> Vec<Closed<A>> {
        let at = match self.config.time {
            TimeMode::Event => self.stream_time,
            TimeMode::Processing => {
                self.restore_stream_time(now);
                Some(now)
            }
        };
        if let Some(at) = at {
            let due: Vec<String> = self
                .open_by_offset
                .iter()
                .map(|(_, k)| k)
                .filter(|k| {
                    self.open
                        .get(k.as_str())
                        .is_some_and(|s| is_due(&self.config, s.last_time, at))
                })
                .cloned()
                .collect();
            for key in due {
                self.close(&key, CloseReason::Gap);
            }
        }
        let mut out = std::mem::take(&mut self.pending);
        out.sort_by_key(|c| c.first_offset);
        out
    }

    /// The lowest offset a restart must re-read from; see [`Self::safe_point`].
    pub fn safe_offset(&mut self, next: i64) -> i64 {
        self.safe_point(next).offset
    }

    /// The lowest offset a restart must re-read from, with the stream time at it.
    ///
    /// `next` is the offset after the last record processed (records that entered no session
    /// included). The rule: start with `X = min(next, first offset of every open or not yet
    /// returned closed session)`; then, while a closed session has `first_offset < X <=
    /// last_offset`, lower `X` to its first offset (one pass down the spans by first offset is
    /// enough). So a replay from `X` rebuilds every open session and every closed session with
    /// a record at or after `X` whole. The result never decreases between calls; closed spans
    /// wholly before it are then forgotten.
    ///
    /// The caller still owns delivery: a closed session returned by [`Self::advance`] must be
    /// acknowledged before an offset past its first offset is committed.
    pub fn safe_point(&mut self, next: i64) -> SafePoint {
        let mut point = SafePoint {
            offset: next,
            stream_time: self.stream_time,
        };
        if let Some((first, key)) = self.open_by_offset.first()
            && *first < point.offset
        {
            point = SafePoint {
                offset: *first,
                stream_time: self.open.get(key).and_then(|s| s.stream_time_before),
            };
        }
        for c in &self.pending {
            if c.first_offset < point.offset {
                point = SafePoint {
                    offset: c.first_offset,
                    stream_time: self
                        .spans
                        .get(&c.first_offset)
                        .and_then(|s| s.stream_time_before),
                };
            }
        }
        for (&first, span) in self.spans.range(..point.offset).rev() {
            if span.last_offset >= point.offset {
                point = SafePoint {
                    offset: first,
                    stream_time: span.stream_time_before,
                };
            }
        }
        if let Some(prev) = self.safe
            && prev.offset > point.offset
        {
            point = prev;
        }
        self.safe = Some(point);
        self.spans.retain(|_, s| s.last_offset >= point.offset);
        point
    }

    fn reject(&mut self, reason: LateReason) -> Admit {
        match reason {
            LateReason::Closed => self.counters.late_closed += 1,
            LateReason::BehindCloseTime { .. } => self.counters.late_behind_close_time += 1,
            LateReason::OutsideSession => self.counters.late_outside_session += 1,
        }
        Admit::Late { reason }
    }

    /// Moves `key`'s open session to `pending`, remembers the key and keeps its span.
    fn close(&mut self, key: &str, reason: CloseReason) {
        let Some(s) = self.open.remove(key) else {
            return;
        };
        self.open_by_offset
            .remove(&(s.first_offset, key.to_owned()));
        match reason {
            CloseReason::Gap => self.counters.closed_gap += 1,
            CloseReason::MaxOpen => self.counters.closed_max_open += 1,
        }
        self.spans.insert(
            s.first_offset,
            Span {
                last_offset: s.held_to,
                stream_time_before: s.stream_time_before,
            },
        );
        if self.config.remember_closed > 0 {
            if self
                .closed_keys
                .insert(key.to_owned(), s.first_offset)
                .is_none()
            {
                self.closed_fifo.push_back(key.to_owned());
            }
            while self.closed_fifo.len() > self.config.remember_closed {
                if let Some(old) = self.closed_fifo.pop_front() {
                    self.closed_keys.remove(&old);
                }
            }
        }
        self.pending.push(Closed {
            key: key.to_owned(),
            aggregate: s.aggregate,
            first_offset: s.first_offset,
            last_offset: s.last_offset,
            first_time: s.first_time,
            last_time: s.last_time,
            records: s.records,
            reason,
        });
    }
}

/// Whether a session whose latest record is at `last_time` is due to close at `at` (stream
/// time in event time, `now` in processing time).
fn is_due(config: &SessionConfig, last_time: i64, at: i64) -> bool {
    let grace = match config.time {
        TimeMode::Event => config.grace_ms,
        TimeMode::Processing => 0,
    };
    at >= last_time
        .saturating_add(config.inactivity_gap_ms)
        .saturating_add(grace)
}

#[cfg(test)]
mod tests;
