//! The command line: one subcommand per job, parsed with clap.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::config::DEFAULT_PATH;
use crate::detect::forest::{Contamination, MaxSamples};
use crate::offline::eval::EvalOptions;
use crate::offline::train::{TrainInput, TrainOptions};

/// Real-time anomaly detection on Kafka streams.
#[derive(Debug, Parser)]
#[command(name = "anomalyd", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: generator (if enabled), detector workers, until SIGTERM or SIGINT.
    Run(ConfigArg),
    /// Validate the configuration: print `ok`, or every error (exit 78).
    CheckConfig(CheckConfigArgs),
    /// Print a topic's records as JSON lines.
    Tail(TailArgs),
    /// One-line health of the running daemon, with Nagios exit codes (0 OK, 1 WARNING,
    /// 2 CRITICAL, 3 UNKNOWN).
    Health(HealthArgs),
    /// Talk to the running daemon: `status` (pretty /status) or `reload` (the model).
    Ctl(CtlArgs),
    /// Train an Isolation Forest on a CSV file or the synthetic set and write a model file.
    Train(TrainArgs),
    /// Score a CSV file with a model: ROC AUC, average precision, share flagged, rows/s.
    Eval(EvalArgs),
}

/// `--config`, shared by every command that reads the configuration.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Configuration file.
    #[arg(long, short = 'c', env = "ANOMALYD_CONFIG", default_value = DEFAULT_PATH)]
    pub config: PathBuf,
}

/// `anomalyd check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Instead of `ok`, print the topics the configuration reads and writes, one per line
    /// (for provisioning them).
    #[arg(long)]
    pub topics: bool,
    /// Instead of `ok`, print the resolved value of one key, e.g. `model.path` (environment
    /// overrides applied), for scripts.
    #[arg(long, value_name = "KEY", conflicts_with = "topics")]
    pub get: Option<String>,
}

/// Where the control socket is: `--socket`, else the config's `[control] socket`.
#[derive(Debug, Args)]
pub struct SocketArg {
    /// Control socket [default: the config's `[control] socket`].
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
    /// Start at the oldest record instead of the newest.
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop after N records.
    #[arg(short = 'n', long = "limit", value_name = "N")]
    pub limit: Option<u64>,
    /// Pretty-print each record over several lines.
    #[arg(long)]
    pub pretty: bool,
}

/// `anomalyd train`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("data").required(true).args(["input", "synthetic"])))]
pub struct TrainArgs {
    /// Training data: a CSV file with a header row.
    #[arg(long, value_name = "FILE.csv")]
    pub input: Option<PathBuf>,
    /// Train on the synthetic two-blob set drawn with this seed (42 if omitted), with 50 trees,
    /// max_samples 500 and contamination 0.01 unless overridden.
    #[arg(long, value_name = "SEED", num_args = 0..=1, default_missing_value = "42")]
    pub synthetic: Option<u64>,
    /// Feature columns, comma-separated [default: every numeric column except the label].
    #[arg(long, value_delimiter = ',', requires = "input")]
    pub features: Option<Vec<String>>,
    /// Label column, never used as a feature.
    #[arg(long, default_value = "label")]
    pub label: String,
    /// Number of trees (n_estimators) [default: 100].
    #[arg(long)]
    pub trees: Option<usize>,
    /// Rows per tree: `auto` (min(256, rows)) or a count [default: auto].
    #[arg(long, value_name = "auto|N")]
    pub max_samples: Option<MaxSamples>,
    /// Expected share of anomalies: `auto` (offset -0.5) or a fraction in (0, 0.5] [default: auto].
    #[arg(long, value_name = "auto|FRACTION")]
    pub contamination: Option<Contamination>,
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
    /// The library's options; `progress` draws a progress bar on stderr.
    pub fn options(&self, progress: bool) -> TrainOptions {
        let input = match (&self.input, self.synthetic) {
            (Some(path), _) => TrainInput::Csv {
                path: path.clone(),
                features: self.features.clone(),
                label: self.label.clone(),
            },
            (None, seed) => TrainInput::Synthetic {
                seed: seed.unwrap_or(crate::synthetic::DEFAULT_SEED),
            },
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
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
}
