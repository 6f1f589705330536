//! detect: turning records into scores: feature extraction (from JSON records, or CSV lines
//! in [`csv_record`]), the models (Isolation Forest,
//! k-means, bisecting k-means) and their file, the rules (named CEL expressions, a scorer
//! without a model), the scorer abstraction the workers call, the live model slot, the A/B
//! split between detectors ([`split`]), and the partition workers that score records in
//! batches.

pub mod bisecting;
pub mod csv_record;
pub mod features;
pub mod forest;
pub mod kmeans;
pub mod model;
pub mod quantile;
pub mod rules;
pub mod scorer;
pub mod slot;
pub mod split;
pub mod streaks;
pub mod worker;
