//! Log output: tracing events to stderr (journald picks them up), as text or JSON lines.

use std::io::IsTerminal;

use thiserror::Error;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

#[derive(Debug, Error)]
pub enum LoggingError {
    #[error("log.level: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("a global logger is already installed")]
    AlreadySet,
}

/// Installs the process-wide subscriber. Call once, early in `main`.
pub fn init(cfg: &LogConfig) -> Result<(), LoggingError> {
    let filter = EnvFilter::builder().parse(&cfg.level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, never into journald or a log file.
        .with_ansi(std::io::stderr().is_terminal());
    let result = match cfg.format {
        LogFormat::Text => builder.try_init(),
        // Flattened so that fields like `partition` and `model_id` are top-level keys a log
        // pipeline can filter on.
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|_| LoggingError::AlreadySet)
}
