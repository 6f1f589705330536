//! The shipped unit file passes systemd's own checks: `systemd-analyze verify` prints nothing
//! and `systemd-analyze security --offline=yes --threshold=30` passes. `.ci/run` installs the
//! `systemd` package for the tool; no running systemd is needed.

use std::path::Path;
use std::process::Command;

#[test]
fn unit_file_verifies_cleanly_and_is_hardened() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/anomalyd.service"),
    )
    .unwrap();
    // verify checks that ExecStart's binary exists: point it at the one just built.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("anomalyd.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/anomalyd", env!("CARGO_BIN_EXE_anomalyd")),
    )
    .unwrap();

    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze is installed (.ci/run installs the systemd package)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "verify: {said}"
    );

    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=30"])
        .arg(&copy)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    assert!(security.status.success(), "security:\n{report}");
    assert!(report.contains("Overall exposure level"), "{report}");

    for line in [
        "Type=notify",
        "ExecStartPre=/usr/local/bin/anomalyd check-config",
        "ExecReload=/usr/local/bin/anomalyd ctl reload",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "WatchdogSec=",
        "RestartPreventExitStatus=78",
    ] {
        assert!(unit.contains(line), "{line} missing");
    }
    // systemd must wait longer than the daemon's own grace period before killing it.
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim().parse().ok())
        .expect("TimeoutStopSec in seconds");
    assert!(stop > anomalyd::config::SupervisorConfig::default().shutdown_grace_s);
}
