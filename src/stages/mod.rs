//! stages: stateful steps between a source and the detectors, each driven by a partition worker
//! over one partition's records in order.
//!
//! - Time ([`time`]): event time or processing time, and the purchase data's `M/D/YYYY H:MM`
//!   timestamps.
//! - Windows, pure logic without Kafka: [`window`] (`[start, end)`, epoch-aligned hopping
//!   assignment), [`session_window`] (keyed sessions, inactivity gap, grace, late records, safe
//!   offset) and [`hopping_window`] (distinct counts per hopping window and partition, and the
//!   combiner of every partition's partials).
//! - What windows fold records into: [`aggregate`] (purchase lines into an invoice).
//! - On Kafka: [`worker`] (one partition's [`worker::Stage`], committing only its safe offset),
//!   the stages themselves ([`invoices`], [`cancellations`]), [`build`] (from `[stages.NAME]`
//!   to consumer tasks) and their [`metrics`].

pub mod aggregate;
pub mod build;
pub mod cancellations;
pub mod hopping_window;
pub mod invoices;
pub mod metrics;
pub mod session_window;
pub mod time;
pub mod window;
pub mod worker;
