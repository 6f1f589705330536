//! offline: working with files rather than streams: reading CSV data and purchase lines,
//! ranking metrics, the score-distribution picture, and the `train` (Isolation Forest, k-means,
//! bisecting k-means) and `eval` commands built from them.

pub mod benchmark;
pub mod csv;
pub mod eval;
pub mod metrics;
pub mod purchases;
pub mod report;
pub mod train;
pub mod train_kmeans;
