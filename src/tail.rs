//! `anomalyd tail TOPIC`: prints a topic's records as JSON lines, for people and for scripts.
//!
//! It reads in a throw-away consumer group of its own and never commits, so it neither disturbs
//! nor is disturbed by the daemon's group.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use serde_json::{Value, json};
use thiserror::Error;

use crate::config::KafkaConfig;

#[derive(Debug, Error)]
pub enum TailError {
    #[error("could not create the consumer: {0}")]
    Create(KafkaError),
    #[error("could not subscribe to {topic}: {source}")]
    Subscribe { topic: String, source: KafkaError },
    #[error("could not write the output: {0}")]
    Output(#[from] std::io::Error),
}

#[derive(Debug, Clone)]
pub struct TailOptions {
    pub topic: String,
    pub from_beginning: bool,
    /// Stop after this many records.
    pub limit: Option<u64>,
    pub pretty: bool,
}

/// One record as printed: a JSON payload as itself, anything else as a string, with headers
/// (dead letters carry their reason there) when there are any.
pub fn render(m: &impl Message) -> Value {
    let payload = m.payload().map(|p| {
        serde_json::from_slice::<Value>(p)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(p).into_owned()))
    });
    let Some(headers) = m.headers() else {
        return payload.unwrap_or(Value::Null);
    };
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|h| {
            let v = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
            (h.key.to_owned(), json!(v))
        })
        .collect();
    json!({
        "key": m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        "headers": headers,
        "partition": m.partition(),
        "offset": m.offset(),
        "value": payload,
    })
}

/// Prints records until `limit` is reached or `stop` completes.
pub async fn tail(
    kafka: &KafkaConfig,
    opts: &TailOptions,
    out: &mut impl Write,
    stop: impl std::future::Future<Output = ()>,
) -> Result<u64, TailError> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let group = format!("anomalyd-tail-{}-{nanos}", std::process::id());
    let mut cfg = crate::kafka::consumer_config(kafka, &group);
    cfg.set("enable.auto.commit", "false").set(
        "auto.offset.reset",
        if opts.from_beginning {
            "earliest"
        } else {
            "latest"
        },
    );
    let consumer: StreamConsumer = cfg.create().map_err(TailError::Create)?;
    consumer
        .subscribe(&[&opts.topic])
        .map_err(|source| TailError::Subscribe {
            topic: opts.topic.clone(),
            source,
        })?;
    tokio::pin!(stop);
    let mut printed = 0;
    while opts.limit.is_none_or(|n| printed < n) {
        let m = tokio::select! {
            _ = &mut stop => break,
            m = consumer.recv() => m,
        };
        match m {
            Ok(m) => {
                let v = render(&m);
                if opts.pretty {
                    serde_json::to_writer_pretty(&mut *out, &v).map_err(std::io::Error::from)?;
                } else {
                    serde_json::to_writer(&mut *out, &v).map_err(std::io::Error::from)?;
                }
                writeln!(out)?;
                out.flush()?;
                printed += 1;
            }
            Err(e) => tracing::warn!(error = %e, "tail"),
        }
    }
    Ok(printed)
}
