//! Percentiles with linear interpolation between closest ranks (numpy's default), so that the
//! contamination offset and the per-feature training ranges match what scikit-learn users see.

/// The `q`-th percentile (`0..=100`) of `values`, reordering them in place.
///
/// Uses selection rather than a full sort, so it is linear in `values.len()`. Returns NaN for an
/// empty slice. `values` must not contain NaN (the forest refuses NaN before this is reached).
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let q = q.clamp(0.0, 100.0);
    let position = q / 100.0 * (values.len() - 1) as f64;
    let below = position.floor() as usize;
    let fraction = position - below as f64;
    let (_, low, above) = values.select_nth_unstable_by(below, f64::total_cmp);
    let low = *low;
    if fraction == 0.0 || above.is_empty() {
        return low;
    }
    // The next rank up is the smallest value in the upper part of the selection.
    let high = above.iter().copied().fold(f64::INFINITY, f64::min);
    between(low, high, fraction)
}

/// `low + (high - low) * fraction`; when `high - low` overflows (`-1e308` and `1e308`), the
/// same point as `low * (1 - fraction) + high * fraction`, whose terms cannot overflow.
fn between(low: f64, high: f64, fraction: f64) -> f64 {
    let span = high - low;
    if span.is_finite() {
        low + span * fraction
    } else {
        (low * (1.0 - fraction) + high * fraction).clamp(low, high)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_numpy_linear_interpolation() {
        // numpy.percentile([1, 2, 3, 4], q) for q = 0, 25, 50, 100: 1.0, 1.75, 2.5, 4.0
        let data = [4.0, 1.0, 3.0, 2.0];
        for (q, expected) in [(0.0, 1.0), (25.0, 1.75), (50.0, 2.5), (100.0, 4.0)] {
            let mut v = data;
            assert!((percentile(&mut v, q) - expected).abs() < 1e-12, "q={q}");
        }
        // numpy.percentile(range(11), 1) == 0.1
        let mut v: Vec<f64> = (0..=10).rev().map(f64::from).collect();
        assert!((percentile(&mut v, 1.0) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn values_near_the_float_limit_do_not_overflow() {
        let mut v = [1e308, -1e308];
        assert_eq!(percentile(&mut v, 50.0), 0.0);
        let mut v = [f64::MAX, -f64::MAX, 0.0];
        let p = percentile(&mut v, 10.0);
        assert!(p.is_finite() && p < 0.0, "{p}");
        let mut v = [f64::MAX, -f64::MAX];
        assert_eq!(percentile(&mut v, 100.0), f64::MAX);
    }

    #[test]
    fn single_value_and_empty() {
        assert_eq!(percentile(&mut [7.0], 99.5), 7.0);
        assert!(percentile(&mut [], 50.0).is_nan());
    }
}
