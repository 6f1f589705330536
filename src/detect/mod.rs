//! detect: turning records into scores: the model and, later, feature extraction.

pub mod forest;
pub mod model;
pub mod quantile;
