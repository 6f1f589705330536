//! detect: turning records into scores: feature extraction, the models (Isolation Forest,
//! k-means, bisecting k-means) and their file, the live model slot, and the partition workers
//! that score records in batches.

pub mod bisecting;
pub mod features;
pub mod forest;
pub mod kmeans;
pub mod model;
pub mod quantile;
pub mod slot;
pub mod worker;
