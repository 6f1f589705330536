//! Process exit codes, from BSD's `sysexits.h` where one fits, so that systemd and scripts can
//! tell a bad configuration (restarting will not help) from a runtime failure.

/// A runtime failure.
pub const FAILURE: u8 = 1;
/// The command was used wrongly, e.g. asked for a configuration key that does not exist
/// (`EX_USAGE`).
pub const USAGE: u8 = 64;
/// The input data is malformed: a bad CSV value, a NaN, a damaged model file (`EX_DATAERR`).
pub const DATA_ERR: u8 = 65;
/// An input file does not exist (`EX_NOINPUT`).
pub const NO_INPUT: u8 = 66;
/// An output file cannot be written (`EX_CANTCREAT`).
pub const CANT_CREATE: u8 = 73;
/// The daemon's control socket does not answer (`EX_UNAVAILABLE`).
pub const UNAVAILABLE: u8 = 69;
/// The configuration is invalid (`EX_CONFIG`). systemd's `RestartPreventExitStatus=78` keeps a
/// unit with a broken config from restarting in a loop.
pub const CONFIG: u8 = 78;
