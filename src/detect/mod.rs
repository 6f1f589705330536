//! detect: turning records into scores: feature extraction, the models, the rules (named CEL
//! expressions, a scorer without a model), the scorer abstraction,
//! the live model slot, and the partition workers that score records in batches.

pub mod features;
pub mod forest;
pub mod model;
pub mod quantile;
pub mod rules;
pub mod scorer;
pub mod slot;
pub mod worker;
