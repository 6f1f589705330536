//! An anomaly record, as written by [`crate::sinks::anomalies::write_anomaly`], turned into a
//! store row: the columns an operator filters on, read from anomalyd's additions, and the whole
//! record beside them, as read. The source record's own values are never converted (a number
//! such as `1e400` is fine); only the event-time field, when configured, is read from it.

use serde::Deserialize;
use serde::de::IgnoredAny;
use thiserror::Error;

use crate::record::{self, Record, RecordError};
use crate::sinks::anomalies::{Layout, RESERVED, WRAPPED_RECORD};

#[derive(Debug, Error)]
pub enum RowError {
    #[error("not an anomaly record: not JSON: {0}")]
    NotJson(#[from] RecordError),
    #[error("not an anomaly record: no top-level \"anomalyd\" object")]
    NoAdditions,
    #[error("not an anomaly record: its \"anomalyd\" object: {0}")]
    Additions(#[from] serde_json::Error),
}

/// Where a row's event time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventTimeSource {
    /// The configured `event_time_field` of the record (RFC 3339).
    Field,
    /// The anomaly's Kafka timestamp: no field configured, or it was missing or unparseable.
    Kafka,
}

impl EventTimeSource {
    /// The value of the `event_time_source` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Field => "field",
            Self::Kafka => "kafka",
        }
    }
}

/// One anomaly as a row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The anomaly's Kafka key (the source record's key), as UTF-8 (invalid bytes replaced).
    pub key: Option<String>,
    pub detector: String,
    /// Milliseconds since the Unix epoch.
    pub event_time_ms: i64,
    pub event_time_source: EventTimeSource,
    /// Milliseconds since the Unix epoch (anomalyd's `detected_at`).
    pub detected_at_ms: i64,
    pub score: f64,
    pub decision: f64,
    pub model_id: String,
    pub model_kind: String,
    /// The rules that fired, comma-separated, in the order of the explanation (empty for a
    /// model).
    pub rules: String,
    /// The anomaly record, as read.
    pub record: String,
}

#[derive(Deserialize)]
struct Additions {
    #[serde(default)]
    detector: String,
    score: f64,
    decision: f64,
    model: ModelRef,
    detected_at: String,
    #[serde(default)]
    explanation: Vec<Entry>,
    layout: Layout,
}

#[derive(Deserialize)]
struct ModelRef {
    id: String,
    #[serde(default)]
    kind: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Entry {
    Rule {
        rule: String,
    },
    #[allow(dead_code)] // Only its being something else matters.
    Other(IgnoredAny),
}

/// The place and time of a record on an anomalies topic.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// The record's Kafka timestamp, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

impl Row {
    /// The row of the anomaly record `payload` read at `at` with Kafka key `key`;
    /// `event_time_field` is a JSON pointer into the source record.
    pub fn parse(
        at: At<'_>,
        key: Option<&[u8]>,
        payload: &[u8],
        event_time_field: Option<&str>,
    ) -> Result<Self, RowError> {
        let record = Record::parse(Some(payload))?;
        let additions = record.get(RESERVED).ok_or(RowError::NoAdditions)?;
        let a: Additions = serde_json::from_str(additions)?;
        let from_field = event_time_field.and_then(|pointer| {
            let text = match a.layout {
                Layout::Inline => record.pointer(pointer),
                Layout::Wrapped | Layout::Csv => {
                    Record::parse(Some(record.get(WRAPPED_RECORD)?.as_bytes()))
                        .ok()?
                        .pointer(pointer)
                }
            }?;
            rfc3339_ms(&record::string(text)?)
        });
        let (event_time_ms, event_time_source) = match from_field {
            Some(ms) => (ms, EventTimeSource::Field),
            None => (at.timestamp_ms, EventTimeSource::Kafka),
        };
        let rules: Vec<String> = a
            .explanation
            .into_iter()
            .filter_map(|e| match e {
                Entry::Rule { rule } => Some(rule),
                Entry::Other(_) => None,
            })
            .collect();
        Ok(Self {
            topic: at.topic.to_owned(),
            partition: at.partition,
            offset: at.offset,
            key: key.map(|k| String::from_utf8_lossy(k).into_owned()),
            detector: a.detector,
            event_time_ms,
            event_time_source,
            detected_at_ms: rfc3339_ms(&a.detected_at).unwrap_or(at.timestamp_ms),
            score: a.score,
            decision: a.decision,
            model_id: a.model.id,
            model_kind: a.model.kind,
            rules: rules.join(","),
            // `Record::parse` checked the payload is UTF-8 JSON.
            record: record.text().to_owned(),
        })
    }
}

/// An RFC 3339 time (any offset) as milliseconds since the Unix epoch.
pub fn rfc3339_ms(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Milliseconds since the Unix epoch as RFC 3339, UTC, with milliseconds.
pub fn format_ms(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => ms.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const INLINE: &str = r#"{"sensor_id":"s-1","temperature":41.5,"timestamp":"2026-03-01T10:00:00+01:00","big":1e400,"anomalyd":{"detector":"sensors","score":1.0,"decision":-1.0,"model":{"id":"abc","kind":"rules"},"source":{"topic":"sensor-data","partition":0,"offset":7},"detected_at":"2026-03-01T09:00:05.123Z","explanation":[{"rule":"hot"},{"rule":"high_pressure"}],"layout":"inline"}}"#;

    pub(crate) fn at(offset: i64) -> At<'static> {
        At {
            topic: "sensor-anomalies",
            partition: 0,
            offset,
            timestamp_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn an_inline_anomaly_becomes_a_row() {
        let r = Row::parse(at(3), Some(b"s-1"), INLINE.as_bytes(), Some("/timestamp")).unwrap();
        assert_eq!(r.detector, "sensors");
        assert_eq!(r.key.as_deref(), Some("s-1"));
        assert_eq!(r.event_time_source, EventTimeSource::Field);
        assert_eq!(format_ms(r.event_time_ms), "2026-03-01T09:00:00.000Z");
        assert_eq!(format_ms(r.detected_at_ms), "2026-03-01T09:00:05.123Z");
        assert_eq!((r.score, r.decision), (1.0, -1.0));
        assert_eq!(
            (r.model_id.as_str(), r.model_kind.as_str()),
            ("abc", "rules")
        );
        assert_eq!(r.rules, "hot,high_pressure");
        assert_eq!(r.record, INLINE, "the record is kept as read");
    }

    #[test]
    fn a_missing_or_bad_event_time_falls_back_to_kafka_and_says_so() {
        for field in [
            None,
            Some("/nope"),
            Some("/temperature"),
            Some("/sensor_id"),
        ] {
            let r = Row::parse(at(3), None, INLINE.as_bytes(), field).unwrap();
            assert_eq!(r.event_time_source, EventTimeSource::Kafka, "{field:?}");
            assert_eq!(r.event_time_ms, 1_700_000_000_000);
        }
    }

    #[test]
    fn a_wrapped_anomaly_reads_its_event_time_inside_record() {
        let text = r#"{"record":{"timestamp":"2026-03-01T00:00:00Z","anomalyd":1},"anomalyd":{"detector":"d","score":-0.7,"decision":-0.1,"model":{"id":"m","kind":"isolation_forest"},"source":{"topic":"t","partition":0,"offset":1},"detected_at":"2026-03-01T00:00:01.000Z","explanation":[{"feature":"x","value":1.0}],"layout":"wrapped"}}"#;
        let r = Row::parse(at(1), None, text.as_bytes(), Some("/timestamp")).unwrap();
        assert_eq!(r.event_time_source, EventTimeSource::Field);
        assert_eq!(format_ms(r.event_time_ms), "2026-03-01T00:00:00.000Z");
        assert_eq!(r.rules, "");
    }

    #[test]
    fn what_is_not_an_anomaly_is_an_error() {
        assert!(matches!(
            Row::parse(at(0), None, b"nope", None),
            Err(RowError::NotJson(_))
        ));
        assert!(matches!(
            Row::parse(at(0), None, b"{\"a\":1}", None),
            Err(RowError::NoAdditions)
        ));
        assert!(matches!(
            Row::parse(at(0), None, b"{\"anomalyd\":{}}", None),
            Err(RowError::Additions(_))
        ));
    }
}
