//! The model file and the loaded [`Model`] the detector scores with.
//!
//! A model file is, in order:
//!
//! | bytes | content |
//! | --- | --- |
//! | 8 | magic `ANOMALYD` |
//! | 4 | format version, little-endian `u32` ([`FORMAT_VERSION`]) |
//! | 4 | header length `h`, little-endian `u32` |
//! | 8 | payload length `p`, little-endian `u64` |
//! | h | header: [`ModelHeader`] as JSON, so `head -c` shows what a file holds |
//! | p | payload: the model in bincode 2 (standard configuration) |
//! | 32 | SHA-256 of every byte before it |
//!
//! The header's `kind` says what the payload is: `isolation_forest` ([`ModelHeader`] and an
//! [`IsolationForest`]), `kmeans` ([`ClusterHeader`] and a [`KMeans`]) or `bisecting_kmeans`
//! ([`ClusterHeader`] and a [`BisectingKMeans`]). The layout is the same for every kind, so
//! it is still format version 1: files written before the cluster kinds load as before, and
//! an older build refuses a cluster model as an unsupported kind, naming it.
//!
//! Loading checks these in that order, so each kind of damage gets its own error naming the
//! file. The checksum covers the whole file; the model's id (see [`Model::id`]) covers what
//! the model is, not when, from which path or by which build it was trained: the same data,
//! parameters and seed give the same id, and two files with the same id score identically.
//! The id is computed on loading, not stored, so files written before it changed load as
//! before (under their new id).
//!
//! Two ways to load: [`Model`] is the Isolation Forest the daemon scores with today (other
//! kinds are refused with [`ModelError::Kind`]); [`LoadedModel`] loads any kind behind one
//! [`Scorer`], with one meaning of the numbers: `decision` negative means anomalous.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::bisecting::BisectingKMeans;
use super::forest::{ForestParams, IsolationForest};
use super::kmeans::{KCost, KMeans, Scaling};
use super::quantile::percentile;

/// First bytes of every model file.
pub const MAGIC: [u8; 8] = *b"ANOMALYD";
/// The layout this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The Isolation Forest's `kind`.
pub const KIND_ISOLATION_FOREST: &str = "isolation_forest";
/// k-means' `kind` ([`KMeans`]).
pub const KIND_KMEANS: &str = "kmeans";
/// Bisecting k-means' `kind` ([`BisectingKMeans`]).
pub const KIND_BISECTING_KMEANS: &str = "bisecting_kmeans";
/// Hex digits of the identity digest used as a model's id.
const ID_LEN: usize = 12;
/// Prefixed to what the id digests, so that it can never equal the file's checksum or any
/// other SHA-256 of the same bytes.
const ID_DOMAIN: &[u8] = b"anomalyd model id 1\0";
/// Magic, version and the two lengths.
const PRELUDE_LEN: usize = 24;
const CHECKSUM_LEN: usize = 32;
/// Training ranges are these percentiles: wide enough to ignore a few wild values.
const RANGE_PERCENTILES: (f64, f64) = (0.5, 99.5);

/// Errors reading or writing a model file; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("model file {}: not an anomalyd model (wrong magic bytes)", path.display())]
    BadMagic { path: PathBuf },
    #[error(
        "model file {}: format version {found} is not supported (this build reads version {FORMAT_VERSION})",
        path.display()
    )]
    UnknownVersion { path: PathBuf, found: u32 },
    #[error("model file {}: truncated: {found} bytes, expected {expected}", path.display())]
    Truncated {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("model file {}: {extra} unexpected bytes after the checksum", path.display())]
    TrailingBytes { path: PathBuf, extra: u64 },
    #[error("model file {}: checksum mismatch: the file is corrupt", path.display())]
    Checksum { path: PathBuf },
    #[error("model file {}: unreadable header: {reason}", path.display())]
    Header { path: PathBuf, reason: String },
    #[error("model file {}: model kind {kind:?} is not supported", path.display())]
    Kind { path: PathBuf, kind: String },
    #[error("model file {}: unreadable payload: {reason}", path.display())]
    Payload { path: PathBuf, reason: String },
    #[error(
        "model file {}: the model has {found} features but {expected} are configured",
        path.display()
    )]
    FeatureCount {
        path: PathBuf,
        found: usize,
        expected: usize,
    },
    #[error("model file {}: cannot write: {reason}", path.display())]
    Write { path: PathBuf, reason: String },
}

impl ModelError {
    /// True when the file could not be found or opened, as opposed to being damaged.
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// What a model file says about itself; serialisable for status pages and reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelHeader {
    pub kind: String,
    pub feature_names: Vec<String>,
    /// Training rows.
    pub rows: u64,
    /// RFC 3339, UTC, seconds.
    pub trained_at: String,
    /// Where the training data came from, e.g. a file name or `synthetic:42`.
    pub source: String,
    pub params: ForestParams,
    /// The resolved `max_samples`.
    pub max_samples_used: usize,
    pub offset: f64,
    /// Per feature, the 0.5th and 99.5th percentiles of the training data.
    pub training_ranges: Vec<(f64, f64)>,
    /// The anomalyd version that wrote the file.
    pub written_by: String,
}

/// Everything about the training run that the forest itself does not hold.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingMeta {
    pub feature_names: Vec<String>,
    pub rows: u64,
    pub source: String,
    pub training_ranges: Vec<(f64, f64)>,
    pub trained_at: SystemTime,
}

impl TrainingMeta {
    /// Describes a row-major training set (`feature_names.len()` values per row), now.
    pub fn describe(data: &[f64], feature_names: Vec<String>, source: impl Into<String>) -> Self {
        let d = feature_names.len().max(1);
        let rows = data.len() / d;
        let mut column = Vec::with_capacity(rows);
        let training_ranges = (0..feature_names.len())
            .map(|f| {
                column.clear();
                column.extend(data.iter().skip(f).step_by(d).copied());
                let low = percentile(&mut column, RANGE_PERCENTILES.0);
                let high = percentile(&mut column, RANGE_PERCENTILES.1);
                (low, high)
            })
            .collect();
        Self {
            feature_names,
            rows: rows as u64,
            source: source.into(),
            training_ranges,
            trained_at: SystemTime::now(),
        }
    }
}

/// A loaded, verified model, ready to score. Cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Model {
    forest: IsolationForest,
    header: ModelHeader,
    path: PathBuf,
    id: String,
}

impl Model {
    /// Reads and verifies a model file: magic, version, length, checksum, then contents.
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        let bytes = fs::read(path).map_err(|source| ModelError::Read {
            path: path.into(),
            source,
        })?;
        Self::from_bytes(path, &bytes)
    }

    /// Verifies and decodes the bytes of a model file; `path` is only used in errors. Any kind
    /// other than `isolation_forest` is refused with [`ModelError::Kind`].
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Model, ModelError> {
        let (header_bytes, payload) = verify_frame(path, bytes)?;
        let kind = probe_kind(path, header_bytes)?;
        if kind != KIND_ISOLATION_FOREST {
            return Err(ModelError::Kind {
                path: path.into(),
                kind,
            });
        }
        decode_forest(path, header_bytes, payload)
    }

    /// Refuses a model whose feature count differs from what the configuration extracts.
    pub fn check_features(&self, expected: usize) -> Result<(), ModelError> {
        if self.n_features() == expected {
            Ok(())
        } else {
            Err(ModelError::FeatureCount {
                path: self.path.clone(),
                found: self.n_features(),
                expected,
            })
        }
    }

    /// The model's identity: 12 hex digits of a SHA-256 over the payload (the forest) and the
    /// header without its provenance (`trained_at`, `source`, `written_by`). The same data,
    /// parameters and seed give the same id, whenever, from whichever path and by whichever
    /// anomalyd version they were trained; any difference in what the model computes or
    /// reports (a tree, the offset, a parameter, a feature name, a training range, the row
    /// count) gives another.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn kind(&self) -> &str {
        &self.header.kind
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn n_features(&self) -> usize {
        self.forest.n_features()
    }

    pub fn feature_names(&self) -> &[String] {
        &self.header.feature_names
    }

    /// Subtracted from a score to get the decision function.
    pub fn offset(&self) -> f64 {
        self.forest.offset()
    }

    /// scikit-learn's `score_samples` for one record, in [-1, 0]; lower is more anomalous.
    /// Allocates nothing.
    ///
    /// # Panics
    /// If `x.len()` differs from [`n_features`](Self::n_features).
    pub fn score(&self, x: &[f64]) -> f64 {
        self.forest.score_samples(x)
    }

    /// Scores row-major `rows` (`n_features` values per row) into `out`, one per row.
    ///
    /// # Panics
    /// If `rows.len() != out.len() * n_features`.
    pub fn score_batch(&self, rows: &[f64], out: &mut [f64]) {
        self.forest.score_samples_batch(rows, out);
    }

    /// scikit-learn's `decision_function`: negative means anomalous.
    pub fn decision(&self, score: f64) -> f64 {
        score - self.offset()
    }

    /// `(p0.5, p99.5)` of `feature` in the training data.
    ///
    /// # Panics
    /// If `feature >= n_features`.
    pub fn training_range(&self, feature: usize) -> (f64, f64) {
        self.header.training_ranges[feature]
    }

    pub fn header(&self) -> &ModelHeader {
        &self.header
    }

    pub fn forest(&self) -> &IsolationForest {
        &self.forest
    }
}

/// What a k-means or bisecting k-means file says about itself (its `kind` is `kmeans` or
/// `bisecting_kmeans`); serialisable for status pages and reports. Scores are squared scaled
/// distances (see [`crate::detect::kmeans`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterHeader {
    pub kind: String,
    pub feature_names: Vec<String>,
    /// Training rows.
    pub rows: u64,
    /// RFC 3339, UTC, seconds.
    pub trained_at: String,
    /// Where the training data came from, e.g. a file name or `synthetic:42`.
    pub source: String,
    /// `--seed`: seeds k-means++ or the splits' perturbations.
    pub seed: u64,
    /// The feature scaling, applied at scoring.
    pub scaling: Scaling,
    /// The k trained: `--k N`, or the one the elbow kept.
    pub k: usize,
    /// Why this k, as a sentence (`--k 4` or the elbow's ratio).
    pub k_rule: String,
    /// `--elbow-ratio`, when the elbow chose k.
    pub elbow_ratio: Option<f64>,
    /// The cost (sum of training scores) of every k tried, k ascending.
    pub costs: Vec<KCost>,
    /// `--min-divisible`, bisecting k-means only.
    pub min_divisible: Option<u64>,
    /// Training rows per cluster: per centre (k-means) or per leaf in node order (bisecting).
    pub cluster_sizes: Vec<u64>,
    /// Anomaly iff score > threshold.
    pub threshold: f64,
    /// The rule that set it: `top:N` or `quantile:Q`.
    pub threshold_rule: String,
    /// Per feature, the 0.5th and 99.5th percentiles of the training data.
    pub training_ranges: Vec<(f64, f64)>,
    /// The anomalyd version that wrote the file.
    pub written_by: String,
}

impl ClusterHeader {
    /// What the id digests: the header without its provenance (as [`ModelHeader`]'s).
    fn identity(&self) -> Self {
        Self {
            trained_at: String::new(),
            source: String::new(),
            written_by: String::new(),
            ..self.clone()
        }
    }
}

/// A trained cluster model, as [`save_clusters`] takes it.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterModel {
    KMeans(KMeans),
    BisectingKMeans(BisectingKMeans),
}

impl ClusterModel {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::KMeans(_) => KIND_KMEANS,
            Self::BisectingKMeans(_) => KIND_BISECTING_KMEANS,
        }
    }

    fn n_features(&self) -> usize {
        match self {
            Self::KMeans(m) => m.n_features(),
            Self::BisectingKMeans(m) => m.n_features(),
        }
    }

    fn threshold(&self) -> f64 {
        match self {
            Self::KMeans(m) => m.threshold(),
            Self::BisectingKMeans(m) => m.threshold(),
        }
    }

    fn scaling(&self) -> &Scaling {
        match self {
            Self::KMeans(m) => m.scaling(),
            Self::BisectingKMeans(m) => m.scaling(),
        }
    }

    /// Training rows per cluster (per leaf, in node order, for bisecting).
    pub fn cluster_sizes(&self) -> Vec<u64> {
        match self {
            Self::KMeans(m) => m.sizes().to_vec(),
            Self::BisectingKMeans(m) => m.leaves().iter().map(|&l| m.nodes()[l].size).collect(),
        }
    }

    fn payload(&self) -> Result<Vec<u8>, String> {
        let config = bincode::config::standard();
        match self {
            Self::KMeans(m) => bincode::serde::encode_to_vec(m, config),
            Self::BisectingKMeans(m) => bincode::serde::encode_to_vec(m, config),
        }
        .map_err(|e| e.to_string())
    }
}

/// How a cluster model was trained, beyond what the model and [`TrainingMeta`] hold.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterTraining {
    pub seed: u64,
    /// The k trained.
    pub k: usize,
    /// Why this k, as a sentence.
    pub k_rule: String,
    pub elbow_ratio: Option<f64>,
    /// Every k tried and its cost, k ascending.
    pub costs: Vec<KCost>,
    /// Bisecting only.
    pub min_divisible: Option<u64>,
    /// `top:N` or `quantile:Q`.
    pub threshold_rule: String,
}

/// The bytes of a cluster model file and the id [`LoadedModel::load`] will give it.
pub fn encode_clusters(
    model: &ClusterModel,
    training: &ClusterTraining,
    meta: &TrainingMeta,
) -> Result<(Vec<u8>, String), String> {
    let d = model.n_features();
    if meta.feature_names.len() != d || meta.training_ranges.len() != d {
        return Err(format!(
            "the model has {d} features but {} names and {} ranges were given",
            meta.feature_names.len(),
            meta.training_ranges.len()
        ));
    }
    let header = ClusterHeader {
        kind: model.kind().into(),
        feature_names: meta.feature_names.clone(),
        rows: meta.rows,
        trained_at: humantime::format_rfc3339_seconds(meta.trained_at).to_string(),
        source: meta.source.clone(),
        seed: training.seed,
        scaling: model.scaling().clone(),
        k: training.k,
        k_rule: training.k_rule.clone(),
        elbow_ratio: training.elbow_ratio,
        costs: training.costs.clone(),
        min_divisible: training.min_divisible,
        cluster_sizes: model.cluster_sizes(),
        threshold: model.threshold(),
        threshold_rule: training.threshold_rule.clone(),
        training_ranges: meta.training_ranges.clone(),
        written_by: concat!("anomalyd ", env!("CARGO_PKG_VERSION")).into(),
    };
    let header = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    let payload = model.payload()?;
    // From the header as loading reads it back (see `encode_with_id`).
    let read_back: ClusterHeader = serde_json::from_slice(&header).map_err(|e| e.to_string())?;
    check_cluster_agreement(model, &read_back)?;
    let id = model_id(&read_back.identity(), &payload)?;
    Ok((frame(&header, &payload)?, id))
}

/// Writes a k-means or bisecting k-means model file atomically (as [`save`]); returns its id.
pub fn save_clusters(
    path: &Path,
    model: &ClusterModel,
    training: &ClusterTraining,
    meta: &TrainingMeta,
) -> Result<String, ModelError> {
    let (bytes, id) = encode_clusters(model, training, meta).map_err(write_error(path))?;
    write_atomically(path, &bytes)?;
    Ok(id)
}

/// Header and payload of a cluster model must tell the same story.
fn check_cluster_agreement(model: &ClusterModel, header: &ClusterHeader) -> Result<(), String> {
    let d = model.n_features();
    if header.feature_names.len() != d || header.training_ranges.len() != d {
        return Err(format!(
            "the model has {d} features, the header names {} and has {} ranges",
            header.feature_names.len(),
            header.training_ranges.len()
        ));
    }
    // The header's floats went through JSON, whose round trip need not give the same bits;
    // compare them with the model's after the same trip.
    let via_json = |v: f64| {
        serde_json::to_string(&v)
            .ok()
            .and_then(|t| serde_json::from_str::<f64>(&t).ok())
            .map(f64::to_bits)
    };
    let same = |a: f64, b: f64| via_json(b).is_some_and(|b| a.to_bits() == b);
    let scaling = model.scaling();
    let same_scaling = header.scaling.method == scaling.method
        && header.scaling.scale.len() == scaling.scale.len()
        && header
            .scaling
            .scale
            .iter()
            .zip(&scaling.scale)
            .all(|(&a, &b)| same(a, b));
    if header.kind != model.kind()
        || !same(header.threshold, model.threshold())
        || !same_scaling
        || header.cluster_sizes != model.cluster_sizes()
        || header.cluster_sizes.len() > header.k
    {
        return Err(
            "header and model disagree on the kind, threshold, scaling or cluster sizes".into(),
        );
    }
    Ok(())
}

/// Any kind of model, ready to score: one meaning of the numbers for every kind.
///
/// - `score`: the model's native unit. Isolation Forest: scikit-learn's `score_samples`, in
///   [-1, 0], lower is more anomalous. k-means kinds: squared scaled distance to the assigned
///   centre, >= 0, higher is more anomalous.
/// - `decision`: negative means anomalous. Isolation Forest: `score - offset` (scikit-learn's
///   `decision_function`); k-means kinds: `threshold - score`.
#[derive(Debug, Clone, PartialEq)]
pub enum Scorer {
    IsolationForest(IsolationForest),
    KMeans(KMeans),
    BisectingKMeans(BisectingKMeans),
}

impl Scorer {
    /// `isolation_forest`, `kmeans` or `bisecting_kmeans`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::IsolationForest(_) => KIND_ISOLATION_FOREST,
            Self::KMeans(_) => KIND_KMEANS,
            Self::BisectingKMeans(_) => KIND_BISECTING_KMEANS,
        }
    }

    pub fn n_features(&self) -> usize {
        match self {
            Self::IsolationForest(m) => m.n_features(),
            Self::KMeans(m) => m.n_features(),
            Self::BisectingKMeans(m) => m.n_features(),
        }
    }

    /// The record's score in the model's native unit. Allocates nothing.
    ///
    /// # Panics
    /// If `x.len()` differs from [`n_features`](Self::n_features).
    #[inline]
    pub fn score(&self, x: &[f64]) -> f64 {
        match self {
            Self::IsolationForest(m) => m.score_samples(x),
            Self::KMeans(m) => m.score(x),
            Self::BisectingKMeans(m) => m.score(x),
        }
    }

    /// Scores row-major `rows` (`n_features` values per row) into `out`, one per row.
    ///
    /// # Panics
    /// If `rows.len() != out.len() * n_features`.
    pub fn score_batch(&self, rows: &[f64], out: &mut [f64]) {
        let d = self.n_features();
        assert_eq!(rows.len(), out.len() * d, "rows and scores differ in count");
        match self {
            Self::IsolationForest(m) => m.score_samples_batch(rows, out),
            _ => {
                for (x, s) in rows.chunks_exact(d).zip(out) {
                    *s = self.score(x);
                }
            }
        }
    }

    /// Where `decision` is 0, in score units: the forest's offset, the k-means threshold.
    pub fn threshold(&self) -> f64 {
        match self {
            Self::IsolationForest(m) => m.offset(),
            Self::KMeans(m) => m.threshold(),
            Self::BisectingKMeans(m) => m.threshold(),
        }
    }

    /// True when a higher score is more anomalous (the k-means kinds), false when lower is
    /// (the Isolation Forest).
    pub fn higher_is_anomalous(&self) -> bool {
        !matches!(self, Self::IsolationForest(_))
    }

    /// The decision for a score: negative means anomalous (see the type's docs).
    #[inline]
    pub fn decision(&self, score: f64) -> f64 {
        match self {
            Self::IsolationForest(m) => m.decision(score),
            Self::KMeans(m) => m.decision(score),
            Self::BisectingKMeans(m) => m.decision(score),
        }
    }

    /// `decision(score) < 0`: for the k-means kinds, `score > threshold`.
    #[inline]
    pub fn is_anomaly(&self, score: f64) -> bool {
        self.decision(score) < 0.0
    }

    /// Each feature's share of why `x` scored as it did, summing to 1 (or all 0): for the
    /// forest, which features isolated it ([`IsolationForest::attribution`]); for the k-means
    /// kinds, each feature's part of the squared distance to the assigned centre.
    ///
    /// # Panics
    /// If `x.len()` differs from [`n_features`](Self::n_features).
    pub fn attribution(&self, x: &[f64]) -> Vec<f64> {
        match self {
            Self::IsolationForest(m) => m.attribution(x),
            Self::KMeans(m) => m.attribution(x),
            Self::BisectingKMeans(m) => m.attribution(x),
        }
    }
}

/// A header of any kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AnyHeader {
    IsolationForest(ModelHeader),
    Clusters(ClusterHeader),
}

impl AnyHeader {
    pub fn kind(&self) -> &str {
        match self {
            Self::IsolationForest(h) => &h.kind,
            Self::Clusters(h) => &h.kind,
        }
    }

    pub fn feature_names(&self) -> &[String] {
        match self {
            Self::IsolationForest(h) => &h.feature_names,
            Self::Clusters(h) => &h.feature_names,
        }
    }

    /// Training rows.
    pub fn rows(&self) -> u64 {
        match self {
            Self::IsolationForest(h) => h.rows,
            Self::Clusters(h) => h.rows,
        }
    }

    /// RFC 3339, UTC, seconds.
    pub fn trained_at(&self) -> &str {
        match self {
            Self::IsolationForest(h) => &h.trained_at,
            Self::Clusters(h) => &h.trained_at,
        }
    }

    pub fn source(&self) -> &str {
        match self {
            Self::IsolationForest(h) => &h.source,
            Self::Clusters(h) => &h.source,
        }
    }

    /// Per feature, the 0.5th and 99.5th percentiles of the training data.
    pub fn training_ranges(&self) -> &[(f64, f64)] {
        match self {
            Self::IsolationForest(h) => &h.training_ranges,
            Self::Clusters(h) => &h.training_ranges,
        }
    }
}

/// A loaded, verified model of any kind (see [`Scorer`] for what its numbers mean). Cheap to
/// share behind an `Arc`. Loading gives every kind the same guarantees: magic, version,
/// length and checksum checked, a known kind, a payload that decodes whole, is a valid model
/// and agrees with its header.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    scorer: Scorer,
    header: AnyHeader,
    path: PathBuf,
    id: String,
}

impl LoadedModel {
    /// Reads and verifies a model file of any kind.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes = fs::read(path).map_err(|source| ModelError::Read {
            path: path.into(),
            source,
        })?;
        Self::from_bytes(path, &bytes)
    }

    /// Verifies and decodes the bytes of a model file of any kind; `path` is only used in
    /// errors. An unknown kind is [`ModelError::Kind`].
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, ModelError> {
        let (header_bytes, payload) = verify_frame(path, bytes)?;
        let kind = probe_kind(path, header_bytes)?;
        if kind == KIND_ISOLATION_FOREST {
            return decode_forest(path, header_bytes, payload).map(Self::from);
        }
        let model = match kind.as_str() {
            KIND_KMEANS => ClusterModel::KMeans(decode_payload(path, payload)?),
            KIND_BISECTING_KMEANS => ClusterModel::BisectingKMeans(decode_payload(path, payload)?),
            _ => {
                return Err(ModelError::Kind {
                    path: path.into(),
                    kind,
                });
            }
        };
        let header: ClusterHeader =
            serde_json::from_slice(header_bytes).map_err(|e| header_error(path)(e.to_string()))?;
        check_cluster_agreement(&model, &header).map_err(payload_error(path))?;
        let id = model_id(&header.identity(), payload).map_err(header_error(path))?;
        let scorer = match model {
            ClusterModel::KMeans(m) => Scorer::KMeans(m),
            ClusterModel::BisectingKMeans(m) => Scorer::BisectingKMeans(m),
        };
        Ok(Self {
            scorer,
            header: AnyHeader::Clusters(header),
            path: path.into(),
            id,
        })
    }

    /// Refuses a model whose feature count differs from what the configuration extracts.
    pub fn check_features(&self, expected: usize) -> Result<(), ModelError> {
        if self.n_features() == expected {
            Ok(())
        } else {
            Err(ModelError::FeatureCount {
                path: self.path.clone(),
                found: self.n_features(),
                expected,
            })
        }
    }

    /// 12 hex digits over the payload and the header without provenance (see [`Model::id`]).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn kind(&self) -> &'static str {
        self.scorer.kind()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn n_features(&self) -> usize {
        self.scorer.n_features()
    }

    pub fn feature_names(&self) -> &[String] {
        self.header.feature_names()
    }

    pub fn header(&self) -> &AnyHeader {
        &self.header
    }

    pub fn scorer(&self) -> &Scorer {
        &self.scorer
    }

    /// See [`Scorer::score`].
    pub fn score(&self, x: &[f64]) -> f64 {
        self.scorer.score(x)
    }

    /// See [`Scorer::score_batch`].
    pub fn score_batch(&self, rows: &[f64], out: &mut [f64]) {
        self.scorer.score_batch(rows, out)
    }

    /// See [`Scorer::decision`]: negative means anomalous.
    pub fn decision(&self, score: f64) -> f64 {
        self.scorer.decision(score)
    }

    /// See [`Scorer::is_anomaly`].
    pub fn is_anomaly(&self, score: f64) -> bool {
        self.scorer.is_anomaly(score)
    }

    /// See [`Scorer::threshold`].
    pub fn threshold(&self) -> f64 {
        self.scorer.threshold()
    }

    /// See [`Scorer::attribution`].
    pub fn attribution(&self, x: &[f64]) -> Vec<f64> {
        self.scorer.attribution(x)
    }

    /// `(p0.5, p99.5)` of `feature` in the training data.
    ///
    /// # Panics
    /// If `feature >= n_features`.
    pub fn training_range(&self, feature: usize) -> (f64, f64) {
        self.header.training_ranges()[feature]
    }
}

impl From<Model> for LoadedModel {
    fn from(m: Model) -> Self {
        Self {
            scorer: Scorer::IsolationForest(m.forest),
            header: AnyHeader::IsolationForest(m.header),
            path: m.path,
            id: m.id,
        }
    }
}

/// Checks magic, version, lengths and checksum; returns the header's and the payload's bytes.
fn verify_frame<'a>(path: &Path, bytes: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), ModelError> {
    let path_buf = || path.to_path_buf();
    let truncated = |expected: u64| ModelError::Truncated {
        path: path.into(),
        found: bytes.len() as u64,
        expected,
    };
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(ModelError::BadMagic { path: path_buf() });
    }
    if bytes.len() < PRELUDE_LEN {
        return Err(truncated((PRELUDE_LEN + CHECKSUM_LEN) as u64));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(ModelError::UnknownVersion {
            path: path_buf(),
            found: version,
        });
    }
    let header_len = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as u64;
    let payload_len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let expected = (PRELUDE_LEN as u64 + CHECKSUM_LEN as u64)
        .saturating_add(header_len)
        .saturating_add(payload_len);
    let found = bytes.len() as u64;
    if found < expected {
        return Err(truncated(expected));
    }
    if found > expected {
        return Err(ModelError::TrailingBytes {
            path: path_buf(),
            extra: found - expected,
        });
    }
    let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if Sha256::digest(body).as_slice() != checksum {
        return Err(ModelError::Checksum { path: path_buf() });
    }
    let header_end = PRELUDE_LEN + header_len as usize;
    Ok((&body[PRELUDE_LEN..header_end], &body[header_end..]))
}

/// The header's `kind`, read before the rest so that each kind parses its own header.
fn probe_kind(path: &Path, header: &[u8]) -> Result<String, ModelError> {
    #[derive(Deserialize)]
    struct Probe {
        kind: String,
    }
    serde_json::from_slice::<Probe>(header)
        .map(|p| p.kind)
        .map_err(|e| ModelError::Header {
            path: path.into(),
            reason: e.to_string(),
        })
}

fn header_error(path: &Path) -> impl Fn(String) -> ModelError + '_ {
    move |reason| ModelError::Header {
        path: path.into(),
        reason,
    }
}

fn payload_error(path: &Path) -> impl Fn(String) -> ModelError + '_ {
    move |reason| ModelError::Payload {
        path: path.into(),
        reason,
    }
}

/// Decodes a bincode payload that must be used whole.
fn decode_payload<T: serde::de::DeserializeOwned>(
    path: &Path,
    payload: &[u8],
) -> Result<T, ModelError> {
    let (value, used): (T, usize) =
        bincode::serde::decode_from_slice(payload, bincode::config::standard())
            .map_err(|e| payload_error(path)(e.to_string()))?;
    if used != payload.len() {
        return Err(payload_error(path)(format!(
            "{used} of {} bytes decoded",
            payload.len()
        )));
    }
    Ok(value)
}

fn decode_forest(path: &Path, header_bytes: &[u8], payload: &[u8]) -> Result<Model, ModelError> {
    let header: ModelHeader =
        serde_json::from_slice(header_bytes).map_err(|e| header_error(path)(e.to_string()))?;
    let forest: IsolationForest = decode_payload(path, payload)?;
    check_agreement(&forest, &header).map_err(payload_error(path))?;
    let id = model_id(&header.identity(), payload).map_err(header_error(path))?;
    Ok(Model {
        forest,
        header,
        path: path.into(),
        id,
    })
}

/// A payload that decodes but contradicts its header is as untrustworthy as a bad checksum.
fn check_agreement(forest: &IsolationForest, header: &ModelHeader) -> Result<(), String> {
    let d = forest.n_features();
    if header.feature_names.len() != d || header.training_ranges.len() != d {
        return Err(format!(
            "the forest has {d} features, the header names {} and has {} ranges",
            header.feature_names.len(),
            header.training_ranges.len()
        ));
    }
    if header.offset.to_bits() != forest.offset().to_bits() || header.params != *forest.params() {
        return Err("header and forest disagree on parameters or offset".into());
    }
    Ok(())
}

/// The id of a model whose header, provenance blanked (see [`ModelHeader::identity`]), is
/// `identity` and whose payload is `payload` (see [`Model::id`]). serde_json writes a struct's
/// fields in declaration order, so the same header always gives the same bytes.
fn model_id<H: Serialize>(identity: &H, payload: &[u8]) -> Result<String, String> {
    let identity = serde_json::to_vec(identity).map_err(|e| e.to_string())?;
    let mut hasher = Sha256::new();
    hasher.update(ID_DOMAIN);
    // Lengths first, so that no header/payload split of the same bytes collides.
    hasher.update((identity.len() as u64).to_le_bytes());
    hasher.update(&identity);
    hasher.update((payload.len() as u64).to_le_bytes());
    hasher.update(payload);
    let mut hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    hex.truncate(ID_LEN);
    Ok(hex)
}

impl ModelHeader {
    /// The header with what says when, where from and by which build it was trained blanked:
    /// what the id digests.
    fn identity(&self) -> Self {
        Self {
            trained_at: String::new(),
            source: String::new(),
            written_by: String::new(),
            ..self.clone()
        }
    }
}

/// The bytes of a model file for `forest`; see the module docs for the layout.
pub fn encode(forest: &IsolationForest, meta: &TrainingMeta) -> Result<Vec<u8>, String> {
    encode_with_id(forest, meta).map(|(bytes, _)| bytes)
}

/// [`encode`], and the id [`Model::load`] will give the file.
fn encode_with_id(
    forest: &IsolationForest,
    meta: &TrainingMeta,
) -> Result<(Vec<u8>, String), String> {
    let d = forest.n_features();
    if meta.feature_names.len() != d || meta.training_ranges.len() != d {
        return Err(format!(
            "the forest has {d} features but {} names and {} ranges were given",
            meta.feature_names.len(),
            meta.training_ranges.len()
        ));
    }
    let header = ModelHeader {
        kind: KIND_ISOLATION_FOREST.into(),
        feature_names: meta.feature_names.clone(),
        rows: meta.rows,
        trained_at: humantime::format_rfc3339_seconds(meta.trained_at).to_string(),
        source: meta.source.clone(),
        params: *forest.params(),
        max_samples_used: forest.max_samples(),
        offset: forest.offset(),
        training_ranges: meta.training_ranges.clone(),
        written_by: concat!("anomalyd ", env!("CARGO_PKG_VERSION")).into(),
    };
    let header = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    let payload = bincode::serde::encode_to_vec(forest, bincode::config::standard())
        .map_err(|e| e.to_string())?;
    // From the header as loading will read it back: a float's JSON round trip need not give
    // the same bits, and the id must be the one `Model::load` computes.
    let read_back: ModelHeader = serde_json::from_slice(&header).map_err(|e| e.to_string())?;
    let id = model_id(&read_back.identity(), &payload)?;
    Ok((frame(&header, &payload)?, id))
}

/// Prelude, header, payload and checksum: the bytes of a model file.
fn frame(header: &[u8], payload: &[u8]) -> Result<Vec<u8>, String> {
    let header_len = u32::try_from(header.len()).map_err(|_| "header too large".to_string())?;
    let mut bytes = Vec::with_capacity(PRELUDE_LEN + header.len() + payload.len() + CHECKSUM_LEN);
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&header_len.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(payload);
    let checksum = Sha256::digest(&bytes);
    bytes.extend_from_slice(checksum.as_slice());
    Ok(bytes)
}

/// Writes a model file atomically (temporary file in the same directory, fsync, rename), so a
/// detector reloading it never sees half a file. Returns the model id.
pub fn save(
    path: &Path,
    forest: &IsolationForest,
    meta: &TrainingMeta,
) -> Result<String, ModelError> {
    let (bytes, id) = encode_with_id(forest, meta).map_err(write_error(path))?;
    write_atomically(path, &bytes)?;
    Ok(id)
}

fn write_error(path: &Path) -> impl Fn(String) -> ModelError + '_ {
    move |reason| ModelError::Write {
        path: path.into(),
        reason,
    }
}

/// Temporary file in the same directory, fsync, rename, then (best effort) fsync the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let file_name = path
        .file_name()
        .ok_or_else(|| write_error(path)("not a file path".into()))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp = path.with_file_name(temp_name);
    let result = (|| -> io::Result<()> {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        // Make the rename itself durable; not every platform can open a directory, so this is
        // best effort.
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && let Ok(dir) = File::open(dir)
        {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        return Err(write_error(path)(e.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::forest::{Contamination, MaxSamples};

    fn trained() -> (IsolationForest, TrainingMeta) {
        let data: Vec<f64> = (0..600).map(|i| ((i * 37) % 101) as f64 / 10.0).collect();
        let params = ForestParams {
            n_estimators: 10,
            max_samples: MaxSamples::Count(64),
            contamination: Contamination::Fraction(0.05),
            random_state: 3,
        };
        let forest = IsolationForest::fit(&data, 3, &params).unwrap();
        let meta = TrainingMeta::describe(&data, vec!["a".into(), "b".into(), "c".into()], "test");
        (forest, meta)
    }

    fn saved() -> (tempfile::TempDir, PathBuf, Vec<u8>, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.iforest");
        let (forest, meta) = trained();
        let id = save(&path, &forest, &meta).unwrap();
        let bytes = fs::read(&path).unwrap();
        (dir, path, bytes, id)
    }

    #[test]
    fn model_is_send_and_sync() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Model>();
        shareable::<LoadedModel>();
    }

    #[test]
    fn save_then_load_scores_identically() {
        let (_dir, path, bytes, id) = saved();
        let (forest, meta) = trained();
        let model = Model::load(&path).unwrap();
        assert_eq!(model.id(), id);
        assert_eq!(id.len(), 12);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(model.kind(), "isolation_forest");
        assert_eq!(model.path(), path);
        assert_eq!(model.n_features(), 3);
        assert_eq!(model.feature_names(), ["a", "b", "c"]);
        assert_eq!(model.offset(), forest.offset());
        assert_eq!(model.header().rows, 200);
        assert_eq!(model.header().source, "test");
        assert_eq!(model.training_range(1), meta.training_ranges[1]);
        assert_eq!(model.forest(), &forest);
        let x = [1.0, 5.0, 9.5];
        assert_eq!(model.score(&x), forest.score_samples(&x));
        assert_eq!(
            model.decision(model.score(&x)),
            forest.decision(forest.score_samples(&x))
        );
        let mut out = [0.0; 2];
        model.score_batch(&[1.0, 5.0, 9.5, 0.0, 0.0, 0.0], &mut out);
        assert_eq!(out[0], model.score(&x));
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        assert_eq!(bytes[..8], MAGIC);
    }

    #[test]
    fn the_id_covers_the_model_not_its_provenance() {
        let dir = tempfile::tempdir().unwrap();
        let save_as = |name: &str, forest: &IsolationForest, meta: &TrainingMeta| {
            let path = dir.path().join(name);
            let id = save(&path, forest, meta).unwrap();
            let model = Model::load(&path).unwrap();
            assert_eq!(model.id(), id, "save and load agree");
            (id, fs::read(&path).unwrap())
        };
        let (forest, meta) = trained();
        let (id, bytes) = save_as("a", &forest, &meta);

        // Another time, another source path, another build: the same model.
        let later = TrainingMeta {
            trained_at: meta.trained_at + std::time::Duration::from_secs(86_400),
            source: "elsewhere/test.csv".into(),
            ..meta.clone()
        };
        let (same, later_bytes) = save_as("b", &forest, &later);
        assert_eq!(same, id);
        assert_ne!(
            later_bytes, bytes,
            "the file still records when and from where"
        );
        let mut other_build = bytes.clone();
        let version = concat!("anomalyd ", env!("CARGO_PKG_VERSION")).as_bytes();
        let at = other_build
            .windows(version.len())
            .position(|w| w == version)
            .unwrap();
        other_build[at + version.len() - 1] ^= 1; // e.g. 0.1.0 -> 0.1.1
        let body = other_build.len() - CHECKSUM_LEN;
        let sum = Sha256::digest(&other_build[..body]);
        other_build[body..].copy_from_slice(sum.as_slice());
        assert_eq!(
            Model::from_bytes(Path::new("c"), &other_build)
                .unwrap()
                .id(),
            id
        );

        // Anything that changes what the model computes or reports changes the id.
        let reseeded = IsolationForest::fit(
            &(0..600)
                .map(|i| ((i * 37) % 101) as f64 / 10.0)
                .collect::<Vec<_>>(),
            3,
            &ForestParams {
                random_state: 4,
                ..*forest.params()
            },
        )
        .unwrap();
        let mut renamed = meta.clone();
        renamed.feature_names[0] = "z".into();
        let mut ranged = meta.clone();
        ranged.training_ranges[2].1 += 1.0;
        let ids = [
            id.clone(),
            save_as("d", &reseeded, &meta).0,
            save_as("e", &forest, &renamed).0,
            save_as("f", &forest, &ranged).0,
        ];
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "{ids:?}");
    }

    #[test]
    fn the_checksum_still_covers_the_training_time() {
        let (_dir, path, bytes, _) = saved();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let at = text.find("\"trained_at\":\"").unwrap() + 14;
        let mut edited = bytes.clone();
        edited[at] = if edited[at] == b'1' { b'2' } else { b'1' };
        assert!(matches!(
            Model::from_bytes(&path, &edited),
            Err(ModelError::Checksum { .. })
        ));
    }

    #[test]
    fn training_ranges_are_the_outer_percentiles() {
        let data: Vec<f64> = (0..=1000).map(f64::from).collect();
        let meta = TrainingMeta::describe(&data, vec!["x".into()], "t");
        assert_eq!(meta.rows, 1001);
        assert_eq!(meta.training_ranges, vec![(5.0, 995.0)]);
    }

    #[test]
    fn feature_count_mismatch_names_the_file() {
        let (_dir, path, _, _) = saved();
        let model = Model::load(&path).unwrap();
        assert!(model.check_features(3).is_ok());
        let err = model.check_features(2).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("3 features but 2"), "{err}");
    }

    #[test]
    fn refuses_damaged_files_with_specific_errors() {
        let (_dir, path, bytes, _) = saved();
        let load = |b: &[u8]| Model::from_bytes(&path, b).unwrap_err();

        let mut wrong_magic = bytes.clone();
        wrong_magic[0] = b'X';
        assert!(matches!(load(&wrong_magic), ModelError::BadMagic { .. }));
        assert!(matches!(load(b"PK\x03\x04"), ModelError::BadMagic { .. }));

        let mut future = bytes.clone();
        future[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert!(matches!(
            load(&future),
            ModelError::UnknownVersion { found: 2, .. }
        ));

        for cut in [0, 5, 20, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                matches!(load(&bytes[..cut]), ModelError::Truncated { .. }),
                "cut at {cut}"
            );
        }

        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            load(&longer),
            ModelError::TrailingBytes { extra: 1, .. }
        ));

        let mut flipped = bytes.clone();
        let middle = bytes.len() - 100;
        flipped[middle] ^= 1;
        let err = load(&flipped);
        assert!(matches!(err, ModelError::Checksum { .. }));
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn missing_file_is_reported_as_missing() {
        let err = Model::load(Path::new("/nonexistent/model.iforest")).unwrap_err();
        assert!(err.is_missing());
        assert!(err.to_string().contains("/nonexistent/model.iforest"));
    }

    #[test]
    fn refuses_other_kinds_even_with_a_valid_checksum() {
        let (forest, meta) = trained();
        let bytes = encode(&forest, &meta).unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        assert!(text.contains("\"kind\":\"isolation_forest\""));
        // Same length kind name, checksum recomputed.
        let pos = bytes
            .windows(16)
            .position(|w| w == b"isolation_forest")
            .unwrap();
        let mut other = bytes[..bytes.len() - CHECKSUM_LEN].to_vec();
        other[pos..pos + 16].copy_from_slice(b"isolation_trees_");
        let sum = Sha256::digest(&other);
        other.extend_from_slice(sum.as_slice());
        let err = Model::from_bytes(Path::new("m"), &other).unwrap_err();
        assert!(matches!(err, ModelError::Kind { .. }), "{err}");
    }

    #[test]
    fn refuses_to_save_with_mismatched_names() {
        let (forest, mut meta) = trained();
        meta.feature_names.pop();
        let dir = tempfile::tempdir().unwrap();
        let err = save(&dir.path().join("m"), &forest, &meta).unwrap_err();
        assert!(matches!(err, ModelError::Write { .. }));
    }

    /// Both cluster kinds trained on three blobs, with their training metadata and data.
    fn cluster_models() -> Vec<(ClusterModel, ClusterTraining, TrainingMeta, Vec<f64>)> {
        use crate::detect::kmeans::{ScaleMethod, ThresholdRule, tests::blobs};
        let data = blobs(&[(0.0, 0.0), (6.0, 1.0), (2.0, 8.0)], 40, 0.7, 12);
        let scaling = Scaling::fit(ScaleMethod::Standard, &data, 2);
        let meta = TrainingMeta::describe(&data, vec!["p".into(), "q".into()], "blobs");
        let training = |min_divisible| ClusterTraining {
            seed: 5,
            k: 3,
            k_rule: "fixed: --k 3".into(),
            elbow_ratio: None,
            costs: vec![KCost { k: 3, cost: 1.5 }],
            min_divisible,
            threshold_rule: "top:4".into(),
        };
        let rule = ThresholdRule::Top(4);
        let km = KMeans::fit(&data, 2, 3, scaling.clone(), rule, 5)
            .unwrap()
            .0;
        let bk = BisectingKMeans::fit(&data, 2, 3, 1, scaling, rule, 5)
            .unwrap()
            .0;
        vec![
            (
                ClusterModel::KMeans(km),
                training(None),
                meta.clone(),
                data.clone(),
            ),
            (
                ClusterModel::BisectingKMeans(bk),
                training(Some(1)),
                meta,
                data,
            ),
        ]
    }

    /// Rewrites one JSON header field of a cluster file and fixes the lengths and checksum, so
    /// only the content check can refuse it.
    fn with_header(bytes: &[u8], edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
        let h = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
        let mut header: serde_json::Value = serde_json::from_slice(&bytes[24..24 + h]).unwrap();
        edit(&mut header);
        let header = serde_json::to_vec(&header).unwrap();
        frame(&header, &bytes[24 + h..bytes.len() - CHECKSUM_LEN]).unwrap()
    }

    #[test]
    fn cluster_models_round_trip_with_identical_scores_and_ids() {
        let dir = tempfile::tempdir().unwrap();
        for (model, training, meta, data) in cluster_models() {
            let path = dir.path().join(model.kind());
            let id = save_clusters(&path, &model, &training, &meta).unwrap();
            let loaded = LoadedModel::load(&path).unwrap();
            assert_eq!(loaded.id(), id);
            assert_eq!(loaded.kind(), model.kind());
            assert_eq!(loaded.feature_names(), ["p", "q"]);
            assert_eq!(loaded.n_features(), 2);
            assert_eq!(loaded.header().rows(), 120);
            assert_eq!(loaded.header().source(), "blobs");
            assert_eq!(loaded.training_range(1), meta.training_ranges[1]);
            assert!(loaded.scorer().higher_is_anomalous());
            let AnyHeader::Clusters(h) = loaded.header() else {
                panic!("not a cluster header")
            };
            assert_eq!(h.k, 3);
            assert_eq!(h.seed, 5);
            assert_eq!(h.threshold_rule, "top:4");
            assert_eq!(
                h.scaling.method,
                crate::detect::kmeans::ScaleMethod::Standard
            );
            assert_eq!(h.cluster_sizes.iter().sum::<u64>(), 120);
            let original = match &model {
                ClusterModel::KMeans(m) => Scorer::KMeans(m.clone()),
                ClusterModel::BisectingKMeans(m) => Scorer::BisectingKMeans(m.clone()),
            };
            assert_eq!(loaded.scorer(), &original);
            let mut batch = vec![0.0; 120];
            loaded.score_batch(&data, &mut batch);
            let mut flagged = 0;
            for (x, b) in data.chunks(2).zip(&batch) {
                let s = loaded.score(x);
                assert_eq!(s.to_bits(), original.score(x).to_bits());
                assert_eq!(s.to_bits(), b.to_bits());
                assert_eq!(loaded.decision(s), loaded.threshold() - s);
                assert_eq!(loaded.is_anomaly(s), s > loaded.threshold());
                flagged += usize::from(loaded.is_anomaly(s));
            }
            assert_eq!(flagged, 3, "top:4 flags 3 distinct rows");
            let shares = loaded.attribution(&[20.0, 0.0]);
            assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            // The forest-only API refuses it, naming the kind.
            let err = Model::load(&path).unwrap_err();
            assert!(matches!(err, ModelError::Kind { .. }), "{err}");
            assert!(err.to_string().contains(model.kind()), "{err}");

            // Another time and source: the same id; another seed in the header: another.
            let later = TrainingMeta {
                trained_at: meta.trained_at + std::time::Duration::from_secs(3600),
                source: "elsewhere".into(),
                ..meta.clone()
            };
            assert_eq!(encode_clusters(&model, &training, &later).unwrap().1, id);
            let reseeded = ClusterTraining {
                seed: 6,
                ..training.clone()
            };
            assert_ne!(encode_clusters(&model, &reseeded, &meta).unwrap().1, id);
        }
    }

    #[test]
    fn forest_files_load_through_the_any_kind_api_too() {
        let (_dir, path, _, id) = saved();
        let (forest, _) = trained();
        let loaded = LoadedModel::load(&path).unwrap();
        assert_eq!(loaded.id(), id);
        assert_eq!(loaded.kind(), KIND_ISOLATION_FOREST);
        assert!(!loaded.scorer().higher_is_anomalous());
        let x = [1.0, 5.0, 9.5];
        assert_eq!(loaded.score(&x), forest.score_samples(&x));
        assert_eq!(loaded.threshold(), forest.offset());
        assert_eq!(
            loaded.decision(loaded.score(&x)),
            forest.decision(forest.score_samples(&x))
        );
        assert_eq!(loaded.attribution(&x), forest.attribution(&x));
        let model = Model::load(&path).unwrap();
        assert_eq!(LoadedModel::from(model).id(), id);
    }

    #[test]
    fn cluster_files_get_every_refusal() {
        let dir = tempfile::tempdir().unwrap();
        for (model, training, meta, _) in cluster_models() {
            let path = dir.path().join(model.kind());
            save_clusters(&path, &model, &training, &meta).unwrap();
            let bytes = fs::read(&path).unwrap();
            let load = |b: &[u8]| LoadedModel::from_bytes(&path, b).unwrap_err();

            let mut wrong_magic = bytes.clone();
            wrong_magic[3] ^= 1;
            assert!(matches!(load(&wrong_magic), ModelError::BadMagic { .. }));
            let mut future = bytes.clone();
            future[8..12].copy_from_slice(&2u32.to_le_bytes());
            assert!(matches!(
                load(&future),
                ModelError::UnknownVersion { found: 2, .. }
            ));
            for cut in [10, bytes.len() / 2, bytes.len() - 1] {
                assert!(matches!(load(&bytes[..cut]), ModelError::Truncated { .. }));
            }
            let mut longer = bytes.clone();
            longer.push(7);
            assert!(matches!(load(&longer), ModelError::TrailingBytes { .. }));
            // A flipped bit anywhere: in the header, in the payload.
            for at in [40, bytes.len() - 40] {
                let mut flipped = bytes.clone();
                flipped[at] ^= 0x10;
                let err = load(&flipped);
                assert!(matches!(err, ModelError::Checksum { .. }), "at {at}: {err}");
                assert!(err.to_string().contains(&path.display().to_string()));
            }
            // Checksum fixed, but the header lies: another kind, an unknown kind, another
            // threshold, another feature count.
            let other = if model.kind() == KIND_KMEANS {
                KIND_BISECTING_KMEANS
            } else {
                KIND_KMEANS
            };
            let err = load(&with_header(&bytes, |h| h["kind"] = other.into()));
            assert!(matches!(err, ModelError::Payload { .. }), "{err}");
            let err = load(&with_header(&bytes, |h| {
                h["kind"] = "gaussian_mixture".into()
            }));
            assert!(
                matches!(&err, ModelError::Kind { kind, .. } if kind == "gaussian_mixture"),
                "{err}"
            );
            let err = load(&with_header(&bytes, |h| h["threshold"] = 1e9.into()));
            assert!(matches!(err, ModelError::Payload { .. }), "{err}");
            let err = load(&with_header(&bytes, |h| {
                h["feature_names"] = serde_json::json!(["p", "q", "r"]);
            }));
            assert!(matches!(err, ModelError::Payload { .. }), "{err}");
            let err = load(&with_header(&bytes, |h| h["costs"] = "many".into()));
            assert!(matches!(err, ModelError::Header { .. }), "{err}");
            // A payload that is not a model of its kind.
            let h = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
            let truncated_payload =
                frame(&bytes[24..24 + h], &bytes[24 + h..bytes.len() - 40]).unwrap();
            assert!(matches!(
                load(&truncated_payload),
                ModelError::Payload { .. }
            ));
            // Loaded fine, but configured for 3 features.
            let loaded = LoadedModel::from_bytes(&path, &bytes).unwrap();
            assert!(loaded.check_features(2).is_ok());
            let err = loaded.check_features(3).unwrap_err();
            assert!(matches!(
                err,
                ModelError::FeatureCount {
                    found: 2,
                    expected: 3,
                    ..
                }
            ));
            assert!(err.to_string().contains("2 features but 3"), "{err}");
        }
    }
}
