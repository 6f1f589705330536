//! Time in stages: which clock a window follows ([`TimeMode`]), and timestamps read from a
//! record's field.
//!
//! Event time is the time a record says it happened (a field of the record); processing time
//! is the wall clock when anomalyd reads it. Every time is milliseconds since the Unix epoch.
//!
//! Timestamps without a zone (the Online Retail data's `InvoiceDate`, `M/D/YYYY H:MM`) are read
//! as UTC: the data's own clock (UK local time) is kept as it is, and an hour of day computed from
//! it is the hour the data says. Parsing is chrono's, which accepts the data's unpadded month,
//! day and hour.

use thiserror::Error;

pub use crate::config::stages::TimeMode;

/// A timestamp that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{text:?} is not a date and time like 1/4/2011 9:05 (M/D/YYYY H:MM, optional :SS)")]
pub struct TimeError {
    /// The text, cut to 40 characters.
    pub text: String,
}

/// Reads `M/D/YYYY H:MM` or `M/D/YYYY H:MM:SS` (month, day and hour with or without a leading
/// zero, 24-hour clock, no zone) as UTC milliseconds since the Unix epoch.
///
/// `"1/4/2011 9:05"` is 2011-01-04T09:05:00Z; `"12/9/2011 12:50"` is 2011-12-09T12:50:00Z.
///
/// # Errors
/// [`TimeError`] when the text is not such a date and time (including a date that does not
/// exist, such as 2/30/2011, and surrounding text).
pub fn parse_month_day_year(s: &str) -> Result<i64, TimeError> {
    let t = s.trim();
    // Minutes first: the data's own form, so most lines are parsed once.
    let parsed = chrono::NaiveDateTime::parse_from_str(t, "%m/%d/%Y %H:%M")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(t, "%m/%d/%Y %H:%M:%S"));
    parsed
        .map(|d| d.and_utc().timestamp_millis())
        .map_err(|_| TimeError {
            text: s.chars().take(40).collect(),
        })
}

/// `ms` since the epoch as RFC 3339 UTC with seconds, e.g. `2011-01-04T09:05:00Z`; `None` for a
/// time outside chrono's range.
pub fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The hour of day (0..=23, UTC) of `ms` since the epoch.
pub fn hour_of_day(ms: i64) -> u32 {
    (ms.rem_euclid(86_400_000) / 3_600_000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpadded_months_days_and_hours_are_read() {
        let t = parse_month_day_year("1/4/2011 9:05").unwrap();
        assert_eq!(rfc3339(t).unwrap(), "2011-01-04T09:05:00Z");
        assert_eq!(hour_of_day(t), 9);
        let t = parse_month_day_year("12/9/2011 12:50").unwrap();
        assert_eq!(rfc3339(t).unwrap(), "2011-12-09T12:50:00Z");
        assert_eq!(hour_of_day(t), 12);
        let t = parse_month_day_year("01/04/2011 09:05:30").unwrap();
        assert_eq!(rfc3339(t).unwrap(), "2011-01-04T09:05:30Z");
        // The original read the hour by position and got it wrong on days 1-9 of months 1-9.
        for (text, hour) in [
            ("1/1/2011 8:00", 8),
            ("9/9/2011 17:59", 17),
            ("10/10/2011 0:01", 0),
            ("7/19/2011 23:59", 23),
        ] {
            assert_eq!(
                hour_of_day(parse_month_day_year(text).unwrap()),
                hour,
                "{text}"
            );
        }
    }

    #[test]
    fn anything_else_is_refused_with_the_text() {
        for bad in [
            "",
            "2011-01-04 09:05",
            "2/30/2011 9:05",
            "1/4/2011",
            "1/4/2011 25:00",
            "1/4/2011 9:05 extra",
            "13/1/2011 9:05",
        ] {
            let e = parse_month_day_year(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }
}
