//! README's examples produce what they claim: the `check-config` session in "Configuration" is
//! replayed in a copy of the shipped `anomalyd.toml` and its output compared line by line, and
//! every model id README quotes is the id `anomalyd train --synthetic 42` gives. The examples
//! are read from README itself, so editing either README or the code alone fails here.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).expect("README.md")
}

/// The binary with none of the developer's own `ANOMALYD_*` overrides.
fn anomalyd(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anomalyd"));
    cmd.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("ANOMALYD_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// The `text` code blocks of `markdown`, as lists of lines.
fn text_blocks(markdown: &str) -> Vec<Vec<&str>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```text") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => block.push(line),
            (None, _) => {}
        }
    }
    blocks
}

/// Shell words: whitespace-separated, with '...' and "..." quoting (no escapes, no expansion:
/// README's examples need none).
fn words(command: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in command.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_default().push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_default();
            }
            (None, c) if c.is_whitespace() => out.extend(word.take()),
            (None, c) => word.get_or_insert_default().push(c),
        }
    }
    assert!(quote.is_none(), "unbalanced quote in README: {command}");
    out.extend(word);
    out
}

/// `sed -i 's/FROM/TO/' FILE` as sed does it, for the literal patterns README uses: `^` anchors
/// FROM at the start of a line; the first match on each line is replaced.
fn sed(dir: &Path, script: &str, file: &str) {
    let parts: Vec<&str> = script.split('/').collect();
    let [command, from, to, flags] = parts[..] else {
        panic!("README's sed script {script:?} is not s/FROM/TO/");
    };
    assert!(
        command == "s" && flags.is_empty(),
        "README's sed script {script:?} is not s/FROM/TO/"
    );
    let (anchored, from) = match from.strip_prefix('^') {
        Some(rest) => (true, rest),
        None => (false, from),
    };
    assert!(
        !from.chars().any(|c| "\\.*[]$+?(){}|".contains(c)),
        "README's sed pattern {from:?} is not a literal this test understands"
    );
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut changed = 0;
    let edited: Vec<String> = text
        .split_inclusive('\n')
        .map(|line| {
            let at = if anchored {
                line.starts_with(from).then_some(0)
            } else {
                line.find(from)
            };
            match at {
                Some(at) => {
                    changed += 1;
                    format!("{}{to}{}", &line[..at], &line[at + from.len()..])
                }
                None => line.to_owned(),
            }
        })
        .collect();
    assert!(
        changed > 0,
        "README's `sed {script}` changes nothing in {file}"
    );
    std::fs::write(&path, edited.concat()).unwrap();
}

/// One `$ ` command of the session and the lines README shows after it.
struct Step {
    command: String,
    expected: Vec<String>,
}

/// A block's session, or `None` for a block that is not one (it does not start with `$ `).
fn steps(block: &[&str]) -> Option<Vec<Step>> {
    if !block.first()?.starts_with("$ ") {
        return None;
    }
    let mut steps: Vec<Step> = Vec::new();
    for line in block {
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                command: command.to_owned(),
                expected: Vec::new(),
            });
        } else {
            let step = steps.last_mut().expect("the block starts with `$ `");
            step.expected.push((*line).to_owned());
        }
    }
    Some(steps)
}

/// README's line matches the program's: equal, or, where README ends in ` ...`, a prefix.
fn same_line(readme: &str, actual: &str) -> bool {
    match readme.strip_suffix(" ...") {
        Some(prefix) => actual.starts_with(prefix),
        None => readme == actual,
    }
}

/// A scratch copy of what README's examples act on: the shipped `anomalyd.toml` and, where it
/// points, the seed model (so that only README's own mistake is reported).
fn scratch() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("anomalyd.toml"),
        dir.path().join("anomalyd.toml"),
    )
    .unwrap();
    // `model = "..."` in `[detectors.transactions]`, read as text: `check-config` may itself
    // want the model.
    let config = std::fs::read_to_string(repo().join("anomalyd.toml")).unwrap();
    let model = config
        .lines()
        .skip_while(|l| l.trim() != "[detectors.transactions]")
        .take_while(|l| l.trim() == "[detectors.transactions]" || !l.starts_with('['))
        .find_map(|l| l.strip_prefix("model = "))
        .expect("anomalyd.toml sets [detectors.transactions] model");
    let model = dir
        .path()
        .join(PathBuf::from(model.trim().trim_matches('"')));
    std::fs::create_dir_all(model.parent().unwrap()).unwrap();
    let trained = anomalyd(dir.path())
        .args(["train", "--synthetic", "42", "--out"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(trained.status.success(), "{trained:?}");
    // "model 0123456789ab written to ..."
    let summary = String::from_utf8(trained.stdout).unwrap();
    let id = summary
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("train printed {summary:?}"))
        .to_owned();
    (dir, id)
}

#[test]
fn check_config_examples_print_what_readme_shows() {
    let readme = readme();
    let sessions: Vec<Vec<Step>> = text_blocks(&readme)
        .iter()
        .filter_map(|block| steps(block))
        .filter(|steps| {
            steps
                .iter()
                .any(|s| s.command.contains("anomalyd check-config"))
        })
        .collect();
    let (dir, _) = scratch();
    let mut checked = Vec::new();
    for step in sessions.iter().flatten() {
        let mut words = words(&step.command).into_iter().peekable();
        let mut env = Vec::new();
        while let Some((name, value)) = words.peek().and_then(|w| w.split_once('=')) {
            env.push((name.to_owned(), value.to_owned()));
            words.next();
        }
        let words: Vec<String> = words.collect();
        let args: Vec<&str> = words.iter().map(String::as_str).collect();
        match args[..] {
            ["sed", "-i", script, file] => sed(dir.path(), script, file),
            ["git", "checkout", file] => {
                std::fs::copy(repo().join(file), dir.path().join(file)).unwrap();
            }
            ["anomalyd", ref rest @ ..] => {
                let out = anomalyd(dir.path())
                    .args(rest)
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .output()
                    .unwrap();
                let printed = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                let printed: Vec<&str> = printed.lines().collect();
                assert!(
                    printed.len() == step.expected.len()
                        && step
                            .expected
                            .iter()
                            .zip(&printed)
                            .all(|(r, a)| same_line(r, a)),
                    "README says `{}` prints\n{}\nbut it prints\n{}",
                    step.command,
                    step.expected.join("\n"),
                    printed.join("\n")
                );
                let ok = step.expected == ["ok"];
                assert_eq!(
                    out.status.code(),
                    Some(if ok { 0 } else { 78 }),
                    "`{}`: README says a bad configuration exits 78",
                    step.command
                );
                checked.push(step.command.clone());
            }
            _ => panic!(
                "README's check-config session runs `{}`, which this test cannot replay",
                step.command
            ),
        }
    }
    // The two examples README promises: a misspelt key in the file, a bad environment value.
    assert!(
        checked.len() >= 2 && checked.iter().any(|c| c.starts_with("ANOMALYD_")),
        "README's check-config examples are missing: {checked:?}"
    );
}

#[test]
fn readme_quotes_the_seed_models_real_id() {
    let readme = readme();
    let (_dir, id) = scratch();
    // Model ids are the only 12-hex-digit words in README.
    let quoted: Vec<&str> = readme
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| {
            w.len() == 12
                && w.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
                && w.chars().any(|c| c.is_ascii_digit())
        })
        .collect();
    assert!(!quoted.is_empty(), "README quotes no model id");
    let wrong: Vec<&&str> = quoted.iter().filter(|w| **w != id).collect();
    assert!(
        wrong.is_empty(),
        "`anomalyd train --synthetic 42` gives model {id}, README quotes {wrong:?}"
    );
}
