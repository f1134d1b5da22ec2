//! `ditkd merge` refuses what would lose or mix results: unreadable summaries, two different
//! results under one run id, runs scored by different feature nets, teachers or code versions
//! (unless --allow-mixed); it checks everything before it writes anything.

mod common;
use common::ditkd;

use std::path::Path;

use distill::eval::EvalResult;
use distill::run::{RunStatus, Summary};
use distill::setup::Setup;

fn summary(fid: f64) -> Summary {
    Summary {
        status: RunStatus::Ok,
        reason: None,
        config_hash: "c0ffee".into(),
        mode: Setup::Kd,
        seed: 0,
        depth: 2,
        width: 32,
        heads: 2,
        head_dim: 16,
        patch: 4,
        mlp_ratio: 4.0,
        params: 30_000,
        gflops: 0.01,
        steps: 10,
        batch_size: 8,
        final_loss: 0.5,
        train_wall_s: 1.0,
        teacher_fraction: 0.1,
        eval_wall_s: 1.0,
        curve_eval_wall_s: 0.0,
        train_flops: 1e9,
        metrics: Some(EvalResult {
            fid_proxy: fid,
            class_accuracy: 0.5,
            ..Default::default()
        }),
        teacher_hash: Some("teacher-a".into()),
        featnet_hash: "featnet-a".into(),
        code_version: "src-a".into(),
    }
}

fn put(dir: &Path, id: &str, s: &Summary) {
    let d = dir.join("runs").join(id);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("summary.json"), serde_json::to_string(s).unwrap()).unwrap();
    std::fs::write(
        d.join("plan.json"),
        r#"{"index": 0, "budget": 30000, "sweep": "m"}"#,
    )
    .unwrap();
}

fn merge(out: &Path, inputs: &[&Path], extra: &[&str]) -> (i32, String) {
    let mut args = vec![
        "merge".to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(inputs.iter().map(|p| p.display().to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (rc, _, err) = ditkd(&refs);
    assert!(!err.contains("panicked"), "{err}");
    (rc, err)
}

#[test]
fn merge_refuses_lost_and_mixed_results() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, out) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("out"),
    );
    put(&a, "000-d2-w32-h2-kd-s0", &summary(40.0));
    put(&b, "001-d2-w32-h2-kd-s1", &summary(41.0));

    // Identical copies of one run (timings aside) are fine.
    let mut copy = summary(40.0);
    copy.train_wall_s = 9.0;
    put(&b, "000-d2-w32-h2-kd-s0", &copy);
    let (rc, err) = merge(&out, &[&a, &b], &[]);
    assert_eq!(rc, 0, "{err}");
    let csv = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");

    // Two different results under one id.
    let c = tmp.path().join("c");
    put(&c, "000-d2-w32-h2-kd-s0", &summary(55.0));
    let fresh = tmp.path().join("fresh");
    let (rc, err) = merge(&fresh, &[&a, &c], &[]);
    assert_eq!(rc, 1);
    assert!(
        err.contains("000-d2-w32-h2-kd-s0") && err.contains("different results"),
        "{err}"
    );
    assert!(!fresh.exists(), "nothing written on refusal");
    // ... also against a run already in the output.
    let (rc, err) = merge(&out, &[&c], &[]);
    assert_eq!(rc, 1, "{err}");

    // An unreadable summary is an error naming it, not a silently dropped run.
    let d = tmp.path().join("d");
    std::fs::create_dir_all(d.join("runs/002-x")).unwrap();
    std::fs::write(d.join("runs/002-x/summary.json"), "{not json").unwrap();
    let (rc, err) = merge(&fresh, &[&a, &d], &[]);
    assert_eq!(rc, 1);
    assert!(err.contains("002-x") && err.contains("unreadable"), "{err}");
    assert!(!fresh.exists());

    // Another feature net, teacher or code version: refused unless --allow-mixed.
    for (field, change) in [
        ("featnet_hash", 0),
        ("teacher_hash", 1),
        ("code_version", 2),
    ] {
        let e = tmp.path().join(format!("e{change}"));
        let mut s = summary(42.0);
        match change {
            0 => s.featnet_hash = "featnet-b".into(),
            1 => s.teacher_hash = Some("teacher-b".into()),
            _ => s.code_version = "src-b".into(),
        }
        put(&e, "003-d2-w32-h2-kd-s3", &s);
        let target = tmp.path().join(format!("mixed{change}"));
        let (rc, err) = merge(&target, &[&a, &e], &[]);
        assert_eq!(rc, 1, "{field}");
        assert!(
            err.contains(field) && err.contains("--allow-mixed"),
            "{err}"
        );
        assert!(!target.exists());
        let (rc, err) = merge(&target, &[&a, &e], &["--allow-mixed"]);
        assert_eq!(rc, 0, "{err}");
        assert!(err.contains("warning"), "{err}");
    }
}

/// A failed run's metrics are null in the table (a 0.0 would sort as the best run).
#[test]
fn failed_rows_carry_nulls() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, out) = (tmp.path().join("a"), tmp.path().join("out"));
    put(&a, "000-d2-w32-h2-kd-s0", &summary(40.0));
    let mut failed = summary(0.0);
    failed.status = RunStatus::Failed;
    failed.reason = Some("teacher: corrupt".into());
    failed.metrics = None;
    put(&a, "001-d2-w32-h2-kd-s1", &failed);
    let (rc, err) = merge(&out, &[&a], &[]);
    assert_eq!(rc, 0, "{err}");
    use polars::prelude::*;
    let df = ParquetReader::new(std::fs::File::open(out.join("runs.parquet")).unwrap())
        .finish()
        .unwrap();
    let status: Vec<Option<&str>> = df.column("status").unwrap().str().unwrap().iter().collect();
    let fid: Vec<Option<f64>> = df
        .column("fid_proxy")
        .unwrap()
        .f64()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(status, vec![Some("ok"), Some("failed")]);
    assert_eq!(
        fid,
        vec![Some(40.0), None],
        "the failed run's FID-proxy is null"
    );
}

/// The teacher's row and the real-data floor travel with the merged runs when the inputs measured
/// the same values (their `key` names the spec, so it may differ), and are left out, with a note,
/// when they disagree: a law fitted on the merged table must not use a floor from another protocol.
#[test]
fn the_reference_is_merged_only_when_the_inputs_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    put(&a, "000-d2-w32-h2-kd-s0", &summary(40.0));
    put(&b, "001-d2-w32-h2-kd-s1", &summary(41.0));
    let reference = |key: &str, floor: f64| {
        format!(r#"{{"key": "{key}", "samples": 500, "floor": {{"fid_proxy": {floor}}}}}"#)
    };
    std::fs::write(a.join("reference.json"), reference("k1", 1.3)).unwrap();
    std::fs::write(b.join("reference.json"), reference("k2", 1.3)).unwrap();
    let out = tmp.path().join("out");
    let (rc, err) = merge(&out, &[&a, &b], &[]);
    assert_eq!(rc, 0, "{err}");
    let got = std::fs::read_to_string(out.join("reference.json")).unwrap();
    assert_eq!(got, reference("k1", 1.3), "{err}");

    // The same measurement recomputed on another machine: equal but for the last digits.
    std::fs::write(b.join("reference.json"), reference("k2", 1.300002)).unwrap();
    let out = tmp.path().join("out1");
    let (rc, err) = merge(&out, &[&a, &b], &[]);
    assert_eq!(rc, 0, "{err}");
    let got = std::fs::read_to_string(out.join("reference.json")).unwrap();
    assert_eq!(got, reference("k1", 1.3), "{err}");

    std::fs::write(b.join("reference.json"), reference("k2", 1.31)).unwrap();
    let out = tmp.path().join("out2");
    let (rc, err) = merge(&out, &[&a, &b], &[]);
    assert_eq!(rc, 0, "{err}");
    assert!(!out.join("reference.json").exists());
    assert!(err.contains("different teacher or floor values"), "{err}");
}
