//! The `anomalyd` binary: parses arguments, loads the configuration, sets up logging and hands
//! over to the library. Errors are printed once, here, and turned into exit codes.

#![forbid(unsafe_code)]

use std::fmt::Display;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anomalyd::cli::{Cli, Command, CtlAction, CtlArgs, HealthArgs, SocketArg, TailArgs};
use anomalyd::config::{self, Config};
use anomalyd::control::{client, health};
use anomalyd::offline::{eval, train};
use anomalyd::signals::Signals;
use anomalyd::tail::{TailOptions, tail};
use anomalyd::{daemon, exit, logging};
use clap::Parser;

/// `health` and `ctl` give up after this: monitoring must not hang.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run(&args.config),
        Command::CheckConfig(args) => match load_config(&args.config.config) {
            Ok(c) if args.topics => done(c.topics().join("\n")),
            Ok(c) => match args.get.as_deref() {
                None => done("ok"),
                Some(key) => match c.value_of(key) {
                    Some(value) => done(value),
                    None => fail(&format!("check-config: no key {key}"), exit::USAGE),
                },
            },
            Err(code) => code,
        },
        Command::Train(args) => {
            match train::train(&args.options(std::io::stderr().is_terminal())) {
                Ok(summary) => done(summary),
                Err(e) => fail(&e, e.exit_code()),
            }
        }
        Command::Eval(args) => match eval::eval(&args.options()) {
            Ok(report) if args.json => match serde_json::to_string(&report) {
                Ok(json) => done(json),
                Err(e) => fail(&e, exit::FAILURE),
            },
            Ok(report) => done(report),
            Err(e) => fail(&e, e.exit_code()),
        },
        Command::Tail(args) => tail_topic(args),
        Command::Health(args) => check_health(args),
        Command::Ctl(args) => ctl(args),
    }
}

fn run(config_path: &Path) -> ExitCode {
    let config = match load_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = logging::init(&config.log) {
        return fail(&e, exit::CONFIG);
    }
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => return fail(&e, exit::FAILURE),
    };
    match runtime().block_on(daemon::run(config, signals)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, exit::FAILURE),
    }
}

fn tail_topic(args: TailArgs) -> ExitCode {
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
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match runtime().block_on(tail(&config.kafka, &opts, &mut out, stop)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(&e, exit::FAILURE),
    }
}

fn check_health(args: HealthArgs) -> ExitCode {
    let socket = socket_path(&args.socket);
    let h = runtime().block_on(health::check(&socket, CONTROL_TIMEOUT));
    println!("{}", h.line);
    if args.verbose {
        h.detail.iter().for_each(|l| println!("  {l}"));
    }
    ExitCode::from(h.verdict as u8)
}

fn ctl(args: CtlArgs) -> ExitCode {
    let (method, path, socket) = match &args.action {
        CtlAction::Status(s) => ("GET", "/status", socket_path(s)),
        CtlAction::Reload(s) => ("POST", "/reload", socket_path(s)),
    };
    // A reload reads and verifies the whole file: allow it more time than a status read.
    let timeout = CONTROL_TIMEOUT * if method == "POST" { 30 } else { 1 };
    match runtime().block_on(client::request(&socket, method, path, timeout)) {
        Ok((200, body)) => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Ok((code, body)) => {
            eprint!("anomalyd: the daemon answered {code}: {body}");
            ExitCode::from(exit::FAILURE)
        }
        Err(e) => fail(&e, exit::UNAVAILABLE),
    }
}

/// `--socket`, else the configuration's socket, else the built-in default.
fn socket_path(arg: &SocketArg) -> PathBuf {
    arg.socket.clone().unwrap_or_else(|| {
        config::load(&arg.config.config)
            .map(|c| c.control.socket)
            .unwrap_or_else(|_| config::default_socket_path())
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

fn done(output: impl Display) -> ExitCode {
    println!("{output}");
    ExitCode::SUCCESS
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
