//! A/B split between detectors: a detector with `split = { variant, from, to }` scores only
//! the records whose key hashes into `[from, to)` of `[0, 1)`; the others it skips (not
//! scored, not dead-lettered, counted, their offsets committed all the same).
//!
//! # The hash
//!
//! A record's place in `[0, 1)` is [`key_position`]: xxHash64 (XXH64, seed 0, as specified in
//! `doc/xxhash_spec.md` of github.com/Cyan4973/xxHash) of the Kafka record key's bytes, its
//! top 53 bits divided by 2^53. It is the same on every machine, every run and every version:
//! the algorithm is fixed by its specification, the seed by [`SPLIT_SEED`], and the unit
//! tests pin the positions of a few keys. A record without a key (a null key, not an empty
//! one) is at 0.0, so keyless records all go to the variant whose range holds 0.0.
//!
//! Not FNV-1a: its top bits are barely mixed by the last bytes (keys `536365`..`581587` put
//! 44 % below 0.5, and 100,000 random keys 32.7 % below 0.3). Not murmur2: Kafka's default
//! partitioner uses it, so a split by it could line up with the partitions.

use serde::{Deserialize, Serialize};
use twox_hash::XxHash64;

/// The xxHash64 seed of [`key_position`]. Changing it re-deals every key between variants.
pub const SPLIT_SEED: u64 = 0;

/// Longest variant name: it is written into every output.
pub const MAX_VARIANT: usize = 32;

/// `[detectors.NAME] split = { variant = "A", from = 0.0, to = 0.5 }`: this detector scores
/// only the records whose [`key_position`] is in `[from, to)`, and names `variant` in every
/// output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// The variant's name, 1 to 32 characters of `[A-Za-z0-9_-]`: `"variant"` in the
    /// `anomalyd` member of every output.
    pub variant: String,
    /// Start of the key range, inclusive, in `[0, 1)`.
    pub from: f64,
    /// End of the key range, exclusive, in `(from, 1]`.
    pub to: f64,
}

impl SplitConfig {
    /// Whether a record with `key` (`None`: no key) is this variant's.
    pub fn takes(&self, key: Option<&[u8]>) -> bool {
        self.contains(key_position(key))
    }

    /// Whether `position` is in `[from, to)`.
    pub fn contains(&self, position: f64) -> bool {
        self.from <= position && position < self.to
    }

    /// Whether the two ranges share a position.
    pub fn overlaps(&self, other: &SplitConfig) -> bool {
        self.from < other.to && other.from < self.to
    }

    /// The problems of this split on its own, each with the key under `split` it concerns
    /// (`variant`, `from`, `to`) and what is wrong.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(why) = variant_problem(&self.variant) {
            out.push(("variant", why));
        }
        // Written so that NaN fails every check.
        let from_ok = self.from >= 0.0 && self.from < 1.0;
        let to_ok = self.to > 0.0 && self.to <= 1.0;
        if !from_ok {
            out.push((
                "from",
                format!(
                    "is {}; it must be in [0, 1) (0 <= from < to <= 1)",
                    self.from
                ),
            ));
        }
        if !to_ok {
            out.push((
                "to",
                format!("is {}; it must be in (0, 1] (0 <= from < to <= 1)", self.to),
            ));
        } else if from_ok && self.to <= self.from {
            out.push((
                "to",
                format!(
                    "is {}, not above from ({}): the range [from, to) would be empty",
                    self.to, self.from
                ),
            ));
        }
        out
    }

    /// `[from, to)` in words, e.g. `[0, 0.5)`.
    pub fn range_text(&self) -> String {
        format!("[{}, {})", self.from, self.to)
    }
}

/// Why `name` cannot name a variant: 1 to [`MAX_VARIANT`] characters of `[A-Za-z0-9_-]`.
pub fn variant_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty (a name such as \"A\" or \"kmeans\")".into());
    }
    if name.chars().count() > MAX_VARIANT {
        return Some(format!("{name:?} is longer than {MAX_VARIANT} characters"));
    }
    name.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
        .map(|c| format!("{name:?} has {c:?}; a variant name uses only A-Z, a-z, 0-9, '_' and '-'"))
}

/// Where a record with `key` falls in `[0, 1)`: the top 53 bits of xxHash64 (seed
/// [`SPLIT_SEED`]) of the key's bytes over 2^53, so every value is exact in an `f64` and below
/// 1. A record without a key is at 0.0.
pub fn key_position(key: Option<&[u8]>) -> f64 {
    match key {
        None => 0.0,
        Some(bytes) => {
            let top = XxHash64::oneshot(SPLIT_SEED, bytes) >> 11;
            top as f64 / (1u64 << 53) as f64
        }
    }
}

/// The parts of `[0, 1)` that none of `splits` holds, in order: where the records that no
/// variant scores fall (empty when the splits cover the whole key space).
pub fn uncovered<'a>(splits: impl IntoIterator<Item = &'a SplitConfig>) -> Vec<(f64, f64)> {
    let mut ranges: Vec<(f64, f64)> = splits.into_iter().map(|s| (s.from, s.to)).collect();
    ranges.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut gaps = Vec::new();
    let mut reached = 0.0_f64;
    for (from, to) in ranges {
        if from > reached {
            gaps.push((reached, from));
        }
        reached = reached.max(to);
    }
    if reached < 1.0 {
        gaps.push((reached, 1.0));
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(variant: &str, from: f64, to: f64) -> SplitConfig {
        SplitConfig {
            variant: variant.into(),
            from,
            to,
        }
    }

    /// The xxHash64 values are the specification's own (libxxhash's `XXH64(key, len, 0)`
    /// gives the same); the positions follow from them. Should any change, every key would
    /// move between variants: this test is what keeps that from happening silently.
    #[test]
    fn key_positions_never_change() {
        for (key, hash, position) in [
            (&b""[..], 0xef46db3751d8e999_u64, 0.9346749315317059),
            (b"a", 0xd24ec4f1a98c6e5b, 0.8215144243236395),
            (b"abc", 0x44bc2cf5ad770999, 0.2684963321493933),
            (b"536365", 0xa9cab1bae7008161, 0.663249118929345),
            (b"C536379", 0x56c47d28afabd9d3, 0.33893568270984475),
        ] {
            assert_eq!(XxHash64::oneshot(SPLIT_SEED, key), hash, "{key:?}");
            assert_eq!(key_position(Some(key)), position, "{key:?}");
        }
        assert_eq!(key_position(None), 0.0);
    }

    #[test]
    fn positions_are_in_the_unit_interval() {
        // The largest hash maps to the largest f64 below 1, never to 1.
        assert!(((u64::MAX >> 11) as f64 / (1u64 << 53) as f64) < 1.0);
        for i in 0..10_000u32 {
            let p = key_position(Some(&i.to_le_bytes()));
            assert!((0.0..1.0).contains(&p), "{i}: {p}");
        }
    }

    /// 100,000 random keys: the share in [0, 0.3) is 0.3 within 0.01 (the standard deviation
    /// is about 0.0015, so the bound is about 7 of them).
    #[test]
    fn a_share_of_random_keys_lands_in_its_range() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let a = split("A", 0.0, 0.3);
        let mut key = Vec::new();
        let n = 100_000;
        let hits = (0..n)
            .filter(|_| {
                let len = rng.random_range(1..=16);
                key.clear();
                key.extend((0..len).map(|_| rng.random::<u8>()));
                a.takes(Some(&key))
            })
            .count();
        let share = hits as f64 / n as f64;
        assert!((share - 0.3).abs() <= 0.01, "{share}");
    }

    /// The purchase stream's keys are consecutive invoice numbers: they too split evenly.
    #[test]
    fn consecutive_invoice_numbers_split_evenly() {
        let a = split("A", 0.0, 0.5);
        let keys: Vec<String> = (536_365..581_588).map(|n: u32| n.to_string()).collect();
        let hits = keys.iter().filter(|k| a.takes(Some(k.as_bytes()))).count();
        let share = hits as f64 / keys.len() as f64;
        assert!((share - 0.5).abs() <= 0.01, "{share}");
    }

    #[test]
    fn ranges_are_half_open() {
        let a = split("A", 0.0, 0.5);
        let b = split("B", 0.5, 1.0);
        assert!(a.contains(0.0) && !a.contains(0.5) && b.contains(0.5));
        assert!(!a.overlaps(&b) && !b.overlaps(&a));
        assert!(a.overlaps(&split("C", 0.4, 0.6)));
        assert!(
            a.takes(None) && !b.takes(None),
            "keyless records are at 0.0"
        );
    }

    #[test]
    fn bad_splits_name_their_key() {
        let keys = |s: SplitConfig| -> Vec<&'static str> {
            s.problems().into_iter().map(|(k, _)| k).collect()
        };
        assert!(keys(split("A", 0.0, 1.0)).is_empty());
        assert!(keys(split("ctl_2-x", 0.25, 0.5)).is_empty());
        assert_eq!(keys(split("A", -0.1, 0.5)), ["from"]);
        assert_eq!(keys(split("A", 1.0, 1.0)), ["from"]);
        assert_eq!(keys(split("A", 0.0, 1.5)), ["to"]);
        assert_eq!(keys(split("A", 0.5, 0.5)), ["to"]);
        assert_eq!(keys(split("A", 0.6, 0.5)), ["to"]);
        assert_eq!(keys(split("A", f64::NAN, f64::NAN)), ["from", "to"]);
        assert_eq!(keys(split("", 0.0, 0.5)), ["variant"]);
        assert_eq!(keys(split("a b", 0.0, 0.5)), ["variant"]);
        assert_eq!(keys(split("é", 0.0, 0.5)), ["variant"]);
        assert_eq!(keys(split(&"v".repeat(33), 0.0, 0.5)), ["variant"]);
        assert!(keys(split(&"v".repeat(32), 0.0, 0.5)).is_empty());
        let why = &split("A", 0.5, 0.5).problems()[0].1;
        assert!(why.contains("empty"), "{why}");
    }

    #[test]
    fn uncovered_parts_are_found() {
        let (a, b) = (split("A", 0.0, 0.5), split("B", 0.5, 1.0));
        assert_eq!(uncovered([&a, &b]), []);
        assert_eq!(uncovered([&b]), [(0.0, 0.5)]);
        let c = split("C", 0.6, 0.9);
        assert_eq!(uncovered([&c, &a]), [(0.5, 0.6), (0.9, 1.0)]);
        assert_eq!(uncovered([]), [(0.0, 1.0)]);
    }
}
