//! The Isolation Forest (Liu, Ting & Zhou, 2008) with scikit-learn's semantics, stored as flat
//! arrays so that scoring walks a few cache lines and allocates nothing.
//!
//! Semantics follow scikit-learn's `IsolationForest` (bootstrap off, one feature per split):
//! each tree grows on `max_samples` rows drawn without replacement, splits on a feature chosen
//! uniformly among those not constant in the node, at a threshold uniform between that
//! feature's min and max in the node (`x <= threshold` goes left), and stops at depth
//! `ceil(log2(max_samples))`, at one sample, or when every feature is constant. A record's path
//! length in a tree is its leaf's depth plus `c(n_leaf)`, and
//! `score_samples = -2^(-mean path length / c(max_samples))`.
//!
//! # Layout
//!
//! All trees share one node array. The two children of a split are adjacent, so a node stores
//! only its left child's index and the step is `left + (x[feature] > threshold)`. A leaf points
//! to itself with an infinite threshold, so walking a tree is a fixed number of steps (its
//! height) with no branch on "is this a leaf": once there, a record stays. The leaf's
//! contribution (depth + c(n_leaf)) lives in a parallel array read once per tree.
//!
//! This array is what model files store. For scoring, `complete` derives a faster layout
//! (complete trees, integer compares, no child indices) for forests of up to `COLS`
//! features and height 10, which covers `max_samples` up to 1,024; other forests walk this
//! array. Scoring overlaps independent walks so the CPU is not waiting on one chain of
//! dependent loads: one record walks `TREE_LANES` trees in lock step; a batch goes tree by
//! tree over blocks of records (the tree stays in L1), `LANES` records in lock step. Every
//! path adds the trees' path lengths in tree order, so all give bit-identical scores.

use std::fmt;
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use complete::{Complete, Scratch};

mod complete;

/// Euler–Mascheroni constant, as in the paper's harmonic-number approximation.
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// Rows walked in lock step through one tree in batch scoring: enough independent walks to
/// hide the latency of each dependent node load, few enough to stay in registers.
const LANES: usize = 8;

/// Trees walked in lock step when scoring one record, for the same reason.
const TREE_LANES: usize = 8;

/// Records per block in batch scoring: each tree walks the whole block while its nodes are in
/// L1, and the block's records (at shuttle's 9 features, 4.6 KB) stay there too.
const BLOCK: usize = 64;

/// Features the fast layout ([`complete`]) handles: a record is copied into this many slots,
/// a power of two so that a masked feature index needs no bounds check. Forests with more
/// features use the general walk.
const COLS: usize = 32;

/// Most trees `fit` grows: far past any useful forest (scores settle within a few hundred),
/// and low enough that a mistyped count is refused instead of exhausting memory.
pub const MAX_TREES: usize = 100_000;

/// Deepest tree a model file may claim; `ceil(log2(usize::MAX))` is 64.
const MAX_HEIGHT: u32 = 64;

/// Errors from training an Isolation Forest, parsing its parameters, or rebuilding it from a
/// decoded payload.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForestError {
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
    #[error("n_estimators must be at least 1")]
    NoTrees,
    #[error("n_estimators must be at most {MAX_TREES}, got {0}")]
    TooManyTrees(usize),
    #[error("max_samples must be at least 1")]
    ZeroSamples,
    #[error("contamination must be in (0, 0.5], got {0}")]
    Contamination(f64),
    #[error("invalid {what} {value:?}: expected {expected}")]
    Parse {
        what: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("inconsistent forest: {0}")]
    Inconsistent(String),
}

/// `max_samples`: rows drawn (without replacement) to grow each tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum MaxSamples {
    /// `min(256, n_rows)`, the paper's recommendation.
    Auto,
    /// A fixed count; like scikit-learn, more than the training set means all of it.
    Count(usize),
}

impl MaxSamples {
    /// The count actually used for a training set of `n_rows`.
    pub fn resolve(self, n_rows: usize) -> usize {
        match self {
            Self::Auto => n_rows.min(256),
            Self::Count(k) => n_rows.min(k),
        }
    }
}

impl fmt::Display for MaxSamples {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Count(k) => write!(f, "{k}"),
        }
    }
}

impl FromStr for MaxSamples {
    type Err = ForestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(Self::Auto);
        }
        match s.parse::<usize>() {
            Ok(0) => Err(ForestError::ZeroSamples),
            Ok(k) => Ok(Self::Count(k)),
            Err(_) => Err(ForestError::Parse {
                what: "max_samples",
                value: s.into(),
                expected: "`auto` or a positive whole number",
            }),
        }
    }
}

impl TryFrom<String> for MaxSamples {
    type Error = ForestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MaxSamples> for String {
    fn from(m: MaxSamples) -> Self {
        m.to_string()
    }
}

/// `contamination`: the expected share of anomalies, which sets the decision threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Contamination {
    /// Offset -0.5, the paper's threshold.
    Auto,
    /// Offset at this percentile of the training scores, in (0, 0.5].
    Fraction(f64),
}

impl Contamination {
    fn validate(self) -> Result<Self, ForestError> {
        match self {
            Self::Fraction(q) if !(q > 0.0 && q <= 0.5) => Err(ForestError::Contamination(q)),
            other => Ok(other),
        }
    }
}

impl fmt::Display for Contamination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Fraction(q) => write!(f, "{q}"),
        }
    }
}

impl FromStr for Contamination {
    type Err = ForestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(Self::Auto);
        }
        match s.parse::<f64>() {
            Ok(q) => Self::Fraction(q).validate(),
            Err(_) => Err(ForestError::Parse {
                what: "contamination",
                value: s.into(),
                expected: "`auto` or a fraction in (0, 0.5]",
            }),
        }
    }
}

impl TryFrom<String> for Contamination {
    type Error = ForestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Contamination> for String {
    fn from(c: Contamination) -> Self {
        c.to_string()
    }
}

/// Training parameters, named as in scikit-learn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ForestParams {
    pub n_estimators: usize,
    pub max_samples: MaxSamples,
    pub contamination: Contamination,
    /// Seeds every random choice: the same data and parameters give the same forest, whatever
    /// the number of threads.
    pub random_state: u64,
}

impl Default for ForestParams {
    fn default() -> Self {
        Self {
            n_estimators: 100,
            max_samples: MaxSamples::Auto,
            contamination: Contamination::Auto,
            random_state: 42,
        }
    }
}

/// `c(n)`: the average path length of an unsuccessful search in a binary search tree of `n`
/// nodes, which normalises path lengths and estimates the depth left unbuilt below a leaf.
pub fn average_path_length(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
        }
    }
}

/// One node of the shared array. For a split, `left` and `left + 1` are the children; a leaf
/// has `left` equal to its own index and an infinite threshold, so it loops onto itself.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Node {
    threshold: f64,
    feature: u32,
    left: u32,
}

/// Where a tree starts in the node array and how many steps reach its deepest leaf.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Tree {
    root: u32,
    height: u32,
}

/// The serialised form; [`IsolationForest`] is rebuilt from it only after validation, so a
/// crafted payload cannot index out of bounds at scoring time.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ForestData {
    n_features: u32,
    params: ForestParams,
    max_samples: u64,
    offset: f64,
    nodes: Vec<Node>,
    values: Vec<f64>,
    trees: Vec<Tree>,
}

/// A trained Isolation Forest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ForestData", into = "ForestData")]
pub struct IsolationForest {
    n_features: usize,
    params: ForestParams,
    max_samples: usize,
    offset: f64,
    nodes: Vec<Node>,
    values: Vec<f64>,
    trees: Vec<Tree>,
    /// `1 / (n_trees * c(max_samples))`, or 0 when `c(max_samples)` is 0 (one training row).
    scale: f64,
    /// The rounding bound of `sum * scale`: `4 * (n_trees + 2)` ulps of 1 (each addition and
    /// the product round by half an ulp of the running value; 4 covers the leaf values'
    /// own rounding with room to spare).
    rounding: f64,
    /// The fast layout derived from the nodes, or `None` (the general walk) when the forest
    /// has too many features or too deep trees for it.
    complete: Option<Complete>,
    /// Per node, `log2` of the training rows that reached it, derived from the leaves (never
    /// stored): what [`attribution`](Self::attribution) credits a split with.
    log2_rows: Vec<f32>,
}

impl IsolationForest {
    /// Trains on `data`, row-major with `n_features` values per row.
    pub fn fit(
        data: &[f64],
        n_features: usize,
        params: &ForestParams,
    ) -> Result<Self, ForestError> {
        Self::fit_with_progress(data, n_features, params, &|| {})
    }

    /// As [`fit`](Self::fit), calling `tree_done` after each tree (from any thread).
    pub fn fit_with_progress(
        data: &[f64],
        n_features: usize,
        params: &ForestParams,
        tree_done: &(dyn Fn() + Sync),
    ) -> Result<Self, ForestError> {
        let n_rows = check_training_data(data, n_features)?;
        if params.n_estimators == 0 {
            return Err(ForestError::NoTrees);
        }
        if params.n_estimators > MAX_TREES {
            return Err(ForestError::TooManyTrees(params.n_estimators));
        }
        if params.max_samples == MaxSamples::Count(0) {
            return Err(ForestError::ZeroSamples);
        }
        params.contamination.validate()?;
        if n_features > u32::MAX as usize {
            return Err(ForestError::Inconsistent("too many features".into()));
        }

        let psi = params.max_samples.resolve(n_rows);
        let height_limit = ceil_log2(psi.max(2));
        // Seeds are drawn up front so each tree's randomness is independent of scheduling.
        let mut master = StdRng::seed_from_u64(params.random_state);
        let seeds: Vec<u64> = (0..params.n_estimators)
            .map(|_| master.next_u64())
            .collect();
        let grown: Vec<GrownTree> = seeds
            .par_iter()
            .map(|&seed| {
                let tree = grow_tree(data, n_features, n_rows, psi, height_limit, seed);
                tree_done();
                tree
            })
            .collect();

        let total: usize = grown.iter().map(|t| t.nodes.len()).sum();
        if total >= u32::MAX as usize {
            return Err(ForestError::Inconsistent("too many nodes".into()));
        }
        let mut nodes = Vec::with_capacity(total);
        let mut values = Vec::with_capacity(total);
        let mut trees = Vec::with_capacity(grown.len());
        for tree in grown {
            let base = nodes.len() as u32;
            trees.push(Tree {
                root: base,
                height: tree.height,
            });
            nodes.extend(tree.nodes.iter().map(|n| Node {
                left: n.left + base,
                ..*n
            }));
            values.extend_from_slice(&tree.values);
        }

        let mut forest = Self {
            n_features,
            params: *params,
            max_samples: psi,
            offset: -0.5,
            nodes,
            values,
            trees,
            scale: 0.0,
            rounding: 0.0,
            complete: None,
            log2_rows: Vec::new(),
        };
        forest.scale = forest.compute_scale();
        forest.rounding = forest.compute_rounding();
        forest.complete = Complete::build(&forest.nodes, &forest.values, &forest.trees, n_features);
        forest.log2_rows = log2_rows(&forest.nodes, &forest.values, &forest.trees, psi);
        if let Contamination::Fraction(q) = params.contamination {
            let mut scores = vec![0.0; n_rows];
            forest.score_samples_par(data, &mut scores);
            forest.offset = super::quantile::percentile(&mut scores, 100.0 * q);
        }
        Ok(forest)
    }

    fn compute_scale(&self) -> f64 {
        let c = average_path_length(self.max_samples);
        if c == 0.0 {
            0.0
        } else {
            1.0 / (self.trees.len() as f64 * c)
        }
    }

    fn compute_rounding(&self) -> f64 {
        4.0 * (self.trees.len() as f64 + 2.0) * f64::EPSILON
    }

    pub fn n_features(&self) -> usize {
        self.n_features
    }

    pub fn n_trees(&self) -> usize {
        self.trees.len()
    }

    /// The resolved `max_samples` (rows per tree).
    pub fn max_samples(&self) -> usize {
        self.max_samples
    }

    pub fn params(&self) -> &ForestParams {
        &self.params
    }

    /// Subtracted from a score to get the decision function: -0.5 for `contamination = auto`,
    /// else the contamination percentile of the training scores.
    pub fn offset(&self) -> f64 {
        self.offset
    }

    /// Total node count over all trees.
    pub fn n_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// scikit-learn's `score_samples` for one record: in [-1, 0], lower is more anomalous.
    ///
    /// Walks `TREE_LANES` trees in lock step: their node loads are independent, so the CPU
    /// overlaps them instead of waiting on one chain of dependent loads at a time. Leaf values
    /// are then added in tree order, so the sum is the same as walking one tree at a time.
    ///
    /// # Panics
    /// If `x.len()` differs from [`n_features`](Self::n_features).
    #[inline]
    pub fn score_samples(&self, x: &[f64]) -> f64 {
        assert_eq!(
            x.len(),
            self.n_features,
            "record has the wrong feature count"
        );
        if let Some(complete) = &self.complete {
            return self.score_from_sum(complete.path_sum(x));
        }
        let nodes = &self.nodes[..];
        let mut sum = 0.0;
        let mut groups = self.trees.chunks_exact(TREE_LANES);
        for group in &mut groups {
            let mut at: [usize; TREE_LANES] = std::array::from_fn(|k| group[k].root as usize);
            // A leaf loops onto itself, so walking a shallower tree further changes nothing.
            let height = group.iter().map(|t| t.height).max().unwrap_or(0);
            for _ in 0..height {
                for at in &mut at {
                    let node = nodes[*at];
                    let next =
                        node.left as usize + usize::from(x[node.feature as usize] > node.threshold);
                    *at = next;
                }
            }
            for at in at {
                sum += self.values[at];
            }
        }
        for tree in groups.remainder() {
            sum += self.leaf_value(tree, x);
        }
        self.score_from_sum(sum)
    }

    /// The path length of `x` in one tree: its leaf's depth plus `c(n_leaf)`.
    #[inline]
    fn leaf_value(&self, tree: &Tree, x: &[f64]) -> f64 {
        let mut at = tree.root as usize;
        for _ in 0..tree.height {
            let node = self.nodes[at];
            at = node.left as usize + usize::from(x[node.feature as usize] > node.threshold);
        }
        self.values[at]
    }

    /// [`score_samples`](Self::score_samples) for many records: `rows` is row-major with
    /// `n_features` values per row, one score per row goes to `out`.
    ///
    /// Records go in blocks of `BLOCK`; each tree walks the whole block before the next tree
    /// starts, so its nodes stay in L1 while they are reused, and within the block `LANES`
    /// records walk in lock step to overlap their loads. Each record's sum still adds the trees
    /// in order, so scores equal [`score_samples`](Self::score_samples)'s.
    ///
    /// # Panics
    /// If `rows.len() != out.len() * n_features`.
    pub fn score_samples_batch(&self, rows: &[f64], out: &mut [f64]) {
        let d = self.n_features;
        assert_eq!(
            rows.len(),
            out.len() * d,
            "rows and out disagree on the row count"
        );
        let mut scratch = Scratch::new();
        let mut sums = [0.0; BLOCK];
        for (block, out) in rows.chunks(BLOCK * d).zip(out.chunks_mut(BLOCK)) {
            let sums = &mut sums[..out.len()];
            sums.fill(0.0);
            match &self.complete {
                Some(complete) => complete.add_block(block, d, &mut scratch, sums),
                None => {
                    for tree in &self.trees {
                        self.add_tree(tree, block, sums);
                    }
                }
            }
            for (score, sum) in out.iter_mut().zip(&*sums) {
                *score = self.score_from_sum(*sum);
            }
        }
    }

    /// [`score_samples_batch`](Self::score_samples_batch) spread over rayon's thread pool.
    pub fn score_samples_par(&self, rows: &[f64], out: &mut [f64]) {
        const CHUNK: usize = 4096;
        let d = self.n_features;
        assert_eq!(
            rows.len(),
            out.len() * d,
            "rows and out disagree on the row count"
        );
        out.par_chunks_mut(CHUNK)
            .zip(rows.par_chunks(CHUNK * d))
            .for_each(|(out, rows)| self.score_samples_batch(rows, out));
    }

    /// Adds each record's path length in `tree` to its sum, [`LANES`] records at a time; the
    /// general walk, for forests the fast layout does not cover.
    #[inline]
    fn add_tree(&self, tree: &Tree, block: &[f64], sums: &mut [f64]) {
        let d = self.n_features;
        let nodes = &self.nodes[..];
        let mut records = block.chunks_exact(LANES * d);
        let mut lane_sums = sums.chunks_exact_mut(LANES);
        for (records, lane_sums) in (&mut records).zip(&mut lane_sums) {
            let mut at = [tree.root as usize; LANES];
            for _ in 0..tree.height {
                for (lane, at) in at.iter_mut().enumerate() {
                    let node = nodes[*at];
                    let value = records[lane * d + node.feature as usize];
                    *at = node.left as usize + usize::from(value > node.threshold);
                }
            }
            for (sum, at) in lane_sums.iter_mut().zip(at) {
                *sum += self.values[at];
            }
        }
        for (x, sum) in records
            .remainder()
            .chunks_exact(d)
            .zip(lane_sums.into_remainder())
        {
            *sum += self.leaf_value(tree, x);
        }
    }

    /// `-2^(-sum / (n_trees * c(max_samples)))`. The exponent is exactly 1 when the mean path
    /// length is `c(max_samples)` (every record of a constant training set, for one), giving
    /// the paper's threshold -0.5; adding `n_trees` path lengths and scaling rounds it off by
    /// up to about `n_trees` ulps, which put a record equal to constant training data a hair
    /// below the threshold (-0.5000000000000006) and so flagged it. An exponent within that
    /// rounding bound of 1 is taken as 1.
    #[inline]
    fn score_from_sum(&self, sum: f64) -> f64 {
        if self.scale == 0.0 {
            // One training row: nothing to compare with, so every record sits on the paper's
            // threshold (scikit-learn does the same).
            return -0.5;
        }
        let exponent = sum * self.scale;
        let exponent = if (exponent - 1.0).abs() <= self.rounding {
            1.0
        } else {
            exponent
        };
        -(-exponent).exp2()
    }

    /// scikit-learn's `decision_function` for a score: negative means anomalous.
    pub fn decision(&self, score: f64) -> f64 {
        score - self.offset
    }

    /// scikit-learn's `predict`: -1 for an anomaly, 1 for a normal record.
    pub fn predict(&self, x: &[f64]) -> i8 {
        if self.decision(self.score_samples(x)) < 0.0 {
            -1
        } else {
            1
        }
    }

    /// Which features isolated `x`: one share per feature, in `[0, 1]`, summing to 1 (all 0
    /// when no tree splits at all, as for a constant training set).
    ///
    /// A path-based attribution in the spirit of Local-DIFFI (Carletti, Terzi & Susto,
    /// "Interpretable Anomaly Detection with DIFFI: Depth-based Feature Importance of Isolation
    /// Forest", arXiv:2007.11117, 2020; Engineering Applications of Artificial Intelligence 119,
    /// 2023, 105730; reference code `local_diffi` in github.com/mattiacarletti/DIFFI).
    /// Local-DIFFI walks the record's path in each tree, credits the feature of every split on
    /// it with `1/h_t - 1/h_max` (`h_t` the record's leaf depth in tree `t`), so trees that
    /// isolate the record early count more, and averages each feature's credits over its
    /// splits. The feature of a split is drawn uniformly whatever the record, so which features
    /// a path holds says little by itself; here, as DIFFI's global version does with its
    /// induced imbalance coefficients, a split also counts by how unevenly it divides its node
    /// from the record's point of view. Each split on the path is credited with
    /// `log2(n_node / n_child)` (`n` = training rows reaching a node, recovered from the leaves):
    /// the halvings of the tree's sample it makes on the way to the record's leaf, so a split
    /// that sends the record off with 3 of 256 rows earns 6.4 and one that halves its node earns
    /// 1, and per tree the credits add up to `log2(max_samples / n_leaf)`. Credits are weighed
    /// by `1/h_t` as in Local-DIFFI (without its `-1/h_max`, which would zero trees where the
    /// record reaches the depth limit), summed over trees (not averaged per split: the bits
    /// already say how much each split did) and divided by their total.
    ///
    /// Costs one walk of every tree (the general node array, no lock step): a few times a
    /// score, which is why the daemon computes it only for anomalies (`docs/benchmarks.md`).
    ///
    /// # Panics
    /// If `x.len()` differs from [`n_features`](Self::n_features).
    pub fn attribution(&self, x: &[f64]) -> Vec<f64> {
        assert_eq!(
            x.len(),
            self.n_features,
            "record has the wrong feature count"
        );
        let mut credit = vec![0.0; self.n_features];
        // (feature, bits) of the splits on the path in the current tree.
        let mut path: Vec<(usize, f64)> = Vec::with_capacity(MAX_HEIGHT as usize);
        for tree in &self.trees {
            path.clear();
            let mut at = tree.root as usize;
            for _ in 0..tree.height {
                let node = self.nodes[at];
                if node.left as usize == at {
                    break;
                }
                let feature = node.feature as usize;
                let next = node.left as usize + usize::from(x[feature] > node.threshold);
                let bits = f64::from(self.log2_rows[at] - self.log2_rows[next]).max(0.0);
                path.push((feature, bits));
                at = next;
            }
            if path.is_empty() {
                continue;
            }
            let weight = 1.0 / path.len() as f64;
            for &(feature, bits) in &path {
                credit[feature] += weight * bits;
            }
        }
        let total: f64 = credit.iter().sum();
        if total > 0.0 {
            for c in &mut credit {
                *c /= total;
            }
        }
        credit
    }

    /// Mean path length of `x` over the trees, by following each tree until its leaf: the
    /// textbook traversal, kept as the oracle for tests and the baseline in benchmarks.
    pub fn mean_path_length_by_walking(&self, x: &[f64]) -> f64 {
        let mut sum = 0.0;
        for tree in &self.trees {
            let mut at = tree.root as usize;
            loop {
                let node = self.nodes[at];
                if node.left as usize == at {
                    break;
                }
                at = if x[node.feature as usize] <= node.threshold {
                    node.left as usize
                } else {
                    node.left as usize + 1
                };
            }
            sum += self.values[at];
        }
        sum / self.trees.len() as f64
    }
}

impl From<IsolationForest> for ForestData {
    fn from(f: IsolationForest) -> Self {
        Self {
            n_features: f.n_features as u32,
            params: f.params,
            max_samples: f.max_samples as u64,
            offset: f.offset,
            nodes: f.nodes,
            values: f.values,
            trees: f.trees,
        }
    }
}

impl TryFrom<ForestData> for IsolationForest {
    type Error = ForestError;

    fn try_from(d: ForestData) -> Result<Self, Self::Error> {
        let bad = |what: String| Err(ForestError::Inconsistent(what));
        if d.n_features == 0 {
            return bad("no features".into());
        }
        if d.trees.is_empty() || d.trees.len() != d.params.n_estimators {
            return bad(format!(
                "{} trees for n_estimators {}",
                d.trees.len(),
                d.params.n_estimators
            ));
        }
        if d.max_samples == 0 || d.max_samples > usize::MAX as u64 {
            return bad(format!("max_samples {}", d.max_samples));
        }
        if d.nodes.len() != d.values.len() || d.nodes.len() >= u32::MAX as usize {
            return bad("node and value arrays differ in length".into());
        }
        if !d.offset.is_finite() || d.values.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return bad("non-finite offset or leaf value".into());
        }
        let len = d.nodes.len();
        for (i, node) in d.nodes.iter().enumerate() {
            let left = node.left as usize;
            let is_leaf = left == i && node.threshold == f64::INFINITY;
            if node.feature >= d.n_features
                || (!is_leaf && left + 1 >= len)
                || node.threshold.is_nan()
            {
                return bad(format!("node {i} points outside the forest"));
            }
        }
        if d.trees
            .iter()
            .any(|t| t.root as usize >= len || t.height > MAX_HEIGHT)
        {
            return bad("tree root outside the forest".into());
        }
        // Every path from a root must reach a leaf within the tree's stated height, and no node
        // may be reached twice: then every walk (a fixed number of steps, or until a leaf)
        // ends at the same leaf, and each one ends.
        let mut seen = vec![false; len];
        let mut pending = Vec::new();
        for (t, tree) in d.trees.iter().enumerate() {
            pending.push((tree.root as usize, 0));
            while let Some((at, depth)) = pending.pop() {
                if std::mem::replace(&mut seen[at], true) {
                    return bad(format!("tree {t} reaches node {at} a second time"));
                }
                let node = d.nodes[at];
                let left = node.left as usize;
                if left == at && node.threshold == f64::INFINITY {
                    continue;
                }
                if depth == tree.height {
                    return bad(format!(
                        "tree {t} is deeper than its stated height {}",
                        tree.height
                    ));
                }
                pending.extend([(left, depth + 1), (left + 1, depth + 1)]);
            }
        }
        let mut forest = Self {
            n_features: d.n_features as usize,
            params: d.params,
            max_samples: d.max_samples as usize,
            offset: d.offset,
            nodes: d.nodes,
            values: d.values,
            trees: d.trees,
            scale: 0.0,
            rounding: 0.0,
            complete: None,
            log2_rows: Vec::new(),
        };
        forest.scale = forest.compute_scale();
        forest.rounding = forest.compute_rounding();
        forest.complete = Complete::build(
            &forest.nodes,
            &forest.values,
            &forest.trees,
            forest.n_features,
        );
        forest.log2_rows = log2_rows(
            &forest.nodes,
            &forest.values,
            &forest.trees,
            forest.max_samples,
        );
        Ok(forest)
    }
}

/// Checks the shape and refuses non-finite values, returning the row count.
fn check_training_data(data: &[f64], n_features: usize) -> Result<usize, ForestError> {
    if n_features == 0 {
        return Err(ForestError::NoFeatures);
    }
    if !data.len().is_multiple_of(n_features) {
        return Err(ForestError::Shape {
            len: data.len(),
            n_features,
        });
    }
    if data.is_empty() {
        return Err(ForestError::Empty);
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(ForestError::NotFinite {
            row: i / n_features,
            feature: i % n_features,
            value: data[i],
        });
    }
    Ok(data.len() / n_features)
}

fn ceil_log2(n: usize) -> u32 {
    usize::BITS - (n - 1).leading_zeros()
}

/// Per node, `log2` of the training rows that reached it. A leaf's rows come from its value,
/// `depth + c(n_leaf)` ([`leaf_rows`]); a split's are its children's sum. Nodes no tree reaches
/// get 0. Expects a validated forest (every walk ends, no node is reached twice).
fn log2_rows(nodes: &[Node], values: &[f64], trees: &[Tree], max_samples: usize) -> Vec<f32> {
    let mut rows = vec![0u64; nodes.len()];
    // (node, depth, children summed): post-order, so a split is summed after its children.
    let mut pending: Vec<(usize, u32, bool)> = Vec::new();
    for tree in trees {
        pending.push((tree.root as usize, 0, false));
        while let Some((at, depth, children_done)) = pending.pop() {
            let left = nodes[at].left as usize;
            if left == at {
                rows[at] = leaf_rows(values[at] - f64::from(depth), max_samples);
            } else if children_done {
                rows[at] = rows[left].saturating_add(rows[left + 1]);
            } else {
                pending.push((at, depth, true));
                pending.push((left, depth + 1, false));
                pending.push((left + 1, depth + 1, false));
            }
        }
    }
    rows.iter()
        .map(|&n| (n.max(1) as f64).log2() as f32)
        .collect()
}

/// The training rows `n` in a leaf whose unbuilt depth is `c(n)` ([`average_path_length`]):
/// the `n` in `1..=max_samples` whose `c(n)` is nearest. `c` grows with `n`, so a binary
/// search finds it; a damaged value still gives a count in range.
fn leaf_rows(c_value: f64, max_samples: usize) -> u64 {
    // c(1) = 0 and c(2) = 1: below the midpoint, one row (also for NaN).
    if c_value.is_nan() || c_value < 0.5 {
        return 1;
    }
    let (mut lo, mut hi) = (2usize, max_samples.max(2));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if average_path_length(mid) < c_value {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    // `lo` is the first n with c(n) >= c_value; its predecessor may be nearer.
    if lo > 2 && c_value - average_path_length(lo - 1) < average_path_length(lo) - c_value {
        lo -= 1;
    }
    lo as u64
}

/// One tree before it joins the shared array; `left` indices are local to it.
struct GrownTree {
    nodes: Vec<Node>,
    values: Vec<f64>,
    height: u32,
}

/// Grows one tree on `psi` rows drawn without replacement from `data`.
fn grow_tree(
    data: &[f64],
    d: usize,
    n_rows: usize,
    psi: usize,
    height_limit: u32,
    seed: u64,
) -> GrownTree {
    let mut rng = StdRng::seed_from_u64(seed);
    // Copy the subsample so splitting touches a few contiguous kilobytes, not the whole set.
    let mut sample = Vec::with_capacity(psi * d);
    for row in rand::seq::index::sample(&mut rng, n_rows, psi) {
        sample.extend_from_slice(&data[row * d..(row + 1) * d]);
    }
    let mut order: Vec<u32> = (0..psi as u32).collect();
    let mut candidates: Vec<usize> = Vec::with_capacity(d);

    let leaf = |i: usize| Node {
        threshold: f64::INFINITY,
        feature: 0,
        left: i as u32,
    };
    let mut nodes = vec![leaf(0)];
    let mut values = vec![0.0];
    let mut height = 0;
    // (node index, range of `order` it holds, depth)
    let mut pending = vec![(0usize, 0usize, psi, 0u32)];
    while let Some((at, lo, hi, depth)) = pending.pop() {
        let rows = &mut order[lo..hi];
        let split = if depth < height_limit && rows.len() > 1 {
            choose_split(&sample, d, rows, &mut candidates, &mut rng)
        } else {
            None
        };
        let Some((feature, threshold)) = split else {
            nodes[at] = leaf(at);
            values[at] = f64::from(depth) + average_path_length(rows.len());
            height = height.max(depth);
            continue;
        };
        let mid = lo + partition(rows, |r| sample[r as usize * d + feature] <= threshold);
        let left = nodes.len();
        nodes.extend([leaf(left), leaf(left + 1)]);
        values.extend([0.0, 0.0]);
        nodes[at] = Node {
            threshold,
            feature: feature as u32,
            left: left as u32,
        };
        pending.push((left + 1, mid, hi, depth + 1));
        pending.push((left, lo, mid, depth + 1));
    }
    GrownTree {
        nodes,
        values,
        height,
    }
}

/// Picks a feature uniformly among those not constant over `rows`, and a threshold uniform
/// in `[min, max)`; `None` when every feature is constant.
fn choose_split(
    sample: &[f64],
    d: usize,
    rows: &[u32],
    candidates: &mut Vec<usize>,
    rng: &mut StdRng,
) -> Option<(usize, f64)> {
    candidates.clear();
    candidates.extend(0..d);
    while !candidates.is_empty() {
        let pick = rng.random_range(0..candidates.len());
        let feature = candidates[pick];
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for &r in rows {
            let v = sample[r as usize * d + feature];
            min = min.min(v);
            max = max.max(v);
        }
        if max > min {
            let mut threshold = draw_between(rng, min, max);
            // Rounding can land a float draw on `max`, which would send every row left.
            if threshold >= max {
                threshold = min;
            }
            return Some((feature, threshold));
        }
        candidates.swap_remove(pick);
    }
    None
}

/// A threshold uniform in `[min, max)`, for finite `min < max`. `rand`'s uniform range needs
/// `max - min` to be finite; where the span overflows (`-1e308` and `1e308`), the point is
/// drawn as `min * (1 - u) + max * u`, whose terms have opposite signs and cannot overflow.
/// Ranges with a finite span keep `rand`'s draw, so the forests trained before stay the same.
fn draw_between(rng: &mut StdRng, min: f64, max: f64) -> f64 {
    if (max - min).is_finite() {
        return rng.random_range(min..max);
    }
    let u: f64 = rng.random();
    (min * (1.0 - u) + max * u).clamp(min, max)
}

/// Moves the rows satisfying `goes_left` to the front, returning how many there are.
fn partition(rows: &mut [u32], goes_left: impl Fn(u32) -> bool) -> usize {
    let mut split = 0;
    for i in 0..rows.len() {
        if goes_left(rows[i]) {
            rows.swap(split, i);
            split += 1;
        }
    }
    split
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n * 2).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    fn params(trees: usize) -> ForestParams {
        ForestParams {
            n_estimators: trees,
            ..ForestParams::default()
        }
    }

    #[test]
    fn average_path_length_constants() {
        assert!((average_path_length(256) - 10.244_771).abs() < 1e-6);
        assert!((average_path_length(3) - 1.207_392).abs() < 1e-6);
        assert_eq!(average_path_length(2), 1.0);
        assert_eq!(average_path_length(1), 0.0);
        assert_eq!(average_path_length(0), 0.0);
    }

    #[test]
    fn auto_contamination_gives_offset_minus_half() {
        let f = IsolationForest::fit(&blobs(300, 1), 2, &params(10)).unwrap();
        assert_eq!(f.offset(), -0.5);
        assert_eq!(f.max_samples(), 256);
    }

    #[test]
    fn height_limit_is_ceil_log2() {
        assert_eq!(ceil_log2(2), 1);
        assert_eq!(ceil_log2(256), 8);
        assert_eq!(ceil_log2(257), 9);
        assert_eq!(ceil_log2(500), 9);
        let f = IsolationForest::fit(&blobs(1000, 2), 2, &params(20)).unwrap();
        assert!(f.trees.iter().all(|t| t.height <= 8));
        assert!(f.trees.iter().any(|t| t.height == 8));
    }

    #[test]
    fn outlier_scores_lower_than_centre() {
        let f = IsolationForest::fit(&blobs(1000, 3), 2, &params(100)).unwrap();
        let centre = f.score_samples(&[0.0, 0.0]);
        let far = f.score_samples(&[5.0, -5.0]);
        assert!(far < centre, "far {far} centre {centre}");
        assert!(far < -0.6 && centre > -0.5, "far {far} centre {centre}");
        assert_eq!(f.predict(&[5.0, -5.0]), -1);
        assert_eq!(f.predict(&[0.0, 0.0]), 1);
    }

    #[test]
    fn fast_paths_agree_with_the_textbook_walk() {
        let data = blobs(2000, 4);
        let f = IsolationForest::fit(&data, 2, &params(50)).unwrap();
        let probe = blobs(101, 5); // not a multiple of LANES: exercises the remainder
        let mut batch = vec![0.0; 101];
        f.score_samples_batch(&probe, &mut batch);
        let mut par = vec![0.0; 101];
        f.score_samples_par(&probe, &mut par);
        for (i, x) in probe.chunks_exact(2).enumerate() {
            let walked = -(2f64.powf(-f.mean_path_length_by_walking(x) / average_path_length(256)));
            let one = f.score_samples(x);
            assert!((one - walked).abs() < 1e-12, "row {i}: {one} vs {walked}");
            assert_eq!(batch[i], one, "row {i}");
            assert_eq!(par[i], one, "row {i}");
        }
    }

    /// Scores by the fast layout (batch, parallel, one record) and by the general walk
    /// (batch, one record) must be bit-identical.
    fn check_fast_equals_general(f: &IsolationForest, rows: &[f64]) -> Vec<f64> {
        let d = f.n_features();
        let n = rows.len() / d;
        let mut batch = vec![0.0; n];
        f.score_samples_batch(rows, &mut batch);
        let mut par = vec![0.0; n];
        f.score_samples_par(rows, &mut par);
        let general = IsolationForest {
            complete: None,
            ..f.clone()
        };
        let mut general_batch = vec![0.0; n];
        general.score_samples_batch(rows, &mut general_batch);
        let mut ones = Vec::with_capacity(n);
        for (i, x) in rows.chunks_exact(d).enumerate() {
            let one = f.score_samples(x);
            assert_eq!(batch[i].to_bits(), one.to_bits(), "row {i}");
            assert_eq!(par[i].to_bits(), one.to_bits(), "row {i}");
            assert_eq!(general_batch[i].to_bits(), one.to_bits(), "row {i}");
            let general_one = general.score_samples(x);
            assert_eq!(general_one.to_bits(), one.to_bits(), "row {i}");
            ones.push(one);
        }
        ones
    }

    /// As [`check_fast_equals_general`], and within 1e-12 of the textbook walk.
    fn check_all_paths(f: &IsolationForest, rows: &[f64]) {
        let d = f.n_features();
        let scores = check_fast_equals_general(f, rows);
        let c = average_path_length(f.max_samples());
        for (i, (x, one)) in rows.chunks_exact(d).zip(scores).enumerate() {
            let walked = -(2f64.powf(-f.mean_path_length_by_walking(x) / c));
            assert!((one - walked).abs() < 1e-12, "row {i}: {one} vs {walked}");
        }
    }

    #[test]
    fn fast_paths_agree_on_the_data_sets() {
        use crate::offline::csv::{self, Columns};
        for name in ["shuttle", "mammography", "cardio", "http"] {
            let path = crate::offline::benchmark::data_set_path(name);
            if !path.exists() {
                eprintln!("skipping {name}: {} is missing", path.display());
                continue;
            }
            let table = csv::read(&path, Columns::Numeric, "label").unwrap();
            let d = table.n_features();
            // Debug builds are slow: http's first 20,000 rows are enough.
            let rows = &table.values[..table.values.len().min(20_000 * d)];
            let f = IsolationForest::fit(rows, d, &params(100)).unwrap();
            assert!(f.complete.is_some(), "{name} uses the fast layout");
            check_all_paths(&f, rows);
        }
    }

    #[test]
    fn fast_layout_where_it_applies_same_scores_everywhere() {
        // Many features: the general walk.
        let mut rng = StdRng::seed_from_u64(11);
        let d = COLS + 1;
        let data: Vec<f64> = (0..300 * d).map(|_| rng.random_range(-1.0..1.0)).collect();
        let f = IsolationForest::fit(&data, d, &params(20)).unwrap();
        assert!(f.complete.is_none());
        check_all_paths(&f, &data[..101 * d]);
        // Exactly COLS features, tree counts that are not a multiple of TREE_LANES, heights
        // from tiny (padded to 8) to 10; 11 is too deep.
        let data: Vec<f64> = (0..300 * COLS)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let f = IsolationForest::fit(&data, COLS, &params(13)).unwrap();
        assert!(f.complete.is_some());
        check_all_paths(&f, &data[..101 * COLS]);
        let data = blobs(2100, 12);
        for (samples, fast) in [
            (3, true),
            (20, true),
            (500, true),
            (1000, true),
            (2048, false),
        ] {
            let p = ForestParams {
                max_samples: MaxSamples::Count(samples),
                ..params(11)
            };
            let f = IsolationForest::fit(&data, 2, &p).unwrap();
            assert_eq!(f.complete.is_some(), fast, "max_samples {samples}");
            check_all_paths(&f, &blobs(101, 13));
        }
    }

    #[test]
    fn fast_layout_agrees_on_random_forests_and_records() {
        let mut rng = StdRng::seed_from_u64(21);
        for round in 0..40 {
            let d = rng.random_range(1..=COLS);
            let rows = rng.random_range(1..400);
            // Coarse values: ties, duplicate rows and constant columns are common.
            let levels = rng.random_range(1..6) as f64;
            let data: Vec<f64> = (0..rows * d)
                .map(|_| (rng.random_range(-1.0..1.0) * levels).round())
                .collect();
            let p = ForestParams {
                n_estimators: rng.random_range(1..20),
                max_samples: MaxSamples::Count(rng.random_range(1..=1024)),
                random_state: round,
                ..ForestParams::default()
            };
            let f = IsolationForest::fit(&data, d, &p).unwrap();
            assert!(f.complete.is_some(), "round {round}");
            let mut probe: Vec<f64> = (0..37 * d)
                .map(|_| (rng.random_range(-1.5..1.5) * levels).round())
                .collect();
            let specials = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.0, 1e300];
            probe.extend((0..d).map(|i| specials[i % specials.len()]));
            check_fast_equals_general(&f, &probe);
        }
    }

    #[test]
    fn fast_layout_follows_what_a_model_file_says() {
        let f = IsolationForest::fit(&blobs(1000, 14), 2, &params(9)).unwrap();
        let mut data = ForestData::from(f);
        // Thresholds at -0.0 and 0.0 and records at +-0.0 and NaN: compared as floats are.
        let root = data.trees[1].root as usize;
        data.nodes[root].threshold = -0.0;
        let root = data.trees[2].root as usize;
        data.nodes[root].threshold = 0.0;
        let f = IsolationForest::try_from(data).unwrap();
        assert!(f.complete.is_some());
        let mut rows = blobs(50, 15);
        rows.extend([
            0.0,
            -0.0,
            -0.0,
            0.0,
            f64::NAN,
            0.0,
            0.0,
            f64::NAN,
            f64::INFINITY,
            -1.0,
        ]);
        rows.extend([f64::NEG_INFINITY, 1.0, -5e-324, 5e-324]);
        check_fast_equals_general(&f, &rows);
    }

    /// The demo's model: the synthetic two-blob set with `train --synthetic`'s parameters.
    fn two_blob_forest() -> IsolationForest {
        let data: Vec<f64> = crate::synthetic::training_set(42)
            .into_iter()
            .flatten()
            .collect();
        IsolationForest::fit(&data, 2, &crate::offline::train::SYNTHETIC_PARAMS).unwrap()
    }

    #[test]
    fn attribution_names_the_feature_that_isolates() {
        let f = two_blob_forest();
        // Far out on x0 only: x1 = 2 is the middle of the (2, 2) blob.
        let far_x0 = f.attribution(&[9.0, 2.0]);
        assert!(far_x0[0] > 0.75, "{far_x0:?}");
        let far_x1 = f.attribution(&[-2.0, -9.0]);
        assert!(far_x1[1] > 0.75, "{far_x1:?}");
        // Between the clusters: both features matter, neither is out of range.
        let between = f.attribution(&[0.0, 0.0]);
        assert!(f.predict(&[0.0, 0.0]) == -1);
        assert!(between.iter().all(|s| *s > 0.1), "{between:?}");
        for shares in [far_x0, far_x1, between] {
            assert!(
                (shares.iter().sum::<f64>() - 1.0).abs() < 1e-12,
                "{shares:?}"
            );
            assert!(shares.iter().all(|s| (0.0..=1.0).contains(s)));
        }
        // NaN goes left, as in scoring; nothing panics.
        let nan = f.attribution(&[f64::NAN, 2.0]);
        assert!((nan.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{nan:?}");
    }

    #[test]
    fn node_rows_are_recovered_from_the_leaves() {
        let f = IsolationForest::fit(&blobs(1000, 16), 2, &params(10)).unwrap();
        for tree in &f.trees {
            // Each tree grows on max_samples rows.
            let root = f.log2_rows[tree.root as usize];
            assert!((f64::from(root) - 256f64.log2()).abs() < 1e-5, "{root}");
        }
        for n in [1, 2, 3, 7, 100, 256] {
            assert_eq!(leaf_rows(average_path_length(n), 256), n as u64);
        }
        assert_eq!(leaf_rows(f64::NAN, 256), 1);
        assert_eq!(leaf_rows(1e9, 256), 256);
        // Constant data: single-leaf trees, nothing to credit.
        let f = IsolationForest::fit(&[3.0; 400], 2, &params(10)).unwrap();
        assert_eq!(f.attribution(&[1.0, 9.0]), vec![0.0, 0.0]);
    }

    #[test]
    fn same_seed_same_forest_other_seed_other_forest() {
        let data = blobs(500, 6);
        let a = IsolationForest::fit(&data, 2, &params(20)).unwrap();
        let b = IsolationForest::fit(&data, 2, &params(20)).unwrap();
        assert_eq!(a, b);
        let c = IsolationForest::fit(
            &data,
            2,
            &ForestParams {
                random_state: 7,
                ..params(20)
            },
        )
        .unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn contamination_sets_offset_at_training_percentile() {
        let data = blobs(1000, 8);
        let p = ForestParams {
            contamination: Contamination::Fraction(0.1),
            ..params(50)
        };
        let f = IsolationForest::fit(&data, 2, &p).unwrap();
        let flagged = data.chunks_exact(2).filter(|x| f.predict(x) == -1).count();
        // Linear interpolation puts the offset between ranks 99 and 100 of 1000.
        assert!((99..=100).contains(&flagged), "flagged {flagged}");
    }

    #[test]
    fn constant_features_give_every_record_the_same_score() {
        let data = vec![3.0; 400];
        let f = IsolationForest::fit(&data, 2, &params(10)).unwrap();
        // Every tree is one leaf holding 200 rows: path length c(200), score -2^(-c(200)/c(200)).
        assert_eq!(f.n_nodes(), 10);
        assert!((f.score_samples(&[3.0, 3.0]) + 0.5).abs() < 1e-12);
        assert!((f.score_samples(&[-9.0, 9.0]) + 0.5).abs() < 1e-12);
    }

    /// Issue 11: 200 rows of `1,5` scored -0.5000000000000006 for `[1, 5]` itself (decision
    /// -5.55e-16), so every record, the training rows included, was an anomaly. By the paper's
    /// formula the mean path length is exactly c(200) and the score exactly -0.5.
    #[test]
    fn a_record_equal_to_constant_training_data_is_never_an_anomaly() {
        let data: Vec<f64> = [1.0, 5.0].repeat(200);
        for trees in [1, 3, 7, 50, 100, 101, 256, 1000] {
            for contamination in [Contamination::Auto, Contamination::Fraction(0.1)] {
                let p = ForestParams {
                    contamination,
                    ..params(trees)
                };
                let f = IsolationForest::fit(&data, 2, &p).unwrap();
                let score = f.score_samples(&[1.0, 5.0]);
                assert_eq!(score, -0.5, "{trees} trees");
                assert_eq!(f.decision(score), 0.0, "{trees} trees, {contamination}");
                assert_eq!(f.predict(&[1.0, 5.0]), 1, "{trees} trees, {contamination}");
                let scores = check_fast_equals_general(&f, &data[..20]);
                assert!(scores.iter().all(|&s| f.decision(s) == 0.0));
            }
        }
        // Any number of identical rows, any max_samples.
        for rows in [2, 3, 255, 256, 257, 1000] {
            let data: Vec<f64> = [-3.25, 1e10, 0.0].repeat(rows);
            for samples in [MaxSamples::Auto, MaxSamples::Count(rows.min(300))] {
                let p = ForestParams {
                    max_samples: samples,
                    ..params(100)
                };
                let f = IsolationForest::fit(&data, 3, &p).unwrap();
                assert_eq!(f.predict(&[-3.25, 1e10, 0.0]), 1, "{rows} rows {samples}");
            }
        }
    }

    /// The snap to the threshold is only as wide as rounding: a record one split shallower
    /// than the rest still scores below -0.5.
    #[test]
    fn the_threshold_snap_is_no_wider_than_rounding() {
        let mut data: Vec<f64> = [1.0, 5.0].repeat(199);
        data.extend([2.0, 5.0]);
        let f = IsolationForest::fit(&data, 2, &params(100)).unwrap();
        assert!(f.score_samples(&[2.0, 5.0]) < -0.5);
        assert!(f.rounding < 1e-12);
    }

    /// Issue 11: rows -1e308 and 1e308 panicked every training thread (`rand`'s uniform range
    /// refuses a span that overflows to infinity).
    #[test]
    fn values_near_the_float_limit_train_and_score() {
        for data in [
            vec![-1e308, 1e308],
            vec![-f64::MAX, f64::MAX, 0.0, 1.0],
            vec![f64::MAX, -f64::MAX, -f64::MAX],
            vec![-1e308, 1e308, -1e308, 1e308],
        ] {
            let f = IsolationForest::fit(&data, 1, &params(50)).unwrap();
            assert!(f.n_nodes() > 50, "{data:?}: the trees split");
            check_fast_equals_general(&f, &data);
            for x in [-f64::MAX, 0.0, f64::MAX] {
                assert!(f.score_samples(&[x]).is_finite());
            }
            // Splits land strictly inside the range.
            let (min, max) = (-f64::MAX, f64::MAX);
            assert!(
                f.nodes
                    .iter()
                    .filter(|n| n.threshold.is_finite())
                    .all(|n| n.threshold >= min && n.threshold < max)
            );
            let p = ForestParams {
                contamination: Contamination::Fraction(0.25),
                ..params(20)
            };
            assert!(
                IsolationForest::fit(&data, 1, &p)
                    .unwrap()
                    .offset()
                    .is_finite()
            );
        }
        // Subnormals: the span is tiny but positive, and splits separate the values.
        let data = [5e-324, 0.0, 1e-320, 2e-310, -5e-324];
        let f = IsolationForest::fit(&data, 1, &params(50)).unwrap();
        check_fast_equals_general(&f, &data);
        assert!(f.n_nodes() > 50);
        // The draw itself: always in [min, max), whatever the span.
        let mut rng = StdRng::seed_from_u64(3);
        for (min, max) in [
            (-f64::MAX, f64::MAX),
            (-1e308, 1e308),
            (0.0, 5e-324),
            (1.0, 2.0),
        ] {
            for _ in 0..1000 {
                let t = draw_between(&mut rng, min, max);
                assert!(t >= min && t <= max, "{t} outside [{min}, {max}]");
            }
        }
    }

    #[test]
    fn one_constant_feature_is_never_split_on() {
        let mut data = blobs(300, 9);
        for row in data.chunks_exact_mut(2) {
            row[1] = 1.0;
        }
        let f = IsolationForest::fit(&data, 2, &params(20)).unwrap();
        assert!(
            f.nodes
                .iter()
                .enumerate()
                .all(|(i, n)| n.left as usize == i || n.feature == 0)
        );
    }

    #[test]
    fn duplicate_rows_and_tiny_training_sets() {
        // Duplicates form one leaf at the root.
        let f = IsolationForest::fit(&[1.0, 2.0, 1.0, 2.0], 2, &params(5)).unwrap();
        assert_eq!(f.n_nodes(), 5);
        assert_eq!(f.score_samples(&[1.0, 2.0]), -0.5);
        // Two distinct rows: one split, two single-row leaves at depth 1 = c(2).
        let f = IsolationForest::fit(&[0.0, 0.0, 1.0, 1.0], 2, &params(5)).unwrap();
        assert_eq!(f.max_samples(), 2);
        assert_eq!(f.n_nodes(), 15);
        assert_eq!(f.score_samples(&[0.0, 0.0]), -0.5);
        // One row: c(1) = 0, every record sits on the threshold.
        let f = IsolationForest::fit(&[4.0, 5.0], 2, &params(5)).unwrap();
        assert_eq!(f.score_samples(&[100.0, -3.0]), -0.5);
        assert_eq!(f.predict(&[100.0, -3.0]), 1);
    }

    #[test]
    fn refuses_bad_training_data_and_parameters() {
        let err = IsolationForest::fit(&[1.0, 2.0, f64::NAN, 4.0], 2, &params(5)).unwrap_err();
        assert!(matches!(
            err,
            ForestError::NotFinite {
                row: 1,
                feature: 0,
                ..
            }
        ));
        assert!(err.to_string().contains("NaN"));
        assert!(matches!(
            IsolationForest::fit(&[1.0, f64::INFINITY], 2, &params(5)),
            Err(ForestError::NotFinite {
                row: 0,
                feature: 1,
                ..
            })
        ));
        assert_eq!(
            IsolationForest::fit(&[], 2, &params(5)),
            Err(ForestError::Empty)
        );
        assert_eq!(
            IsolationForest::fit(&[1.0, 2.0, 3.0], 2, &params(5)),
            Err(ForestError::Shape {
                len: 3,
                n_features: 2
            })
        );
        assert_eq!(
            IsolationForest::fit(&[1.0], 0, &params(5)),
            Err(ForestError::NoFeatures)
        );
        assert_eq!(
            IsolationForest::fit(&[1.0], 1, &params(0)),
            Err(ForestError::NoTrees)
        );
        // A mistyped tree count is refused, not a capacity-overflow panic.
        assert_eq!(
            IsolationForest::fit(&[1.0], 1, &params(usize::MAX)),
            Err(ForestError::TooManyTrees(usize::MAX))
        );
        let p = ForestParams {
            contamination: Contamination::Fraction(0.6),
            ..params(5)
        };
        assert_eq!(
            IsolationForest::fit(&[1.0], 1, &p),
            Err(ForestError::Contamination(0.6))
        );
    }

    #[test]
    fn parameter_strings_round_trip() {
        assert_eq!("auto".parse(), Ok(MaxSamples::Auto));
        assert_eq!("500".parse(), Ok(MaxSamples::Count(500)));
        assert_eq!("0".parse::<MaxSamples>(), Err(ForestError::ZeroSamples));
        assert!("lots".parse::<MaxSamples>().is_err());
        assert_eq!("0.01".parse(), Ok(Contamination::Fraction(0.01)));
        assert_eq!("auto".parse(), Ok(Contamination::Auto));
        assert!("0".parse::<Contamination>().is_err());
        assert!("0.51".parse::<Contamination>().is_err());
        assert_eq!(MaxSamples::Count(12).to_string(), "12");
        assert_eq!(Contamination::Fraction(0.25).to_string(), "0.25");
        assert_eq!(MaxSamples::Count(1000).resolve(10), 10);
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let f = IsolationForest::fit(&blobs(300, 10), 2, &params(5)).unwrap();
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&f, config).unwrap();
        let (back, _): (IsolationForest, usize) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(back, f);

        let mut data = ForestData::from(f.clone());
        let internal = data
            .nodes
            .iter()
            .position(|n| n.threshold.is_finite())
            .unwrap();
        data.nodes[internal].left = data.nodes.len() as u32;
        assert!(IsolationForest::try_from(data).is_err());

        let mut data = ForestData::from(f.clone());
        data.nodes[0].feature = 2;
        assert!(IsolationForest::try_from(data).is_err());

        let refused = |data: ForestData| match IsolationForest::try_from(data) {
            Err(ForestError::Inconsistent(why)) => why,
            other => panic!("not refused as inconsistent: {:?}", other.map(|_| ())),
        };
        // A tree deeper than it says: walks of its stated height would stop at an inner node.
        let mut data = ForestData::from(f.clone());
        data.trees[0].height -= 1;
        assert!(refused(data).contains("deeper than its stated height"));
        // A split pointing back at its own subtree: a walk until a leaf would never end.
        let mut data = ForestData::from(f.clone());
        let root = data.trees[1].root as usize;
        data.nodes[root + 1].left = root as u32;
        assert!(refused(data).contains("a second time"));
        // Two trees sharing nodes.
        let mut data = ForestData::from(f);
        data.trees[1].root = data.trees[0].root;
        assert!(refused(data).contains("tree 1 reaches node"));
    }
}
