//! `anomalyd train --kind kmeans|bisecting_kmeans`: fit a k-means or bisecting k-means model on
//! a CSV file, purchase lines (one row per invoice, [`super::purchases`]) or the synthetic set,
//! choose k (fixed, or the elbow of a sweep), set the threshold from the training scores, and
//! write the model file.
//!
//! `--threshold top:N` with fewer than N training rows is refused (exit 65), not clamped: a
//! clamped rule would silently flag nearly every training row.

use std::path::PathBuf;
use std::time::Instant;

use super::purchases::{self, PurchaseCounts};
use super::report::{self, Histogram};
use super::train::{TrainError, TrainInput, load};
use crate::detect::bisecting::{BisectingKMeans, DEFAULT_MIN_DIVISIBLE};
use crate::detect::kmeans::{
    self, ClusterError, DEFAULT_ELBOW_RATIO, DEFAULT_K_MAX, DEFAULT_THRESHOLD, KChoice, KCost,
    KMeans, ScaleMethod, Scaling, ThresholdRule,
};
use crate::detect::model::{self, ClusterModel, ClusterTraining, TrainingMeta};
use crate::stages::aggregate::invoice::FEATURE_NAMES;

/// `--seed` by default, as the Isolation Forest's.
pub const DEFAULT_SEED: u64 = 42;

/// Which cluster model to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterKind {
    KMeans,
    BisectingKMeans,
}

impl ClusterKind {
    /// The model file's `kind`.
    pub fn name(self) -> &'static str {
        match self {
            Self::KMeans => model::KIND_KMEANS,
            Self::BisectingKMeans => model::KIND_BISECTING_KMEANS,
        }
    }
}

/// `anomalyd train --kind kmeans|bisecting_kmeans`'s options.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterTrainOptions {
    pub kind: ClusterKind,
    pub input: TrainInput,
    /// `--k N` or `--k auto` (the elbow over k = 1..=k_max).
    pub k: KChoice,
    pub k_max: usize,
    pub elbow_ratio: f64,
    pub threshold: ThresholdRule,
    /// Bisecting only: a cluster needs this many rows to be split.
    pub min_divisible: u64,
    pub scale: ScaleMethod,
    pub seed: u64,
    pub out: PathBuf,
    pub report: Option<PathBuf>,
}

impl ClusterTrainOptions {
    /// Every option at its default: k auto, k-max 20, elbow ratio 0.7, threshold top:2000,
    /// min-divisible 1, no scaling, seed 42.
    pub fn new(kind: ClusterKind, input: TrainInput, out: impl Into<PathBuf>) -> Self {
        Self {
            kind,
            input,
            k: KChoice::Auto,
            k_max: DEFAULT_K_MAX,
            elbow_ratio: DEFAULT_ELBOW_RATIO,
            threshold: DEFAULT_THRESHOLD,
            min_divisible: DEFAULT_MIN_DIVISIBLE,
            scale: ScaleMethod::None,
            seed: DEFAULT_SEED,
            out: out.into(),
            report: None,
        }
    }
}

/// What training did, for printing.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterTrainSummary {
    pub model_id: String,
    pub path: PathBuf,
    pub kind: ClusterKind,
    pub rows: usize,
    pub feature_names: Vec<String>,
    /// The k trained and why.
    pub k: usize,
    pub k_rule: String,
    /// Every k tried and its cost.
    pub costs: Vec<KCost>,
    /// Training rows per cluster.
    pub cluster_sizes: Vec<u64>,
    pub threshold: f64,
    pub threshold_rule: ThresholdRule,
    /// Training rows above the threshold.
    pub flagged: usize,
    pub scale: ScaleMethod,
    pub seed: u64,
    pub fit_seconds: f64,
    pub total_seconds: f64,
    pub report: Option<PathBuf>,
    /// `--format purchases`: lines read, invoices formed, left out and trained on.
    pub purchases: Option<PurchaseCounts>,
}

impl std::fmt::Display for ClusterTrainSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "model {} ({}) written to {}",
            self.model_id,
            self.kind.name(),
            self.path.display()
        )?;
        writeln!(
            f,
            "rows {}, features {} ({}), scale {}, seed {}",
            self.rows,
            self.feature_names.len(),
            self.feature_names.join(","),
            self.scale,
            self.seed
        )?;
        if let Some(counts) = &self.purchases {
            writeln!(f, "{counts}")?;
        }
        if self.costs.len() > 1 {
            let costs: Vec<String> = self
                .costs
                .iter()
                .map(|c| format!("{}:{:.6e}", c.k, c.cost))
                .collect();
            writeln!(f, "cost by k {}", costs.join(" "))?;
        }
        writeln!(f, "k {} ({})", self.k, self.k_rule)?;
        let sizes: Vec<String> = self.cluster_sizes.iter().map(u64::to_string).collect();
        writeln!(f, "cluster sizes {}", sizes.join(","))?;
        writeln!(
            f,
            "threshold {:.6} ({}; anomaly iff score > threshold), flags {} training rows",
            self.threshold, self.threshold_rule, self.flagged
        )?;
        write!(
            f,
            "training time {:.3} s (total {:.3} s)",
            self.fit_seconds, self.total_seconds
        )?;
        if let Some(report) = &self.report {
            write!(f, "\nreport written to {}", report.display())?;
        }
        Ok(())
    }
}

/// Trains and writes a k-means or bisecting k-means model as `options` say.
///
/// Errors: the input ([`TrainError::Csv`]), training ([`TrainError::Clusters`]: bad values,
/// k larger than the rows, `top:N` with fewer than N rows, a bad option), writing.
pub fn train_clusters(options: &ClusterTrainOptions) -> Result<ClusterTrainSummary, TrainError> {
    let started = Instant::now();
    // Purchases keep their counts for the summary; every other input is a table.
    let (data, feature_names, source, purchases) = match &options.input {
        TrainInput::Purchases { path } => {
            let set = purchases::read(path)?;
            let names = FEATURE_NAMES.map(String::from).to_vec();
            (
                set.values,
                names,
                path.display().to_string(),
                Some(set.counts),
            )
        }
        input => {
            let (data, names, source, _) = load(input)?;
            (data, names, source, None)
        }
    };
    let d = feature_names.len();
    let fail = |error: ClusterError| TrainError::Clusters {
        input: source.clone(),
        error,
    };
    let bad_option = |what, value: String, expected| {
        fail(ClusterError::Parse {
            what,
            value,
            expected,
        })
    };
    if !(options.elbow_ratio > 0.0 && options.elbow_ratio <= 1.0) {
        return Err(bad_option(
            "elbow ratio",
            options.elbow_ratio.to_string(),
            "a number in (0, 1]",
        ));
    }
    if options.k_max == 0 {
        return Err(bad_option("k-max", "0".into(), "a positive whole number"));
    }
    if options.min_divisible == 0 {
        return Err(bad_option(
            "min-divisible",
            "0".into(),
            "a positive whole number",
        ));
    }
    let rows = kmeans::check_data(&data, d).map_err(fail)?;
    let scaling = Scaling::fit(options.scale, &data, d);
    let fit = |k: usize| -> Result<(ClusterModel, f64), ClusterError> {
        let (rule, seed) = (options.threshold, options.seed);
        Ok(match options.kind {
            ClusterKind::KMeans => {
                let (m, cost) = KMeans::fit(&data, d, k, scaling.clone(), rule, seed)?;
                (ClusterModel::KMeans(m), cost)
            }
            ClusterKind::BisectingKMeans => {
                let (m, cost) = BisectingKMeans::fit(
                    &data,
                    d,
                    k,
                    options.min_divisible,
                    scaling.clone(),
                    rule,
                    seed,
                )?;
                (ClusterModel::BisectingKMeans(m), cost)
            }
        })
    };

    let fit_started = Instant::now();
    let (model, k, k_rule, costs, elbow_ratio) = match options.k {
        KChoice::Fixed(k) => {
            let (model, cost) = fit(k).map_err(fail)?;
            (
                model,
                k,
                format!("fixed: --k {k}"),
                vec![KCost { k, cost }],
                None,
            )
        }
        KChoice::Auto => {
            let k_max = options.k_max.min(rows);
            let mut fits = Vec::with_capacity(k_max);
            let mut costs = Vec::with_capacity(k_max);
            for k in 1..=k_max {
                let (model, cost) = fit(k).map_err(fail)?;
                fits.push(model);
                costs.push(KCost { k, cost });
            }
            let (k, mut why) = kmeans::elbow(&costs, options.elbow_ratio);
            if k_max < options.k_max {
                why.push_str(&format!(
                    " (k-max {} lowered to the {rows} training rows)",
                    options.k_max
                ));
            }
            let model = fits.swap_remove(k - 1);
            (model, k, why, costs, Some(options.elbow_ratio))
        }
    };
    let fit_seconds = fit_started.elapsed().as_secs_f64();

    let scorer = match &model {
        ClusterModel::KMeans(m) => model::Scorer::KMeans(m.clone()),
        ClusterModel::BisectingKMeans(m) => model::Scorer::BisectingKMeans(m.clone()),
    };
    let mut scores = vec![0.0; rows];
    scorer.score_batch(&data, &mut scores);
    let flagged = scores.iter().filter(|&&s| scorer.is_anomaly(s)).count();

    let training = ClusterTraining {
        seed: options.seed,
        k,
        k_rule: k_rule.clone(),
        elbow_ratio,
        costs: costs.clone(),
        min_divisible: (options.kind == ClusterKind::BisectingKMeans)
            .then_some(options.min_divisible),
        threshold_rule: options.threshold.to_string(),
    };
    let meta = TrainingMeta::describe(&data, feature_names.clone(), source);
    let model_id = model::save_clusters(&options.out, &model, &training, &meta)?;
    if let Some(path) = &options.report {
        let title = format!(
            "training scores (squared distance), {} model {model_id}",
            options.kind.name()
        );
        report::draw(
            path,
            &Histogram {
                title: &title,
                scores: &scores,
                labels: None,
                threshold: scorer.threshold(),
            },
        )?;
    }
    Ok(ClusterTrainSummary {
        model_id,
        path: options.out.clone(),
        kind: options.kind,
        rows,
        feature_names,
        k,
        k_rule,
        costs,
        cluster_sizes: model.cluster_sizes(),
        threshold: scorer.threshold(),
        threshold_rule: options.threshold,
        flagged,
        scale: options.scale,
        seed: options.seed,
        fit_seconds,
        total_seconds: started.elapsed().as_secs_f64(),
        report: options.report.clone(),
        purchases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::kmeans::tests::blobs;
    use crate::detect::model::{AnyHeader, LoadedModel};
    use crate::exit;
    use std::path::Path;

    /// Four well separated blobs of 100 rows, as a CSV file in `dir`.
    fn four_blobs(dir: &Path) -> TrainInput {
        let data = blobs(
            &[(0.0, 0.0), (10.0, 0.0), (0.0, 10.0), (10.0, 10.0)],
            100,
            0.5,
            5,
        );
        let mut text = String::from("a,b\n");
        for x in data.chunks(2) {
            text.push_str(&format!("{},{}\n", x[0], x[1]));
        }
        let path = dir.join("blobs.csv");
        std::fs::write(&path, text).unwrap();
        TrainInput::Csv {
            path,
            features: None,
            label: "label".into(),
        }
    }

    fn options(dir: &Path, kind: ClusterKind) -> ClusterTrainOptions {
        let mut o = ClusterTrainOptions::new(kind, four_blobs(dir), dir.join("m.model"));
        o.k_max = 8;
        o.threshold = ThresholdRule::Top(20);
        o
    }

    #[test]
    fn the_elbow_keeps_four_blobs_for_both_kinds_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        for kind in [ClusterKind::KMeans, ClusterKind::BisectingKMeans] {
            let mut opts = options(dir.path(), kind);
            opts.report = Some(dir.path().join("r.svg"));
            let summary = train_clusters(&opts).unwrap();
            assert_eq!(summary.k, 4, "{kind:?}: {}", summary.k_rule);
            assert!(summary.k_rule.contains("r(5)"), "{}", summary.k_rule);
            assert_eq!(summary.costs.len(), 8);
            assert_eq!(summary.cluster_sizes, [100; 4]);
            assert_eq!(
                summary.flagged, 19,
                "top:20 flags 19 distinct training rows"
            );
            let text = summary.to_string();
            for says in [kind.name(), "k 4 (elbow", "top:20", &summary.model_id] {
                assert!(text.contains(says), "{says}: {text}");
            }
            let model = LoadedModel::load(&opts.out).unwrap();
            assert_eq!(model.id(), summary.model_id);
            assert_eq!(model.kind(), kind.name());
            let AnyHeader::Clusters(h) = model.header() else {
                panic!("not a cluster header")
            };
            assert_eq!((h.k, h.seed, h.elbow_ratio), (4, 42, Some(0.7)));
            assert_eq!(h.k_rule, summary.k_rule);
            assert_eq!(h.threshold_rule, "top:20");
            assert_eq!(h.costs, summary.costs);
            assert_eq!(
                h.min_divisible,
                (kind == ClusterKind::BisectingKMeans).then_some(1)
            );
            assert_eq!(model.threshold(), summary.threshold);
            assert!(std::fs::read_to_string(dir.path().join("r.svg")).is_ok());
        }
    }

    #[test]
    fn same_seed_same_bytes_but_the_time_and_same_id() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for kind in [ClusterKind::KMeans, ClusterKind::BisectingKMeans] {
            let mut first = options(a.path(), kind);
            first.scale = ScaleMethod::Standard;
            let mut again = options(b.path(), kind);
            again.scale = ScaleMethod::Standard;
            // The same data from another path.
            std::fs::copy(a.path().join("blobs.csv"), b.path().join("blobs.csv")).unwrap();
            let (s1, s2) = (
                train_clusters(&first).unwrap(),
                train_clusters(&again).unwrap(),
            );
            assert_eq!(s1.model_id, s2.model_id);
            let (f1, f2) = (
                std::fs::read(&first.out).unwrap(),
                std::fs::read(&again.out).unwrap(),
            );
            // Prelude and payload byte for byte; the header but for when and where from.
            let split = |b: &[u8]| {
                let h = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
                let mut header: serde_json::Value = serde_json::from_slice(&b[24..24 + h]).unwrap();
                header["trained_at"] = serde_json::Value::Null;
                header["source"] = serde_json::Value::Null;
                (b[..12].to_vec(), header, b[24 + h..b.len() - 32].to_vec())
            };
            assert_eq!(split(&f1), split(&f2));
            let mut reseeded = options(b.path(), kind);
            reseeded.seed = 7;
            reseeded.k = KChoice::Fixed(7);
            let mut fixed = options(b.path(), kind);
            fixed.k = KChoice::Fixed(7);
            assert_ne!(
                train_clusters(&reseeded).unwrap().model_id,
                train_clusters(&fixed).unwrap().model_id
            );
        }
    }

    #[test]
    fn top_n_larger_than_the_rows_is_refused_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path(), ClusterKind::KMeans);
        opts.threshold = DEFAULT_THRESHOLD;
        let err = train_clusters(&opts).unwrap_err();
        assert!(
            err.to_string().contains("top:2000 needs at least 2000"),
            "{err}"
        );
        assert_eq!(err.exit_code(), exit::DATA_ERR);
        assert!(!opts.out.exists());
        opts.threshold = ThresholdRule::Quantile(0.99);
        opts.k = KChoice::Fixed(4);
        let summary = train_clusters(&opts).unwrap();
        assert_eq!(summary.flagged, 4, "1% of 400");
        assert_eq!(summary.k_rule, "fixed: --k 4");
    }

    #[test]
    fn bad_options_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path(), ClusterKind::BisectingKMeans);
        opts.elbow_ratio = 1.5;
        assert!(train_clusters(&opts).is_err());
        let mut opts = options(dir.path(), ClusterKind::BisectingKMeans);
        opts.k = KChoice::Fixed(401);
        let err = train_clusters(&opts).unwrap_err();
        assert!(err.to_string().contains("k = 401"), "{err}");
    }
}
