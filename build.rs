//! Link-time settings for the `anomalyd` executable.
//!
//! On Linux with glibc, the executable's relative relocations are packed (`-z
//! pack-relative-relocs`, DT_RELR, glibc 2.36 and GNU ld 2.38 or lld 15). A position-independent
//! Rust binary of this size carries about 1.2 MB of `R_X86_64_RELATIVE` entries that the dynamic
//! loader reads once at start and that then stay resident for the life of the process; packed,
//! they take a few kilobytes. The executable stays position-independent (ASLR). An older GNU ld
//! warns and ignores the option.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
