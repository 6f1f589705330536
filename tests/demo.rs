//! `scripts/demo` as a newcomer sees it: run on a terminal (a tmux pane, 120 columns) with its
//! own broker on a free port (`BROKER_PORT`, `BROKER_DIR` in a temp folder) and this build's
//! debug binary (`DEMO_BIN`), left to score for 15 s, then stopped with Ctrl-C.
//!
//! Checks the screen: the status line is there, every line is under 100 columns, each anomaly
//! shown has a reason; and the summary: anomalies never exceed records scored, shares match
//! counts, every anomaly read back has a reason. Needs tmux and tansu (`scripts/test` checks
//! both). With `DEMO_CAPTURE=FILE`, the captured screen and summary are also written there.
//!
//! `scripts/demo purchases` the same way, on the slices of `tests/data/retail` (its
//! `DEMO_RETAIL_DIR` points at an empty folder, so it never reads the data beside the repository), replayed at the
//! `max` pace with a 2 s inactivity gap: invoices, both models' anomalies, invalid invoices and
//! cancellation windows are shown, and the summary's counts agree with each other.
//!
//! `scripts/demo sensors` the same way: anomalies arrive, each an injected fault over a threshold
//! of the rule that fired, the store holds their rows, and the `anomalyd query` commands the
//! screen prints run as printed against the demo's store.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const WIDTH: usize = 100;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

/// `GET path` from the web view at `addr` (plain HTTP/1.0, one request): status and body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the web view");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// The web view the demo printed (`demo: the web view: http://ADDR/`) answers, and its API
/// lists anomalies of `detector`.
fn assert_web_view(screen: &str, addr: &str, detector: &str) {
    assert!(
        screen.contains(&format!("demo: the web view: http://{addr}/")),
        "{screen}"
    );
    let (status, page) = http_get(addr, "/");
    assert_eq!(status, 200, "{page}");
    // The store writes a batch within a second of the anomaly reaching its topic.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = http_get(addr, &format!("/api/anomalies?detector={detector}&limit=5"));
        assert_eq!(status, 200, "{body}");
        let doc: serde_json::Value = serde_json::from_str(&body).expect("JSON from the API");
        if doc["anomalies"].as_array().is_some_and(|a| !a.is_empty()) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {detector} anomaly in the web view's API: {body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A tmux server of its own, killed (with the broker the demo started) when dropped.
struct Session {
    server: String,
    broker_env: Vec<(String, String)>,
}

impl Session {
    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.server)
            .args(args)
            .output()
            .expect("tmux runs (apt-get install tmux)")
    }

    /// The whole pane, history included, wrapped lines joined back.
    fn screen(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", "demo"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends Ctrl-C and returns the screen once the demo has exited, with status 0 and a
    /// summary.
    fn stop(&self) -> String {
        let stopped = self.tmux(&["send-keys", "-t", "demo", "C-c"]);
        assert!(stopped.status.success());
        let end = self.wait_for("demo exited with status", Duration::from_secs(60));
        assert!(end.contains("demo exited with status 0"), "{end}");
        assert!(end.contains("demo: summary"), "no summary:\n{end}");
        end
    }

    fn wait_for(&self, what: &str, within: Duration) -> String {
        self.wait_until(what, within, |screen| screen.contains(what))
    }

    /// The screen once `done` holds for it (`what` names it in the failure).
    fn wait_until(&self, what: &str, within: Duration, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                !screen.contains("demo exited with status"),
                "the demo ended before showing {what:?}:\n{screen}"
            );
            assert!(
                start.elapsed() < within,
                "no {what:?} within {within:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
        let _ = Command::new(repo().join("scripts/broker"))
            .arg("stop")
            .envs(self.broker_env.iter().map(|(k, v)| (k, v)))
            .output();
    }
}

fn count(summary: &str, label: &str) -> u64 {
    let line = summary
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in the summary:\n{summary}"));
    line.trim_start()[label.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("no count on {line:?}"))
}

/// The number before the first `%` of `line`.
fn percent(line: &str) -> f64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .iter()
        .position(|w| *w == "%")
        .and_then(|i| words.get(i.checked_sub(1)?)?.parse().ok())
        .unwrap_or_else(|| panic!("no percentage in {line:?}"))
}

/// Runs `scripts/demo ARGS` in a tmux pane of 120 columns, with its broker on a free port and
/// its broker and state folders in `dir`, this build's binary, and `env` as well.
fn start_demo(dir: &Path, args: &str, env: &[(&str, String)]) -> Session {
    let broker_dir = dir.join("broker");
    let port = free_port().to_string();
    let session = Session {
        server: format!(
            "anomalyd-demo-test-{}-{}",
            std::process::id(),
            if args.is_empty() {
                "transactions"
            } else {
                args
            }
        ),
        broker_env: vec![
            ("BROKER_PORT".to_owned(), port.clone()),
            ("BROKER_DIR".to_owned(), broker_dir.display().to_string()),
        ],
    };
    let extra: String = env.iter().map(|(k, v)| format!(" {k}='{v}'")).collect();
    let command = format!(
        "env BROKER_PORT={port} BROKER_DIR='{}' DEMO_STATE='{}' DEMO_BIN='{}'{extra} '{}' {args}; \
         echo \"demo exited with status $?\"; sleep 3600",
        broker_dir.display(),
        dir.join("state").display(),
        env!("CARGO_BIN_EXE_anomalyd"),
        repo().join("scripts/demo").display(),
    );
    let started = session.tmux(&[
        "new-session",
        "-d",
        "-s",
        "demo",
        "-x",
        "120",
        "-y",
        "50",
        &command,
    ]);
    assert!(started.status.success(), "tmux: {started:?}");
    session
}

fn assert_narrow(screen: &str) {
    for line in screen.lines() {
        assert!(
            line.chars().count() < WIDTH,
            "a line of {} columns: {line:?}\n{screen}",
            line.chars().count()
        );
    }
}

#[test]
fn demo_screen_is_readable_and_its_summary_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("state").join("seed.iforest");
    let session = start_demo(
        dir.path(),
        "",
        &[(
            "ANOMALYD_DETECTORS__TRANSACTIONS__MODEL",
            model.display().to_string(),
        )],
    );

    session.wait_for("demo: scoring live", Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(15));
    let live = session.screen();
    assert_narrow(&live);
    let status = live
        .lines()
        .rev()
        .find(|l| l.starts_with("scored "))
        .unwrap_or_else(|| panic!("no status line:\n{live}"));
    for part in ["/s |", "anomalies ", " %)", "p99 "] {
        assert!(status.contains(part), "{part:?} not in {status:?}");
    }
    assert!(
        live.contains("health --socket") && live.contains(" tail "),
        "the commands that reach the daemon are shown:\n{live}"
    );
    let lines: Vec<&str> = live.lines().collect();
    let anomalies: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("anomaly id "))
        .collect();
    assert!(!anomalies.is_empty(), "no anomaly shown in 15 s:\n{live}");
    for i in anomalies {
        let why = if lines[i].contains("  why: ") {
            lines[i]
        } else {
            lines.get(i + 1).copied().unwrap_or_default()
        };
        assert!(
            why.contains(" (outside training range)") || why.contains("why: isolated by "),
            "an anomaly without a reason: {:?} / {why:?}",
            lines[i]
        );
    }

    let end = session.stop();
    let summary = &end[end.find("demo: summary").unwrap()..];

    let scored = count(summary, "records scored");
    let flagged = count(summary, "anomalies");
    let dead = count(summary, "dead letters");
    assert!(scored > 0 && flagged > 0, "{summary}");
    assert!(flagged <= scored, "{summary}");
    assert_eq!(
        dead, 0,
        "the generator writes only valid records:\n{summary}"
    );
    let anomaly_line = summary
        .lines()
        .find(|l| l.trim_start().starts_with("anomalies"))
        .unwrap();
    let share = percent(anomaly_line);
    let want = 100.0 * flagged as f64 / scored as f64;
    assert!(
        (share - want).abs() <= 0.051,
        "{share} % vs {want} %:\n{summary}"
    );
    // Every anomaly read back was explained, by range or by attribution.
    assert_eq!(count(summary, "without a reason"), 0, "{summary}");
    let read_back = count(summary, "read back");
    assert!(read_back > 0 && read_back <= flagged, "{summary}");
    // The generator labels its records and the anomalies keep the label.
    let labelled = count(summary, "labelled outlier");
    assert!(labelled > 0 && labelled <= read_back, "{summary}");
    assert!(summary.contains("precision") && summary.contains("recall"));
    assert!(summary.contains("What to expect"), "{summary}");
    assert_narrow(summary);

    if let Some(path) = std::env::var_os("DEMO_CAPTURE") {
        write_capture(Path::new(&path), "scripts/demo after 15 s", &live, &end);
    }
}

#[test]
fn purchases_demo_shows_each_output_and_a_consistent_summary() {
    let dir = tempfile::tempdir().unwrap();
    let no_data = dir.path().join("no-retail-data");
    std::fs::create_dir(&no_data).unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let session = start_demo(
        dir.path(),
        "purchases",
        &[
            ("ANOMALYD_WEB__LISTEN", web.clone()),
            ("DEMO_RETAIL_DIR", no_data.display().to_string()),
            ("DEMO_PACE", "max".to_owned()),
            (
                "ANOMALYD_STAGES__INVOICES__INACTIVITY_GAP_S",
                "2".to_owned(),
            ),
        ],
    );
    session.wait_for("demo: purchases live", Duration::from_secs(120));
    let shown = |screen: &str, start: &str, part: &str| {
        screen
            .lines()
            .any(|l| l.starts_with(start) && l.contains(part))
    };
    let live = session.wait_until(
        "an invoice, an anomaly of each model, an invalid invoice, a cancellation window",
        Duration::from_secs(60),
        |s| {
            shown(s, "invoice ", " lines: mean ")
                && shown(s, "anomaly ", "kmeans")
                && shown(s, "anomaly ", "bisecting")
                && shown(s, "invalid ", "empty_customer_id")
                && shown(s, "window ", " cancelled ")
                && s.lines().any(|l| l.starts_with("lines "))
        },
    );
    assert_web_view(&live, &web, "kmeans");
    // The full files are missing: the demo says which and where they come from, and uses the
    // slices.
    assert!(
        live.contains(&format!(
            "missing: {}",
            no_data.join("online_retail_train.csv").display()
        )) && live.contains("doi:10.24432/C5BW33")
            && live.contains("demo: replaying from line 1, pace max:")
            && live.contains("/tests/data/retail/stream_slice.csv\n"),
        "{live}"
    );
    assert_narrow(&live);
    let status = live
        .lines()
        .rev()
        .find(|l| l.starts_with("lines "))
        .unwrap();
    // The watcher shortens "invoices" and "windows" when the full line would be wider than
    // the screen, which the window count alone can make it (4,550 windows closed at max pace).
    for parts in [
        &["open "][..],
        &["invoices ", "inv "],
        &["invalid "],
        &["late "],
        &["kmeans "],
        &["bisecting "],
        &["both "],
        &["windows ", "win "],
    ] {
        assert!(
            parts.iter().any(|p| status.contains(p)),
            "none of {parts:?} in {status:?}"
        );
    }
    let lines: Vec<&str> = live.lines().collect();
    for (i, line) in lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("anomaly "))
    {
        // The invoice's features (on its line or the next), then its scores.
        let block: Vec<&str> = std::iter::once(*line)
            .chain(
                lines[i + 1..]
                    .iter()
                    .copied()
                    .take_while(|l| l.starts_with("    ")),
            )
            .collect();
        let text = block.join("\n");
        assert!(text.contains(" mean ") && text.contains(" qty "), "{text}");
        assert!(block.iter().any(|l| l.starts_with("    score ")), "{text}");
    }

    let end = session.stop();
    let summary = &end[end.find("demo: summary").unwrap()..];
    assert_narrow(summary);
    assert!(
        summary.contains("the slices in tests/data/retail"),
        "{summary}"
    );

    let replayed = count(summary, "lines replayed");
    let read = count(summary, "lines read");
    let valid = count(summary, "invoices valid");
    let invalid = count(summary, "invoices invalid");
    let kmeans = count(summary, "flagged by kmeans");
    let bisecting = count(summary, "flagged by bisecting");
    let both = count(summary, "flagged by both");
    let windows = count(summary, "windows");
    let largest = count(summary, "largest count");
    // The slice has 3,000 lines, 29 of them cancellations, and invoices without a customer; on
    // a fresh broker nothing is read twice.
    assert!(
        replayed > 0 && replayed <= 3000 && read <= replayed,
        "{summary}"
    );
    assert!(valid > 0 && invalid > 0, "{summary}");
    assert!(kmeans > 0 && kmeans <= valid, "{summary}");
    assert!(bisecting > 0 && bisecting <= valid, "{summary}");
    assert!(both <= kmeans.min(bisecting), "{summary}");
    assert!(windows > 0 && largest >= 1, "{summary}");
    assert!(summary.contains("What to expect next time"), "{summary}");
    let saved = std::fs::read_to_string(dir.path().join("state/demo-purchases-summary.txt"))
        .expect("the summary is also in the demo's folder");
    assert!(
        saved.contains(&format!("flagged by both  {both:>9}")),
        "{saved}"
    );

    if let Some(path) = std::env::var_os("DEMO_PURCHASES_CAPTURE") {
        write_capture(
            Path::new(&path),
            "scripts/demo purchases on the slices",
            &live,
            &end,
        );
    }
}

/// The command printed under `# {comment}` on `screen`, its `\` continuations joined.
fn printed_command(screen: &str, comment: &str) -> String {
    let mut lines = screen
        .lines()
        .skip_while(|l| l.trim() != format!("# {comment}"))
        .skip(1);
    let mut command = String::new();
    for line in lines.by_ref() {
        match line.trim().strip_suffix('\\') {
            Some(part) => command.push_str(part),
            None => {
                command.push_str(line.trim());
                break;
            }
        }
    }
    assert!(
        command.contains(" query "),
        "no command under # {comment}:\n{screen}"
    );
    command
}

/// Runs a command as a user pastes it into a shell, without the developer's `ANOMALYD_*`.
fn shell(command: &str) -> Output {
    let mut sh = Command::new("sh");
    sh.args(["-c", command]);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ANOMALYD_")) {
        sh.env_remove(k);
    }
    sh.output().expect("sh runs")
}

#[test]
fn sensors_demo_shows_anomalies_stores_them_and_its_queries_work() {
    let dir = tempfile::tempdir().unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let session = start_demo(
        dir.path(),
        "sensors",
        &[("ANOMALYD_WEB__LISTEN", web.clone())],
    );
    session.wait_for("demo: sensors live", Duration::from_secs(120));
    let stored = |screen: &str| -> u64 {
        let Some(status) = screen.lines().rev().find(|l| l.starts_with("scored ")) else {
            return 0;
        };
        let after = &status[status.find("stored ").expect("stored in the status line") + 7..];
        after
            .split_whitespace()
            .next()
            .and_then(|n| n.replace(',', "").parse().ok())
            .unwrap_or_else(|| panic!("no count after stored in {status:?}"))
    };
    // The generator writes 100 readings a second, 1 % of them faults, in episodes.
    session.wait_until(
        "three anomalies and a row in the store",
        Duration::from_secs(90),
        |s| s.lines().filter(|l| l.starts_with("anomaly ")).count() >= 3 && stored(s) > 0,
    );
    // Long enough for the share of anomalies to mean something (about 1,500 more readings).
    std::thread::sleep(Duration::from_secs(15));
    let live = session.screen();
    assert_web_view(&live, &web, "sensors");
    assert_narrow(&live);
    assert!(
        live.contains("demo: the anomaly store: ")
            && live.contains(&dir.path().join("state/sensors.db").display().to_string()),
        "{live}"
    );
    // Each anomaly is an injected fault, above the threshold of each rule that fired (strict:
    // the generator's faults are at least 3 above, its normal readings far below).
    for line in live.lines().filter(|l| l.starts_with("anomaly ")) {
        let number = |after: &str| -> f64 {
            line[line.find(after).unwrap() + after.len()..]
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no number after {after:?} in {line:?}"))
        };
        let (temperature, pressure) = (number("temperature "), number("pressure "));
        let (rules, label) = line
            .rsplit_once(": ")
            .and_then(|(_, tail)| tail.rsplit_once(' '))
            .unwrap_or_else(|| panic!("no rules and label in {line:?}"));
        assert!(
            ["[spike]", "[drift]", "[stuck]"].contains(&label),
            "not an injected fault: {line:?}"
        );
        for rule in rules.split(", ") {
            match rule {
                "hot" => assert!(temperature > 40.0, "{line:?}"),
                "high_pressure" => assert!(pressure > 120.0, "{line:?}"),
                _ => panic!("an unknown rule in {line:?}"),
            }
        }
    }
    // The query commands on the screen work as printed, while the daemon writes.
    let counted = shell(&printed_command(&live, "how many a minute"));
    let counts = String::from_utf8_lossy(&counted.stdout).into_owned();
    assert!(
        counted.status.success(),
        "{counts}{}",
        String::from_utf8_lossy(&counted.stderr)
    );
    let total: u64 = counts
        .lines()
        .map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [time, n] if time.ends_with(":00.000Z") => n.parse::<u64>().unwrap(),
            _ => panic!("not a count line: {l:?}"),
        })
        .sum();
    assert!(total > 0, "{counts}");
    let table = shell(&printed_command(
        &live,
        "this detector's newest anomalies, as a table",
    ));
    let rows = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.status.success(), "{rows}");
    assert!(rows.starts_with("EVENT_TIME "), "{rows}");
    let shown = rows.lines().skip(1).collect::<Vec<_>>();
    assert!(
        !shown.is_empty()
            && shown.len() <= 5
            && shown
                .iter()
                .all(|r| r.contains(" sensors ") && r.contains(" sensor-anomalies/")),
        "{rows}"
    );

    let end = session.stop();
    let summary = &end[end.find("demo: summary").unwrap()..];
    assert_narrow(summary);
    let scored = count(summary, "readings scored");
    let flagged = count(summary, "anomalies");
    let read_back = count(summary, "read back");
    let stored = count(summary, "stored");
    assert_eq!(count(summary, "dead letters"), 0, "{summary}");
    // A realistic few: the generator's 1 %, give or take an episode (a stuck sensor is 10
    // readings), not two in three.
    assert!(scored >= 1000 && flagged > 0, "{summary}");
    assert!(flagged * 20 <= scored, "over 5 %:\n{summary}");
    assert!(read_back > 0 && read_back <= flagged, "{summary}");
    let precision = summary
        .lines()
        .find(|l| l.trim_start().starts_with("precision"))
        .unwrap();
    assert_eq!(percent(precision), 100.0, "{summary}");
    assert!(stored > 0 && stored <= flagged, "{summary}");
    // The summary ran the queries too.
    assert!(
        summary.contains("$ anomalyd query --detector sensors --since 15m --count --by 1m")
            && summary.contains("  EVENT_TIME "),
        "{summary}"
    );
    let saved = std::fs::read_to_string(dir.path().join("state/demo-sensors-summary.txt"))
        .expect("the summary is also in the demo's folder");
    let stored_line = summary
        .lines()
        .find(|l| l.trim_start().starts_with("stored"))
        .unwrap();
    assert!(saved.contains(stored_line), "{saved}");

    if let Some(path) = std::env::var_os("DEMO_SENSORS_CAPTURE") {
        write_capture(Path::new(&path), "scripts/demo sensors", &live, &end);
    }
}

fn write_capture(path: &Path, what: &str, live: &str, end: &str) {
    let text = format!(
        "# {what} (tmux pane, 120 columns)\n\n{}\n\n# after Ctrl-C\n\n{}\n",
        live.trim_end(),
        end.trim_end()
    );
    std::fs::write(path, text).expect("the capture file is writable");
}
