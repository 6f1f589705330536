//! `scripts/demo` as a newcomer sees it: run on a terminal (a tmux pane, 120 columns) with its
//! own broker on a free port (`BROKER_PORT`, `BROKER_DIR` in a temp folder) and this build's
//! debug binary (`DEMO_BIN`), left to score for 15 s, then stopped with Ctrl-C.
//!
//! Checks the screen: the status line is there, every line is under 100 columns, each anomaly
//! shown has a reason; and the summary: anomalies never exceed records scored, shares match
//! counts, every anomaly read back has a reason. Needs tmux and tansu (`scripts/test` checks
//! both). With `DEMO_CAPTURE=FILE`, the captured screen and summary are also written there.

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

    fn wait_for(&self, what: &str, within: Duration) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if screen.contains(what) {
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

#[test]
fn demo_screen_is_readable_and_its_summary_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let broker_dir = dir.path().join("broker");
    let state = dir.path().join("state");
    let port = free_port().to_string();
    let broker_env = vec![
        ("BROKER_PORT".to_owned(), port.clone()),
        ("BROKER_DIR".to_owned(), broker_dir.display().to_string()),
    ];
    let session = Session {
        server: format!("anomalyd-demo-test-{}", std::process::id()),
        broker_env,
    };
    let command = format!(
        "env BROKER_PORT={port} BROKER_DIR='{}' DEMO_STATE='{}' DEMO_BIN='{}' \
         ANOMALYD_DETECTORS__TRANSACTIONS__MODEL='{}' '{}'; echo \"demo exited with status $?\"; sleep 3600",
        broker_dir.display(),
        state.display(),
        env!("CARGO_BIN_EXE_anomalyd"),
        state.join("seed.iforest").display(),
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

    session.wait_for("demo: scoring live", Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(15));
    let live = session.screen();

    for line in live.lines() {
        assert!(
            line.chars().count() < WIDTH,
            "a line of {} columns: {line:?}\n{live}",
            line.chars().count()
        );
    }
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

    let stopped = session.tmux(&["send-keys", "-t", "demo", "C-c"]);
    assert!(stopped.status.success());
    let end = session.wait_for("demo exited with status", Duration::from_secs(60));
    assert!(end.contains("demo exited with status 0"), "{end}");
    let summary = &end[end
        .find("demo: summary")
        .unwrap_or_else(|| panic!("no summary:\n{end}"))..];

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
    for line in summary.lines() {
        assert!(line.chars().count() < WIDTH, "{line:?}");
    }

    if let Some(path) = std::env::var_os("DEMO_CAPTURE") {
        write_capture(Path::new(&path), &live, &end);
    }
}

fn write_capture(path: &Path, live: &str, end: &str) {
    let text = format!(
        "# scripts/demo after 15 s (tmux pane, 120 columns)\n\n{}\n\n# after Ctrl-C\n\n{}\n",
        live.trim_end(),
        end.trim_end()
    );
    std::fs::write(path, text).expect("the capture file is writable");
}
