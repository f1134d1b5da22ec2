//! A racing sweep end to end: shapes stop at rungs, contenders continue from their checkpoints,
//! seeds are added at the last rung, every decision is on disk, companions run at the final
//! shapes at equal steps and equal FLOPs, and a sweep killed with SIGKILL mid-race resumes to the
//! same decisions and table.

mod common;
use common::{ditkd, fixtures, race_spec, stages, table_rows};
use serde_json::Value;

fn curve_steps(run: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("curve.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn a_race_prunes_extends_adds_seeds_and_resumes_after_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fixtures(root);
    let spec = root.join("race.yaml");
    std::fs::write(&spec, race_spec(root)).unwrap();
    let spec = spec.to_str().unwrap();
    let full = root.join("full");
    let (rc, _, err) = ditkd(&["sweep", spec, "--out", full.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");

    let st = stages(&full);
    assert!(
        st.len() >= 3,
        "rungs at 2, 4 and 8 steps: {} stages",
        st.len()
    );
    let shapes_at = |s: &Value| -> Vec<String> {
        s["decisions"][0]["shapes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["shape"].as_str().unwrap().to_string())
            .collect()
    };
    let first = shapes_at(&st[0]);
    assert!(
        first.len() >= 4,
        "the race starts with every shape: {first:?}"
    );
    assert_eq!(st[0]["decisions"][0]["steps"], 2);
    let mut prev = first.clone();
    for s in &st[1..] {
        let now = shapes_at(s);
        assert!(
            now.iter().all(|x| prev.contains(x)),
            "{now:?} not within {prev:?}"
        );
        prev = now;
    }
    assert!(
        prev.len() < first.len(),
        "some shape was stopped before the last rung"
    );
    // At the last rung a second seed is trained for the plausible shapes (final_seeds: 2).
    assert!(
        st.iter()
            .any(|s| s["decisions"][0]["action"]["action"] == "add_seed"),
        "no seed was added"
    );
    assert!(full
        .join("runs")
        .read_dir()
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with("-kd-s1")));
    let last = st.last().unwrap();
    assert_eq!(last["decisions"][0]["steps"], 8);
    assert_eq!(last["decisions"][0]["action"]["action"], "done", "{last}");
    for d in st.iter().flat_map(|s| s["decisions"].as_array().unwrap()) {
        for r in d["shapes"].as_array().unwrap() {
            let p = r["p_best"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&p));
        }
    }

    // Nothing retrained: a run that reached the last rung has curve rows at every rung it passed,
    // and a stopped one ends at its rung.
    let runs: Vec<_> = std::fs::read_dir(full.join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    let kd: Vec<_> = runs
        .iter()
        .filter(|p| p.to_string_lossy().contains("-kd-s0"))
        .collect();
    assert_eq!(
        kd.len(),
        first.len(),
        "one run directory per raced shape and seed"
    );
    let finalists = kd.iter().filter(|p| curve_steps(p).contains(&8)).count();
    assert!(
        finalists >= 2 && finalists < kd.len(),
        "{finalists} of {}",
        kd.len()
    );
    for p in &kd {
        let c = curve_steps(p);
        assert!(c.contains(&2), "{}: {c:?}", p.display());
        if c.contains(&8) {
            assert!(c.contains(&4), "{}: {c:?}", p.display());
        }
    }
    // Companions: scratch at the final shapes, trained on to the KD run's FLOPs with a row at 8.
    let scratch: Vec<_> = runs
        .iter()
        .filter(|p| p.to_string_lossy().contains("-scratch-"))
        .collect();
    assert!(!scratch.is_empty());
    for p in &scratch {
        let c = curve_steps(p);
        assert!(
            c.contains(&8) && c.iter().max().unwrap() > &8,
            "{}: {c:?}",
            p.display()
        );
    }

    // The summary: each budget's answer, rank stability and the compute against the full grid.
    let sum: Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("race/summary.json")).unwrap())
            .unwrap();
    assert!(sum["cpu_hours"].as_f64().unwrap() > 0.0, "{sum}");
    assert!(sum["grid_cpu_hours"].as_f64().unwrap() > 0.0, "{sum}");
    assert!(
        sum["grid_runs"].as_u64().unwrap() > sum["runs"].as_u64().unwrap(),
        "{sum}"
    );
    let b = &sum["budgets"][0];
    assert!(b["best"].is_string() && b["outcome"].is_string(), "{sum}");
    let rho = b["spearman_last_two_rungs"].as_f64();
    assert!(rho.is_none_or(|r| (-1.0..=1.0).contains(&r)), "{sum}");
    let (rc, out, err) = ditkd(&["race", "status", full.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("stage 0") && out.contains("CPU-h"), "{out}");

    let (rc, _, err) = ditkd(&["report", full.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    let report = std::fs::read_to_string(full.join("report.md")).unwrap();
    assert!(
        report.contains("## Race") && report.contains("P(best)") && report.contains("CPU-hours"),
        "{report}"
    );

    // Killed (SIGKILL) once the first decision is on disk, then resumed: the same decisions.
    let killed = root.join("killed");
    let mut p = std::process::Command::new(env!("CARGO_BIN_EXE_ditkd"))
        .args(["sweep", spec, "--out", killed.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !killed.join("race/stage-000.json").exists() {
        assert!(t0.elapsed().as_secs() < 600, "no decision appeared");
        assert!(
            p.try_wait().unwrap().is_none(),
            "the race ended before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    p.kill().unwrap();
    p.wait().unwrap();
    let (rc, _, err) = ditkd(&["sweep", spec, "--out", killed.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    let strip = |v: Vec<Value>| -> Vec<Value> {
        v.into_iter()
            .map(|mut s| {
                s["code_version"] = Value::Null;
                s
            })
            .collect()
    };
    assert_eq!(strip(stages(&killed)), strip(stages(&full)));
    assert_eq!(table_rows(&killed), table_rows(&full));
}
