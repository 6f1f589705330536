//! stages: stateful steps between a source and the detectors, each driven by a partition worker
//! over one partition's records in order. Time ([`time`]): event time or processing time, and
//! the purchase data's `M/D/YYYY H:MM` timestamps.

pub mod build;
pub mod cancellations;
pub mod invoices;
pub mod metrics;
pub mod time;
pub mod worker;
