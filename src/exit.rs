//! Process exit codes, from BSD's `sysexits.h` where one fits, so that systemd and scripts can
//! tell a bad configuration (restarting will not help) from a runtime failure.

/// A runtime failure.
pub const FAILURE: u8 = 1;
/// The configuration is invalid (`EX_CONFIG`). systemd's `RestartPreventExitStatus=78` keeps a
/// unit with a broken config from restarting in a loop.
pub const CONFIG: u8 = 78;
