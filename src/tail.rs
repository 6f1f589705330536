//! `anomalyd tail TOPIC`: prints a topic's records as JSON lines, for people and for scripts,
//! like Unix `tail`: the last N records (10 by default), or every record (`--from-beginning`),
//! then, with `--follow`, new records as they arrive.
//!
//! It assigns itself every partition explicitly (no consumer-group subscription, so no
//! rebalance to wait for) and never commits, so it neither disturbs nor is disturbed by the
//! daemon's group. The last N are found from each partition's watermarks: partition `p`
//! contributes its records from `max(low, high - N)` to `high`, and the newest N of those, by
//! timestamp (then partition and offset), are printed oldest first. tansu answers ListOffsets
//! for earliest and latest only, which is all this needs. Reading stops once every partition
//! has reached the high watermark it had at the start; a partition that makes no progress for
//! [`STALL`] is an error, never a silent hang.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use thiserror::Error;

use crate::config::KafkaConfig;
use crate::exit;
use crate::record::{self, Raw, Record};

/// How long the broker may take to answer a metadata or watermark request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long reading the existing records may go without a record or an end-of-partition
/// before `tail` gives up, naming the partitions it waited for.
pub const STALL: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum TailError {
    #[error("could not create the consumer: {0}")]
    Create(KafkaError),
    #[error("no topic {topic:?} on {brokers}")]
    NoTopic { topic: String, brokers: String },
    #[error("no answer from the brokers {brokers} about topic {topic:?}: {reason}")]
    Unreachable {
        topic: String,
        brokers: String,
        /// librdkafka's error, as text.
        reason: String,
    },
    #[error("could not read topic {topic:?}: {source}")]
    Read { topic: String, source: KafkaError },
    #[error(
        "no progress reading topic {topic:?} for {}s: still waiting for {}{}",
        STALL.as_secs(),
        waiting.join(", "),
        last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
    )]
    Stalled {
        topic: String,
        /// `partition N at offset O of H`.
        waiting: Vec<String>,
        last_error: Option<String>,
    },
    #[error("could not write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl TailError {
    /// 66 (EX_NOINPUT) for a topic that does not exist, 69 (EX_UNAVAILABLE) for brokers that
    /// do not answer or stop answering, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NoTopic { .. } => exit::NO_INPUT,
            Self::Unreachable { .. } | Self::Stalled { .. } => exit::UNAVAILABLE,
            Self::Create(_) | Self::Read { .. } | Self::Output(_) => exit::FAILURE,
        }
    }
}

/// Where to start, and whether to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The newest N records of the topic.
    Last(u64),
    /// Every record still kept.
    Beginning,
}

#[derive(Debug, Clone)]
pub struct TailOptions {
    pub topic: String,
    pub start: Start,
    /// After the existing records, print new ones until `stop`.
    pub follow: bool,
    pub pretty: bool,
}

/// One record as printed, as one line of JSON text: a JSON payload as itself, exactly as sent
/// but for whitespace between tokens (numbers such as `1e400` or `0.1000000000000000055`,
/// repeated keys and key order are never converted; a leading byte-order mark is dropped),
/// anything else as a string; with headers (dead letters carry their reason there) when there
/// are any.
pub fn render(m: &impl Message) -> String {
    let payload = m.payload().map(|p| match Record::parse(Some(p)) {
        Ok(r) => record::reformat(r.text(), false),
        Err(_) => Value::String(String::from_utf8_lossy(p).into_owned()).to_string(),
    });
    let Some(headers) = m.headers() else {
        return payload.unwrap_or_else(|| "null".into());
    };
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|h| {
            let v = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
            (h.key.to_owned(), json!(v))
        })
        .collect();
    #[derive(serde::Serialize)]
    struct Envelope<'a> {
        key: Option<String>,
        headers: serde_json::Map<String, Value>,
        partition: i32,
        offset: i64,
        value: Option<Raw<'a>>,
    }
    serde_json::to_string(&Envelope {
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        headers,
        partition: m.partition(),
        offset: m.offset(),
        value: payload.as_deref().map(Raw),
    })
    .expect("an envelope of strings and checked JSON serialises")
}

/// One partition's offsets at the start: `low` is the oldest kept, `high` the next to be
/// written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
}

/// Where to start reading each partition: `max(low, high - n)` for the last `n`, `low` for
/// the beginning, `high` when only following.
pub fn start_offset(w: &Watermarks, start: Start, follow: bool) -> i64 {
    match start {
        Start::Beginning => w.low,
        Start::Last(0) if follow => w.high,
        Start::Last(n) => w.high.saturating_sub(n as i64).max(w.low),
    }
}

/// The newest `n` of `records` (gathered from several partitions), oldest first: ordered by
/// timestamp, then partition and offset, as Kafka has no order across partitions.
pub fn last_n(mut records: Vec<OwnedMessage>, n: u64) -> Vec<OwnedMessage> {
    records.sort_by_key(|m| {
        (
            m.timestamp().to_millis().unwrap_or(i64::MIN),
            m.partition(),
            m.offset(),
        )
    });
    let skip = records.len().saturating_sub(n as usize);
    records.split_off(skip)
}

/// Prints the records `opts` asks for, then follows until `stop` completes when asked to.
/// Returns how many records were printed.
///
/// Errors: [`TailError::NoTopic`] when the topic does not exist, [`TailError::Unreachable`]
/// when the brokers do not answer within [`REQUEST_TIMEOUT`], [`TailError::Stalled`] when the
/// existing records stop arriving for [`STALL`].
pub async fn tail(
    kafka: &KafkaConfig,
    opts: &TailOptions,
    out: &mut impl Write,
    stop: impl std::future::Future<Output = ()>,
) -> Result<u64, TailError> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Never used to commit or join: librdkafka wants a group id on every consumer.
    let group = format!("anomalyd-tail-{}-{nanos}", std::process::id());
    let mut cfg = crate::kafka::consumer_config(kafka, &group);
    cfg.set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    let consumer: Arc<StreamConsumer> = Arc::new(cfg.create().map_err(TailError::Create)?);

    let marks = {
        let (consumer, topic, brokers) = (
            Arc::clone(&consumer),
            opts.topic.clone(),
            kafka.brokers.clone(),
        );
        tokio::task::spawn_blocking(move || watermarks(&consumer, &topic, &brokers))
            .await
            .map_err(|e| TailError::Output(std::io::Error::other(e)))??
    };

    let mut assignment = TopicPartitionList::new();
    // Partitions with records to read before following: partition -> high watermark.
    let mut pending: BTreeMap<i32, i64> = BTreeMap::new();
    let mut position: BTreeMap<i32, i64> = BTreeMap::new();
    for w in &marks {
        let from = start_offset(w, opts.start, opts.follow);
        assignment
            .add_partition_offset(&opts.topic, w.partition, Offset::Offset(from))
            .map_err(|source| read_error(opts, source))?;
        if from < w.high {
            pending.insert(w.partition, w.high);
        }
        position.insert(w.partition, from);
    }
    if pending.is_empty() && !opts.follow {
        return Ok(0);
    }
    consumer
        .assign(&assignment)
        .map_err(|source| read_error(opts, source))?;

    tokio::pin!(stop);
    let mut printed = 0;
    // The last N are gathered, then sorted; records past a partition's starting high
    // watermark (written meanwhile) come after them, as they arrived.
    let mut gathered = Vec::new();
    let mut newer = Vec::new();
    let mut last_error: Option<String> = None;
    // Moved on by records and ends of partitions only: errors repeating are no progress.
    let mut deadline = tokio::time::Instant::now() + STALL;
    while !pending.is_empty() {
        let m = tokio::select! {
            _ = &mut stop => return Ok(printed),
            _ = tokio::time::sleep_until(deadline) => {
                return Err(TailError::Stalled {
                    topic: opts.topic.clone(),
                    waiting: pending
                        .iter()
                        .map(|(p, high)| format!("partition {p} at offset {} of {high}", position[p]))
                        .collect(),
                    last_error,
                });
            }
            m = consumer.recv() => m,
        };
        if matches!(m, Ok(_) | Err(KafkaError::PartitionEOF(_))) {
            deadline = tokio::time::Instant::now() + STALL;
        }
        match m {
            Ok(m) => {
                let (p, offset) = (m.partition(), m.offset());
                position.insert(p, offset + 1);
                let high = pending.get(&p).copied();
                if high.is_some_and(|h| offset + 1 >= h) {
                    pending.remove(&p);
                }
                let m = m.detach();
                match (opts.start, high.is_some_and(|h| offset < h)) {
                    (Start::Last(_), true) => gathered.push(m),
                    (Start::Last(_), false) => newer.push(m),
                    (Start::Beginning, _) => {
                        print(out, &m, opts.pretty)?;
                        printed += 1;
                    }
                }
            }
            Err(KafkaError::PartitionEOF(p)) => {
                pending.remove(&p);
            }
            Err(e) => last_error = Some(e.to_string()),
        }
    }
    if let Start::Last(n) = opts.start {
        for m in last_n(gathered, n).iter().chain(&newer) {
            print(out, m, opts.pretty)?;
            printed += 1;
        }
    }
    if !opts.follow {
        return Ok(printed);
    }

    let mut last_error = String::new();
    loop {
        let m = tokio::select! {
            _ = &mut stop => return Ok(printed),
            m = consumer.recv() => m,
        };
        match m {
            Ok(m) => {
                print(out, &m, opts.pretty)?;
                printed += 1;
            }
            Err(KafkaError::PartitionEOF(_)) => {}
            // Said once, not once per retry: a broker that is down repeats itself.
            Err(e) => {
                let e = e.to_string();
                if e != last_error {
                    // Not eprintln!: a closed stderr must not panic the tail.
                    let _ = writeln!(std::io::stderr(), "anomalyd: tail {}: {e}", opts.topic);
                    last_error = e;
                }
            }
        }
    }
}

fn read_error(opts: &TailOptions, source: KafkaError) -> TailError {
    TailError::Read {
        topic: opts.topic.clone(),
        source,
    }
}

/// The topic's partitions and their watermarks; blocking.
fn watermarks(
    consumer: &StreamConsumer,
    topic: &str,
    brokers: &str,
) -> Result<Vec<Watermarks>, TailError> {
    let unreachable = |e: KafkaError| TailError::Unreachable {
        topic: topic.to_owned(),
        brokers: brokers.to_owned(),
        reason: e.to_string(),
    };
    let no_topic = || TailError::NoTopic {
        topic: topic.to_owned(),
        brokers: brokers.to_owned(),
    };
    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(unreachable)?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(no_topic());
    };
    match t.error().map(RDKafkaErrorCode::from) {
        None => {}
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            return Err(no_topic());
        }
        Some(code) => {
            return Err(TailError::Read {
                topic: topic.to_owned(),
                source: KafkaError::MetadataFetch(code),
            });
        }
    }
    if t.partitions().is_empty() {
        return Err(no_topic());
    }
    t.partitions()
        .iter()
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), REQUEST_TIMEOUT)
                .map_err(unreachable)?;
            Ok(Watermarks {
                partition: p.id(),
                low,
                high,
            })
        })
        .collect()
}

/// One record as one JSON line (or several, pretty), flushed at once for pipes.
fn print(out: &mut impl Write, m: &impl Message, pretty: bool) -> Result<(), TailError> {
    let line = render(m);
    if pretty {
        writeln!(out, "{}", record::reformat(&line, true))?;
    } else {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn msg(partition: i32, offset: i64, ts: i64) -> OwnedMessage {
        OwnedMessage::new(
            Some(format!("{partition}/{offset}").into_bytes()),
            None,
            "t".into(),
            Timestamp::CreateTime(ts),
            partition,
            offset,
            None,
        )
    }

    fn with_payload(
        payload: &[u8],
        headers: Option<rdkafka::message::OwnedHeaders>,
    ) -> OwnedMessage {
        OwnedMessage::new(
            Some(payload.to_vec()),
            Some(b"k".to_vec()),
            "t".into(),
            Timestamp::CreateTime(1),
            0,
            3,
            headers,
        )
    }

    #[test]
    fn payloads_print_as_sent_whatever_their_numbers() {
        let sent = "\u{feff}{\"id\": 1, \"n\": 1e400, \"p\": 0.1000000000000000055, \"n\": -0.0,\n \"big\": 12345678901234567890123}";
        let m = with_payload(sent.as_bytes(), None);
        assert_eq!(
            render(&m),
            r#"{"id":1,"n":1e400,"p":0.1000000000000000055,"n":-0.0,"big":12345678901234567890123}"#
        );
        let mut out = Vec::new();
        print(&mut out, &m, true).unwrap();
        let pretty = String::from_utf8(out).unwrap();
        assert!(
            pretty.starts_with("{\n  \"id\": 1,\n  \"n\": 1e400,"),
            "{pretty}"
        );
        assert!(
            pretty.ends_with("\"big\": 12345678901234567890123\n}\n"),
            "{pretty}"
        );

        let h = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: "anomalyd-reason",
            value: Some("not_json"),
        });
        let letter = render(&with_payload(b"{\"x\": 1e400}", Some(h.clone())));
        assert!(letter.ends_with(r#""value":{"x":1e400}}"#), "{letter}");
        let text = render(&with_payload(b"not json", Some(h)));
        assert!(text.ends_with(r#""value":"not json"}"#), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["headers"]["anomalyd-reason"], "not_json");
        assert_eq!(v["key"], "k");
    }

    #[test]
    fn start_offsets_follow_unix_tail() {
        let w = Watermarks {
            partition: 0,
            low: 5,
            high: 20,
        };
        assert_eq!(start_offset(&w, Start::Last(3), false), 17);
        assert_eq!(start_offset(&w, Start::Last(3), true), 17);
        // Fewer kept than asked for: from the oldest kept.
        assert_eq!(start_offset(&w, Start::Last(100), false), 5);
        assert_eq!(start_offset(&w, Start::Last(0), false), 20);
        // -f alone: only what comes next.
        assert_eq!(start_offset(&w, Start::Last(0), true), 20);
        assert_eq!(start_offset(&w, Start::Beginning, false), 5);
        let empty = Watermarks {
            partition: 1,
            low: 0,
            high: 0,
        };
        assert_eq!(start_offset(&empty, Start::Last(10), false), 0);
    }

    #[test]
    fn last_n_orders_by_time_then_partition_and_offset() {
        let records = vec![
            msg(0, 7, 100),
            msg(1, 3, 300),
            msg(0, 8, 400),
            msg(1, 2, 100),
            msg(2, 9, 300),
        ];
        let got: Vec<(i32, i64)> = last_n(records.clone(), 3)
            .iter()
            .map(|m| (m.partition(), m.offset()))
            .collect();
        assert_eq!(got, [(1, 3), (2, 9), (0, 8)]);
        assert_eq!(last_n(records.clone(), 10).len(), 5);
        assert!(last_n(records, 0).is_empty());
    }

    #[test]
    fn exit_codes_say_missing_topic_or_unavailable_broker() {
        let no_topic = TailError::NoTopic {
            topic: "t".into(),
            brokers: "b:1".into(),
        };
        assert_eq!(no_topic.exit_code(), 66);
        assert_eq!(no_topic.to_string(), "no topic \"t\" on b:1");
        let stalled = TailError::Stalled {
            topic: "t".into(),
            waiting: vec!["partition 0 at offset 3 of 9".into()],
            last_error: None,
        };
        assert_eq!(stalled.exit_code(), 69);
        assert!(stalled.to_string().contains("partition 0 at offset 3 of 9"));
    }
}
