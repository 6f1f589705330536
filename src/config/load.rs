//! Loading the configuration: defaults, then the file, then `ANOMALYD_*` environment variables,
//! with errors that point at the file, line, column and key (or the variable) at fault.
//!
//! figment does the merging, but its errors carry no positions, so the file is first parsed on
//! its own with the `toml` crate, whose spans give line and column.
//!
//! Which file to read is [`locate`]'s job: one search order for every command.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use thiserror::Error;
use toml::de::{DeTable, DeValue};

use super::Config;

/// Where the service unit and packages expect the file.
pub const DEFAULT_PATH: &str = "/etc/anomalyd/anomalyd.toml";

/// The file looked for in the working directory when none is named.
pub const LOCAL_NAME: &str = "anomalyd.toml";

/// The environment variable that names the configuration file.
pub const CONFIG_VAR: &str = "ANOMALYD_CONFIG";

/// Which rule of the search order picked the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `--config FILE`.
    Flag,
    /// `ANOMALYD_CONFIG=FILE`.
    Env,
    /// `./anomalyd.toml`, which exists.
    WorkingDir,
    /// `/etc/anomalyd/anomalyd.toml`, which exists.
    System,
}

impl Rule {
    /// Whether the file was named by the user, so that its absence is an error rather than a
    /// reason to look further.
    pub fn is_explicit(self) -> bool {
        matches!(self, Self::Flag | Self::Env)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flag => "named by --config",
            Self::Env => "named by ANOMALYD_CONFIG",
            Self::WorkingDir => "found in the working directory",
            Self::System => "the system-wide file",
        })
    }
}

/// The outcome of the search: a file and the rule that picked it, or nothing at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// Read this file. For [`Rule::Flag`] and [`Rule::Env`] it may not exist; loading it then
    /// fails, naming it.
    File { path: PathBuf, rule: Rule },
    /// No file named and none found: commands that can run on built-in defaults (`health`,
    /// `ctl`, `tail`) do; `run` and `check-config` refuse.
    Nothing,
}

impl Located {
    /// The file, if one was named or found.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::File { path, .. } => Some(path),
            Self::Nothing => None,
        }
    }
}

impl fmt::Display for Located {
    /// `./anomalyd.toml (found in the working directory)`, or what was searched.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { path, rule } => write!(f, "{} ({rule})", path.display()),
            Self::Nothing => write!(
                f,
                "no configuration file (no --config, no {CONFIG_VAR}, no ./{LOCAL_NAME}, no {DEFAULT_PATH})"
            ),
        }
    }
}

/// The one search order every command uses: `flag` (`--config`), then `env` (the value of
/// `ANOMALYD_CONFIG`; empty counts as unset), then `cwd/anomalyd.toml` if it exists, then
/// `system` (normally [`DEFAULT_PATH`]) if it exists. Pure apart from the two existence
/// checks, so tests pass every input.
pub fn resolve(flag: Option<&Path>, env: Option<OsString>, cwd: &Path, system: &Path) -> Located {
    if let Some(path) = flag {
        return Located::File {
            path: path.to_owned(),
            rule: Rule::Flag,
        };
    }
    if let Some(path) = env.filter(|v| !v.is_empty()) {
        return Located::File {
            path: path.into(),
            rule: Rule::Env,
        };
    }
    let local = cwd.join(LOCAL_NAME);
    if local.is_file() {
        return Located::File {
            path: local,
            rule: Rule::WorkingDir,
        };
    }
    if system.is_file() {
        return Located::File {
            path: system.to_owned(),
            rule: Rule::System,
        };
    }
    Located::Nothing
}

/// [`resolve`] with this process's environment, working directory (as `./`) and [`DEFAULT_PATH`].
pub fn locate(flag: Option<&Path>) -> Located {
    resolve(
        flag,
        std::env::var_os(CONFIG_VAR),
        Path::new("."),
        Path::new(DEFAULT_PATH),
    )
}

/// `ANOMALYD_<SECTION>__<KEY>` overrides `<section>.<key>`.
pub const ENV_PREFIX: &str = "ANOMALYD_";

/// Variables with the prefix that are not config keys.
const ENV_NOT_KEYS: &[&str] = &[CONFIG_VAR];

/// `ANOMALYD_KAFKA__PROPERTIES__...`, lower-cased, minus `ANOMALYD_`.
const PROPERTIES_PREFIX: &str = "kafka__properties__";

/// One thing wrong with the configuration.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{}: cannot read the config file: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// Values echoed in `message` (and an absurdly long key) are cut by [`shorten`]: a 5 MiB
    /// value gives a line, not 5 MiB of output.
    #[error(
        "{origin}: {}{}",
        key.as_ref().map(|k| format!("{}: ", shorten(k))).unwrap_or_default(),
        shorten(message)
    )]
    Invalid {
        origin: Origin,
        /// Dotted key at fault, when one can be named.
        key: Option<String>,
        message: String,
    },
}

/// Longest quoted value (in characters) an error repeats whole.
const ECHO_CHARS: usize = 80;

/// Longest error text (in characters) printed whole, for values echoed without quotes.
const MESSAGE_CHARS: usize = 1000;

/// `text` with every quoted run (`"..."`, with `\"` escapes, or `` `...` ``) longer than 80
/// characters cut to its first 80, `…` and its length in bytes (`"xxxx…" (5242880 bytes)`),
/// and the whole cut to 1,000 characters the same way: errors repeat the value at fault, and
/// a value can be megabytes long. Short text is unchanged.
pub fn shorten(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().count() <= ECHO_CHARS {
        return text.into();
    }
    let mut out = String::with_capacity(text.len().min(4 * MESSAGE_CHARS));
    let mut rest = text;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = rest.as_bytes()[open] as char;
        out.push_str(&rest[..=open]);
        let inner = &rest[open + 1..];
        let mut escaped = false;
        let close = inner.char_indices().find_map(|(i, c)| {
            let end = c == quote && !escaped;
            escaped = quote == '"' && c == '\\' && !escaped;
            end.then_some(i)
        });
        let Some(close) = close else {
            rest = inner;
            break;
        };
        let value = &inner[..close];
        match value.char_indices().nth(ECHO_CHARS) {
            Some((cut, _)) => {
                out.push_str(&value[..cut]);
                out.push_str(&format!("…{quote} ({} bytes)", value.len()));
            }
            None => {
                out.push_str(value);
                out.push(quote);
            }
        }
        rest = &inner[close + 1..];
    }
    out.push_str(rest);
    if let Some((cut, _)) = out.char_indices().nth(MESSAGE_CHARS) {
        let len = out.len();
        out.truncate(cut);
        out.push_str(&format!("… ({len} bytes in all)"));
    }
    out.into()
}

/// Where a bad value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A position in the file (1-based line and column).
    File {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    /// The file as a whole, or a default that conflicts with it.
    FileAsWhole(PathBuf),
    /// An `ANOMALYD_*` variable.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { path, line, column } => write!(f, "{}:{line}:{column}", path.display()),
            Self::FileAsWhole(path) => write!(f, "{}", path.display()),
            Self::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

impl ConfigError {
    /// The dotted key at fault, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Read { .. } => None,
            Self::Invalid { key, .. } => key.as_deref(),
        }
    }
}

/// Every error found, in the order found. Displayed one per line.
#[derive(Debug, Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

/// Loads `path` with the process environment's overrides and validates the result.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_env(path, std::env::vars())
}

/// [`load`] with the environment given explicitly (tests, and callers that sanitise it).
pub fn load_with_env(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigErrors> {
    load_checked(path, env, true)
}

/// Loads and validates `path`; without `scoring` (commands that score nothing: `tail`,
/// `health`, `ctl`), a file without a detector is accepted.
fn load_checked(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
    scoring: bool,
) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;

    // First the file alone, for errors with positions.
    if let Err(e) = toml::from_str::<Config>(&text) {
        return Err(file_error(path, &text, &e).into());
    }

    let vars: Vec<EnvVar> = env.into_iter().filter_map(EnvVar::parse).collect();
    let mut figment =
        Figment::from(Serialized::defaults(Config::default())).merge(Toml::file_exact(path));
    for var in &vars {
        figment = figment.merge(var);
    }
    let config: Config = figment.extract().map_err(|e| {
        ConfigErrors(
            e.into_iter()
                .map(|e| figment_error(path, &vars, e))
                .collect(),
        )
    })?;

    let invalid: Vec<_> = config
        .validate()
        .into_iter()
        .filter(|inv| scoring || inv.key != super::NO_DETECTOR_KEY)
        .collect();
    if invalid.is_empty() {
        return Ok(config);
    }
    let table = DeTable::parse(&text).ok();
    Err(ConfigErrors(
        invalid
            .into_iter()
            .map(|inv| {
                let origin = match vars.iter().find(|v| v.sets(&inv.key)) {
                    Some(var) => Origin::Env(var.name.clone()),
                    None => table
                        .as_ref()
                        .and_then(|t| span_of_key(t.get_ref(), &inv.key))
                        .map(|span| position(path, &text, span.start))
                        .unwrap_or_else(|| Origin::FileAsWhole(path.to_owned())),
                };
                ConfigError::Invalid {
                    origin,
                    key: Some(inv.key),
                    message: inv.message,
                }
            })
            .collect(),
    ))
}

/// The file `located` names, loaded with the overrides in `env`; or, when it names none, the
/// built-in defaults with those overrides ([`defaults_with_env`]). A file without a detector
/// is refused (key `detectors`): this is what `run` and `check-config` read.
pub fn load_located(
    located: &Located,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigErrors> {
    match located.path() {
        Some(path) => load_with_env(path, env),
        None => defaults_with_env(env),
    }
}

/// [`load_located`] for the commands that score nothing (`tail`, `health`, `ctl`): a file
/// without a detector is fine there.
pub fn load_located_for_tools(
    located: &Located,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigErrors> {
    match located.path() {
        Some(path) => load_checked(path, env, false),
        None => defaults_with_env(env),
    }
}

/// What stands for the file in errors about [`defaults_with_env`].
pub const NO_FILE: &str = "(built-in defaults)";

/// The built-in defaults with the `ANOMALYD_*` overrides in `env`, validated: what `health`,
/// `ctl` and `tail` run on when no configuration file is named or found. The defaults hold no
/// detector, which is not an error here (these commands score nothing).
pub fn defaults_with_env(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigErrors> {
    let origin = Path::new(NO_FILE);
    let vars: Vec<EnvVar> = env.into_iter().filter_map(EnvVar::parse).collect();
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    for var in &vars {
        figment = figment.merge(var);
    }
    let config: Config = figment.extract().map_err(|e| {
        ConfigErrors(
            e.into_iter()
                .map(|e| figment_error(origin, &vars, e))
                .collect(),
        )
    })?;
    // Without a file there is no detector, which is no fault of these commands: they do
    // not score.
    let invalid: Vec<_> = config
        .validate()
        .into_iter()
        .filter(|inv| inv.key != super::NO_DETECTOR_KEY)
        .collect();
    if invalid.is_empty() {
        return Ok(config);
    }
    Err(ConfigErrors(
        invalid
            .into_iter()
            .map(|inv| ConfigError::Invalid {
                origin: match vars.iter().find(|v| v.sets(&inv.key)) {
                    Some(var) => Origin::Env(var.name.clone()),
                    None => Origin::FileAsWhole(origin.to_owned()),
                },
                key: Some(inv.key),
                message: inv.message,
            })
            .collect(),
    ))
}

/// Where `key`'s value comes from: the `ANOMALYD_*` variable in `env` that sets it, else its
/// position in the file at `path`, else the file as a whole. For errors found after loading,
/// such as a model that does not fit its detector's `features`.
pub fn origin_of(
    path: &Path,
    key: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Origin {
    if let Some(var) = env
        .into_iter()
        .filter_map(EnvVar::parse)
        .find(|v| v.key == key)
    {
        return Origin::Env(var.name);
    }
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            let table = DeTable::parse(&text).ok()?;
            let span = span_of_key(table.get_ref(), key)?;
            Some(position(path, &text, span.start))
        })
        .unwrap_or_else(|| Origin::FileAsWhole(path.to_owned()))
}

/// A `toml` parse or type error, placed at its line and column and named by its key.
fn file_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let key = e.span().and_then(|span| {
        let table = DeTable::parse(text).ok()?;
        let mut keys = Vec::new();
        key_at_span(table.get_ref(), &span, &mut keys).then(|| keys.join("."))
    });
    let origin = match e.span() {
        Some(span) => position(path, text, span.start),
        None => Origin::FileAsWhole(path.to_owned()),
    };
    ConfigError::Invalid {
        origin,
        key,
        message: e.message().trim_end().to_owned(),
    }
}

fn position(path: &Path, text: &str, offset: usize) -> Origin {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Origin::File {
        path: path.to_owned(),
        line,
        column,
    }
}

/// Fills `keys` with the path to the key or value that `span` points into.
fn key_at_span(table: &DeTable<'_>, span: &std::ops::Range<usize>, keys: &mut Vec<String>) -> bool {
    for (k, v) in table {
        let inside = |s: std::ops::Range<usize>| s.start <= span.start && span.end <= s.end;
        if k.span() == *span {
            keys.push(k.get_ref().to_string());
            return true;
        }
        keys.push(k.get_ref().to_string());
        if let DeValue::Table(t) = v.get_ref() {
            // An error about a whole inline table (`{ expr = .., fro = 3 }`) names its key.
            if key_at_span(t, span, keys) || (k.span() != v.span() && v.span() == *span) {
                return true;
            }
        } else if inside(v.span()) {
            return true;
        }
        keys.pop();
    }
    false
}

/// The span of a dotted key's value in the file; keys may themselves hold dots
/// (`kafka.properties."fetch.wait.max.ms"`), so the longest matching key wins.
fn span_of_key(table: &DeTable<'_>, dotted: &str) -> Option<std::ops::Range<usize>> {
    let mut best: Option<std::ops::Range<usize>> = None;
    for (k, v) in table {
        let k = k.get_ref().as_ref();
        if dotted == k {
            return Some(v.span());
        }
        if let (Some(rest), DeValue::Table(t)) = (
            dotted.strip_prefix(k).and_then(|r| r.strip_prefix('.')),
            v.get_ref(),
        ) {
            best = span_of_key(t, rest).or(best);
        }
    }
    best
}

fn figment_error(path: &Path, vars: &[EnvVar], e: figment::Error) -> ConfigError {
    // For an unknown field, figment's path already ends with the field itself.
    let dotted = e.path.join(".");
    let origin = match &e.metadata {
        Some(md) if md.name.starts_with(EnvVar::METADATA_PREFIX) => {
            Origin::Env(md.name[EnvVar::METADATA_PREFIX.len()..].to_owned())
        }
        // Defaults cannot be wrong and the file was checked alone, so an unattributed error
        // comes from a variable; name the closest one.
        _ => match vars.iter().find(|v| dotted.starts_with(&v.key)) {
            Some(v) => Origin::Env(v.name.clone()),
            None => Origin::FileAsWhole(path.to_owned()),
        },
    };
    ConfigError::Invalid {
        origin,
        key: (!dotted.is_empty()).then_some(dotted),
        message: e.kind.to_string(),
    }
}

/// One `ANOMALYD_<SECTION>__<KEY>=value` variable as a figment provider, so that an error names
/// the exact variable.
struct EnvVar {
    name: String,
    /// Dotted, lower-case key.
    key: String,
    value: String,
    /// For `ANOMALYD_KAFKA__PROPERTIES__<NAME>`: the librdkafka property it sets.
    property: Option<String>,
}

impl EnvVar {
    const METADATA_PREFIX: &'static str = "environment variable ";

    /// Whether this variable sets `key` or something inside it (`ANOMALYD_DETECTOR__BATCH_MAX`
    /// is inside `detector`).
    fn sets(&self, key: &str) -> bool {
        self.key == key
            || self
                .key
                .strip_prefix(key)
                .is_some_and(|rest| rest.starts_with('.'))
    }

    fn parse((name, value): (String, String)) -> Option<Self> {
        let rest = name.strip_prefix(ENV_PREFIX)?;
        if rest.is_empty() || ENV_NOT_KEYS.contains(&name.as_str()) {
            return None;
        }
        let lower = rest.to_ascii_lowercase();
        // librdkafka's names are dotted and have no underscores, so one underscore stands for
        // a dot: ANOMALYD_KAFKA__PROPERTIES__FETCH_WAIT_MAX_MS sets `fetch.wait.max.ms`.
        if let Some(property) = lower.strip_prefix(PROPERTIES_PREFIX)
            && !property.is_empty()
        {
            let property = property.replace('_', ".");
            return Some(Self {
                name,
                key: format!("kafka.properties.{property}"),
                value,
                property: Some(property),
            });
        }
        let key = lower.split("__").collect::<Vec<_>>().join(".");
        Some(Self {
            name,
            key,
            value,
            property: None,
        })
    }
}

impl Provider for &EnvVar {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("{}{}", EnvVar::METADATA_PREFIX, self.name))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        if let Some(property) = &self.property {
            // Kept as the string it is (librdkafka takes strings): a password such as `1e5`
            // must not become a number on the way. Built by hand, as the name holds dots.
            let leaf = Dict::from([(property.clone(), Value::from(self.value.clone()))]);
            let properties = Dict::from([("properties".to_owned(), Value::from(leaf))]);
            let kafka = Dict::from([("kafka".to_owned(), Value::from(properties))]);
            return Ok(Profile::Default.collect(kafka));
        }
        // figment's own parse: numbers, booleans and arrays become typed, the rest strings.
        let value: Value = self
            .value
            .parse()
            .expect("figment's Value parse is infallible");
        // A name such as `ANOMALYD_.` or `ANOMALYD____` gives a key of empty parts, which
        // nests into no table: an error naming the variable, not a panic.
        let Some(dict) = figment::util::nest(&self.key, value).into_dict() else {
            return Err(figment::Error::from(format!(
                "{} does not name a configuration key (ANOMALYD_<SECTION>__<KEY>)",
                self.name
            )));
        };
        Ok(Profile::Default.collect(dict))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FeatureSpec, PropertyValue};

    /// The keys a detector cannot do without, each added to `[detectors.tx]` unless the
    /// test sets it.
    const REQUIRED: [(&str, &str); 4] = [
        ("input_topic", "\"transactions\""),
        ("output_topic", "\"anomalies\""),
        ("dead_letter_topic", "\"transactions.dead-letter\""),
        ("model", "\"m.iforest\""),
    ];

    /// `text` with a valid `[detectors.tx]`: the required keys it lacks are added at the end
    /// of that table (or a whole table at the end of the file), so every line the test wrote
    /// keeps its number.
    fn with_detector(text: &str) -> String {
        let Some(start) = text.find("[detectors.tx]") else {
            let keys: String = REQUIRED
                .iter()
                .map(|(k, v)| format!("{k} = {v}\n"))
                .collect();
            return format!("{text}\n[detectors.tx]\n{keys}");
        };
        let body_start = start + "[detectors.tx]".len();
        let end = text[body_start..]
            .find("\n[")
            .map_or(text.len(), |i| body_start + i + 1);
        let body = &text[body_start..end];
        let missing: String = REQUIRED
            .iter()
            .filter(|(k, _)| {
                !body
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{k} =")))
            })
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect();
        let sep = if text[..end].ends_with('\n') {
            ""
        } else {
            "\n"
        };
        format!("{}{sep}{missing}{}", &text[..end], &text[end..])
    }

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anomalyd.toml");
        std::fs::write(&path, with_detector(text)).unwrap();
        (dir, path)
    }

    /// A file written as is.
    fn write_raw(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anomalyd.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn one_error(r: Result<Config, ConfigErrors>) -> String {
        let errs = r.expect_err("config should be refused").0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        errs[0].to_string()
    }

    /// The search order, with every input given: the environment value is a parameter, so
    /// these tests never touch the process-wide environment.
    #[test]
    fn search_order_flag_env_working_dir_system() {
        let cwd = tempfile::tempdir().unwrap();
        let etc = tempfile::tempdir().unwrap();
        let system = etc.path().join("anomalyd.toml");
        let flag = Path::new("/given/by/flag.toml");
        let env_value = || Some(OsString::from("/given/by/env.toml"));
        let file = |path: &Path, rule| Located::File {
            path: path.to_owned(),
            rule,
        };

        // Nothing anywhere.
        assert_eq!(resolve(None, None, cwd.path(), &system), Located::Nothing);
        assert_eq!(
            resolve(None, Some(OsString::new()), cwd.path(), &system),
            Located::Nothing,
            "an empty ANOMALYD_CONFIG counts as unset"
        );
        // The system file, once it exists.
        std::fs::write(&system, "").unwrap();
        assert_eq!(
            resolve(None, None, cwd.path(), &system),
            file(&system, Rule::System)
        );
        // ./anomalyd.toml beats it; a directory of that name does not count.
        let local = cwd.path().join(LOCAL_NAME);
        std::fs::create_dir(&local).unwrap();
        assert_eq!(
            resolve(None, None, cwd.path(), &system),
            file(&system, Rule::System)
        );
        std::fs::remove_dir(&local).unwrap();
        std::fs::write(&local, "").unwrap();
        assert_eq!(
            resolve(None, None, cwd.path(), &system),
            file(&local, Rule::WorkingDir)
        );
        // The environment beats the files, even when what it names does not exist.
        assert_eq!(
            resolve(None, env_value(), cwd.path(), &system),
            file(Path::new("/given/by/env.toml"), Rule::Env)
        );
        // --config beats everything.
        assert_eq!(
            resolve(Some(flag), env_value(), cwd.path(), &system),
            file(flag, Rule::Flag)
        );
        assert!(Rule::Flag.is_explicit() && Rule::Env.is_explicit());
        assert!(!Rule::WorkingDir.is_explicit() && !Rule::System.is_explicit());
        assert_eq!(
            file(&local, Rule::WorkingDir).to_string(),
            format!("{} (found in the working directory)", local.display())
        );
        assert!(Located::Nothing.to_string().contains("no ANOMALYD_CONFIG"));
    }

    #[test]
    fn without_a_file_defaults_and_environment_apply() {
        let c = defaults_with_env(env(&[("ANOMALYD_KAFKA__BROKERS", "h:1")])).unwrap();
        assert_eq!(c.kafka.brokers, "h:1");
        assert!(c.detectors.is_empty(), "no detector is fine without a file");
        let msg = one_error(defaults_with_env(env(&[(
            "ANOMALYD_DETECTOR__BATCH_MAX",
            "0",
        )])));
        assert!(
            msg.starts_with(
                "environment variable ANOMALYD_DETECTOR__BATCH_MAX: detector: the single [detector] section is gone"
            ),
            "{msg}"
        );
    }

    #[test]
    fn a_file_without_a_detector_is_refused_naming_the_key() {
        let (_d, path) = write_raw("[kafka]\nbrokers = \"a:1\"\n");
        let msg = one_error(load_with_env(&path, no_env()));
        assert!(
            msg.starts_with(&format!("{}: detectors: no detector", path.display())),
            "{msg}"
        );
        // The tools that score nothing read it.
        let located = Located::File {
            path: path.clone(),
            rule: Rule::Flag,
        };
        let c = load_located_for_tools(&located, no_env()).unwrap();
        assert_eq!(c.kafka.brokers, "a:1");
    }

    #[test]
    fn the_old_shape_is_refused_at_its_line() {
        let (_d, path) =
            write_raw("[detector]\ninput_topic = \"t\"\n\n[model]\npath = \"m.iforest\"\n");
        let errs = load_with_env(&path, no_env()).unwrap_err().0;
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(
            msgs[0].contains(":1:1: detector: the single [detector] section is gone"),
            "{msgs:?}"
        );
        assert!(
            msgs[1].contains(":4:1: model: the [model] section is gone"),
            "{msgs:?}"
        );
    }

    #[test]
    fn an_unknown_scorer_or_format_names_its_key() {
        let (_d, path) = write("[detectors.tx]\nscorer = \"neural\"\n");
        let msg = one_error(load_with_env(&path, no_env()));
        assert!(
            msg.contains(":2:10: detectors.tx.scorer: unknown variant `neural`"),
            "{msg}"
        );
        let (_d, path) = write("[detectors.tx]\nformat = \"xml\"\n");
        let msg = one_error(load_with_env(&path, no_env()));
        assert!(
            msg.contains(":2:10: detectors.tx.format: unknown variant `xml`"),
            "{msg}"
        );
        let (_d, path) = write("[detectors.tx]\nneural_net = \"x.onnx\"\n");
        let msg = one_error(load_with_env(&path, no_env()));
        assert!(
            msg.contains(":2:1: detectors.tx.neural_net: unknown field"),
            "{msg}"
        );
    }

    #[test]
    fn a_rule_table_with_a_wrong_key_names_the_rule() {
        let (_d, path) = write(
            "[detectors.tx.rules]\nhot = \"t > 1.0\"\ncold = { expr = \"t < 0.0\", fro = 2 }\n",
        );
        let msg = one_error(load_with_env(&path, no_env()));
        assert!(
            msg.contains(":3:8: detectors.tx.rules.cold: unknown field `fro`"),
            "{msg}"
        );
    }

    #[test]
    fn generator_profiles_and_replay_keys_name_their_key() {
        use crate::config::GeneratorProfile;
        use crate::source::generator::replay::{ColumnRef, HeaderMode, Pace};
        let (_d, path) = write("[generator]\nprofile = \"weather\"\n");
        let msg = one_error(load_with_env(&path, no_env()));
        assert!(
            msg.contains(":2:11: generator.profile: unknown variant `weather`"),
            "{msg}"
        );
        let (_d, path) =
            write("[generator]\nprofile = \"sensors\"\nsensors = 0\nfault_share = 0.5\n");
        let errs = load_with_env(&path, no_env()).unwrap_err().0;
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            msgs.iter().any(|m| m.contains(":3:11: generator.sensors")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains(":4:15: generator.fault_share: must be between 0 and 0.1667")),
            "{msgs:?}"
        );
        let (_d, path) = write("[generator]\nprofile = \"replay\"\n");
        let msg = one_error(load_with_env(&path, no_env()));
        assert!(
            msg.contains("generator.file: profile \"replay\" needs"),
            "{msg}"
        );
        let (_d, path) =
            write("[generator]\nprofile = \"replay\"\nfile = \"a.csv\"\npace = \"fast\"\n");
        let msg = one_error(load_with_env(&path, no_env()));
        assert!(
            msg.contains(":4:8: generator.pace: \"fast\" is not a pace"),
            "{msg}"
        );
        let (_d, path) = write(
            "[generator]\nprofile = \"replay\"\nfile = \"a.csv\"\ncolumns = [\"a\", \"b\"]\n\
             key_column = \"InvoiceNo\"\nfrom_line = 0\n",
        );
        let errs = load_with_env(&path, no_env()).unwrap_err().0;
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains(":6:13: generator.from_line")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains(":5:14: generator.key_column: \"InvoiceNo\" is not among")),
            "{msgs:?}"
        );
        let (_d, path) = write(
            "[generator]\nprofile = \"replay\"\nfile = \"a.csv\"\nheader = false\nkey_column = 1\n\
             pace = \"speedup:60\"\nfrom_line = 5\n",
        );
        let g = load_with_env(&path, env(&[("ANOMALYD_GENERATOR__HEADER", "true")]))
            .unwrap()
            .generator;
        assert_eq!(g.profile, GeneratorProfile::Replay);
        assert_eq!(g.header, HeaderMode::Present, "the environment wins");
        assert_eq!(g.key_column, ColumnRef::Index(1));
        assert_eq!(g.pace, Pace::Speedup(60.0));
        assert_eq!(g.from_line, 5);
        let (_d, path) = write("[generator]\nenabled = true\n");
        let g = load_with_env(&path, no_env()).unwrap().generator;
        assert_eq!(
            g.profile,
            GeneratorProfile::Transactions,
            "today's generator by default"
        );
    }

    #[test]
    fn csv_needs_unique_columns_and_features_among_them() {
        let cols = "columns = [\"InvoiceNo\", \"Quantity\", \"UnitPrice\"]\n";
        let (_d, path) = write(&format!(
            "[detectors.tx]\nformat = \"csv\"\n{cols}features = [\"Quantity\", \"UnitPrice\"]\n"
        ));
        let c = load_with_env(&path, no_env()).unwrap();
        assert_eq!(c.detectors["tx"].format, crate::config::RecordFormat::Csv);
        assert_eq!(c.detectors["tx"].columns.as_ref().unwrap().len(), 3);

        let (_d, path) = write("[detectors.tx]\nformat = \"csv\"\nfeatures = [\"Quantity\"]\n");
        let msg = one_error(load_with_env(&path, no_env()));
        assert!(msg.contains("detectors.tx.columns: must be set"), "{msg}");
        assert!(msg.contains("anomalyd.toml:"), "{msg}");

        let (_d, path) = write(&format!(
            "[detectors.tx]\nformat = \"csv\"\n{cols}features = [\"Quantity\", \"Price\"]\n"
        ));
        let msg = one_error(load_with_env(&path, no_env()));
        assert!(
            msg.contains(":4:12: detectors.tx.features: \"Price\" is not one of the columns"),
            "{msg}"
        );

        let (_d, path) = write(
            "[detectors.tx]\nformat = \"csv\"\ncolumns = [\"a\", \"b\", \"a\"]\nfeatures = [\"b\"]\n",
        );
        let msg = one_error(load_with_env(&path, no_env()));
        assert!(
            msg.contains(":3:11: detectors.tx.columns: column \"a\" is named twice"),
            "{msg}"
        );

        // A model reads a list of columns, not a field.
        let (_d, path) = write(&format!(
            "[detectors.tx]\nformat = \"csv\"\n{cols}features = \"data\"\n"
        ));
        let msg = one_error(load_with_env(&path, no_env()));
        assert!(
            msg.contains("detectors.tx.features: with format = \"csv\", features is a list"),
            "{msg}"
        );

        // Columns mean nothing to JSON.
        let (_d, path) = write(&format!("[detectors.tx]\n{cols}"));
        let msg = one_error(load_with_env(&path, no_env()));
        assert!(
            msg.contains(":2:11: detectors.tx.columns: is read only with format = \"csv\""),
            "{msg}"
        );
    }

    #[test]
    fn a_bad_scored_topic_names_its_line_and_key() {
        let (_d, path) = write("[detectors.tx]\nscored_topic = \"sensor-readings\"\n");
        let c = load_with_env(&path, no_env()).unwrap();
        assert_eq!(
            c.detectors["tx"].scored_topic.as_deref(),
            Some("sensor-readings")
        );
        let (_d, path) = write("[detectors.tx]\nscored_topic = \"anomalies\"\n");
        let msg = one_error(load_with_env(&path, no_env()));
        assert!(
            msg.contains(":2:16: detectors.tx.scored_topic: must differ from output_topic"),
            "{msg}"
        );
    }

    #[test]
    fn env_overrides_a_named_detector() {
        let (_d, path) = write(
            "[detectors.transactions]\ninput_topic = \"t\"\noutput_topic = \"a\"\ndead_letter_topic = \"d\"\nmodel = \"m\"\n",
        );
        let c = load_with_env(
            &path,
            env(&[("ANOMALYD_DETECTORS__TRANSACTIONS__BATCH_MAX", "7")]),
        )
        .unwrap();
        assert_eq!(c.detectors["transactions"].batch_max, 7);
        let msg = one_error(load_with_env(
            &path,
            env(&[("ANOMALYD_DETECTORS__TRANSACTIONS__BATCH_MAX", "0")]),
        ));
        assert_eq!(
            msg,
            "environment variable ANOMALYD_DETECTORS__TRANSACTIONS__BATCH_MAX: detectors.transactions.batch_max: must be >= 1"
        );
    }

    #[test]
    fn origin_of_a_key_is_its_variable_or_its_line() {
        let (_d, path) =
            write("[kafka]\nbrokers = \"a:1\"\n\n[detectors.tx]\nfeatures = [\"/a\"]\n");
        assert_eq!(
            origin_of(&path, "detectors.tx.features", no_env()),
            Origin::File {
                path: path.clone(),
                line: 5,
                column: 12
            }
        );
        assert_eq!(
            origin_of(
                &path,
                "detectors.tx.features",
                env(&[("ANOMALYD_DETECTORS__TX__FEATURES", "[\"/b\"]")])
            ),
            Origin::Env("ANOMALYD_DETECTORS__TX__FEATURES".into())
        );
        assert_eq!(
            origin_of(&path, "model.path", no_env()),
            Origin::FileAsWhole(path.clone())
        );
    }

    #[test]
    fn a_file_with_only_a_detector_gives_defaults_elsewhere() {
        let (_d, path) = write("");
        let c = load_with_env(&path, no_env()).unwrap();
        assert_eq!(c.kafka, Config::default().kafka);
        assert_eq!(c.detectors["tx"].batch_max, 500);
        assert_eq!(c.detector_names(), ["tx"]);
    }

    #[test]
    fn file_values_override_defaults() {
        let (_d, path) = write(
            "[kafka]\nbrokers = \"k1:9092,k2:9092\"\n[kafka.properties]\n\"fetch.wait.max.ms\" = 10\n\
             [detectors.tx]\nfeatures = [\"/t\", \"/p\"]\nbatch_max = 64\n",
        );
        let c = load_with_env(&path, no_env()).unwrap();
        assert_eq!(c.kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(
            c.kafka.properties["fetch.wait.max.ms"],
            PropertyValue::Int(10)
        );
        assert_eq!(
            c.detectors["tx"].features,
            FeatureSpec::Pointers(vec!["/t".into(), "/p".into()])
        );
        assert_eq!(c.detectors["tx"].batch_max, 64);
        assert_eq!(c.detectors["tx"].input_topic, "transactions");
        assert_eq!(c.detectors["tx"].group_id, None);
    }

    #[test]
    fn unknown_key_names_file_line_column_and_key() {
        let (_d, path) = write("[kafka]\nbrokers = \"a:1\"\n\n[detectors.tx]\nbatch_mx = 3\n");
        let msg = one_error(load_with_env(&path, no_env()));
        let expected = format!(
            "{}:5:1: detectors.tx.batch_mx: unknown field `batch_mx`",
            path.display()
        );
        assert!(msg.starts_with(&expected), "{msg}");
    }

    #[test]
    fn unknown_section_is_refused() {
        let (_d, path) = write("[kafak]\nbrokers = \"a:1\"\n");
        let msg = one_error(load_with_env(&path, no_env()));
        assert!(msg.contains(":1:2: kafak: unknown field `kafak`"), "{msg}");
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let (_d, path) = write("[detectors.tx]\nbatch_max = \"many\"\n");
        let msg = one_error(load_with_env(&path, no_env()));
        assert!(
            msg.contains(":2:13: detectors.tx.batch_max: invalid type: string \"many\""),
            "{msg}"
        );
    }

    #[test]
    fn syntax_error_names_line() {
        let (_d, path) = write("[kafka]\nbrokers = \"a:1\"\ngroup_id = \n");
        let msg = one_error(load_with_env(&path, no_env()));
        assert!(msg.starts_with(&format!("{}:3:", path.display())), "{msg}");
    }

    #[test]
    fn missing_file_is_an_error_not_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.toml");
        let msg = one_error(load_with_env(&path, no_env()));
        assert!(
            msg.contains("nope.toml: cannot read the config file"),
            "{msg}"
        );
    }

    #[test]
    fn env_overrides_file() {
        let (_d, path) = write("[kafka]\nbrokers = \"a:1\"\n[detectors.tx]\nbatch_max = 10\n");
        let c = load_with_env(
            &path,
            env(&[
                ("ANOMALYD_KAFKA__BROKERS", "127.0.0.1:19092"),
                ("ANOMALYD_DETECTORS__TX__BATCH_MAX", "20"),
                ("ANOMALYD_CONFIG", "/somewhere/else.toml"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.kafka.brokers, "127.0.0.1:19092");
        assert_eq!(c.detectors["tx"].batch_max, 20);
    }

    #[test]
    fn env_sets_librdkafka_properties_by_their_dotted_names() {
        let (_dir, path) = write("[kafka.properties]\n\"fetch.wait.max.ms\" = 10\n");
        let c = load_with_env(
            &path,
            env(&[
                ("ANOMALYD_KAFKA__PROPERTIES__FETCH_WAIT_MAX_MS", "25"),
                ("ANOMALYD_KAFKA__PROPERTIES__SASL_PASSWORD", "1e5"),
                ("ANOMALYD_KAFKA__PROPERTIES__CLIENT_ID", "anomalyd-eu-1"),
            ]),
        )
        .unwrap();
        let p = &c.kafka.properties;
        assert_eq!(p["fetch.wait.max.ms"], PropertyValue::String("25".into()));
        // Never parsed: a secret that looks like a number stays as written.
        assert_eq!(p["sasl.password"], PropertyValue::String("1e5".into()));
        assert_eq!(
            p["client.id"],
            PropertyValue::String("anomalyd-eu-1".into())
        );
        assert_eq!(p.len(), 3);

        // A name librdkafka does not know is refused, naming the variable.
        let errors = load_with_env(
            &path,
            env(&[("ANOMALYD_KAFKA__PROPERTIES__FETCH_WAIT_MAXMS", "25")]),
        )
        .unwrap_err();
        let msg = errors.to_string();
        assert!(
            msg.contains("ANOMALYD_KAFKA__PROPERTIES__FETCH_WAIT_MAXMS")
                && msg.contains("No such configuration property"),
            "{msg}"
        );

        // The properties anomalyd manages stay refused, naming the variable.
        let errors = load_with_env(
            &path,
            env(&[("ANOMALYD_KAFKA__PROPERTIES__ENABLE_AUTO_COMMIT", "true")]),
        )
        .unwrap_err();
        let msg = errors.to_string();
        assert!(
            msg.contains("kafka.properties.enable.auto.commit") && msg.contains("set by anomalyd"),
            "{msg}"
        );
    }

    #[test]
    fn env_typo_is_refused_and_named() {
        let (_d, path) = write("");
        let msg = one_error(load_with_env(
            &path,
            env(&[("ANOMALYD_KAFKA__BROKRS", "127.0.0.1:19092")]),
        ));
        assert!(
            msg.starts_with(
                "environment variable ANOMALYD_KAFKA__BROKRS: kafka.brokrs: unknown field"
            ),
            "{msg}"
        );
    }

    #[test]
    fn env_names_that_are_no_key_are_refused_not_a_panic() {
        let (_d, path) = write("");
        for name in ["ANOMALYD_.", "ANOMALYD____", "ANOMALYD__"] {
            let Err(errors) = load_with_env(&path, env(&[(name, "1")])) else {
                panic!("{name} accepted");
            };
            let msg = errors.to_string();
            assert!(msg.contains(name), "{name}: {msg}");
        }
    }

    #[test]
    fn env_wrong_type_is_refused_and_named() {
        let (_d, path) = write("");
        let msg = one_error(load_with_env(
            &path,
            env(&[("ANOMALYD_DETECTORS__TX__BATCH_MAX", "lots")]),
        ));
        assert!(
            msg.starts_with("environment variable ANOMALYD_DETECTORS__TX__BATCH_MAX:"),
            "{msg}"
        );
    }

    #[test]
    fn semantic_errors_are_all_reported_with_positions() {
        let (_d, path) =
            write("[generator]\noutlier_probability = 2.0\n\n[detectors.tx]\nbatch_max = 0\n");
        let errs = load_with_env(&path, no_env()).unwrap_err().0;
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        let p = path.display();
        assert_eq!(
            msgs,
            [
                format!("{p}:5:13: detectors.tx.batch_max: must be >= 1"),
                format!("{p}:2:23: generator.outlier_probability: must be between 0 and 1"),
            ]
        );
    }

    #[test]
    fn semantic_error_from_env_names_the_variable() {
        let (_d, path) = write("[detectors.tx]\nbatch_max = 10\n");
        let msg = one_error(load_with_env(
            &path,
            env(&[("ANOMALYD_DETECTORS__TX__BATCH_MAX", "0")]),
        ));
        assert_eq!(
            msg,
            "environment variable ANOMALYD_DETECTORS__TX__BATCH_MAX: detectors.tx.batch_max: must be >= 1"
        );
    }

    /// Issue 11: a bad value was echoed whole (a 5 MiB string gave 5 MiB of output).
    #[test]
    fn long_values_are_cut_in_errors() {
        let huge = "x".repeat(5 << 20);
        for (text, key) in [
            (
                format!("[detectors.tx]\nbatch_max = \"{huge}\"\n"),
                "detectors.tx.batch_max",
            ),
            (
                format!("[detectors.tx]\ninput_topic = \"a {huge}\"\n"),
                "detectors.tx.input_topic",
            ),
            (
                format!("[detectors.tx]\nfeatures = [\"{huge}\"]\n"),
                "detectors.tx.features",
            ),
            (format!("[slack]\nmode = \"{huge}\"\n"), "slack.mode"),
            (
                format!("[kafka.properties]\n\"fetch.wait.max.ms\" = \"1{huge}\"\n"),
                "kafka.properties.fetch.wait.max.ms",
            ),
            (format!("[kafka.properties]\n\"{huge}\" = 1\n"), ""),
        ] {
            let (_d, path) = write(&text);
            let Err(errors) = load_with_env(&path, no_env()) else {
                panic!("accepted")
            };
            let msg = errors.to_string();
            assert!(
                msg.len() < 2_500,
                "{key}: {} bytes: {}",
                msg.len(),
                &msg[..300]
            );
            assert!(msg.contains(key), "{msg}");
        }
        let topic = format!("a {}", "x".repeat(200));
        let (_d, path) = write(&format!("[detectors.tx]\ninput_topic = \"{topic}\"\n"));
        let Err(errors) = load_with_env(&path, no_env()) else {
            panic!("accepted")
        };
        let msg = errors.to_string();
        let cut = format!("\"a {}…\" (202 bytes) has ' '", "x".repeat(78));
        assert!(msg.contains(&cut), "{msg}");
        // Short values, and escaped quotes inside them, are left alone.
        assert_eq!(shorten("a \"b\\\"c\" d"), "a \"b\\\"c\" d");
        let long = format!("value `{}` and \"{}\"", "k".repeat(100), "v\\\"".repeat(50));
        let cut = shorten(&long);
        assert!(cut.starts_with(&format!("value `{}…` (100 bytes) and \"", "k".repeat(80))));
        assert!(cut.ends_with("…\" (150 bytes)"), "{cut}");
        let plain = "y".repeat(3000);
        assert_eq!(
            shorten(&plain),
            format!("{}… (3000 bytes in all)", "y".repeat(1000))
        );
    }

    #[test]
    fn keys_with_dots_are_located() {
        let (_d, path) = write(
            "[kafka.properties]\n\"fetch.wait.max.ms\" = 10\n\"enable.auto.commit\" = true\n",
        );
        let msg = one_error(load_with_env(&path, no_env()));
        assert!(
            msg.contains(":3:24: kafka.properties.enable.auto.commit: is set by anomalyd"),
            "{msg}"
        );
        // A misspelt librdkafka property is found at load, not when a client is created.
        let (_d, path) = write("[kafka.properties]\n\"fetch.wait.maxms\" = 10\n");
        let msg = one_error(load_with_env(&path, no_env()));
        assert!(
            msg.contains(":2:22: kafka.properties.fetch.wait.maxms: librdkafka refuses it: No such configuration property"),
            "{msg}"
        );
    }
}
