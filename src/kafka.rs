//! librdkafka client settings shared by every consumer and producer anomalyd creates.
//!
//! The user's `[kafka] properties` come first; the settings that anomalyd's delivery guarantees
//! rest on are applied last, so they always win (config validation refuses them anyway).

use rdkafka::ClientConfig;

use crate::config::KafkaConfig;

/// Settings common to every client: brokers and the user's extra properties.
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    with_defaults(kafka, &[])
}

/// `defaults` first, so the user's properties can change them, then brokers.
fn with_defaults(kafka: &KafkaConfig, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    for (k, v) in defaults {
        cfg.set(*k, *v);
    }
    for (k, v) in &kafka.properties {
        cfg.set(k, v.to_string());
    }
    cfg.set("bootstrap.servers", &kafka.brokers);
    cfg
}

/// A consumer in `group` that never commits on its own: the caller stores offsets only once a
/// record is fully handled, and librdkafka's auto-commit then commits only stored offsets.
pub fn consumer_config(kafka: &KafkaConfig, group: &str) -> ClientConfig {
    // librdkafka prefetches up to 100,000 records per partition and fetches up to 50 MB at a
    // time by default: hundreds of MB on a backlog. A batch is at most a few thousand records,
    // so far less keeps the workers fed and the daemon small.
    let mut cfg = with_defaults(
        kafka,
        &[
            ("queued.min.messages", "5000"),
            ("queued.max.messages.kbytes", "8192"),
            ("fetch.max.bytes", "2097152"),
        ],
    );
    cfg.set("group.id", group)
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .set("auto.offset.reset", "earliest");
    cfg
}

/// An idempotent producer that waits for every in-sync replica: no duplicates from retries and
/// no acknowledged record lost with a leader.
pub fn producer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut cfg = client_config(kafka);
    cfg.set("enable.idempotence", "true").set("acks", "all");
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PropertyValue;

    #[test]
    fn managed_settings_win_over_properties() {
        let mut kafka = KafkaConfig::default();
        kafka
            .properties
            .insert("fetch.wait.max.ms".into(), PropertyValue::Int(10));
        kafka
            .properties
            .insert("enable.auto.offset.store".into(), PropertyValue::Bool(true));
        let cfg = consumer_config(&kafka, "g");
        assert_eq!(cfg.get("fetch.wait.max.ms"), Some("10"));
        assert_eq!(cfg.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(cfg.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(cfg.get("group.id"), Some("g"));
        assert_eq!(cfg.get("queued.min.messages"), Some("5000"));
        kafka
            .properties
            .insert("queued.min.messages".into(), PropertyValue::Int(500));
        let cfg = consumer_config(&kafka, "g");
        assert_eq!(
            cfg.get("queued.min.messages"),
            Some("500"),
            "users may tune it"
        );
        let p = producer_config(&kafka);
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("acks"), Some("all"));
    }
}
