//! k-means (Lloyd's algorithm, Lloyd 1982, seeded by greedy k-means++, Arthur & Vassilvitskii
//! 2007) and what both cluster model kinds share: feature scaling, the distance, the choice of
//! k by the elbow rule, and the anomaly threshold.
//!
//! # Score
//!
//! A record's score is its squared Euclidean distance to its **assigned** centre (for k-means,
//! the nearest one; ties go to the lower index), in the model's scaled space:
//! `sum_j ((x_j - c_j) / s_j)^2`, with `s_j` the feature's scale (1 without scaling). Higher
//! is more anomalous; a record is an anomaly iff `score > threshold`, and the decision is
//! `threshold - score` (negative means anomalous, as the Isolation Forest's).
//!
//! # Scaling
//!
//! `--scale standard` divides each feature by its training standard deviation (population;
//! a constant feature keeps scale 1), as Spark's `StandardScaler` with its default
//! `withMean = false`. Centring is not needed: the mean cancels in a difference. Centres are
//! stored in the features' own units and the scales beside them, so a file reads in the
//! units the records arrive in, and scoring divides (by multiplying by `1 / s_j`) as it goes.
//! `--scale none` (the default, as the original project's Spark `KMeans`) gives every scale 1.
//!
//! # Training
//!
//! Greedy k-means++ (scikit-learn's default seeding: `2 + ln k` candidates per new centre,
//! drawn with probability proportional to the squared distance to the nearest centre so far,
//! keeping the one that lowers the total most), then Lloyd iterations (assign every row to its
//! nearest centre, move each centre to the mean of its rows) until no assignment changes or
//! [`LLOYD_MAX_ITER`] rounds. A centre that loses every row stays where it was (as Spark
//! does). Every random draw comes from one `StdRng` seeded with `--seed`, and every sum runs
//! in row order, so the same data and seed give the same model bit for bit; assignments run on
//! rayon's pool, which does not change them (each row's nearest centre is its own).
//!
//! `--k auto` trains k = 1..`k_max` and applies the elbow rule ([`elbow`]): with
//! `r(k) = cost(k) / cost(k-1)`, K is the first k whose ratio exceeds `elbow_ratio` (adding
//! the K-th centre no longer pays), and K-1 is kept.
//!
//! # Why not smartcore
//!
//! smartcore 0.7 (the crate the project uses for ROC AUC) has a `KMeans`, but it refuses
//! k = 1 (which the elbow needs: r(2) = cost(2) / cost(1)), keeps its centroids and sizes
//! private (we would re-derive them from predicted labels, one more pass), knows only plain
//! Euclidean distance (no per-feature scale without copying the data), stops at the first
//! round whose distortion does not fall, and has no bisecting variant. Bisecting k-means needs
//! a seeded 2-means from given starting centres anyway ([`crate::detect::bisecting`]), so the
//! ~100 lines of Lloyd here serve both kinds, with one distance and one tie rule.

use std::fmt;
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::quantile::percentile;

/// Lloyd rounds at most, per k.
pub const LLOYD_MAX_ITER: usize = 100;
/// `--k-max` by default: the sweep of `--k auto` tries k = 1..=20.
pub const DEFAULT_K_MAX: usize = 20;
/// `--elbow-ratio` by default.
pub const DEFAULT_ELBOW_RATIO: f64 = 0.7;
/// `--threshold` by default: the original project's rule, the 2,000th largest training score.
pub const DEFAULT_THRESHOLD: ThresholdRule = ThresholdRule::Top(2000);

/// Errors training a cluster model or parsing its options.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClusterError {
    #[error("the training set has no rows")]
    Empty,
    #[error("the training set has no features")]
    NoFeatures,
    #[error("the training data holds {len} values, not a multiple of {n_features} features")]
    Shape { len: usize, n_features: usize },
    #[error(
        "training row {row}, feature {feature}: {value} is not a finite number (NaN and infinities are refused)"
    )]
    NotFinite {
        row: usize,
        feature: usize,
        value: f64,
    },
    #[error("k = {k} clusters cannot be trained on {rows} rows (k must be 1..=rows)")]
    K { k: usize, rows: usize },
    #[error(
        "threshold top:{n} needs at least {n} training rows, the training set has {rows}; use a smaller N or quantile:Q"
    )]
    TopTooLarge { n: usize, rows: usize },
    #[error("invalid {what} {value:?}: expected {expected}")]
    Parse {
        what: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("inconsistent model: {0}")]
    Inconsistent(String),
}

fn parse_error(what: &'static str, value: &str, expected: &'static str) -> ClusterError {
    ClusterError::Parse {
        what,
        value: value.into(),
        expected,
    }
}

/// How features are scaled before distances are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScaleMethod {
    /// Every scale is 1: distances in the features' own units.
    #[default]
    None,
    /// Each feature divided by its training standard deviation.
    Standard,
}

impl FromStr for ScaleMethod {
    type Err = ClusterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "standard" => Ok(Self::Standard),
            _ => Err(parse_error("scale", s, "`none` or `standard`")),
        }
    }
}

impl fmt::Display for ScaleMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Standard => "standard",
        })
    }
}

/// A fitted scaling: the method and, per feature, the divisor `s_j` (> 0, finite).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaling {
    pub method: ScaleMethod,
    pub scale: Vec<f64>,
}

impl Scaling {
    /// Fits `method` on row-major `data` with `d` features.
    pub fn fit(method: ScaleMethod, data: &[f64], d: usize) -> Self {
        let rows = data.len() / d.max(1);
        let scale = (0..d)
            .map(|j| match method {
                ScaleMethod::None => 1.0,
                ScaleMethod::Standard => {
                    let column = || data.iter().skip(j).step_by(d);
                    let mean = column().sum::<f64>() / rows as f64;
                    let var = column().map(|v| (v - mean) * (v - mean)).sum::<f64>() / rows as f64;
                    let sd = var.sqrt();
                    if sd > 0.0 && sd.is_finite() { sd } else { 1.0 }
                }
            })
            .collect();
        Self { method, scale }
    }

    /// `1 / s_j`, what the distance multiplies by.
    pub fn weights(&self) -> Vec<f64> {
        self.scale.iter().map(|s| 1.0 / s).collect()
    }

    pub(crate) fn check(&self, d: usize) -> Result<(), String> {
        if self.scale.len() != d {
            return Err(format!("{} scales for {d} features", self.scale.len()));
        }
        if self.scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err("a feature scale is not a positive finite number".into());
        }
        if self.method == ScaleMethod::None && self.scale.iter().any(|&s| s != 1.0) {
            return Err("scaling `none` with a scale other than 1".into());
        }
        Ok(())
    }
}

/// Squared Euclidean distance between `x` and `c` after scaling: `sum ((x_j - c_j) * w_j)^2`.
/// Allocates nothing; the three slices have the same length.
#[inline]
pub fn distance(x: &[f64], c: &[f64], w: &[f64]) -> f64 {
    let mut sum = 0.0;
    for ((&a, &b), &w) in x.iter().zip(c).zip(w) {
        let t = (a - b) * w;
        sum += t * t;
    }
    sum
}

/// The nearest of the row-major `centres` to `x` and its distance; ties go to the lower index.
#[inline]
pub fn nearest(x: &[f64], centres: &[f64], w: &[f64]) -> (usize, f64) {
    let d = x.len();
    let mut best = (0, f64::INFINITY);
    for (i, c) in centres.chunks_exact(d).enumerate() {
        let dist = distance(x, c, w);
        if dist < best.1 {
            best = (i, dist);
        }
    }
    best
}

/// How the anomaly threshold is set from the training scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdRule {
    /// `top:N`: the N-th largest training score. Since an anomaly is `score > threshold`,
    /// this flags N-1 training rows when the scores are distinct (the N-th sits on the
    /// threshold), fewer when the N-th ties with larger ones.
    Top(usize),
    /// `quantile:Q`, Q in (0, 1): the Q-quantile of the training scores, linear interpolation
    /// between closest ranks (numpy's default).
    Quantile(f64),
}

impl ThresholdRule {
    /// The threshold for these training scores (reordered in place).
    ///
    /// Errors: [`ClusterError::TopTooLarge`] when `top:N` asks for more rows than there are
    /// (refused rather than clamped: a clamped rule would silently mean something else).
    pub fn apply(&self, scores: &mut [f64]) -> Result<f64, ClusterError> {
        if scores.is_empty() {
            return Err(ClusterError::Empty);
        }
        match *self {
            Self::Top(n) => {
                if n > scores.len() {
                    return Err(ClusterError::TopTooLarge {
                        n,
                        rows: scores.len(),
                    });
                }
                let (_, nth, _) = scores.select_nth_unstable_by(n - 1, |a, b| b.total_cmp(a));
                Ok(*nth)
            }
            Self::Quantile(q) => Ok(percentile(scores, q * 100.0)),
        }
    }
}

impl FromStr for ThresholdRule {
    type Err = ClusterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "`top:N` (N a positive whole number) or `quantile:Q` (0 < Q < 1)";
        let bad = || parse_error("threshold", s, EXPECTED);
        match s.split_once(':') {
            Some(("top", n)) => match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Self::Top(n)),
                _ => Err(bad()),
            },
            Some(("quantile", q)) => match q.parse::<f64>() {
                Ok(q) if q > 0.0 && q < 1.0 => Ok(Self::Quantile(q)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for ThresholdRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Top(n) => write!(f, "top:{n}"),
            Self::Quantile(q) => write!(f, "quantile:{q}"),
        }
    }
}

/// `--k`: a fixed number of clusters or the elbow sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KChoice {
    Fixed(usize),
    Auto,
}

impl FromStr for KChoice {
    type Err = ClusterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(Self::Auto);
        }
        match s.parse::<usize>() {
            Ok(k) if k > 0 => Ok(Self::Fixed(k)),
            _ => Err(parse_error("k", s, "`auto` or a positive whole number")),
        }
    }
}

impl fmt::Display for KChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(k) => write!(f, "{k}"),
            Self::Auto => f.write_str("auto"),
        }
    }
}

/// The cost of one k tried: the sum of the training rows' scores with k clusters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KCost {
    pub k: usize,
    pub cost: f64,
}

/// The elbow rule on `costs` (k = 1, 2, ... in order): the chosen k and a sentence saying why.
///
/// `r(k) = cost(k) / cost(k-1)` (1 when `cost(k-1)` is 0: nothing left to gain); K is the first
/// k with `r(k) > ratio` and K-1 is kept. When no ratio exceeds it, the largest k tried is kept.
pub fn elbow(costs: &[KCost], ratio: f64) -> (usize, String) {
    for pair in costs.windows(2) {
        let (prev, cur) = (pair[0], pair[1]);
        let r = if prev.cost > 0.0 {
            cur.cost / prev.cost
        } else {
            1.0
        };
        if r > ratio {
            return (
                prev.k,
                format!(
                    "elbow: r({k}) = cost({k}) / cost({p}) = {r:.4} > {ratio} is the first ratio above {ratio}, so k = {p} is kept",
                    k = cur.k,
                    p = prev.k
                ),
            );
        }
    }
    let last = costs.last().map_or(1, |c| c.k);
    (
        last,
        format!(
            "elbow: no r(k) exceeds {ratio} for k <= {last}, so the largest k tried, {last}, is kept"
        ),
    )
}

/// Checks the shape and values of row-major training data with `d` features; returns the rows.
pub fn check_data(data: &[f64], d: usize) -> Result<usize, ClusterError> {
    if d == 0 {
        return Err(ClusterError::NoFeatures);
    }
    if data.is_empty() {
        return Err(ClusterError::Empty);
    }
    if !data.len().is_multiple_of(d) {
        return Err(ClusterError::Shape {
            len: data.len(),
            n_features: d,
        });
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(ClusterError::NotFinite {
            row: i / d,
            feature: i % d,
            value: data[i],
        });
    }
    Ok(data.len() / d)
}

/// A trained k-means model: `k` centres in the features' units, their training sizes, the
/// scaling and the threshold. Scoring allocates nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "KMeansParts", into = "KMeansParts")]
pub struct KMeans {
    d: usize,
    centres: Vec<f64>,
    sizes: Vec<u64>,
    scaling: Scaling,
    threshold: f64,
    weights: Vec<f64>,
}

/// What a model file stores of a [`KMeans`]; decoding checks it before it can score.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KMeansParts {
    d: u64,
    centres: Vec<f64>,
    sizes: Vec<u64>,
    scaling: Scaling,
    threshold: f64,
}

impl From<KMeans> for KMeansParts {
    fn from(m: KMeans) -> Self {
        Self {
            d: m.d as u64,
            centres: m.centres,
            sizes: m.sizes,
            scaling: m.scaling,
            threshold: m.threshold,
        }
    }
}

impl TryFrom<KMeansParts> for KMeans {
    type Error = ClusterError;
    fn try_from(p: KMeansParts) -> Result<Self, Self::Error> {
        KMeans::new(p.d as usize, p.centres, p.sizes, p.scaling, p.threshold)
    }
}

impl KMeans {
    /// Builds a model from its parts, checking they fit together: `centres` is row-major
    /// `sizes.len()` x `d`, every value finite, the scaling has `d` positive scales.
    pub fn new(
        d: usize,
        centres: Vec<f64>,
        sizes: Vec<u64>,
        scaling: Scaling,
        threshold: f64,
    ) -> Result<Self, ClusterError> {
        let bad = |m: String| ClusterError::Inconsistent(m);
        if d == 0 || sizes.is_empty() || centres.len() != sizes.len() * d {
            return Err(bad(format!(
                "{} centre values for {} centres of {d} features",
                centres.len(),
                sizes.len()
            )));
        }
        if centres.iter().any(|v| !v.is_finite()) || !threshold.is_finite() {
            return Err(bad("a centre or the threshold is not finite".into()));
        }
        scaling.check(d).map_err(bad)?;
        let weights = scaling.weights();
        Ok(Self {
            d,
            centres,
            sizes,
            scaling,
            threshold,
            weights,
        })
    }

    pub fn n_features(&self) -> usize {
        self.d
    }

    pub fn k(&self) -> usize {
        self.sizes.len()
    }

    /// Row-major `k x n_features`, in the features' units.
    pub fn centres(&self) -> &[f64] {
        &self.centres
    }

    /// Training rows assigned to each centre.
    pub fn sizes(&self) -> &[u64] {
        &self.sizes
    }

    pub fn scaling(&self) -> &Scaling {
        &self.scaling
    }

    /// In score units: anomaly iff `score > threshold`.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The assigned (nearest) centre of `x` and the score.
    ///
    /// # Panics
    /// If `x.len() != n_features`.
    pub fn assign(&self, x: &[f64]) -> (usize, f64) {
        assert_eq!(x.len(), self.d, "record has the wrong feature count");
        nearest(x, &self.centres, &self.weights)
    }

    /// Squared scaled distance to the assigned centre; higher is more anomalous.
    ///
    /// # Panics
    /// If `x.len() != n_features`.
    pub fn score(&self, x: &[f64]) -> f64 {
        self.assign(x).1
    }

    /// `threshold - score`: negative means anomalous.
    pub fn decision(&self, score: f64) -> f64 {
        self.threshold - score
    }

    /// Each feature's share of the score (sums to 1 unless the score is 0): which features
    /// put the record far from its centre.
    pub fn attribution(&self, x: &[f64]) -> Vec<f64> {
        let (i, _) = self.assign(x);
        shares(
            x,
            &self.centres[i * self.d..(i + 1) * self.d],
            &self.weights,
        )
    }

    /// Trains k-means with `k` clusters and sets the threshold by `rule`; also returns the cost
    /// (sum of training scores). `data` is row-major with `d` features.
    ///
    /// Errors: bad data (see [`check_data`]), k outside 1..=rows, `top:N` with N > rows.
    pub fn fit(
        data: &[f64],
        d: usize,
        k: usize,
        scaling: Scaling,
        rule: ThresholdRule,
        seed: u64,
    ) -> Result<(Self, f64), ClusterError> {
        let rows = check_data(data, d)?;
        if k == 0 || k > rows {
            return Err(ClusterError::K { k, rows });
        }
        let w = scaling.weights();
        let (centres, _, _) = lloyd(data, d, k, &w, seed);
        let mut model = Self::new(d, centres, vec![0; k], scaling, 0.0)?;
        let mut scores = vec![0.0; rows];
        for (x, s) in data.chunks_exact(d).zip(&mut scores) {
            let (i, dist) = model.assign(x);
            model.sizes[i] += 1;
            *s = dist;
        }
        let cost = scores.iter().sum();
        model.threshold = rule.apply(&mut scores)?;
        Ok((model, cost))
    }
}

/// Each feature's share of `distance(x, c, w)`.
pub(crate) fn shares(x: &[f64], c: &[f64], w: &[f64]) -> Vec<f64> {
    let mut parts: Vec<f64> = x
        .iter()
        .zip(c)
        .zip(w)
        .map(|((a, b), w)| ((a - b) * w).powi(2))
        .collect();
    let total: f64 = parts.iter().sum();
    if total > 0.0 {
        parts.iter_mut().for_each(|p| *p /= total);
    }
    parts
}

/// Greedy k-means++ then Lloyd: the centres (row-major), each row's centre, and the cost.
pub(crate) fn lloyd(
    data: &[f64],
    d: usize,
    k: usize,
    w: &[f64],
    seed: u64,
) -> (Vec<f64>, Vec<usize>, f64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut centres = kmeans_plus_plus(data, d, k, w, &mut rng);
    let rows = data.len() / d;
    let mut assigned: Vec<(usize, f64)> = Vec::with_capacity(rows);
    let mut labels = vec![usize::MAX; rows];
    for _ in 0..LLOYD_MAX_ITER {
        data.par_chunks_exact(d)
            .map(|x| nearest(x, &centres, w))
            .collect_into_vec(&mut assigned);
        let mut changed = false;
        for (label, &(i, _)) in labels.iter_mut().zip(&assigned) {
            changed |= *label != i;
            *label = i;
        }
        if !changed {
            break;
        }
        move_to_means(data, d, &labels, &mut centres);
    }
    // Centres and labels agree now (converged, or the last move re-assigned below).
    data.par_chunks_exact(d)
        .map(|x| nearest(x, &centres, w))
        .collect_into_vec(&mut assigned);
    let cost = assigned.iter().map(|a| a.1).sum();
    let labels = assigned.iter().map(|a| a.0).collect();
    (centres, labels, cost)
}

/// Moves each centre to the mean of its rows (summed in row order); an empty one stays put.
pub(crate) fn move_to_means(data: &[f64], d: usize, labels: &[usize], centres: &mut [f64]) {
    let k = centres.len() / d;
    let mut sums = vec![0.0; k * d];
    let mut counts = vec![0u64; k];
    for (x, &l) in data.chunks_exact(d).zip(labels) {
        counts[l] += 1;
        for (s, v) in sums[l * d..(l + 1) * d].iter_mut().zip(x) {
            *s += v;
        }
    }
    for (i, &n) in counts.iter().enumerate() {
        if n > 0 {
            for j in 0..d {
                centres[i * d + j] = sums[i * d + j] / n as f64;
            }
        }
    }
}

/// Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; scikit-learn's `2 + ln k` local
/// trials): row-major `k` centres drawn from the rows.
fn kmeans_plus_plus(data: &[f64], d: usize, k: usize, w: &[f64], rng: &mut StdRng) -> Vec<f64> {
    let rows = data.len() / d;
    let row = |i: usize| &data[i * d..(i + 1) * d];
    let mut centres = Vec::with_capacity(k * d);
    centres.extend_from_slice(row(rng.random_range(0..rows)));
    let mut closest: Vec<f64> = data
        .par_chunks_exact(d)
        .map(|x| distance(x, &centres[..d], w))
        .collect();
    let trials = 2 + (k as f64).ln() as usize;
    let mut candidate_closest: Vec<f64> = Vec::with_capacity(rows);
    for _ in 1..k {
        let total: f64 = closest.iter().sum();
        let mut best: Option<(usize, f64, Vec<f64>)> = None;
        for _ in 0..trials {
            let pick = if total > 0.0 {
                draw(&closest, total, rng.random::<f64>() * total)
            } else {
                // Every row sits on a centre: no new centre can help; repeat one.
                0
            };
            let c = row(pick);
            data.par_chunks_exact(d)
                .zip(closest.par_iter())
                .map(|(x, &old)| distance(x, c, w).min(old))
                .collect_into_vec(&mut candidate_closest);
            let potential: f64 = candidate_closest.iter().sum();
            if best.as_ref().is_none_or(|b| potential < b.1) {
                best = Some((pick, potential, candidate_closest.clone()));
            }
        }
        let (pick, _, new_closest) = best.expect("at least two trials");
        centres.extend_from_slice(row(pick));
        closest = new_closest;
    }
    centres
}

/// The first row whose running sum of `weights` reaches `cutoff` among rows of positive weight.
fn draw(weights: &[f64], total: f64, cutoff: f64) -> usize {
    let mut sum = 0.0;
    let mut last_positive = 0;
    for (i, &w) in weights.iter().enumerate() {
        if w > 0.0 {
            sum += w;
            last_positive = i;
            if sum >= cutoff {
                return i;
            }
        }
    }
    // Rounding can leave the running sum a hair under `total`.
    debug_assert!(sum <= total * (1.0 + 1e-9));
    last_positive
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand_distr::{Distribution, Normal};

    /// `per_blob` points around each of `centres` (2-D), sd `sd`, shuffled by construction
    /// order (blob after blob).
    pub(crate) fn blobs(centres: &[(f64, f64)], per_blob: usize, sd: f64, seed: u64) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let noise = Normal::new(0.0, sd).unwrap();
        let mut out = Vec::new();
        for &(cx, cy) in centres {
            for _ in 0..per_blob {
                out.push(cx + noise.sample(&mut rng));
                out.push(cy + noise.sample(&mut rng));
            }
        }
        out
    }

    const FOUR: [(f64, f64); 4] = [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0), (10.0, 10.0)];

    fn none(d: usize) -> Scaling {
        Scaling::fit(ScaleMethod::None, &[], d)
    }

    #[test]
    fn parses_options() {
        assert_eq!("top:5".parse::<ThresholdRule>(), Ok(ThresholdRule::Top(5)));
        assert_eq!(
            "quantile:0.99".parse::<ThresholdRule>(),
            Ok(ThresholdRule::Quantile(0.99))
        );
        for bad in [
            "top:0",
            "top:-1",
            "quantile:1",
            "quantile:0",
            "q:0.5",
            "2000",
        ] {
            assert!(bad.parse::<ThresholdRule>().is_err(), "{bad}");
        }
        assert_eq!(ThresholdRule::Top(2000).to_string(), "top:2000");
        assert_eq!("auto".parse::<KChoice>(), Ok(KChoice::Auto));
        assert_eq!("4".parse::<KChoice>(), Ok(KChoice::Fixed(4)));
        assert!("0".parse::<KChoice>().is_err());
        assert_eq!("standard".parse::<ScaleMethod>(), Ok(ScaleMethod::Standard));
        assert!("minmax".parse::<ScaleMethod>().is_err());
    }

    #[test]
    fn top_n_flags_n_minus_one_distinct_rows_and_fewer_on_ties() {
        let scores: Vec<f64> = (0..100).map(|i| f64::from(i) * 0.5).collect();
        for n in [1, 2, 10, 100] {
            let t = ThresholdRule::Top(n).apply(&mut scores.clone()).unwrap();
            let flagged = scores.iter().filter(|&&s| s > t).count();
            assert_eq!(flagged, n - 1, "top:{n}");
        }
        // The 3rd largest ties with the 2nd: only the largest is above it.
        let mut tied = vec![1.0, 5.0, 5.0, 9.0, 0.5];
        let t = ThresholdRule::Top(3).apply(&mut tied.clone()).unwrap();
        assert_eq!(t, 5.0);
        assert_eq!(tied.iter().filter(|&&s| s > t).count(), 1);
        assert!(matches!(
            ThresholdRule::Top(6).apply(&mut tied),
            Err(ClusterError::TopTooLarge { n: 6, rows: 5 })
        ));
        let t = ThresholdRule::Quantile(0.5)
            .apply(&mut [4.0, 1.0, 3.0, 2.0])
            .unwrap();
        assert_eq!(t, 2.5);
    }

    #[test]
    fn finds_well_separated_blobs() {
        let data = blobs(&FOUR, 50, 0.3, 1);
        let (model, cost) = KMeans::fit(&data, 2, 4, none(2), ThresholdRule::Top(10), 7).unwrap();
        assert_eq!(model.sizes(), [50u64; 4]);
        let mut found: Vec<(i64, i64)> = model
            .centres()
            .chunks(2)
            .map(|c| (c[0].round() as i64, c[1].round() as i64))
            .collect();
        found.sort();
        assert_eq!(found, [(0, 0), (0, 10), (10, 0), (10, 10)]);
        // cost is the sum of the training scores
        let sum: f64 = data.chunks(2).map(|x| model.score(x)).sum();
        assert!((sum - cost).abs() <= 1e-9 * cost);
        // far from every blob: anomalous
        assert!(model.decision(model.score(&[5.0, 5.0])) < 0.0);
        assert!(model.decision(model.score(&[0.1, 9.9])) > 0.0);
    }

    #[test]
    fn top_n_on_a_trained_model_flags_n_minus_one_training_rows() {
        let data = blobs(&FOUR, 100, 1.0, 3);
        for n in [1, 7, 50, 400] {
            let (model, _) = KMeans::fit(&data, 2, 3, none(2), ThresholdRule::Top(n), 5).unwrap();
            let flagged = data
                .chunks(2)
                .filter(|x| model.decision(model.score(x)) < 0.0)
                .count();
            assert_eq!(flagged, n - 1, "top:{n}");
        }
        assert!(matches!(
            KMeans::fit(&data, 2, 3, none(2), ThresholdRule::Top(401), 5),
            Err(ClusterError::TopTooLarge { n: 401, rows: 400 })
        ));
    }

    #[test]
    fn same_seed_same_model() {
        let data = blobs(&FOUR, 60, 2.0, 9);
        let fit = |seed| KMeans::fit(&data, 2, 5, none(2), ThresholdRule::Top(5), seed).unwrap();
        assert_eq!(fit(1), fit(1));
        let bits = |m: &KMeans| m.centres().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fit(1).0), bits(&fit(1).0));
    }

    #[test]
    fn k_one_is_the_mean_and_k_must_fit_the_rows() {
        let data = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let (m, cost) = KMeans::fit(&data, 2, 1, none(2), ThresholdRule::Top(1), 0).unwrap();
        assert_eq!(m.centres(), [3.0, 4.0]);
        assert_eq!(cost, 8.0 + 0.0 + 8.0);
        assert_eq!(m.threshold(), 8.0);
        assert!(matches!(
            KMeans::fit(&data, 2, 4, none(2), ThresholdRule::Top(1), 0),
            Err(ClusterError::K { k: 4, rows: 3 })
        ));
        assert!(matches!(
            KMeans::fit(&[1.0, f64::NAN], 2, 1, none(2), ThresholdRule::Top(1), 0),
            Err(ClusterError::NotFinite {
                row: 0,
                feature: 1,
                ..
            })
        ));
        // duplicate rows: more clusters than distinct points still trains
        let same = [1.0; 10];
        let (m, cost) = KMeans::fit(&same, 2, 3, none(2), ThresholdRule::Top(1), 0).unwrap();
        assert_eq!(cost, 0.0);
        assert_eq!(m.sizes().iter().sum::<u64>(), 5);
    }

    #[test]
    fn standard_scaling_divides_by_the_deviation() {
        // x spread 100 times wider than y: unscaled, x dominates.
        let data: Vec<f64> = (0..200)
            .flat_map(|i| [f64::from(i % 20) * 100.0, f64::from(i % 7)])
            .collect();
        let s = Scaling::fit(ScaleMethod::Standard, &data, 2);
        assert!((s.scale[0] / s.scale[1] - 576.6 / 2.0).abs() < 5.0, "{s:?}");
        let (m, _) = KMeans::fit(&data, 2, 1, s.clone(), ThresholdRule::Top(1), 0).unwrap();
        let x = [m.centres()[0] + s.scale[0], m.centres()[1]];
        assert!((m.score(&x) - 1.0).abs() < 1e-12);
        let shares = m.attribution(&[m.centres()[0], m.centres()[1] + 2.0 * s.scale[1]]);
        assert_eq!(shares, vec![0.0, 1.0]);
        // a constant feature keeps scale 1
        let flat = Scaling::fit(ScaleMethod::Standard, &[1.0, 5.0, 2.0, 5.0], 2);
        assert_eq!(flat.scale[1], 1.0);
    }

    #[test]
    fn elbow_keeps_the_k_before_the_first_flat_ratio() {
        let costs = |c: &[f64]| {
            c.iter()
                .enumerate()
                .map(|(i, &cost)| KCost { k: i + 1, cost })
                .collect::<Vec<_>>()
        };
        let (k, why) = elbow(&costs(&[100.0, 50.0, 25.0, 2.0, 1.9, 1.8]), 0.7);
        assert_eq!(k, 4, "{why}");
        assert!(why.contains("r(5)") && why.contains("k = 4"), "{why}");
        // exactly the ratio is not above it
        assert_eq!(elbow(&costs(&[100.0, 70.0, 69.0]), 0.7).0, 2);
        assert_eq!(elbow(&costs(&[100.0, 10.0, 1.0]), 0.7).0, 3);
        assert_eq!(elbow(&costs(&[0.0, 0.0]), 0.7).0, 1);
        assert_eq!(elbow(&costs(&[5.0]), 0.7).0, 1);
    }

    #[test]
    fn elbow_on_four_blobs_keeps_four() {
        let data = blobs(&FOUR, 100, 0.5, 11);
        for seed in [1, 2, 3] {
            let costs: Vec<KCost> = (1..=8)
                .map(|k| KCost {
                    k,
                    cost: KMeans::fit(&data, 2, k, none(2), ThresholdRule::Top(1), seed)
                        .unwrap()
                        .1,
                })
                .collect();
            let (k, why) = elbow(&costs, DEFAULT_ELBOW_RATIO);
            assert_eq!(k, 4, "seed {seed}: {why} {costs:?}");
        }
    }

    #[test]
    fn decoding_checks_the_parts() {
        let data = blobs(&FOUR, 20, 0.5, 2);
        let (m, _) = KMeans::fit(&data, 2, 4, none(2), ThresholdRule::Top(3), 1).unwrap();
        let bytes = bincode::serde::encode_to_vec(&m, bincode::config::standard()).unwrap();
        let (back, _): (KMeans, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back, m);
        let mut parts = KMeansParts::from(m);
        parts.centres.pop();
        assert!(KMeans::try_from(parts.clone()).is_err());
        parts.centres.push(f64::NAN);
        assert!(KMeans::try_from(parts.clone()).is_err());
        let last = parts.centres.len() - 1;
        parts.centres[last] = 0.0;
        assert!(KMeans::try_from(parts.clone()).is_ok());
        parts.scaling.scale[0] = 0.0;
        assert!(KMeans::try_from(parts).is_err());
    }
}
