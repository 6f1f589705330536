//! source: where records come from. The detector's group consumer ([`consumer`]) and the
//! [`generator`]: synthetic traffic, or a CSV file's lines replayed in order
//! ([`generator::replay`], also `anomalyd replay`).

pub mod consumer;
pub mod generator;
