//! The floors of the crate, and the test that keeps imports going down.
//!
//! Every module sits on one floor of [`FLOORS`] (lowest first). A module
//! may import (`use crate::x…`, or an inline `crate::x::…` path) only from a
//! lower floor, or from inside its own module directory. An import from the
//! same floor or a higher one is a back edge: it is what closes an import
//! circle, and the test below fails naming the file, the line and the edge.
//! Test code (`#[cfg(test)] mod …` and `tests.rs` files) is not checked: a
//! unit test may build its fixtures from anything.

/// The floors, lowest first. A new module gets a line here (the test fails
/// until it has one).
pub(crate) const FLOORS: &[&[&str]] = &[
    // Ground: no imports from the crate (error, time, the AWS clients, the
    // concurrency limiter).
    &["error", "clock", "aws", "aimd"],
    // The pure state machine. Below the other domain modules because
    // quarantine's schedule is stated in saga terms.
    &["saga"],
    &["quarantine", "secrets", "accounts", "seal", "preflight"],
    // The edges: credential connectors (no config, doctor or engine), the
    // table, the queue, metrics.
    &["connectors", "store", "queue", "metrics"],
    &["config", "init"],
    &["intake", "config_source"],
    &["notify", "securityhub", "doctor"],
    // `keyturn report`: reads config, the table and IAM; nothing imports it but the CLI.
    &["report"],
    // The engine's jobs, each a type holding only what it uses. `shared`
    // holds what they all use (table, queues, lanes, rotations, timings).
    &["shared"],
    &["finalize", "attention"],
    // `commands` defines `Request`, which triggers and requests start a
    // saga with; it marks findings and announces through `finalize`. The
    // sweeper hands evidence checks to `attention`.
    &["commands", "sweeper"],
    // The console handover of a by-hand credential: hands over through
    // `commands`; the step pipeline's prompt and intake call it.
    &["handover"],
    // Intake handling: `triggers` defines the `Intake` job, `requests`
    // adds its request-API and exposed-key part.
    &["triggers"],
    &["requests"],
    // The step pipeline, which hands over to finalize, attention and
    // intake, and the `Engine` composed of all the jobs.
    &["engine"],
    &["worker", "lambda", "app"],
    &["cli"],
];

#[cfg(test)]
mod tests {
    use super::FLOORS;
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    fn floor_of(module: &str) -> Option<usize> {
        FLOORS.iter().position(|f| f.contains(&module))
    }

    /// The line without its `//` comment (a `//` right after `:` is a URL
    /// in a string, not a comment).
    fn code(line: &str) -> &str {
        let b = line.as_bytes();
        let mut i = 0;
        while let Some(at) = line[i..].find("//") {
            let at = i + at;
            if at == 0 || b[at - 1] != b':' {
                return &line[..at];
            }
            i = at + 2;
        }
        line
    }

    /// The top-level module names a `use crate::…;` statement (joined to one
    /// line) imports: `crate::a::X` → a; `crate::{a::X, b::{Y, Z}}` → a, b.
    fn use_targets(stmt: &str) -> Vec<String> {
        let Some(rest) = stmt.split_once("crate::").map(|(_, r)| r.trim_start()) else { return vec![] };
        let Some(group) = rest.strip_prefix('{') else { return vec![ident(rest)] };
        let (mut depth, mut item, mut out) = (0usize, String::new(), Vec::new());
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => out.push(std::mem::take(&mut item)),
                _ if depth == 0 => item.push(c),
                _ => {}
            }
        }
        out.push(item);
        out.iter().map(|s| ident(s.trim())).filter(|s| !s.is_empty()).collect()
    }

    fn ident(s: &str) -> String {
        s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
    }

    /// Every `(line number, imported module)` of one source file, up to its
    /// test module.
    fn imports(text: &str) -> Vec<(usize, String)> {
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Vec::new();
        let mut stmt: Option<(usize, String)> = None;
        for (i, raw) in lines.iter().enumerate() {
            let t = raw.trim_start();
            let next = lines.get(i + 1).map_or("", |l| l.trim_start());
            if t.starts_with("#[cfg(test)]") && (next.starts_with("mod ") || next.starts_with("pub mod ")) {
                break;
            }
            let line = code(raw);
            let is_use = {
                let t = line.trim_start();
                // `pub use`, `pub(crate) use`, `pub(super) use`, …
                let t = match t.strip_prefix("pub") {
                    Some(r) if r.starts_with('(') => r.split_once(')').map_or(t, |(_, r)| r),
                    Some(r) => r,
                    None => t,
                }
                .trim_start();
                t.starts_with("use crate::")
            };
            if stmt.is_none() && is_use {
                stmt = Some((i + 1, String::new()));
            }
            if let Some((start, s)) = stmt.as_mut() {
                s.push_str(line);
                s.push(' ');
                if line.contains(';') {
                    out.extend(use_targets(s).into_iter().map(|m| (*start, m)));
                    stmt = None;
                }
                continue;
            }
            // Inline paths: `crate::x::…` not preceded by an identifier, `::` or `/`.
            let mut from = 0;
            while let Some(at) = line[from..].find("crate::") {
                let at = from + at;
                let before = line[..at].chars().next_back();
                if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '$' || c == '/') {
                    out.push((i + 1, ident(&line[at + "crate::".len()..])));
                }
                from = at + "crate::".len();
            }
        }
        out
    }

    /// The scanner reads grouped, nested, multi-line and inline imports.
    #[test]
    fn scanner_reads_every_form() {
        let text = "use crate::a::X;\npub(super) use crate::{b::Y, c::{self, Z}};\nuse crate::{\n    d::W,\n    e,\n};\nfn f() { crate::g::h(); x::crate::no(); } // crate::comment\nlet u = \"https://crate::not\";\n#[cfg(test)]\nmod tests { use crate::t::T; }\n";
        let found = imports(text);
        let got: Vec<(usize, &str)> = found.iter().map(|(l, m)| (*l, m.as_str())).collect();
        assert_eq!(got, [(1, "a"), (2, "b"), (2, "c"), (3, "d"), (3, "e"), (7, "g")]);
    }

    /// No module imports from its own floor or a higher one: the import
    /// graph of `worker/src` has no circle. The message names each back edge.
    #[test]
    fn imports_only_go_down_the_floors() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        files.sort();
        assert!(files.len() > 30, "the scan sees the crate");
        let mut back_edges = Vec::new();
        let mut edges = 0;
        for f in &files {
            let rel = f.strip_prefix(&src).unwrap();
            let first = rel.components().next().unwrap().as_os_str().to_str().unwrap();
            let module = first.trim_end_matches(".rs");
            // The crate root and the binary declare modules; `tests.rs` files are test modules.
            if ["lib", "main", "layers"].contains(&module) || rel.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let Some(floor) = floor_of(module) else {
                back_edges.push(format!("{}: module {module} has no floor in layers::FLOORS", rel.display()));
                continue;
            };
            let text = std::fs::read_to_string(f).unwrap();
            for (line, target) in imports(&text) {
                if target == module || ["self", "super"].contains(&target.as_str()) {
                    continue;
                }
                edges += 1;
                match floor_of(&target) {
                    Some(t) if t < floor => {}
                    Some(t) => back_edges.push(format!(
                        "{}:{line}: {module} (floor {floor}) imports {target} (floor {t}){}",
                        rel.display(),
                        if t == floor { ", the same floor" } else { "" }
                    )),
                    None => back_edges.push(format!("{}:{line}: {module} imports {target}, which has no floor", rel.display())),
                }
            }
        }
        assert!(edges > 100, "the scan sees the imports ({edges})");
        assert!(back_edges.is_empty(), "{} import(s) against the floors (see layers.rs):\n{}", back_edges.len(), back_edges.join("\n"));
    }
}
