//! `link/hot-text.ld`, the code layout release builds link with (build.rs, `scripts/hot-text`),
//! is a linker script the linker takes. The suite's own builds are debug builds, which leave the
//! script out, so this test links a small program with it, as a release build would, and runs
//! the program: a script the linker refuses, or whose `INSERT` breaks the default layout, fails
//! here rather than in a user's `cargo build --release`.

use std::path::Path;
use std::process::Command;

#[test]
fn a_program_linked_with_the_hot_text_script_runs() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("link/hot-text.ld");
    let text = std::fs::read_to_string(&script).expect("link/hot-text.ld is in the repository");
    assert!(
        text.contains("INSERT BEFORE .text;"),
        "the script must extend the default layout, not replace it"
    );

    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("main.rs");
    std::fs::write(
        &source,
        "fn main() { let v: Vec<String> = std::env::args().skip(1).collect(); println!(\"{}\", v.join(\"+\")); }",
    )
    .unwrap();
    let program = dir.path().join("program");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let built = Command::new(rustc)
        .args(["-O", "--edition", "2021", "-C"])
        .arg(format!("link-arg=-Wl,-T,{}", script.display()))
        .arg("-o")
        .arg(&program)
        .arg(&source)
        .output()
        .expect("run rustc");
    assert!(
        built.status.success(),
        "linking with {} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    let ran = Command::new(&program).args(["a", "b"]).output().unwrap();
    assert!(ran.status.success());
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "a+b\n");
}
