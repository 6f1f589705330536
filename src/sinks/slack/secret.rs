//! Secrets (the bot token, the webhook URL): read from a file or the environment, never from
//! the TOML, and never printed. `Debug` and `Display` both say `[redacted]`, so a secret that
//! slips into a log line, an error or `/status` shows nothing.

use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Environment variable holding the bot token when `slack.token_file` is not set.
pub const TOKEN_ENV: &str = "SLACK_API_TOKEN";
/// Environment variable holding the webhook URL when `slack.webhook_url_file` is not set.
pub const WEBHOOK_ENV: &str = "SLACK_WEBHOOK_URL";

#[derive(Debug, Error)]
pub enum SecretError {
    #[error("cannot read {what} from {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} file {} is empty", path.display())]
    EmptyFile { what: &'static str, path: PathBuf },
    #[error("no {what}: set {var} or {key}")]
    Missing {
        what: &'static str,
        var: &'static str,
        key: &'static str,
    },
}

/// A string that must not be shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that sends it (an HTTP header or URL).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where one secret is looked for.
#[derive(Debug, Clone, Copy)]
pub struct SecretSource<'a> {
    /// What it is, for errors: "bot token".
    pub what: &'static str,
    /// The config key naming its file: "slack.token_file".
    pub key: &'static str,
    pub file: Option<&'a Path>,
    pub var: &'static str,
}

impl SecretSource<'_> {
    /// Reads the secret from the file if one is configured, else from the environment.
    pub fn load(&self) -> Result<Secret, SecretError> {
        self.load_with_env(|var| std::env::var(var).ok())
    }

    /// [`SecretSource::load`] with the environment given (tests).
    pub fn load_with_env(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Secret, SecretError> {
        if let Some(path) = self.file {
            let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
                what: self.what,
                path: path.to_owned(),
                source,
            })?;
            // Files written by editors and `echo` end with a newline that is not part of it.
            let value = text.trim();
            if value.is_empty() {
                return Err(SecretError::EmptyFile {
                    what: self.what,
                    path: path.to_owned(),
                });
            }
            return Ok(Secret::new(value));
        }
        match env(self.var).map(|v| v.trim().to_owned()) {
            Some(v) if !v.is_empty() => Ok(Secret::new(v)),
            _ => Err(SecretError::Missing {
                what: self.what,
                var: self.var,
                key: self.key,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUE: &str = "xoxb-1234-very-secret";

    #[test]
    fn secrets_never_print() {
        let s = Secret::new(VALUE);
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
        assert_eq!(s.expose(), VALUE);
    }

    fn source(file: Option<&Path>) -> SecretSource<'_> {
        SecretSource {
            what: "bot token",
            key: "slack.token_file",
            file,
            var: TOKEN_ENV,
        }
    }

    #[test]
    fn file_wins_over_environment_and_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, format!("{VALUE}\n")).unwrap();
        let s = source(Some(&path))
            .load_with_env(|_| Some("from-env".into()))
            .unwrap();
        assert_eq!(s.expose(), VALUE);
    }

    #[test]
    fn environment_is_used_without_a_file() {
        let s = source(None)
            .load_with_env(|v| (v == TOKEN_ENV).then(|| VALUE.to_owned()))
            .unwrap();
        assert_eq!(s.expose(), VALUE);
    }

    #[test]
    fn missing_and_empty_secrets_are_errors_that_say_where_to_put_them() {
        let e = source(None).load_with_env(|_| None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no bot token: set SLACK_API_TOKEN or slack.token_file"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "\n").unwrap();
        let e = source(Some(&path)).load_with_env(|_| None).unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
        let e = source(Some(&dir.path().join("nope")))
            .load_with_env(|_| None)
            .unwrap_err();
        assert!(e.to_string().contains("cannot read bot token"), "{e}");
    }
}
