//! `anomalyd replay` and the generator's `replay` profile against the real broker: a small
//! purchases file (a header, a quoted description holding a comma, a cancellation, interleaved
//! invoices, a CRLF line) arrives whole, in file order per key, keyed by InvoiceNo, byte for
//! byte; `--from-line` and `--count` send the lines they name; Ctrl-C prints a line to resume
//! from that loses nothing; a missing topic or file exits 66; a daemon with `[generator] profile
//! = "replay"` writes the file once.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anomalyd::daemon::Daemon;
use rdkafka::message::{Message, OwnedMessage};

const HEADER: &str =
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country";

/// Data lines of Online Retail shape: invoices interleaved, a quoted comma, a `C` cancellation,
/// an empty CustomerID, trailing spaces, and a description with an escaped quote.
const LINES: &[&str] = &[
    "536365,85123A,\"WHITE HANGING HEART, T-LIGHT HOLDER\",6,12/1/2010 8:26,2.55,17850,United Kingdom",
    "536365,71053,WHITE METAL LANTERN,6,12/1/2010 8:26,3.39,17850,United Kingdom",
    "536366,22633,HAND WARMER UNION JACK ,6,12/1/2010 8:28,1.85,17850,United Kingdom",
    "C536379,D,Discount,-1,12/1/2010 9:41,27.5,14527,United Kingdom",
    "536365,84406B,\"CREAM CUPID HEARTS COAT HANGER\",8,12/1/2010 8:26,2.75,17850,United Kingdom",
    "536366,22632,\"HAND WARMER \"\"RED\"\" POLKA DOT\",6,12/1/2010 8:28,1.85,,United Kingdom",
    "536367,84879,ASSORTED COLOUR BIRD ORNAMENT,32,12/1/2010 8:34,1.69,13047,United Kingdom",
    "C536379,D,Discount,-1,12/1/2010 9:41,27.5,14527,United Kingdom",
    "536367,22745,POPPY'S PLAYHOUSE BEDROOM ,6,12/1/2010 8:34,2.1,13047,United Kingdom",
];

/// The binary, run in `cwd` (a directory without anomalyd.toml), without the developer's
/// ANOMALYD_* variables.
fn anomalyd(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anomalyd"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ANOMALYD_")) {
        cmd.env_remove(k);
    }
    cmd.current_dir(cwd);
    cmd
}

fn replay(cwd: &Path, file: &Path, topic: &str, args: &[&str]) -> Output {
    anomalyd(cwd)
        .arg("replay")
        .arg(file)
        .args(["--topic", topic, "--brokers", &support::brokers()])
        .args(args)
        .output()
        .expect("run anomalyd replay")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The purchases file: header, then [`LINES`], the fourth ending in CRLF.
fn purchases_file(dir: &Path) -> PathBuf {
    let mut body = format!("{HEADER}\n");
    for (i, l) in LINES.iter().enumerate() {
        body.push_str(l);
        body.push_str(if i == 3 { "\r\n" } else { "\n" });
    }
    let path = dir.join("purchases.csv");
    std::fs::write(&path, body).unwrap();
    path
}

async fn read_n(topic: &str, n: usize) -> Vec<OwnedMessage> {
    let got = support::read_topic(topic, Duration::from_secs(60), |got| got.len() >= n).await;
    // Give a duplicate, if any, the chance to show up before judging.
    let more = support::read_topic(topic, Duration::from_secs(2), |got| got.len() > n).await;
    assert!(more.len() >= got.len());
    more
}

/// Values by key, in the order they arrived (offset order within each partition).
fn by_key(msgs: &[OwnedMessage]) -> BTreeMap<String, Vec<String>> {
    let mut sorted: Vec<&OwnedMessage> = msgs.iter().collect();
    sorted.sort_by_key(|m| (m.partition(), m.offset()));
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in sorted {
        let key = text(m.key().expect("every line here has a key"));
        out.entry(key)
            .or_default()
            .push(text(m.payload().expect("a value")));
    }
    out
}

/// What `by_key` should give for `lines`: the InvoiceNo (first cell) and the lines, in order.
fn expected_by_key(lines: &[&str]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in lines {
        let key = l.split(',').next().unwrap().to_owned();
        out.entry(key).or_default().push((*l).to_owned());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_arrives_unchanged_in_order_per_invoice() {
    let dir = tempfile::tempdir().unwrap();
    let file = purchases_file(dir.path());
    let topic = support::unique("purchases");
    support::create_topic(&topic, 3).await;
    let out = replay(dir.path(), &file, &topic, &["--pace", "max"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary = text(&out.stderr);
    assert!(
        summary.contains("10 lines read, 9 sent, 9 acknowledged, header skipped: yes, 0 failed"),
        "{summary}"
    );
    let got = read_n(&topic, LINES.len()).await;
    assert_eq!(got.len(), LINES.len(), "each line once, the header never");
    assert_eq!(by_key(&got), expected_by_key(LINES));
    // Byte for byte: the quoted comma and the doubled quotes stay as written.
    let raw: Vec<&[u8]> = got.iter().filter_map(|m| m.payload()).collect();
    assert!(raw.contains(&LINES[5].as_bytes()));
    assert!(
        raw.iter().all(|v| !v.ends_with(b"\r")),
        "CRLF is a terminator"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_line_and_count_send_the_lines_they_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = purchases_file(dir.path());
    let topic = support::unique("purchases-from");
    support::create_topic(&topic, 3).await;
    let out = replay(
        dir.path(),
        &file,
        &topic,
        &["--pace", "max", "--from-line", "4", "--count", "3"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = replay(
        dir.path(),
        &file,
        &topic,
        &[
            "--pace",
            "speedup:100000",
            "--from-line",
            "7",
            "--key-column",
            "1",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let got = read_n(&topic, 6).await;
    assert_eq!(got.len(), 6, "lines 4-6, then 7-9");
    assert_eq!(by_key(&got), expected_by_key(&LINES[3..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_replay_says_where_to_resume_and_loses_nothing() {
    interrupted("-INT", 130).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_replay_says_where_to_resume_too() {
    interrupted("-TERM", 143).await;
}

/// A replay stopped by `signal` exits `code` naming the line to resume from, and resuming
/// there loses nothing.
async fn interrupted(signal: &str, code: i32) {
    const N: usize = 1500;
    let dir = tempfile::tempdir().unwrap();
    // No header: numbered lines, two per invoice, at the original's pace (about 10 s).
    let lines: Vec<String> = (0..N)
        .map(|i| {
            format!(
                "{},X{i},\"A, B\",1,12/1/2010 8:26,1.5,1,UK",
                600_000 + i / 2
            )
        })
        .collect();
    let file = dir.path().join("lines.csv");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let topic = support::unique("purchases-resume");
    support::create_topic(&topic, 3).await;

    let child = anomalyd(dir.path())
        .arg("replay")
        .arg(&file)
        .args(["--topic", &topic, "--brokers", &support::brokers()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kill = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    let resume: usize = err
        .split("resume with --from-line ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no line to resume from: {err}"));
    assert!((2..N).contains(&resume), "{resume}: {err}");

    let out = replay(
        dir.path(),
        &file,
        &topic,
        &["--pace", "max", "--from-line", &resume.to_string()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let got = read_n(&topic, N).await;
    // Every line at least once, and per invoice the first arrivals in file order.
    for (key, values) in by_key(&got) {
        let mut firsts: Vec<&String> = Vec::new();
        for v in &values {
            if !firsts.contains(&v) {
                firsts.push(v);
            }
        }
        let i: usize = key.parse::<usize>().unwrap() - 600_000;
        let want: Vec<&String> = lines[2 * i..(2 * i + 2).min(N)].iter().collect();
        assert_eq!(firsts, want, "invoice {key}");
    }
    let distinct: std::collections::BTreeSet<&[u8]> =
        got.iter().filter_map(|m| m.payload()).collect();
    assert_eq!(distinct.len(), N, "every line arrived");
    assert!(got.len() >= N);
    assert!(
        got.len() - N <= 5,
        "only lines in flight at the interrupt repeat: {} extra",
        got.len() - N
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topic_or_file_exits_66() {
    let dir = tempfile::tempdir().unwrap();
    let file = purchases_file(dir.path());
    let out = replay(dir.path(), &file, &support::unique("no-such-topic"), &[]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no topic"),
        "{}",
        text(&out.stderr)
    );
    let topic = support::unique("purchases-nofile");
    support::create_topic(&topic, 1).await;
    let out = replay(dir.path(), &dir.path().join("nope.csv"), &topic, &[]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("nope.csv"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_generator_replays_the_file_in_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let file = purchases_file(dir.path());
    let model = support::seed_model(dir.path());
    let base = support::pipeline_config(dir.path(), &model).await;
    let topic = support::unique("purchases-daemon");
    support::create_topic(&topic, 3).await;
    let d = support::det(&base);
    let toml = format!(
        "[kafka]\nbrokers = {brokers:?}\ngroup_id = {group:?}\n\n\
         [generator]\nenabled = true\nprofile = \"replay\"\ntopic = {topic:?}\n\
         file = {file:?}\npace = \"max\"\nheader = \"auto\"\nkey_column = \"InvoiceNo\"\n\
         from_line = 2\n\n\
         [detectors.transactions]\ninput_topic = {input:?}\noutput_topic = {output:?}\n\
         dead_letter_topic = {dlq:?}\nmodel = {model:?}\n\n\
         [control]\nsocket = {socket:?}\n",
        brokers = support::brokers(),
        group = base.kafka.group_id,
        file = file.display().to_string(),
        input = d.input_topic,
        output = d.output_topic,
        dlq = d.dead_letter_topic,
        model = model.display().to_string(),
        socket = base.control.socket.display().to_string(),
    );
    let path = dir.path().join("anomalyd.toml");
    std::fs::write(&path, toml).unwrap();
    let config = anomalyd::config::load(&path).expect("the replay profile's keys load");

    let daemon = Daemon::start(config).await.expect("daemon starts");
    let m = daemon.metrics().clone();
    let done = support::wait_until(Duration::from_secs(60), || {
        m.generated.load(Relaxed) >= (LINES.len() - 1) as u64
    })
    .await;
    assert!(done, "only {} lines written", m.generated.load(Relaxed));
    let got = read_n(&topic, LINES.len() - 1).await;
    daemon
        .stop(Duration::from_secs(30))
        .await
        .expect("clean stop");
    assert_eq!(got.len(), LINES.len() - 1, "from line 2, each line once");
    assert_eq!(by_key(&got), expected_by_key(&LINES[1..]));
    assert_eq!(m.generated.load(Relaxed), (LINES.len() - 1) as u64);
}

/// What the generator task does across a supervisor restart: a second run with the same
/// [`Position`] carries on at the first line the first run had not had acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_with_the_same_position_carries_on_where_the_first_stopped() {
    use anomalyd::source::generator::replay::{self, Position, ReplayOptions};
    use tokio_util::sync::CancellationToken;
    const N: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..N)
        .map(|i| {
            format!(
                "{},S{i},\"A, B\",1,12/1/2010 8:26,1.5,1,UK",
                700_000 + i / 3
            )
        })
        .collect();
    let file = dir.path().join("lines.csv");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let topic = support::unique("purchases-position");
    support::create_topic(&topic, 3).await;
    let kafka = support::kafka_config();
    let producer: rdkafka::producer::FutureProducer =
        replay::producer_config(&kafka).create().unwrap();
    // The original's pace: about 2 s for the whole file; stopped after a quarter of it.
    let opts = ReplayOptions::new(file, topic.clone());
    let position = Position::new(1);
    let hidden = indicatif::ProgressBar::hidden();
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stopper.cancel();
    });
    let first = replay::replay(
        &opts,
        &producer,
        &kafka.brokers,
        &position,
        &hidden,
        &|| {},
        stop,
    )
    .await
    .unwrap();
    let resume = first.resume_from.expect("stopped early");
    assert!(first.interrupted && first.error.is_none(), "{first:?}");
    assert!((2..N as u64).contains(&resume), "{first:?}");
    assert_eq!(position.next_line.load(Relaxed), resume);
    assert_eq!(
        first.acknowledged,
        resume - 1,
        "every line before it was acknowledged"
    );

    let second = replay::replay(
        &opts,
        &producer,
        &kafka.brokers,
        &position,
        &hidden,
        &|| {},
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(second.resume_from, None, "{second:?}");
    assert_eq!(position.acknowledged.load(Relaxed), N as u64);
    let got = read_n(&topic, N).await;
    assert_eq!(
        got.len(),
        N,
        "each line once: the stop waited for the lines in flight"
    );
    let want: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(by_key(&got), expected_by_key(&want));
}
