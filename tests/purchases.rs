//! The purchases job against the real broker (issue 13): invoices assembled from purchase
//! lines by a session window, late and invalid lines, cancellations counted in hopping windows
//! over the whole topic, and a restart that rebuilds open invoices.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use anomalyd::config::{Config, StageConfig, StageKind, TimeMode};
use anomalyd::daemon::Daemon;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

/// The test slice of the Online Retail stream file (see tests/data/README.md).
const SLICE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/retail/stream_slice.csv"
);

/// A daemon configuration with no detector and fresh topics for an invoices stage reading
/// `input`.
fn invoices_stage(input: &str, time: TimeMode, gap_s: u64) -> StageConfig {
    StageConfig {
        kind: Some(StageKind::SessionWindow),
        input_topic: input.into(),
        time: Some(time),
        inactivity_gap_s: Some(gap_s),
        output_topic: support::unique("invoices"),
        invalid_topic: Some(support::unique("invalid")),
        late_topic: support::unique("late"),
        dead_letter_topic: support::unique("dead"),
        ..StageConfig::default()
    }
}

fn cancellations_stage(input: &str) -> StageConfig {
    StageConfig {
        kind: Some(StageKind::HoppingWindow),
        input_topic: input.into(),
        time: Some(TimeMode::Event),
        output_topic: support::unique("cancellations"),
        partials_topic: Some(support::unique("partials")),
        late_topic: support::unique("clate"),
        dead_letter_topic: support::unique("cdead"),
        ..StageConfig::default()
    }
}

/// Creates every topic of `stage` (partials with one partition, the others with three).
async fn create_stage_topics(stage: &StageConfig) {
    for t in [
        &stage.output_topic,
        &stage.late_topic,
        &stage.dead_letter_topic,
    ] {
        support::create_topic(t, 3).await;
    }
    if let Some(t) = &stage.invalid_topic {
        support::create_topic(t, 3).await;
    }
    if let Some(t) = &stage.partials_topic {
        support::create_topic(t, 1).await;
    }
}

fn base_config(dir: &Path, group: &str) -> Config {
    let mut config = Config {
        kafka: support::kafka_config(),
        ..Config::default()
    };
    config.kafka.group_id = support::unique(group);
    config.control.socket = dir.join(format!("{}.sock", support::unique("s")));
    config
}

/// The InvoiceNo of a CSV purchase line (its first cell; quotes never occur in it).
fn invoice_no(line: &str) -> &str {
    line.split(',').next().unwrap_or_default()
}

/// Writes `lines` to `topic` in order, keyed by InvoiceNo, each to the partition its key's
/// hash picks among `partitions` (so the test knows where every line went).
async fn produce_lines(topic: &str, partitions: i32, lines: &[String]) {
    let producer: FutureProducer = anomalyd::kafka::producer_config(&support::kafka_config())
        .create()
        .expect("producer");
    let mut pending = Vec::new();
    for line in lines {
        let key = invoice_no(line);
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(line)
            .partition(partition_of(key, partitions));
        pending.push(producer.send_result(record).expect("queued"));
        if pending.len() >= 1000 {
            for p in pending.drain(..) {
                p.await.expect("delivered").expect("acked");
            }
        }
    }
    for p in pending {
        p.await.expect("delivered").expect("acked");
    }
}

/// The test's own partitioner: any fixed function of the key keeps an invoice on one
/// partition.
fn partition_of(key: &str, partitions: i32) -> i32 {
    let h = key
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    (h % partitions as u32) as i32
}

fn json(m: &OwnedMessage) -> Value {
    serde_json::from_slice(m.payload().expect("payload")).expect("json")
}

fn header<'a>(m: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| std::str::from_utf8(h.value?).ok())
}

/// Reads `topic` until it holds `n` records or `timeout` passes.
async fn read_n(topic: &str, n: usize, timeout: Duration) -> Vec<OwnedMessage> {
    support::read_topic(topic, timeout, |got| got.len() >= n).await
}

fn line(invoice: &str, stock: &str, qty: i64, date: &str, price: &str, customer: &str) -> String {
    format!(
        "{invoice},{stock},\"ITEM {stock}, BOXED\",{qty},{date},{price},{customer},United Kingdom"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoices_are_emitted_once_after_the_gap_with_late_invalid_and_bad_lines_set_apart() {
    let dir = tempfile::tempdir().unwrap();
    let input = support::unique("purchases");
    support::create_topic(&input, 3).await;
    let stage = invoices_stage(&input, TimeMode::Processing, 2);
    create_stage_topics(&stage).await;
    let mut config = base_config(dir.path(), "invoices");
    config.stages.insert("invoices".into(), stage.clone());

    // 30 invoices of 3 lines each, interleaved round-robin so every partition holds several
    // invoices open at once; one invalid invoice (empty CustomerID on one line), one
    // cancellation and one line that is not a purchase line.
    let mut lines = Vec::new();
    for l in 0..3 {
        for i in 0..30 {
            let customer = if i == 7 && l == 1 { "" } else { "17850" };
            let price = format!("{}.{:02}", 1 + l, i);
            lines.push(line(
                &format!("5{i:05}"),
                &format!("S{l}"),
                2 + l,
                "7/4/2011 9:05",
                &price,
                customer,
            ));
        }
    }
    lines.push("C599999,D,Discount,-1,7/4/2011 9:06,27.5,14527,United Kingdom".into());
    lines.push("not,a,purchase,line".into());

    let daemon = Daemon::start(config).await.expect("daemon starts");
    produce_lines(&input, 3, &lines).await;

    let invoices = read_n(&stage.output_topic, 29, Duration::from_secs(60)).await;
    let invalid = read_n(
        stage.invalid_topic.as_ref().unwrap(),
        1,
        Duration::from_secs(30),
    )
    .await;
    let dead = read_n(&stage.dead_letter_topic, 1, Duration::from_secs(30)).await;
    assert_eq!(invoices.len(), 29, "29 valid invoices");
    assert_eq!(invalid.len(), 1, "one invalid invoice");
    assert_eq!(
        header(&dead[0], "anomalyd-reason"),
        Some("wrong_field_count")
    );

    let mut seen = BTreeMap::new();
    for m in &invoices {
        let v = json(m);
        let no = v["invoice"].as_str().unwrap().to_owned();
        assert_eq!(m.key(), Some(no.as_bytes()), "keyed by invoice number");
        assert_eq!(v["lines"], 3, "{v}");
        assert_eq!(v["valid"], true);
        assert_eq!(v["closed_by"], "gap");
        assert_eq!(v["features"]["hour"], 9.0);
        assert_eq!(v["features"]["quantity_sum"], 2.0 + 3.0 + 4.0);
        let i: f64 = no[1..].parse().unwrap();
        let (lo, hi) = (1.0 + i / 100.0, 3.0 + i / 100.0);
        assert!(
            (v["features"]["min_unit_price"].as_f64().unwrap() - lo).abs() < 1e-9,
            "{v}"
        );
        assert!(
            (v["features"]["max_unit_price"].as_f64().unwrap() - hi).abs() < 1e-9,
            "{v}"
        );
        assert!(
            (v["features"]["mean_unit_price"].as_f64().unwrap() - (lo + hi) / 2.0).abs() < 1e-9,
            "{v}"
        );
        assert!(seen.insert(no, ()).is_none(), "each invoice once");
    }
    assert!(
        !seen.contains_key("C599999"),
        "a cancellation is not an invoice"
    );
    let bad = json(&invalid[0]);
    assert_eq!(bad["invoice"], "500007");
    assert_eq!(bad["valid"], false);
    assert_eq!(
        bad["invalid_reasons"][0]["reason"], "empty_customer_id",
        "{bad}"
    );

    // A line for an emitted invoice is late: it goes to the late topic, unchanged.
    let late_line = line("500003", "S9", 1, "7/4/2011 9:07", "9.99", "17850");
    produce_lines(&input, 3, std::slice::from_ref(&late_line)).await;
    let late = read_n(&stage.late_topic, 1, Duration::from_secs(30)).await;
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].payload(), Some(late_line.as_bytes()));
    assert_eq!(header(&late[0], "anomalyd-reason"), Some("late"));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let again = read_n(&stage.output_topic, 31, Duration::from_secs(3)).await;
    assert_eq!(again.len(), 29, "no second half-invoice");

    let status = daemon.status();
    let st = &status.stages[0];
    assert_eq!(st.counters.emitted, 29);
    assert_eq!(st.counters.invalid, 1);
    assert_eq!(st.counters.late, 1);
    assert_eq!(st.counters.dead_letters, 1);
    assert_eq!(st.counters.skipped, 1, "the cancellation line");
    assert_eq!(st.counters.open, 0);
    daemon
        .stop(Duration::from_secs(30))
        .await
        .expect("clean stop");
}

/// Every epoch-aligned 8-minute window advancing 1 minute, from the first window containing
/// `first` to the last ending at or before `frontier`, with its count of distinct cancelled
/// invoice numbers among `cancels` (time ms, invoice).
fn brute_force(first: i64, frontier: i64, cancels: &[(i64, String)]) -> BTreeMap<i64, usize> {
    let (size, advance) = (480_000i64, 60_000i64);
    let mut start = first.div_euclid(advance) * advance - size + advance;
    let mut out = BTreeMap::new();
    while start + size <= frontier {
        let n: BTreeSet<&str> = cancels
            .iter()
            .filter(|(t, _)| *t >= start && *t < start + size)
            .map(|(_, k)| k.as_str())
            .collect();
        out.insert(start, n.len());
        start += advance;
    }
    out
}

fn rfc3339_ms(s: &str) -> i64 {
    humantime::parse_rfc3339(s)
        .expect("rfc 3339")
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The slice's lines, their event times and the cancellations among them.
fn slice() -> (Vec<String>, Vec<i64>) {
    let text = std::fs::read_to_string(SLICE).expect("tests/data/retail/stream_slice.csv");
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let times = lines
        .iter()
        .map(|l| {
            let mut r = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(l.as_bytes());
            let rec = r.records().next().unwrap().unwrap();
            anomalyd::stages::time::parse_month_day_year(&rec[4]).expect("slice dates parse")
        })
        .collect();
    (lines, times)
}

/// Runs `instances` daemons with one cancellations stage over the slice and checks the final
/// counts against a brute-force count of the same windows.
async fn cancellations_over_the_slice(instances: usize) {
    let dir = tempfile::tempdir().unwrap();
    let input = support::unique("purchases");
    support::create_topic(&input, 3).await;
    let stage = cancellations_stage(&input);
    create_stage_topics(&stage).await;
    let (lines, times) = slice();
    produce_lines(&input, 3, &lines).await;

    let group = support::unique("cancel");
    let mut daemons = Vec::new();
    for _ in 0..instances {
        let mut config = base_config(dir.path(), "unused");
        config.kafka.group_id = group.clone();
        config.stages.insert("cancellations".into(), stage.clone());
        daemons.push(Daemon::start(config).await.expect("daemon starts"));
    }

    // Each partition's stream time ends at its last line's time; windows are final up to the
    // lowest of them minus the grace.
    let mut last = [i64::MIN; 3];
    let mut cancels = Vec::new();
    for (l, t) in lines.iter().zip(&times) {
        let p = partition_of(invoice_no(l), 3) as usize;
        last[p] = last[p].max(*t);
        if l.starts_with('C') {
            cancels.push((*t, invoice_no(l).to_owned()));
        }
    }
    let frontier = last.iter().min().unwrap() - 60_000;
    let first = *times.iter().min().unwrap();
    let expected = brute_force(first, frontier, &cancels);
    assert!(
        expected.values().any(|&n| n == 0),
        "the slice has empty windows"
    );
    assert!(
        expected.values().any(|&n| n > 0),
        "and windows with cancellations"
    );

    // The output has three partitions: read until every expected window has come.
    let mut starts = BTreeSet::new();
    let got = support::read_topic(&stage.output_topic, Duration::from_secs(120), |got| {
        if let Some(m) = got.last() {
            starts.insert(rfc3339_ms(json(m)["window_start"].as_str().unwrap()));
        }
        expected.keys().all(|s| starts.contains(s))
    })
    .await;
    let mut series = BTreeMap::new();
    for m in &got {
        let v = json(m);
        let start = rfc3339_ms(v["window_start"].as_str().unwrap());
        assert_eq!(
            m.key(),
            Some(v["window_start"].as_str().unwrap().as_bytes())
        );
        assert_eq!(
            rfc3339_ms(v["window_end"].as_str().unwrap()) - start,
            480_000
        );
        let count = v["count"].as_u64().unwrap() as usize;
        if let Some(before) = series.insert(start, count) {
            assert_eq!(before, count, "a repeated window has the same count");
        }
    }
    let emitted: BTreeMap<i64, usize> = series
        .into_iter()
        .filter(|(s, _)| s + 480_000 <= frontier)
        .collect();
    assert_eq!(
        emitted.keys().next(),
        expected.keys().next(),
        "the series starts at the first window of the first line"
    );
    let differ: Vec<_> = expected
        .iter()
        .filter(|(s, n)| emitted.get(s) != Some(n))
        .take(5)
        .collect();
    assert!(
        differ.is_empty() && emitted.len() == expected.len(),
        "{} windows expected, {} emitted; first differences (start, expected): {differ:?}",
        expected.len(),
        emitted.len()
    );
    for d in daemons {
        d.stop(Duration::from_secs(30)).await.expect("clean stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_counts_equal_a_brute_force_count_zero_windows_included() {
    cancellations_over_the_slice(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_give_one_correct_series() {
    cancellations_over_the_slice(2).await;
}
