//! `anomalyd query`: which rows ([`Filter`]), times given as RFC 3339 or as an age (`15m`,
//! `2h`, `7d`, before now), and the three outputs: a table, JSON lines, or counts per interval.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::value::RawValue;
use thiserror::Error;

use super::postgres::PostgresStore;
use super::row::{format_ms, rfc3339_ms};
use super::sqlite::SqliteStore;
use super::{Store, StoreBackend, StoreConfig, StoreError, StoredRow};

#[derive(Debug, Error)]
pub enum QueryError {
    #[error(
        "{flag} {value:?}: neither an RFC 3339 time (2026-03-01T10:00:00Z) nor an age (15m, 2h, 7d)"
    )]
    Time { flag: &'static str, value: String },
    #[error("--where {0:?}: expected field=value, e.g. sensor_id=s-17")]
    Where(String),
    #[error("--by {0:?}: expected an interval such as 1m, 15m, 1h")]
    Interval(String),
}

/// Which rows a query returns. `Default` matches every row, with no limit set (0).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub detector: Option<String>,
    /// The anomaly's Kafka key.
    pub key: Option<String>,
    /// Event time at or after, milliseconds since the Unix epoch.
    pub since_ms: Option<i64>,
    /// Event time before, milliseconds since the Unix epoch.
    pub until_ms: Option<i64>,
    /// `(field, value)`: the record's field (`a.b` for a member of an object) equals value.
    pub wheres: Vec<(String, String)>,
    /// Only rows with `decision < 0`.
    pub anomalies_only: bool,
    /// Most rows returned (not used by counts).
    pub limit: usize,
}

/// `--since`/`--until`: an RFC 3339 time (any offset), or an age before `now_ms` (`15m`,
/// `2h`, `7d`, `1h30m`; humantime's units), as milliseconds since the Unix epoch.
pub fn parse_time(flag: &'static str, value: &str, now_ms: i64) -> Result<i64, QueryError> {
    if let Some(ms) = rfc3339_ms(value) {
        return Ok(ms);
    }
    humantime::parse_duration(value)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .map(|age| now_ms.saturating_sub(age))
        .ok_or_else(|| QueryError::Time {
            flag,
            value: value.to_owned(),
        })
}

/// `--where field=value`.
pub fn parse_where(text: &str) -> Result<(String, String), QueryError> {
    match text.split_once('=') {
        Some((f, v)) if !f.trim().is_empty() => Ok((f.trim().to_owned(), v.to_owned())),
        _ => Err(QueryError::Where(text.to_owned())),
    }
}

/// `--by`: an interval, in milliseconds (at least one).
pub fn parse_interval(text: &str) -> Result<i64, QueryError> {
    humantime::parse_duration(text)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .filter(|&ms| ms >= 1)
        .ok_or_else(|| QueryError::Interval(text.to_owned()))
}

/// Writes `rows` as an aligned table with a header.
pub fn write_table(out: &mut impl Write, rows: &[StoredRow]) -> io::Result<()> {
    let header = [
        "EVENT_TIME",
        "DETECTOR",
        "KEY",
        "SCORE",
        "DECISION",
        "RULES/MODEL",
        "AT",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let event = match r.event_time_source.as_str() {
                "field" => format_ms(r.event_time_ms),
                _ => format!("{} (kafka)", format_ms(r.event_time_ms)),
            };
            let why = if r.rules.is_empty() {
                format!("{} {}", r.model_kind, r.model_id)
            } else {
                r.rules.clone()
            };
            [
                event,
                r.detector.clone(),
                r.key.clone().unwrap_or_default(),
                format!("{:.4}", r.score),
                format!("{:.4}", r.decision),
                why,
                format!("{}/{}@{}", r.topic, r.partition, r.offset),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut dyn Write, row: &[&str]| -> io::Result<()> {
        let mut text = String::new();
        for (i, (c, w)) in row.iter().zip(width).enumerate() {
            if i + 1 == row.len() {
                text.push_str(c);
            } else {
                text.push_str(&format!("{c:<w$}  "));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, &header)?;
    for row in &cells {
        line(out, &row.each_ref().map(String::as_str))?;
    }
    Ok(())
}

#[derive(Serialize)]
struct JsonRow<'a> {
    event_time: String,
    event_time_source: &'a str,
    detected_at: String,
    detector: &'a str,
    key: Option<&'a str>,
    score: f64,
    decision: f64,
    model_id: &'a str,
    model_kind: &'a str,
    rules: Vec<&'a str>,
    topic: &'a str,
    partition: i32,
    offset: i64,
    /// The record as stored, not re-encoded.
    record: &'a RawValue,
}

/// Writes `rows` as JSON lines: the columns, and the record as stored under `record`.
pub fn write_json(out: &mut impl Write, rows: &[StoredRow]) -> io::Result<()> {
    for r in rows {
        let record: &RawValue = serde_json::from_str(&r.record).map_err(io::Error::other)?;
        let row = JsonRow {
            event_time: format_ms(r.event_time_ms),
            event_time_source: &r.event_time_source,
            detected_at: format_ms(r.detected_at_ms),
            detector: &r.detector,
            key: r.key.as_deref(),
            score: r.score,
            decision: r.decision,
            model_id: &r.model_id,
            model_kind: &r.model_kind,
            rules: r.rules.split(',').filter(|s| !s.is_empty()).collect(),
            topic: &r.topic,
            partition: r.partition,
            offset: r.offset,
            record,
        };
        serde_json::to_writer(&mut *out, &row).map_err(io::Error::other)?;
        writeln!(out)?;
    }
    Ok(())
}

/// Writes counts per interval: `<interval start, RFC 3339>  <count>`, oldest first.
pub fn write_counts(out: &mut impl Write, counts: &[(i64, u64)]) -> io::Result<()> {
    for (start, n) in counts {
        writeln!(out, "{}  {n}", format_ms(*start))?;
    }
    Ok(())
}

/// What `anomalyd query` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
    /// Counts per interval of this many milliseconds.
    Count {
        bucket_ms: i64,
    },
}

/// `anomalyd query`'s flags, read: the filter and the output.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub filter: Filter,
    pub output: Output,
}

impl Query {
    /// Reads the flags of `anomalyd query`, ages counted back from `now_ms`.
    pub fn from_args(args: &crate::cli::QueryArgs, now_ms: i64) -> Result<Self, QueryError> {
        let time = |flag, v: &Option<String>| {
            v.as_deref()
                .map(|v| parse_time(flag, v, now_ms))
                .transpose()
        };
        let filter = Filter {
            detector: args.detector.clone(),
            key: args.key.clone(),
            since_ms: time("--since", &args.since)?,
            until_ms: time("--until", &args.until)?,
            wheres: args
                .wheres
                .iter()
                .map(|w| parse_where(w))
                .collect::<Result<_, _>>()?,
            anomalies_only: args.anomalies_only,
            limit: args.limit,
        };
        let output = match (&args.by, args.count, args.json) {
            (Some(by), true, _) => Output::Count {
                bucket_ms: parse_interval(by)?,
            },
            (_, _, true) => Output::Json,
            _ => Output::Table,
        };
        Ok(Self { filter, output })
    }

    /// Runs the query on `store` and writes its output to `out`.
    pub fn execute(&self, store: &dyn Store, out: &mut impl Write) -> Result<(), ExecuteError> {
        match self.output {
            Output::Table => write_table(out, &store.select(&self.filter)?)?,
            Output::Json => write_json(out, &store.select(&self.filter)?)?,
            Output::Count { bucket_ms } => {
                write_counts(out, &store.count_by(&self.filter, bucket_ms)?)?
            }
        }
        Ok(out.flush()?)
    }
}

/// Why a query could not be answered.
#[derive(Debug, Error)]
pub enum ExecuteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the result: {0}")]
    Output(#[from] io::Error),
}

/// Opens the store `config` names, read-only, for a query. A missing file, or a PostgreSQL
/// database with no anomaly store in it, is [`OpenError::Missing`] (exit code 66). Blocking:
/// call it off async threads.
pub fn open_for_query(config: &StoreConfig) -> Result<Box<dyn Store>, OpenError> {
    match config.backend {
        StoreBackend::Sqlite => {
            let path = config.db_path();
            if !path.exists() {
                return Err(OpenError::Missing(path.display().to_string()));
            }
            Ok(Box::new(SqliteStore::open_read_only(&path)?))
        }
        StoreBackend::Postgres => match PostgresStore::open_for_query(config)? {
            Some(s) => Ok(Box::new(s)),
            None => Err(OpenError::Missing(config.location())),
        },
    }
}

/// Why the store could not be opened for a query.
#[derive(Debug, Error)]
pub enum OpenError {
    #[error("no anomaly store at {0} (has the daemon run with [store]?)")]
    Missing(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_772_000_000_000;

    #[test]
    fn times_are_rfc3339_or_ages() {
        assert_eq!(
            parse_time("--since", "2026-03-01T10:00:00+01:00", NOW).unwrap(),
            rfc3339_ms("2026-03-01T09:00:00Z").unwrap()
        );
        assert_eq!(parse_time("--since", "15m", NOW).unwrap(), NOW - 900_000);
        assert_eq!(parse_time("--since", "2h", NOW).unwrap(), NOW - 7_200_000);
        assert_eq!(
            parse_time("--since", "7d", NOW).unwrap(),
            NOW - 7 * 86_400_000
        );
        for bad in ["", "yesterday", "2026-03-01", "-5m"] {
            assert!(parse_time("--until", bad, NOW).is_err(), "{bad}");
        }
    }

    #[test]
    fn wheres_and_intervals() {
        assert_eq!(
            parse_where("sensor_id=s=1").unwrap(),
            ("sensor_id".into(), "s=1".into())
        );
        assert!(parse_where("=x").is_err());
        assert!(parse_where("novalue").is_err());
        assert_eq!(parse_interval("1m").unwrap(), 60_000);
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("soon").is_err());
    }

    fn stored() -> StoredRow {
        StoredRow {
            topic: "t".into(),
            partition: 1,
            offset: 9,
            detector: "sensors".into(),
            key: Some("s-1".into()),
            event_time_ms: 60_000,
            event_time_source: "kafka".into(),
            detected_at_ms: 61_000,
            score: 2.0,
            decision: -1.0,
            model_id: "m".into(),
            model_kind: "rules".into(),
            rules: "hot,high".into(),
            record: r#"{"big":1e400}"#.into(),
        }
    }

    #[test]
    fn outputs() {
        let mut out = Vec::new();
        write_table(&mut out, &[stored()]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("EVENT_TIME"), "{text}");
        assert!(
            text.contains("1970-01-01T00:01:00.000Z (kafka)  sensors"),
            "{text}"
        );
        assert!(text.contains("hot,high"), "{text}");
        let mut out = Vec::new();
        write_json(&mut out, &[stored()]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("\"record\":{\"big\":1e400}}\n"), "{text}");
        assert!(text.contains("\"rules\":[\"hot\",\"high\"]"), "{text}");
        let mut out = Vec::new();
        write_counts(&mut out, &[(0, 3), (60_000, 1)]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1970-01-01T00:00:00.000Z  3\n1970-01-01T00:01:00.000Z  1\n"
        );
    }
}
