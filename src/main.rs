//! The `anomalyd` binary: parses arguments and hands over to the library. Errors are printed
//! once, here, and turned into exit codes.

#![forbid(unsafe_code)]

use std::fmt::Display;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use anomalyd::cli::{Cli, Command};
use anomalyd::config::{self, Config};
use anomalyd::exit;
use anomalyd::offline::{eval, train};
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
        Command::Train(args) => {
            match train::train(&args.options(std::io::stderr().is_terminal())) {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e, e.exit_code()),
            }
        }
        Command::Eval(args) => match eval::eval(&args.options()) {
            Ok(report) if args.json => match serde_json::to_string(&report) {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e, exit::FAILURE),
            },
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e, e.exit_code()),
        },
    }
}

/// Prints an error once and turns it into an exit code.
fn fail(error: &dyn Display, code: u8) -> ExitCode {
    eprintln!("anomalyd: {error}");
    ExitCode::from(code)
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
