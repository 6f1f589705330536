//! The PostgreSQL backend: a shared database, for several anomalyd instances writing one store,
//! or for Grafana and SQL on the anomalies (docs/store.md).
//!
//! Schema version 1, kept in the one-row table `anomalyd_schema` and created or migrated at
//! start inside a transaction holding an advisory lock, so that instances starting together
//! do not race. One table, `anomalies`, with SQLite's columns and indexes; the times are
//! `timestamptz` (Grafana's `$__timeFilter` and `date_trunc` work on them as they are) and the
//! record is `json`, which keeps the text as read (key order, `1e400`), as SQLite does.
//!
//! Each batch is one `INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING`: one
//! statement, so one transaction and one round trip whatever the batch size, and no limit on
//! parameters. Rows already there are counted as duplicates.
//!
//! The client is `postgres`, the blocking client over tokio-postgres, which runs a small
//! runtime of its own: call it off async threads (the store task uses tokio's blocking
//! threads). No TLS: `sslmode` may be `disable` or `prefer` (which connects without TLS).
//! The password never is in the URL (the config check refuses it); it comes from
//! `password_env` or `password_file`, and no error or log line shows it.

use std::borrow::Cow;
use std::sync::Mutex;
use std::time::Duration;

use ::postgres::config::{Host, SslMode};
use ::postgres::types::ToSql;
use ::postgres::{Client, NoTls};

use super::query::Filter;
use super::row::Row;
use super::{Inserted, Store, StoreConfig, StoreError, StoredRow};

/// The schema this code writes and reads.
pub const SCHEMA_VERSION: i32 = 1;

/// The advisory lock held while the schema is created or migrated: "anomalyd" in ASCII.
const MIGRATION_LOCK: i64 = i64::from_be_bytes(*b"anomalyd");

/// How long connecting may take before it is an error.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Times outside years 1 to 9999 are clamped to them: `timestamptz` has a narrower range than
/// an i64 of milliseconds, and one absurd Kafka timestamp must not stop every batch after it.
const MIN_MS: i64 = -62_135_596_800_000;
const MAX_MS: i64 = 253_402_300_799_999;

const VERSION_TABLE: &str = "
CREATE TABLE IF NOT EXISTS anomalyd_schema (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version integer NOT NULL,
    migrated_at timestamptz NOT NULL DEFAULT now()
)";

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS anomalies (
    kafka_topic text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    detector text NOT NULL,
    key text,
    event_time timestamptz NOT NULL,
    event_time_source text NOT NULL CHECK (event_time_source IN ('field', 'kafka')),
    detected_at timestamptz NOT NULL,
    score double precision NOT NULL,
    decision double precision NOT NULL,
    model_id text NOT NULL,
    model_kind text NOT NULL,
    rules text NOT NULL,
    record json NOT NULL,
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);
CREATE INDEX IF NOT EXISTS anomalies_detector_time ON anomalies (detector, event_time);
CREATE INDEX IF NOT EXISTS anomalies_key_time ON anomalies (key, event_time);
CREATE INDEX IF NOT EXISTS anomalies_event_time ON anomalies (event_time);
CREATE INDEX IF NOT EXISTS anomalies_detected_at ON anomalies (detected_at);
CREATE INDEX IF NOT EXISTS anomalies_score ON anomalies (score);
CREATE INDEX IF NOT EXISTS anomalies_decision ON anomalies (decision);
CREATE INDEX IF NOT EXISTS anomalies_model ON anomalies (model_id, model_kind);
CREATE INDEX IF NOT EXISTS anomalies_model_kind ON anomalies (model_kind);
CREATE INDEX IF NOT EXISTS anomalies_rules ON anomalies (rules);
";

/// One statement per batch: the columns come as arrays, one element per row.
const INSERT: &str = "INSERT INTO anomalies (kafka_topic, kafka_partition, kafka_offset, \
    detector, key, event_time, event_time_source, detected_at, score, decision, model_id, \
    model_kind, rules, record) \
    SELECT t, p, o, d, k, to_timestamp(e::float8 / 1000), es, to_timestamp(da::float8 / 1000), \
    s, dc, mi, mk, r, rec::json \
    FROM unnest($1::text[], $2::int4[], $3::int8[], $4::text[], $5::text[], $6::int8[], \
    $7::text[], $8::int8[], $9::float8[], $10::float8[], $11::text[], $12::text[], \
    $13::text[], $14::text[]) AS u(t, p, o, d, k, e, es, da, s, dc, mi, mk, r, rec) \
    ON CONFLICT (kafka_topic, kafka_partition, kafka_offset) DO NOTHING";

/// Milliseconds since the Unix epoch of a `timestamptz` column, exactly.
fn ms(column: &str) -> String {
    format!("(extract(epoch FROM {column}) * 1000)::int8")
}

/// An open PostgreSQL store.
pub struct PostgresStore {
    /// `None` only while being dropped. The client's methods take `&mut self` (one request at
    /// a time on the connection) and the trait's reads `&self`: hence the mutex, which is
    /// never contended (the store has one user at a time).
    client: Mutex<Option<Client>>,
    /// The URL, as shown in errors (never with a password).
    url: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.url)
            .finish()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // The client closes its connection on its own runtime, which panics on a thread that
        // runs async tasks (the store task may drop its store there): close it on a thread of
        // its own.
        let client = self
            .client
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(client) = client {
            let _ = std::thread::Builder::new()
                .name("store-close".into())
                .spawn(move || drop(client));
        }
    }
}

/// Checks a `store.url`: a `postgres://` or `postgresql://` URL the driver understands, with
/// no password and an `sslmode` this build supports. The problem, as a sentence naming no
/// secret, on error.
pub fn check_url(url: &str) -> Result<::postgres::Config, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("expected a URL such as postgres://anomalyd@db.example:5432/anomalies".into());
    };
    if scheme != "postgres" && scheme != "postgresql" {
        return Err(format!(
            "expected a postgres:// or postgresql:// URL, not {scheme}://"
        ));
    }
    // Before parsing, so that no parse error can echo it.
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let has_password = authority
        .rsplit_once('@')
        .is_some_and(|(user, _)| user.contains(':'))
        || rest
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|p| p.starts_with("password=")));
    if has_password {
        return Err(
            "must not hold a password (it would sit in the file, in ps and in logs); give it \
             with store.password_env or store.password_file"
                .into(),
        );
    }
    let config: ::postgres::Config = url
        .parse()
        .map_err(|e| format!("not a PostgreSQL URL: {}", chain(&e)))?;
    if config.get_hosts().is_empty() {
        return Err("names no host, e.g. postgres://anomalyd@localhost:5432/anomalies".into());
    }
    match config.get_ssl_mode() {
        SslMode::Disable | SslMode::Prefer => {}
        _ => {
            return Err(
                "sslmode: this build connects without TLS; use sslmode=disable (or prefer), \
                 or reach the database over a trusted network or an SSH tunnel"
                    .into(),
            );
        }
    }
    Ok(config)
}

/// `url` as shown in logs, errors and `/status`: a password, should one be there, replaced by
/// `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".into();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| {
                    if p.starts_with("password=") {
                        "password=***".to_owned()
                    } else {
                        p.to_owned()
                    }
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// The driver's error and its causes, on one line (its own text alone is "db error").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text.replace('\n', " ")
}

/// Every host:port the config names, for a connection error.
fn endpoints(config: &::postgres::Config) -> String {
    let ports = config.get_ports();
    config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The password `store` names: `password_env`'s variable or `password_file`'s first line
/// (a trailing newline dropped); `None` when neither is set.
fn password(store: &StoreConfig) -> Result<Option<Vec<u8>>, StoreError> {
    if let Some(name) = &store.password_env {
        return match std::env::var_os(name) {
            Some(v) if !v.is_empty() => Ok(Some(v.into_encoded_bytes())),
            _ => Err(StoreError::Password(format!(
                "store.password_env: the environment variable {name} is not set or empty"
            ))),
        };
    }
    if let Some(path) = &store.password_file {
        let mut bytes = std::fs::read(path).map_err(|e| {
            StoreError::Password(format!("store.password_file {}: {e}", path.display()))
        })?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        if bytes.is_empty() {
            return Err(StoreError::Password(format!(
                "store.password_file {}: is empty",
                path.display()
            )));
        }
        return Ok(Some(bytes));
    }
    Ok(None)
}

/// `text` cannot hold a NUL character, which a Kafka key (the user's bytes) may: it becomes
/// U+FFFD, as invalid UTF-8 already does, rather than failing its batch again and again.
fn no_nul(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn clamp_ms(ms: i64) -> i64 {
    ms.clamp(MIN_MS, MAX_MS)
}

impl PostgresStore {
    /// Connects to `store.url` (with the password of `password_env` or `password_file`) and
    /// creates or migrates the schema. Errors: a bad URL or password setting, the database
    /// unreachable ([`StoreError::Connect`], naming host:port), or its schema newer than
    /// [`SCHEMA_VERSION`]. Blocking.
    pub fn open(store: &StoreConfig) -> Result<Self, StoreError> {
        let s = Self::connect(store)?;
        s.migrate()?;
        Ok(s)
    }

    /// Connects for `anomalyd query`: every transaction read-only, the schema only checked.
    /// `Ok(None)` when the database holds no anomaly store yet. Blocking.
    pub fn open_for_query(store: &StoreConfig) -> Result<Option<Self>, StoreError> {
        let s = Self::connect(store)?;
        let found = s.with(|c| {
            c.batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")?;
            let exists: bool = c
                .query_one(
                    "SELECT to_regclass('anomalyd_schema') IS NOT NULL \
                     AND to_regclass('anomalies') IS NOT NULL",
                    &[],
                )?
                .try_get(0)?;
            if !exists {
                return Ok(None);
            }
            c.query_one("SELECT version FROM anomalyd_schema", &[])?
                .try_get::<_, i32>(0)
                .map(Some)
        })?;
        match found {
            None => Ok(None),
            Some(v) if v > SCHEMA_VERSION => Err(s.version_error(v)),
            Some(_) => Ok(Some(s)),
        }
    }

    fn connect(store: &StoreConfig) -> Result<Self, StoreError> {
        let raw = store.url.as_deref().unwrap_or_default();
        let url = redact(raw);
        let mut config = check_url(raw).map_err(|why| StoreError::Url {
            url: url.clone(),
            why,
        })?;
        if let Some(p) = password(store)? {
            config.password(p);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("anomalyd");
        }
        let client = config.connect(NoTls).map_err(|e| StoreError::Connect {
            url: url.clone(),
            endpoints: endpoints(&config),
            message: chain(&e),
        })?;
        Ok(Self {
            client: Mutex::new(Some(client)),
            url,
        })
    }

    /// Runs `f` on the client, turning its error into a [`StoreError`] naming the URL.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, ::postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
        let client = guard.as_mut().expect("the client is there until drop");
        f(client).map_err(|e| StoreError::Postgres {
            url: self.url.clone(),
            message: chain(&e),
        })
    }

    fn version_error(&self, found: i32) -> StoreError {
        StoreError::Version {
            path: self.url.clone(),
            found: i64::from(found),
            known: i64::from(SCHEMA_VERSION),
        }
    }

    /// Creates the schema, or migrates an older one, in one transaction under an advisory
    /// lock: instances starting together wait for each other, and the second finds the
    /// schema made.
    fn migrate(&self) -> Result<(), StoreError> {
        let found = self.with(|c| {
            let mut tx = c.transaction()?;
            // Not "relation already exists, skipping" at every start.
            tx.batch_execute("SET LOCAL client_min_messages = warning")?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            tx.batch_execute(VERSION_TABLE)?;
            let found: i32 = match tx.query_opt("SELECT version FROM anomalyd_schema", &[])? {
                Some(r) => r.try_get(0)?,
                None => 0,
            };
            if found > SCHEMA_VERSION {
                // Rolled back when dropped: nothing was changed.
                return Ok(found);
            }
            if found < 1 {
                tx.batch_execute(SCHEMA_V1)?;
            }
            if found < SCHEMA_VERSION {
                tx.execute(
                    "INSERT INTO anomalyd_schema (version) VALUES ($1) \
                     ON CONFLICT (singleton) DO UPDATE SET version = $1, migrated_at = now()",
                    &[&SCHEMA_VERSION],
                )?;
            }
            tx.commit()?;
            Ok(found)
        })?;
        if found > SCHEMA_VERSION {
            return Err(self.version_error(found));
        }
        Ok(())
    }

    /// The schema version of the database.
    pub fn version(&self) -> Result<i32, StoreError> {
        self.with(|c| {
            c.query_one("SELECT version FROM anomalyd_schema", &[])?
                .try_get(0)
        })
    }

    /// How many rows, per detector.
    pub fn counts_by_detector(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.with(|c| {
            c.query(
                "SELECT detector, count(*) FROM anomalies GROUP BY detector ORDER BY detector",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get::<_, i64>(1)? as u64)))
            .collect()
        })
    }
}

/// A query parameter: each filter value is bound, never spliced into the SQL.
type Param = Box<dyn ToSql + Sync + Send>;

/// The WHERE clause of `filter` and its parameters.
fn where_clause(filter: &Filter) -> (String, Vec<Param>) {
    let mut terms: Vec<String> = Vec::new();
    let mut params: Vec<Param> = Vec::new();
    let bind = |params: &mut Vec<Param>, v: Param| {
        params.push(v);
        format!("${}", params.len())
    };
    if let Some(d) = &filter.detector {
        let p = bind(&mut params, Box::new(d.clone()));
        terms.push(format!("detector = {p}"));
    }
    if let Some(k) = &filter.key {
        let p = bind(&mut params, Box::new(k.clone()));
        terms.push(format!("key = {p}"));
    }
    if let Some(t) = filter.since_ms {
        let p = bind(&mut params, Box::new(clamp_ms(t)));
        terms.push(format!(
            "event_time >= to_timestamp({p}::int8::float8 / 1000)"
        ));
    }
    if let Some(t) = filter.until_ms {
        let p = bind(&mut params, Box::new(clamp_ms(t)));
        terms.push(format!(
            "event_time < to_timestamp({p}::int8::float8 / 1000)"
        ));
    }
    if filter.anomalies_only {
        terms.push("decision < 0".into());
    }
    for (field, value) in &filter.wheres {
        let path: Vec<String> = field.split('.').map(str::to_owned).collect();
        let path = bind(&mut params, Box::new(path));
        let text = bind(&mut params, Box::new(value.clone()));
        let v = format!("(record #> {path}::text[])");
        // As on SQLite: a string matches its text, a number the same number however written
        // (40 = 40.0); the cast runs only on numbers (CASE), so any other value is no error.
        let mut term = format!(
            "(CASE WHEN json_typeof({v}) IN ('string', 'boolean') \
             THEN (record #>> {path}::text[]) = {text}"
        );
        if looks_numeric(value.trim()) {
            let num = bind(&mut params, Box::new(value.trim().to_owned()));
            term.push_str(&format!(
                " WHEN json_typeof({v}) = 'number' \
                 THEN (record #>> {path}::text[])::numeric = {num}::text::numeric"
            ));
        }
        term.push_str(" ELSE false END)");
        terms.push(term);
    }
    if terms.is_empty() {
        (String::new(), params)
    } else {
        (format!(" WHERE {}", terms.join(" AND ")), params)
    }
}

/// A number as written in JSON or by a user (`40`, `40.0`, `4e1`, `1e400`: numeric holds
/// what a double cannot), not `inf` or `NaN`.
fn looks_numeric(v: &str) -> bool {
    v.parse::<f64>().is_ok()
        && v.bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
}

fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

impl Store for PostgresStore {
    fn insert(&mut self, rows: &[Row]) -> Result<Inserted, StoreError> {
        if rows.is_empty() {
            return Ok(Inserted::default());
        }
        let col = |f: fn(&Row) -> &str| rows.iter().map(|r| no_nul(f(r))).collect::<Vec<_>>();
        let topics = col(|r| &r.topic);
        let partitions: Vec<i32> = rows.iter().map(|r| r.partition).collect();
        let offsets: Vec<i64> = rows.iter().map(|r| r.offset).collect();
        let detectors = col(|r| &r.detector);
        let keys: Vec<Option<Cow<'_, str>>> =
            rows.iter().map(|r| r.key.as_deref().map(no_nul)).collect();
        let event: Vec<i64> = rows.iter().map(|r| clamp_ms(r.event_time_ms)).collect();
        let sources = col(|r| r.event_time_source.as_str());
        let detected: Vec<i64> = rows.iter().map(|r| clamp_ms(r.detected_at_ms)).collect();
        let scores: Vec<f64> = rows.iter().map(|r| r.score).collect();
        let decisions: Vec<f64> = rows.iter().map(|r| r.decision).collect();
        let model_ids = col(|r| &r.model_id);
        let model_kinds = col(|r| &r.model_kind);
        let rules = col(|r| &r.rules);
        // Valid JSON holds no raw NUL (an escaped one, \u0000, is fine in `json`).
        let records: Vec<&str> = rows.iter().map(|r| r.record.as_str()).collect();
        // One statement: atomic on its own, so the batch commits whole or not at all.
        let stored = self.with(|c| {
            c.execute(
                INSERT,
                &[
                    &topics,
                    &partitions,
                    &offsets,
                    &detectors,
                    &keys,
                    &event,
                    &sources,
                    &detected,
                    &scores,
                    &decisions,
                    &model_ids,
                    &model_kinds,
                    &rules,
                    &records,
                ],
            )
        })?;
        Ok(Inserted {
            stored,
            duplicates: rows.len() as u64 - stored,
        })
    }

    fn delete_before(&mut self, cutoff_ms: i64) -> Result<u64, StoreError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM anomalies WHERE event_time < to_timestamp($1::int8::float8 / 1000)",
                &[&clamp_ms(cutoff_ms)],
            )
        })
    }

    fn select(&self, filter: &Filter) -> Result<Vec<StoredRow>, StoreError> {
        let (clause, mut params) = where_clause(filter);
        params.push(Box::new(i64::try_from(filter.limit).unwrap_or(i64::MAX)));
        let sql = format!(
            "SELECT {} FROM anomalies{clause} ORDER BY event_time DESC, kafka_topic, \
             kafka_partition, kafka_offset DESC LIMIT ${}",
            columns(),
            params.len()
        );
        self.with(|c| {
            c.query(&sql, &refs(&params))?
                .iter()
                .map(stored_row)
                .collect()
        })
    }

    fn count_by(&self, filter: &Filter, bucket_ms: i64) -> Result<Vec<(i64, u64)>, StoreError> {
        let (clause, mut params) = where_clause(filter);
        params.push(Box::new(bucket_ms.max(1)));
        let b = params.len();
        // floor(): epoch-aligned intervals, also before 1970; extract() is exact (numeric).
        let sql = format!(
            "SELECT (floor(extract(epoch FROM event_time) * 1000 / ${b}::int8) * ${b}::int8)::int8 \
             AS start, count(*) FROM anomalies{clause} GROUP BY start ORDER BY start"
        );
        self.with(|c| {
            c.query(&sql, &refs(&params))?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get::<_, i64>(1)? as u64)))
                .collect()
        })
    }

    fn detectors(&self) -> Result<Vec<String>, StoreError> {
        // A loose index scan on (detector, event_time), as on SQLite: one lookup per detector.
        self.with(|c| {
            c.query(
                "WITH RECURSIVE d(name) AS (SELECT MIN(detector) FROM anomalies UNION ALL \
                 SELECT (SELECT MIN(detector) FROM anomalies WHERE detector > d.name) FROM d \
                 WHERE d.name IS NOT NULL) SELECT name FROM d WHERE name IS NOT NULL",
                &[],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect()
        })
    }

    fn row(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<Option<StoredRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM anomalies WHERE kafka_topic = $1 AND kafka_partition = $2 \
             AND kafka_offset = $3",
            columns()
        );
        self.with(|c| {
            c.query_opt(&sql, &[&topic, &partition, &offset])?
                .as_ref()
                .map(stored_row)
                .transpose()
        })
    }
}

/// The columns of a [`StoredRow`], times as milliseconds since the Unix epoch.
fn columns() -> String {
    format!(
        "kafka_topic, kafka_partition, kafka_offset, detector, key, {}, event_time_source, {}, \
         score, decision, model_id, model_kind, rules, record::text",
        ms("event_time"),
        ms("detected_at")
    )
}

/// A row of `SELECT {columns()}`.
fn stored_row(r: &postgres::Row) -> Result<StoredRow, postgres::Error> {
    Ok(StoredRow {
        topic: r.try_get(0)?,
        partition: r.try_get(1)?,
        offset: r.try_get(2)?,
        detector: r.try_get(3)?,
        key: r.try_get(4)?,
        event_time_ms: r.try_get(5)?,
        event_time_source: r.try_get(6)?,
        detected_at_ms: r.try_get(7)?,
        score: r.try_get(8)?,
        decision: r.try_get(9)?,
        model_id: r.try_get(10)?,
        model_kind: r.try_get(11)?,
        rules: r.try_get(12)?,
        record: r.try_get(13)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_without_echoing_a_password() {
        assert!(check_url("postgres://anomalyd@localhost:5432/anomalies").is_ok());
        assert!(check_url("postgresql://u@127.0.0.1/db?sslmode=disable").is_ok());
        assert!(check_url("postgres://u@h/db?sslmode=prefer&connect_timeout=3").is_ok());
        for (url, says) in [
            ("postgres://u:hunter2@h/db", "must not hold a password"),
            (
                "postgres://u@h/db?password=hunter2",
                "must not hold a password",
            ),
            (
                "postgres://u:hunter2@h:notaport/db",
                "must not hold a password",
            ),
            ("mysql://u@h/db", "not mysql://"),
            ("localhost:5432", "expected a URL"),
            ("postgres://u@h:notaport/db", "not a PostgreSQL URL"),
            ("postgres://u@h/db?sslmode=require", "without TLS"),
            ("postgres://u@h/db?nonsense=1", "not a PostgreSQL URL"),
        ] {
            let why = check_url(url).unwrap_err();
            assert!(why.contains(says), "{url}: {why}");
            assert!(!why.contains("hunter2"), "{url}: {why}");
        }
    }

    #[test]
    fn redaction_hides_passwords_only() {
        assert_eq!(
            redact("postgres://u@h:5/db?sslmode=disable"),
            "postgres://u@h:5/db?sslmode=disable"
        );
        assert_eq!(redact("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(
            redact("postgres://u@h/db?a=1&password=pw"),
            "postgres://u@h/db?a=1&password=***"
        );
        assert_eq!(redact("nope"), "<not a URL>");
    }

    #[test]
    fn passwords_come_from_the_environment_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let mut c = StoreConfig {
            password_file: Some(file.clone()),
            ..StoreConfig::default()
        };
        assert_eq!(password(&c).unwrap().unwrap(), b"s3cret");
        std::fs::write(&file, "\n").unwrap();
        assert!(password(&c).unwrap_err().to_string().contains("is empty"));
        c.password_file = Some(dir.path().join("missing"));
        assert!(password(&c).is_err());
        c.password_file = None;
        c.password_env = Some("ANOMALYD_TEST_SURELY_UNSET_VARIABLE".into());
        let e = password(&c).unwrap_err().to_string();
        assert!(
            e.contains("ANOMALYD_TEST_SURELY_UNSET_VARIABLE is not set"),
            "{e}"
        );
        c.password_env = None;
        assert!(password(&c).unwrap().is_none());
    }

    #[test]
    fn filter_values_are_bound_not_spliced() {
        let f = Filter {
            detector: Some("d'; DROP TABLE anomalies; --".into()),
            wheres: vec![
                ("a.b".into(), "40".into()),
                ("x\"y".into(), "' OR 1=1".into()),
            ],
            since_ms: Some(i64::MIN),
            ..Filter::default()
        };
        let (clause, params) = where_clause(&f);
        assert!(
            !clause.contains("DROP") && !clause.contains("OR 1=1"),
            "{clause}"
        );
        assert!(!clause.contains("x\"y"), "{clause}");
        // detector, since, (path, text, number) for 40, (path, text) for the other.
        assert_eq!(params.len(), 7, "{clause}");
        assert_eq!(clause.matches("::numeric").count(), 2, "{clause}");
    }

    #[test]
    fn times_outside_timestamptz_are_clamped() {
        assert_eq!(clamp_ms(i64::MIN), MIN_MS);
        assert_eq!(clamp_ms(i64::MAX), MAX_MS);
        assert_eq!(clamp_ms(0), 0);
    }
}
