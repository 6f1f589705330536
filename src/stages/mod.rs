//! stages: stateful steps between a source and the detectors, each driven by a partition worker
//! over one partition's records in order. Time ([`time`]): event time or processing time, and
//! the purchase data's `M/D/YYYY H:MM` timestamps.
//! Aggregates ([`aggregate`]): what keyed records are folded into, such as an invoice.

pub mod aggregate;
pub mod time;
