//! The `sensors` profile: readings of `sensors` sensors, round robin,
//! `{"sensor_id": "sensor-007", "temperature": 21.4, "pressure": 101.3, "timestamp":
//! "2026-11-30T10:00:00.123+00:00"}`, keyed by `sensor_id`; with `label_faults`, also `"fault":
//! "spike"|"drift"|"stuck"|null`.
//!
//! A normal reading is the sensor's baseline (temperature uniform in [20, 30] °C, pressure in
//! [100, 110] kPa, drawn from the seed and the sensor's index) plus Gaussian noise (sd 0.5), so it
//! sits at least 20 sd below the original project's rule `temperature > 40.0 || pressure >
//! 120.0` and essentially never fires it. Faults are injected in episodes, each drawn by the
//! seeded RNG, and every faulty reading is above that rule's threshold by at least 6 sd of the
//! noise:
//!
//! - **spike**: one reading 5-20 above the threshold (temperature or pressure);
//! - **drift**: the baseline creeps up over [`RAMP`] readings to 3 below the threshold (normal
//!   readings still, labelled `null`), then [`DRIFT_OVER`] readings above it, rising;
//! - **stuck**: the sensor repeats one reading, 5-25 above the threshold on one field, for
//!   [`STUCK`] readings.
//!
//! `fault_share` is the share of readings that are faulty (the ones labelled, the ones the rule
//! flags). The readings of each sensor are cut into blocks of [`BLOCK`]; a block holds one episode
//! with probability `fault_share * BLOCK / (mean faulty readings of an episode)`, of a kind drawn
//! uniformly, at a random place in the block. Hence the largest share, [`MAX_FAULT_SHARE`].
//!
//! Reading `n` of the stream belongs to sensor `n % sensors` and is a pure function of (`seed`,
//! `sensors`, `fault_share`, `n`): the same seed gives the same stream, and a generator restarted
//! by the supervisor carries on at the next `n` with the same values. Only `timestamp` is the
//! wall clock at the time of sending (a sensor stamps its readings when it takes them).

use std::time::{SystemTime, UNIX_EPOCH};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde_json::json;

/// The original project's temperature threshold, °C (`temperature > 40.0`, strict).
pub const TEMPERATURE_LIMIT: f64 = 40.0;
/// The original project's pressure threshold, kPa (`pressure > 120.0`, strict).
pub const PRESSURE_LIMIT: f64 = 120.0;
/// Readings of one sensor per block; a block holds at most one fault episode.
pub const BLOCK: u64 = 32;
/// Readings over which a drifting baseline creeps up to just below the threshold.
pub const RAMP: u64 = 10;
/// Readings of a drift above the threshold.
pub const DRIFT_OVER: u64 = 5;
/// Readings a stuck sensor repeats its value for.
pub const STUCK: u64 = 10;
/// Mean faulty readings of an episode (spike 1, drift [`DRIFT_OVER`], stuck [`STUCK`], equally
/// likely).
const EPISODE_FAULTS: f64 = (1 + DRIFT_OVER + STUCK) as f64 / 3.0;
/// The largest `fault_share`: one episode in every block (1/6).
pub const MAX_FAULT_SHARE: f64 = EPISODE_FAULTS / BLOCK as f64;
/// Standard deviation of the noise on both fields.
const NOISE_SD: f64 = 0.5;
/// How far (noise-free) faulty readings stay above, and drift ramps below, a threshold: 6 sd.
const MARGIN: f64 = 3.0;

/// What kind of injected fault a reading is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    Spike,
    Drift,
    Stuck,
}

impl Fault {
    /// The label: `"spike"`, `"drift"` or `"stuck"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Spike => "spike",
            Fault::Drift => "drift",
            Fault::Stuck => "stuck",
        }
    }
}

/// One reading, before it is stamped and serialised.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// 0-based index of the sensor; its id is [`sensor_id`] of it.
    pub sensor: u64,
    /// °C, rounded to 0.1.
    pub temperature: f64,
    /// kPa, rounded to 0.1.
    pub pressure: f64,
    /// The injected fault this reading is, if any.
    pub fault: Option<Fault>,
}

/// `sensor-001` for index 0: 1-based, at least three digits.
pub fn sensor_id(index: u64) -> String {
    format!("sensor-{:03}", index + 1)
}

/// The field a fault hits.
#[derive(Clone, Copy)]
enum Field {
    Temperature,
    Pressure,
}

/// The fault episode a block holds: its kind, where in the block it starts, the field it hits,
/// and a magnitude above the threshold (spike, stuck).
struct Episode {
    kind: Fault,
    start: u64,
    field: Field,
    above: f64,
}

/// SplitMix64's finaliser: neighbouring inputs get unrelated outputs.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An RNG of its own for each (seed, purpose, indices). Xoshiro256++ by name (not `StdRng` or
/// `SmallRng`, whose algorithms may change between releases of rand): a stream stays the same
/// across builds, and seeding one per reading is cheap.
fn stream(seed: u64, parts: &[u64]) -> Xoshiro256PlusPlus {
    let h = parts.iter().fold(mix(seed), |h, &p| mix(h ^ p));
    Xoshiro256PlusPlus::seed_from_u64(h)
}

const TAG_BASELINE: u64 = 1;
const TAG_BLOCK: u64 = 2;
const TAG_NOISE: u64 = 3;

/// The baseline (temperature, pressure) of sensor `index`.
fn baseline(seed: u64, index: u64) -> (f64, f64) {
    let mut rng = stream(seed, &[TAG_BASELINE, index]);
    (
        rng.random_range(20.0..=30.0),
        rng.random_range(100.0..=110.0),
    )
}

/// The episode block `block` of sensor `index` holds, if any.
fn episode(seed: u64, index: u64, block: u64, fault_share: f64) -> Option<Episode> {
    let mut rng = stream(seed, &[TAG_BLOCK, index, block]);
    let p = (fault_share * BLOCK as f64 / EPISODE_FAULTS).clamp(0.0, 1.0);
    if !rng.random_bool(p) {
        return None;
    }
    let (kind, len) = match rng.random_range(0..3u8) {
        0 => (Fault::Spike, 1),
        1 => (Fault::Drift, RAMP + DRIFT_OVER),
        _ => (Fault::Stuck, STUCK),
    };
    let start = rng.random_range(0..=BLOCK - len);
    let field = if rng.random_bool(0.5) {
        Field::Temperature
    } else {
        Field::Pressure
    };
    let above = match kind {
        Fault::Spike => rng.random_range(5.0..=20.0),
        Fault::Stuck => rng.random_range(5.0..=25.0),
        Fault::Drift => MARGIN,
    };
    Some(Episode {
        kind,
        start,
        field,
        above,
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Reading `n` of the stream of `seed` over `sensors` sensors (>= 1) with `fault_share` (in
/// [0, [`MAX_FAULT_SHARE`]]; larger values act as the maximum) of faulty readings.
pub fn reading(seed: u64, sensors: u64, fault_share: f64, n: u64) -> Reading {
    let sensors = sensors.max(1);
    let index = n % sensors;
    let k = n / sensors;
    let (base_t, base_p) = baseline(seed, index);
    let noise = Normal::new(0.0, NOISE_SD).expect("a positive, finite standard deviation");
    let mut rng = stream(seed, &[TAG_NOISE, n]);
    let mut t = base_t + noise.sample(&mut rng);
    let mut p = base_p + noise.sample(&mut rng);
    let mut fault = None;
    let at = k % BLOCK;
    if let Some(e) = episode(seed, index, k / BLOCK, fault_share)
        && at >= e.start
    {
        let i = at - e.start;
        if e.kind == Fault::Stuck && i < STUCK {
            // The same reading every time: no noise on either field.
            t = base_t;
            p = base_p;
        }
        let jitter = noise.sample(&mut rng);
        let (limit, base, value) = match e.field {
            Field::Temperature => (TEMPERATURE_LIMIT, base_t, &mut t),
            Field::Pressure => (PRESSURE_LIMIT, base_p, &mut p),
        };
        match e.kind {
            Fault::Spike if i == 0 => {
                *value = limit + e.above + jitter;
                fault = Some(Fault::Spike);
            }
            Fault::Drift if i < RAMP => {
                // Creeping up: normal readings on a rising baseline, the last MARGIN below.
                let share = (i + 1) as f64 / RAMP as f64;
                *value = base + (limit - MARGIN - base) * share + jitter;
            }
            Fault::Drift if i < RAMP + DRIFT_OVER => {
                *value = limit + MARGIN + (i - RAMP) as f64 + jitter;
                fault = Some(Fault::Drift);
            }
            Fault::Stuck if i < STUCK => {
                *value = limit + e.above;
                fault = Some(Fault::Stuck);
            }
            _ => {}
        }
    }
    Reading {
        sensor: index,
        temperature: round1(t),
        pressure: round1(p),
        fault,
    }
}

/// Reading `n` as a record and its key (`sensor_id`): `now` stamps it (RFC 3339, milliseconds,
/// `+00:00`); `label` adds `"fault"`. Also returns the fault, for the generator's counters.
pub fn record(
    seed: u64,
    sensors: u64,
    fault_share: f64,
    n: u64,
    now: SystemTime,
    label: bool,
) -> (String, serde_json::Value, Option<Fault>) {
    let r = reading(seed, sensors, fault_share, n);
    let id = sensor_id(r.sensor);
    let mut value = json!({
        "sensor_id": id,
        "temperature": r.temperature,
        "pressure": r.pressure,
        "timestamp": timestamp(now),
    });
    if label {
        value["fault"] = r.fault.map(Fault::as_str).into();
    }
    (id, value, r.fault)
}

/// RFC 3339 with milliseconds and an explicit offset: `2026-11-30T10:00:00.123+00:00`.
fn timestamp(now: SystemTime) -> String {
    let ms = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    };
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    /// The original project's rule, strict.
    fn fires(r: &Reading) -> bool {
        r.temperature > TEMPERATURE_LIMIT || r.pressure > PRESSURE_LIMIT
    }

    #[test]
    fn records_have_the_shape_keys_and_timestamp() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_032_800_123);
        let (key, v, _) = record(42, 10, 0.01, 6, t, false);
        assert_eq!(key, "sensor-007");
        assert_eq!(v["sensor_id"], "sensor-007");
        assert_eq!(v["timestamp"], "2026-11-30T10:00:00.123+00:00");
        let obj = v.as_object().unwrap();
        let mut names: Vec<&str> = obj.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["pressure", "sensor_id", "temperature", "timestamp"]);
        let temp = v["temperature"].as_f64().unwrap();
        let pres = v["pressure"].as_f64().unwrap();
        assert!((15.0..35.0).contains(&temp), "{temp}");
        assert!((95.0..115.0).contains(&pres), "{pres}");
        assert_eq!(round1(temp), temp, "one decimal");
        let parsed = chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap());
        assert_eq!(parsed.unwrap().timestamp_millis(), 1_796_032_800_123);
        // Round robin over the sensors, numbered from 1.
        let keys: Vec<String> = (0..12).map(|n| record(1, 10, 0.0, n, t, false).0).collect();
        assert_eq!(keys[0], "sensor-001");
        assert_eq!(keys[9], "sensor-010");
        assert_eq!(keys[10], "sensor-001");
        assert_eq!(sensor_id(1233), "sensor-1234");
        let (_, labelled, fault) = record(42, 10, 0.01, 6, t, true);
        assert_eq!(labelled["fault"], serde_json::Value::Null);
        assert_eq!(fault, None);
        let mut without = labelled.clone();
        without.as_object_mut().unwrap().remove("fault");
        assert_eq!(without, v, "the label changes nothing else");
    }

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let a: Vec<Reading> = (0..5000).map(|n| reading(7, 10, 0.05, n)).collect();
        let b: Vec<Reading> = (0..5000).map(|n| reading(7, 10, 0.05, n)).collect();
        assert_eq!(a, b);
        // Reading 3000 alone (a restarted generator) is the same as in the whole stream.
        assert_eq!(reading(7, 10, 0.05, 3000), a[3000]);
        let c: Vec<Reading> = (0..5000).map(|n| reading(8, 10, 0.05, n)).collect();
        assert_ne!(a, c);
        let differ = a.iter().zip(&c).filter(|(x, y)| x != y).count();
        assert!(differ > 4500, "another seed, another stream: {differ}");
    }

    #[test]
    fn baselines_differ_by_sensor_and_stay_in_range() {
        let mut means = Vec::new();
        for s in 0..10 {
            let (t, p) = baseline(3, s);
            assert!((20.0..=30.0).contains(&t) && (100.0..=110.0).contains(&p));
            means.push(t);
        }
        means.sort_by(f64::total_cmp);
        means.dedup();
        assert_eq!(means.len(), 10);
        // A sensor's normal readings stay around its baseline: noise sd 0.5.
        let (t, p) = baseline(3, 4);
        for k in 0..200 {
            let r = reading(3, 10, 0.0, 4 + 10 * k);
            assert_eq!(r.sensor, 4);
            assert!((r.temperature - t).abs() < 3.0 && (r.pressure - p).abs() < 3.0);
        }
    }

    /// Share of readings `0..n` that fire the rule, and whether exactly the labelled ones do.
    fn fired_share(seed: u64, share: f64, n: u64) -> (f64, BTreeMap<&'static str, u64>) {
        let mut fired = 0u64;
        let mut kinds = BTreeMap::new();
        for i in 0..n {
            let r = reading(seed, 10, share, i);
            assert_eq!(fires(&r), r.fault.is_some(), "reading {i}: {r:?}");
            fired += u64::from(fires(&r));
            if let Some(f) = r.fault {
                *kinds.entry(f.as_str()).or_default() += 1;
            }
        }
        (fired as f64 / n as f64, kinds)
    }

    #[test]
    fn without_faults_nothing_fires() {
        let (share, kinds) = fired_share(11, 0.0, 100_000);
        assert_eq!(share, 0.0);
        assert!(kinds.is_empty());
    }

    #[test]
    fn the_rule_fires_on_the_configured_share_of_readings() {
        // 96,000 readings of 10 sensors are 3000 blocks; each holds an episode with probability
        // 0.3 of 1, 5 or 10 faulty readings, so the count of faulty readings has a standard
        // deviation of sqrt(3000 * (0.3 * 42 - 1.6^2)) = 174 readings = 0.0018 of the share.
        // +-0.006 is 3.3 sd.
        for seed in [1, 2, 3] {
            let (share, kinds) = fired_share(seed, 0.05, 96_000);
            assert!((share - 0.05).abs() < 0.006, "seed {seed}: {share}");
            for kind in ["spike", "drift", "stuck"] {
                assert!(kinds.get(kind).copied().unwrap_or(0) > 50, "{kinds:?}");
            }
        }
        let (share, _) = fired_share(4, 0.01, 96_000);
        // sd: sqrt(3000 * (0.06 * 42 - 0.32^2)) = 85 readings = 0.0009.
        assert!((share - 0.01).abs() < 0.003, "{share}");
        let (share, _) = fired_share(5, MAX_FAULT_SHARE, 9_600);
        assert!((share - MAX_FAULT_SHARE).abs() < 0.01, "{share}");
    }

    /// Readings `rs[i..]` of `kind` up to the end of `rs[i]`'s block: one episode.
    fn run(rs: &[Reading], i: usize, kind: Fault) -> &[Reading] {
        let block_end = (i / BLOCK as usize + 1) * BLOCK as usize;
        let end = (i..block_end.min(rs.len()))
            .find(|&j| rs[j].fault != Some(kind))
            .unwrap_or(block_end.min(rs.len()));
        &rs[i..end]
    }

    #[test]
    fn each_fault_looks_like_its_kind() {
        let (mut spikes, mut drifts, mut stucks) = (0, 0, 0);
        for s in 0..4u64 {
            // Sensor s's readings: stream positions s, s + 4, ...
            let rs: Vec<Reading> = (0..5000).map(|k| reading(9, 4, 0.1, s + 4 * k)).collect();
            let mut i = 0;
            while i < rs.len() {
                let Some(kind) = rs[i].fault else {
                    i += 1;
                    continue;
                };
                let got = run(&rs, i, kind);
                let complete = i + got.len() < rs.len();
                // The field the fault hit: the one above its threshold.
                let hot = rs[i].temperature > TEMPERATURE_LIMIT;
                let field = |r: &Reading| if hot { r.temperature } else { r.pressure };
                match kind {
                    Fault::Spike => {
                        assert_eq!(got.len(), 1);
                        spikes += 1;
                    }
                    Fault::Drift => {
                        if complete {
                            assert_eq!(got.len() as u64, DRIFT_OVER);
                        }
                        assert!(got.windows(2).all(|w| field(&w[1]) > field(&w[0]) - 2.0));
                        // Its ramp, in the same block: creeping up, not yet faulty.
                        assert!(i % BLOCK as usize >= RAMP as usize);
                        let before = &rs[i - RAMP as usize..i];
                        assert!(before.iter().all(|r| r.fault.is_none()), "{before:?}");
                        assert!(field(&before[RAMP as usize - 1]) > field(&before[0]) + 3.0);
                        drifts += 1;
                    }
                    Fault::Stuck => {
                        if complete {
                            assert_eq!(got.len() as u64, STUCK);
                        }
                        assert!(
                            got.iter().all(|r| r.temperature == rs[i].temperature
                                && r.pressure == rs[i].pressure)
                        );
                        stucks += 1;
                    }
                }
                i += got.len();
            }
        }
        assert!(
            spikes > 20 && drifts > 20 && stucks > 20,
            "{spikes} {drifts} {stucks}"
        );
    }
}
