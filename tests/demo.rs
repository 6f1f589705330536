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
    let session = start_demo(
        dir.path(),
        "purchases",
        &[
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
    // The full files are missing: the demo says which and where they come from, and uses the
    // slices.
    assert!(
        live.contains(&format!(
            "missing: {}",
            no_data.join("online_retail_train.csv").display()
        )) && live.contains("doi:10.24432/C5BW33")
            && live.contains("tests/data/retail/stream_slice.csv from line 1, pace max"),
        "{live}"
    );
    assert_narrow(&live);
    let status = live
        .lines()
        .rev()
        .find(|l| l.starts_with("lines "))
        .unwrap();
    for part in [
        "open ",
        "invoices ",
        "invalid ",
        "late ",
        "kmeans ",
        "bisecting ",
        "both ",
        "windows ",
    ] {
        assert!(status.contains(part), "{part:?} not in {status:?}");
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

fn write_capture(path: &Path, what: &str, live: &str, end: &str) {
    let text = format!(
        "# {what} (tmux pane, 120 columns)\n\n{}\n\n# after Ctrl-C\n\n{}\n",
        live.trim_end(),
        end.trim_end()
    );
    std::fs::write(path, text).expect("the capture file is writable");
}
