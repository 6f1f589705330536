//! sinks: where results go. The anomalies topic ([`anomalies`]) and the dead-letter topic
//! ([`dead_letter`]); Slack alerts ([`slack`]) are read back from the anomalies topic by the
//! notifier, in its own consumer group.

pub mod anomalies;
pub mod dead_letter;
pub mod slack;

use serde::Serialize;

/// Where a record was read from; part of every anomaly and dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SourceRef<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SinkError {
    #[error("could not produce to {topic}: {source}")]
    Produce { topic: String, source: KafkaError },
    #[error("delivery to {topic} failed: {source}")]
    Delivery { topic: String, source: KafkaError },
    #[error("delivery to {topic} was abandoned: the producer shut down")]
    Abandoned { topic: String },
}

/// Hands a record to the producer, waiting while its local queue is full (back-pressure from a
/// slow broker), and returns the future of its acknowledgement.
pub async fn enqueue<K, P>(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, K, P>,
) -> Result<Pending, SinkError>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    let topic = record.topic.to_owned();
    loop {
        match producer.send_result(record) {
            Ok(future) => return Ok(Pending { topic, future }),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((source, _)) => return Err(SinkError::Produce { topic, source }),
        }
    }
}

/// A produced record awaiting its acknowledgement.
pub struct Pending {
    topic: String,
    future: DeliveryFuture,
}

impl Pending {
    /// Waits for the broker's acknowledgement (the idempotent producer retries transient
    /// failures itself, so an error here is final).
    pub async fn delivered(self) -> Result<(), SinkError> {
        match self.future.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((source, _))) => Err(SinkError::Delivery {
                topic: self.topic,
                source,
            }),
            Err(_) => Err(SinkError::Abandoned { topic: self.topic }),
        }
    }
}
