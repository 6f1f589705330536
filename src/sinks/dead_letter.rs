//! Dead letters: records that cannot be scored go to the dead-letter topic unchanged (same key,
//! same bytes), with headers saying why and where they came from, so nothing is dropped
//! silently and they can be replayed once fixed.
//!
//! A record whose output (its anomaly, or its dead letter) the producer cannot take, because it
//! is larger than `message.max.bytes` or the broker refuses it for its content, becomes a dead
//! letter with reason [`TOO_LARGE`] (or [`REFUSED`]), its value cut to fit, and
//! [`ORIGINAL_SIZE`] and [`ORIGINAL_REASON`] saying what it was.

use rdkafka::message::{Header, Headers, OwnedHeaders};

use super::SourceRef;
use crate::detect::features::Rejection;

/// Header names, prefixed so they never collide with the producer's own headers.
pub const REASON: &str = "anomalyd-reason";
pub const ERROR: &str = "anomalyd-error";
pub const SOURCE_TOPIC: &str = "anomalyd-source-topic";
pub const SOURCE_PARTITION: &str = "anomalyd-source-partition";
pub const SOURCE_OFFSET: &str = "anomalyd-source-offset";
/// The source record's value size in bytes, when the dead letter carries less of it.
pub const ORIGINAL_SIZE: &str = "anomalyd-original-size";
/// What the record's output was meant to be: `anomaly`, `scored` (its record for the scored
/// topic), or a dead-letter reason code.
pub const ORIGINAL_REASON: &str = "anomalyd-original-reason";
/// For an anomaly or a scored record: anomalyd's additions (its `anomalyd` member).
pub const DETECTION: &str = "anomalyd-detection";

/// The reason of a record whose output is larger than the producer or broker takes.
pub const TOO_LARGE: &str = "too_large";
/// The reason of a record whose output the broker refuses for its content otherwise (an
/// invalid record or timestamp).
pub const REFUSED: &str = "refused";

/// Every dead-letter reason code: the [`Rejection`] reasons, then [`TOO_LARGE`] and
/// [`REFUSED`].
pub const REASONS: [&str; 11] = [
    Rejection::REASONS[0],
    Rejection::REASONS[1],
    Rejection::REASONS[2],
    Rejection::REASONS[3],
    Rejection::REASONS[4],
    Rejection::REASONS[5],
    Rejection::REASONS[6],
    Rejection::REASONS[7],
    Rejection::REASONS[8],
    TOO_LARGE,
    REFUSED,
];

/// The headers of a dead letter: the reason code, the exact error, and the source position.
pub fn headers(rejection: &Rejection, from: &SourceRef<'_>) -> OwnedHeaders {
    letter_headers(rejection.reason(), &rejection.to_string(), from)
}

/// Headers with reason code `reason` and error text `error`.
pub fn letter_headers(reason: &str, error: &str, from: &SourceRef<'_>) -> OwnedHeaders {
    let partition = from.partition.to_string();
    let offset = from.offset.to_string();
    OwnedHeaders::new_with_capacity(8)
        .insert(Header {
            key: REASON,
            value: Some(reason),
        })
        .insert(Header {
            key: ERROR,
            value: Some(error),
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

/// The extra headers of a [`TOO_LARGE`] or [`REFUSED`] letter.
pub fn with_original(
    headers: OwnedHeaders,
    original_size: usize,
    original_reason: &str,
    detection: Option<&[u8]>,
) -> OwnedHeaders {
    let size = original_size.to_string();
    let headers = headers
        .insert(Header {
            key: ORIGINAL_SIZE,
            value: Some(&size),
        })
        .insert(Header {
            key: ORIGINAL_REASON,
            value: Some(original_reason),
        });
    match detection {
        Some(d) => headers.insert(Header {
            key: DETECTION,
            value: Some(d),
        }),
        None => headers,
    }
}

/// librdkafka's most overhead of one record on the wire, besides key, value and headers
/// (`RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD`: length, attributes, timestamp and offset deltas, key
/// and value lengths, header count, as varints at their widest).
pub const RECORD_OVERHEAD: usize = 5 + 1 + 10 + 5 + 5 + 5 + 5;

/// The size librdkafka checks against `message.max.bytes` before it takes a record
/// (`rd_kafka_msg_max_wire_size`): [`RECORD_OVERHEAD`] + key + value + the headers as
/// serialised (each name and value with its zig-zag varint length).
pub fn wire_size(key: usize, value: usize, headers: Option<&OwnedHeaders>) -> usize {
    let varint = |n: usize| {
        let mut z = (n as u64) << 1; // zig-zag of a non-negative length
        let mut bytes = 1;
        while z >= 0x80 {
            z >>= 7;
            bytes += 1;
        }
        bytes
    };
    let headers: usize = headers.map_or(0, |h| {
        h.iter()
            .map(|h| {
                let v = h.value.map_or(0, <[u8]>::len);
                h.key.len() + varint(h.key.len()) + v + varint(v)
            })
            .sum()
    });
    RECORD_OVERHEAD + key + value + headers
}

/// The longest prefix of `value` of at most `max` bytes, ending on a character boundary when
/// the value is text, so a cut value stays readable.
pub fn cut(value: &[u8], max: usize) -> &[u8] {
    if value.len() <= max {
        return value;
    }
    let head = &value[..max];
    match std::str::from_utf8(head) {
        // Only the last character was split: drop its first bytes.
        Err(e) if e.error_len().is_none() => &head[..e.valid_up_to()],
        _ => head,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;

    #[test]
    fn wire_size_is_librdkafkas() {
        assert_eq!(wire_size(0, 0, None), 36);
        assert_eq!(wire_size(3, 100, None), 139);
        // A header "ab" = "xyz": 2 + 1 + 3 + 1.
        let h = OwnedHeaders::new().insert(Header {
            key: "ab",
            value: Some("xyz"),
        });
        assert_eq!(wire_size(0, 0, Some(&h)), 36 + 7);
        // Lengths of 64 and more take two varint bytes (zig-zag doubles them).
        let long = "x".repeat(64);
        let h = OwnedHeaders::new().insert(Header {
            key: "k",
            value: Some(&long),
        });
        assert_eq!(wire_size(0, 0, Some(&h)), 36 + 1 + 1 + 64 + 2);
    }

    #[test]
    fn cuts_keep_characters_whole() {
        assert_eq!(cut(b"abc", 10), b"abc");
        assert_eq!(cut(b"abcdef", 4), b"abcd");
        assert_eq!(cut("aé".as_bytes(), 2), b"a", "é is two bytes");
        assert_eq!(
            cut(b"\xff\xfe\xfd", 2),
            b"\xff\xfe",
            "binary is cut anywhere"
        );
    }

    #[test]
    fn reasons_list_every_rejection() {
        for r in Rejection::REASONS {
            assert!(REASONS.contains(&r));
        }
    }

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
