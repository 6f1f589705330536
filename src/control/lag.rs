//! Consumer lag of the input topic's partitions: the group's committed offset against the
//! partition's high watermark, asked of the broker every few seconds. The partitions this
//! instance holds give `/status` and `/metrics` their lag; the others feed the orphan watch
//! ([`super::liveness::OrphanWatch`]), and the metadata answer tells that the broker is there.
//!
//! A separate client that never joins the group does the asking (offset fetches need only the
//! group id), so a slow broker answer never blocks the detector's consumer.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::liveness::Observation;
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

    /// Blocking: the partitions of `topic` (one metadata request, whose failure is the error;
    /// `answered` is called as soon as it succeeds), the group's committed offsets (one
    /// request) and each partition's watermarks. A partition whose watermarks cannot be read
    /// is left out. `Ok(None)` when the broker has no such topic (none of its partitions is
    /// listed): nothing can be read until someone creates it.
    pub fn survey(
        &self,
        topic: &str,
        timeout: Duration,
        answered: impl FnOnce(),
    ) -> Result<Option<Vec<Observation>>, KafkaError> {
        let md = self.client.fetch_metadata(Some(topic), timeout)?;
        answered();
        let mut tpl = TopicPartitionList::new();
        for t in md.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions() {
                tpl.add_partition(topic, p.id());
            }
        }
        if tpl.count() == 0 {
            return Ok(None);
        }
        let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let committed = self.client.committed_offsets(tpl, timeout).ok();
        Ok(Some(
            parts
                .into_iter()
                .filter_map(|partition| {
                    let (low, high) = self
                        .client
                        .fetch_watermarks(topic, partition, timeout)
                        .ok()?;
                    let committed = committed
                        .as_ref()
                        .and_then(|c| c.find_partition(topic, partition))
                        .and_then(|e| match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        });
                    Some(Observation {
                        topic: topic.to_owned(),
                        partition,
                        committed,
                        low,
                        high,
                    })
                })
                .collect(),
        ))
    }
}

impl From<&Observation> for PartitionLag {
    fn from(o: &Observation) -> Self {
        Self {
            topic: o.topic.clone(),
            partition: o.partition,
            committed: o.committed,
            high_watermark: Some(o.high),
            lag: Some((o.high - o.committed.unwrap_or(0)).max(0)),
        }
    }
}
