//! Link-time settings for the `anomalyd` executable.
//!
//! On Linux with glibc 2.36 or later, the executable's relative relocations are packed (`-z
//! pack-relative-relocs`, DT_RELR; GNU ld 2.38 or lld 15). A position-independent Rust binary
//! of this size carries about 1.2 MB of `R_X86_64_RELATIVE` entries that the dynamic loader
//! reads once at start and that then stay resident for the life of the process (about 1.2 MiB
//! of the resident set: docs/operations.md "Memory"); packed, they take 16 KB. The executable
//! stays position-independent (ASLR). The linker marks such a binary as needing glibc 2.36
//! (`GLIBC_ABI_DT_RELR`), so it is only asked for when the glibc the build links against, which
//! for a native build is the one it runs on, has it; cross builds are left as they are. A GNU
//! ld older than 2.38 warns and ignores the option.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let linux_gnu = env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux")
        && env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|e| e == "gnu");
    let native = env::var("HOST").ok() == env::var("TARGET").ok();
    if linux_gnu && native && glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether this machine's glibc (`getconf GNU_LIBC_VERSION`: "glibc 2.36") is at least
/// `major.minor`; false when it cannot tell.
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text
        .trim()
        .strip_prefix("glibc ")
        .unwrap_or_default()
        .split('.')
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}
