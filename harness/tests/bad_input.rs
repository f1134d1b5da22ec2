//! Bad input as data (`tests/bad_input/cases.yaml`): every case exits with its code, names what is
//! wrong, never panics, and leaves nothing half-written behind.

mod common;
use common::ditkd;

use std::path::Path;
use std::process::Command;

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Cases {
    base: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    args: Vec<String>,
    /// Edits of the base spec: (from, to), each of which must match.
    #[serde(default)]
    replace: Vec<(String, String)>,
    /// A spec of its own instead of the base.
    spec: Option<String>,
    #[serde(default = "one")]
    rc: i32,
    #[serde(default)]
    expect: Vec<String>,
    #[serde(default)]
    absent: Vec<String>,
    /// Environment variables of the command (values filled like the arguments).
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
}

fn one() -> i32 {
    1
}

#[test]
fn every_bad_input_is_a_clear_error_and_never_a_panic() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = here.join("..").canonicalize().unwrap();
    let text = std::fs::read_to_string(here.join("tests/bad_input/cases.yaml")).unwrap();
    let all: Cases = serde_yaml_ng::from_str(&text).unwrap();
    assert!(all.cases.len() >= 40, "{} cases", all.cases.len());
    let teacher = root.join("results/teachers/fmnist-d4-w128-p4");
    let mut failures = Vec::new();
    for case in &all.cases {
        let tmp = tempfile::tempdir().unwrap();
        let fill = |s: &str| {
            s.replace("{root}", &root.display().to_string())
                .replace("{teacher}", &teacher.display().to_string())
                .replace("{tmp}", &tmp.path().display().to_string())
        };
        let mut spec = case.spec.clone().unwrap_or_else(|| all.base.clone());
        for (from, to) in &case.replace {
            assert!(
                spec.contains(from.as_str()),
                "case {}: `{from}` is not in the spec",
                case.name
            );
            spec = spec.replacen(from.as_str(), to, 1);
        }
        let spec_path = tmp.path().join(format!("{}.yaml", case.name));
        std::fs::write(&spec_path, fill(&spec)).unwrap();
        let args: Vec<String> = case
            .args
            .iter()
            .map(|a| fill(a).replace("{spec}", &spec_path.display().to_string()))
            .collect();
        // Its own environment and working directory: not the plain `common::ditkd`.
        let out = Command::new(env!("CARGO_BIN_EXE_ditkd"))
            .args(&args)
            .envs(case.env.iter().map(|(k, v)| (k, fill(v))))
            .current_dir(tmp.path())
            .output()
            .unwrap();
        let (rc, err) = (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).to_string(),
        );
        let mut why = Vec::new();
        if rc != case.rc {
            why.push(format!("exit {rc}, expected {}", case.rc));
        }
        if err.contains("panicked at") {
            why.push("panicked".into());
        }
        for e in &case.expect {
            if !err.contains(e.as_str()) {
                why.push(format!("stderr lacks `{e}`"));
            }
        }
        if err.len() > 2000 {
            why.push(format!("the error is {} bytes long", err.len()));
        }
        for a in &case.absent {
            if Path::new(&fill(a)).exists() {
                why.push(format!("{} was created", fill(a)));
            }
        }
        if std::env::var_os("DITKD_PRINT_CASES").is_some() {
            // The table of the closing note: case, exit code, the error's first line.
            let first = err
                .lines()
                .next()
                .unwrap_or("")
                .replace(&tmp.path().display().to_string(), "$TMP")
                .replace(&root.display().to_string(), "$ROOT");
            println!("| {} | {rc} | {} |", case.name, first.replace('|', "/"));
        }
        if !why.is_empty() {
            failures.push(format!(
                "{}: {}\n    args: {args:?}\n    stderr: {}",
                case.name,
                why.join("; "),
                err.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.cases.len(),
        failures.join("\n")
    );
}

/// A spec of many megabytes is refused by its size, not echoed back in the error.
#[test]
fn a_huge_spec_is_not_echoed() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("huge.yaml");
    std::fs::write(&p, "x".repeat(10 << 20)).unwrap();
    let (rc, _, err) = ditkd(&["sweep", p.to_str().unwrap(), "--dry-run"]);
    assert_eq!(rc, 1);
    assert!(
        err.contains("huge.yaml") && err.contains("not a sweep spec") && err.len() < 500,
        "{err}"
    );
    // Just under the size limit, a spec that is one long string: the parse error is clipped.
    std::fs::write(&p, "y".repeat(900 << 10)).unwrap();
    let (rc, _, err) = ditkd(&["sweep", p.to_str().unwrap(), "--dry-run"]);
    assert_eq!(rc, 1);
    assert!(
        err.contains("huge.yaml") && err.len() < 1000,
        "{} bytes: {}",
        err.len(),
        &err[..err.len().min(300)]
    );
}

/// Every argument of every subcommand says what it is in `--help`.
#[test]
fn help_describes_every_argument() {
    let (_, top, _) = ditkd(&["--help"]);
    let subcommands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(subcommands.len() >= 15, "{subcommands:?}");
    let mut bare = Vec::new();
    for sub in &subcommands {
        let (_, text, _) = ditkd(&[sub.as_str(), "--help"]);
        // An argument line of clap's help is `  <NAME>  description` or `  --flag <V>  description`,
        // or (long help) the name alone with the description indented on the next line.
        let lines: Vec<&str> = text.lines().collect();
        let indent = |l: &str| l.len() - l.trim_start().len();
        // An option (`-x`, `--flag`) or a positional (`<NAME>`, `[NAME]`); not a bullet of a
        // description (`- value: ...`) nor a `[default: ...]` / `[possible values: ...]` note.
        let is_arg = |t: &str| {
            (t.starts_with('-') && !t.starts_with("- "))
                || t.starts_with('<')
                || (t.starts_with('[') && !t.starts_with("[default") && !t.starts_with("[possible"))
        };
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim();
            if !l.starts_with("  ") || !is_arg(t) {
                continue;
            }
            let same_line = t.contains("  ");
            let next_line = lines.get(i + 1).is_some_and(|n| {
                !n.trim().is_empty() && indent(n) > indent(l) && !is_arg(n.trim())
            });
            if !same_line && !next_line {
                bare.push(format!("{sub}: {t}"));
            }
        }
    }
    assert!(
        bare.is_empty(),
        "arguments without a description:\n{}",
        bare.join("\n")
    );
}
