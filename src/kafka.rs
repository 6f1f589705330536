//! librdkafka client settings shared by every consumer and producer anomalyd creates.
//!
//! The user's `[kafka] properties` come first; the settings that anomalyd's delivery guarantees
//! rest on are applied last, so they always win (config validation refuses them anyway).

use rdkafka::ClientConfig;

use crate::config::KafkaConfig;

/// Settings common to every client: brokers and the user's extra properties.
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    for (k, v) in &kafka.properties {
        cfg.set(k, v.to_string());
    }
    cfg.set("bootstrap.servers", &kafka.brokers);
    cfg
}

/// A consumer in `group` that never commits on its own: the caller stores offsets only once a
/// record is fully handled, and librdkafka's auto-commit then commits only stored offsets.
pub fn consumer_config(kafka: &KafkaConfig, group: &str) -> ClientConfig {
    let mut cfg = client_config(kafka);
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
        let p = producer_config(&kafka);
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("acks"), Some("all"));
    }
}
