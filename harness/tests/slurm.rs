//! The sweep on a real Slurm: `ditkd slurm` writes a job array (one shard per task) plus a merge
//! job that depends on it; the merged table equals the same sweep run locally. `.ci/run` starts a
//! single-node Slurm first (`.ci/slurm-up.sh`) and runs this test with `--ignored`.

mod common;
use common::{ditkd, spec_text, table_rows};

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn job_state(id: &str) -> String {
    let out = Command::new("scontrol")
        .args(["-o", "show", "job", id])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("JobState="))
        .unwrap_or("UNKNOWN")
        .to_string()
}

/// Asserts a Slurm answers, writes `ditkd slurm SPEC --shards 3` into `root/submit.sh` (its
/// results in `cluster`), checks the script holds each of `expect`, submits it and returns what
/// the submission printed.
fn submit(root: &Path, spec: &str, cluster: &Path, expect: &[&str]) -> String {
    let have_slurm = Command::new("sbatch")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        && Command::new("sinfo")
            .output()
            .is_ok_and(|o| o.status.success());
    assert!(
        have_slurm,
        "no Slurm answers (sbatch --version, sinfo): start one with .ci/slurm-up.sh"
    );
    let script = root.join("submit.sh");
    let (rc, _, err) = ditkd(&[
        "slurm",
        spec,
        "--shards",
        "3",
        "--out",
        cluster.to_str().unwrap(),
        "-o",
        script.to_str().unwrap(),
        "--binary",
        env!("CARGO_BIN_EXE_ditkd"),
        "--time",
        "00:20:00",
    ]);
    assert_eq!(rc, 0, "{err}");
    let text = std::fs::read_to_string(&script).unwrap();
    for e in expect {
        assert!(text.contains(e), "the script lacks `{e}`:\n{text}");
    }
    let out = Command::new("bash").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into()
}

/// Ignored by default, so `cargo test` lists it as ignored where no Slurm runs (a visible skip,
/// not a silent pass); `.ci/run` starts a Slurm and runs it with `--ignored`, where it fails if
/// no Slurm answers.
#[test]
#[ignore = "needs a running Slurm: bash .ci/slurm-up.sh, then cargo test --release -p harness --test slurm -- --ignored"]
fn job_array_plus_merge_equals_the_local_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let spec = &common::write_spec(root, "tiny.yaml", &spec_text());

    let local = root.join("local");
    let (rc, _, err) = ditkd(&["sweep", spec, "--out", local.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");

    let cluster = root.join("cluster");
    let ids = submit(
        root,
        spec,
        &cluster,
        &[
            "--array=1-3",
            "--dependency=afterok:",
            "--kill-on-invalid-dep=yes",
        ],
    );
    let merge_id = ids
        .split_whitespace()
        .nth(3)
        .expect("array ID merge ID")
        .to_string();

    let t0 = Instant::now();
    let state = loop {
        let s = job_state(&merge_id);
        if [
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "OUT_OF_MEMORY",
            "NODE_FAIL",
        ]
        .contains(&s.as_str())
        {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "merge job {merge_id} still {s} after 15 min"
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    let logs = std::fs::read_dir(cluster.join("slurm-logs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(
        state,
        "COMPLETED",
        "merge job ended {state} ({logs} log files in {})",
        cluster.join("slurm-logs").display()
    );
    assert_eq!(
        table_rows(&cluster),
        table_rows(&local),
        "the Slurm sweep's merged table equals the local one"
    );
}

/// A racing sweep on Slurm: every stage a job array, every decision a dependent job that submits
/// the next; the decisions and the table equal the same race run locally.
#[test]
#[ignore = "needs a running Slurm: bash .ci/slurm-up.sh, then cargo test --release -p harness --test slurm -- --ignored"]
fn a_race_on_slurm_decides_as_the_local_race() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let spec = &common::write_spec(root, "race.yaml", &common::race_spec());
    let local = root.join("local");
    let (rc, _, err) = ditkd(&["sweep", spec, "--out", local.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");

    let cluster = root.join("cluster");
    let first = submit(root, spec, &cluster, &["race decide", "--submit"]);
    assert!(
        first.contains("stage 0") && first.contains("array"),
        "{first}"
    );

    // The last decision job times the models and says the race is over.
    let t0 = Instant::now();
    let logs = cluster.join("slurm-logs");
    loop {
        let over = std::fs::read_dir(&logs)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("race over")));
        if over {
            break;
        }
        if t0.elapsed() > Duration::from_secs(1200) {
            let listing: Vec<String> = std::fs::read_dir(&logs)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| {
                    let t = std::fs::read_to_string(e.path()).unwrap_or_default();
                    let tail: String = t.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
                    format!("{}: {tail}", e.file_name().to_string_lossy())
                })
                .collect();
            panic!(
                "the race did not finish on Slurm in 20 min:\n{}",
                listing.join("\n")
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    assert_eq!(
        common::stages_without_version(&cluster),
        common::stages_without_version(&local)
    );
    assert_eq!(table_rows(&cluster), table_rows(&local));
}
