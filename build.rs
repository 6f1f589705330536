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
//!
//! On Linux, the code the daemon runs is placed together (`link/hot-text.ld`, written by
//! `scripts/hot-text` from a callgrind run of the transactions detector). The kernel maps code
//! 64 KiB around each page a process first touches, and the compiler's order scatters what runs
//! at start and at a steady rate across 16 MiB of text, so 8.2 MiB of it ended up resident;
//! placed together, 5.4 MiB is (docs/operations.md, "Memory"). The script only
//! orders sections. It is passed to release builds alone: the linker matches each of its 1,600
//! patterns against every input section: about 2 s in a release link, 40 s in a debug one,
//! whose every generic instance is a section. It is left out when the build names its own linker
//! (`RUSTC_LINKER`, `-C linker`, `-fuse-ld` in RUSTFLAGS): lld and GNU ld read it, gold and mold
//! may not.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let linux = env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let linux_gnu = linux && env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|e| e == "gnu");
    let native = env::var("HOST").ok() == env::var("TARGET").ok();
    if linux_gnu && native && glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }

    println!("cargo:rerun-if-changed=link/hot-text.ld");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let hot_text =
        Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("link/hot-text.ld");
    if linux && release && !own_linker() && hot_text.is_file() {
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", hot_text.display());
    }
}

/// Whether the build chose a linker of its own, which may not read a linker script's `INSERT`.
fn own_linker() -> bool {
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    env::var_os("RUSTC_LINKER").is_some()
        || flags
            .split('\x1f')
            .any(|f| f.contains("fuse-ld") || f.contains("linker="))
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
