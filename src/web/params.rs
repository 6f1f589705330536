//! The query parameters of the API and the page, read and checked: an unknown or repeated
//! parameter, a time that is neither RFC 3339 nor an age, an unknown detector or a limit over
//! its cap is a [`ParamError`] (400, with the reason). Values only ever reach SQL as bound
//! parameters (see [`crate::sinks::store::sqlite`]).

use thiserror::Error;

use crate::sinks::store::query::parse_time;

/// Most anomalies one request returns.
pub const MAX_LIMIT: usize = 1000;
/// Most points of one series.
pub const MAX_POINTS: usize = 10_000;
/// Most intervals one count request spans.
pub const MAX_BUCKETS: i64 = 10_000;
/// Longest key or field name accepted, in bytes.
pub const MAX_TEXT: usize = 1024;

/// A bad parameter: the message is the reason, shown to the caller.
#[derive(Debug, Error, PartialEq)]
pub enum ParamError {
    #[error("unknown parameter {name:?}; this endpoint takes: {allowed}")]
    Unknown { name: String, allowed: String },
    #[error("parameter {0:?} given more than once")]
    Repeated(String),
    #[error("parameter {0:?} is required")]
    Missing(&'static str),
    #[error(
        "{name}={value:?}: neither an RFC 3339 time (2026-03-01T10:00:00Z) nor an age (15m, 2h, 7d)"
    )]
    Time { name: &'static str, value: String },
    #[error("since must be before until")]
    Range,
    #[error("detector={0:?}: no such detector")]
    Detector(String),
    #[error("{name}={value:?}: expected a whole number between {min} and {max}")]
    Number {
        name: &'static str,
        value: String,
        min: i64,
        max: i64,
    },
    #[error("{name}={value:?}: expected one of {allowed}")]
    Choice {
        name: &'static str,
        value: String,
        allowed: &'static str,
    },
    #[error("{name}: longer than {MAX_TEXT} bytes")]
    TooLong { name: &'static str },
    #[error("by={by:?} over this range makes {buckets} intervals; at most {MAX_BUCKETS}")]
    Buckets { by: String, buckets: i64 },
}

/// One request's parameters, checked against the names its endpoint takes. An empty value
/// (an HTML form's empty field) counts as absent.
#[derive(Debug)]
pub struct Params {
    pairs: Vec<(String, String)>,
    now_ms: i64,
}

impl Params {
    /// `pairs` as decoded from the query string; `allowed`: the endpoint's parameter names;
    /// ages are counted back from `now_ms`.
    pub fn new(
        pairs: Vec<(String, String)>,
        allowed: &[&str],
        now_ms: i64,
    ) -> Result<Self, ParamError> {
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                return Err(ParamError::Unknown {
                    name: name.chars().take(64).collect(),
                    allowed: allowed.join(", "),
                });
            }
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(ParamError::Repeated(name.clone()));
            }
        }
        Ok(Self { pairs, now_ms })
    }

    /// The value of `name`, if given and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// A free text value (a key, a field name), at most [`MAX_TEXT`] bytes.
    pub fn text(&self, name: &'static str) -> Result<Option<String>, ParamError> {
        match self.get(name) {
            Some(v) if v.len() > MAX_TEXT => Err(ParamError::TooLong { name }),
            v => Ok(v.map(str::to_owned)),
        }
    }

    /// Like [`Params::text`], but required.
    pub fn required(&self, name: &'static str) -> Result<String, ParamError> {
        self.text(name)?.ok_or(ParamError::Missing(name))
    }

    /// A time: RFC 3339, or an age before now (`15m`), as milliseconds since the epoch.
    pub fn time(&self, name: &'static str) -> Result<Option<i64>, ParamError> {
        self.get(name)
            .map(|v| {
                parse_time(name, v, self.now_ms).map_err(|_| ParamError::Time {
                    name,
                    value: v.chars().take(64).collect(),
                })
            })
            .transpose()
    }

    /// `since` (default: `default_age_ms` before now) and `until` (default: none), checked to
    /// be in order.
    pub fn range(&self, default_age_ms: i64) -> Result<(i64, Option<i64>), ParamError> {
        let since = self.time("since")?.unwrap_or(self.now_ms - default_age_ms);
        let until = self.time("until")?;
        if until.is_some_and(|u| u <= since) {
            return Err(ParamError::Range);
        }
        Ok((since, until))
    }

    /// A whole number in `min..=max`, `default` when absent.
    pub fn number(
        &self,
        name: &'static str,
        default: i64,
        min: i64,
        max: i64,
    ) -> Result<i64, ParamError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| ParamError::Number {
                    name,
                    value: v.chars().take(64).collect(),
                    min,
                    max,
                }),
        }
    }

    /// `limit`: 1 to `max`, default `default`.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, ParamError> {
        self.number("limit", default as i64, 1, max as i64)
            .map(|n| n as usize)
    }

    /// `detector`, which must be one of `known`.
    pub fn detector(&self, known: &[String]) -> Result<Option<String>, ParamError> {
        match self.get("detector") {
            None => Ok(None),
            Some(d) if known.iter().any(|k| k == d) => Ok(Some(d.to_owned())),
            Some(d) => Err(ParamError::Detector(d.chars().take(64).collect())),
        }
    }

    /// The time ages are counted from.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }
}

/// `window` of the overview: `1h` (the default) or `1d`, in milliseconds.
pub fn window(params: &Params) -> Result<(&'static str, i64), ParamError> {
    match params.get("window") {
        None | Some("1h") => Ok(("1h", 3_600_000)),
        Some("1d") => Ok(("1d", 86_400_000)),
        Some(other) => Err(ParamError::Choice {
            name: "window",
            value: other.chars().take(64).collect(),
            allowed: "1h, 1d",
        }),
    }
}

/// `by`: an interval such as `1m` (default `default`), in milliseconds, at least a second,
/// and at most [`MAX_BUCKETS`] of them between `since` and `until`.
pub fn interval(
    params: &Params,
    default: &str,
    since: i64,
    until: i64,
) -> Result<(String, i64), ParamError> {
    let by = params.get("by").unwrap_or(default).to_owned();
    let ms = crate::sinks::store::query::parse_interval(&by)
        .ok()
        .filter(|&ms| ms >= 1000)
        .ok_or_else(|| ParamError::Choice {
            name: "by",
            value: by.chars().take(64).collect(),
            allowed: "an interval of at least 1s, e.g. 1m, 15m, 1h",
        })?;
    let buckets = (until - since) / ms + 1;
    if buckets > MAX_BUCKETS {
        return Err(ParamError::Buckets { by, buckets });
    }
    Ok((by, ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_772_000_000_000;

    fn p(q: &[(&str, &str)]) -> Result<Params, ParamError> {
        Params::new(
            q.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            &["detector", "since", "until", "limit", "key", "by", "window"],
            NOW,
        )
    }

    #[test]
    fn every_parameter_is_checked() {
        assert!(matches!(
            p(&[("nope", "1")]),
            Err(ParamError::Unknown { .. })
        ));
        assert!(matches!(
            p(&[("key", "a"), ("key", "b")]),
            Err(ParamError::Repeated(_))
        ));
        let q = p(&[("since", "15m"), ("until", ""), ("limit", "10")]).unwrap();
        assert_eq!(q.range(3_600_000).unwrap(), (NOW - 900_000, None));
        assert_eq!(q.limit(100, MAX_LIMIT).unwrap(), 10);
        let q = p(&[]).unwrap();
        assert_eq!(q.range(3_600_000).unwrap(), (NOW - 3_600_000, None));
        assert_eq!(q.limit(100, MAX_LIMIT).unwrap(), 100);
        assert!(matches!(
            p(&[("since", "yesterday")]).unwrap().range(1),
            Err(ParamError::Time { name: "since", .. })
        ));
        assert_eq!(
            p(&[("since", "1h"), ("until", "2h")]).unwrap().range(1),
            Err(ParamError::Range)
        );
        for bad in ["0", "1001", "-1", "ten", "1e3"] {
            assert!(
                p(&[("limit", bad)]).unwrap().limit(100, MAX_LIMIT).is_err(),
                "{bad}"
            );
        }
        let known = vec!["sensors".to_string()];
        let q = p(&[("detector", "sensors")]).unwrap();
        assert_eq!(q.detector(&known).unwrap().as_deref(), Some("sensors"));
        assert_eq!(
            p(&[("detector", "x'; DROP TABLE anomalies; --")])
                .unwrap()
                .detector(&known),
            Err(ParamError::Detector("x'; DROP TABLE anomalies; --".into()))
        );
        let long = "k".repeat(MAX_TEXT + 1);
        assert!(p(&[("key", &long)]).unwrap().text("key").is_err());
    }

    #[test]
    fn windows_and_intervals() {
        assert_eq!(window(&p(&[]).unwrap()).unwrap(), ("1h", 3_600_000));
        assert_eq!(
            window(&p(&[("window", "1d")]).unwrap()).unwrap().1,
            86_400_000
        );
        assert!(window(&p(&[("window", "1y")]).unwrap()).is_err());
        let q = p(&[]).unwrap();
        assert_eq!(interval(&q, "1m", 0, 3_600_000).unwrap().1, 60_000);
        let q = p(&[("by", "1s")]).unwrap();
        assert!(matches!(
            interval(&q, "1m", 0, 86_400_000),
            Err(ParamError::Buckets { .. })
        ));
        let q = p(&[("by", "10ms")]).unwrap();
        assert!(interval(&q, "1m", 0, 1000).is_err());
    }
}
