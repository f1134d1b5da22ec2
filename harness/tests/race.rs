//! A racing sweep end to end: shapes stop at rungs, contenders continue from their checkpoints,
//! seeds are added at the last rung, every decision is on disk, companions run at the final
//! shapes at equal steps and equal FLOPs, and a sweep killed with SIGKILL mid-race resumes to the
//! same decisions and table.

mod common;
use common::{ditkd, race_spec, stages, stages_without_version, sweep_killed_when, table_rows};
use serde_json::Value;
use std::path::Path;

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
    let spec = &common::write_spec(root, "race.yaml", &race_spec());
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
    // Companions: scratch at the final shapes and seeds at equal steps (8); the KD run of each has
    // a measured curve point at the scratch run's training FLOPs (KD pays the teacher's forward,
    // so it gets there in fewer steps): equal compute without training past the step cap.
    let scratch: Vec<_> = runs
        .iter()
        .filter(|p| p.to_string_lossy().contains("-scratch-"))
        .collect();
    assert!(!scratch.is_empty());
    let flops_at = |run: &std::path::Path| -> Vec<(u64, f64)> {
        std::fs::read_to_string(run.join("curve.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["step"].as_u64().unwrap(),
                    v["train_flops"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    for p in &scratch {
        assert_eq!(curve_steps(p), vec![8], "{}", p.display());
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let twin = name.split_once('-').unwrap().1.replace("-scratch-", "-kd-");
        let kd_run = runs
            .iter()
            .find(|r| {
                r.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .ends_with(&format!("-{twin}"))
            })
            .unwrap_or_else(|| panic!("no KD run {twin}"));
        let kd_curve = flops_at(kd_run);
        let per_step = kd_curve.last().unwrap().1 / kd_curve.last().unwrap().0 as f64;
        let target = flops_at(p)[0].1;
        assert!(
            target < kd_curve.last().unwrap().1,
            "scratch pays less than KD"
        );
        assert!(
            kd_curve
                .iter()
                .any(|&(s, f)| s < 8 && (f - target).abs() <= 0.5 * per_step),
            "{}: no point at scratch's {target:.3e} FLOPs in {kd_curve:?}",
            kd_run.display()
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
    // KD vs scratch paired by seed, at equal steps and at the FLOP-matched KD point.
    assert!(
        report.contains("equal training FLOPs") && !report.contains("no matched point"),
        "{report}"
    );

    // An audit of the race's pruning: the same runs trained straight to the last rung by a grid
    // sweep (every shape, seed 0), pooled with the race (`ditkd race pool`). Every shape is then
    // compared at the last rung, the pruned ones marked with the rung the race stopped them at;
    // the contenders, trained twice (rung by rung from checkpoints, and straight through), give
    // the same value to the last bit.
    let audit_spec = race_spec()
        .lines()
        .filter(|l| !l.starts_with("schedule:"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("name: tiny", "name: tiny-audit")
        .replace("modes: [kd, scratch]", "modes: [kd]")
        .replace("seeds: [0, 1, 2]", "seeds: [0]")
        .replace("speed: false}", "speed: false, at_steps: [2, 4]}");
    let audit_spec = &common::write_spec(root, "audit.yaml", &audit_spec);
    let audit = root.join("audit");
    let (rc, _, err) = ditkd(&["sweep", audit_spec, "--out", audit.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    let (rc, out, err) = ditkd(&[
        "race",
        "pool",
        spec,
        "--out",
        full.to_str().unwrap(),
        "--with",
        audit.to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "{err}");
    let pooled: Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("race/pooled.json")).unwrap())
            .unwrap();
    let b = &pooled["budgets"][0];
    let rows = b["shapes"].as_array().unwrap();
    assert_eq!(
        rows.len(),
        first.len(),
        "every shape at the last rung: {out}"
    );
    let p_sum: f64 = rows.iter().map(|r| r["p_best"].as_f64().unwrap()).sum();
    assert!((p_sum - 1.0).abs() < 1e-9, "{out}");
    let pruned = rows
        .iter()
        .filter(|r| r["raced_to"].as_u64().unwrap() < 8)
        .count();
    assert_eq!(pruned, first.len() - prev.len(), "{out}");
    assert!(
        out.contains("pruned at 2") && out.contains("contender"),
        "{out}"
    );
    let dups = b["duplicates"].as_array().unwrap();
    assert_eq!(
        dups.len(),
        prev.len(),
        "each contender's seed 0 twice: {out}"
    );
    for d in dups {
        let c = d["copies"].as_array().unwrap();
        assert_eq!(c[0][1], c[1][1], "rung by rung vs straight: {d}");
    }
    assert_eq!(
        b["rank_agreement"].as_array().unwrap().len(),
        2,
        "rungs 2 and 4 against 8: {out}"
    );
    assert!(b["verdict"]["verdict"].is_string(), "{out}");
    // The study's compute: every finished run of both directories (the race's KD and scratch
    // runs, the audit's), against every shape x final_seeds of the raced setup.
    let finished = |d: &Path| {
        std::fs::read_dir(d.join("runs"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().join("summary.json").exists())
            .count() as u64
    };
    let cost = &pooled["cost"];
    assert_eq!(
        cost["runs"].as_u64().unwrap(),
        finished(&full) + finished(&audit),
        "{cost}"
    );
    let setups: Vec<&str> = cost["by_setup"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert_eq!(setups, ["kd", "scratch"], "raced setup first: {cost}");
    assert_eq!(
        cost["grid_runs"].as_u64().unwrap(),
        first.len() as u64 * cost["grid_seeds"].as_u64().unwrap(),
        "{cost}"
    );
    assert!(cost["grid_cpu_hours"].as_f64().unwrap() > 0.0, "{cost}");
    assert!(
        out.contains("compute: ") && out.contains("full grid"),
        "{out}"
    );
    let (rc, _, err) = ditkd(&["report", full.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    let report = std::fs::read_to_string(full.join("report.md")).unwrap();
    assert!(
        report.contains("## The race pooled with its audits")
            && report.contains("**pruned at 2**")
            && report.contains("Verdict:")
            && report.contains("Compute: "),
        "{report}"
    );
    // A directory that is not a sweep's results is refused, naming it.
    let (rc, _, err) = ditkd(&[
        "race",
        "pool",
        spec,
        "--out",
        full.to_str().unwrap(),
        "--with",
        root.join("nowhere").to_str().unwrap(),
    ]);
    assert_ne!(rc, 0);
    assert!(
        err.contains("nowhere") && err.contains("not a results directory"),
        "{err}"
    );

    // Killed (SIGKILL) once the first decision is on disk, then resumed: the same decisions.
    let killed = root.join("killed");
    sweep_killed_when(spec, &killed, "first decision", |d| {
        d.join("race/stage-000.json").exists().then_some(())
    });
    let (rc, _, err) = ditkd(&["sweep", spec, "--out", killed.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(
        stages_without_version(&killed),
        stages_without_version(&full)
    );
    assert_eq!(table_rows(&killed), table_rows(&full));
}
