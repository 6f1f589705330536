//! The `anomalyd` binary: parses arguments, finds and loads the configuration, sets up logging
//! and hands over to the library. Errors are printed once, here, and turned into exit codes.

#![forbid(unsafe_code)]

use std::fmt::Display;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anomalyd::cli::{
    self, CheckConfigArgs, Cli, Command, CtlAction, CtlArgs, HealthArgs, QueryArgs, ReplayArgs,
    SocketArg, TailArgs,
};
use anomalyd::config::{self, Config, ConfigError, ConfigErrors, Located, PropertyValue};
use anomalyd::control::client;
use anomalyd::control::health::{self, Verdict};
use anomalyd::daemon::{self, DaemonError};
use anomalyd::offline::{eval, train, train_kmeans};
use anomalyd::signals::Signals;
use anomalyd::tail::tail;
use anomalyd::{exit, logging};
use clap::Parser;

/// `health` and `ctl` give up after this: monitoring must not hang.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run(args.config.as_deref()),
        Command::CheckConfig(args) => check_config(&args),
        Command::Train(args) => match args.job(std::io::stderr().is_terminal()) {
            Ok(cli::TrainJob::Forest(options)) => match train::train(&options) {
                Ok(summary) => {
                    for warning in &summary.warnings {
                        warn(warning);
                    }
                    done(summary)
                }
                Err(e) => fail(&e, e.exit_code()),
            },
            Ok(cli::TrainJob::Clusters(options)) => match train_kmeans::train_clusters(&options) {
                Ok(summary) => done(summary),
                Err(e) => fail(&e, e.exit_code()),
            },
            Err(usage) => {
                let _ = usage.print();
                ExitCode::from(u8::try_from(usage.exit_code()).unwrap_or(exit::FAILURE))
            }
        },
        Command::Eval(args) => match eval::eval(&args.options()) {
            Ok(report) if args.json => match serde_json::to_string(&report) {
                Ok(json) => done(json),
                Err(e) => fail(&e, exit::FAILURE),
            },
            Ok(report) => done(report),
            Err(e) => fail(&e, e.exit_code()),
        },
        Command::Tail(args) => tail_topic(&args),
        Command::Query(args) => query_store(&args),
        Command::Replay(args) => replay_file(&args),
        Command::Health(args) => check_health(&args),
        Command::Ctl(args) => ctl(&args),
        Command::Completions { shell } => written(
            cli::completions(shell, &mut io::stdout().lock()),
            ExitCode::SUCCESS,
        ),
        Command::Man => written(
            cli::man_page(&mut io::stdout().lock()).and_then(|()| io::stdout().flush()),
            ExitCode::SUCCESS,
        ),
    }
}

fn run(flag: Option<&Path>) -> ExitCode {
    let (config, located) = match required_config(flag) {
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
    let rt = runtime();
    let result = rt.block_on(daemon::run(config, signals));
    // After a second signal, tasks were abandoned mid-work: do not wait for them.
    rt.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&daemon_error(&e, &located), e.exit_code()),
    }
}

/// `check-config`: the configuration, then (unless `--topics` or `--get`, which scripts use
/// before a model exists) the model, with the same check `run` makes; then the warnings
/// ([`Config::warnings`]) on stderr, which do not fail it.
fn check_config(args: &CheckConfigArgs) -> ExitCode {
    let (c, located) = match required_config(args.config.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if args.topics {
        return done(c.topic_lines().join("\n"));
    }
    if let Some(key) = args.get.as_deref() {
        return match c.value_of(key) {
            Some(value) => done(value),
            None => fail(&format!("check-config: no key {key}"), exit::USAGE),
        };
    }
    match daemon::load_scorers(&c) {
        Ok(_) => {
            for w in c.warnings() {
                warn(&format!(
                    "{}: {}: {}",
                    origin(&located, &w.key),
                    w.key,
                    w.message
                ));
            }
            done("ok")
        }
        Err(e) => fail(&daemon_error(&e, &located), e.exit_code()),
    }
}

/// A daemon error as printed: model problems are placed at the key that names the model or
/// the features (`./anomalyd.toml:42:8: detectors.transactions.model: ...`).
fn daemon_error(e: &DaemonError, located: &Located) -> String {
    match e {
        // Both echo configured values (the path, the pointers): cut, as configuration errors
        // are. A features error's text starts with `detectors.<name>.features: `.
        DaemonError::Model { detector, source } => {
            let key = format!("detectors.{detector}.model");
            format!(
                "{}: {key}: {}",
                origin(located, &key),
                config::shorten(&source.to_string())
            )
        }
        DaemonError::Rules { detector, source } => {
            let key = daemon::rules_key(detector, source);
            format!(
                "{}: {key}: {}",
                origin(located, &key),
                config::shorten(&source.to_string())
            )
        }
        DaemonError::Features(f) => format!(
            "{}: {}",
            origin(located, &format!("detectors.{}.features", f.detector)),
            config::shorten(&e.to_string())
        ),
        _ => e.to_string(),
    }
}

fn origin(located: &Located, key: &str) -> String {
    match located.path() {
        Some(path) => config::origin_of(path, key, std::env::vars()).to_string(),
        None => config::NO_FILE.to_owned(),
    }
}

/// `query`: the configuration's `[store]`, opened read-only.
fn query_store(args: &QueryArgs) -> ExitCode {
    use anomalyd::sinks::store::StoreError;
    use anomalyd::sinks::store::query::{OpenError, Query, open_for_query};
    let (config, located) = match required_config(args.config.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(store_config) = &config.store else {
        return fail(
            &format!(
                "{}: no [store] section: nothing is stored",
                describe(&located)
            ),
            exit::CONFIG,
        );
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let query = match Query::from_args(args, now_ms) {
        Ok(q) => q,
        Err(e) => return fail(&e, exit::USAGE),
    };
    let store = match open_for_query(store_config) {
        Ok(s) => s,
        Err(e @ OpenError::Missing(_)) => return fail(&e, exit::NO_INPUT),
        Err(OpenError::Store(e @ StoreError::Connect { .. })) => {
            return fail(&e, exit::UNAVAILABLE);
        }
        Err(OpenError::Store(e @ (StoreError::Url { .. } | StoreError::Password(_)))) => {
            return fail(&e, exit::CONFIG);
        }
        Err(e) => return fail(&e, exit::FAILURE),
    };
    let mut stdout = io::stdout().lock();
    match query.execute(store.as_ref(), &mut stdout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(anomalyd::sinks::store::query::ExecuteError::Output(e))
            if e.kind() == io::ErrorKind::BrokenPipe =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e, exit::FAILURE),
    }
}

fn tail_topic(args: &TailArgs) -> ExitCode {
    let (mut config, located) = match optional_config(args.config.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if located == Located::Nothing {
        // What the shipped file sets for tansu, which holds every fetch for the full
        // fetch.wait.max.ms (librdkafka's default is 500 ms).
        config
            .kafka
            .properties
            .entry("fetch.wait.max.ms".into())
            .or_insert(PropertyValue::Int(10));
    }
    let brokers_from = match &args.brokers {
        Some(brokers) => {
            config.kafka.brokers.clone_from(brokers);
            "--brokers".to_owned()
        }
        None => describe(&located),
    };
    let opts = args.options();
    let mut out = std::io::stdout().lock();
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let rt = runtime();
    let result = rt.block_on(tail(&config.kafka, &opts, &mut out, stop));
    rt.shutdown_background();
    match result {
        Ok(_) => ExitCode::SUCCESS,
        // A reader that went away (`| head`) is the end of the job, not a failure.
        Err(anomalyd::tail::TailError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("{e} (brokers from {brokers_from})"), e.exit_code()),
    }
}

/// `replay`: brokers as `tail` finds them; progress on a terminal, else one summary line; on
/// Ctrl-C or a failure, the line to resume from.
fn replay_file(args: &ReplayArgs) -> ExitCode {
    use anomalyd::source::generator::replay::{self, ReplayError};
    let (mut config, located) = match optional_config(args.config.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let brokers_from = match &args.brokers {
        Some(brokers) => {
            config.kafka.brokers.clone_from(brokers);
            "--brokers".to_owned()
        }
        None => describe(&located),
    };
    let opts = args.options();
    // SIGINT (Ctrl-C) or SIGTERM (timeout, systemd) stop the replay the same way; the exit
    // code says which (128 + its number).
    let signalled = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(130));
    let which = std::sync::Arc::clone(&signalled);
    let stop = async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminated => which.store(143, std::sync::atomic::Ordering::Relaxed),
        }
    };
    let terminal = io::stderr().is_terminal();
    let rt = runtime();
    let result = rt.block_on(replay::replay_file(&config.kafka, &opts, terminal, stop));
    rt.shutdown_background();
    let summary = match result {
        Ok(s) => s,
        Err(e @ (ReplayError::NoTopic { .. } | ReplayError::Unreachable { .. })) => {
            return fail(&format!("{e} (brokers from {brokers_from})"), e.exit_code());
        }
        Err(e) => return fail(&e, e.exit_code()),
    };
    warn_if(
        summary.keyless > 0,
        &format!(
            "{} lines sent without a key (their {} cell is missing or empty)",
            summary.keyless, opts.key_column
        ),
    );
    let _ = writeln!(io::stderr(), "{summary}");
    let resume = |line: u64| format!("resume with --from-line {line}");
    match (&summary.error, summary.resume_from) {
        (Some(e), line) => fail(
            &format!("{e}; {}", resume(line.unwrap_or(opts.from_line))),
            e.exit_code(),
        ),
        (None, Some(line)) if summary.interrupted => fail(
            &format!("interrupted; {}", resume(line)),
            signalled.load(std::sync::atomic::Ordering::Relaxed),
        ),
        (None, Some(line)) => fail(&format!("stopped; {}", resume(line)), exit::FAILURE),
        (None, None) => ExitCode::SUCCESS,
    }
}

fn check_health(args: &HealthArgs) -> ExitCode {
    let (socket, from) = match socket_path(&args.socket) {
        Ok(s) => s,
        Err(why) => {
            let code = ExitCode::from(Verdict::Unknown as u8);
            return written(out(format_args!("UNKNOWN anomalyd: {why}\n")), code);
        }
    };
    let mut h = runtime().block_on(health::check(&socket, CONTROL_TIMEOUT));
    if h.verdict == Verdict::Unknown {
        h.line = format!("{} ({from})", h.line);
    }
    let mut text = format!("{}\n", h.line);
    if args.verbose {
        h.detail
            .iter()
            .for_each(|l| text.push_str(&format!("  {l}\n")));
    }
    written(out(text), ExitCode::from(h.verdict as u8))
}

fn ctl(args: &CtlArgs) -> ExitCode {
    let (method, path, socket) = match &args.action {
        CtlAction::Status(s) => ("GET", "/status", s),
        CtlAction::Reload(s) => ("POST", "/reload", s),
    };
    let (socket, from) = match socket_path(socket) {
        Ok(s) => s,
        Err(why) => return fail(&why, exit::CONFIG),
    };
    // A reload reads and verifies the whole file: allow it more time than a status read.
    let timeout = CONTROL_TIMEOUT * if method == "POST" { 30 } else { 1 };
    match runtime().block_on(client::request(&socket, method, path, timeout)) {
        Ok((200, body)) => written(out(body), ExitCode::SUCCESS),
        Ok((code, body)) => {
            let _ = write!(io::stderr(), "anomalyd: the daemon answered {code}: {body}");
            ExitCode::from(exit::FAILURE)
        }
        Err(e) => fail(&format!("{e} ({from})"), exit::UNAVAILABLE),
    }
}

/// `--socket`, else the configuration's socket (file or built-in default, with the
/// environment's overrides), and where it came from, for messages. A configuration that is
/// named or found but invalid is an error, not a reason to guess.
fn socket_path(arg: &SocketArg) -> Result<(PathBuf, String), String> {
    if let Some(socket) = &arg.socket {
        return Ok((socket.clone(), "socket given with --socket".into()));
    }
    let located = config::locate(arg.config.config.as_deref());
    let config = config::load_located_for_tools(&located, std::env::vars()).map_err(|errors| {
        let errors: Vec<String> = errors.0.iter().map(|e| config_error(e, &located)).collect();
        errors.join("; ")
    })?;
    let var = "ANOMALYD_CONTROL__SOCKET";
    let from = match &located {
        _ if std::env::var_os(var).is_some() => format!("socket from {var}"),
        Located::File { .. } => format!("socket from {located}"),
        Located::Nothing => format!("the built-in default socket; {located}"),
    };
    Ok((config.control.socket, from))
}

/// Where settings came from, for messages: the file and why it was picked, or the defaults.
fn describe(located: &Located) -> String {
    match located {
        Located::File { .. } => located.to_string(),
        Located::Nothing => format!("the built-in defaults; {located}"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

fn done(output: impl Display) -> ExitCode {
    written(out(format_args!("{output}\n")), ExitCode::SUCCESS)
}

/// Writes `text` to stdout and flushes it. Not `print!`, which panics when the reader has
/// gone away (`anomalyd train ... | head -1`).
fn out(text: impl Display) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    write!(stdout, "{text}")?;
    stdout.flush()
}

/// `code` once stdout is written. A reader that went away ends the job quietly with the same
/// code, as Unix tools do (Rust ignores SIGPIPE, so the write fails instead of killing the
/// process); any other write error is reported.
fn written(result: io::Result<()>, code: ExitCode) -> ExitCode {
    match result {
        Ok(()) => code,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => code,
        Err(e) => fail(&format!("cannot write to stdout: {e}"), exit::FAILURE),
    }
}

/// Prints an error once and turns it into an exit code. A closed stderr loses the message
/// rather than panicking.
fn fail(error: &dyn Display, code: u8) -> ExitCode {
    let _ = writeln!(io::stderr(), "anomalyd: {error}");
    ExitCode::from(code)
}

/// A problem worth saying that does not stop the command.
fn warn(warning: &str) {
    let _ = writeln!(io::stderr(), "anomalyd: warning: {warning}");
}

/// [`warn`] when `when`.
fn warn_if(when: bool, warning: &str) {
    if when {
        warn(warning);
    }
}

/// The configuration `run` and `check-config` need: the file the search order picks, loaded.
/// No file at all, or a file that cannot be loaded, is printed and gives `EX_CONFIG`.
fn required_config(flag: Option<&Path>) -> Result<(Config, Located), ExitCode> {
    let located = config::locate(flag);
    if located == Located::Nothing {
        return Err(fail(&located, exit::CONFIG));
    }
    match config::load_located(&located, std::env::vars()) {
        Ok(c) => Ok((c, located)),
        Err(errors) => Err(config_failure(&errors, &located)),
    }
}

/// The configuration `health`, `ctl` and `tail` use: the file the search order picks, or the
/// built-in defaults with `ANOMALYD_*` overrides when there is none.
fn optional_config(flag: Option<&Path>) -> Result<(Config, Located), ExitCode> {
    let located = config::locate(flag);
    match config::load_located_for_tools(&located, std::env::vars()) {
        Ok(c) => Ok((c, located)),
        Err(errors) => Err(config_failure(&errors, &located)),
    }
}

/// Prints every configuration error and gives `EX_CONFIG`.
fn config_failure(errors: &ConfigErrors, located: &Located) -> ExitCode {
    for e in &errors.0 {
        let _ = writeln!(io::stderr(), "anomalyd: {}", config_error(e, located));
    }
    ExitCode::from(exit::CONFIG)
}

/// A configuration error as printed; a file that cannot be read says why it was the one.
fn config_error(e: &ConfigError, located: &Located) -> String {
    match (e, located) {
        (ConfigError::Read { path, source }, Located::File { rule, .. }) => {
            format!(
                "{} ({rule}): cannot read the config file: {source}",
                path.display()
            )
        }
        _ => e.to_string(),
    }
}
