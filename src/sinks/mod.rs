//! sinks: where results go. The anomalies topic ([`anomalies`]) and the dead-letter topic
//! ([`dead_letter`]); Slack alerts ([`slack`]) are read back from the anomalies topic by the
//! notifier, in its own consumer group, and stored in a database by the store ([`store`]), in another.

pub mod anomalies;
pub mod dead_letter;
pub mod slack;
pub mod store;

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

impl SinkError {
    /// Whether the producer or broker refused this one record for its content (too large, an
    /// invalid record or timestamp), an error that retrying the same record cannot cure but
    /// that says nothing about the records around it. `Some(true)` when the refusal is about
    /// size.
    pub fn refused_record(&self) -> Option<bool> {
        let (Self::Produce { source, .. } | Self::Delivery { source, .. }) = self else {
            return None;
        };
        match source.rdkafka_error_code()? {
            RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge => {
                Some(true)
            }
            RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidTimestamp
            | RDKafkaErrorCode::BadMessage => Some(false),
            _ => None,
        }
    }
}

/// librdkafka's default `message.max.bytes`.
pub const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// The producer's effective `message.max.bytes`: the configured value, else librdkafka's
/// default. Every record anomalyd produces is checked against it before it is produced.
pub fn message_max_bytes(producer: &rdkafka::ClientConfig) -> usize {
    producer
        .get("message.max.bytes")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_record_refusals_are_told_from_other_errors() {
        let produce = |code| SinkError::Produce {
            topic: "t".into(),
            source: KafkaError::MessageProduction(code),
        };
        assert_eq!(
            produce(RDKafkaErrorCode::MessageSizeTooLarge).refused_record(),
            Some(true)
        );
        assert_eq!(
            SinkError::Delivery {
                topic: "t".into(),
                source: KafkaError::MessageProduction(RDKafkaErrorCode::MessageBatchTooLarge),
            }
            .refused_record(),
            Some(true)
        );
        assert_eq!(
            produce(RDKafkaErrorCode::InvalidRecord).refused_record(),
            Some(false)
        );
        for other in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ] {
            assert_eq!(produce(other).refused_record(), None, "{other:?}");
        }
        let abandoned = SinkError::Abandoned { topic: "t".into() };
        assert_eq!(abandoned.refused_record(), None);
    }

    #[test]
    fn message_max_bytes_is_read_from_the_producer_settings() {
        let mut cfg = rdkafka::ClientConfig::new();
        assert_eq!(message_max_bytes(&cfg), 1_000_000);
        cfg.set("message.max.bytes", "2000000");
        assert_eq!(message_max_bytes(&cfg), 2_000_000);
    }
}
