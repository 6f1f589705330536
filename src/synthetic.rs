//! Synthetic two-dimensional data: two tight blobs of normal points and uniform outliers.
//!
//! `anomalyd train --synthetic` trains on [`training_set`], and the demo generator draws from
//! [`blob_point`] and [`outlier_point`], so a demo model and a demo stream agree on what normal
//! looks like. Values are rounded to 3 decimals, as the original project's were.

use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use rand_distr::{Distribution, Normal};

/// The seed of the original project's training set.
pub const DEFAULT_SEED: u64 = 42;
/// Rows in [`training_set`], half per blob.
pub const TRAINING_ROWS: usize = 1000;
/// Per-axis standard deviation of each blob.
const BLOB_SD: f64 = 0.3;
/// The blobs sit at (+2, +2) and (-2, -2).
const BLOB_CENTRE: f64 = 2.0;
/// Outliers are uniform over this square.
const OUTLIER_HALF_WIDTH: f64 = 4.0;

/// A normal point: around (+2, +2) or (-2, -2), equally likely.
pub fn blob_point<R: Rng>(rng: &mut R) -> [f64; 2] {
    let centre = if rng.random_bool(0.5) {
        BLOB_CENTRE
    } else {
        -BLOB_CENTRE
    };
    around(rng, centre)
}

/// An outlier: uniform in [-4, 4]².
pub fn outlier_point<R: Rng>(rng: &mut R) -> [f64; 2] {
    let range = -OUTLIER_HALF_WIDTH..=OUTLIER_HALF_WIDTH;
    [
        round3(rng.random_range(range.clone())),
        round3(rng.random_range(range)),
    ]
}

/// The training set: 500 rows around (+2, +2) followed by 500 around (-2, -2).
pub fn training_set(seed: u64) -> Vec<[f64; 2]> {
    let mut rng = StdRng::seed_from_u64(seed);
    let half = TRAINING_ROWS / 2;
    let mut rows = Vec::with_capacity(TRAINING_ROWS);
    rows.extend((0..half).map(|_| around(&mut rng, BLOB_CENTRE)));
    rows.extend((0..half).map(|_| around(&mut rng, -BLOB_CENTRE)));
    rows
}

fn around<R: Rng>(rng: &mut R, centre: f64) -> [f64; 2] {
    let noise = Normal::new(0.0, BLOB_SD).expect("a positive, finite standard deviation");
    [
        round3(centre + noise.sample(rng)),
        round3(centre + noise.sample(rng)),
    ]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_sd(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
        let n = values.clone().count() as f64;
        let mean = values.clone().sum::<f64>() / n;
        let var = values.map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    fn is_rounded(x: f64) -> bool {
        ((x * 1000.0).round() - x * 1000.0).abs() < 1e-6
    }

    #[test]
    fn training_set_is_two_blobs_of_500_and_reproducible() {
        let rows = training_set(DEFAULT_SEED);
        assert_eq!(rows.len(), 1000);
        assert_eq!(rows, training_set(DEFAULT_SEED));
        assert_ne!(rows, training_set(7));
        for (blob, centre) in [(&rows[..500], 2.0), (&rows[500..], -2.0)] {
            for axis in 0..2 {
                let (mean, sd) = mean_sd(blob.iter().map(|r| r[axis]));
                assert!((mean - centre).abs() < 0.05, "mean {mean}");
                assert!((sd - 0.3).abs() < 0.03, "sd {sd}");
            }
        }
        assert!(rows.iter().flatten().all(|&x| is_rounded(x)));
    }

    #[test]
    fn blob_points_split_evenly_and_outliers_fill_the_square() {
        let mut rng = StdRng::seed_from_u64(1);
        let blobs: Vec<_> = (0..4000).map(|_| blob_point(&mut rng)).collect();
        let upper = blobs.iter().filter(|p| p[0] > 0.0).count();
        assert!((1800..2200).contains(&upper), "upper {upper}");
        assert!(blobs.iter().all(|p| (p[0] > 0.0) == (p[1] > 0.0)));
        let outliers: Vec<_> = (0..4000).map(|_| outlier_point(&mut rng)).collect();
        assert!(
            outliers
                .iter()
                .flatten()
                .all(|x| (-4.0..=4.0).contains(x) && is_rounded(*x))
        );
        let (mean, sd) = mean_sd(outliers.iter().map(|p| p[0]));
        // Uniform on [-4, 4]: mean 0, sd 8 / sqrt(12) = 2.31.
        assert!(mean.abs() < 0.15 && (sd - 2.31).abs() < 0.1, "{mean} {sd}");
    }
}
