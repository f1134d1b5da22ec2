//! A tiny sweep end to end through the binary: dry run, run, table; the same sweep as two shards
//! merged gives the same table; a rerun skips finished runs; malformed specs fail clearly.

mod common;
use common::{ditkd, spec_text, sweep_killed_when, table_rows, write_spec};

#[test]
fn tiny_sweep_runs_shards_merge_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let spec = &write_spec(root, "tiny.yaml", &spec_text());

    let (rc, out, err) = ditkd(&["sweep", spec, "--dry-run"]);
    assert_eq!(rc, 0, "{err}");
    let planned = out
        .lines()
        .filter(|l| l.contains(" kd ") || l.contains(" scratch "))
        .count();
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
    let (rc, _, err) = ditkd(&[
        "merge",
        "--out",
        m.to_str().unwrap(),
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(table_rows(&m), rows, "merged shards equal the local sweep");

    // 3 steps leave every student at chance: the guard refuses a law, naming the remedy.
    let (rc, _, err) = ditkd(&["fit", full.to_str().unwrap(), "--bootstrap", "5"]);
    assert_eq!(rc, 1, "{err}");
    assert!(
        err.contains("students have not learned") && err.contains("distill.steps"),
        "{err}"
    );

    // Rerunning skips finished runs (their summaries, training times included, stay as they were).
    let before = std::fs::read_to_string(full.join("runs.csv")).unwrap();
    let (rc, _, err) = ditkd(&["sweep", spec, "--out", full.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(full.join("runs.csv")).unwrap(),
        before
    );
}

/// Distillation setups share one sweep: each is a run per shape and seed under its own name, in
/// the table's mode column and in the run directories, with the loss its name says.
#[test]
fn setups_run_side_by_side_under_their_own_names() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let text = spec_text().replace("modes: [kd, scratch]", "modes: [kd, feat, mi1]");
    let spec = &write_spec(root, "setups.yaml", &text);
    let out = root.join("out");
    let (rc, _, err) = ditkd(&["sweep", spec, "--out", out.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    let csv = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "mode").unwrap();
    let mut count = std::collections::BTreeMap::new();
    for l in lines {
        *count
            .entry(l.split(',').nth(col).unwrap().to_string())
            .or_insert(0) += 1;
    }
    let n = count["kd"];
    assert!(
        n >= 2 && count["feat"] == n && count["mi1"] == n,
        "{count:?}"
    );
    for entry in std::fs::read_dir(out.join("runs")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let cfg: distill::run::DistillConfig =
            serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("config.yaml")).unwrap())
                .unwrap();
        let (feat, map) = (cfg.kd.feat, cfg.kd.map);
        use distill::kd::FeatMap::*;
        match name.rsplit('-').nth(1).unwrap() {
            "kd" => assert!(feat == 0.0 && map == OneToOne, "{name}"),
            "feat" => assert!(feat > 0.0 && map == OneToOne, "{name}"),
            "mi1" => assert!(feat > 0.0 && map == ManyToOne, "{name}"),
            other => panic!("{name}: setup `{other}`"),
        }
    }
}

/// Two shards writing into one results directory at the same time lose or duplicate no row.
#[test]
fn concurrent_shards_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let spec = &write_spec(root, "tiny.yaml", &spec_text());
    let reference = root.join("reference");
    let (rc, _, err) = ditkd(&["sweep", spec, "--out", reference.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    let rows = table_rows(&reference);

    let shared = root.join("shared");
    let spawn = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ditkd"))
            .args(args)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let out = shared.to_str().unwrap();
    let mut a = spawn(&["sweep", spec, "--shard", "1/2", "--out", out]);
    let mut b = spawn(&["sweep", spec, "--shard", "2/2", "--out", out]);
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    assert_eq!(
        table_rows(&shared),
        rows,
        "concurrent shards in one directory"
    );
}

/// A sweep killed with SIGKILL in the middle of a run's training (after a checkpoint, before the
/// run's end) and resumed ends with the same table as an uninterrupted one.
#[test]
fn sigkill_during_training_then_resume_equals_uninterrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    const STEPS: u64 = 400; // checkpoints every 100 steps: a kill lands between two of them
    let spec = root.join("long.yaml");
    let text = spec_text()
        .replace("steps: 3,", &format!("steps: {STEPS},"))
        .replace("depth: [1, 2]", "depth: [1]");
    std::fs::write(&spec, text).unwrap();
    let spec = spec.to_str().unwrap();
    let reference = root.join("reference");
    let (rc, _, err) = ditkd(&["sweep", spec, "--out", reference.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");

    let killed = root.join("killed");
    // Kill once some run holds a mid-training checkpoint and no summary.
    let at = sweep_killed_when(spec, &killed, "mid-training checkpoint", |dir| {
        std::fs::read_dir(dir.join("runs"))
            .ok()?
            .flatten()
            .find_map(|e| {
                let state = std::fs::read_to_string(e.path().join("checkpoint/state.json")).ok()?;
                let step =
                    serde_json::from_str::<serde_json::Value>(&state).ok()?["step"].as_u64()?;
                (step < STEPS && !e.path().join("summary.json").exists()).then_some(step)
            })
    });
    assert!(at > 0 && at < STEPS);
    let (rc, _, err) = ditkd(&["sweep", spec, "--out", killed.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(
        table_rows(&killed),
        table_rows(&reference),
        "killed at step {at} and resumed equals uninterrupted"
    );

    // A directory whose finished runs another build wrote is not continued (its table would mix
    // code versions) unless asked to.
    let run = std::fs::read_dir(reference.join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("summary.json").exists())
        .unwrap();
    let p = run.join("summary.json");
    let mut s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    s["code_version"] = "src-000000000000".into();
    std::fs::write(&p, s.to_string()).unwrap();
    let (rc, _, err) = ditkd(&["sweep", spec, "--out", reference.to_str().unwrap()]);
    assert_eq!(rc, 1, "{err}");
    assert!(
        err.contains("another build")
            && err.contains("src-000000000000")
            && err.contains(&run.file_name().unwrap().to_string_lossy().to_string())
            && err.contains("--allow-mixed-code"),
        "{err}"
    );
    let (rc, _, err) = ditkd(&[
        "sweep",
        spec,
        "--out",
        reference.to_str().unwrap(),
        "--allow-mixed-code",
    ]);
    assert_eq!(rc, 0, "{err}");
}

/// A sweep whose runs all fail exits non-zero with each run's reason, and their metrics are null.
/// A results directory holding another sweep is refused before anything runs.
#[test]
fn failed_runs_exit_non_zero_and_other_sweeps_directories_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // A learning rate no run survives: the spec is valid, every run diverges (a deterministic
    // failure, recorded and never retried).
    let spec = root.join("failing.yaml");
    let text = spec_text().replace("warmup_steps: 1}", "warmup_steps: 1, lr: 1.0e9}");
    assert!(text.contains("lr: 1.0e9"));
    std::fs::write(&spec, &text).unwrap();
    let out = root.join("failing");
    let (rc, _, err) = ditkd(&[
        "sweep",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("runs failed"), "{err}");
    // Each failed run is listed with its reason.
    let listed = err
        .lines()
        .filter(|l| l.starts_with("diverged d") && l.contains("loss is"))
        .count();
    let planned = std::fs::read_dir(out.join("runs")).unwrap().count();
    assert_eq!(listed, planned, "{err}");
    let csv = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    if let Some(i) = header.iter().position(|h| *h == "fid_proxy") {
        assert!(
            csv.lines()
                .skip(1)
                .all(|l| l.split(',').nth(i).unwrap_or("").is_empty()),
            "failed rows carry no metric: {csv}"
        );
    }
    assert!(
        csv.lines().skip(1).all(|l| l.contains(",diverged,")),
        "{csv}"
    );

    // The same directory for a sweep of another name: refused, its spec untouched.
    let before = std::fs::read_to_string(out.join("spec.yaml")).unwrap();
    let other = root.join("other.yaml");
    std::fs::write(&other, text.replace("name: tiny", "name: other")).unwrap();
    let (rc, _, err) = ditkd(&[
        "sweep",
        other.to_str().unwrap(),
        "--dry-run",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(rc, 1);
    assert!(err.contains("holds sweep `tiny`"), "{err}");
    // The same sweep with other settings: refused unless --allow-changed-spec.
    let changed = root.join("changed.yaml");
    std::fs::write(&changed, text.replace("seeds: [0]", "seeds: [0, 1]")).unwrap();
    let (rc, _, err) = ditkd(&[
        "sweep",
        changed.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(rc, 1);
    assert!(err.contains("--allow-changed-spec"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("spec.yaml")).unwrap(),
        before
    );
    let (rc, _, err) = ditkd(&[
        "sweep",
        changed.to_str().unwrap(),
        "--dry-run",
        "--allow-changed-spec",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "{err}");
}

#[test]
fn malformed_specs_fail_with_their_own_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let base = "name: s\nteacher: t\nbudgets: [{params: 100k}]\naxes: {depth: [2], width: [64], heads: [2]}\ndistill: {modes: [kd], steps: 5}\nseeds: [0]\n";
    let cases: Vec<(String, &str)> = vec![
        (base.replace("name: s", "name: s\ncolour: red"), "colour"),
        (base.replace("steps: 5", "steps: five"), "steps"),
        (base.replace("[{params: 100k}]", "[{params: lots}]"), "lots"),
        (
            base.replace("[{params: 100k}]", "[{params: 100k, tol: 2}]"),
            "tol",
        ),
        (base.replace("[{params: 100k}]", "[]"), "budgets"),
        (base.replace("modes: [kd]", "modes: [magic]"), "magic"),
        (base.replace("modes: [kd]", "modes: []"), "modes"),
        (base.replace("seeds: [0]", "seeds: []"), "seeds"),
        (base.replace("depth: [2]", "depth: [0]"), "depth"),
        (
            base.replace("width: [64]", "width: {from: 64, to: 32, step: 8}"),
            "width",
        ),
        (base.replace("heads: [2]", "heeds: [2]"), "heeds"),
        ("name: [unclosed\n".to_string(), "line"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let p = tmp.path().join(format!("bad{i}.yaml"));
        std::fs::write(&p, text).unwrap();
        let (rc, _, err) = ditkd(&["sweep", p.to_str().unwrap(), "--dry-run"]);
        assert_eq!(rc, 1, "case {i} should fail");
        assert!(
            err.contains(&format!("bad{i}.yaml")) && err.contains(needle),
            "case {i}: {err}"
        );
    }
}

/// A teaching-assistant chain in one sweep (`distill.ta`): the sweep trains the assistant first
/// (output KD from the teacher) into the cache, once per seed, then its `ta` students learn from it
/// and are charged its training FLOPs. Killed with SIGKILL while the assistant trains, the sweep
/// resumes it from its checkpoint and ends with exactly the table of an uninterrupted sweep.
#[test]
fn a_teaching_assistant_chain_trains_first_is_charged_and_resumes_after_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let cache = root.join("cache");
    let text = spec_text()
        .replace(
            &format!("cache_dir: {}", common::fixtures().cache().display()),
            &format!("cache_dir: {}", cache.display()),
        )
        .replace(
            "distill: {modes: [kd, scratch], steps: 3, batch_size: 8, warmup_steps: 1}",
            "distill: {modes: [kd, ta], steps: 3, batch_size: 8, warmup_steps: 1, ta: {depth: 1, width: 24, heads: 2, steps: 600}}",
        );
    assert!(text.contains("ta: {depth: 1"), "{text}");
    let spec = &write_spec(root, "ta.yaml", &text);
    let assistants = cache.join("assistants");
    let in_training = |_: &std::path::Path| -> Option<std::path::PathBuf> {
        std::fs::read_dir(&assistants)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.is_dir()
                    && p.join("checkpoint/state.json").exists()
                    && !p.join("summary.json").exists()
            })
    };
    let killed = root.join("killed");
    let (rc, out, err) = ditkd(&[
        "sweep",
        spec,
        "--out",
        killed.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("teaching assistant d1-w24-h2"), "{out}");
    let assistant = sweep_killed_when(spec, &killed, "the assistant mid-training", in_training);
    assert!(!killed.join("runs").read_dir().unwrap().flatten().any(|e| e
        .file_name()
        .to_string_lossy()
        .contains("-ta-")
        && e.path().join("summary.json").exists()));
    let (rc, _, err) = ditkd(&["sweep", spec, "--out", killed.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");

    // The assistant: finished, its students' teacher, its FLOPs in their compute.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(assistant.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["status"], "ok");
    assert_eq!(summary["steps"], 600);
    let ta_flops = summary["train_flops"].as_f64().unwrap();
    let ta_runs: Vec<_> = std::fs::read_dir(killed.join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("-ta-s0"))
        .collect();
    assert!(!ta_runs.is_empty());
    for r in &ta_runs {
        let cfg = std::fs::read_to_string(r.join("config.yaml")).unwrap();
        assert!(
            cfg.contains(&format!("teacher: {}", assistant.display())),
            "{cfg}"
        );
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(r.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(s["mode"], "ta", "{s}");
        let own = s["train_flops"].as_f64().unwrap() - ta_flops;
        assert!(own > 0.0 && own < ta_flops, "{s}");
    }

    // The same sweep uninterrupted, on a fresh cache at the same path: the same table.
    std::fs::rename(&cache, root.join("cache-killed")).unwrap();
    let full = root.join("full");
    let (rc, _, err) = ditkd(&["sweep", spec, "--out", full.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(table_rows(&killed), table_rows(&full));
}

/// `distill.flop_matched`: in a grid sweep every KD run is also evaluated where its training FLOPs
/// (the teacher's forward included) equal its scratch twin's at the last step, so the report
/// compares the setups (kd, mi1, scratch) at equal steps and at equal training FLOPs from measured
/// points, with P(best) per shape.
#[test]
fn flop_matched_grid_sweeps_compare_setups_at_equal_compute() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let text = spec_text().replace(
        "distill: {modes: [kd, scratch], steps: 3, batch_size: 8, warmup_steps: 1}",
        "distill: {modes: [kd, mi1, scratch], steps: 8, batch_size: 8, warmup_steps: 1, flop_matched: true}",
    );
    assert!(text.contains("flop_matched: true"), "{text}");
    let spec = &write_spec(root, "fm.yaml", &text);
    let out = root.join("out");
    let (rc, _, err) = ditkd(&["sweep", spec, "--out", out.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    let curve = |run: &std::path::Path| -> Vec<(u64, f64)> {
        std::fs::read_to_string(run.join("curve.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["step"].as_u64().unwrap(),
                    v["train_flops"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let runs: Vec<_> = std::fs::read_dir(out.join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    let mut pairs = 0;
    for kd in runs.iter().filter(|p| p.to_string_lossy().contains("-kd-")) {
        let name = kd.file_name().unwrap().to_string_lossy().to_string();
        let twin = name.split_once('-').unwrap().1.replace("-kd-", "-scratch-");
        let scratch = runs
            .iter()
            .find(|p| p.to_string_lossy().ends_with(&twin))
            .unwrap_or_else(|| panic!("no scratch twin of {name}"));
        let target = curve(scratch).last().unwrap().1;
        let kd_curve = curve(kd);
        let (last_step, last_flops) = *kd_curve.last().unwrap();
        let per_step = last_flops / last_step as f64;
        assert!(
            kd_curve
                .iter()
                .any(|&(s, f)| s < 8 && (f - target).abs() <= 0.5 * per_step),
            "{name}: no point at scratch's {target:.3e} FLOPs in {kd_curve:?}"
        );
        pairs += 1;
    }
    assert!(pairs >= 2);
    let (rc, _, err) = ditkd(&["report", out.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("equal training FLOPs") && !report.contains("no matched point"),
        "{report}"
    );
    // The setups side by side, each with P(best) at equal steps and at scratch's FLOPs.
    let setups = report
        .split("## Distillation setups")
        .nth(1)
        .unwrap_or_else(|| panic!("no setups section:\n{report}"));
    for row in ["| kd |", "| mi1 |", "| scratch |"] {
        assert!(setups.contains(row), "{row} missing:\n{setups}");
    }
    assert!(
        setups.contains("`scratch`'s total") && setups.contains("Best at equal steps"),
        "{setups}"
    );
}
