//! librdkafka client settings shared by every consumer and producer anomalyd creates.
//!
//! anomalyd's own defaults come first, then the user's `[kafka] properties` (a property that
//! only a consumer or only a producer understands goes only to that kind of client, so neither
//! logs a configuration warning for the other's), and last the settings that anomalyd's
//! delivery guarantees rest on, so they always win (config validation refuses them anyway).

use std::time::Duration;

use rdkafka::ClientConfig;

use crate::config::KafkaConfig;
pub use crate::config::property_problem;

/// Properties librdkafka reads only in consumers ("C" in its CONFIGURATION.md).
const CONSUMER_ONLY: &[&str] = &[
    "auto.commit.interval.ms",
    "auto.offset.reset",
    "check.crcs",
    "consume.callback.max.messages",
    "coordinator.query.interval.ms",
    "enable.partition.eof",
    "fetch.error.backoff.ms",
    "fetch.max.bytes",
    "fetch.message.max.bytes",
    "fetch.min.bytes",
    "fetch.queue.backoff.ms",
    "fetch.wait.max.ms",
    "group.instance.id",
    "group.protocol",
    "group.protocol.type",
    "group.remote.assignor",
    "heartbeat.interval.ms",
    "max.partition.fetch.bytes",
    "max.poll.interval.ms",
    "partition.assignment.strategy",
    "queued.max.messages.kbytes",
    "queued.min.messages",
    "session.timeout.ms",
];

/// Properties librdkafka reads only in producers ("P").
const PRODUCER_ONLY: &[&str] = &[
    "batch.num.messages",
    "batch.size",
    "compression.codec",
    "compression.level",
    "compression.type",
    "delivery.timeout.ms",
    "linger.ms",
    "message.send.max.retries",
    "message.timeout.ms",
    "partitioner",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.messages",
    "queue.buffering.max.ms",
    "queuing.strategy",
    "request.timeout.ms",
    "retries",
    "sticky.partitioning.linger.ms",
];

/// Which kind of client a configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Consumer,
    Producer,
    /// Admin and other clients: every property.
    Any,
}

/// Settings common to every client: brokers and the user's extra properties.
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    build(kafka, Role::Any, &[])
}

/// Defaults for every client. `enable.metrics.push` (KIP-714, on in librdkafka since 2.5)
/// keeps six to eight HDR histograms per broker connection whether or not the cluster ever
/// asks for the metrics: about 300 KiB a client, a third of an idle daemon's heap (massif,
/// docs/operations.md "Memory"). anomalyd reports its own metrics; a user who wants the
/// client's pushed sets it back to `true` in `[kafka.properties]`.
const COMMON: &[(&str, &str)] = &[("enable.metrics.push", "false")];

/// [`COMMON`] and `defaults` first, so the user's properties can change them, then brokers.
fn build(kafka: &KafkaConfig, role: Role, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    for (k, v) in COMMON.iter().chain(defaults) {
        cfg.set(*k, *v);
    }
    let foreign: &[&str] = match role {
        Role::Consumer => PRODUCER_ONLY,
        Role::Producer => CONSUMER_ONLY,
        Role::Any => &[],
    };
    for (k, v) in &kafka.properties {
        if !foreign.contains(&k.as_str()) {
            cfg.set(k, v.to_string());
        }
    }
    cfg.set("bootstrap.servers", &kafka.brokers);
    cfg
}

/// A consumer in `group` that never commits on its own: the caller stores offsets only once a
/// record is fully handled, and librdkafka's auto-commit then commits only stored offsets.
pub fn consumer_config(kafka: &KafkaConfig, group: &str) -> ClientConfig {
    // Memory (docs/operations.md "Memory"): librdkafka prefetches up to 100,000 records per
    // partition and fetches up to 50 MB at a time by default, hundreds of MB on a backlog. What
    // it holds is the records of a fetch response, each about 400 bytes of librdkafka's own
    // beside its value, and a response's byte limit counts compressed bytes: one lz4 fetch of
    // JSON expands about five times. A 384 KiB response keeps a 200,000-record lz4 backlog on 3
    // partitions under 32 MiB (2 MiB gave 59); a batch is at most a few thousand records, so
    // the queues below keep the workers fed.
    let fetch_max = fetch_max_bytes(kafka);
    // A user's own fetch.max.bytes below that stays allowed.
    let message_max = match kafka.properties.get("fetch.max.bytes") {
        Some(v) => v.to_string(),
        None => fetch_max.clone(),
    };
    let mut cfg = build(
        kafka,
        Role::Consumer,
        &[
            ("queued.min.messages", "5000"),
            ("queued.max.messages.kbytes", "2048"),
            ("fetch.max.bytes", &fetch_max),
            // librdkafka refuses a fetch.max.bytes below message.max.bytes (1,000,000).
            ("message.max.bytes", &message_max),
            // A new group starts at the oldest record: nothing already in the topic is skipped.
            ("auto.offset.reset", "earliest"),
            // Liveness (README "Crashes and the consumer group", docs/operations.md): a member
            // killed without leaving is evicted after the session timeout, so a restarted or
            // surviving instance takes its partitions over in about 6 s rather than 45 s.
            // Beats every second: with librdkafka's 3 s, tansu 0.6.0 was seen to hand a
            // restarted member an empty assignment for good (issue 11).
            ("heartbeat.interval.ms", "1000"),
            ("session.timeout.ms", "6000"),
            // The group thread polls all the time (workers score elsewhere); its one long wait,
            // a revoke's drain, is kept 5 s below this (source::consumer). So this mostly
            // bounds how long the broker waits for members to rejoin a rebalance: 30 s, not
            // librdkafka's 5 minutes.
            ("max.poll.interval.ms", "30000"),
            // A subscribed topic created after start (or given more partitions) is seen at
            // the next metadata refresh: 10 s rather than librdkafka's 5 minutes, for one
            // small request.
            ("topic.metadata.refresh.interval.ms", "10000"),
        ],
    );
    cfg.set("group.id", group)
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true");
    cfg
}

/// anomalyd's default `fetch.max.bytes` (bytes, as librdkafka reads it): 393,216 (384 KiB),
/// or the user's `message.max.bytes` when that is larger, since librdkafka refuses a consumer
/// whose `fetch.max.bytes` is below its `message.max.bytes`.
fn fetch_max_bytes(kafka: &KafkaConfig) -> String {
    const DEFAULT: u64 = 393_216;
    let message_max = kafka
        .properties
        .get("message.max.bytes")
        .and_then(|v| v.to_string().parse::<u64>().ok())
        .unwrap_or(0);
    DEFAULT.max(message_max).to_string()
}

/// The consumer setting `name` (a duration in milliseconds) in effect: the user's property,
/// else anomalyd's default, else librdkafka's (`auto.commit.interval.ms` 5 s,
/// `session.timeout.ms` 45 s, `heartbeat.interval.ms` 3 s, `max.poll.interval.ms` 300 s).
pub fn consumer_duration(kafka: &KafkaConfig, name: &str) -> Duration {
    let librdkafka = match name {
        "auto.commit.interval.ms" => 5_000,
        "session.timeout.ms" => 45_000,
        "heartbeat.interval.ms" => 3_000,
        "max.poll.interval.ms" => 300_000,
        _ => 0,
    };
    let ms = consumer_config(kafka, "anomalyd")
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(librdkafka);
    Duration::from_millis(ms)
}

/// An idempotent producer that waits for every in-sync replica: no duplicates from retries and
/// no acknowledged record lost with a leader.
pub fn producer_config(kafka: &KafkaConfig) -> ClientConfig {
    // An idempotent producer keeps at most 5 requests in flight per partition, and librdkafka
    // 2.12's broker thread spins while a partition's batch has waited its linger but that
    // limit is reached: with librdkafka's 5 ms and a broker that acknowledges in 20 to 100 ms
    // (tansu), reading a 200,000-record backlog cost 1.8 to 4.6 CPU seconds, 0.6 to 0.7 with
    // 20 ms (docs/benchmarks.md, "CPU and memory per record"). Anomalies wait up to 15 ms more.
    let mut cfg = build(kafka, Role::Producer, &[("linger.ms", "20")]);
    cfg.set("enable.idempotence", "true").set("acks", "all");
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PropertyValue;

    #[test]
    fn client_metrics_push_is_off_unless_the_user_turns_it_on() {
        let mut kafka = KafkaConfig::default();
        for cfg in [
            consumer_config(&kafka, "g"),
            producer_config(&kafka),
            client_config(&kafka),
        ] {
            assert_eq!(cfg.get("enable.metrics.push"), Some("false"));
        }
        kafka
            .properties
            .insert("enable.metrics.push".into(), PropertyValue::Bool(true));
        assert_eq!(
            producer_config(&kafka).get("enable.metrics.push"),
            Some("true")
        );
    }

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
        assert_eq!(cfg.get("heartbeat.interval.ms"), Some("1000"));
        assert_eq!(cfg.get("session.timeout.ms"), Some("6000"));
        assert_eq!(cfg.get("max.poll.interval.ms"), Some("30000"));
        assert_eq!(
            consumer_duration(&kafka, "session.timeout.ms"),
            Duration::from_secs(6)
        );
        assert_eq!(
            consumer_duration(&kafka, "auto.commit.interval.ms"),
            Duration::from_secs(5),
            "librdkafka's default"
        );
        kafka
            .properties
            .insert("session.timeout.ms".into(), PropertyValue::Int(10_000));
        assert_eq!(
            consumer_duration(&kafka, "session.timeout.ms"),
            Duration::from_secs(10),
            "users may tune it"
        );
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

    #[test]
    fn each_client_gets_only_the_properties_it_reads() {
        let mut kafka = KafkaConfig::default();
        for (k, v) in [
            ("fetch.wait.max.ms", "10"),
            ("linger.ms", "2"),
            ("security.protocol", "SASL_SSL"),
            ("auto.offset.reset", "latest"),
        ] {
            kafka
                .properties
                .insert(k.into(), PropertyValue::String(v.into()));
        }
        let c = consumer_config(&kafka, "g");
        let p = producer_config(&kafka);
        assert_eq!(c.get("fetch.wait.max.ms"), Some("10"));
        assert_eq!(c.get("linger.ms"), None);
        assert_eq!(p.get("linger.ms"), Some("2"));
        assert_eq!(p.get("fetch.wait.max.ms"), None);
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(p.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(
            c.get("auto.offset.reset"),
            Some("latest"),
            "users may choose"
        );
        assert_eq!(client_config(&kafka).get("linger.ms"), Some("2"));
    }

    /// librdkafka accepts the fetch limits whichever of them the user sets (it refuses a
    /// `fetch.max.bytes` below `message.max.bytes`), and anomalyd's 384 KiB holds otherwise.
    #[test]
    fn fetch_limits_are_accepted_whatever_the_user_sets() {
        use rdkafka::consumer::BaseConsumer;
        // (the user's properties, fetch.max.bytes, message.max.bytes)
        type Case = (&'static [(&'static str, i64)], &'static str, &'static str);
        let cases: [Case; 4] = [
            (&[], "393216", "393216"),
            (&[("message.max.bytes", 2_000_000)], "2000000", "2000000"),
            (&[("fetch.max.bytes", 100_000)], "100000", "100000"),
            (
                &[
                    ("fetch.max.bytes", 4_000_000),
                    ("message.max.bytes", 1_000_000),
                ],
                "4000000",
                "1000000",
            ),
        ];
        for (props, fetch, message) in cases {
            let mut kafka = KafkaConfig::default();
            for (k, v) in props {
                kafka.properties.insert((*k).into(), PropertyValue::Int(*v));
            }
            let c = consumer_config(&kafka, "g");
            assert_eq!(c.get("fetch.max.bytes"), Some(fetch), "{props:?}");
            assert_eq!(c.get("message.max.bytes"), Some(message), "{props:?}");
            if let Err(e) = c.create::<BaseConsumer>() {
                panic!("{props:?}: librdkafka refused the consumer: {e}");
            }
        }
    }
}
