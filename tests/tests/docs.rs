//! The documentation names only commands and flags that exist: every
//! `keyturn <command> … --flag` in README.md and docs/*.md (code blocks and
//! inline code) is checked against the binary's own `--help`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use keyturn_testkit::env::keyturn_bin;

fn help(args: &[&str]) -> String {
    let out = Command::new(keyturn_bin()).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "keyturn {args:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Code in a markdown text: fenced blocks and inline spans.
fn code(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            out.push(line.to_string());
        } else {
            out.extend(line.split('`').skip(1).step_by(2).map(str::to_string));
        }
    }
    out
}

#[test]
fn every_documented_command_and_flag_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        files.push(e.unwrap().path());
    }
    let top = help(&[]);
    let global: BTreeSet<&str> = ["--config", "--log-format", "--deadline", "--verbose", "--help", "--version"].into();
    // command path -> flags the docs use with it
    let mut uses: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let md = std::fs::read_to_string(f).unwrap();
        for snippet in code(&md) {
            let snippet = snippet.split('#').next().unwrap_or("");
            let mut words = snippet.split_whitespace().skip_while(|w| *w != "keyturn");
            if words.next().is_none() {
                continue;
            }
            let Some(cmd) = words.next().filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !w.starts_with('-')) else { continue };
            let mut path = vec![cmd.to_string()];
            let rest: Vec<&str> = words.collect();
            if cmd == "dlq" {
                if let Some(sub) = rest.first().filter(|w| !w.starts_with('-')) {
                    path.push(sub.to_string());
                }
            }
            let flags = rest
                .iter()
                .filter(|w| w.starts_with("--"))
                .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-').split('=').next().unwrap().to_string());
            uses.entry(path).or_default().extend(flags);
        }
    }
    assert!(uses.len() >= 10, "the scan finds the documented commands: {uses:?}");
    let mut missing = Vec::new();
    for (path, flags) in &uses {
        if !top.contains(&format!("  {}", path[0])) {
            missing.push(format!("command `keyturn {}` is not in keyturn --help", path[0]));
            continue;
        }
        let h = help(&path.iter().map(String::as_str).collect::<Vec<_>>());
        for flag in flags {
            if !global.contains(flag.as_str()) && !h.contains(flag.as_str()) {
                missing.push(format!("`keyturn {} {flag}` is documented but not in its --help", path.join(" ")));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn the_check_can_fail() {
    // A made-up flag is not in the real help text (so the test above can fail).
    assert!(!help(&["rotate"]).contains("--no-such-flag"));
    assert!(!help(&[]).contains("  no-such-command"));
}

/// docs/cli.md's exit-code table, `keyturn --help` and `cli::exit` (what the
/// code returns and the tests assert) list the same codes with the same meanings.
#[test]
fn exit_codes_are_one_table_in_docs_help_and_code() {
    use keyturn::cli::exit::TABLE;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let md = std::fs::read_to_string(root.join("docs/cli.md")).unwrap();
    let rows: BTreeMap<i32, String> = md
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let code = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?.parse().ok()?;
            Some((code, cells.get(2)?.to_string()))
        })
        .collect();
    let codes: Vec<i32> = TABLE.iter().map(|(c, _)| *c).collect();
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), codes, "docs/cli.md lists exactly the codes of cli::exit");
    let top = help(&[]).split_whitespace().collect::<Vec<_>>().join(" ");
    for (code, meaning) in TABLE {
        assert!(rows[&code].starts_with(meaning), "docs/cli.md code {code}: {:?} should begin {meaning:?}", rows[&code]);
        assert!(top.contains(&format!("{code} {meaning}")), "keyturn --help says \"{code} {meaning}\": {top}");
    }
}
