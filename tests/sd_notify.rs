//! The systemd notification protocol as systemd sees it: the test plays systemd, binding the
//! datagram socket named by `NOTIFY_SOCKET`, and checks the order of what `anomalyd run` says.

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn kill(sig: &str, pid: u32) {
    assert!(
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// Messages until `pred` matches one (returned last), or panics after `timeout`.
fn until(
    sock: &UnixDatagram,
    got: &mut Vec<String>,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = pred(&msg);
            got.push(msg);
            if hit {
                return;
            }
        }
    }
    panic!("no matching message within {timeout:?}; got {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reload_watchdog_and_stopping_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let model = support::seed_model(dir.path());
    let config = support::pipeline_config(dir.path(), &model).await;
    let path = dir.path().join("anomalyd.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let notify = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anomalyd"));
    for (k, _) in
        std::env::vars().filter(|(k, _)| k.starts_with("ANOMALYD_") || k.starts_with("WATCHDOG_"))
    {
        cmd.env_remove(k);
    }
    let mut child = support::Reaper(
        cmd.args(["run", "--config"])
            .arg(&path)
            .env("NOTIFY_SOCKET", &notify)
            .env("WATCHDOG_USEC", "1000000")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();

    let mut got = Vec::new();
    until(&sock, &mut got, Duration::from_secs(60), |m| {
        m.contains("READY=1")
    });
    assert!(
        !got.iter()
            .take(got.len() - 1)
            .any(|m| m.contains("WATCHDOG=1") || m.contains("STOPPING")),
        "READY comes first: {got:?}"
    );
    assert!(
        std::fs::metadata(&config.control.socket).is_ok(),
        "socket bound before READY"
    );
    // WATCHDOG_USEC=1 s: a ping every half second.
    let pings_from = got.len();
    until(&sock, &mut got, Duration::from_secs(5), |m| {
        m.contains("WATCHDOG=1")
    });
    until(&sock, &mut got, Duration::from_secs(5), |m| {
        m.contains("WATCHDOG=1")
    });
    assert!(got.len() - pings_from <= 4, "{got:?}");

    kill("-HUP", child.id());
    until(&sock, &mut got, Duration::from_secs(10), |m| {
        m.contains("RELOADING=1")
    });
    let reloading = got.last().unwrap().clone();
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC with RELOADING")
        .parse()
        .unwrap();
    assert!(usec > 0);
    until(&sock, &mut got, Duration::from_secs(10), |m| {
        m.contains("READY=1")
    });

    // After a refused reload, READY=1 follows too: the old model serves on.
    std::fs::write(&model, b"broken").unwrap();
    kill("-HUP", child.id());
    until(&sock, &mut got, Duration::from_secs(10), |m| {
        m.contains("RELOADING=1")
    });
    until(&sock, &mut got, Duration::from_secs(10), |m| {
        m.contains("READY=1")
    });

    kill("-TERM", child.id());
    until(&sock, &mut got, Duration::from_secs(30), |m| {
        m.contains("STOPPING=1")
    });
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "log:\n{}", log());
    assert!(log().contains("model reload refused"), "{}", log());
}
