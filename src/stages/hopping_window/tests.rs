//! Unit tests of [`DistinctWindows`] and [`Combiner`], and brute-force tests of the combined
//! series: random cancellation streams over several partitions, one or two instances, crashes.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::*;

const MINUTE: i64 = 60_000;
const GRACE: i64 = 3 * MINUTE;
/// Long enough that no partition goes idle in the simulations.
const NEVER_IDLE: i64 = i64::MAX / 4;

fn hopping() -> Hopping {
    Hopping::of_size_and_advance(8 * MINUTE, MINUTE).unwrap()
}

fn keys(p: &Partial) -> Vec<&str> {
    p.keys.iter().map(String::as_str).collect()
}

#[test]
fn negative_grace_and_idle_timeout_are_refused() {
    assert_eq!(
        DistinctWindows::new(hopping(), -1, TimeMode::Event, 0).unwrap_err(),
        HoppingError::GraceNegative(-1)
    );
    assert_eq!(
        Combiner::new(hopping(), 1, -1).unwrap_err(),
        HoppingError::IdleTimeoutNegative(-1)
    );
}

#[test]
fn event_time_windows_close_after_grace_empty_ones_included() {
    let h = Hopping::of_size_and_advance(2 * MINUTE, MINUTE).unwrap();
    let mut dw = DistinctWindows::new(h, MINUTE, TimeMode::Event, 3).unwrap();
    dw.add("C1", 10 * MINUTE + 5, 0).unwrap(); // windows 9..11, 10..12
    dw.add("C1", 10 * MINUTE + 6, 1).unwrap();
    dw.add("C2", 11 * MINUTE, 2).unwrap(); // 10..12, 11..13
    assert!(dw.advance(0).is_empty());
    // Stream time 13: windows ending at or before 12 close.
    dw.add("C3", 13 * MINUTE, 3).unwrap();
    let out = dw.advance(0);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].window, h.window_at(9 * MINUTE));
    assert_eq!(keys(&out[0]), ["C1"]);
    assert_eq!(keys(&out[1]), ["C1", "C2"]);
    assert!(out.iter().all(|p| p.partition == 3));
    // A jump: every window up to 17 + ... closes, empty ones too.
    dw.add("C4", 20 * MINUTE, 4).unwrap();
    let out = dw.advance(0);
    let starts: Vec<i64> = out.iter().map(|p| p.window.start / MINUTE).collect();
    assert_eq!(starts, [11, 12, 13, 14, 15, 16, 17]);
    assert_eq!(keys(&out[0]), ["C2"]);
    assert_eq!(keys(&out[1]), ["C3"]);
    assert_eq!(keys(&out[2]), ["C3"]);
    assert!(out[3..].iter().all(|p| p.keys.is_empty()));
    assert_eq!(dw.frontier(), Some(18 * MINUTE));
    assert_eq!(dw.counters().windows_emitted, 9);
}

#[test]
fn a_record_for_closed_windows_is_late() {
    let h = Hopping::of_size_and_advance(2 * MINUTE, MINUTE).unwrap();
    let mut dw = DistinctWindows::new(h, 0, TimeMode::Event, 0).unwrap();
    dw.add("a", 10 * MINUTE, 0).unwrap();
    dw.add("b", 12 * MINUTE, 1).unwrap();
    // Window 9..11 closed at stream time 12 even before advance; 10..12 too.
    assert_eq!(
        dw.add("c", 10 * MINUTE + 1, 2),
        Err(Late {
            time: 10 * MINUTE + 1
        })
    );
    // 11..13 still open: counted there, late for 10..12.
    dw.add("d", 11 * MINUTE + 1, 3).unwrap();
    let c = dw.counters();
    assert_eq!((c.records, c.late_records, c.late_windows), (3, 1, 3));
    let out = dw.advance(0);
    assert_eq!(out.len(), 2);
    assert_eq!(keys(&out[0]), ["a"]);
    assert_eq!(keys(&out[1]), ["a"]);
    dw.add("e", 14 * MINUTE, 4).unwrap();
    let out = dw.advance(0);
    assert_eq!(keys(&out[0]), ["b", "d"]);
}

#[test]
fn processing_time_windows_start_at_the_first_advance() {
    let h = Hopping::of_size_and_advance(2 * MINUTE, MINUTE).unwrap();
    let mut dw = DistinctWindows::new(h, GRACE, TimeMode::Processing, 0).unwrap();
    assert!(dw.advance(10 * MINUTE + 30_000).is_empty());
    dw.add("a", 11 * MINUTE, 0).unwrap();
    let out = dw.advance(13 * MINUTE);
    let got: Vec<(i64, Vec<&str>)> = out
        .iter()
        .map(|p| (p.window.start / MINUTE, keys(p)))
        .collect();
    assert_eq!(got, [(9, vec![]), (10, vec!["a"]), (11, vec!["a"])]);
}

#[test]
fn safe_offset_is_the_first_record_of_an_open_window() {
    let h = Hopping::tumbling(MINUTE).unwrap();
    let mut dw = DistinctWindows::new(h, 0, TimeMode::Event, 0).unwrap();
    assert_eq!(dw.safe_offset(0), 0);
    dw.add("a", 0, 5).unwrap();
    dw.add("b", MINUTE, 6).unwrap();
    assert_eq!(dw.safe_offset(7), 5);
    assert_eq!(dw.advance(0).len(), 1);
    let point = dw.safe_point(7);
    assert_eq!(
        point,
        SafePoint {
            offset: 6,
            stream_time: Some(0),
            frontier: Some(MINUTE)
        }
    );
    dw.add("c", 2 * MINUTE, 7).unwrap();
    assert_eq!(dw.advance(0).len(), 1);
    assert_eq!(dw.safe_offset(8), 7);
    // A fresh instance restored from the point re-reads 6 and 7 and emits the same windows.
    let mut again = DistinctWindows::new(h, 0, TimeMode::Event, 0).unwrap();
    again.restore(&point);
    assert_eq!(again.add("a", 0, 5), Err(Late { time: 0 }));
    again.add("b", MINUTE, 6).unwrap();
    again.add("c", 2 * MINUTE, 7).unwrap();
    let out = again.advance(0);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].window.start, keys(&out[0])), (MINUTE, vec!["b"]));
}

#[test]
fn partial_and_final_json() {
    let p = Partial {
        window: Window {
            start: 60_000,
            end: 540_000,
        },
        partition: 2,
        keys: vec!["C1".into(), "C2".into()],
    };
    let text = serde_json::to_string(&p).unwrap();
    assert_eq!(
        text,
        r#"{"window_start":60000,"window_end":540000,"partition":2,"keys":["C1","C2"]}"#
    );
    assert_eq!(serde_json::from_str::<Partial>(&text).unwrap(), p);
    assert!(serde_json::from_str::<Partial>(r#"{"window_start":1}"#).is_err());
    let f = Final {
        window_start: 1_323_432_000_000,
        window_end: 1_323_432_480_000,
        count: 3,
    };
    assert_eq!(
        serde_json::to_string(&f).unwrap(),
        r#"{"window_start":"2011-12-09T12:00:00Z","window_end":"2011-12-09T12:08:00Z","count":3}"#
    );
    let back: Final = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
    assert_eq!(back, f);
    assert!(
        serde_json::from_str::<Final>(
            r#"{"window_start":"2011-12-09 12:00","window_end":"2011-12-09T12:08:00Z","count":1}"#
        )
        .is_err()
    );
    let far = Final {
        window_start: i64::MAX - 10,
        window_end: i64::MAX,
        count: 0,
    };
    assert!(serde_json::to_string(&far).is_err());
}

fn partial(start_min: i64, partition: i32, keys: &[&str]) -> Partial {
    Partial {
        window: hopping().window_at(start_min * MINUTE),
        partition,
        keys: keys.iter().map(|k| k.to_string()).collect(),
    }
}

#[test]
fn combiner_waits_for_every_partition_and_unions_keys() {
    let mut c = Combiner::new(hopping(), 2, NEVER_IDLE).unwrap();
    assert_eq!(c.add(partial(0, 0, &["a", "b"]), 0, 0), AddOutcome::Added);
    assert_eq!(c.add(partial(1, 0, &["b"]), 1, 0), AddOutcome::Added);
    assert!(c.advance(0).is_empty(), "partition 1 has not reported");
    assert_eq!(c.add(partial(0, 1, &["b", "c"]), 2, 0), AddOutcome::Added);
    let out = c.advance(0);
    assert_eq!(
        out,
        [Final {
            window_start: 0,
            window_end: 8 * MINUTE,
            count: 3
        }]
    );
    // A partial repeated after a crash.
    assert_eq!(c.add(partial(1, 0, &["b"]), 3, 0), AddOutcome::Duplicate);
    assert_eq!(c.add(partial(0, 1, &["b", "c"]), 4, 0), AddOutcome::Late);
    assert_eq!(c.safe_offset(5), 1);
    // Partition 1 jumps ahead: windows 1 and 2 (nothing from it there) are final with 0 ... up
    // to partition 0's progress.
    assert_eq!(c.add(partial(5, 1, &[]), 5, 0), AddOutcome::Added);
    assert_eq!(c.add(partial(2, 0, &[]), 6, 0), AddOutcome::Added);
    let out = c.advance(0);
    let got: Vec<(i64, u64)> = out
        .iter()
        .map(|f| (f.window_start / MINUTE, f.count))
        .collect();
    assert_eq!(got, [(1, 1), (2, 0)]);
    assert_eq!(c.safe_offset(7), 5);
    let n = c.counters();
    assert_eq!((n.added, n.duplicates, n.late, n.finals), (5, 1, 1, 3));
}

#[test]
fn combiner_rejects_foreign_windows_and_partitions() {
    let mut c = Combiner::new(hopping(), 2, NEVER_IDLE).unwrap();
    let mut p = partial(0, 0, &["a"]);
    p.window.end += 1;
    assert_eq!(c.add(p, 0, 0), AddOutcome::Rejected);
    let mut p = partial(0, 0, &["a"]);
    p.window.start += 1;
    p.window.end += 1;
    assert_eq!(c.add(p, 0, 0), AddOutcome::Rejected);
    assert_eq!(c.add(partial(0, 2, &["a"]), 0, 0), AddOutcome::Rejected);
    assert_eq!(c.add(partial(0, -1, &["a"]), 0, 0), AddOutcome::Rejected);
    c.set_partitions(3);
    assert_eq!(c.add(partial(0, 2, &["a"]), 0, 0), AddOutcome::Added);
    assert_eq!(c.counters().rejected, 4);
}

#[test]
fn an_idle_partition_is_left_out_after_the_timeout() {
    let mut c = Combiner::new(hopping(), 2, 1_000).unwrap();
    assert!(c.advance(0).is_empty(), "nobody reported");
    c.add(partial(0, 0, &["a"]), 0, 100);
    assert!(c.advance(999).is_empty(), "partition 1 not idle yet");
    let out = c.advance(1_000);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].count, 1);
    // Partition 1 comes back and is waited for again.
    c.add(partial(0, 1, &["z"]), 1, 1_100);
    c.add(partial(1, 0, &["a"]), 2, 1_100);
    assert!(c.advance(1_200).is_empty());
    c.add(partial(1, 1, &[]), 3, 1_300);
    assert_eq!(c.advance(1_300).len(), 1);
    // Both idle: up to the highest progress.
    c.add(partial(4, 0, &[]), 4, 1_300);
    let out = c.advance(5_000);
    let starts: Vec<i64> = out.iter().map(|f| f.window_start / MINUTE).collect();
    assert_eq!(starts, [2, 3, 4]);
}

#[test]
fn a_restored_combiner_emits_nothing_before_its_frontier() {
    let mut c = Combiner::new(hopping(), 1, NEVER_IDLE).unwrap();
    c.add(partial(0, 0, &["a"]), 0, 0);
    c.add(partial(1, 0, &["a", "b"]), 1, 0);
    assert_eq!(c.advance(0).len(), 2);
    let (offset, frontier) = (c.safe_offset(2), c.frontier());
    assert_eq!((offset, frontier), (2, Some(2 * MINUTE)));
    let mut again = Combiner::new(hopping(), 1, NEVER_IDLE).unwrap();
    again.restore_frontier(2 * MINUTE);
    assert_eq!(again.add(partial(1, 0, &["b"]), 1, 0), AddOutcome::Late);
    again.add(partial(2, 0, &["c"]), 2, 0);
    let out = again.advance(0);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].window_start, out[0].count), (2 * MINUTE, 1));
}

// ---- brute force ----------------------------------------------------------------------------

/// One partition's records in offset order: (cancelled invoice number, time ms).
type PartitionRecords = Vec<(String, i64)>;

/// A random stream of cancellations over `partitions` partitions: mostly new invoice numbers,
/// some repeated (also on another partition), bursts, pauses longer than a window (zero
/// counts), and in event time records up to 2 minutes out of order (within the grace).
fn cancellations(
    rng: &mut StdRng,
    partitions: usize,
    n: usize,
    time: TimeMode,
) -> Vec<PartitionRecords> {
    let mut out = vec![Vec::new(); partitions];
    let mut clock = 1_322_000_000_000 + rng.random_range(0..MINUTE);
    let mut issued = 0_usize;
    for _ in 0..n {
        clock += rng.random_range(0..40_000);
        if rng.random_bool(0.02) {
            clock += rng.random_range(9 * MINUTE..30 * MINUTE);
        }
        let id = if issued == 0 || rng.random_bool(0.8) {
            issued += 1;
            issued - 1
        } else {
            issued - 1 - rng.random_range(0..issued.min(20))
        };
        let partition = if rng.random_bool(0.05) {
            rng.random_range(0..partitions)
        } else {
            id % partitions
        };
        let t = match time {
            TimeMode::Event if rng.random_bool(0.3) => clock - rng.random_range(0..2 * MINUTE),
            _ => clock,
        };
        out[partition].push((format!("C{id}"), t));
    }
    out
}

/// Distinct keys with a time in each window.
fn brute_force(parts: &[PartitionRecords], window: Window) -> u64 {
    parts
        .iter()
        .flatten()
        .filter(|(_, t)| window.contains(*t))
        .map(|(k, _)| k)
        .collect::<BTreeSet<_>>()
        .len() as u64
}

#[derive(Clone, Copy, Default)]
struct Crashes {
    /// An instance crashes and its partitions restart from their committed safe points.
    instance: bool,
    /// The combiner crashes and restarts from its committed offset and frontier.
    combiner: bool,
}

/// Runs the two steps in event time: `groups` are the instances (each owns some partitions
/// and ticks them together), partials go to one topic read by one combiner. Returns the
/// finals by window start (a window emitted twice must have the same count).
fn simulate(
    parts: &[PartitionRecords],
    groups: &[Vec<usize>],
    seed: u64,
    crashes: Crashes,
) -> BTreeMap<i64, u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let new_dw =
        |i: usize| DistinctWindows::new(hopping(), GRACE, TimeMode::Event, i as i32).unwrap();
    let mut dws: Vec<DistinctWindows> = (0..parts.len()).map(new_dw).collect();
    let mut pos = vec![0_usize; parts.len()];
    let mut committed: Vec<Option<SafePoint>> = vec![None; parts.len()];
    let mut topic: Vec<Partial> = Vec::new();
    let mut combiner = Combiner::new(hopping(), parts.len(), NEVER_IDLE).unwrap();
    let mut read = 0_usize;
    let mut combiner_commit: (i64, Option<i64>) = (0, None);
    let mut finals = BTreeMap::new();
    let record = |finals: &mut BTreeMap<i64, u64>, f: Final| {
        if let Some(old) = finals.insert(f.window_start, f.count) {
            assert_eq!(
                old, f.count,
                "seed {seed}: window {} emitted twice, differently",
                f.window_start
            );
        }
    };
    let total: usize = parts.iter().map(Vec::len).sum();
    let crash_instance_at = rng.random_range(total / 4..total * 3 / 4);
    let crash_combiner_at = rng.random_range(total / 4..total * 3 / 4);
    let (mut processed, mut instance_crashed, mut combiner_crashed) = (0, false, false);
    let mut now = 0;
    while pos.iter().zip(parts).any(|(i, p)| *i < p.len()) {
        now += 100;
        let group = &groups[rng.random_range(0..groups.len())];
        for &i in group {
            for _ in 0..rng.random_range(0..6) {
                if let Some((key, t)) = parts[i].get(pos[i]) {
                    let _ = dws[i].add(key, *t, pos[i] as i64);
                    pos[i] += 1;
                    processed += 1;
                }
            }
        }
        if rng.random_bool(0.5) {
            for &i in group {
                topic.extend(dws[i].advance(now));
            }
        }
        if rng.random_bool(0.2) {
            for &i in group {
                committed[i] = Some(dws[i].safe_point(pos[i] as i64));
            }
        }
        if rng.random_bool(0.3) {
            while read < topic.len() {
                combiner.add(topic[read].clone(), read as i64, now);
                read += 1;
            }
            for f in combiner.advance(now) {
                record(&mut finals, f);
            }
            if rng.random_bool(0.3) {
                combiner_commit = (combiner.safe_offset(read as i64), combiner.frontier());
            }
        }
        if crashes.instance && !instance_crashed && processed >= crash_instance_at {
            instance_crashed = true;
            for &i in group {
                dws[i] = new_dw(i);
                pos[i] = 0;
                if let Some(point) = committed[i] {
                    dws[i].restore(&point);
                    pos[i] = point.offset as usize;
                }
            }
        }
        if crashes.combiner && !combiner_crashed && processed >= crash_combiner_at {
            combiner_crashed = true;
            combiner = Combiner::new(hopping(), parts.len(), NEVER_IDLE).unwrap();
            if let Some(f) = combiner_commit.1 {
                combiner.restore_frontier(f);
            }
            read = combiner_commit.0 as usize;
        }
    }
    for dw in &mut dws {
        topic.extend(dw.advance(now));
    }
    while read < topic.len() {
        combiner.add(topic[read].clone(), read as i64, now);
        read += 1;
    }
    for f in combiner.advance(now) {
        record(&mut finals, f);
    }
    assert!(!crashes.instance || instance_crashed);
    assert!(!crashes.combiner || combiner_crashed);
    finals
}

/// The finals are every epoch-aligned window from the one containing the first record to the
/// last final, each counted as brute force counts it, zeros included.
fn check_against_brute_force(parts: &[PartitionRecords], finals: &BTreeMap<i64, u64>) {
    let h = hopping();
    let first_time = parts.iter().flatten().map(|(_, t)| *t).min().unwrap();
    let starts: Vec<i64> = finals.keys().copied().collect();
    assert_eq!(starts[0], h.first_start_containing(first_time));
    assert!(
        starts.windows(2).all(|w| w[1] - w[0] == h.advance_ms()),
        "gap in the series"
    );
    for (&start, &count) in finals {
        assert_eq!(
            count,
            brute_force(parts, h.window_at(start)),
            "window {start}"
        );
    }
    assert!(finals.len() > 100, "only {} windows", finals.len());
    assert!(finals.values().any(|&c| c == 0), "no zero window");
    assert!(finals.values().any(|&c| c > 3), "no busy window");
}

#[test]
fn combined_event_time_counts_equal_brute_force() {
    for seed in 0..8 {
        let mut rng = StdRng::seed_from_u64(seed);
        let parts = cancellations(&mut rng, 4, 1_500, TimeMode::Event);
        let finals = simulate(&parts, &[vec![0, 1, 2, 3]], seed, Crashes::default());
        check_against_brute_force(&parts, &finals);
    }
}

#[test]
fn two_instances_give_the_same_series_as_one() {
    for seed in 10..16 {
        let mut rng = StdRng::seed_from_u64(seed);
        let parts = cancellations(&mut rng, 4, 1_500, TimeMode::Event);
        let one = simulate(&parts, &[vec![0, 1, 2, 3]], seed, Crashes::default());
        let two = simulate(
            &parts,
            &[vec![0, 2], vec![1, 3]],
            seed + 100,
            Crashes::default(),
        );
        check_against_brute_force(&parts, &two);
        let common = one.len().min(two.len());
        assert!(
            one.iter().take(common).eq(two.iter().take(common)),
            "seed {seed}"
        );
    }
}

#[test]
fn a_crash_and_replay_from_the_safe_offsets_changes_no_final_count() {
    for seed in 20..40 {
        let mut rng = StdRng::seed_from_u64(seed);
        let parts = cancellations(&mut rng, 4, 1_500, TimeMode::Event);
        let crashes = Crashes {
            instance: true,
            combiner: seed % 2 == 0,
        };
        let finals = simulate(&parts, &[vec![0, 1], vec![2, 3]], seed, crashes);
        check_against_brute_force(&parts, &finals);
    }
}

#[test]
fn combined_processing_time_counts_equal_brute_force() {
    for seed in 50..56 {
        let mut rng = StdRng::seed_from_u64(seed);
        let parts = cancellations(&mut rng, 3, 1_500, TimeMode::Processing);
        // Records reach their partition worker in time order; the wall clock is their time.
        let mut arrivals: Vec<(i64, usize, usize)> = parts
            .iter()
            .enumerate()
            .flat_map(|(p, recs)| recs.iter().enumerate().map(move |(o, (_, t))| (*t, p, o)))
            .collect();
        arrivals.sort();
        let mut dws: Vec<DistinctWindows> = (0..parts.len())
            .map(|i| {
                DistinctWindows::new(hopping(), GRACE, TimeMode::Processing, i as i32).unwrap()
            })
            .collect();
        let mut combiner = Combiner::new(hopping(), parts.len(), NEVER_IDLE).unwrap();
        let mut finals = BTreeMap::new();
        let mut offset = 0;
        for &(t, p, o) in &arrivals {
            dws[p].add(&parts[p][o].0, t, o as i64).unwrap();
            if rng.random_bool(0.3) {
                let i = rng.random_range(0..parts.len());
                for partial in dws[i].advance(t) {
                    assert_ne!(combiner.add(partial, offset, t), AddOutcome::Late);
                    offset += 1;
                }
                for f in combiner.advance(t) {
                    assert!(finals.insert(f.window_start, f.count).is_none());
                }
            }
        }
        let end = arrivals.last().unwrap().0 + 1;
        for dw in &mut dws {
            for partial in dw.advance(end) {
                combiner.add(partial, offset, end);
                offset += 1;
            }
        }
        for f in combiner.advance(end) {
            assert!(finals.insert(f.window_start, f.count).is_none());
        }
        check_against_brute_force(&parts, &finals);
        // Every window ending by the last time is there.
        let last = *finals.keys().last().unwrap();
        assert_eq!(
            hopping().window_at(last).end,
            hopping().last_start_containing(end)
        );
    }
}

#[test]
fn a_far_jump_is_emitted_in_bounded_batches() {
    let h = Hopping::tumbling(1).unwrap();
    let mut dw = DistinctWindows::new(h, 0, TimeMode::Event, 0).unwrap();
    dw.add("a", 0, 0).unwrap();
    dw.add("b", 250_000, 1).unwrap();
    let first = dw.advance(0);
    assert_eq!(first.len(), MAX_WINDOWS_PER_ADVANCE);
    assert_eq!(keys(&first[0]), ["a"]);
    assert_eq!(dw.advance(0).len(), MAX_WINDOWS_PER_ADVANCE);
    let last = dw.advance(0);
    assert_eq!(last.len(), 50_000);
    assert_eq!(last.last().unwrap().window.end, 250_000);
    let mut c = Combiner::new(h, 1, NEVER_IDLE).unwrap();
    for (o, p) in first.into_iter().chain(last).enumerate() {
        c.add(p, o as i64, 0);
    }
    let batches: Vec<Vec<Final>> = (0..4).map(|_| c.advance(0)).collect();
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    assert_eq!(
        sizes,
        [MAX_WINDOWS_PER_ADVANCE, MAX_WINDOWS_PER_ADVANCE, 50_000, 0]
    );
    // The windows nobody reported (the second batch of partials was never added) count zero.
    let finals: Vec<Final> = batches.into_iter().flatten().collect();
    assert_eq!(finals[0].count, 1);
    assert!(finals[1..].iter().all(|f| f.count == 0));
    assert!(
        finals
            .windows(2)
            .all(|w| w[1].window_start == w[0].window_end)
    );
}
