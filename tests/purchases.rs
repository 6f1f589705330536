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
    // Anything more would come within a gap or two; wait for it (10 s) rather than for a
    // fixed short read that a loaded machine could cut short.
    let again = read_n(&stage.output_topic, 30, Duration::from_secs(10)).await;
    assert_eq!(again.len(), 29, "no second half-invoice");

    let status = daemon.status();
    let st = &status.stages[0];
    assert_eq!(st.counters.emitted, 29);
    assert_eq!(st.counters.invalid, 1);
    assert_eq!(st.counters.late, 1);
    assert_eq!(st.counters.dead_letters, 1);
    assert_eq!(st.counters.skipped, 1, "the cancellation line");
    assert_eq!(st.counters.open, 0);
    // Nothing open: every partition's safe offset is at its end.
    daemon.refresh_lag().await;
    let lag = &daemon.status().stages[0].lag;
    assert_eq!(lag.len(), 3, "{lag:?}");
    assert!(lag.iter().all(|p| p.lag == Some(0)), "{lag:?}");
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
///
/// With `restart`, one instance reads the first half, emits what it can and stops; then the
/// rest is written and a new instance carries on: its combiner re-reads partials of windows
/// already final and must not emit any of them again with another count.
async fn cancellations_over_the_slice(instances: usize, restart: bool) {
    let dir = tempfile::tempdir().unwrap();
    let input = support::unique("purchases");
    support::create_topic(&input, 3).await;
    let stage = cancellations_stage(&input);
    create_stage_topics(&stage).await;
    let (lines, times) = slice();
    let group = support::unique("cancel");
    let config = || {
        let mut config = base_config(dir.path(), "unused");
        config.kafka.group_id = group.clone();
        config.stages.insert("cancellations".into(), stage.clone());
        config
    };
    if restart {
        let half = lines.len() / 2;
        produce_lines(&input, 3, &lines[..half]).await;
        let first = Daemon::start(config()).await.expect("daemon starts");
        let some = read_n(&stage.output_topic, 100, Duration::from_secs(60)).await;
        assert!(some.len() >= 100, "the first instance emitted windows");
        first
            .stop(Duration::from_secs(30))
            .await
            .expect("clean stop");
        produce_lines(&input, 3, &lines[half..]).await;
    } else {
        produce_lines(&input, 3, &lines).await;
    }
    let mut daemons = Vec::new();
    for _ in 0..instances {
        daemons.push(Daemon::start(config()).await.expect("daemon starts"));
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
    cancellations_over_the_slice(1, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_combiner_carries_on_without_emitting_a_window_twice() {
    cancellations_over_the_slice(1, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_give_one_correct_series() {
    cancellations_over_the_slice(2, false).await;
}

/// Event-time settings of the crash and end-to-end tests: the defaults.
const GAP_MS: i64 = 120_000;
const GRACE_MS: i64 = 60_000;

/// The slice's invoices (cancellations left out) that close by the end of the slice in event
/// time: InvoiceNo -> line count. Lines of one invoice are contiguous and within a minute in
/// the data, so a session is exactly an invoice's lines.
fn closable_invoices(lines: &[String], times: &[i64]) -> BTreeMap<String, usize> {
    let mut last_of_partition = [i64::MIN; 3];
    let mut invoices: BTreeMap<String, (usize, i64, usize)> = BTreeMap::new();
    for (l, t) in lines.iter().zip(times) {
        let key = invoice_no(l);
        let p = partition_of(key, 3) as usize;
        last_of_partition[p] = last_of_partition[p].max(*t);
        if key.starts_with('C') {
            continue;
        }
        let e = invoices.entry(key.to_owned()).or_insert((0, *t, p));
        e.0 += 1;
        e.1 = e.1.max(*t);
    }
    invoices
        .into_iter()
        .filter(|(_, (_, last, p))| last + GAP_MS + GRACE_MS <= last_of_partition[*p])
        .map(|(k, (n, _, _))| (k, n))
        .collect()
}

/// Reads the invoices (valid and invalid) of `stage` until every invoice of `expected` has
/// come: InvoiceNo -> every copy's line count.
async fn read_invoices(
    stage: &StageConfig,
    expected: &BTreeMap<String, usize>,
    timeout: Duration,
) -> BTreeMap<String, Vec<u64>> {
    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for topic in [&stage.output_topic, stage.invalid_topic.as_ref().unwrap()] {
        let msgs = support::read_topic(topic, Duration::from_secs(5), |_| false).await;
        for m in &msgs {
            let v = json(m);
            got.entry(v["invoice"].as_str().unwrap().to_owned())
                .or_default()
                .push(v["lines"].as_u64().unwrap());
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    while !expected.keys().all(|k| got.contains_key(k)) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        got.clear();
        for topic in [&stage.output_topic, stage.invalid_topic.as_ref().unwrap()] {
            let msgs = support::read_topic(topic, Duration::from_secs(3), |_| false).await;
            for m in &msgs {
                let v = json(m);
                got.entry(v["invoice"].as_str().unwrap().to_owned())
                    .or_default()
                    .push(v["lines"].as_u64().unwrap());
            }
        }
    }
    got
}

fn start_binary(config: &Path, log: &Path) -> support::Reaper {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_anomalyd"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ANOMALYD_")) {
        cmd.env_remove(k);
    }
    cmd.args(["run", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .map(support::Reaper)
        .expect("start anomalyd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_mid_invoice_then_a_restart_emits_every_invoice_whole() {
    let dir = tempfile::tempdir().unwrap();
    let input = support::unique("purchases");
    support::create_topic(&input, 3).await;
    let stage = invoices_stage(&input, TimeMode::Event, GAP_MS as u64 / 1000);
    create_stage_topics(&stage).await;
    let mut config = base_config(dir.path(), "crash");
    config.stages.insert("invoices".into(), stage.clone());
    let path = dir.path().join("anomalyd.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();

    let (lines, times) = slice();
    let expected = closable_invoices(&lines, &times);
    // Split the slice inside an invoice: its first lines before the kill, the rest after.
    let cut = (lines.len() / 2..lines.len() - 1)
        .find(|&i| invoice_no(&lines[i]) == invoice_no(&lines[i + 1]) && !lines[i].starts_with('C'))
        .expect("an invoice of several lines in the second half")
        + 1;
    let split = invoice_no(&lines[cut]).to_owned();
    produce_lines(&input, 3, &lines[..cut]).await;

    let mut first = start_binary(&path, &dir.path().join("first.log"));
    // Wait until the first process has emitted what it can and stands still with invoices
    // open (among them the one cut in two).
    let mut before = 0;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let n = support::read_topic(&stage.output_topic, Duration::from_secs(2), |_| false)
            .await
            .len();
        if n > 0 && n == before {
            break;
        }
        before = n;
    }
    assert!(
        before > 0,
        "the first process emitted invoices before the kill; log:\n{}",
        std::fs::read_to_string(dir.path().join("first.log")).unwrap_or_default()
    );
    first.kill().expect("SIGKILL");
    first.wait().unwrap();

    produce_lines(&input, 3, &lines[cut..]).await;
    let mut second = start_binary(&path, &dir.path().join("second.log"));
    let got = read_invoices(&stage, &expected, Duration::from_secs(120)).await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status();
    let exit = second.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("second.log")).unwrap_or_default();

    let missing: Vec<&String> = expected.keys().filter(|k| !got.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} invoices missing, e.g. {:?}; log:\n{log}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let mut duplicates = 0;
    for (k, n) in &expected {
        let copies = &got[k];
        assert!(
            copies.iter().all(|c| *c as usize == *n),
            "invoice {k} has {n} lines but was emitted with {copies:?} (split)"
        );
        duplicates += copies.len() - 1;
    }
    assert!(
        got.keys().all(|k| expected.contains_key(k)),
        "only closable invoices are emitted"
    );
    assert_eq!(
        got[&split].len(),
        1,
        "the invoice cut by the kill is emitted once, whole"
    );
    println!(
        "purchases crash test: {} invoices, {} emitted before the kill, {duplicates} repeated after the restart",
        expected.len(),
        before
    );
    assert_eq!(exit.code(), Some(0), "graceful stop; log:\n{log}");
}

/// Trains `kind` on the train slice into `out` with a threshold the slice allows.
fn train_slice_model(kind: &str, out: &Path) {
    let train = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/retail/train_slice.csv"
    );
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_anomalyd"))
        .args([
            "train",
            "--kind",
            kind,
            "--format",
            "purchases",
            "--input",
            train,
        ])
        .args(["--threshold", "top:15", "--seed", "7", "--out"])
        .arg(out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("train");
    assert!(status.success(), "train {kind}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_the_anomaly_topics_hold_what_offline_scoring_flags() {
    let dir = tempfile::tempdir().unwrap();
    let input = support::unique("purchases");
    support::create_topic(&input, 3).await;
    let stage = invoices_stage(&input, TimeMode::Event, GAP_MS as u64 / 1000);
    create_stage_topics(&stage).await;
    let mut config = base_config(dir.path(), "e2e");
    config.stages.insert("invoices".into(), stage.clone());
    let pointers: Vec<String> = anomalyd::stages::aggregate::invoice::FEATURE_NAMES
        .iter()
        .map(|f| format!("/features/{f}"))
        .collect();
    let mut models = Vec::new();
    for (name, kind) in [("kmeans", "kmeans"), ("bisecting", "bisecting_kmeans")] {
        let model = dir.path().join(format!("{name}.model"));
        train_slice_model(kind, &model);
        let d = anomalyd::config::DetectorConfig {
            input_topic: stage.output_topic.clone(),
            features: anomalyd::config::FeatureSpec::Pointers(pointers.clone()),
            model: Some(model.clone()),
            output_topic: support::unique(&format!("anomalies-{name}")),
            dead_letter_topic: support::unique("dl"),
            ..anomalyd::config::DetectorConfig::default()
        };
        support::create_topic(&d.output_topic, 3).await;
        support::create_topic(&d.dead_letter_topic, 3).await;
        models.push((name, model, d.output_topic.clone()));
        config.detectors.insert(name.into(), d);
    }

    let (lines, times) = slice();
    let expected = closable_invoices(&lines, &times);
    produce_lines(&input, 3, &lines).await;
    let daemon = Daemon::start(config).await.expect("daemon starts");
    let got = read_invoices(&stage, &expected, Duration::from_secs(120)).await;
    assert_eq!(got.len(), expected.len(), "every closable invoice");
    assert!(got.values().all(|c| c.len() == 1), "each emitted once");

    // Offline: the same models on the same invoices' features.
    let valid = support::read_topic(&stage.output_topic, Duration::from_secs(5), |_| false).await;
    for (name, model, topic) in &models {
        let m = anomalyd::detect::model::LoadedModel::load(model).expect("model");
        let flagged: BTreeSet<String> = valid
            .iter()
            .map(json)
            .filter(|v| {
                let x: Vec<f64> = anomalyd::stages::aggregate::invoice::FEATURE_NAMES
                    .iter()
                    .map(|f| v["features"][f].as_f64().unwrap())
                    .collect();
                m.scorer().decision(m.scorer().score(&x)) < 0.0
            })
            .map(|v| v["invoice"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            !flagged.is_empty(),
            "{name} flags some invoices of the slice"
        );
        let mut seen = BTreeSet::new();
        let anomalies = support::read_topic(topic, Duration::from_secs(60), |got| {
            if let Some(m) = got.last() {
                seen.insert(String::from_utf8(m.key().unwrap().to_vec()).unwrap());
            }
            seen.len() >= flagged.len()
        })
        .await;
        // Every expected anomaly is in; an unexpected one would follow within seconds.
        let more = support::read_topic(topic, Duration::from_secs(10), |got| {
            got.len() > flagged.len()
        })
        .await;
        let keys: BTreeSet<String> = more
            .iter()
            .map(|m| String::from_utf8(m.key().unwrap().to_vec()).unwrap())
            .collect();
        assert_eq!(
            keys, flagged,
            "{name}: the anomalies are exactly the invoices flagged offline"
        );
        assert_eq!(more.len(), flagged.len(), "{name}: each once");
        let a = json(&anomalies[0]);
        assert_eq!(a["anomalyd"]["detector"], *name);
        assert!(
            a["features"]["mean_unit_price"].is_number(),
            "the invoice is kept: {a}"
        );
        println!(
            "purchases end to end: {name} flags {} of {} invoices",
            flagged.len(),
            valid.len()
        );
    }
    daemon
        .stop(Duration::from_secs(30))
        .await
        .expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partials_topic_of_several_partitions_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let input = support::unique("purchases");
    support::create_topic(&input, 3).await;
    let stage = cancellations_stage(&input);
    for t in [
        &stage.output_topic,
        &stage.late_topic,
        &stage.dead_letter_topic,
    ] {
        support::create_topic(t, 3).await;
    }
    support::create_topic(stage.partials_topic.as_ref().unwrap(), 3).await;
    let mut config = base_config(dir.path(), "partials");
    config.stages.insert("cancellations".into(), stage.clone());
    let Err(e) = Daemon::start(config).await else {
        panic!("a partials topic of 3 partitions must be refused");
    };
    assert_eq!(e.exit_code(), 78, "{e}");
    let text = e.to_string();
    assert!(
        text.starts_with("stages.cancellations.partials_topic: ")
            && text.contains("has 3 partitions"),
        "{text}"
    );
}
