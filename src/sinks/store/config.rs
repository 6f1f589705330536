//! `[store]`: where anomalies are stored, which topics are read, and how long rows are kept.
//! The section being present turns the store on; without it nothing is stored.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `"sqlite"` (the default): an embedded database file at `path`; `"postgres"`: the
    /// PostgreSQL database at `url`.
    pub backend: StoreBackend,
    /// The SQLite database file; default `<state directory>/anomalies.db`, the state directory
    /// being the first of `$STATE_DIRECTORY` (systemd's `StateDirectory=`), else
    /// `/var/lib/anomalyd`.
    pub path: Option<PathBuf>,
    /// PostgreSQL: `postgres://USER@HOST:PORT/DATABASE`, with libpq's URL parameters
    /// (`sslmode=disable|prefer`, `connect_timeout`, `options`...); never a password.
    pub url: Option<String>,
    /// PostgreSQL: the environment variable holding the password.
    pub password_env: Option<String>,
    /// PostgreSQL: a file holding the password (a trailing newline is dropped).
    pub password_file: Option<PathBuf>,
    /// The anomalies topics read; default every detector's `output_topic`.
    pub topics: Vec<String>,
    /// The store's consumer group; default `<kafka.group_id>-store`.
    pub group_id: Option<String>,
    /// Rows whose event time is older than this many days are deleted (checked every few
    /// minutes).
    pub retain_days: u32,
    /// JSON pointer (RFC 6901) to the source record's event time, an RFC 3339 string, e.g.
    /// `/timestamp`; without it, or when a record's value is missing or not RFC 3339, the
    /// Kafka timestamp of the anomaly is used, and the row says so.
    pub event_time_field: Option<String>,
    /// Most rows written in one transaction.
    pub batch_max: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Sqlite,
            path: None,
            url: None,
            password_env: None,
            password_file: None,
            topics: Vec::new(),
            group_id: None,
            retain_days: 30,
            event_time_field: None,
            batch_max: 5000,
        }
    }
}

/// The database behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// An embedded SQLite file (bundled SQLite, WAL mode).
    Sqlite,
    /// A PostgreSQL database, possibly shared by several instances.
    Postgres,
}

impl StoreConfig {
    /// The database file: `path`, else `<state directory>/anomalies.db`.
    pub fn db_path(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| default_state_dir().join("anomalies.db"))
    }

    /// Where the rows go, as shown in logs and `/status`: the SQLite file, or the PostgreSQL
    /// URL (with no password).
    pub fn location(&self) -> String {
        match self.backend {
            StoreBackend::Sqlite => self.db_path().display().to_string(),
            StoreBackend::Postgres => {
                super::postgres::redact(self.url.as_deref().unwrap_or_default())
            }
        }
    }

    /// The store's consumer group: `group_id`, else `<kafka_group>-store`.
    pub fn group_id(&self, kafka_group: &str) -> String {
        self.group_id
            .clone()
            .unwrap_or_else(|| format!("{kafka_group}-store"))
    }

    /// Checks the keys on their own, as `(key, problem)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            out.push((
                "store.path",
                "must not be empty (leave it out for <state directory>/anomalies.db)".into(),
            ));
        }
        match self.backend {
            StoreBackend::Sqlite => {
                for (set, key) in [
                    (self.url.is_some(), "store.url"),
                    (self.password_env.is_some(), "store.password_env"),
                    (self.password_file.is_some(), "store.password_file"),
                ] {
                    if set {
                        out.push((key, "is for backend = \"postgres\"".into()));
                    }
                }
            }
            StoreBackend::Postgres => {
                if self.path.is_some() {
                    out.push(("store.path", "is for backend = \"sqlite\"".into()));
                }
                match &self.url {
                    None => out.push((
                        "store.url",
                        "is required with backend = \"postgres\", e.g. \
                         \"postgres://anomalyd@localhost:5432/anomalies\""
                            .into(),
                    )),
                    Some(url) => {
                        if let Err(why) = super::postgres::check_url(url) {
                            out.push(("store.url", why));
                        }
                    }
                }
                if self
                    .password_env
                    .as_ref()
                    .is_some_and(|n| n.trim().is_empty())
                {
                    out.push(("store.password_env", "must name a variable".into()));
                }
                if self
                    .password_file
                    .as_ref()
                    .is_some_and(|p| p.as_os_str().is_empty())
                {
                    out.push(("store.password_file", "must not be empty".into()));
                }
                if self.password_env.is_some() && self.password_file.is_some() {
                    out.push((
                        "store.password_file",
                        "give the password one way: password_env or password_file".into(),
                    ));
                }
            }
        }
        if self.group_id.as_ref().is_some_and(|g| g.trim().is_empty()) {
            out.push((
                "store.group_id",
                "must not be empty (leave it out for <kafka.group_id>-store)".into(),
            ));
        }
        if self.topics.iter().any(|t| t.trim().is_empty()) {
            out.push(("store.topics", "must not name an empty topic".into()));
        }
        if self.retain_days == 0 {
            out.push(("store.retain_days", "must be >= 1".into()));
        }
        if let Some(p) = &self.event_time_field
            && !p.starts_with('/')
        {
            out.push((
                "store.event_time_field",
                format!("must be a JSON pointer starting with '/', e.g. \"/{p}\""),
            ));
        }
        if !(1..=100_000).contains(&self.batch_max) {
            out.push(("store.batch_max", "must be between 1 and 100000".into()));
        }
        out
    }
}

/// systemd's `StateDirectory=` exports `$STATE_DIRECTORY`; outside systemd the conventional
/// `/var/lib/anomalyd` is used.
pub fn default_state_dir() -> PathBuf {
    match std::env::var_os("STATE_DIRECTORY") {
        // systemd may pass several colon-separated directories; the first is ours.
        Some(dirs) if !dirs.is_empty() => {
            let dirs = dirs.to_string_lossy();
            PathBuf::from(dirs.split(':').next().unwrap_or_default())
        }
        _ => PathBuf::from("/var/lib/anomalyd"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_problems() {
        let c: StoreConfig = toml::from_str("").unwrap();
        assert_eq!(c.backend, StoreBackend::Sqlite);
        assert_eq!(c.retain_days, 30);
        assert_eq!(c.group_id("anomalyd"), "anomalyd-store");
        assert!(c.db_path().ends_with("anomalies.db"));
        assert!(c.problems().is_empty());
        let bad: StoreConfig = toml::from_str(
            "path = \"\"\ngroup_id = \" \"\nretain_days = 0\nevent_time_field = \"timestamp\"\nbatch_max = 0\ntopics = [\"\"]",
        )
        .unwrap();
        let keys: Vec<_> = bad.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "store.path",
                "store.group_id",
                "store.topics",
                "store.retain_days",
                "store.event_time_field",
                "store.batch_max"
            ]
        );
        assert!(toml::from_str::<StoreConfig>("backend = \"mysql\"").is_err());
    }

    #[test]
    fn postgres_keys() {
        let keys = |text: &str| -> Vec<(&'static str, String)> {
            toml::from_str::<StoreConfig>(text).unwrap().problems()
        };
        let ok = "backend = \"postgres\"\nurl = \"postgres://a@db:5432/anomalies\"\npassword_env = \"PW\"";
        assert!(keys(ok).is_empty(), "{:?}", keys(ok));
        let c: StoreConfig = toml::from_str(ok).unwrap();
        assert_eq!(c.location(), "postgres://a@db:5432/anomalies");
        let p = keys("backend = \"postgres\"\nurl = \"postgres://a:hunter2@db/x\"");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, "store.url");
        assert!(!p[0].1.contains("hunter2"), "{p:?}");
        assert_eq!(keys("backend = \"postgres\"")[0].0, "store.url");
        let names: Vec<_> = keys(
            "backend = \"postgres\"\nurl = \"postgres://a@db/x\"\npath = \"x.db\"\npassword_env = \"A\"\npassword_file = \"/f\"",
        )
        .into_iter()
        .map(|(k, _)| k)
        .collect();
        assert_eq!(names, ["store.path", "store.password_file"]);
        let names: Vec<_> = keys("url = \"postgres://a@db/x\"\npassword_file = \"/f\"")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(names, ["store.url", "store.password_file"]);
    }
}
