//! The command line: one subcommand per job, parsed with clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::DEFAULT_PATH;

/// Real-time anomaly detection on Kafka streams.
#[derive(Debug, Parser)]
#[command(name = "anomalyd", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration: print `ok`, or every error (exit 78).
    CheckConfig(ConfigArg),
}

/// `--config`, shared by every command that reads the configuration.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Configuration file.
    #[arg(long, short = 'c', env = "ANOMALYD_CONFIG", default_value = DEFAULT_PATH)]
    pub config: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
