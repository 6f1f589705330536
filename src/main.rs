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
use anomalyd::logging;
use anomalyd::offline::{eval, train};
use anomalyd::signals::Signals;
use anomalyd::tail::{TailOptions, tail};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let config = match load_config(&args.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Err(e) = logging::init(&config.log) {
                return fail(&e, exit::CONFIG);
            }
            let mut signals = match Signals::install() {
                Ok(s) => s,
                Err(e) => return fail(&e, exit::FAILURE),
            };
            let result = runtime().block_on(anomalyd::daemon::run(
                config,
                async move { signals.terminated().await },
                anomalyd::daemon::DEFAULT_GRACE,
            ));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e, exit::FAILURE),
            }
        }
        Command::Tail(args) => {
            let config = match load_config(&args.config.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let opts = TailOptions {
                topic: args.topic,
                from_beginning: args.from_beginning,
                limit: args.limit,
                pretty: args.pretty,
            };
            let mut out = std::io::stdout().lock();
            let result = runtime().block_on(async {
                let stop = async {
                    let _ = tokio::signal::ctrl_c().await;
                };
                tail(&config.kafka, &opts, &mut out, stop).await
            });
            match result {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail(&e, exit::FAILURE),
            }
        }
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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
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
