//! Dead letters: records that cannot be scored go to the dead-letter topic unchanged (same key,
//! same bytes), with headers saying why and where they came from, so nothing is dropped
//! silently and they can be replayed once fixed.

use rdkafka::message::{Header, OwnedHeaders};

use super::SourceRef;
use crate::detect::features::Rejection;

/// Header names, prefixed so they never collide with the producer's own headers.
pub const REASON: &str = "anomalyd-reason";
pub const ERROR: &str = "anomalyd-error";
pub const SOURCE_TOPIC: &str = "anomalyd-source-topic";
pub const SOURCE_PARTITION: &str = "anomalyd-source-partition";
pub const SOURCE_OFFSET: &str = "anomalyd-source-offset";

/// The headers of a dead letter: the reason code, the exact error, and the source position.
pub fn headers(rejection: &Rejection, from: &SourceRef<'_>) -> OwnedHeaders {
    let partition = from.partition.to_string();
    let offset = from.offset.to_string();
    let error = rejection.to_string();
    OwnedHeaders::new_with_capacity(5)
        .insert(Header {
            key: REASON,
            value: Some(rejection.reason()),
        })
        .insert(Header {
            key: ERROR,
            value: Some(&error),
        })
        .insert(Header {
            key: SOURCE_TOPIC,
            value: Some(from.topic),
        })
        .insert(Header {
            key: SOURCE_PARTITION,
            value: Some(&partition),
        })
        .insert(Header {
            key: SOURCE_OFFSET,
            value: Some(&offset),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;

    #[test]
    fn headers_name_reason_and_source() {
        let h = headers(
            &Rejection::MissingFeature("field \"data\"".into()),
            &SourceRef {
                topic: "transactions",
                partition: 2,
                offset: 41,
            },
        );
        let pairs: Vec<(String, String)> = h
            .iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    String::from_utf8_lossy(h.value.unwrap()).into_owned(),
                )
            })
            .collect();
        assert_eq!(
            pairs,
            [
                (REASON.into(), "missing_feature".into()),
                (ERROR.into(), "missing feature field \"data\"".into()),
                (SOURCE_TOPIC.into(), "transactions".into()),
                (SOURCE_PARTITION.into(), "2".into()),
                (SOURCE_OFFSET.into(), "41".into()),
            ]
        );
    }
}
