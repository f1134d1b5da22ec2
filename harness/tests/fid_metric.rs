//! `eval.metrics: [fid_proxy, fid]` end to end: a one-run sweep writes finite `fid` and `fid_inf`
//! columns into runs.parquet and curves.parquet (with the weights' SHA-256), the real-data floor
//! and the teacher get their FID in reference.json, the real statistics are cached, and
//! `ditkd table` shows the FID columns.
//!
//! Needs the FID Inception weights (`scripts/fid-weights.sh`). Without them it prints `SKIPPED`
//! and passes, unless `DITKD_REQUIRE_FID=1` (as CI sets), when it fails.

mod common;

use common::{ditkd, fixtures};
use polars::prelude::*;

fn required() -> bool {
    std::env::var("DITKD_REQUIRE_FID").is_ok_and(|v| v == "1")
}

fn finite(df: &DataFrame, col: &str) -> Vec<f64> {
    let c = df
        .column(col)
        .unwrap_or_else(|e| panic!("no column `{col}`: {e}"));
    let v: Vec<Option<f64>> = c.f64().unwrap().iter().collect();
    assert!(!v.is_empty(), "`{col}` is empty");
    v.into_iter()
        .map(|x| {
            let x = x.unwrap_or_else(|| panic!("`{col}` holds a null"));
            assert!(x.is_finite() && x >= 0.0, "`{col}` holds {x}");
            x
        })
        .collect()
}

#[test]
fn a_sweep_with_fid_writes_finite_fid_columns() {
    if let Err(e) = distill::inception::weights::check_available() {
        assert!(!required(), "DITKD_REQUIRE_FID=1 but {e:#}");
        eprintln!("SKIPPED a_sweep_with_fid_writes_finite_fid_columns: {e:#}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // The shared teacher and feature net; a cache of its own, whose files it counts.
    let f = fixtures();
    // One KD student, evaluated at step 1 (a curve point) and at its last step, 16 samples each,
    // against the statistics of the first 32 test images: about 100 Inception forwards in all.
    let spec = format!(
        "name: fid
teacher: {t}
featnet: {n}
cache_dir: {r}/cache
budgets: [{{params: 20k, tol: 0.3}}]
axes: {{depth: [1], width: [24], heads: [2], patch: [7]}}
constraints: {{min_head_dim: 8}}
distill: {{modes: [kd], steps: 2, batch_size: 8, warmup_steps: 1}}
seeds: [0]
eval:
  samples: 16
  sampler: {{kind: ddim, steps: 2, cfg_scale: 2.0}}
  speed: false
  curve_points: 2
  metrics: [fid_proxy, fid]
  fid_real_images: 32
parallel: {{jobs: 1, threads_per_job: 2}}
",
        t = f.teacher().display(),
        n = f.featnet().display(),
        r = root.display()
    );
    let spec_path = root.join("fid.yaml");
    std::fs::write(&spec_path, spec).unwrap();
    let out = root.join("out");
    let t = std::time::Instant::now();
    let (rc, _, err) = ditkd(&[
        "sweep",
        spec_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "{err}");
    eprintln!("sweep with fid: {:.0} s", t.elapsed().as_secs_f64());

    let sha = distill::checkpoint::file_hash(&distill::inception::weights::weights_path()).unwrap();
    let runs = ParquetReader::new(std::fs::File::open(out.join("runs.parquet")).unwrap())
        .finish()
        .unwrap();
    assert_eq!(runs.height(), 1);
    let fid = finite(&runs, "fid");
    finite(&runs, "fid_inf");
    finite(&runs, "fid_proxy");
    let shas: Vec<Option<&str>> = runs
        .column("fid_weights_sha256")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(shas, vec![Some(sha.as_str())]);

    let curves = ParquetReader::new(std::fs::File::open(out.join("curves.parquet")).unwrap())
        .finish()
        .unwrap();
    assert_eq!(curves.height(), 2, "steps 1 and 2");
    let curve_fid = finite(&curves, "fid");
    finite(&curves, "fid_inf");
    assert_eq!(
        curve_fid[1], fid[0],
        "the last curve point is the run's evaluation"
    );

    let r = distill::reference::Reference::load(&out).expect("reference.json");
    let floor = r.floor.fid.as_ref().expect("the floor's FID");
    assert_eq!(floor.values.len(), distill::reference::FID_FLOOR_DRAWS);
    assert!(floor.values.iter().all(|v| v.is_finite() && *v >= 0.0));
    assert_eq!(r.fid_weights_sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(r.fid_real_images, Some(32));
    let teacher = r.teacher.as_ref().expect("teacher row");
    assert!(teacher.metrics.fid.is_some_and(f64::is_finite));
    assert!(
        r.untrained.as_ref().is_some_and(|u| u.fid.is_none()),
        "the untrained student is scored by the FID-proxy only"
    );
    // Real statistics cached by the weights' and the pixels' hashes.
    let cached: Vec<_> = std::fs::read_dir(root.join("cache/inception"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("stats-{}-", &sha[..16])))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");

    let (rc, table, err) = ditkd(&["table", out.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    for want in ["fid_mean", "fid_inf_mean", "the field's FID"] {
        assert!(table.contains(want), "`ditkd table` lacks {want}:\n{table}");
    }
}

/// `ditkd fid` scores several models and the real-data floor in one call, writes their rows to
/// `--out`, and a second call with the same settings reuses every row instead of scoring again.
#[test]
fn ditkd_fid_scores_models_and_the_floor_and_resumes() {
    if let Err(e) = distill::inception::weights::check_available() {
        assert!(!required(), "DITKD_REQUIRE_FID=1 but {e:#}");
        eprintln!("SKIPPED ditkd_fid_scores_models_and_the_floor_and_resumes: {e:#}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The statistics of 16 test images go to a cache of the test's own, next to the real weights.
    let cache = tmp.path().join("inception");
    std::fs::create_dir_all(&cache).unwrap();
    let weights = distill::inception::weights::weights_path();
    std::os::unix::fs::symlink(
        weights.canonicalize().unwrap(),
        cache.join(distill::inception::weights::WEIGHTS_FILE),
    )
    .unwrap();
    let teacher = fixtures().teacher().to_str().unwrap().to_string();
    let out = tmp.path().join("fid.json");
    let run = || {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_ditkd"))
            .env("DITKD_FID_CACHE", &cache)
            .args([
                "fid",
                "--checkpoint",
                &teacher,
                "--floor",
                "--samples",
                "10",
                "--steps",
                "2",
                "--cfg",
                "2",
                "--real",
                "16",
                "--out",
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        err
    };
    run();
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(rows.len(), 2, "the teacher and the floor: {rows:?}");
    assert!(rows[0]["item"]["model"].is_object(), "{:?}", rows[0]);
    assert_eq!(rows[1]["item"], "floor");
    for r in &rows {
        let fid = r["fid"].as_f64().unwrap();
        assert!(fid.is_finite() && fid > 0.0, "{r}");
        assert!(r["fid_inf"].as_f64().is_some_and(f64::is_finite), "{r}");
        assert_eq!(r["settings"]["samples"], 10);
        assert_eq!(r["settings"]["real"], 16);
    }
    assert_eq!(rows[0]["settings"]["steps"], 2);
    assert!(rows[1]["settings"]["steps"].is_null());
    assert!(rows[0]["params"].as_u64().is_some_and(|p| p > 0));
    let again = run();
    assert_eq!(
        again.matches("already in the --out file").count(),
        2,
        "{again}"
    );
    let rows2: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(rows, rows2);
}
