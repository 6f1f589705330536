//! Checking one librdkafka property on its own, without creating a client: the part of
//! librdkafka that configuration validation needs. It lives here, below both `config` and
//! `kafka`, so that `config` does not depend on the client module (which depends on `config`).

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

use super::is_secret_property;

/// Why librdkafka refuses the property `name = value`, or would read it as another value, if
/// it does: an unknown name, a bad value, or a number librdkafka would silently change.
/// Checked alone, without creating a client. A credential's value is never echoed.
///
/// librdkafka reads an integer property with `strtol`, which stops at the first character
/// that is not a digit: `1.5` becomes 1, `1e308` becomes 1, `10abc` becomes 10, and the
/// result passes its range check. So the value librdkafka stored is read back: when it is a
/// number, `value` must be that number, written as a whole number for an integer property
/// (one that reads `N.5` back as `N`), so a float (`2.0` too) for an integer property is
/// refused; for a floating-point one (`linger.ms`), within the 6 digits librdkafka prints.
/// Booleans, names and lists are librdkafka's to judge (`1` for `true`, `SASL_SSL` for
/// `sasl_ssl` are the same value).
pub fn property_problem(name: &str, value: &str) -> Option<String> {
    let stored = match ClientConfig::new().set(name, value).create_native_config() {
        Ok(native) => native.get(name).ok()?,
        Err(KafkaError::ClientConfig(_, description, _, _)) if !is_secret_property(name) => {
            return Some(format!("librdkafka refuses it: {description}"));
        }
        Err(_) => return Some("librdkafka refuses this value".into()),
    };
    if stored == value || is_secret_property(name) {
        return None;
    }
    let read = stored.parse::<f64>().ok()?;
    let whole = stored.parse::<i64>().ok().filter(|_| {
        let probe = format!("{stored}.5");
        ClientConfig::new()
            .set(name, &probe)
            .create_native_config()
            .ok()
            .and_then(|native| native.get(name).ok())
            .is_some_and(|back| back != probe)
    });
    match whole {
        Some(n) if value.trim().parse::<i64>() == Ok(n) => None,
        Some(n) => Some(format!(
            "takes a whole number; librdkafka would read {value} as {n} (write the number \
             without a fraction, exponent or other characters)"
        )),
        None => match value.trim().parse::<f64>() {
            Ok(given) if (given - read).abs() <= 1e-5 * given.abs().max(read.abs()) => None,
            _ => Some(format!(
                "librdkafka would read {value} as {stored}; write the number it should be"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafka_judges_each_property() {
        assert_eq!(property_problem("fetch.wait.max.ms", "10"), None);
        assert_eq!(property_problem("sasl.password", "1e5"), None);
        let unknown = property_problem("fetch.wait.maxms", "10").unwrap();
        assert!(unknown.contains("fetch.wait.maxms"), "{unknown}");
        // linger.ms is librdkafka's alias of queue.buffering.max.ms.
        let bad = property_problem("linger.ms", "soon").unwrap();
        assert!(bad.contains("Invalid value"), "{bad}");
        // A credential's value is not repeated, even when refused.
        let refused = property_problem("sasl.mechanisms.password", "hunter2").unwrap();
        assert_eq!(refused, "librdkafka refuses this value");
    }

    /// Issue 11: a float for an integer property was silently truncated (`1.5` and `-1e308`
    /// passed the check).
    #[test]
    fn numbers_librdkafka_would_change_are_refused() {
        for (name, value) in [
            ("fetch.wait.max.ms", "1.5"),
            ("fetch.wait.max.ms", "2.0"),
            ("fetch.wait.max.ms", "1e308"),
            ("fetch.wait.max.ms", "10abc"),
            ("fetch.wait.max.ms", "0x10"),
            ("topic.metadata.refresh.interval.ms", "-1e308"),
            ("topic.metadata.refresh.interval.ms", "-1.5"),
            ("message.max.bytes", "1000000.9"),
            ("statistics.interval.ms", "1e3"),
            ("linger.ms", "5abc"),
        ] {
            let why = property_problem(name, value);
            assert!(
                why.as_ref().is_some_and(|w| w.contains(value)),
                "{name} = {value}: {why:?}"
            );
        }
        // A boolean for an integer is librdkafka's own refusal.
        assert!(property_problem("fetch.wait.max.ms", "true").is_some());
        let why = property_problem("fetch.wait.max.ms", "1.5").unwrap();
        assert!(
            why.contains("whole number") && why.contains("as 1"),
            "{why}"
        );
        // What librdkafka keeps as given, or reads as the same value, passes.
        for (name, value) in [
            ("fetch.wait.max.ms", "10"),
            ("fetch.wait.max.ms", "+10"),
            ("topic.metadata.refresh.interval.ms", "-1"),
            ("linger.ms", "1.5"),
            ("linger.ms", "0.123456789"),
            ("linger.ms", "5"),
            ("linger.ms", "5.0"),
            ("enable.partition.eof", "1"),
            ("enable.partition.eof", "true"),
            ("security.protocol", "SASL_SSL"),
            ("client.id", "1.5"),
            ("sasl.password", "1e5"),
        ] {
            assert_eq!(property_problem(name, value), None, "{name} = {value}");
        }
    }
}
