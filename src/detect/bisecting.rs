//! Bisecting k-means as Spark MLlib's `BisectingKMeans` defines it (Steinbach, Karypis &
//! Kumar, "A comparison of document clustering techniques", 2000; Spark's
//! `org.apache.spark.mllib.clustering.BisectingKMeans`): a binary tree of clusters grown top
//! down, whose leaves are the clusters.
//!
//! # Training (Spark's rules)
//!
//! The root holds every training row. Clusters are split level by level: at each level, of the
//! clusters made at the previous level (the *active* ones), those with at least
//! `min_divisible` rows and a positive cost (above `f64::EPSILON` x size, as Spark's
//! `MLUtils.EPSILON`) are divisible; when more are divisible than splits remain (k - leaves),
//! the largest are split first (ties: the earlier node). A cluster left out at one level stays
//! a leaf for good. A split starts two children at the parent's centre minus and plus a tiny
//! seeded perturbation (`1e-4 x |centre| x u`, u uniform in [0, 1) per feature, in the scaled
//! space, as Spark's `splitCenter`), then runs [`SPLIT_ROUNDS`] (20, Spark's default
//! `maxIterations`) rounds of 2-means on the parent's rows only: each row goes to the nearer
//! child (ties to the left, as Spark's `minBy`), each child moves to its rows' mean. The rows
//! are then assigned once more to the final centres, which gives the children's sizes and
//! costs; so a training row's cluster is exactly the leaf that scoring reaches.
//!
//! One departure from Spark: a split that leaves a child empty or does not lower the cost
//! (child costs summed against the parent's) is undone and the cluster stays a leaf; Spark
//! would keep a node with one child. It can only happen on degenerate data (e.g. rows
//! equidistant from both starting centres), and it keeps the invariant "each split lowers the
//! cost" true by construction.
//!
//! # Score
//!
//! The squared scaled distance ([`distance`]) to the **assigned** leaf: the one reached by
//! walking from the root and taking the nearer child at each level, as Spark's `predict` does. That is not always the nearest leaf. Higher is more anomalous; anomaly iff
//! `score > threshold`, decision `threshold - score`.
//!
//! # Why not smartcore
//!
//! smartcore has no bisecting k-means, and its `KMeans` cannot start from given centres (it
//! always seeds with k-means++), which each split needs; the small 2-means loop here shares
//! the distance and tie rule of [`crate::detect::kmeans`].

use std::cmp::Reverse;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use super::kmeans::{ClusterError, Scaling, ThresholdRule, check_data, distance, shares};

/// 2-means rounds per split (Spark's default `maxIterations`).
pub const SPLIT_ROUNDS: usize = 20;
/// `--min-divisible` by default (Spark's `minDivisibleClusterSize` default, 1).
pub const DEFAULT_MIN_DIVISIBLE: u64 = 1;
/// Spark stops at this many levels (its node indices are 64-bit).
const LEVEL_LIMIT: usize = 63;
/// Relative size of the perturbation that starts a split, as Spark's `splitCenter`.
const SPLIT_NOISE: f64 = 1e-4;
/// No leaf index: node `0` is the root and never anyone's child.
const NO_CHILD: u32 = 0;

/// One node of the tree, as the model file stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// In the features' units.
    pub centre: Vec<f64>,
    /// Training rows in the cluster.
    pub size: u64,
    /// Sum of its rows' squared scaled distances to `centre`.
    pub cost: f64,
    /// Indices of the left and right children in the node list; `None` for a leaf.
    pub children: Option<[u32; 2]>,
}

/// A trained bisecting k-means tree. Scoring allocates nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "BisectingParts", into = "BisectingParts")]
pub struct BisectingKMeans {
    d: usize,
    nodes: Vec<Node>,
    scaling: Scaling,
    threshold: f64,
    weights: Vec<f64>,
    /// Row-major node centres, for scoring.
    centres: Vec<f64>,
    /// Per node, `[left, right]`, or `[NO_CHILD; 2]` for a leaf.
    kids: Vec<[u32; 2]>,
    depth: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BisectingParts {
    d: u64,
    nodes: Vec<Node>,
    scaling: Scaling,
    threshold: f64,
}

impl From<BisectingKMeans> for BisectingParts {
    fn from(m: BisectingKMeans) -> Self {
        Self {
            d: m.d as u64,
            nodes: m.nodes,
            scaling: m.scaling,
            threshold: m.threshold,
        }
    }
}

impl TryFrom<BisectingParts> for BisectingKMeans {
    type Error = ClusterError;
    fn try_from(p: BisectingParts) -> Result<Self, Self::Error> {
        BisectingKMeans::new(p.d as usize, p.nodes, p.scaling, p.threshold)
    }
}

impl BisectingKMeans {
    /// Builds a tree from its nodes (root first), checking it is one: every child index after
    /// its parent and in range, every node but the root some node's child exactly once, every
    /// centre `d` finite values, the scaling `d` positive scales.
    pub fn new(
        d: usize,
        nodes: Vec<Node>,
        scaling: Scaling,
        threshold: f64,
    ) -> Result<Self, ClusterError> {
        let bad = |m: String| ClusterError::Inconsistent(m);
        if d == 0 || nodes.is_empty() {
            return Err(bad("no features or no nodes".into()));
        }
        if !threshold.is_finite() {
            return Err(bad("the threshold is not finite".into()));
        }
        scaling.check(d).map_err(bad)?;
        let mut parent_count = vec![0u32; nodes.len()];
        let mut depth = vec![0usize; nodes.len()];
        let mut kids = Vec::with_capacity(nodes.len());
        let mut centres = Vec::with_capacity(nodes.len() * d);
        for (i, node) in nodes.iter().enumerate() {
            if node.centre.len() != d || node.centre.iter().any(|v| !v.is_finite()) {
                return Err(bad(format!(
                    "node {i}: the centre is not {d} finite values"
                )));
            }
            centres.extend_from_slice(&node.centre);
            match node.children {
                None => kids.push([NO_CHILD; 2]),
                Some([l, r]) => {
                    for c in [l, r] {
                        let c = c as usize;
                        if c <= i || c >= nodes.len() {
                            return Err(bad(format!("node {i}: child {c} out of order or range")));
                        }
                        parent_count[c] += 1;
                        depth[c] = depth[i] + 1;
                    }
                    if l == r {
                        return Err(bad(format!("node {i}: both children are {l}")));
                    }
                    kids.push([l, r]);
                }
            }
        }
        if parent_count[0] != 0 || parent_count[1..].iter().any(|&n| n != 1) {
            return Err(bad(
                "a node is not reached exactly once from the root".into()
            ));
        }
        let weights = scaling.weights();
        Ok(Self {
            d,
            depth: depth.iter().copied().max().unwrap_or(0),
            nodes,
            scaling,
            threshold,
            weights,
            centres,
            kids,
        })
    }

    pub fn n_features(&self) -> usize {
        self.d
    }

    /// Every node, root first; children always come after their parent.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Indices (into [`nodes`](Self::nodes)) of the leaves, the clusters, in node order.
    pub fn leaves(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].children.is_none())
            .collect()
    }

    /// Levels below the root (0 for a lone root).
    pub fn depth(&self) -> usize {
        self.depth
    }

    pub fn scaling(&self) -> &Scaling {
        &self.scaling
    }

    /// In score units: anomaly iff `score > threshold`.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    fn centre(&self, node: usize) -> &[f64] {
        &self.centres[node * self.d..(node + 1) * self.d]
    }

    /// The leaf `x` walks down to (node index) and the score, its distance to that leaf.
    ///
    /// # Panics
    /// If `x.len() != n_features`.
    pub fn assign(&self, x: &[f64]) -> (usize, f64) {
        assert_eq!(x.len(), self.d, "record has the wrong feature count");
        let mut at = 0;
        let mut dist = None;
        loop {
            let [l, r] = self.kids[at];
            if l == NO_CHILD {
                let dist = dist.unwrap_or_else(|| distance(x, self.centre(0), &self.weights));
                return (at, dist);
            }
            let (l, r) = (l as usize, r as usize);
            let dl = distance(x, self.centre(l), &self.weights);
            let dr = distance(x, self.centre(r), &self.weights);
            (at, dist) = if dr < dl {
                (r, Some(dr))
            } else {
                (l, Some(dl))
            };
        }
    }

    /// Squared scaled distance to the assigned leaf; higher is more anomalous.
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

    /// Each feature's share of the score (see [`crate::detect::kmeans::KMeans::attribution`]).
    pub fn attribution(&self, x: &[f64]) -> Vec<f64> {
        let (leaf, _) = self.assign(x);
        shares(x, self.centre(leaf), &self.weights)
    }

    /// Trains a tree of at most `k` leaves on row-major `data` (`d` features) by Spark's rules
    /// (module docs) and sets the threshold by `rule`; also returns the cost (sum of training
    /// scores).
    ///
    /// Errors: bad data ([`check_data`]), k outside 1..=rows, `top:N` with N > rows.
    pub fn fit(
        data: &[f64],
        d: usize,
        k: usize,
        min_divisible: u64,
        scaling: Scaling,
        rule: ThresholdRule,
        seed: u64,
    ) -> Result<(Self, f64), ClusterError> {
        let rows = check_data(data, d)?;
        if k == 0 || k > rows {
            return Err(ClusterError::K { k, rows });
        }
        let w = scaling.weights();
        let nodes = grow(data, d, k, min_divisible, &w, seed);
        let model = Self::new(d, nodes, scaling, 0.0)?;
        let mut scores: Vec<f64> = data.chunks_exact(d).map(|x| model.score(x)).collect();
        let cost = scores.iter().sum();
        let threshold = rule.apply(&mut scores)?;
        Ok((Self { threshold, ..model }, cost))
    }
}

/// Grows the tree (module docs); returns its nodes, root first.
fn grow(data: &[f64], d: usize, k: usize, min_divisible: u64, w: &[f64], seed: u64) -> Vec<Node> {
    let rows = data.len() / d;
    let mut root = vec![0.0; d];
    super::kmeans::move_to_means(data, d, &vec![0; rows], &mut root);
    let cost = data.chunks_exact(d).map(|x| distance(x, &root, w)).sum();
    let mut nodes = vec![Node {
        centre: root,
        size: rows as u64,
        cost,
        children: None,
    }];
    // Each row's current cluster (a node index).
    let mut owner = vec![0usize; rows];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut active = vec![0usize];
    let mut needed = k - 1;
    let mut level = 1;
    while !active.is_empty() && needed > 0 && level < LEVEL_LIMIT {
        let mut divisible: Vec<usize> = active
            .iter()
            .copied()
            .filter(|&n| {
                let node = &nodes[n];
                node.size >= min_divisible && node.cost > f64::EPSILON * node.size as f64
            })
            .collect();
        if divisible.len() > needed {
            divisible.sort_by_key(|&n| (Reverse(nodes[n].size), n));
            divisible.truncate(needed);
            divisible.sort_unstable();
        }
        if divisible.is_empty() {
            break;
        }
        // slot[node] = position in `divisible`; centres[s] = [left, right] row-major.
        let mut slot = vec![usize::MAX; nodes.len()];
        let mut centres: Vec<[Vec<f64>; 2]> = Vec::with_capacity(divisible.len());
        for (s, &n) in divisible.iter().enumerate() {
            slot[n] = s;
            let c = &nodes[n].centre;
            let norm = c
                .iter()
                .zip(w)
                .map(|(v, w)| (v * w).powi(2))
                .sum::<f64>()
                .sqrt();
            let amount = SPLIT_NOISE * if norm > 0.0 { norm } else { 1.0 };
            let noise: Vec<f64> = (0..d).map(|_| rng.random::<f64>()).collect();
            let side = |sign: f64| -> Vec<f64> {
                c.iter()
                    .zip(&noise)
                    .zip(w)
                    .map(|((c, u), w)| c + sign * amount * u / w)
                    .collect()
            };
            centres.push([side(-1.0), side(1.0)]);
        }
        let side_of = |x: &[f64], pair: &[Vec<f64>; 2]| -> usize {
            usize::from(distance(x, &pair[1], w) < distance(x, &pair[0], w))
        };
        for _ in 0..SPLIT_ROUNDS {
            let mut sums = vec![[vec![0.0; d], vec![0.0; d]]; divisible.len()];
            let mut counts = vec![[0u64; 2]; divisible.len()];
            for (x, &o) in data.chunks_exact(d).zip(&owner) {
                let s = slot[o];
                if s == usize::MAX {
                    continue;
                }
                let side = side_of(x, &centres[s]);
                counts[s][side] += 1;
                for (acc, v) in sums[s][side].iter_mut().zip(x) {
                    *acc += v;
                }
            }
            for s in 0..divisible.len() {
                for side in 0..2 {
                    let n = counts[s][side];
                    if n > 0 {
                        for j in 0..d {
                            centres[s][side][j] = sums[s][side][j] / n as f64;
                        }
                    }
                }
            }
        }
        // Final assignment to the final centres: sizes and costs, as scoring will see them.
        let mut sides = vec![0u8; rows];
        let mut counts = vec![[0u64; 2]; divisible.len()];
        let mut costs = vec![[0.0f64; 2]; divisible.len()];
        for ((x, &o), side_out) in data.chunks_exact(d).zip(&owner).zip(&mut sides) {
            let s = slot[o];
            if s == usize::MAX {
                continue;
            }
            let side = side_of(x, &centres[s]);
            *side_out = side as u8;
            counts[s][side] += 1;
            costs[s][side] += distance(x, &centres[s][side], w);
        }
        let mut next = Vec::new();
        let mut child_of = vec![None; divisible.len()];
        for (s, &n) in divisible.iter().enumerate() {
            let lowers = costs[s][0] + costs[s][1] < nodes[n].cost;
            if counts[s][0] == 0 || counts[s][1] == 0 || !lowers {
                continue;
            }
            let l = nodes.len();
            let [left, right] = std::mem::take(&mut centres[s]);
            for (side, centre) in [left, right].into_iter().enumerate() {
                nodes.push(Node {
                    centre,
                    size: counts[s][side],
                    cost: costs[s][side],
                    children: None,
                });
            }
            nodes[n].children = Some([l as u32, l as u32 + 1]);
            child_of[s] = Some(l);
            next.extend([l, l + 1]);
            needed -= 1;
        }
        for (o, &side) in owner.iter_mut().zip(&sides) {
            let s = slot[*o];
            if s != usize::MAX
                && let Some(l) = child_of[s]
            {
                *o = l + usize::from(side);
            }
        }
        active = next;
        level += 1;
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::kmeans::ScaleMethod;
    use crate::detect::kmeans::tests::blobs;

    fn none() -> Scaling {
        Scaling::fit(ScaleMethod::None, &[], 2)
    }

    fn fit(data: &[f64], k: usize, seed: u64) -> BisectingKMeans {
        BisectingKMeans::fit(data, 2, k, 1, none(), ThresholdRule::Top(1), seed)
            .unwrap()
            .0
    }

    const SIX: [(f64, f64); 6] = [
        (0.0, 0.0),
        (10.0, 0.0),
        (0.0, 10.0),
        (10.0, 10.0),
        (20.0, 5.0),
        (-10.0, 5.0),
    ];

    #[test]
    fn invariants_hold_on_blobs_for_every_k() {
        let data = blobs(&SIX, 40, 1.5, 4);
        let rows = data.len() / 2;
        for k in 1..=12 {
            for seed in [0, 1] {
                let tree = fit(&data, k, seed);
                let leaves = tree.leaves();
                assert!(leaves.len() <= k, "k {k}: {} leaves", leaves.len());
                // Leaves partition the training data: every row walks to exactly one leaf, and
                // the leaves' sizes are those counts.
                let mut walked = vec![0u64; tree.nodes().len()];
                for x in data.chunks(2) {
                    walked[tree.assign(x).0] += 1;
                }
                for (i, node) in tree.nodes().iter().enumerate() {
                    if node.children.is_none() {
                        assert_eq!(walked[i], node.size, "k {k} leaf {i}");
                    } else {
                        assert_eq!(walked[i], 0);
                    }
                }
                assert_eq!(
                    leaves.iter().map(|&l| tree.nodes()[l].size).sum::<u64>(),
                    rows as u64
                );
                // Each split lowers the cost, and a parent's rows are its children's.
                for node in tree.nodes() {
                    if let Some([l, r]) = node.children {
                        let (l, r) = (&tree.nodes()[l as usize], &tree.nodes()[r as usize]);
                        assert!(l.cost + r.cost < node.cost, "k {k}");
                        assert_eq!(l.size + r.size, node.size);
                    }
                }
                // Enough structure in six blobs: up to 12 leaves are always reached.
                assert_eq!(leaves.len(), k, "k {k} seed {seed}");
            }
        }
    }

    #[test]
    fn same_seed_same_tree() {
        let data = blobs(&SIX, 30, 2.0, 8);
        assert_eq!(fit(&data, 7, 3), fit(&data, 7, 3));
        let bits = |t: &BisectingKMeans| {
            t.nodes()
                .iter()
                .flat_map(|n| n.centre.iter().map(|v| v.to_bits()))
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&fit(&data, 7, 3)), bits(&fit(&data, 7, 3)));
    }

    #[test]
    fn two_clear_blobs_split_into_those_blobs() {
        let data = blobs(&[(-5.0, 1.0), (5.0, -1.0)], 100, 0.5, 6);
        for seed in 0..5 {
            let tree = fit(&data, 2, seed);
            assert_eq!(tree.leaves().len(), 2);
            let leaf_of: Vec<usize> = data.chunks(2).map(|x| tree.assign(x).0).collect();
            assert!(leaf_of[..100].iter().all(|&l| l == leaf_of[0]));
            assert!(leaf_of[100..].iter().all(|&l| l == leaf_of[100]));
            assert_ne!(leaf_of[0], leaf_of[100]);
            assert_eq!(tree.depth(), 1);
        }
    }

    #[test]
    fn walks_to_the_nearer_child_not_the_nearest_leaf() {
        // Root's children at x = 0 and x = 10; the right child splits into 6 and 14.
        let node = |x: f64, children| Node {
            centre: vec![x, 0.0],
            size: 1,
            cost: 1.0,
            children,
        };
        let nodes = vec![
            node(5.0, Some([1, 2])),
            node(0.0, None),
            node(10.0, Some([3, 4])),
            node(6.0, None),
            node(14.0, None),
        ];
        let tree = BisectingKMeans::new(2, nodes, none(), 1.0).unwrap();
        // 5.1 is nearer 10 than 0, so it walks right and lands at 6; 4.9 is nearer 0 than 10,
        // so it walks left to 0 (24.01 away) although the leaf at 6 is nearer (1.21 away).
        assert_eq!(tree.assign(&[5.1, 0.0]).0, 3);
        let (leaf, score) = tree.assign(&[4.9, 0.0]);
        assert_eq!(leaf, 1);
        assert!((score - 24.01).abs() < 1e-9);
        assert_eq!(tree.depth(), 2);
        // Ties go left.
        assert_eq!(tree.assign(&[5.0, 0.0]).0, 1);
    }

    #[test]
    fn refuses_trees_that_are_not_trees() {
        let node = |children| Node {
            centre: vec![0.0, 0.0],
            size: 1,
            cost: 0.0,
            children,
        };
        let cases = [
            vec![node(Some([1, 1])), node(None)],
            vec![node(Some([0, 1])), node(None)],
            vec![node(Some([1, 5])), node(None)],
            vec![node(Some([1, 2])), node(None), node(None), node(None)],
            vec![
                node(Some([1, 2])),
                node(Some([2, 3])),
                node(None),
                node(None),
            ],
            vec![],
        ];
        for nodes in cases {
            assert!(
                BisectingKMeans::new(2, nodes.clone(), none(), 0.0).is_err(),
                "{nodes:?}"
            );
        }
        let mut bad_centre = vec![node(None)];
        bad_centre[0].centre[1] = f64::INFINITY;
        assert!(BisectingKMeans::new(2, bad_centre, none(), 0.0).is_err());
    }

    #[test]
    fn min_divisible_and_identical_rows_stop_splitting() {
        let data = blobs(&SIX, 10, 1.0, 1);
        // Nothing has 61 rows: the root is not divisible.
        let tree = BisectingKMeans::fit(&data, 2, 5, 61, none(), ThresholdRule::Top(1), 0)
            .unwrap()
            .0;
        assert_eq!(tree.leaves(), [0]);
        let same = [3.0; 20];
        let (tree, cost) =
            BisectingKMeans::fit(&same, 2, 4, 1, none(), ThresholdRule::Top(1), 0).unwrap();
        assert_eq!(tree.leaves().len(), 1);
        assert_eq!(cost, 0.0);
    }
}
