//! The `anomalyd` binary's contract with scripts and systemd: `check-config` prints `ok` or
//! every error, and a bad configuration exits with 78 (EX_CONFIG); a missing model 66, a
//! damaged one 65, one that does not fit the features 78, for `check-config` and `run` alike;
//! every command finds its configuration the same way; a second SIGINT during a slow shutdown
//! exits 130 at once; no training data makes `train` panic; a closed stdout ends every command
//! quietly; features are matched to the model by name unless the user says by position; values
//! that would fail later (a socket path too long, a number librdkafka would change) are
//! configuration errors, and a huge value is not echoed whole; overlapping A/B splits are
//! refused and splits leaving keys to no variant are warned about.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn anomalyd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anomalyd"));
    // The tests must not see a developer's own overrides.
    for (k, _) in std::env::vars() {
        if k.starts_with("ANOMALYD_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn repo_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("anomalyd.toml")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn check(config: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = anomalyd();
    cmd.args(["check-config", "--config"]).arg(config);
    cmd.envs(env.iter().copied());
    cmd.output().expect("run anomalyd")
}

/// Trains the demo model (`anomalyd train --synthetic`, few trees) into `dir`.
fn train(dir: &Path) -> PathBuf {
    let model = dir.join("seed.iforest");
    let out = anomalyd()
        .args(["train", "--synthetic", "--trees", "5", "--out"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    model
}

#[test]
fn shipped_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let model = train(dir.path());
    let model = model.to_str().unwrap();
    let out = check(
        &repo_config(),
        &[("ANOMALYD_DETECTORS__TRANSACTIONS__MODEL", model)],
    );
    assert_eq!(text(&out.stdout), "ok\n", "stderr: {}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
}

/// check-config checks what `run` needs, and `run` fails the same way, before touching Kafka.
#[test]
fn a_missing_damaged_or_mismatched_model_fails_check_config_and_run_alike() {
    let dir = tempfile::tempdir().unwrap();
    let model = train(dir.path());
    let config = dir.path().join("anomalyd.toml");
    let write = |model: &Path, features: &str| {
        std::fs::write(
            &config,
            format!(
                "[kafka]\nbrokers = \"127.0.0.1:1\"\n\n[detectors.transactions]\nfeatures = {features}\n\
                 model = \"{}\"\ninput_topic = \"transactions\"\noutput_topic = \"anomalies\"\n\
                 dead_letter_topic = \"transactions.dead-letter\"\n\n[control]\nsocket = \"{}\"\n",
                model.display(),
                dir.path().join("s.sock").display()
            ),
        )
        .unwrap()
    };
    let both = |expected: i32, says: &[&str]| {
        let run = anomalyd()
            .args(["run", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        for (what, out) in [("check-config", check(&config, &[])), ("run", run)] {
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(expected), "{what}: {stderr}");
            for s in says {
                assert!(stderr.contains(s), "{what}: no {s:?} in {stderr}");
            }
        }
    };

    write(&model, "\"data\"");
    assert_eq!(text(&check(&config, &[]).stdout), "ok\n");
    // Scripts read settings before any model exists.
    let absent = dir.path().join("absent.iforest");
    write(&absent, "\"data\"");
    let get = anomalyd()
        .args([
            "check-config",
            "--get",
            "detectors.transactions.model",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(text(&get.stdout), format!("{}\n", absent.display()));

    let at = format!(
        "{}:6:9: detectors.transactions.model: model file {}",
        config.display(),
        absent.display()
    );
    both(66, &[&at, "No such file"]);

    let damaged = dir.path().join("damaged.iforest");
    let mut bytes = std::fs::read(&model).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 8] {
        *b ^= 0xff;
    }
    std::fs::write(&damaged, bytes).unwrap();
    write(&damaged, "\"data\"");
    both(
        65,
        &[
            "detectors.transactions.model: model file",
            "damaged.iforest",
            "checksum mismatch",
        ],
    );

    write(&model, "[\"/x0\", \"/x1\", \"/x2\"]");
    let at = format!(
        "{}:5:12: detectors.transactions.features: 3 JSON pointers",
        config.display()
    );
    both(78, &[&at, "seed.iforest", "has 2 features (x0, x1)"]);
    write(&model, "[\"/x1\", \"/x0\"]");
    both(
        78,
        &[
            "detectors.transactions.features",
            "where the model expects `x0`",
        ],
    );
}

#[test]
fn misspelled_key_exits_78_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let shipped = std::fs::read_to_string(repo_config()).unwrap();
    let line = shipped
        .lines()
        .position(|l| l.starts_with("batch_max ="))
        .expect("shipped config has batch_max")
        + 1;
    std::fs::write(&bad, shipped.replace("batch_max =", "batch_mx =")).unwrap();

    let out = check(&bad, &[]);
    assert_eq!(out.status.code(), Some(78));
    assert_eq!(text(&out.stdout), "");
    let stderr = text(&out.stderr);
    let expected = format!(
        "{}:{line}:1: detectors.transactions.batch_mx: unknown field",
        bad.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn missing_file_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(&dir.path().join("absent.toml"), &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out.stderr).contains("absent.toml (named by --config): cannot read the config file"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn env_override_is_validated() {
    let out = check(
        &repo_config(),
        &[("ANOMALYD_DETECTORS__TRANSACTIONS__BATCH_MAX", "0")],
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out.stderr).contains(
            "ANOMALYD_DETECTORS__TRANSACTIONS__BATCH_MAX: detectors.transactions.batch_max: must be >= 1"
        ),
        "{}",
        text(&out.stderr)
    );

    let out = check(&repo_config(), &[("ANOMALYD_KAFKA_BROKERS", "h:1")]);
    assert_eq!(out.status.code(), Some(78), "single underscore is a typo");
}

/// No --config, no ANOMALYD_CONFIG: `./anomalyd.toml` is read, for every command, and
/// commands that fail to connect say which file (and socket) they used.
#[test]
fn the_working_directory_file_is_found_without_config() {
    let dir = tempfile::tempdir().unwrap();
    let model = train(dir.path());
    let socket = dir.path().join("control.sock");
    std::fs::write(
        dir.path().join("anomalyd.toml"),
        format!(
            "[control]\nsocket = \"{}\"\n{}",
            socket.display(),
            detector_table(&model, "")
        ),
    )
    .unwrap();
    let in_dir = |args: &[&str]| {
        anomalyd()
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };

    let out = in_dir(&["check-config"]);
    assert_eq!(text(&out.stdout), "ok\n", "{}", text(&out.stderr));
    let out = in_dir(&["check-config", "--get", "control.socket"]);
    assert_eq!(text(&out.stdout), format!("{}\n", socket.display()));

    // health and ctl use the file's socket, and name it and the file when nothing answers.
    let out = in_dir(&["health"]);
    assert_eq!(out.status.code(), Some(3));
    let line = text(&out.stdout);
    assert!(
        line.starts_with("UNKNOWN anomalyd: ")
            && line.contains(&socket.display().to_string())
            && line.contains("socket from ./anomalyd.toml (found in the working directory)"),
        "{line}"
    );
    let out = in_dir(&["ctl", "status"]);
    assert_eq!(out.status.code(), Some(69));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&socket.display().to_string()) && stderr.contains("./anomalyd.toml"),
        "{stderr}"
    );

    // ANOMALYD_CONFIG comes before ./anomalyd.toml; a named file must exist.
    let out = anomalyd()
        .arg("check-config")
        .current_dir(dir.path())
        .env("ANOMALYD_CONFIG", dir.path().join("other.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("other.toml (named by ANOMALYD_CONFIG): cannot read the config file"),
        "{stderr}"
    );

    // An invalid file found in the working directory is an error, not a reason to guess.
    std::fs::write(dir.path().join("anomalyd.toml"), "[control]\nsockt = 1\n").unwrap();
    let out = in_dir(&["health"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stdout).contains("./anomalyd.toml:2:1: control.sockt"),
        "{}",
        text(&out.stdout)
    );
    let out = in_dir(&["ctl", "reload"]);
    assert_eq!(out.status.code(), Some(78));
}

/// No file anywhere: `run` and `check-config` refuse, naming what they looked for; `health`
/// falls back to the built-in socket and says so. Skipped only where a system-wide file exists.
#[test]
fn without_any_file_run_refuses_and_health_uses_the_default_socket() {
    if Path::new("/etc/anomalyd/anomalyd.toml").exists() {
        eprintln!("skipped: /etc/anomalyd/anomalyd.toml exists on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("rt").join("anomalyd.sock");
    let out = anomalyd()
        .arg("check-config")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out.stderr).contains("no configuration file (no --config, no ANOMALYD_CONFIG, no ./anomalyd.toml, no /etc/anomalyd/anomalyd.toml)"),
        "{}",
        text(&out.stderr)
    );
    let out = anomalyd()
        .arg("health")
        .current_dir(dir.path())
        .env("RUNTIME_DIRECTORY", dir.path().join("rt"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let line = text(&out.stdout);
    assert!(
        line.contains(&socket.display().to_string())
            && line.contains("the built-in default socket; no configuration file"),
        "{line}"
    );
}

#[test]
fn config_path_comes_from_environment() {
    let out = anomalyd()
        .args([
            "check-config",
            "--get",
            "detectors.transactions.input_topic",
        ])
        .env("ANOMALYD_CONFIG", repo_config())
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "transactions\n", "{}", text(&out.stderr));

    let out = anomalyd()
        .arg("check-config")
        .env("ANOMALYD_CONFIG", "/nonexistent/anomalyd.toml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
}

#[test]
fn topics_are_listed_with_overrides_applied() {
    let mut cmd = anomalyd();
    let out = cmd
        .args(["check-config", "--topics", "--config"])
        .arg(repo_config())
        .env("ANOMALYD_DETECTORS__TRANSACTIONS__OUTPUT_TOPIC", "flagged")
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout),
        "sensor-data\nsensor-anomalies\nsensor-data.dead-letter\n\
         transactions\nflagged\ntransactions.dead-letter\n",
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn one_value_is_printed_with_overrides_applied() {
    let get = |key: &str| {
        anomalyd()
            .args(["check-config", "--get", key, "--config"])
            .arg(repo_config())
            .env("ANOMALYD_DETECTORS__TRANSACTIONS__BATCH_MAX", "64")
            .output()
            .unwrap()
    };
    let out = get("detectors.transactions.model");
    assert_eq!(
        text(&out.stdout),
        "models/seed.iforest\n",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        text(&get("detectors.transactions.batch_max").stdout),
        "64\n"
    );
    // A librdkafka property whose name has dots of its own.
    assert_eq!(
        text(&get("kafka.properties.fetch.wait.max.ms").stdout),
        "10\n"
    );
    // Credentials are never printed.
    let out = anomalyd()
        .args(["check-config", "--get", "kafka.properties", "--config"])
        .arg(repo_config())
        .env(
            "ANOMALYD_KAFKA__PROPERTIES__SASL_PASSWORD",
            "hunter2-secret",
        )
        .output()
        .unwrap();
    let printed = text(&out.stdout);
    assert!(
        printed.contains("\"sasl.password\":\"<redacted>\""),
        "{printed}"
    );
    assert!(!printed.contains("hunter2"));
    let out = get("detectors.transactions.batch_mx");
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("no key detectors.transactions.batch_mx"));
    assert!(out.stdout.is_empty());
}

#[test]
fn version_is_printed() {
    let out = anomalyd().arg("--version").output().unwrap();
    assert_eq!(
        text(&out.stdout),
        format!("anomalyd {}\n", env!("CARGO_PKG_VERSION"))
    );
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

fn wait_for(log: &Path, what: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(what) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A slow drain for real: the broker is gone, so the generator's records in flight wait for
/// acknowledgements that cannot come (librdkafka gives up only after message.timeout.ms,
/// five minutes) and the shutdown would use its whole grace period (60 s here). A second
/// SIGINT ends the wait at once, exits 130 and names what was still running.
#[test]
fn second_sigint_during_a_slow_drain_stops_at_once_with_130() {
    let dir = tempfile::tempdir().unwrap();
    let model = train(dir.path());
    let config = dir.path().join("anomalyd.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"127.0.0.1:1\"\n\
             [generator]\nenabled = true\nrate = 1000\n[control]\nsocket = \"{}\"\n\
             [supervisor]\nshutdown_grace_s = 60\n[log]\nlevel = \"info,rdkafka=off\"\n{}",
            dir.path().join("s.sock").display(),
            detector_table(&model, "")
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let mut daemon = anomalyd()
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = daemon.id();
    let said = wait_for(&log, "generator started", Duration::from_secs(30));
    assert!(said.contains("generator started"), "{said}");
    // Let records pile up in the producer's queue.
    std::thread::sleep(Duration::from_millis(500));

    signal(pid, "-INT");
    let said = wait_for(&log, "stopping", Duration::from_secs(10));
    assert!(
        said.contains("a second SIGINT or SIGTERM stops at once"),
        "{said}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the drain is slow: still stopping after 0.5 s; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let second = Instant::now();
    signal(pid, "-INT");
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break Some(status);
        }
        if second.elapsed() > Duration::from_secs(10) {
            let _ = daemon.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    let status =
        status.unwrap_or_else(|| panic!("still running 10 s after the second SIGINT:\n{said}"));
    assert_eq!(status.code(), Some(130), "{said}");
    let last = said.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "anomalyd: second SIGINT during shutdown: stopped at once; still running: "
        ) && last.contains("generator"),
        "{said}"
    );
    assert!(
        !dir.path().join("s.sock").exists(),
        "the control socket is removed"
    );
}

/// `anomalyd train --input FILE` in `dir`, with extra arguments.
fn train_csv(dir: &Path, name: &str, csv: &str, extra: &[&str]) -> Output {
    let input = dir.join(name);
    std::fs::write(&input, csv).unwrap();
    anomalyd()
        .current_dir(dir)
        .args(["train", "--input"])
        .arg(&input)
        .args(["--out", &format!("{name}.iforest")])
        .args(extra)
        .output()
        .unwrap()
}

/// Issue 11: constant data trained silently (and then flagged everything); values near the
/// float limit panicked (exit 101). Every edge of the input ends with a clear exit code.
#[test]
fn train_on_edge_case_data_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let constant = format!("amount,hour\n{}", "1,5\n".repeat(200));
    let varied: String = std::iter::once("amount,hour\n".to_owned())
        .chain((0..200).map(|i| format!("{},5\n", i % 17)))
        .collect();
    // File name, contents, extra arguments, exit code, what stderr says.
    type Case<'a> = (&'a str, String, &'a [&'a str], i32, &'a [&'a str]);
    let cases: &[Case] = &[
        (
            "constant.csv",
            constant,
            &[],
            65,
            &["every feature is constant (amount, hour)"],
        ),
        (
            "one_constant.csv",
            varied,
            &[],
            0,
            &["warning: ", "constant column hour"],
        ),
        ("limit.csv", "x\n-1e308\n1e308\n".into(), &[], 0, &[]),
        (
            "max.csv",
            "x,y\n-1.7976931348623157e308,1\n1.7976931348623157e308,2\n0,3\n".into(),
            &["--contamination", "0.3", "--report", "max.svg"],
            0,
            &[],
        ),
        (
            "subnormal.csv",
            "x\n5e-324\n0\n1e-320\n-5e-324\n".into(),
            &[],
            0,
            &[],
        ),
        (
            "infinite.csv",
            "x,y\n1,2\n1e400,3\n".into(),
            &[],
            65,
            &["line 3", "not a finite number"],
        ),
        ("nan.csv", "x,y\n1,2\nNaN,3\n".into(), &[], 65, &["line 3"]),
        ("all_nan.csv", "x,y\nNaN,1\nNaN,2\n".into(), &[], 0, &[]),
        ("one_row.csv", "x,y\n1,2\n".into(), &[], 65, &["constant"]),
        ("no_rows.csv", "x,y\n".into(), &[], 65, &["no data rows"]),
        ("empty.csv", String::new(), &[], 65, &["no header row"]),
        (
            "more_samples.csv",
            "x,y\n1,2\n3,4\n5,7\n".into(),
            &["--max-samples", "1000000"],
            0,
            &[],
        ),
        (
            "many_trees.csv",
            "x,y\n1,2\n3,4\n5,7\n".into(),
            &["--trees", "18446744073709551615"],
            65,
            &["n_estimators must be at most"],
        ),
    ];
    for (name, csv, extra, code, says) in cases {
        let out = train_csv(d, name, csv, extra);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        for s in *says {
            assert!(stderr.contains(s), "{name}: no {s:?} in {stderr}");
        }
    }
    // The model trained on the float limit evaluates, too.
    let eval = anomalyd()
        .current_dir(d)
        .args([
            "eval",
            "--model",
            "limit.csv.iforest",
            "--input",
            "limit.csv",
        ])
        .args(["--report", "limit.svg"])
        .output()
        .unwrap();
    assert_eq!(eval.status.code(), Some(0), "{}", text(&eval.stderr));
    assert!(
        text(&eval.stdout).contains("flagged 0 "),
        "{}",
        text(&eval.stdout)
    );
}

/// Issue 11: `anomalyd train ... | head -1` panicked "failed printing to stdout: Broken pipe".
/// Each printing command runs with a stdout whose reader is already gone.
#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = train(d);
    let csv = d.join("data.csv");
    std::fs::write(&csv, "x0,x1\n1,2\n-2,-2\n").unwrap();
    let config = d.join("anomalyd.toml");
    std::fs::write(
        &config,
        format!(
            "[control]\nsocket = \"{}\"\n{}",
            d.join("s.sock").display(),
            detector_table(&model, "")
        ),
    )
    .unwrap();
    let (model, csv, config, socket) = (
        model.to_str().unwrap().to_owned(),
        csv.to_str().unwrap().to_owned(),
        config.to_str().unwrap().to_owned(),
        d.join("absent.sock").to_str().unwrap().to_owned(),
    );
    let out = d.join("again.iforest").to_str().unwrap().to_owned();
    let commands: Vec<(Vec<&str>, i32)> = vec![
        (
            vec!["train", "--synthetic", "--trees", "5", "--out", &out],
            0,
        ),
        (vec!["eval", "--model", &model, "--input", &csv], 0),
        (
            vec!["eval", "--model", &model, "--input", &csv, "--json"],
            0,
        ),
        (vec!["check-config", "--config", &config], 0),
        (vec!["check-config", "--config", &config, "--topics"], 0),
        (
            vec![
                "check-config",
                "--config",
                &config,
                "--get",
                "detectors.transactions.model",
            ],
            0,
        ),
        (vec!["health", "--socket", &socket, "-v"], 3),
        (vec!["completions", "bash"], 0),
        (vec!["man"], 0),
        (vec!["--version"], 0),
        (vec!["--help"], 0),
    ];
    let closed = |args: &[&str], code: Option<i32>| {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = anomalyd()
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        if let Some(code) = code {
            assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        }
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
    };
    for (args, code) in commands {
        closed(&args, Some(code));
    }

    // `ctl status` and `health -v` print what a running daemon answers (its control socket
    // answers before any broker does).
    let log = d.join("run.log");
    let mut daemon = anomalyd()
        .args(["run", "--config", &config])
        .env("ANOMALYD_KAFKA__BROKERS", "127.0.0.1:1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let said = wait_for(&log, "control socket bound", Duration::from_secs(30));
    let socket = d.join("s.sock").to_str().unwrap().to_owned();
    if said.contains("control socket bound") {
        closed(&["ctl", "status", "--socket", &socket], Some(0));
        // Not ready without a broker: CRITICAL or WARNING, whatever it says.
        closed(&["health", "-v", "--socket", &socket], None);
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(said.contains("control socket bound"), "{said}");
}

/// `[detectors.transactions]` with its topics and `model` (and `extra` keys), to end a file.
fn detector_table(model: &Path, extra: &str) -> String {
    format!(
        "[detectors.transactions]\ninput_topic = \"transactions\"\noutput_topic = \"anomalies\"\n\
         dead_letter_topic = \"transactions.dead-letter\"\nmodel = \"{}\"\n{extra}",
        model.display()
    )
}

/// Writes a configuration: a standard head (4 lines), `extra` sections from line 5, then the
/// detector with `detector` keys of its own.
fn config_with(dir: &Path, model: &Path, detector: &str, extra: &str) -> PathBuf {
    let config = dir.join("anomalyd.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"127.0.0.1:1\"\n[log]\nlevel = \"info,rdkafka=off\"\n{extra}{}",
            detector_table(model, detector)
        ),
    )
    .unwrap();
    config
}

/// Issue 11: a model trained on `amount,hour` with `features = ["/hour", "/amount"]` was
/// accepted and explained `amount = 12, hour = 52`. By name unless the user says otherwise.
#[test]
fn features_in_another_order_than_the_models_are_refused_unless_by_position() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csv: String = std::iter::once("amount,hour\n".to_owned())
        .chain((0..300).map(|i| format!("{}.5,{}\n", 20 + i % 61, i % 24)))
        .collect();
    let out = train_csv(d, "payments.csv", &csv, &["--trees", "10"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let model = d.join("payments.csv.iforest");
    let socket = d.join("s.sock");
    let control = format!("[control]\nsocket = \"{}\"\n", socket.display());

    let config = config_with(d, &model, "features = [\"/hour\", \"/amount\"]\n", &control);
    let run = anomalyd()
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    for (what, out) in [("check-config", check(&config, &[])), ("run", run)] {
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{what}: {stderr}");
        for s in [
            "detectors.transactions.features: 2 JSON pointers (/hour, /amount)",
            "has 2 features (amount, hour)",
            "features = [\"/amount\", \"/hour\"]",
            "match_features = \"by_position\"",
        ] {
            assert!(stderr.contains(s), "{what}: no {s:?} in {stderr}");
        }
    }

    // Said explicitly: positional, and `run` gets past the model check.
    let config = config_with(
        d,
        &model,
        "features = [\"/hour\", \"/amount\"]\nmatch_features = \"by_position\"\n",
        &control,
    );
    let out = check(&config, &[]);
    assert_eq!(text(&out.stdout), "ok\n", "{}", text(&out.stderr));
    let log = d.join("run.log");
    let mut daemon = anomalyd()
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let said = wait_for(&log, "control socket bound", Duration::from_secs(30));
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(
        said.contains("model loaded") && said.contains("control socket bound"),
        "{said}"
    );
    // The model's own order by name, of course, is fine.
    let config = config_with(d, &model, "features = [\"/amount\", \"/hour\"]\n", &control);
    assert_eq!(text(&check(&config, &[]).stdout), "ok\n");
}

/// Issue 11: check-config accepted a 200-character socket path and `run` exited 1 (forever
/// restarted by systemd); a float for an integer librdkafka property passed truncated; a
/// 5 MiB value was echoed whole.
#[test]
fn values_that_would_fail_later_or_flood_the_terminal_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = train(d);
    let long_socket = format!("/tmp/{}", "s".repeat(195));
    let config = config_with(
        d,
        &model,
        "",
        &format!("[control]\nsocket = \"{long_socket}\"\n"),
    );
    let run = anomalyd()
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    for (what, out) in [("check-config", check(&config, &[])), ("run", run)] {
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{what}: {stderr}");
        assert!(
            stderr.contains(":6:10: control.socket: is 200 bytes long")
                && stderr.contains("at most 107 bytes"),
            "{what}: {stderr}"
        );
    }

    for (property, value) in [
        ("fetch.wait.max.ms", "1.5"),
        ("topic.metadata.refresh.interval.ms", "-1e308"),
        ("fetch.wait.max.ms", "\"10ms\""),
    ] {
        let config = config_with(
            d,
            &model,
            "",
            &format!("[kafka.properties]\n\"{property}\" = {value}\n"),
        );
        let out = check(&config, &[]);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(78),
            "{property} = {value}: {stderr}"
        );
        assert!(
            stderr.contains(&format!(
                ":6:{}: kafka.properties.{property}: ",
                property.len() + 6
            )) && stderr.contains("takes a whole number"),
            "{stderr}"
        );
    }
    let config = config_with(d, &model, "", "[kafka.properties]\n\"linger.ms\" = 2.5\n");
    assert_eq!(text(&check(&config, &[]).stdout), "ok\n");

    let huge = "x".repeat(5 << 20);
    let config = config_with(d, &model, &format!("batch_max = \"{huge}\"\n"), "");
    let out = check(&config, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr.len() < 1000, "{} bytes of error", stderr.len());
    assert!(
        stderr.contains("detectors.transactions.batch_max: invalid type: string \"xxxx")
            && stderr.contains(&format!("…\" ({} bytes)", huge.len())),
        "{stderr}"
    );
    // A model path is echoed in the model's errors: cut too.
    let config = config_with(d, Path::new(&huge), "", "");
    let out = check(&config, &[]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.len() < 1500 && stderr.contains("detectors.transactions.model: model file xxxx"),
        "{} bytes of error: {}",
        stderr.len(),
        &stderr[..stderr.len().min(300)]
    );
}

/// Issue 12: configurations the named detectors cannot run are refused by `check-config`
/// and `run` alike, exit 78, naming the key.
#[test]
fn detector_configurations_that_cannot_run_exit_78_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = train(d);
    let write = |text: &str| {
        let config = d.join("anomalyd.toml");
        std::fs::write(&config, text).unwrap();
        config
    };
    let refused = |config: &Path, says: &[&str]| {
        let run = anomalyd()
            .args(["run", "--config"])
            .arg(config)
            .output()
            .unwrap();
        for (what, out) in [("check-config", check(config, &[])), ("run", run)] {
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{what}: {stderr}");
            for s in says {
                assert!(stderr.contains(s), "{what}: no {s:?} in {stderr}");
            }
        }
    };
    let head = "[kafka]\nbrokers = \"127.0.0.1:1\"\n";

    // No detector at all.
    let config = write(head);
    refused(
        &config,
        &[&format!("{}: detectors: no detector", config.display())],
    );

    // Two detectors writing one topic with different features.
    let two = format!(
        "{head}{}[detectors.pointers]\ninput_topic = \"other\"\noutput_topic = \"anomalies\"\n\
         dead_letter_topic = \"other.dead-letter\"\nfeatures = [\"/x0\", \"/x1\"]\nmodel = \"{}\"\n",
        detector_table(&model, ""),
        model.display()
    );
    let config = write(&two);
    refused(
        &config,
        &[
            ":5:16: detectors.transactions.output_topic",
            "also detector pointers's output topic, with another schema",
        ],
    );

    // A scorer key anomalyd does not know, and an unknown scorer kind.
    let config = write(&format!(
        "{head}{}",
        detector_table(&model, "neural_net = \"n.onnx\"\n")
    ));
    refused(
        &config,
        &[":8:1: detectors.transactions.neural_net: unknown field `neural_net`"],
    );
    let config = write(&format!(
        "{head}{}",
        detector_table(&model, "scorer = \"neural\"\n")
    ));
    refused(
        &config,
        &[":8:10: detectors.transactions.scorer: unknown variant `neural`"],
    );

    // The old single-detector shape: refused with the way to convert it.
    let config = write(&format!(
        "{head}[detector]\ninput_topic = \"transactions\"\n[model]\npath = \"{}\"\n",
        model.display()
    ));
    refused(
        &config,
        &[
            ":3:1: detector: the single [detector] section is gone",
            ":5:1: model: the [model] section is gone",
        ],
    );

    // Rules: compiled by check-config and run; a syntax error names the rule, its line and
    // where in the expression.
    let sensors = "[detectors.sensors]\ninput_topic = \"sensors\"\noutput_topic = \"sensor-anomalies\"\n\
                   dead_letter_topic = \"sensors.dead-letter\"\n[detectors.sensors.rules]\n\
                   hot = \"temperature > 40.0\"\n";
    let config = write(&format!("{head}{sensors}bad = \"pressure >\"\n"));
    refused(
        &config,
        &[":9:7: detectors.sensors.rules.bad: rule `bad`: syntax error at line 1, column"],
    );
    let config = write(&format!("{head}{sensors}"));
    assert_eq!(text(&check(&config, &[]).stdout), "ok\n");
    // Both scorers at once.
    let config = write(&format!(
        "{head}{sensors}[detectors.tx]\ninput_topic = \"t\"\noutput_topic = \"a\"\n\
         dead_letter_topic = \"d\"\nmodel = \"{}\"\n[detectors.tx.rules]\nx = \"a > 1.0\"\n",
        model.display()
    ));
    refused(
        &config,
        &["detectors.tx.rules: a detector has one scorer: a model file or rules, not both"],
    );

    // The environment reaches a named detector's keys.
    let config = write(&format!("{head}{}", detector_table(&model, "")));
    let out = check(
        &config,
        &[("ANOMALYD_DETECTORS__TRANSACTIONS__BATCH_MAX", "0")],
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out.stderr).contains(
            "environment variable ANOMALYD_DETECTORS__TRANSACTIONS__BATCH_MAX: \
             detectors.transactions.batch_max: must be >= 1"
        ),
        "{}",
        text(&out.stderr)
    );
    let get = anomalyd()
        .args([
            "check-config",
            "--get",
            "detectors.transactions.batch_max",
            "--config",
        ])
        .arg(&config)
        .env("ANOMALYD_DETECTORS__TRANSACTIONS__BATCH_MAX", "64")
        .output()
        .unwrap();
    assert_eq!(text(&get.stdout), "64\n", "{}", text(&get.stderr));
}

/// Issue 13: A/B splits of one input topic that overlap are refused (exit 78, at the key's
/// line), a bad bound names its own key, and splits that leave keys to no variant pass with a
/// warning on stderr.
#[test]
fn ab_splits_that_overlap_are_refused_and_gaps_are_warned() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("anomalyd.toml");
    let table = |name: &str, variant: &str, range: &str| {
        format!(
            "[detectors.{name}]\ninput_topic = \"invoices\"\noutput_topic = \"anomalies_{name}\"\n\
             dead_letter_topic = \"invoices.dead-letter\"\n\
             split = {{ variant = \"{variant}\", {range} }}\n\
             [detectors.{name}.rules]\nbig = \"quantity_sum > 100.0\"\n"
        )
    };
    let write = |kmeans_range: &str| {
        let text = format!(
            "[kafka]\nbrokers = \"127.0.0.1:1\"\n{}{}",
            table("kmeans", "A", kmeans_range),
            table("bisect", "B", "from = 0.5, to = 1.0")
        );
        std::fs::write(&config, &text).unwrap();
        // The kmeans split's line.
        text.lines().position(|l| l.starts_with("split")).unwrap() + 1
    };

    let line = write("from = 0.0, to = 0.6");
    let run = anomalyd()
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    for (what, out) in [("check-config", check(&config, &[])), ("run", run)] {
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{what}: {stderr}");
        let expected = format!(
            "{}:{line}:9: detectors.kmeans.split: [0, 0.6) overlaps detector bisect's split \
             [0.5, 1) of the same input topic \"invoices\"",
            config.display()
        );
        assert!(stderr.contains(&expected), "{what}: {stderr}");
    }
    // The environment reaches the split's keys.
    let out = check(&config, &[("ANOMALYD_DETECTORS__KMEANS__SPLIT__TO", "0.5")]);
    assert_eq!(text(&out.stdout), "ok\n", "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");

    write("from = 0.0, to = 1.5");
    let out = check(&config, &[]);
    assert_eq!(out.status.code(), Some(78));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(":{line}:43: detectors.kmeans.split.to: is 1.5")),
        "{stderr}"
    );

    write("from = 0.0, to = 0.4");
    let out = check(&config, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&out.stdout), "ok\n");
    let bisect_line = line + 7;
    let expected = format!(
        "anomalyd: warning: {}:{bisect_line}:9: detectors.bisect.split: the splits of input \
         topic \"invoices\" (bisect [0.5, 1), kmeans [0, 0.4)) leave [0.4, 0.5) to no variant",
        config.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}
