//! Windows of time: [`Window`] `[start, end)` and the epoch-aligned [`Hopping`] assignment.
//!
//! The words are Kafka Streams' and Flink's. A hopping window (Kafka Streams `TimeWindows` with
//! `advanceBy`; Flink `SlidingEventTimeWindows` / `SlidingProcessingTimeWindows`, size and slide)
//! has a fixed `size` and starts every `advance`; windows are aligned to the Unix epoch, so every
//! window start is a multiple of `advance` (`k * advance` for an integer `k`, negative times
//! included), the start is inclusive and the end exclusive. With `advance == size` the windows
//! do not overlap: a tumbling window (Kafka Streams `TimeWindows.ofSizeWithNoGrace`, Flink
//! `Tumbling*Windows`).
//!
//! Every time is milliseconds since the Unix epoch. Arithmetic saturates at the ends of `i64`,
//! so no input time panics; windows near `i64::MIN` / `i64::MAX` are clipped there.

use thiserror::Error;

/// One window: `[start, end)`, milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    /// First millisecond in the window (inclusive).
    pub start: i64,
    /// First millisecond after the window (exclusive).
    pub end: i64,
}

impl Window {
    /// Whether `t` (ms) is in `[start, end)`.
    pub fn contains(&self, t: i64) -> bool {
        self.start <= t && t < self.end
    }
}

/// A hopping (or, with `advance == size`, tumbling) window assignment that was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WindowError {
    /// `size` must be at least 1 ms.
    #[error("window size must be positive, got {size_ms} ms")]
    SizeNotPositive {
        /// The size given, in ms.
        size_ms: i64,
    },
    /// `advance` must be in `1..=size` (Kafka Streams refuses an advance above the size too).
    #[error(
        "window advance must be positive and at most the size ({size_ms} ms), got {advance_ms} ms"
    )]
    AdvanceOutOfRange {
        /// The advance given, in ms.
        advance_ms: i64,
        /// The size given, in ms.
        size_ms: i64,
    },
}

/// Epoch-aligned hopping windows of `size_ms` starting every `advance_ms` (Kafka Streams
/// `TimeWindows.ofSizeAndGrace(size).advanceBy(advance)`; Flink sliding windows, size and
/// slide). Each time is in `ceil(size / advance)` or `floor(size / advance)` windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hopping {
    size_ms: i64,
    advance_ms: i64,
}

impl Hopping {
    /// Windows of `size_ms` starting every `advance_ms` milliseconds.
    ///
    /// # Errors
    /// [`WindowError::SizeNotPositive`] when `size_ms <= 0`;
    /// [`WindowError::AdvanceOutOfRange`] unless `0 < advance_ms <= size_ms`.
    pub fn of_size_and_advance(size_ms: i64, advance_ms: i64) -> Result<Self, WindowError> {
        if size_ms <= 0 {
            return Err(WindowError::SizeNotPositive { size_ms });
        }
        if advance_ms <= 0 || advance_ms > size_ms {
            return Err(WindowError::AdvanceOutOfRange {
                advance_ms,
                size_ms,
            });
        }
        Ok(Self {
            size_ms,
            advance_ms,
        })
    }

    /// Tumbling windows: `advance == size`.
    ///
    /// # Errors
    /// [`WindowError::SizeNotPositive`] when `size_ms <= 0`.
    pub fn tumbling(size_ms: i64) -> Result<Self, WindowError> {
        Self::of_size_and_advance(size_ms, size_ms)
    }

    /// The window size in ms.
    pub fn size_ms(&self) -> i64 {
        self.size_ms
    }

    /// The advance (Flink: slide) in ms.
    pub fn advance_ms(&self) -> i64 {
        self.advance_ms
    }

    /// Whether the windows do not overlap (`advance == size`).
    pub fn is_tumbling(&self) -> bool {
        self.advance_ms == self.size_ms
    }

    /// Whether `start` is an epoch-aligned window start (a multiple of the advance).
    pub fn is_aligned(&self, start: i64) -> bool {
        start.rem_euclid(self.advance_ms) == 0
    }

    /// The window starting at `start` (which should be aligned: see [`Self::is_aligned`]).
    pub fn window_at(&self, start: i64) -> Window {
        Window {
            start,
            end: start.saturating_add(self.size_ms),
        }
    }

    /// The start of the window after the one starting at `start`.
    pub fn next_start(&self, start: i64) -> i64 {
        start.saturating_add(self.advance_ms)
    }

    /// The start of the last (latest) window containing `t`: `t` rounded down to the advance.
    pub fn last_start_containing(&self, t: i64) -> i64 {
        t.div_euclid(self.advance_ms)
            .saturating_mul(self.advance_ms)
    }

    /// The start of the first (earliest) window containing `t`: the least multiple of the
    /// advance above `t - size`.
    pub fn first_start_containing(&self, t: i64) -> i64 {
        let below = t.saturating_sub(self.size_ms);
        below
            .div_euclid(self.advance_ms)
            .saturating_add(1)
            .saturating_mul(self.advance_ms)
    }

    /// Every window containing `t` (ms), in ascending start order: starts are the multiples of
    /// the advance in `(t - size, t]`.
    pub fn windows_containing(&self, t: i64) -> impl Iterator<Item = Window> + use<> {
        let first = self.first_start_containing(t);
        let last = self.last_start_containing(t);
        let count = if last >= first {
            (last - first) / self.advance_ms + 1
        } else {
            0
        };
        let this = *self;
        (0..count).map(move |k| this.window_at(first.saturating_add(k * this.advance_ms)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    #[test]
    fn constructor_refuses_bad_sizes_and_advances() {
        assert_eq!(
            Hopping::of_size_and_advance(0, 1),
            Err(WindowError::SizeNotPositive { size_ms: 0 })
        );
        assert_eq!(
            Hopping::of_size_and_advance(-5, 1),
            Err(WindowError::SizeNotPositive { size_ms: -5 })
        );
        for advance in [0, -1, 11] {
            assert_eq!(
                Hopping::of_size_and_advance(10, advance),
                Err(WindowError::AdvanceOutOfRange {
                    advance_ms: advance,
                    size_ms: 10
                })
            );
        }
        let h = Hopping::of_size_and_advance(10, 10).unwrap();
        assert!(h.is_tumbling());
        assert_eq!(Hopping::tumbling(10).unwrap(), h);
        let e = Hopping::of_size_and_advance(10, 11).unwrap_err();
        assert!(e.to_string().contains("11 ms"), "{e}");
    }

    #[test]
    fn eight_minute_windows_advancing_one_minute() {
        let h = Hopping::of_size_and_advance(8 * MINUTE, MINUTE).unwrap();
        let t = 100 * MINUTE + 30_000;
        let ws: Vec<Window> = h.windows_containing(t).collect();
        assert_eq!(ws.len(), 8);
        assert_eq!(ws[0].start, 93 * MINUTE);
        assert_eq!(ws[7].start, 100 * MINUTE);
        for w in &ws {
            assert!(w.contains(t));
            assert_eq!(w.end - w.start, 8 * MINUTE);
        }
        // Start inclusive, end exclusive: a time on a boundary starts a window and ends another.
        let ws: Vec<Window> = h.windows_containing(100 * MINUTE).collect();
        assert_eq!(ws.first().unwrap().start, 93 * MINUTE);
        assert_eq!(ws.last().unwrap().start, 100 * MINUTE);
        assert!(!ws.iter().any(|w| w.start == 92 * MINUTE));
    }

    #[test]
    fn tumbling_windows_hold_each_time_once() {
        let h = Hopping::tumbling(10).unwrap();
        for t in -25..25 {
            let ws: Vec<Window> = h.windows_containing(t).collect();
            assert_eq!(ws.len(), 1, "t={t}");
            assert_eq!(ws[0].start, t.div_euclid(10) * 10);
        }
    }

    #[test]
    fn assignment_matches_brute_force_including_negative_times() {
        for (size, advance) in [(8, 1), (8, 3), (7, 7), (10, 4), (5, 5), (9, 2)] {
            let h = Hopping::of_size_and_advance(size, advance).unwrap();
            for t in -60..60 {
                let got: Vec<Window> = h.windows_containing(t).collect();
                let want: Vec<Window> = (-200..200)
                    .filter(|s: &i64| s.rem_euclid(advance) == 0)
                    .map(|s| Window {
                        start: s,
                        end: s + size,
                    })
                    .filter(|w| w.contains(t))
                    .collect();
                assert_eq!(got, want, "size {size} advance {advance} t {t}");
                assert!(got.iter().all(|w| h.is_aligned(w.start)));
            }
        }
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let h = Hopping::of_size_and_advance(8 * MINUTE, MINUTE).unwrap();
        for t in [i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1, 0] {
            let ws: Vec<Window> = h.windows_containing(t).collect();
            assert!(ws.len() <= 8, "t={t}");
            assert!(ws.windows(2).all(|p| p[0].start < p[1].start));
        }
    }
}
