//! source: where records come from. The detector's group consumer ([`consumer`]) and the
//! synthetic-traffic [`generator`].

pub mod consumer;
pub mod generator;
