//! A tiny sweep end to end through the binary: dry run, run, table; the same sweep as two shards
//! merged gives the same table; a rerun skips finished runs; malformed specs fail clearly.

mod common;
use common::{ditkd, fixtures, spec_text, table_rows};

#[test]
fn tiny_sweep_runs_shards_merge_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fixtures(root);
    let spec = root.join("tiny.yaml");
    std::fs::write(&spec, spec_text(root)).unwrap();
    let spec = spec.to_str().unwrap();

    let (rc, out, err) = ditkd(&["sweep", spec, "--dry-run"]);
    assert_eq!(rc, 0, "{err}");
    let planned = out.lines().filter(|l| l.contains(" kd ") || l.contains(" scratch ")).count();
    assert!(planned >= 4, "{out}");

    let full = root.join("full");
    let (rc, _, err) = ditkd(&["sweep", spec, "--out", full.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    let rows = table_rows(&full);
    assert_eq!(rows.len(), planned);
    assert!(full.join("runs.parquet").exists());
    let (rc, out, err) = ditkd(&["table", full.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("fid_proxy_mean"), "{out}");

    // Two shards into their own directories, merged.
    let (a, b, m) = (root.join("a"), root.join("b"), root.join("merged"));
    for (s, d) in [("1/2", &a), ("2/2", &b)] {
        let (rc, _, err) = ditkd(&["sweep", spec, "--shard", s, "--out", d.to_str().unwrap()]);
        assert_eq!(rc, 0, "{err}");
    }
    let (rc, _, err) = ditkd(&["merge", "--out", m.to_str().unwrap(), a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(table_rows(&m), rows, "merged shards equal the local sweep");

    // Rerunning skips finished runs (their summaries, training times included, stay as they were).
    let before = std::fs::read_to_string(full.join("runs.csv")).unwrap();
    let (rc, _, err) = ditkd(&["sweep", spec, "--out", full.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(std::fs::read_to_string(full.join("runs.csv")).unwrap(), before);
}

/// Two shards writing into one results directory at the same time lose or duplicate no row; a
/// sweep killed with SIGKILL mid-run and resumed ends with the same table as an uninterrupted one.
#[test]
fn concurrent_shards_and_sigkill_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fixtures(root);
    let spec = root.join("tiny.yaml");
    std::fs::write(&spec, spec_text(root)).unwrap();
    let spec = spec.to_str().unwrap();
    let reference = root.join("reference");
    let (rc, _, err) = ditkd(&["sweep", spec, "--out", reference.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    let rows = table_rows(&reference);

    let shared = root.join("shared");
    let spawn = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ditkd")).args(args).stderr(std::process::Stdio::null()).spawn().unwrap()
    };
    let out = shared.to_str().unwrap();
    let mut a = spawn(&["sweep", spec, "--shard", "1/2", "--out", out]);
    let mut b = spawn(&["sweep", spec, "--shard", "2/2", "--out", out]);
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    assert_eq!(table_rows(&shared), rows, "concurrent shards in one directory");

    // Kill a sweep as soon as its first run has a checkpoint, then resume it.
    let killed = root.join("killed");
    let mut p = spawn(&["sweep", spec, "--out", killed.to_str().unwrap()]);
    let t0 = std::time::Instant::now();
    loop {
        let started = std::fs::read_dir(killed.join("runs")).ok().is_some_and(|d| {
            d.flatten().any(|e| e.path().join("checkpoint").exists() || e.path().join("summary.json").exists())
        });
        if started || t0.elapsed().as_secs() > 600 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    p.kill().unwrap(); // SIGKILL
    p.wait().unwrap();
    let (rc, _, err) = ditkd(&["sweep", spec, "--out", killed.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(table_rows(&killed), rows, "killed and resumed equals uninterrupted");
}

#[test]
fn malformed_specs_fail_with_their_own_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let base = "name: s\nteacher: t\nbudgets: [{params: 100k}]\naxes: {depth: [2], width: [64], heads: [2]}\ndistill: {modes: [kd], steps: 5}\nseeds: [0]\n";
    let cases: Vec<(String, &str)> = vec![
        (base.replace("name: s", "name: s\ncolour: red"), "colour"),
        (base.replace("steps: 5", "steps: five"), "steps"),
        (base.replace("[{params: 100k}]", "[{params: lots}]"), "lots"),
        (base.replace("[{params: 100k}]", "[{params: 100k, tol: 2}]"), "tol"),
        (base.replace("[{params: 100k}]", "[]"), "budgets"),
        (base.replace("modes: [kd]", "modes: [magic]"), "magic"),
        (base.replace("modes: [kd]", "modes: []"), "modes"),
        (base.replace("seeds: [0]", "seeds: []"), "seeds"),
        (base.replace("depth: [2]", "depth: [0]"), "depth"),
        (base.replace("width: [64]", "width: {from: 64, to: 32, step: 8}"), "width"),
        (base.replace("heads: [2]", "heeds: [2]"), "heeds"),
        ("name: [unclosed\n".to_string(), "line"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let p = tmp.path().join(format!("bad{i}.yaml"));
        std::fs::write(&p, text).unwrap();
        let (rc, _, err) = ditkd(&["sweep", p.to_str().unwrap(), "--dry-run"]);
        assert_eq!(rc, 1, "case {i} should fail");
        assert!(err.contains(&format!("bad{i}.yaml")) && err.contains(needle), "case {i}: {err}");
    }
}
