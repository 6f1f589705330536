//! The `anomalyd` binary: parses arguments and hands over to the library. Errors are printed
//! once, here, and turned into exit codes.

#![forbid(unsafe_code)]

use std::path::Path;
use std::process::ExitCode;

use anomalyd::cli::{Cli, Command};
use anomalyd::config::{self, Config};
use anomalyd::exit;
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(args) => match load_config(&args.config) {
            Ok(_) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
    }
}

/// Loads the configuration, printing every error and mapping failure to `EX_CONFIG`.
fn load_config(path: &Path) -> Result<Config, ExitCode> {
    config::load(path).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("anomalyd: {e}");
        }
        ExitCode::from(exit::CONFIG)
    })
}
