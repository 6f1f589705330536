//! Aggregates that stages fold records into: state of constant size per key, built from a first
//! record and updated by each later one, then turned into the JSON a stage emits.
//!
//! [`invoice`]: purchase lines (the Online Retail CSV) folded into an invoice, with the features
//! the clustering models score and the invoice's validity. Training reads the same code, so a
//! model is trained on exactly the features the stream computes.

pub mod invoice;
