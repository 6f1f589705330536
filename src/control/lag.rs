//! Consumer lag of the partitions this instance holds: the group's committed offset against
//! the partition's high watermark, asked of the broker when `/status` or `/metrics` is read.
//!
//! A separate client that never joins the group does the asking (offset fetches need only the
//! group id), so a slow broker answer never blocks the detector's consumer.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::config::KafkaConfig;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset: the next record it will read.
    pub committed: Option<i64>,
    /// The offset the next record produced to the partition will get.
    pub high_watermark: Option<i64>,
    /// Records not yet processed by the group; unknown if either side is.
    pub lag: Option<i64>,
}

pub struct LagProbe {
    client: BaseConsumer,
}

impl LagProbe {
    pub fn new(kafka: &KafkaConfig, group: &str) -> Result<Self, KafkaError> {
        let mut cfg = crate::kafka::client_config(kafka);
        cfg.set("group.id", group)
            .set("enable.auto.commit", "false");
        Ok(Self {
            client: cfg.create()?,
        })
    }

    /// Blocking: one offset fetch for all partitions, one watermark query per partition.
    pub fn lag(&self, partitions: &[(String, i32)], timeout: Duration) -> Vec<PartitionLag> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in partitions {
            tpl.add_partition(t, *p);
        }
        let committed = self.client.committed_offsets(tpl, timeout).ok();
        partitions
            .iter()
            .map(|(topic, partition)| {
                let committed = committed
                    .as_ref()
                    .and_then(|c| c.find_partition(topic, *partition))
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    });
                let high_watermark = self
                    .client
                    .fetch_watermarks(topic, *partition, timeout)
                    .ok()
                    .map(|(_, high)| high);
                let lag = match (committed, high_watermark) {
                    (Some(c), Some(h)) => Some((h - c).max(0)),
                    // Nothing committed yet: everything from the start is outstanding.
                    (None, Some(h)) => Some(h),
                    _ => None,
                };
                PartitionLag {
                    topic: topic.clone(),
                    partition: *partition,
                    committed,
                    high_watermark,
                    lag,
                }
            })
            .collect()
    }
}
