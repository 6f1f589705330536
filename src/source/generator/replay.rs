//! The `replay` generator profile and `anomalyd replay FILE --topic T`: a CSV file's lines, in
//! order, to a topic. One code path ([`replay`]) serves the command and the daemon's generator
//! task (`[generator] profile = "replay"`).
//!
//! - **Value**: the line exactly as in the file (its bytes, without the `\n` or `\r\n` that ends
//!   it), never re-encoded: quoted fields, commas inside them and odd spacing stay as they are.
//!   A record is one physical line: a quoted field holding a line break is not supported (each
//!   part would go out as a line of its own).
//! - **Key**: one cell (`key_column`, `InvoiceNo` by default), found with the `csv` crate
//!   (RFC 4180 quoting), so that all lines of an invoice land on one partition in order.
//! - **Lines without a key** (too few cells, or an empty key cell) are still sent, without a
//!   key, and counted (`keyless`, one warning at the end): the line is the user's data and a
//!   downstream stage, not the replay, decides what is wrong with it (an unkeyed line is spread
//!   over the partitions by librdkafka's partitioner). Blank lines carry nothing and are skipped,
//!   counted as `blank`.
//! - **Header**: a first line that is a header (`header = true`, or `auto`: its first cell is the
//!   first column name) is not sent; its cells name the columns unless `columns` does.
//! - **Line numbers** count data lines from 1 (a header is not counted; blank lines are).
//! - **Pace** ([`Pace`]): the original producer's uniform 5-9 ms pause per line (seeded per line,
//!   so a resumed replay pauses as the uninterrupted one would), `N` times faster than the gaps
//!   between the lines' `time_column` values (`M/D/YYYY H:MM`,
//!   [`parse_month_day_year`]), or as fast as the broker takes them (back-pressure on a full
//!   producer queue, as [`enqueue`]). Pauses are kept on a schedule (deadlines, not sleeps
//!   after each send), so the rate does not drift; a replay that fell more than a second behind
//!   its schedule (a slow broker) starts a new one rather than bursting.
//! - **Resuming**: acknowledgements are tracked per line. When the replay stops early (Ctrl-C,
//!   shutdown, a delivery that failed after the producer's own retries, a read error) it stops
//!   reading, waits up to [`DRAIN`] for the lines in flight and reports the first line NOT
//!   acknowledged ([`ReplaySummary::resume_from`]): starting again there loses nothing, and only
//!   lines that were in flight can arrive twice. The idempotent producer keeps each partition in
//!   order through retries. A line the producer refuses outright (larger than
//!   `message.max.bytes`) stops the replay at that line (exit 65), rather than skipping it.
//!
//! The transactions profile stays in `generator.rs` beside this folder (the house layout's
//! `generator/transactions.rs`), so that other work on the generator merges without a move.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, SeekFrom};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::exit;
use crate::sinks::{SinkError, enqueue};
use crate::stages::time::parse_month_day_year;

/// The Online Retail data's columns, the default names when the file has no header.
pub use crate::config::stages::ONLINE_RETAIL_COLUMNS as RETAIL_COLUMNS;

/// How long a replay that stops early waits for the lines in flight before it reports where to
/// resume (lines still unacknowledged then are counted as not sent).
pub const DRAIN: Duration = Duration::from_secs(30);

/// Lines awaiting acknowledgement at most; bounds memory when the broker is slow.
const IN_FLIGHT: usize = 20_000;

/// How fast lines go out.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Pace {
    /// A uniform random pause of 5 to 9 ms before each line, as the original producer made.
    #[default]
    Original,
    /// `speedup:N`: the gaps between consecutive lines' times, divided by N (> 0).
    Speedup(f64),
    /// As fast as the broker takes them.
    Max,
}

impl FromStr for Pace {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "original" => Ok(Self::Original),
            "max" => Ok(Self::Max),
            other => {
                let bad = || {
                    format!(
                        "{other:?} is not a pace: \"original\" (5-9 ms per line), \"max\" or \
                         \"speedup:N\" (N > 0, e.g. speedup:60)"
                    )
                };
                let n: f64 = other
                    .strip_prefix("speedup:")
                    .ok_or_else(bad)?
                    .trim()
                    .parse()
                    .map_err(|_| bad())?;
                if n.is_finite() && n > 0.0 {
                    Ok(Self::Speedup(n))
                } else {
                    Err(bad())
                }
            }
        }
    }
}

impl TryFrom<String> for Pace {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Pace> for String {
    fn from(p: Pace) -> String {
        p.to_string()
    }
}

impl fmt::Display for Pace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Original => f.write_str("original"),
            Self::Speedup(n) => write!(f, "speedup:{n}"),
            Self::Max => f.write_str("max"),
        }
    }
}

/// Whether the file's first line is a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "HeaderText", into = "String")]
pub enum HeaderMode {
    /// A header when its first cell equals the first column name (`InvoiceNo` by default).
    #[default]
    Auto,
    /// The first line is a header.
    Present,
    /// Every line is data.
    Absent,
}

/// `header` as written: `"auto"`, or a boolean (also as text, from the environment).
#[derive(Deserialize)]
#[serde(untagged)]
enum HeaderText {
    Bool(bool),
    Text(String),
}

impl TryFrom<HeaderText> for HeaderMode {
    type Error = String;
    fn try_from(h: HeaderText) -> Result<Self, String> {
        match h {
            HeaderText::Bool(true) => Ok(Self::Present),
            HeaderText::Bool(false) => Ok(Self::Absent),
            HeaderText::Text(s) => s.parse(),
        }
    }
}

impl FromStr for HeaderMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "true" => Ok(Self::Present),
            "false" => Ok(Self::Absent),
            other => Err(format!(
                "{other:?} is not a header setting: \"auto\", true or false"
            )),
        }
    }
}

impl From<HeaderMode> for String {
    fn from(h: HeaderMode) -> String {
        match h {
            HeaderMode::Auto => "auto",
            HeaderMode::Present => "true",
            HeaderMode::Absent => "false",
        }
        .into()
    }
}

/// A column, by name (from `columns`, the header, or [`RETAIL_COLUMNS`]) or by its 1-based
/// position (text of digits only, or a TOML integer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ColumnText", into = "String")]
pub enum ColumnRef {
    Name(String),
    /// 1 is the first column.
    Index(usize),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ColumnText {
    Index(i64),
    Text(String),
}

impl TryFrom<ColumnText> for ColumnRef {
    type Error = String;
    fn try_from(c: ColumnText) -> Result<Self, String> {
        match c {
            ColumnText::Index(i) => i.to_string().parse(),
            ColumnText::Text(s) => s.parse(),
        }
    }
}

impl FromStr for ColumnRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("a column is a name or a 1-based position, not empty".into());
        }
        if s.bytes().all(|b| b.is_ascii_digit()) || s.starts_with('-') {
            return match s.parse::<usize>() {
                Ok(i) if i >= 1 => Ok(Self::Index(i)),
                _ => Err(format!(
                    "{s:?}: column positions start at 1 (the first column)"
                )),
            };
        }
        Ok(Self::Name(s.to_owned()))
    }
}

impl From<ColumnRef> for String {
    fn from(c: ColumnRef) -> String {
        c.to_string()
    }
}

impl fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Index(i) => write!(f, "{i}"),
        }
    }
}

impl ColumnRef {
    /// The 0-based index of this column among `names`.
    fn resolve(&self, names: &[String]) -> Result<usize, ReplayError> {
        match self {
            Self::Index(i) => Ok(i - 1),
            Self::Name(n) => {
                names
                    .iter()
                    .position(|c| c == n)
                    .ok_or_else(|| ReplayError::NoColumn {
                        column: n.clone(),
                        columns: names.to_vec(),
                    })
            }
        }
    }
}

/// What to replay, where and how fast.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayOptions {
    pub file: PathBuf,
    pub topic: String,
    /// The cell that keys each line.
    pub key_column: ColumnRef,
    /// Column names, for columns given by name; `None`: the header's, else [`RETAIL_COLUMNS`].
    pub columns: Option<Vec<String>>,
    pub header: HeaderMode,
    pub pace: Pace,
    /// The cell whose `M/D/YYYY H:MM` times set the pauses of [`Pace::Speedup`].
    pub time_column: ColumnRef,
    /// The first data line to send, 1-based (a header is not counted).
    pub from_line: u64,
    /// Data lines to send from `from_line`; 0: to the end of the file.
    pub count: u64,
    /// Seed of [`Pace::Original`]'s pauses.
    pub seed: u64,
}

impl ReplayOptions {
    /// The defaults: key `InvoiceNo`, header auto-detected, the original's pace, from line 1.
    pub fn new(file: PathBuf, topic: String) -> Self {
        Self {
            file,
            topic,
            key_column: ColumnRef::Name("InvoiceNo".into()),
            columns: None,
            header: HeaderMode::Auto,
            pace: Pace::Original,
            time_column: ColumnRef::Name("InvoiceDate".into()),
            from_line: 1,
            count: 0,
            seed: 42,
        }
    }

    /// The line after the last one to send (exclusive), if `count` bounds it.
    fn end_line(&self) -> Option<u64> {
        (self.count != 0).then(|| self.from_line.saturating_add(self.count))
    }
}

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("cannot read {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {} after data line {line}: {source}", path.display())]
    Read {
        path: PathBuf,
        line: u64,
        source: std::io::Error,
    },
    #[error(
        "no column {column:?} among {columns:?} (name it with --columns, or give its position)"
    )]
    NoColumn {
        column: String,
        columns: Vec<String>,
    },
    #[error("no topic {topic:?} on {brokers} (create it first; the broker may not create topics)")]
    NoTopic { topic: String, brokers: String },
    #[error("no answer from the brokers {brokers} about topic {topic:?}: {reason}")]
    Unreachable {
        topic: String,
        brokers: String,
        reason: String,
    },
    #[error("data line {line}: {source}")]
    Send { line: u64, source: SinkError },
    #[error("could not create the producer: {0}")]
    Producer(KafkaError),
}

impl ReplayError {
    /// 66 (EX_NOINPUT) for a file or topic that is not there, 69 (EX_UNAVAILABLE) for brokers
    /// that do not answer or take no more, 65 (EX_DATAERR) for a line the broker refuses, 64
    /// (EX_USAGE) for a column that does not exist.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Open { .. } | Self::Read { .. } | Self::NoTopic { .. } => exit::NO_INPUT,
            Self::Unreachable { .. } => exit::UNAVAILABLE,
            Self::NoColumn { .. } => exit::USAGE,
            Self::Send { source, .. } if source.refused_record().is_some() => exit::DATA_ERR,
            Self::Send { .. } => exit::UNAVAILABLE,
            Self::Producer(_) => exit::FAILURE,
        }
    }
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct ReplaySummary {
    /// Physical lines read, the header and skipped lines (before `from_line`) included.
    pub lines_read: u64,
    /// Lines handed to the producer.
    pub sent: u64,
    /// Lines the broker acknowledged.
    pub acknowledged: u64,
    /// Deliveries that failed after the producer's retries.
    pub failed: u64,
    pub skipped_header: bool,
    /// Empty lines, not sent.
    pub blank: u64,
    /// Lines sent without a key (their key cell missing or empty).
    pub keyless: u64,
    pub elapsed: Duration,
    /// When the replay stopped before its end: the first data line not acknowledged, where
    /// `--from-line` resumes without a loss.
    pub resume_from: Option<u64>,
    /// Why it stopped before its end, when not asked to.
    pub error: Option<ReplayError>,
    /// Whether it stopped because it was asked to (Ctrl-C, shutdown).
    pub interrupted: bool,
}

impl fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "replay: {} lines read, {} sent, {} acknowledged, header skipped: {}, {} failed \
             deliveries",
            self.lines_read,
            self.sent,
            self.acknowledged,
            if self.skipped_header { "yes" } else { "no" },
            self.failed,
        )?;
        if self.keyless > 0 {
            write!(f, ", {} sent without a key", self.keyless)?;
        }
        if self.blank > 0 {
            write!(f, ", {} blank lines skipped", self.blank)?;
        }
        write!(
            f,
            ", {secs:.1} s, {:.0} lines/s",
            self.acknowledged as f64 / secs.max(1e-9)
        )
    }
}

/// The producer a replay uses: anomalyd's idempotent producer, with lz4 batches unless the
/// configuration's properties choose a compression.
pub fn producer_config(kafka: &KafkaConfig) -> rdkafka::ClientConfig {
    let mut cfg = crate::kafka::producer_config(kafka);
    let chosen = ["compression.type", "compression.codec"]
        .iter()
        .any(|k| kafka.properties.contains_key(*k));
    if !chosen {
        cfg.set("compression.type", "lz4");
    }
    cfg
}

/// Checks that `topic` exists (with at least one partition) on the producer's brokers; blocking.
///
/// # Errors
/// [`ReplayError::NoTopic`], or [`ReplayError::Unreachable`] when the brokers do not answer
/// within `timeout`.
pub fn check_topic(
    producer: &FutureProducer,
    topic: &str,
    brokers: &str,
    timeout: Duration,
) -> Result<(), ReplayError> {
    let no_topic = || ReplayError::NoTopic {
        topic: topic.to_owned(),
        brokers: brokers.to_owned(),
    };
    let unreachable = |reason: String| ReplayError::Unreachable {
        topic: topic.to_owned(),
        brokers: brokers.to_owned(),
        reason,
    };
    let md = producer
        .client()
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| unreachable(e.to_string()))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(no_topic)?;
    match t.error().map(RDKafkaErrorCode::from) {
        None if !t.partitions().is_empty() => Ok(()),
        None | Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            Err(no_topic())
        }
        Some(code) => Err(unreachable(KafkaError::MetadataFetch(code).to_string())),
    }
}

/// The next data line to send and the lines acknowledged, shared with the caller so that a
/// generator task restarted by the supervisor carries on where the last run stopped.
#[derive(Debug)]
pub struct Position {
    /// The first data line not yet acknowledged (1-based), once a run has stopped.
    pub next_line: AtomicU64,
    /// Lines acknowledged over every run.
    pub acknowledged: AtomicU64,
}

impl Position {
    pub fn new(from_line: u64) -> Self {
        Self {
            next_line: AtomicU64::new(from_line.max(1)),
            acknowledged: AtomicU64::new(0),
        }
    }
}

/// Splits lines off a file: bytes without their terminator.
struct Lines {
    reader: BufReader<File>,
    buf: Vec<u8>,
}

impl Lines {
    fn open(path: &Path) -> Result<Self, ReplayError> {
        let file = File::open(path).map_err(|source| ReplayError::Open {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            reader: BufReader::with_capacity(1 << 16, file),
            buf: Vec::with_capacity(512),
        })
    }

    /// The next line, without `\n` or `\r\n`; `None` at the end.
    fn next(&mut self) -> std::io::Result<Option<&[u8]>> {
        self.buf.clear();
        if self.reader.read_until(b'\n', &mut self.buf)? == 0 {
            return Ok(None);
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        }
        Ok(Some(&self.buf))
    }
}

/// Splits lines into cells (RFC 4180 quoting) with one csv reader kept from line to line:
/// building a reader per line costs more than all the rest of a replay at `max` pace.
struct Cells {
    reader: csv::Reader<Cursor<Vec<u8>>>,
}

impl Cells {
    fn new() -> Self {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(Cursor::new(Vec::with_capacity(512)));
        // Headers set, so that rewinding never reads a line as the header.
        reader.set_byte_headers(csv::ByteRecord::new());
        Self { reader }
    }

    /// The cells of `line` into `record`; an unterminated quote keeps the rest of the line in
    /// its cell. `false` when the line gives no record.
    fn split(&mut self, line: &[u8], record: &mut csv::ByteRecord) -> bool {
        let text = self.reader.get_mut().get_mut();
        text.clear();
        text.extend_from_slice(line);
        self.reader
            .seek_raw(SeekFrom::Start(0), csv::Position::new())
            .is_ok()
            && self.reader.read_byte_record(record).unwrap_or(false)
    }
}

/// Whether `first` (the file's first line) is a header.
fn is_header(mode: HeaderMode, first: &[u8], first_name: &str) -> bool {
    match mode {
        HeaderMode::Present => true,
        HeaderMode::Absent => false,
        HeaderMode::Auto => {
            let mut r = csv::ByteRecord::new();
            Cells::new().split(first, &mut r)
                && r.get(0).is_some_and(|c| c == first_name.as_bytes())
        }
    }
}

/// The pause before line `line` at the original's pace: uniform in [5, 9] ms, from an RNG
/// seeded by (`seed`, `line`), so a resumed replay keeps the same pauses.
pub fn original_pause(seed: u64, line: u64) -> Duration {
    let mut rng = StdRng::seed_from_u64(seed ^ line.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    Duration::from_secs_f64(rng.random_range(0.005..=0.009))
}

/// Pauses for [`Pace::Speedup`]: the gap since the previous line's time over N; a line whose
/// time cannot be read keeps the previous pause, a time earlier than the previous one none.
#[derive(Debug, Default)]
struct Speedup {
    last_ms: Option<i64>,
    last_pause: Duration,
}

impl Speedup {
    fn pause(&mut self, time: Option<i64>, factor: f64) -> Duration {
        let Some(t) = time else {
            return self.last_pause;
        };
        let pause = match self.last_ms {
            Some(last) if t > last => Duration::from_secs_f64((t - last) as f64 / 1000.0 / factor),
            _ => Duration::ZERO,
        };
        self.last_ms = Some(t);
        self.last_pause = pause;
        pause
    }
}

/// Counts the data lines a replay will send (for the progress bar); blocking.
fn count_lines(opts: &ReplayOptions, first_name: &str) -> std::io::Result<u64> {
    let mut lines = Lines::open(&opts.file).map_err(|e| match e {
        ReplayError::Open { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    })?;
    let mut n = 0u64;
    let mut first = true;
    while let Some(line) = lines.next()? {
        if first && is_header(opts.header, line, first_name) {
            first = false;
            continue;
        }
        first = false;
        n += 1;
    }
    let from = opts.from_line.max(1);
    let left = (n + 1).saturating_sub(from);
    Ok(if opts.count == 0 {
        left
    } else {
        left.min(opts.count)
    })
}

/// A progress bar on stderr (lines sent of total, rate, ETA) when `terminal`, else hidden.
pub fn progress_bar(terminal: bool) -> ProgressBar {
    if !terminal {
        return ProgressBar::hidden();
    }
    ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "replay {bar:30} {human_pos}/{human_len} lines  {rate} lines/s  ETA {eta}",
        )
        .expect("a valid template")
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}", state.per_sec());
            },
        ),
    )
}

/// `anomalyd replay`: [`replay`] from `opts.from_line` with a producer of its own
/// ([`producer_config`]), a progress bar on stderr when `terminal`, until the end or `stop`.
///
/// # Errors
/// As [`replay`], and [`ReplayError::Producer`].
pub async fn replay_file(
    kafka: &KafkaConfig,
    opts: &ReplayOptions,
    terminal: bool,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<ReplaySummary, ReplayError> {
    let producer: FutureProducer = producer_config(kafka)
        .create()
        .map_err(ReplayError::Producer)?;
    let shutdown = CancellationToken::new();
    let stopping = shutdown.clone();
    let watch = tokio::spawn(async move {
        stop.await;
        stopping.cancel();
    });
    let position = Position::new(opts.from_line);
    let result = replay(
        opts,
        &producer,
        &kafka.brokers,
        &position,
        &progress_bar(terminal),
        &|| {},
        shutdown.clone(),
    )
    .await;
    watch.abort();
    result
}

/// One line in flight: its data line number.
type Delivery = (u64, Result<(), SinkError>);

/// Replays `opts.file` to `opts.topic` from `position.next_line` (which it moves on to the
/// first line not acknowledged when it returns), until the end of the file, `opts.count`
/// lines, `shutdown`, or a failure.
///
/// `beat` is called for every line and at least once a second while pausing (the supervisor's
/// heartbeat); `progress` is advanced per line sent (pass [`ProgressBar::hidden`] for none).
///
/// # Errors
/// Before any line is sent: [`ReplayError::Open`], [`ReplayError::NoTopic`],
/// [`ReplayError::Unreachable`], [`ReplayError::NoColumn`]. Failures after that stop the replay
/// and come back in [`ReplaySummary::error`], with [`ReplaySummary::resume_from`].
pub async fn replay(
    opts: &ReplayOptions,
    producer: &FutureProducer,
    brokers: &str,
    position: &Position,
    progress: &ProgressBar,
    beat: &(dyn Fn() + Send + Sync),
    shutdown: CancellationToken,
) -> Result<ReplaySummary, ReplayError> {
    let started = Instant::now();
    let from_line = position.next_line.load(Relaxed).max(1);
    // The end stays where `opts` put it, across restarts that move the start.
    let end = opts.end_line();
    if end.is_some_and(|end| end <= from_line) {
        return Ok(ReplaySummary::default());
    }
    let opts = &ReplayOptions {
        from_line,
        count: end.map_or(0, |end| end - from_line),
        ..opts.clone()
    };
    let mut lines = Lines::open(&opts.file)?;
    {
        let (p, topic, b) = (producer.clone(), opts.topic.clone(), brokers.to_owned());
        tokio::task::spawn_blocking(move || {
            check_topic(&p, &topic, &b, crate::tail::REQUEST_TIMEOUT)
        })
        .await
        .map_err(|e| ReplayError::Unreachable {
            topic: opts.topic.clone(),
            brokers: brokers.to_owned(),
            reason: e.to_string(),
        })??;
    }
    let default_names: Vec<String> = RETAIL_COLUMNS.iter().map(|c| c.to_string()).collect();
    let first_name = opts
        .columns
        .as_ref()
        .and_then(|c| c.first())
        .unwrap_or(&default_names[0])
        .clone();
    if !progress.is_hidden() {
        let (o, f) = (opts.clone(), first_name.clone());
        let total = tokio::task::spawn_blocking(move || count_lines(&o, &f))
            .await
            .ok()
            .and_then(Result::ok);
        progress.set_length(total.unwrap_or(0));
    }

    let mut s = ReplaySummary::default();
    let mut record = csv::ByteRecord::new();
    let mut cells = Cells::new();
    let mut key_index: Option<usize> = None;
    let mut time_index: Option<usize> = None;
    let mut speedup = Speedup::default();
    let mut in_flight: BTreeSet<u64> = BTreeSet::new();
    let mut deliveries: JoinSet<Delivery> = JoinSet::new();
    let mut first_failed: Option<u64> = None;
    let mut data_line = 0u64;
    let mut due = Instant::now();
    // The first line not read, where the replay ended or stopped reading.
    let next_unread;

    loop {
        let line = match lines.next() {
            Ok(Some(line)) => line,
            Ok(None) => {
                next_unread = None;
                break;
            }
            Err(source) => {
                s.error = Some(ReplayError::Read {
                    path: opts.file.clone(),
                    line: data_line,
                    source,
                });
                next_unread = Some(data_line + 1);
                break;
            }
        };
        s.lines_read += 1;
        if s.lines_read == 1 {
            let header = is_header(opts.header, line, &first_name);
            let names = match (&opts.columns, header) {
                (Some(c), _) => c.clone(),
                (None, true) => {
                    cells.split(line, &mut record);
                    record
                        .iter()
                        .map(|c| String::from_utf8_lossy(c).into_owned())
                        .collect()
                }
                (None, false) => default_names.clone(),
            };
            key_index = Some(opts.key_column.resolve(&names)?);
            if let Pace::Speedup(_) = opts.pace {
                time_index = Some(opts.time_column.resolve(&names)?);
            }
            if header {
                s.skipped_header = true;
                continue;
            }
        }
        data_line += 1;
        if data_line < from_line {
            continue;
        }
        if end.is_some_and(|e| data_line >= e) || first_failed.is_some() {
            next_unread = Some(data_line);
            break;
        }
        if line.is_empty() {
            s.blank += 1;
            continue;
        }
        beat();
        let parsed = cells.split(line, &mut record);
        let key = key_index
            .and_then(|i| parsed.then(|| record.get(i)).flatten())
            .filter(|k| !k.is_empty());
        let pause = match opts.pace {
            Pace::Max => Duration::ZERO,
            Pace::Original => original_pause(opts.seed, data_line),
            Pace::Speedup(n) => {
                let time = time_index
                    .and_then(|i| parsed.then(|| record.get(i)).flatten())
                    .and_then(|t| std::str::from_utf8(t).ok())
                    .and_then(|t| parse_month_day_year(t).ok());
                speedup.pause(time, n)
            }
        };
        if !pause.is_zero() {
            due += pause;
            let now = Instant::now();
            if due + Duration::from_secs(1) < now {
                due = now;
            }
            // Wake at least once a second to beat, even across long gaps.
            let mut stopped = false;
            while Instant::now() < due {
                let nap = due.min(Instant::now() + Duration::from_secs(1));
                tokio::select! {
                    _ = shutdown.cancelled() => { stopped = true; break; }
                    _ = tokio::time::sleep_until(nap) => beat(),
                }
            }
            if stopped {
                next_unread = Some(data_line);
                break;
            }
        } else if shutdown.is_cancelled() {
            next_unread = Some(data_line);
            break;
        }
        let mut r = FutureRecord::to(&opts.topic).payload(line);
        if let Some(k) = key {
            r = r.key(k);
        } else {
            s.keyless += 1;
        }
        let pending = tokio::select! {
            _ = shutdown.cancelled() => { next_unread = Some(data_line); break; }
            p = enqueue(producer, r) => p,
        };
        let pending = match pending {
            Ok(p) => p,
            Err(source) => {
                s.error = Some(ReplayError::Send {
                    line: data_line,
                    source,
                });
                next_unread = Some(data_line);
                break;
            }
        };
        s.sent += 1;
        progress.inc(1);
        in_flight.insert(data_line);
        let n = data_line;
        deliveries.spawn(async move { (n, pending.delivered().await) });
        while let Some(done) = deliveries.try_join_next() {
            settle(done, &mut in_flight, &mut s, &mut first_failed, position);
        }
        while deliveries.len() >= IN_FLIGHT {
            if let Some(done) = deliveries.join_next().await {
                settle(done, &mut in_flight, &mut s, &mut first_failed, position);
            }
        }
        if first_failed.is_some() {
            next_unread = Some(data_line + 1);
            break;
        }
    }

    // Wait for the lines in flight: all of them at the end of the file, up to DRAIN when
    // stopping early.
    let stopping_early = next_unread.is_some() && end.is_none_or(|e| next_unread != Some(e));
    let drain_until = Instant::now() + DRAIN;
    while !deliveries.is_empty() {
        let done = if stopping_early {
            tokio::select! {
                d = deliveries.join_next() => d,
                _ = tokio::time::sleep_until(drain_until) => break,
            }
        } else {
            deliveries.join_next().await
        };
        match done {
            Some(done) => settle(done, &mut in_flight, &mut s, &mut first_failed, position),
            None => break,
        }
    }
    deliveries.abort_all();
    progress.finish_and_clear();

    let after_read = next_unread.unwrap_or(data_line + 1);
    let resume = [first_failed, in_flight.first().copied(), Some(after_read)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(after_read)
        .max(from_line);
    position.next_line.store(resume, Relaxed);
    let finished = s.error.is_none()
        && first_failed.is_none()
        && in_flight.is_empty()
        && (next_unread.is_none() || end == next_unread);
    if !finished {
        s.resume_from = Some(resume);
        s.interrupted = s.error.is_none() && shutdown.is_cancelled();
    }
    if s.keyless > 0 {
        tracing::warn!(
            lines = s.keyless,
            column = %opts.key_column,
            "lines sent without a key: their key cell is missing or empty"
        );
    }
    s.elapsed = started.elapsed();
    Ok(s)
}

/// Counts one finished delivery.
fn settle(
    done: Result<Delivery, tokio::task::JoinError>,
    in_flight: &mut BTreeSet<u64>,
    s: &mut ReplaySummary,
    first_failed: &mut Option<u64>,
    position: &Position,
) {
    let Ok((line, result)) = done else { return };
    match result {
        Ok(()) => {
            in_flight.remove(&line);
            s.acknowledged += 1;
            position.acknowledged.fetch_add(1, Relaxed);
        }
        Err(source) => {
            in_flight.remove(&line);
            s.failed += 1;
            if first_failed.is_none_or(|f| line < f) {
                *first_failed = Some(line);
            }
            if s.error.is_none() {
                s.error = Some(ReplayError::Send { line, source });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_parse_and_print() {
        assert_eq!("original".parse::<Pace>(), Ok(Pace::Original));
        assert_eq!("max".parse::<Pace>(), Ok(Pace::Max));
        assert_eq!("speedup:60".parse::<Pace>(), Ok(Pace::Speedup(60.0)));
        assert_eq!("speedup:0.5".parse::<Pace>(), Ok(Pace::Speedup(0.5)));
        for bad in [
            "",
            "fast",
            "speedup:",
            "speedup:0",
            "speedup:-2",
            "speedup:inf",
            "60",
        ] {
            let e = bad.parse::<Pace>().unwrap_err();
            assert!(e.contains("speedup:N"), "{bad}: {e}");
        }
        assert_eq!(Pace::Speedup(60.0).to_string(), "speedup:60");
    }

    #[test]
    fn columns_are_names_or_positions_from_one() {
        assert_eq!("InvoiceNo".parse(), Ok(ColumnRef::Name("InvoiceNo".into())));
        assert_eq!("3".parse(), Ok(ColumnRef::Index(3)));
        assert!("0".parse::<ColumnRef>().is_err());
        assert!("-1".parse::<ColumnRef>().is_err());
        assert!("".parse::<ColumnRef>().is_err());
        let names: Vec<String> = RETAIL_COLUMNS.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            ColumnRef::Name("InvoiceDate".into())
                .resolve(&names)
                .unwrap(),
            4
        );
        assert_eq!(ColumnRef::Index(1).resolve(&names).unwrap(), 0);
        let e = ColumnRef::Name("Invoice".into())
            .resolve(&names)
            .unwrap_err();
        assert!(e.to_string().contains("\"Invoice\""), "{e}");
        assert_eq!(e.exit_code(), exit::USAGE);
    }

    #[test]
    fn header_is_detected_by_its_first_cell() {
        let h = b"InvoiceNo,StockCode,Description";
        let d = b"536365,85123A,\"WHITE HANGING HEART, T-LIGHT HOLDER\"";
        assert!(is_header(HeaderMode::Auto, h, "InvoiceNo"));
        assert!(!is_header(HeaderMode::Auto, d, "InvoiceNo"));
        assert!(is_header(HeaderMode::Auto, b"\"InvoiceNo\",x", "InvoiceNo"));
        assert!(!is_header(HeaderMode::Absent, h, "InvoiceNo"));
        assert!(is_header(HeaderMode::Present, d, "InvoiceNo"));
    }

    #[test]
    fn quoted_commas_do_not_move_the_key_or_time() {
        let mut r = csv::ByteRecord::new();
        let mut cells = Cells::new();
        let line = b"C536379,D,\"Discount, big\",-1,12/1/2010 9:41,27.5,14527,United Kingdom";
        assert!(cells.split(line, &mut r));
        assert_eq!(r.get(0), Some(&b"C536379"[..]));
        assert_eq!(r.get(2), Some(&b"Discount, big"[..]));
        assert_eq!(r.get(4), Some(&b"12/1/2010 9:41"[..]));
        // An unterminated quote keeps the rest of the line in its cell, never panics.
        assert!(cells.split(b"1,\"open,2", &mut r));
        assert_eq!(r.get(0), Some(&b"1"[..]));
        assert_eq!(r.get(1), Some(&b"open,2"[..]));
        // The reader is reused: a short line after a long one has only its own cells.
        assert!(cells.split(b"x", &mut r));
        assert_eq!(r.len(), 1);
        assert_eq!(r.get(0), Some(&b"x"[..]));
        assert!(cells.split(line, &mut r));
        assert_eq!(r.get(2), Some(&b"Discount, big"[..]));
    }

    #[test]
    fn original_pauses_are_5_to_9_ms_and_reproducible() {
        let pauses: Vec<Duration> = (1..2000).map(|l| original_pause(42, l)).collect();
        assert!(
            pauses
                .iter()
                .all(|p| (0.005..=0.009).contains(&p.as_secs_f64()))
        );
        let mean = pauses.iter().map(Duration::as_secs_f64).sum::<f64>() / pauses.len() as f64;
        assert!((0.0068..0.0072).contains(&mean), "{mean}");
        assert_eq!(original_pause(42, 7), original_pause(42, 7));
        assert_ne!(original_pause(42, 7), original_pause(43, 7));
    }

    #[test]
    fn speedup_divides_the_gaps_and_keeps_the_pace_over_unreadable_times() {
        let mut s = Speedup::default();
        let t = |x: &str| parse_month_day_year(x).ok();
        assert_eq!(s.pause(t("7/19/2011 12:37"), 60.0), Duration::ZERO);
        assert_eq!(s.pause(t("7/19/2011 12:39"), 60.0), Duration::from_secs(2));
        assert_eq!(s.pause(t("garbage"), 60.0), Duration::from_secs(2));
        assert_eq!(s.pause(t("7/19/2011 12:40"), 60.0), Duration::from_secs(1));
        assert_eq!(s.pause(t("7/19/2011 12:40"), 60.0), Duration::ZERO);
        // Back in time: no pause, and the new time is the reference.
        assert_eq!(s.pause(t("7/19/2011 12:00"), 60.0), Duration::ZERO);
        assert_eq!(s.pause(t("7/19/2011 12:01"), 2.0), Duration::from_secs(30));
    }

    #[test]
    fn lines_keep_their_bytes_without_terminators() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.csv");
        std::fs::write(&p, b"a,\"b, c\" ,d\r\n\nlast\xff").unwrap();
        let mut l = Lines::open(&p).unwrap();
        assert_eq!(l.next().unwrap(), Some(&b"a,\"b, c\" ,d"[..]));
        assert_eq!(l.next().unwrap(), Some(&b""[..]));
        assert_eq!(l.next().unwrap(), Some(&b"last\xff"[..]));
        assert_eq!(l.next().unwrap(), None);
        let missing = Lines::open(&dir.path().join("nope.csv")).err().unwrap();
        assert_eq!(missing.exit_code(), exit::NO_INPUT);
    }

    #[test]
    fn counted_lines_follow_header_from_line_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.csv");
        std::fs::write(&p, "InvoiceNo,x\n1,a\n2,b\n3,c\n4,d\n").unwrap();
        let mut o = ReplayOptions::new(p, "t".into());
        assert_eq!(count_lines(&o, "InvoiceNo").unwrap(), 4);
        o.from_line = 3;
        assert_eq!(count_lines(&o, "InvoiceNo").unwrap(), 2);
        o.count = 1;
        assert_eq!(count_lines(&o, "InvoiceNo").unwrap(), 1);
        o.header = HeaderMode::Absent;
        o.from_line = 1;
        o.count = 0;
        assert_eq!(count_lines(&o, "InvoiceNo").unwrap(), 5);
    }

    #[test]
    fn config_values_read_as_the_command_line_does() {
        #[derive(Deserialize)]
        struct T {
            header: HeaderMode,
            key: ColumnRef,
            pace: Pace,
        }
        let t: T = toml::from_str("header = true\nkey = 1\npace = \"speedup:10\"").unwrap();
        assert_eq!(t.header, HeaderMode::Present);
        assert_eq!(t.key, ColumnRef::Index(1));
        assert_eq!(t.pace, Pace::Speedup(10.0));
        let t: T =
            toml::from_str("header = \"auto\"\nkey = \"InvoiceNo\"\npace = \"max\"").unwrap();
        assert_eq!(t.header, HeaderMode::Auto);
        assert_eq!(t.key, ColumnRef::Name("InvoiceNo".into()));
        assert!(toml::from_str::<T>("header = \"yes\"\nkey = 1\npace = \"max\"").is_err());
        assert!(toml::from_str::<T>("header = true\nkey = 0\npace = \"max\"").is_err());
    }
}
