//! `[web]`: the web view's listener and its token. Off unless `listen` is set; a listener on
//! anything but a loopback address needs `token_file`, since the view shows every anomaly's
//! record.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `[web]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// `host:port` to listen on, e.g. `127.0.0.1:8080`; absent (the default): no web view.
    pub listen: Option<String>,
    /// A file holding the token every request must carry as `Authorization: Bearer <token>`
    /// (surrounding whitespace ignored). Required when `listen` is not a loopback address.
    pub token_file: Option<PathBuf>,
    /// Seconds between the page's refreshes (1 to 3600).
    pub refresh_s: u32,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            listen: None,
            token_file: None,
            refresh_s: 10,
        }
    }
}

impl WebConfig {
    /// The address to listen on, when the view is on and `listen` parses.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.listen.as_deref().and_then(|l| l.parse().ok())
    }

    /// Checks the keys, as `(key, problem)`; `has_store`: whether `[store]` is configured
    /// (the view reads it). Reads `token_file` to check it holds a token; the token itself
    /// never appears in a problem.
    pub fn problems(&self, has_store: bool) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(listen) = &self.listen {
            match listen.parse::<SocketAddr>() {
                Err(_) => out.push((
                    "web.listen",
                    format!("{listen:?}: expected an IP address and port, e.g. \"127.0.0.1:8080\""),
                )),
                Ok(addr) if !addr.ip().is_loopback() && self.token_file.is_none() => out.push((
                    "web.listen",
                    format!(
                        "{addr} is not a loopback address: set web.token_file so that requests \
                         need a token, or listen on 127.0.0.1"
                    ),
                )),
                Ok(_) => {}
            }
            if !has_store {
                out.push((
                    "web.listen",
                    "the web view reads the anomaly store: add a [store] section".into(),
                ));
            }
        }
        if let Some(path) = &self.token_file
            && let Err(why) = read_token(path)
        {
            out.push(("web.token_file", why));
        }
        if !(1..=3600).contains(&self.refresh_s) {
            out.push(("web.refresh_s", "must be between 1 and 3600".into()));
        }
        out
    }
}

/// The token in `path`, trimmed; the error says why not, without the file's content.
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let token = text.trim();
    if token.len() < 16 {
        return Err(format!(
            "{} must hold a token of at least 16 characters (e.g. from `openssl rand -hex 32`)",
            path.display()
        ));
    }
    if token.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!(
            "{}: the token must be one line without spaces",
            path.display()
        ));
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(c: &WebConfig, store: bool) -> Vec<&'static str> {
        c.problems(store).into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn off_by_default_loopback_free_elsewhere_a_token() {
        let c: WebConfig = toml::from_str("").unwrap();
        assert_eq!(c.addr(), None);
        assert!(c.problems(false).is_empty());
        let c: WebConfig = toml::from_str("listen = \"127.0.0.1:8080\"").unwrap();
        assert!(c.problems(true).is_empty());
        assert_eq!(keys(&c, false), ["web.listen"]);
        let c: WebConfig = toml::from_str("listen = \"[::1]:8080\"").unwrap();
        assert!(c.problems(true).is_empty());
        for open in ["0.0.0.0:8080", "192.168.1.4:80", "[::]:8080"] {
            let c = WebConfig {
                listen: Some(open.into()),
                ..WebConfig::default()
            };
            assert_eq!(keys(&c, true), ["web.listen"], "{open}");
        }
        let c = WebConfig {
            listen: Some("localhost:8080".into()),
            refresh_s: 0,
            ..WebConfig::default()
        };
        assert_eq!(keys(&c, true), ["web.listen", "web.refresh_s"]);
    }

    #[test]
    fn the_token_file_is_checked_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let c = WebConfig {
            listen: Some("0.0.0.0:8080".into()),
            token_file: Some(path.clone()),
            ..WebConfig::default()
        };
        assert_eq!(keys(&c, true), ["web.token_file"], "missing");
        std::fs::write(&path, "short-secret\n").unwrap();
        let problems = c.problems(true);
        assert_eq!(problems.len(), 1);
        assert!(!problems[0].1.contains("short-secret"), "{problems:?}");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        assert!(c.problems(true).is_empty());
        assert_eq!(read_token(&path).unwrap(), "0123456789abcdef0123");
    }
}
