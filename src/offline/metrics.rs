//! Ranking metrics for labelled evaluation: ROC AUC (via smartcore) and average precision,
//! plus precision and recall at the model's threshold.
//!
//! Scores passed here are "higher = more anomalous", i.e. the negated `score_samples`.

/// ROC AUC, or `None` unless both classes are present (it is undefined otherwise).
///
/// smartcore's `roc_auc_score` is the rank-sum (Mann–Whitney) form with tied scores given
/// their average rank, which is what scikit-learn computes; the tests below check it on
/// hand-computed examples with ties.
pub fn roc_auc(labels: &[bool], scores: &[f64]) -> Option<f64> {
    assert_eq!(labels.len(), scores.len(), "one score per label");
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 || positives == labels.len() {
        return None;
    }
    let y_true: Vec<f64> = labels.iter().map(|&l| f64::from(u8::from(l))).collect();
    let y_score: Vec<f64> = scores.to_vec();
    Some(smartcore::metrics::roc_auc_score(&y_true, &y_score))
}

/// Average precision as scikit-learn defines it: `sum over thresholds of (R_n - R_{n-1}) P_n`,
/// with one threshold per distinct score (ties enter together) and no interpolation. `None`
/// when there are no positives.
pub fn average_precision(labels: &[bool], scores: &[f64]) -> Option<f64> {
    assert_eq!(labels.len(), scores.len(), "one score per label");
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp, mut ap, mut last_recall) = (0usize, 0usize, 0.0, 0.0);
    for group in order.chunk_by(|&a, &b| scores[a] == scores[b]) {
        let hits = group.iter().filter(|&&i| labels[i]).count();
        tp += hits;
        fp += group.len() - hits;
        let recall = tp as f64 / positives as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - last_recall) * precision;
        last_recall = recall;
    }
    Some(ap)
}

/// Counts of flagged (predicted anomalous) against labelled records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confusion {
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
    pub true_negatives: usize,
}

impl Confusion {
    pub fn count(labels: &[bool], flagged: &[bool]) -> Self {
        assert_eq!(labels.len(), flagged.len(), "one flag per label");
        let mut c = Self::default();
        for (&label, &flag) in labels.iter().zip(flagged) {
            match (label, flag) {
                (true, true) => c.true_positives += 1,
                (false, true) => c.false_positives += 1,
                (true, false) => c.false_negatives += 1,
                (false, false) => c.true_negatives += 1,
            }
        }
        c
    }

    /// Share of flagged records that are anomalies; `None` when nothing was flagged.
    pub fn precision(&self) -> Option<f64> {
        let flagged = self.true_positives + self.false_positives;
        (flagged > 0).then(|| self.true_positives as f64 / flagged as f64)
    }

    /// Share of anomalies that were flagged; `None` when there are none.
    pub fn recall(&self) -> Option<f64> {
        let anomalies = self.true_positives + self.false_negatives;
        (anomalies > 0).then(|| self.true_positives as f64 / anomalies as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// The definition: share of (positive, negative) pairs ranked right, ties counting half.
    fn auc_by_pairs(labels: &[bool], scores: &[f64]) -> f64 {
        let (mut wins, mut pairs) = (0.0, 0.0);
        for (i, &li) in labels.iter().enumerate() {
            for (j, &lj) in labels.iter().enumerate() {
                if li && !lj {
                    pairs += 1.0;
                    if scores[i] > scores[j] {
                        wins += 1.0;
                    } else if scores[i] == scores[j] {
                        wins += 0.5;
                    }
                }
            }
        }
        wins / pairs
    }

    #[test]
    fn roc_auc_hand_computed_with_and_without_ties() {
        // scikit-learn: roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
        let auc = roc_auc(&[false, false, true, true], &[0.1, 0.4, 0.35, 0.8]).unwrap();
        assert!(close(auc, 0.75), "{auc}");
        // Pairs (pos, neg): (.5,.5) half, (.5,.2), (.9,.5), (.9,.2) won: 3.5 / 4.
        let auc = roc_auc(&[false, true, false, true], &[0.5, 0.5, 0.2, 0.9]).unwrap();
        assert!(close(auc, 0.875), "{auc}");
        // Everything tied: no information.
        let auc = roc_auc(&[true, false, false, true, false], &[1.0; 5]).unwrap();
        assert!(close(auc, 0.5), "{auc}");
        assert_eq!(roc_auc(&[true, true], &[0.1, 0.2]), None);
        assert_eq!(roc_auc(&[false, false], &[0.1, 0.2]), None);
    }

    #[test]
    fn roc_auc_matches_pair_counting_on_heavily_tied_data() {
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..20 {
            let n = rng.random_range(5..200);
            let labels: Vec<bool> = (0..n).map(|i| i % 7 == 0 || rng.random_bool(0.1)).collect();
            let scores: Vec<f64> = (0..n)
                .map(|_| f64::from(rng.random_range(0..6u8)))
                .collect();
            let expected = auc_by_pairs(&labels, &scores);
            let got = roc_auc(&labels, &scores).unwrap();
            assert!((got - expected).abs() < 1e-9, "{got} vs {expected}");
        }
    }

    #[test]
    fn average_precision_hand_computed() {
        // scikit-learn: average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) ~ 0.8333
        let ap = average_precision(&[false, false, true, true], &[0.1, 0.4, 0.35, 0.8]).unwrap();
        assert!(close(ap, 5.0 / 6.0), "{ap}");
        // Ties enter together: [1, 0] tied at the top gives P = 0.5 at R = 1.
        let ap = average_precision(&[true, false], &[0.7, 0.7]).unwrap();
        assert!(close(ap, 0.5), "{ap}");
        // Perfect ranking.
        let ap = average_precision(&[false, true, true], &[0.0, 2.0, 1.0]).unwrap();
        assert!(close(ap, 1.0), "{ap}");
        assert_eq!(average_precision(&[false], &[0.3]), None);
    }

    #[test]
    fn confusion_precision_recall() {
        let c = Confusion::count(
            &[true, true, false, false, true],
            &[true, false, true, false, true],
        );
        assert_eq!(
            c,
            Confusion {
                true_positives: 2,
                false_positives: 1,
                false_negatives: 1,
                true_negatives: 1
            }
        );
        assert!(close(c.precision().unwrap(), 2.0 / 3.0));
        assert!(close(c.recall().unwrap(), 2.0 / 3.0));
        let none = Confusion::count(&[false], &[false]);
        assert_eq!((none.precision(), none.recall()), (None, None));
    }
}
