//! The anomaly store on PostgreSQL, against the real server `scripts/test` starts
//! (`PG_TEST_URL`, scripts/pg) and the real broker; each test has a database of its own.
//!
//! The backend's semantics (duplicates, filters, counts, retention, schema version, several
//! instances migrating at once); a daemon storing every anomaly exactly once, also across a
//! kill -9 during ingest; retention in the daemon; a database that goes down and comes back
//! (health WARNING, detection goes on, every row arrives once); `anomalyd query` on it; and
//! the clear errors of a bad URL, a password in the URL and an unreachable database.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anomalyd::config::Config;
use anomalyd::sinks::store::postgres::{PostgresStore, SCHEMA_VERSION};
use anomalyd::sinks::store::row::{At, Row};
use anomalyd::sinks::store::{
    Filter, Inserted, Store, StoreBackend, StoreConfig, StoreError, StoredRow,
};
use support::store::{
    SEED, on_thread, pg_database, pg_password_file, query_output, settle, start, status, stop,
};

/// The store config of a fresh database, password from the file.
fn pg_config(url: &str) -> StoreConfig {
    StoreConfig {
        backend: StoreBackend::Postgres,
        url: Some(url.to_owned()),
        password_file: Some(pg_password_file()),
        ..StoreConfig::default()
    }
}

fn all() -> Filter {
    Filter {
        limit: usize::MAX >> 1,
        ..Filter::default()
    }
}

/// Every row of `topic` as (topic, partition, offset); empty while the database cannot be
/// read (the schema not made yet, the server down).
fn stored(store: &StoreConfig, topic: &str) -> Vec<(String, i32, i64)> {
    let store = store.clone();
    let topic = topic.to_owned();
    on_thread(move || {
        let Ok(Some(s)) = PostgresStore::open_for_query(&store) else {
            return Vec::new();
        };
        s.select(&all())
            .map(|rows| {
                rows.into_iter()
                    .filter(|r| r.topic == topic)
                    .map(|r| (r.topic, r.partition, r.offset))
                    .collect()
            })
            .unwrap_or_default()
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A sensors anomaly record, as the rules detector writes it.
fn record(sensor: &str, temperature: &str) -> String {
    format!(
        r#"{{"sensor_id":"{sensor}","temperature":{temperature},"on":true,"big":1e400,"anomalyd":{{"detector":"sensors","score":1.0,"decision":-1.0,"model":{{"id":"abc","kind":"rules"}},"source":{{"topic":"sensor-data","partition":0,"offset":7}},"detected_at":"2026-03-01T09:00:05.123Z","explanation":[{{"rule":"hot"}},{{"rule":"high_pressure"}}],"layout":"inline"}}}}"#
    )
}

fn row(detector: &str, offset: i64, event_time_ms: i64, key: &str, decision: f64) -> Row {
    let text = record("s-1", "41.5");
    let mut r = Row::parse(
        At {
            topic: "anomalies",
            partition: (offset % 2) as i32,
            offset,
            timestamp_ms: event_time_ms,
        },
        Some(key.as_bytes()),
        text.as_bytes(),
        None,
    )
    .unwrap();
    r.detector = detector.into();
    r.decision = decision;
    r
}

/// What the SQLite backend's unit tests check, on PostgreSQL: the same semantics.
#[test]
fn the_backend_stores_once_filters_counts_and_expires_like_sqlite() {
    let config = pg_config(&pg_database("semantics"));
    on_thread(move || {
        // Not made yet: a query says there is no store (exit 66), and makes nothing.
        assert!(PostgresStore::open_for_query(&config).unwrap().is_none());
        let mut s = PostgresStore::open(&config).unwrap();
        assert_eq!(s.version().unwrap(), SCHEMA_VERSION);

        let rows: Vec<Row> = (0..10).map(|i| row("a", i, 1000 * i, "k", -1.0)).collect();
        assert_eq!(
            s.insert(&rows).unwrap(),
            Inserted {
                stored: 10,
                duplicates: 0
            }
        );
        let more: Vec<Row> = (5..15).map(|i| row("a", i, 1000 * i, "k", -1.0)).collect();
        assert_eq!(
            s.insert(&more).unwrap(),
            Inserted {
                stored: 5,
                duplicates: 5
            }
        );
        assert_eq!(s.counts_by_detector().unwrap(), [("a".to_owned(), 15)]);
        let got: Vec<StoredRow> = s.select(&all()).unwrap();
        assert_eq!(got.len(), 15);
        assert_eq!(got[0].offset, 14, "newest first");
        assert_eq!(got[0].event_time_ms, 14_000);
        assert_eq!(got[0].detected_at_ms, 1_772_355_605_123);
        assert_eq!(got[0].record, record("s-1", "41.5"), "the record as read");
        assert_eq!(got[0].event_time_source, "kafka");
        assert_eq!(got[0].rules, "hot,high_pressure");
        assert_eq!(got[0].key.as_deref(), Some("k"));
        // One row by its place on the topic, and the detectors with rows (the web view's).
        let one = s
            .row(&got[3].topic, got[3].partition, got[3].offset)
            .unwrap();
        assert_eq!(one.as_ref(), Some(&got[3]));
        assert_eq!(s.row("anomalies", 7, 99).unwrap(), None);
        s.insert(&[
            row("b", 500, -5000, "k", -1.0),
            row("c", 501, -5000, "k", -1.0),
        ])
        .unwrap();
        assert_eq!(s.detectors().unwrap(), ["a", "b", "c"]);
        assert_eq!(s.delete_before(-4000).unwrap(), 2);
        assert_eq!(s.detectors().unwrap(), ["a"]);

        // Retention.
        assert_eq!(s.delete_before(4000).unwrap(), 4);
        assert_eq!(s.delete_before(4000).unwrap(), 0);
        assert_eq!(
            s.select(&all()).unwrap().last().unwrap().event_time_ms,
            4000
        );
        assert_eq!(s.delete_before(i64::MAX).unwrap(), 11);

        // Filters.
        let mut rows = Vec::new();
        for i in 0..20 {
            let det = if i % 2 == 0 { "even" } else { "odd" };
            let key = format!("k{}", i % 5);
            let decision = if i % 4 == 0 { 0.5 } else { -0.5 };
            rows.push(row(det, 100 + i, 60_000 * i, &key, decision));
        }
        let mut other = row("odd", 200, 60_000 * 3, "k9", -0.5);
        other.record = record("s-2", "40");
        rows.push(other);
        s.insert(&rows).unwrap();
        let n = |f: Filter| s.select(&Filter { limit: 1000, ..f }).unwrap().len();
        assert_eq!(n(Filter::default()), 21);
        let det = |d: &str| Filter {
            detector: Some(d.into()),
            ..Filter::default()
        };
        assert_eq!(n(det("even")), 10);
        let key = |k: &str| Filter {
            key: Some(k.into()),
            ..Filter::default()
        };
        assert_eq!(n(key("k9")), 1);
        assert_eq!(n(key("k1")), 4);
        let range = Filter {
            since_ms: Some(60_000 * 10),
            until_ms: Some(60_000 * 15),
            ..Filter::default()
        };
        assert_eq!(n(range), 5, "[since, until)");
        let anomalies = Filter {
            anomalies_only: true,
            ..Filter::default()
        };
        assert_eq!(n(anomalies), 16);
        let w = |f: &str, v: &str| Filter {
            wheres: vec![(f.into(), v.into())],
            ..Filter::default()
        };
        assert_eq!(n(w("sensor_id", "s-2")), 1);
        assert_eq!(n(w("sensor_id", "s-1")), 20);
        assert_eq!(n(w("temperature", "40.0")), 1, "numbers compare as numbers");
        assert_eq!(n(w("temperature", "4e1")), 1, "however written");
        assert_eq!(n(w("temperature", "41.5")), 20);
        assert_eq!(n(w("big", "1e400")), 21, "beyond a double");
        assert_eq!(n(w("on", "true")), 21, "booleans as written");
        assert_eq!(n(w("anomalyd.model.kind", "rules")), 21, "nested fields");
        assert_eq!(n(w("anomalyd.model", "rules")), 0, "an object is no string");
        assert_eq!(n(w("nothing", "x")), 0);
        assert_eq!(n(w("sensor_id", "x' OR 1=1 --")), 0);
        assert_eq!(n(w("sensor_id\" OR 1=1 --", "s-1")), 0);
        let both = Filter {
            detector: Some("odd".into()),
            key: Some("k3".into()),
            anomalies_only: true,
            ..Filter::default()
        };
        assert_eq!(n(both), 2);
        let three = Filter {
            limit: 3,
            ..Filter::default()
        };
        assert_eq!(s.select(&three).unwrap().len(), 3);

        // Counts per interval, epoch-aligned, also before 1970.
        s.delete_before(i64::MAX).unwrap();
        let rows: Vec<Row> = (0..10)
            .map(|i| row("a", 300 + i, 30_000 * i, "k", -1.0))
            .collect();
        s.insert(&rows).unwrap();
        let by_minute = s.count_by(&Filter::default(), 60_000).unwrap();
        assert_eq!(
            by_minute,
            [
                (0, 2),
                (60_000, 2),
                (120_000, 2),
                (180_000, 2),
                (240_000, 2)
            ]
        );
        let f = Filter {
            since_ms: Some(60_000),
            until_ms: Some(180_000),
            ..Filter::default()
        };
        assert_eq!(s.count_by(&f, 120_000).unwrap(), [(0, 2), (120_000, 2)]);
        s.insert(&[row("a", 399, -30_000, "k", -1.0)]).unwrap();
        assert_eq!(
            s.count_by(&Filter::default(), 60_000).unwrap()[0],
            (-60_000, 1)
        );
        // A NUL in a key (PostgreSQL's text cannot hold one) is replaced, not an error that
        // would fail its batch at every retry.
        s.insert(&[row("a", 398, 0, "a\0b", -1.0)]).unwrap();
        let nul = Filter {
            key: Some("a\u{FFFD}b".into()),
            ..all()
        };
        assert_eq!(s.select(&nul).unwrap().len(), 1);
        // A time beyond timestamptz's range is clamped, not an error that stops the store.
        s.insert(&[row("a", 400, i64::MIN, "k", -1.0)]).unwrap();
        let old = Filter {
            until_ms: Some(i64::MIN),
            ..all()
        };
        assert_eq!(s.select(&old).unwrap().len(), 0);
        drop(s);

        // A reader sees the rows; a newer schema is refused by writers and readers.
        let r = PostgresStore::open_for_query(&config).unwrap().unwrap();
        assert_eq!(r.select(&all()).unwrap().len(), 13);
        drop(r);
        let url = config.url.clone().unwrap();
        let admin = PostgresStore::open(&config).unwrap();
        drop(admin);
        set_version(&url, SCHEMA_VERSION + 1);
        let e = PostgresStore::open(&config).unwrap_err();
        assert!(matches!(e, StoreError::Version { found: 2, .. }), "{e}");
        assert!(PostgresStore::open_for_query(&config).is_err());
    });
}

/// Sets the schema version row of the database at `url`.
fn set_version(url: &str, version: i32) {
    let password = std::fs::read_to_string(pg_password_file()).unwrap();
    let mut c: postgres::Config = url.parse().unwrap();
    c.password(password.trim_end());
    let mut client = c.connect(postgres::NoTls).unwrap();
    client
        .execute("UPDATE anomalyd_schema SET version = $1", &[&version])
        .unwrap();
}

/// Several instances sharing one database start together: the advisory lock lets one make
/// the schema and the others find it; they all write, and each row is there once.
#[test]
fn instances_starting_together_share_one_schema() {
    let config = pg_config(&pg_database("shared"));
    on_thread(move || {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..6)
                .map(|i| {
                    let config = config.clone();
                    scope.spawn(move || {
                        let mut s = PostgresStore::open(&config).expect("open");
                        // Overlapping offsets: instance i writes 0..50 shifted by 10 i.
                        let rows: Vec<Row> = (0..50)
                            .map(|o| row("a", 10 * i + o, 1000, "k", -1.0))
                            .collect();
                        s.insert(&rows).expect("insert").stored
                    })
                })
                .collect();
            let stored: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
            assert_eq!(stored, 100, "offsets 0..100, each once");
        });
        let s = PostgresStore::open(&config).unwrap();
        assert_eq!(s.counts_by_detector().unwrap(), [("a".to_owned(), 100)]);
    });
}

/// A daemon config on a fresh database; `batch_max` rows at most per transaction.
async fn setup(dir: &Path, batch_max: usize) -> (Config, PathBuf) {
    let model = support::seed_model(dir);
    let mut config = support::pipeline_config(dir, &model).await;
    config.store = Some(StoreConfig {
        batch_max,
        ..pg_config(&pg_database("daemon"))
    });
    let path = dir.join("anomalyd.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    (config, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_run_stores_every_anomaly_once_expires_old_rows_and_query_reads_them() {
    const N: u64 = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let (mut config, path) = setup(dir.path(), 500).await;
    // The password from the environment this time (the file in the other tests).
    let password = std::fs::read_to_string(pg_password_file()).unwrap();
    {
        let store = config.store.as_mut().unwrap();
        store.password_file = None;
        store.password_env = Some("STORE_TEST_PG_PASSWORD".into());
    }
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let env = [("STORE_TEST_PG_PASSWORD", password.trim_end())];
    // The test reads with the password file.
    let store = pg_config(config.store.as_ref().unwrap().url.as_deref().unwrap());
    let topic = support::det(&config).output_topic.clone();

    // Rows of another topic already there: two older than retain_days (30), two recent.
    let day = 86_400_000;
    let old_and_new: Vec<Row> = [40 * day, 31 * day, 29 * day, day]
        .iter()
        .enumerate()
        .map(|(i, age)| {
            let mut r = row("old", i as i64, now_ms() - age, "k", -1.0);
            r.topic = "elsewhere".into();
            r
        })
        .collect();
    let seed = store.clone();
    on_thread(move || {
        PostgresStore::open(&seed)
            .unwrap()
            .insert(&old_and_new)
            .unwrap()
    });
    support::produce_generated(&support::det(&config).input_topic, SEED, 0..N).await;

    let log = dir.path().join("run.log");
    let daemon = start(&path, &log, &env);
    let on_topic = settle(
        &config,
        || stored(&store, &topic),
        N,
        &log,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(stored(&store, &topic).len(), on_topic.len());
    let counts = {
        let store = store.clone();
        on_thread(move || {
            PostgresStore::open_for_query(&store)
                .unwrap()
                .unwrap()
                .counts_by_detector()
                .unwrap()
        })
    };
    assert_eq!(
        counts,
        [
            ("old".to_owned(), 2),
            (support::DETECTOR.to_owned(), on_topic.len() as u64)
        ],
        "retention ran at start: the two rows older than 30 days are gone, the others stay"
    );

    // `anomalyd query` on the same config (the password from the environment).
    let q = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_anomalyd"))
            .envs(env)
            .args(["query", "--config"])
            .arg(&path)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let lines = q(&["--json", "--limit", "7", "--anomalies-only"]);
    assert_eq!(lines.lines().count(), 7, "{lines}");
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["detector"], support::DETECTOR);
        assert!(v["decision"].as_f64().unwrap() < 0.0);
        assert_eq!(v["record"]["anomalyd"]["detector"], support::DETECTOR);
    }
    let one: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    let id = one["record"]["id"].to_string();
    let by_id = q(&["--json", "--where", &format!("id={id}")]);
    assert!(by_id.lines().count() >= 1, "{by_id}");
    for line in by_id.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["record"]["id"].to_string(), id);
    }
    let table = q(&[
        "--detector",
        support::DETECTOR,
        "--since",
        "1h",
        "--limit",
        "3",
    ]);
    assert_eq!(table.lines().count(), 4, "a header and 3 rows:\n{table}");
    assert!(table.starts_with("EVENT_TIME"), "{table}");
    let counts = q(&["--detector", support::DETECTOR, "--count", "--by", "1d"]);
    let total: u64 = counts
        .lines()
        .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, on_topic.len() as u64, "{counts}");
    assert_eq!(q(&["--detector", "nobody"]).lines().count(), 1);
    assert_eq!(q(&["--key", "no-such-key", "--json"]), "");

    // /status names the backend and the URL, and no secret.
    let status = status(&path);
    let s = &status["store"];
    assert_eq!(s["backend"], "postgres");
    assert_eq!(s["path"], store.url.clone().unwrap());
    assert_eq!(s["counters"]["rows_stored"], on_topic.len() as u64, "{s}");
    assert_eq!(s["counters"]["rows_expired"], 2, "{s}");
    assert_eq!(s["counters"]["failing"], false);
    assert!(!status.to_string().contains(password.trim_end()));
    stop(daemon);
    assert!(
        !std::fs::read_to_string(&log)
            .unwrap()
            .contains(password.trim_end())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_ingest_then_restarted_no_row_is_missing_or_twice() {
    const N: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    // Small batches, so that the kill lands between transactions with rows still to come.
    let (config, path) = setup(dir.path(), 50).await;
    let store = config.store.clone().unwrap();
    let topic = support::det(&config).output_topic.clone();
    support::produce_generated(&support::det(&config).input_topic, SEED, 0..N).await;

    let first_log = dir.path().join("first.log");
    let mut first = start(&path, &first_log, &[]);
    let some = support::wait_until(Duration::from_secs(120), || {
        stored(&store, &topic).len() >= 200
    })
    .await;
    first.kill().expect("SIGKILL");
    first.wait().unwrap();
    let before = stored(&store, &topic).len();
    assert!(
        some,
        "nothing stored before the kill; log:\n{}",
        std::fs::read_to_string(&first_log).unwrap_or_default()
    );

    let second_log = dir.path().join("second.log");
    let second = start(&path, &second_log, &[]);
    let on_topic = settle(
        &config,
        || stored(&store, &topic),
        N,
        &second_log,
        Duration::from_secs(120),
    )
    .await;
    let rows = stored(&store, &topic);
    println!(
        "postgres store crash test: {before} rows before the kill, {} after the restart, {} records on the topic",
        rows.len(),
        on_topic.len()
    );
    assert!(before < rows.len(), "the kill landed during ingest");
    assert_eq!(rows.len(), on_topic.len());
    assert_eq!(rows.into_iter().collect::<BTreeSet<_>>(), on_topic);
    stop(second);
}

/// `scripts/pg` on a folder of its own: a cluster this test may stop without harming others.
fn own_cluster(dir: &Path, command: &str) -> String {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg"))
        .arg(command)
        .env("PG_DIR", dir)
        .env_remove("PG_PORT")
        .output()
        .expect("run scripts/pg");
    assert!(
        out.status.success(),
        "scripts/pg {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The database goes down during a run: health says WARNING and /status that the store
/// fails, detection goes on (the anomalies reach their topic), and once the database is back
/// every row arrives, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_is_down_warns_detection_goes_on_and_nothing_is_lost() {
    const FIRST: u64 = 2_000;
    const N: u64 = 4_000;
    let dir = tempfile::tempdir().unwrap();
    // scripts/pg runs the server as the `postgres` user when root: open the way to it.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let cluster = dir.path().join("pg");
    let server = own_cluster(&cluster, "start");
    let password_file = PathBuf::from(own_cluster(&cluster, "password-file"));
    let url = support::store::pg_database_on(&server, &password_file, "down");

    let model = support::seed_model(dir.path());
    let mut config = support::pipeline_config(dir.path(), &model).await;
    let store = StoreConfig {
        batch_max: 200,
        password_file: Some(password_file.clone()),
        ..pg_config(&url)
    };
    config.store = Some(store.clone());
    let path = dir.path().join("anomalyd.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let topic = support::det(&config).output_topic.clone();
    let input = support::det(&config).input_topic.clone();

    support::produce_generated(&input, SEED, 0..FIRST).await;
    let log = dir.path().join("run.log");
    let daemon = start(&path, &log, &[]);
    settle(
        &config,
        || stored(&store, &topic),
        FIRST,
        &log,
        Duration::from_secs(120),
    )
    .await;

    own_cluster(&cluster, "stop");
    support::produce_generated(&input, SEED, FIRST..N).await;
    // Detection goes on: every anomaly of all N records reaches the topic.
    let expected = support::expected_anomalies(&model, SEED, 0.2, 0..N);
    let msgs =
        support::read_topic(&topic, Duration::from_secs(180), support::covers(&expected)).await;
    assert!(
        support::ids(&msgs)
            .into_iter()
            .collect::<BTreeSet<_>>()
            .is_superset(&expected),
        "detection stopped with the database; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let mut last = (None, String::new());
    let warned = support::wait_until(Duration::from_secs(60), || {
        last = support::store::health(&path);
        last.0 == Some(1)
    })
    .await;
    assert!(warned, "health while the database is down: {last:?}");
    assert!(last.1.starts_with("WARNING"), "{last:?}");
    let s = &status(&path)["store"];
    assert_eq!(s["counters"]["failing"], true, "{s}");
    let error = s["counters"]["last_error"].as_str().unwrap_or_default();
    let port = server
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    let password = std::fs::read_to_string(&password_file).unwrap();
    assert!(!error.contains(password.trim_end()));
    assert!(!last.1.contains(password.trim_end()));

    own_cluster(&cluster, "start");
    // The supervisor retries the store with backoff (at most 30 s apart).
    let on_topic = settle(
        &config,
        || stored(&store, &topic),
        N,
        &log,
        Duration::from_secs(150),
    )
    .await;
    let rows = stored(&store, &topic);
    assert_eq!(rows.len(), on_topic.len(), "every row once");
    stop(daemon);
    own_cluster(&cluster, "stop");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(password.trim_end()),
        "the log shows the password"
    );
}

/// A bad URL and a password in the URL are config errors (78) naming the key, and never echo
/// the password; an unreachable database, or a wrong password, makes `query` exit 69 naming
/// host:port; a database with no store in it is 66. No broker needed.
#[test]
fn bad_urls_passwords_and_unreachable_databases_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("anomalyd.toml");
    let write = |store: &str| {
        std::fs::write(
            &path,
            format!(
                "[detectors.tx]\ninput_topic = \"in\"\noutput_topic = \"out\"\n\
                 dead_letter_topic = \"dlq\"\n\n[detectors.tx.rules]\nhot = \"x > 1.0\"\n\n\
                 [store]\nbackend = \"postgres\"\n{store}\n"
            ),
        )
        .unwrap()
    };
    let check = || {
        let out = Command::new(env!("CARGO_BIN_EXE_anomalyd"))
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    write("url = \"postgres://anomalyd:hunter2@db.example:5432/anomalies\"");
    for (code, text) in [check(), {
        let (c, o, e) = query_output(&path, &[]);
        (c, o + &e)
    }] {
        assert_eq!(code, Some(78), "{text}");
        assert!(text.contains("store.url"), "{text}");
        assert!(text.contains("must not hold a password"), "{text}");
        assert!(text.contains("anomalyd.toml"), "names the file: {text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
    write("url = \"postgres://anomalyd@db.example:notaport/anomalies\"");
    let (code, text) = check();
    assert_eq!(code, Some(78), "{text}");
    assert!(
        text.contains("store.url") && text.contains("not a PostgreSQL URL"),
        "{text}"
    );
    write("url = \"http://db.example/anomalies\"");
    assert_eq!(check().0, Some(78));

    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    write(&format!(
        "url = \"postgres://anomalyd@127.0.0.1:{port}/anomalies\""
    ));
    assert_eq!(check().0, Some(0), "reachability is not the config check's");
    let (code, _, err) = query_output(&path, &[]);
    assert_eq!(code, Some(69), "{err}");
    assert!(
        err.contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{err}"
    );

    // A wrong password: refused by the server, and not shown.
    let url = pg_database("errors");
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-password-xyz\n").unwrap();
    write(&format!(
        "url = \"{url}\"\npassword_file = \"{}\"",
        wrong.display()
    ));
    let (code, _, err) = query_output(&path, &[]);
    assert_eq!(code, Some(69), "{err}");
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("not-the-password-xyz"), "{err}");
    // An unset variable is a config error naming it.
    write(&format!(
        "url = \"{url}\"\npassword_env = \"STORE_TEST_UNSET_VARIABLE\""
    ));
    let (code, _, err) = query_output(&path, &[]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("STORE_TEST_UNSET_VARIABLE"), "{err}");
    // The right password on a database with no store yet: 66, as a missing SQLite file.
    write(&format!(
        "url = \"{url}\"\npassword_file = \"{}\"",
        pg_password_file().display()
    ));
    let (code, _, err) = query_output(&path, &[]);
    assert_eq!(code, Some(66), "{err}");
    assert!(err.contains("no anomaly store at"), "{err}");
}
