//! Shared fixtures of the harness's end-to-end tests: a tiny teacher, a tiny feature net, a tiny spec.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use distill::testkit;

/// Starts `ditkd sweep SPEC --out OUT`, polls every 2 ms until `ready(OUT)` gives a value, then
/// kills the sweep with SIGKILL and returns that value. Fails if the sweep ends first or nothing is
/// ready within 10 minutes (`what` names the awaited state in the message).
pub fn sweep_killed_when<T>(
    spec: &str,
    out: &Path,
    what: &str,
    ready: impl Fn(&Path) -> Option<T>,
) -> T {
    let mut p = Command::new(env!("CARGO_BIN_EXE_ditkd"))
        .args(["sweep", spec, "--out", out.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let value = loop {
        if let Some(v) = ready(out) {
            break v;
        }
        assert!(t0.elapsed().as_secs() < 600, "no {what} appeared");
        assert!(
            p.try_wait().unwrap().is_none(),
            "the sweep finished before {what} was seen"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    p.kill().unwrap(); // SIGKILL
    p.wait().unwrap();
    value
}

pub fn ditkd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ditkd"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The tiny teacher and feature net (the shapes of `distill::testkit`), trained once for every test
/// of every test binary of this build into `CARGO_TARGET_TMPDIR` (absolute, so the `ditkd`
/// processes a test starts, Slurm jobs included, find them) and shared read-only, with a shared
/// cache directory for their cached outputs.
pub fn fixtures() -> &'static testkit::Fixtures {
    static F: OnceLock<testkit::Fixtures> = OnceLock::new();
    F.get_or_init(|| testkit::shared_fixtures(Path::new(env!("CARGO_TARGET_TMPDIR"))).unwrap())
}

/// `text` written to `root/<file>`: the spec path a test hands to `ditkd`.
pub fn write_spec(root: &Path, file: &str, text: &str) -> String {
    let spec = root.join(file);
    std::fs::write(&spec, text).unwrap();
    spec.to_str().unwrap().to_string()
}

/// The tiny spec on the shared fixtures and their shared cache (the cache is keyed by the teacher's
/// and the feature net's hashes and written atomically, so concurrent tests share it safely).
pub fn spec_text() -> String {
    let f = fixtures();
    format!(
        "name: tiny
teacher: {t}
featnet: {n}
cache_dir: {c}
budgets:
  - {{params: 12k, tol: 0.3}}
  - {{params: 20k, tol: 0.3}}
axes:
  depth: [1, 2]
  width: [16, 24]
  heads: [2]
  patch: [7]
constraints: {{min_head_dim: 8}}
distill: {{modes: [kd, scratch], steps: 3, batch_size: 8, warmup_steps: 1}}
seeds: [0]
eval: {{samples: 16, sampler: {{kind: ddim, steps: 2, cfg_scale: 2.0}}, speed: false}}
parallel: {{jobs: 2, threads_per_job: 1}}
",
        t = f.teacher().display(),
        n = f.featnet().display(),
        c = f.cache().display()
    )
}

pub fn table_rows(dir: &Path) -> Vec<String> {
    // Metrics and identity columns, not timings or the commit the binary was built from.
    let text = std::fs::read_to_string(dir.join("runs.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .trim_start_matches('\u{feff}')
        .split(',')
        .collect();
    let keep: Vec<usize> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| {
            !h.contains("wall")
                && !h.contains("fraction")
                && !h.contains("latency")
                && !h.contains("images_per_s")
                && **h != "code_version"
        })
        .map(|(i, _)| i)
        .collect();
    let mut rows: Vec<String> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            keep.iter()
                .map(|&i| f.get(i).copied().unwrap_or(""))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    rows.sort();
    rows
}

/// The tiny spec as a race: one budget of 9 shapes, rungs at 2, 4 and 8 steps, up to 3 seeds.
pub fn race_spec() -> String {
    spec_text()
        .replace(
            "budgets:\n  - {params: 12k, tol: 0.3}\n  - {params: 20k, tol: 0.3}",
            "budgets:\n  - {params: 20k, tol: 0.9}",
        )
        .replace("depth: [1, 2]", "depth: [1, 2, 3]")
        .replace("width: [16, 24]", "width: [16, 24, 32]")
        .replace("steps: 3,", "steps: 8,")
        .replace(
            "seeds: [0]",
            "seeds: [0, 1, 2]\nschedule: {kind: halving, min_steps: 2, eta: 2, keep_p: 0.2, prior_seed_noise: 0.01, final_seeds: 2}",
        )
}

/// The race's stage records, in order.
pub fn stages(dir: &std::path::Path) -> Vec<serde_json::Value> {
    (0..)
        .map_while(|k| std::fs::read_to_string(dir.join(format!("race/stage-{k:03}.json"))).ok())
        .map(|t| serde_json::from_str(&t).unwrap())
        .collect()
}

/// The stage records less their `code_version`: what two sweeps are compared on is their decisions.
pub fn stages_without_version(dir: &std::path::Path) -> Vec<serde_json::Value> {
    stages(dir)
        .into_iter()
        .map(|mut s| {
            s["code_version"] = serde_json::Value::Null;
            s
        })
        .collect()
}
