//! The command line: one subcommand per job, parsed with clap. The same definition gives the
//! shell completions ([`completions`], clap_complete) and the man page ([`man_page`],
//! clap_mangen), so they cannot drift from `--help`.

use std::io::Write;
use std::path::PathBuf;

use clap::{ArgGroup, Args, CommandFactory, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

use crate::detect::forest::{Contamination, MaxSamples};
use crate::detect::kmeans::{KChoice, ScaleMethod, ThresholdRule};
use crate::offline::eval::EvalOptions;
use crate::offline::train::{TrainInput, TrainOptions};
use crate::offline::train_kmeans::{self, ClusterKind, ClusterTrainOptions};
use crate::source::generator::replay::{ColumnRef, HeaderMode, Pace, ReplayOptions};
use crate::tail::{Start, TailOptions};

/// What `--help` and the man page say about the configuration file and exit codes.
const AFTER_HELP: &str = "\
Configuration file, for every command: --config FILE, else $ANOMALYD_CONFIG, else \
./anomalyd.toml if it exists, else /etc/anomalyd/anomalyd.toml. A file named by --config or \
ANOMALYD_CONFIG must exist. health, ctl, tail and replay run on built-in defaults when no file is \
found.

Exit codes: 0 success; 1 runtime failure; 2 usage (clap); 64 usage (check-config --get: no \
such key; replay: no such column); 65 bad data or damaged model file; 66 missing input (model file, CSV, tail's or replay's topic); \
69 unavailable (the daemon's socket or the Kafka brokers do not answer); 73 cannot write the \
output; 78 invalid configuration (or a model that does not fit its detector's features); 130 and 143: \
a second SIGINT or SIGTERM stopped `run` during its shutdown (130: replay interrupted). health: 0 OK, 1 WARNING, \
2 CRITICAL, 3 UNKNOWN.";

/// Real-time anomaly detection on Kafka streams.
#[derive(Debug, Parser)]
#[command(
    name = "anomalyd",
    version,
    about,
    propagate_version = true,
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon until SIGTERM or SIGINT.
    ///
    /// Starts the generator (if enabled) and the detector workers. SIGTERM or SIGINT stops it
    /// gracefully within `[supervisor] shutdown_grace_s`; a second one during the shutdown
    /// stops it at once, naming what was still running (exit 130 for SIGINT, 143 for SIGTERM).
    Run(ConfigArg),
    /// Check the configuration and its model as `run` would: print `ok`, or every error.
    ///
    /// Exit 78 for the configuration or a model that does not fit its detector's `features`, 66 for
    /// a missing model file, 65 for a damaged one.
    CheckConfig(CheckConfigArgs),
    /// Print a topic's last records as JSON lines, as Unix `tail` (`-f` follows).
    ///
    /// Without options, the last 10 records over all partitions, oldest first, then exit. An
    /// empty topic prints nothing (exit 0); a missing topic exits 66, brokers that do not
    /// answer 69.
    Tail(TailArgs),
    /// Search the anomaly store (`[store]`): a table of the newest matching anomalies,
    /// `--json` lines, or `--count --by 1m` (counts per interval).
    ///
    /// E.g. `anomalyd query --detector sensors --since 2h --where sensor_id=s-17`. Times are
    /// event times: RFC 3339 or an age before now (`15m`, `2h`, `7d`); `--until` is exclusive.
    /// Exit 78 when the configuration has no `[store]`, 66 when the store file does not exist.
    Query(QueryArgs),
    /// Write a CSV file's lines, in order, to a topic: key = one cell (InvoiceNo), value = the
    /// line unchanged.
    ///
    /// E.g. `anomalyd replay online_retail_stream.csv --topic purchases --pace max`. A header
    /// line is not sent. On a terminal a progress bar shows lines sent, rate and ETA; otherwise
    /// one summary line ends the run. Ctrl-C (or a failed delivery) waits for the lines in
    /// flight and prints the line to resume from with `--from-line`, which loses nothing. Exit
    /// 66 for a missing file or topic (the topic must exist), 69 when the brokers do not
    /// answer, 130 after Ctrl-C.
    Replay(ReplayArgs),
    /// One-line health of the running daemon, with Nagios exit codes (0 OK, 1 WARNING,
    /// 2 CRITICAL, 3 UNKNOWN).
    Health(HealthArgs),
    /// Talk to the running daemon: `status` (pretty /status) or `reload` (the model).
    Ctl(CtlArgs),
    /// Train a model (Isolation Forest, k-means or bisecting k-means) on a CSV file or the
    /// synthetic set and write a model file.
    ///
    /// `--kind kmeans|bisecting_kmeans` score a record by its squared distance to its assigned
    /// centre (higher is more anomalous) and flag it when that exceeds the threshold set by
    /// `--threshold`; `--k auto` keeps the k before the elbow of the cost curve.
    Train(TrainArgs),
    /// Score a CSV file with a model of any kind: ROC AUC, average precision, share flagged,
    /// precision and recall at the model's threshold, rows/s.
    Eval(EvalArgs),
    /// Print a shell completion script to stdout.
    ///
    /// E.g. `anomalyd completions bash > ~/.local/share/bash-completion/completions/anomalyd`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page, anomalyd(1), to stdout.
    ///
    /// E.g. `anomalyd man > anomalyd.1; man ./anomalyd.1`.
    Man,
}

/// `--config`, shared by every command that reads the configuration.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Configuration file [default: $ANOMALYD_CONFIG, else ./anomalyd.toml if it exists, else
    /// /etc/anomalyd/anomalyd.toml].
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `anomalyd check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Instead of `ok`, print the topics the configuration reads and writes, one per line
    /// (for provisioning them). Does not look at the model.
    #[arg(long)]
    pub topics: bool,
    /// Instead of `ok`, print the resolved value of one key, e.g. `model.path` (environment
    /// overrides applied), for scripts. Does not look at the model.
    #[arg(long, value_name = "KEY", conflicts_with = "topics")]
    pub get: Option<String>,
}

/// Where the control socket is: `--socket`, else the config's `[control] socket`, else the
/// built-in default.
#[derive(Debug, Args)]
pub struct SocketArg {
    /// Control socket [default: the configuration file's `[control] socket`; without a
    /// configuration file, $RUNTIME_DIRECTORY/anomalyd.sock or /run/anomalyd/anomalyd.sock].
    #[arg(long, short = 's')]
    pub socket: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
}

/// `anomalyd health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// Also print each task and partition.
    #[arg(short, long)]
    pub verbose: bool,
}

/// `anomalyd ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    #[command(subcommand)]
    pub action: CtlAction,
}

#[derive(Debug, Subcommand)]
pub enum CtlAction {
    /// Print the daemon's status as JSON.
    Status(SocketArg),
    /// Reload the model file; exits non-zero if the daemon refuses it.
    Reload(SocketArg),
}

/// `anomalyd tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Topic to read.
    pub topic: String,
    #[command(flatten)]
    pub config: ConfigArg,
    /// Bootstrap brokers, `HOST:PORT[,HOST:PORT...]`, instead of the configuration's
    /// `[kafka] brokers`; works without a configuration file.
    #[arg(long, value_name = "HOST:PORT")]
    pub brokers: Option<String>,
    /// Print the last N records of the topic (over all partitions, oldest first) [default: 10,
    /// or 0 with --follow].
    #[arg(
        short = 'n',
        long = "lines",
        value_name = "N",
        conflicts_with = "from_beginning"
    )]
    pub lines: Option<u64>,
    /// Keep printing new records as they arrive, until Ctrl-C.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Print every record from the oldest one kept (then follow with --follow).
    #[arg(long)]
    pub from_beginning: bool,
    /// Pretty-print each record over several lines (a JSON value still as sent: its numbers
    /// and keys are never converted).
    #[arg(long)]
    pub pretty: bool,
}

/// `anomalyd query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only this detector's anomalies (`[detectors.NAME]`).
    #[arg(long, value_name = "NAME")]
    pub detector: Option<String>,
    /// Event time at or after: RFC 3339 (2026-03-01T10:00:00Z) or an age (15m, 2h, 7d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Event time before: RFC 3339 or an age.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only records with this Kafka key.
    #[arg(long)]
    pub key: Option<String>,
    /// A field of the anomaly record equals a value (`a.b` for a nested member); numbers
    /// compare as numbers. Repeat for several (all must hold).
    #[arg(long = "where", value_name = "FIELD=VALUE")]
    pub wheres: Vec<String>,
    /// Only rows with a negative decision (flagged), not every scored record.
    #[arg(long)]
    pub anomalies_only: bool,
    /// Most rows printed, newest first.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub limit: usize,
    /// One JSON object per line (the columns and the record), instead of a table.
    #[arg(long, conflicts_with = "count")]
    pub json: bool,
    /// Print how many rows match per interval of `--by`, instead of the rows.
    #[arg(long, requires = "by")]
    pub count: bool,
    /// The interval of `--count` (1m, 15m, 1h): epoch-aligned [start, start + by).
    #[arg(long, value_name = "INTERVAL", requires = "count")]
    pub by: Option<String>,
}

/// `anomalyd replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// CSV file, one record per line (a quoted field may hold commas, not line breaks).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Topic to write to; it must exist.
    #[arg(long, short = 't', value_name = "TOPIC")]
    pub topic: String,
    #[command(flatten)]
    pub config: ConfigArg,
    /// Bootstrap brokers, `HOST:PORT[,HOST:PORT...]`, instead of the configuration's
    /// `[kafka] brokers`; works without a configuration file.
    #[arg(long, value_name = "HOST:PORT")]
    pub brokers: Option<String>,
    /// The cell that keys each line: a column name (from --columns, else the header, else the
    /// Online Retail columns InvoiceNo, StockCode, Description, Quantity, InvoiceDate,
    /// UnitPrice, CustomerID, Country) or a position, 1 for the first column. A line without
    /// it is sent without a key.
    #[arg(long, value_name = "NAME|INDEX", default_value = "InvoiceNo")]
    pub key_column: ColumnRef,
    /// Column names, comma-separated, for columns given by name [default: the header's, else
    /// the Online Retail columns].
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// Whether the first line is a header (not sent): `auto` when its first cell is the first
    /// column name.
    #[arg(long, value_name = "auto|true|false", default_value = "auto")]
    pub header: HeaderMode,
    /// `original`: a uniform random 5-9 ms pause before each line, as the original producer;
    /// `speedup:N`: N times faster than the gaps between the lines' --time-column times;
    /// `max`: as fast as the broker takes them.
    #[arg(long, value_name = "PACE", default_value = "original")]
    pub pace: Pace,
    /// The cell whose `M/D/YYYY H:MM` times `--pace speedup:N` follows (a time that does not
    /// parse keeps the previous pause).
    #[arg(long, value_name = "NAME|INDEX", default_value = "InvoiceDate")]
    pub time_column: ColumnRef,
    /// First data line to send, 1-based, a header not counted: the number printed by an
    /// interrupted replay.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub from_line: u64,
    /// Lines to send from --from-line; 0: to the end of the file.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub count: u64,
    /// Seed of `--pace original`'s pauses.
    #[arg(long, value_name = "N", default_value_t = 42)]
    pub seed: u64,
}

impl ReplayArgs {
    /// The library's options.
    pub fn options(&self) -> ReplayOptions {
        ReplayOptions {
            file: self.file.clone(),
            topic: self.topic.clone(),
            key_column: self.key_column.clone(),
            columns: self.columns.clone(),
            header: self.header,
            pace: self.pace,
            time_column: self.time_column.clone(),
            from_line: self.from_line,
            count: self.count,
            seed: self.seed,
        }
    }
}

/// `tail`'s `-n` when neither `-n`, `-f` nor `--from-beginning` is given, as Unix `tail`.
pub const TAIL_LINES: u64 = 10;

impl TailArgs {
    /// The library's options: `--from-beginning`, else the last `-n` records (10 by default,
    /// none with `-f` alone, which then prints only what comes next).
    pub fn options(&self) -> TailOptions {
        let start = match (self.from_beginning, self.lines) {
            (true, _) => Start::Beginning,
            (false, Some(n)) => Start::Last(n),
            (false, None) => Start::Last(if self.follow { 0 } else { TAIL_LINES }),
        };
        TailOptions {
            topic: self.topic.clone(),
            start,
            follow: self.follow,
            pretty: self.pretty,
        }
    }
}

/// `anomalyd train --kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TrainKind {
    /// Isolation Forest: score in [-1, 0], lower is more anomalous.
    #[value(name = "isolation_forest")]
    IsolationForest,
    /// k-means: squared distance to the nearest centre, higher is more anomalous.
    #[value(name = "kmeans")]
    KMeans,
    /// Bisecting k-means (Spark's): squared distance to the leaf reached from the root,
    /// higher is more anomalous.
    #[value(name = "bisecting_kmeans")]
    BisectingKMeans,
}

/// `anomalyd train --format`: what the `--input` file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TrainFormat {
    /// A header row and one training row per line (numeric feature columns).
    #[default]
    #[value(name = "csv")]
    Csv,
    /// Purchase lines (the Online Retail CSV, header optional): one training row per invoice,
    /// features mean_unit_price, min_unit_price, max_unit_price, hour, quantity_sum.
    #[value(name = "purchases")]
    Purchases,
}

/// What `anomalyd train`'s arguments ask for.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainJob {
    Forest(TrainOptions),
    Clusters(ClusterTrainOptions),
}

/// `anomalyd train`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("data").required(true).args(["input", "synthetic"])))]
pub struct TrainArgs {
    /// Model kind.
    #[arg(long, value_enum, default_value_t = TrainKind::IsolationForest)]
    pub kind: TrainKind,
    /// Training data: a CSV file with a header row (or purchase lines, see --format).
    #[arg(long, value_name = "FILE.csv")]
    pub input: Option<PathBuf>,
    /// What --input holds: `csv` (a training row per line) or `purchases` (purchase lines
    /// grouped into invoices by InvoiceNo over the whole file; cancellations and invoices whose
    /// first line lacks CustomerID or Description left out) [default: csv].
    #[arg(long, value_enum, requires = "input")]
    pub format: Option<TrainFormat>,
    /// Train on the synthetic two-blob set drawn with this seed (42 if omitted); for the
    /// Isolation Forest with 50 trees, max_samples 500 and contamination 0.01 unless
    /// overridden.
    #[arg(long, value_name = "SEED", num_args = 0..=1, default_missing_value = "42")]
    pub synthetic: Option<u64>,
    /// Feature columns, comma-separated [default: every numeric column except the label].
    #[arg(long, value_delimiter = ',', requires = "input")]
    pub features: Option<Vec<String>>,
    /// Label column, never used as a feature.
    #[arg(long, default_value = "label")]
    pub label: String,
    /// isolation_forest: number of trees (n_estimators) [default: 100].
    #[arg(long)]
    pub trees: Option<usize>,
    /// isolation_forest: rows per tree, `auto` (min(256, rows)) or a count [default: auto].
    #[arg(long, value_name = "auto|N")]
    pub max_samples: Option<MaxSamples>,
    /// isolation_forest: expected share of anomalies, `auto` (offset -0.5) or a fraction in
    /// (0, 0.5] [default: auto].
    #[arg(long, value_name = "auto|FRACTION")]
    pub contamination: Option<Contamination>,
    /// k-means kinds: clusters, or `auto`: train k = 1..k-max and keep K-1, K the first k whose
    /// cost(k)/cost(k-1) exceeds --elbow-ratio [default: auto].
    #[arg(long, value_name = "auto|N")]
    pub k: Option<KChoice>,
    /// k-means kinds, --k auto: the largest k tried [default: 20].
    #[arg(long, value_name = "N")]
    pub k_max: Option<usize>,
    /// k-means kinds, --k auto: the elbow's ratio, in (0, 1] [default: 0.7].
    #[arg(long, value_name = "RATIO")]
    pub elbow_ratio: Option<f64>,
    /// k-means kinds: the threshold, `top:N` (the N-th largest training score; refused when
    /// the training set has fewer than N rows) or `quantile:Q` (0 < Q < 1); a record is an
    /// anomaly iff its score is above it [default: top:2000].
    #[arg(long, value_name = "top:N|quantile:Q")]
    pub threshold: Option<ThresholdRule>,
    /// bisecting_kmeans: a cluster needs at least N rows to be split [default: 1].
    #[arg(long, value_name = "N")]
    pub min_divisible: Option<u64>,
    /// k-means kinds: feature scaling, `none` or `standard` (divide each feature by its
    /// training standard deviation; stored in the model and applied when scoring)
    /// [default: none].
    #[arg(long, value_name = "none|standard")]
    pub scale: Option<ScaleMethod>,
    /// Random seed (random_state) [default: 42].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where to write the model file.
    #[arg(long, short = 'o', value_name = "PATH")]
    pub out: PathBuf,
    /// Also draw the training scores' histogram, with the threshold, to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub report: Option<PathBuf>,
}

impl TrainArgs {
    /// What to train: the Isolation Forest's options or the k-means kinds'. Options of another
    /// kind are a usage error (clap's, exit 2), not silently ignored.
    pub fn job(&self, progress: bool) -> Result<TrainJob, clap::Error> {
        let given = |flags: &[(&'static str, bool)]| -> Vec<&'static str> {
            flags.iter().filter(|f| f.1).map(|f| f.0).collect()
        };
        let kind_name = self
            .kind
            .to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned());
        let refuse = |flags: Vec<&str>, applies: &str| {
            usage_error(format!(
                "{}: only for {applies}, not --kind {kind_name}",
                flags.join(", ")
            ))
        };
        // clap lets these through with --synthetic despite `requires = "input"`: checked here.
        let input_only = given(&[
            ("--features", self.features.is_some()),
            ("--format", self.format.is_some()),
        ]);
        if self.input.is_none() && !input_only.is_empty() {
            return Err(usage_error(format!(
                "{}: only with --input",
                input_only.join(", ")
            )));
        }
        if self.format == Some(TrainFormat::Purchases) && self.features.is_some() {
            return Err(usage_error(
                "--features: not with --format purchases, whose features are fixed".into(),
            ));
        }
        let forest_only = given(&[
            ("--trees", self.trees.is_some()),
            ("--max-samples", self.max_samples.is_some()),
            ("--contamination", self.contamination.is_some()),
        ]);
        let clusters_only = given(&[
            ("--k", self.k.is_some()),
            ("--k-max", self.k_max.is_some()),
            ("--elbow-ratio", self.elbow_ratio.is_some()),
            ("--threshold", self.threshold.is_some()),
            ("--min-divisible", self.min_divisible.is_some()),
            ("--scale", self.scale.is_some()),
        ]);
        let kind = match self.kind {
            TrainKind::IsolationForest if !clusters_only.is_empty() => {
                return Err(refuse(clusters_only, "--kind kmeans|bisecting_kmeans"));
            }
            TrainKind::IsolationForest => return Ok(TrainJob::Forest(self.options(progress))),
            _ if !forest_only.is_empty() => {
                return Err(refuse(forest_only, "--kind isolation_forest"));
            }
            TrainKind::KMeans if self.min_divisible.is_some() => {
                return Err(refuse(vec!["--min-divisible"], "--kind bisecting_kmeans"));
            }
            TrainKind::KMeans => ClusterKind::KMeans,
            TrainKind::BisectingKMeans => ClusterKind::BisectingKMeans,
        };
        let sweep_only = given(&[
            ("--k-max", self.k_max.is_some()),
            ("--elbow-ratio", self.elbow_ratio.is_some()),
        ]);
        if matches!(self.k, Some(KChoice::Fixed(_))) && !sweep_only.is_empty() {
            return Err(usage_error(format!(
                "{}: only for --k auto, not a fixed --k",
                sweep_only.join(", ")
            )));
        }
        let mut options = ClusterTrainOptions::new(kind, self.input(), self.out.clone());
        options.k = self.k.unwrap_or(options.k);
        options.k_max = self.k_max.unwrap_or(options.k_max);
        options.elbow_ratio = self.elbow_ratio.unwrap_or(options.elbow_ratio);
        options.threshold = self.threshold.unwrap_or(options.threshold);
        options.min_divisible = self.min_divisible.unwrap_or(options.min_divisible);
        options.scale = self.scale.unwrap_or(options.scale);
        options.seed = self.seed.unwrap_or(train_kmeans::DEFAULT_SEED);
        options.report = self.report.clone();
        Ok(TrainJob::Clusters(options))
    }

    fn input(&self) -> TrainInput {
        match (&self.input, self.synthetic) {
            (Some(path), _) if self.format == Some(TrainFormat::Purchases) => {
                TrainInput::Purchases { path: path.clone() }
            }
            (Some(path), _) => TrainInput::Csv {
                path: path.clone(),
                features: self.features.clone(),
                label: self.label.clone(),
            },
            (None, seed) => TrainInput::Synthetic {
                seed: seed.unwrap_or(crate::synthetic::DEFAULT_SEED),
            },
        }
    }

    /// The Isolation Forest's options (whatever `--kind` says); `progress` draws a progress
    /// bar on stderr.
    pub fn options(&self, progress: bool) -> TrainOptions {
        let input = self.input();
        TrainOptions {
            input,
            trees: self.trees,
            max_samples: self.max_samples,
            contamination: self.contamination,
            seed: self.seed,
            out: self.out.clone(),
            report: self.report.clone(),
            progress,
        }
    }
}

/// A usage error of `anomalyd train`, as clap reports its own (exit 2).
fn usage_error(message: String) -> clap::Error {
    let mut cli = Cli::command();
    let mut train = cli
        .find_subcommand_mut("train")
        .map(|c| c.clone().bin_name("anomalyd train"))
        .unwrap_or(cli);
    train.error(clap::error::ErrorKind::ArgumentConflict, message)
}

/// `anomalyd eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model file.
    #[arg(long, short = 'm', value_name = "PATH")]
    pub model: PathBuf,
    /// Data to score: a CSV file with a header row holding the model's feature columns.
    #[arg(long, value_name = "FILE.csv")]
    pub input: PathBuf,
    /// Label column (0 = normal, 1 = anomaly); without it, ranking metrics are skipped.
    #[arg(long, default_value = "label")]
    pub label: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also draw the scores' histogram, with the threshold, to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub report: Option<PathBuf>,
}

impl EvalArgs {
    pub fn options(&self) -> EvalOptions {
        EvalOptions {
            model: self.model.clone(),
            input: self.input.clone(),
            label: self.label.clone(),
            report: self.report.clone(),
        }
    }
}

/// Writes `shell`'s completion script for the whole command line to `out`.
///
/// Errors: writing to `out` (a closed pipe, for one). The script is built in memory first, as
/// `clap_complete` panics on a failed write.
pub fn completions(shell: Shell, out: &mut dyn Write) -> std::io::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "anomalyd", &mut script);
    out.write_all(&script)?;
    out.flush()
}

/// Writes the man page, anomalyd(1) in roff, to `out`: NAME, SYNOPSIS, DESCRIPTION, OPTIONS,
/// SUBCOMMANDS (each with its own options), EXTRA (the search order and exit codes) and VERSION.
pub fn man_page(out: &mut dyn Write) -> std::io::Result<()> {
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    // The stock SUBCOMMANDS section gives one line each; the page is more useful with every
    // subcommand's own synopsis and options.
    writeln!(out, ".SH SUBCOMMANDS")?;
    for sub in cmd.get_subcommands() {
        subcommand_section(out, sub, "anomalyd")?;
    }
    man.render_extra_section(out)?;
    man.render_version_section(out)
}

/// One `.SS` per subcommand (nested ones too): synopsis, description, options.
fn subcommand_section(
    out: &mut dyn Write,
    sub: &clap::Command,
    parent: &str,
) -> std::io::Result<()> {
    let name = format!("{parent} {}", sub.get_name());
    let page = clap_mangen::Man::new(sub.clone().display_name(&name).bin_name(&name));
    writeln!(out, ".SS {}", roff_escape(&name))?;
    let mut section = Vec::new();
    page.render_synopsis_section(&mut section)?;
    section.extend_from_slice(b".PP\n");
    page.render_description_section(&mut section)?;
    if sub.get_arguments().any(|a| !a.is_hide_set()) {
        section.extend_from_slice(b".PP\n");
        page.render_options_section(&mut section)?;
    }
    // Their own headings would end the SUBCOMMANDS section.
    for line in String::from_utf8_lossy(&section).lines() {
        if !line.starts_with(".SH ") {
            writeln!(out, "{line}")?;
        }
    }
    for nested in sub.get_subcommands() {
        subcommand_section(out, nested, &name)?;
    }
    Ok(())
}

/// Escapes what roff would read as a control character at the start of a line.
fn roff_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('-', "\\-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn subcommands() -> Vec<String> {
        Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect()
    }

    #[test]
    fn completions_know_every_subcommand() {
        assert!(subcommands().len() >= 9, "{:?}", subcommands());
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            completions(shell, &mut out).unwrap();
            let script = String::from_utf8(out).unwrap();
            for name in subcommands() {
                assert!(script.contains(&name), "{shell}: no {name}");
            }
        }
        let mut bash = Vec::new();
        completions(Shell::Bash, &mut bash).unwrap();
        let bash = String::from_utf8(bash).unwrap();
        assert!(bash.contains("complete -F _anomalyd"), "{bash}");
        // Subcommands' own options are completed too.
        assert!(bash.contains("--from-beginning") && bash.contains("--brokers"));
    }

    #[test]
    fn man_page_has_the_sections_and_every_subcommand() {
        let mut out = Vec::new();
        man_page(&mut out).unwrap();
        let page = String::from_utf8(out).unwrap();
        assert!(page.starts_with(".ie") || page.starts_with(".TH"), "{page}");
        assert!(page.contains(".TH anomalyd 1"), "{page}");
        for section in [".SH NAME", ".SH SYNOPSIS", ".SH SUBCOMMANDS", ".SH EXTRA"] {
            assert!(page.contains(section), "no {section}");
        }
        for name in subcommands() {
            let heading = format!(".SS anomalyd {}", name.replace('-', "\\-"));
            assert!(page.contains(&heading), "no {heading}");
        }
        // Options of subcommands, and the search order and exit codes from --help.
        assert!(page.contains("from\\-beginning"), "{page}");
        assert!(page.contains("ANOMALYD_CONFIG") && page.contains("130"));
    }

    #[test]
    fn tail_options_parse_like_unix_tail() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["anomalyd", "tail", "t"], args].concat())?;
            let Command::Tail(t) = cli.command else {
                panic!("not tail")
            };
            Ok::<_, clap::Error>((t.lines, t.follow, t.from_beginning, t.brokers))
        };
        let options = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["anomalyd", "tail", "t"], args].concat()).unwrap();
            let Command::Tail(t) = cli.command else {
                panic!("not tail")
            };
            let o = t.options();
            (o.start, o.follow)
        };
        assert_eq!(options(&[]), (Start::Last(10), false));
        assert_eq!(options(&["-f"]), (Start::Last(0), true));
        assert_eq!(options(&["-n", "3", "-f"]), (Start::Last(3), true));
        assert_eq!(options(&["--from-beginning"]), (Start::Beginning, false));
        assert_eq!(parse(&["-n", "3"]).unwrap(), (Some(3), false, false, None));
        assert_eq!(
            parse(&["-fn", "2", "--brokers", "h:1"]).unwrap(),
            (Some(2), true, false, Some("h:1".into()))
        );
        assert_eq!(
            parse(&["--from-beginning", "-f"]).unwrap(),
            (None, true, true, None)
        );
        assert!(parse(&["-n", "3", "--from-beginning"]).is_err());
        assert!(parse(&["-n", "-3"]).is_err());
    }

    #[test]
    fn train_takes_csv_or_synthetic_with_default_seed() {
        let cli = Cli::try_parse_from(["anomalyd", "train", "--synthetic", "--out", "m"]).unwrap();
        let Command::Train(args) = cli.command else {
            panic!("not train")
        };
        assert_eq!(
            args.options(false).input,
            TrainInput::Synthetic { seed: 42 }
        );

        let cli = Cli::try_parse_from([
            "anomalyd",
            "train",
            "--input",
            "d.csv",
            "--features",
            "a,b",
            "--max-samples",
            "auto",
            "--contamination",
            "0.05",
            "-o",
            "m",
        ])
        .unwrap();
        let Command::Train(args) = cli.command else {
            panic!("not train")
        };
        let options = args.options(false);
        assert_eq!(options.max_samples, Some(MaxSamples::Auto));
        assert_eq!(options.contamination, Some(Contamination::Fraction(0.05)));
        assert!(
            matches!(options.input, TrainInput::Csv { features: Some(f), .. } if f == ["a", "b"])
        );

        assert!(Cli::try_parse_from(["anomalyd", "train", "-o", "m"]).is_err());
        assert!(
            Cli::try_parse_from([
                "anomalyd",
                "train",
                "--synthetic",
                "--input",
                "d",
                "-o",
                "m"
            ])
            .is_err()
        );
        assert!(
            Cli::try_parse_from([
                "anomalyd",
                "train",
                "--synthetic",
                "--contamination",
                "0.7",
                "-o",
                "m"
            ])
            .is_err()
        );
    }

    #[test]
    fn train_format_purchases_reads_invoices_and_needs_an_input() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["anomalyd", "train"], args].concat());
        let Ok(Cli {
            command: Command::Train(t),
            ..
        }) = parse(&[
            "--kind",
            "kmeans",
            "--input",
            "p.csv",
            "--format",
            "purchases",
            "-o",
            "m",
        ])
        else {
            panic!("not train")
        };
        let Ok(TrainJob::Clusters(o)) = t.job(false) else {
            panic!("not clusters")
        };
        assert_eq!(
            o.input,
            TrainInput::Purchases {
                path: "p.csv".into()
            }
        );
        assert_eq!(o.threshold, ThresholdRule::Top(2000));
        for args in [
            &["--synthetic", "--format", "purchases", "-o", "m"][..],
            &["--synthetic", "--features", "a", "-o", "m"],
        ] {
            let Ok(Cli {
                command: Command::Train(t),
                ..
            }) = parse(args)
            else {
                panic!("not train")
            };
            let err = t.job(false).unwrap_err().to_string();
            assert!(err.contains("only with --input"), "{err}");
        }
        let Ok(Cli {
            command: Command::Train(t),
            ..
        }) = parse(&["--input", "p.csv", "-o", "m"])
        else {
            panic!("not train")
        };
        assert!(
            matches!(t.options(false).input, TrainInput::Csv { .. }),
            "csv by default"
        );
    }

    #[test]
    fn train_kind_picks_the_options_and_refuses_the_other_kinds() {
        let job = |args: &[&str]| {
            let cli = Cli::try_parse_from(
                [&["anomalyd", "train", "--synthetic", "-o", "m"], args].concat(),
            )?;
            let Command::Train(t) = cli.command else {
                panic!("not train")
            };
            t.job(false)
        };
        assert!(matches!(job(&[]), Ok(TrainJob::Forest(_))));
        assert!(
            matches!(job(&["--kind", "isolation_forest", "--trees", "3"]), Ok(TrainJob::Forest(o)) if o.trees == Some(3))
        );
        let Ok(TrainJob::Clusters(o)) = job(&[
            "--kind",
            "bisecting_kmeans",
            "--k",
            "auto",
            "--k-max",
            "9",
            "--elbow-ratio",
            "0.5",
            "--threshold",
            "quantile:0.99",
            "--min-divisible",
            "4",
            "--scale",
            "standard",
            "--seed",
            "3",
        ]) else {
            panic!("not a cluster job")
        };
        assert_eq!(o.kind, ClusterKind::BisectingKMeans);
        assert_eq!((o.k, o.k_max, o.elbow_ratio), (KChoice::Auto, 9, 0.5));
        assert_eq!(o.threshold, ThresholdRule::Quantile(0.99));
        assert_eq!(
            (o.min_divisible, o.scale, o.seed),
            (4, ScaleMethod::Standard, 3)
        );
        let Ok(TrainJob::Clusters(o)) = job(&["--kind", "kmeans", "--k", "5"]) else {
            panic!("not a cluster job")
        };
        assert_eq!((o.k, o.seed), (KChoice::Fixed(5), 42));
        assert_eq!(o.threshold, ThresholdRule::Top(2000));
        for wrong in [
            &["--k", "3"][..],
            &["--kind", "kmeans", "--trees", "3"],
            &["--kind", "kmeans", "--min-divisible", "3"],
            &["--kind", "kmeans", "--k", "3", "--k-max", "5"],
        ] {
            let err = job(wrong).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{wrong:?}");
            assert!(err.to_string().contains("only for"), "{err}");
        }
        for unparsable in [
            &["--kind", "kmeans", "--threshold", "top:0"][..],
            &["--kind", "kmeans", "--k", "0"],
            &["--kind", "kmeans", "--scale", "minmax"],
            &["--kind", "k_means"],
        ] {
            assert!(job(unparsable).is_err(), "{unparsable:?}");
        }
    }
}
