//! Speed of the k-means kinds' scoring (issue 12's bar): one record with k-means, k = 20 and
//! 5 features (<= 100 ns), and with bisecting k-means, 20 leaves, depth 5 (<= 150 ns); each
//! also through the kind-agnostic [`Scorer`] the partition worker will call.
//!
//! The models are trained on 20 seeded Gaussian blobs in 5 dimensions (10,000 rows), records
//! are drawn from the same blobs plus some far away, and scored one at a time, cycling
//! through 4,096 of them so that the branch predictor cannot learn one path.
//!
//! `cargo bench --bench kmeans`; figures in docs/benchmarks.md.

use std::hint::black_box;
use std::time::Duration;

use anomalyd::detect::bisecting::BisectingKMeans;
use anomalyd::detect::kmeans::{KMeans, ScaleMethod, Scaling, ThresholdRule};
use anomalyd::detect::model::Scorer;
use criterion::{Criterion, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const D: usize = 5;
const K: usize = 20;
const RECORDS: usize = 4096;

/// `rows` points around 20 random centres in [-10, 10]^5, sd 1; a tenth of the records
/// returned second are far from every centre.
fn data(rows: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let centres: Vec<f64> = (0..K * D).map(|_| rng.random_range(-10.0..10.0)).collect();
    let draw = |rng: &mut StdRng, n: usize, far: bool| -> Vec<f64> {
        let mut out = Vec::with_capacity(n * D);
        for i in 0..n {
            let c = rng.random_range(0..K);
            for j in 0..D {
                let noise: f64 = rng.random_range(-1.7..1.7);
                let shift = if far && i % 10 == 0 { 25.0 } else { 0.0 };
                out.push(centres[c * D + j] + noise + shift);
            }
        }
        out
    };
    let train = draw(&mut rng, rows, false);
    let records = draw(&mut rng, RECORDS, true);
    (train, records)
}

fn scoring(c: &mut Criterion) {
    let (train, records) = data(10_000, 7);
    let scaling = Scaling::fit(ScaleMethod::Standard, &train, D);
    let rule = ThresholdRule::Top(100);
    let (kmeans, _) = KMeans::fit(&train, D, K, scaling.clone(), rule, 1).expect("k-means");
    let (bisecting, _) =
        BisectingKMeans::fit(&train, D, K, 1, scaling, rule, 1).expect("bisecting k-means");
    assert_eq!(kmeans.k(), K);
    assert_eq!(bisecting.leaves().len(), K);
    assert!(bisecting.depth() <= 5, "depth {}", bisecting.depth());
    eprintln!(
        "kmeans bench: k-means k = {K}, bisecting {} leaves, depth {}, {D} features",
        bisecting.leaves().len(),
        bisecting.depth()
    );

    let mut group = c.benchmark_group("kmeans");
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    let mut cycle = |name: &str, score: &dyn Fn(&[f64]) -> f64| {
        let mut at = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                at = (at + 1) % RECORDS;
                black_box(score(black_box(&records[at * D..(at + 1) * D])))
            })
        });
    };
    cycle("kmeans_score_k20_d5", &|x| kmeans.score(x));
    cycle("bisecting_score_20_leaves_depth5_d5", &|x| {
        bisecting.score(x)
    });
    let kmeans_scorer = Scorer::KMeans(kmeans.clone());
    let bisecting_scorer = Scorer::BisectingKMeans(bisecting.clone());
    cycle("scorer_kmeans_k20_d5", &|x| kmeans_scorer.score(x));
    cycle("scorer_bisecting_depth5_d5", &|x| bisecting_scorer.score(x));
    group.finish();
}

criterion_group!(benches, scoring);
criterion_main!(benches);
