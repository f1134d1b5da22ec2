//! The sweep table: one row per run, rebuilt from the runs' `summary.json` files (the source of
//! truth) and written atomically as Parquet and CSV, under a lock so concurrent shards writing into
//! one results directory never lose or duplicate a row.
//!
//! Schema (see README "Results table"): run_id, budget, config columns (depth, width, heads,
//! head_dim, patch, mlp_ratio, mode, seed, steps, batch_size), params, gflops, every metric
//! (fid_proxy, kid, kid_std, precision, recall, density, coverage, fidelity_mse, fidelity_fd,
//! class_accuracy; fid, fid_inf and fid_weights_sha256 when `eval.metrics` lists `fid`), speed (latency_ms, images_per_s, forwards_per_image, gflops_per_image),
//! status, reason, final_loss, train_wall_s, teacher_fraction, eval_wall_s, config_hash,
//! teacher_hash, featnet_hash, code_version.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use polars::prelude::*;
use serde_json::Value;

/// Columns stored as integers.
const INT_COLS: &[&str] = &[
    "budget",
    "depth",
    "width",
    "heads",
    "head_dim",
    "patch",
    "seed",
    "steps",
    "batch_size",
    "params",
    "forwards_per_image",
    "step",
    "images_seen",
    "sampler_steps",
    "repeats",
    "threads",
];

/// All rows (JSON objects) of the runs under `dir/runs`, sorted by run_id.
pub fn collect_rows(dir: &Path) -> Result<Vec<serde_json::Map<String, Value>>> {
    let mut rows = Vec::new();
    let runs = dir.join("runs");
    let Ok(entries) = std::fs::read_dir(&runs) else {
        return Ok(rows);
    };
    for e in entries {
        let run = e?.path();
        let p = run.join("summary.json");
        if !p.exists() {
            continue; // in progress
        }
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()))?;
        let Ok(Value::Object(mut row)) = serde_json::from_str::<Value>(&text) else {
            anyhow::bail!(
                "{}: unreadable run summary (not a JSON object)",
                p.display()
            )
        };
        let name = run
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        row.insert("run_id".into(), Value::String(name));
        if let Ok(Value::Object(plan)) = std::fs::read_to_string(run.join("plan.json"))
            .map(|t| serde_json::from_str(&t).unwrap_or(Value::Null))
        {
            if let Some(b) = plan.get("budget") {
                row.insert("budget".into(), b.clone());
            }
        }
        rows.push(row);
    }
    rows.sort_by(|a, b| a["run_id"].as_str().cmp(&b["run_id"].as_str()));
    Ok(rows)
}

/// Rows -> DataFrame with typed columns (run_id first).
pub fn to_frame(rows: &[serde_json::Map<String, Value>]) -> Result<DataFrame> {
    let mut names: Vec<String> = vec!["run_id".into(), "budget".into()];
    for r in rows {
        for k in r.keys() {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
    }
    let mut cols = Vec::new();
    for name in &names {
        let vals: Vec<&Value> = rows
            .iter()
            .map(|r| r.get(name).unwrap_or(&Value::Null))
            .collect();
        let col = if INT_COLS.contains(&name.as_str()) {
            Column::new(
                name.as_str().into(),
                vals.iter().map(|v| v.as_i64()).collect::<Vec<_>>(),
            )
        } else if vals.iter().all(|v| v.is_null() || v.is_number()) {
            Column::new(
                name.as_str().into(),
                vals.iter().map(|v| v.as_f64()).collect::<Vec<_>>(),
            )
        } else {
            Column::new(
                name.as_str().into(),
                vals.iter()
                    .map(|v| match v {
                        Value::Null => None,
                        Value::String(s) => Some(s.clone()),
                        other => Some(other.to_string()),
                    })
                    .collect::<Vec<_>>(),
            )
        };
        cols.push(col);
    }
    Ok(DataFrame::new_infer_height(cols)?)
}

/// Hold an exclusive lock on `dir/.table.lock` while `f` runs.
fn with_lock<T>(dir: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let lock = File::create(dir.join(".table.lock"))?;
    lock.lock()
        .with_context(|| format!("{}: cannot lock the table", dir.display()))?;
    let out = f();
    let _ = lock.unlock();
    out
}

/// Write `df` to `path` through a temporary file and a rename.
fn write_frame(df: &mut DataFrame, path: &Path, parquet: bool) -> Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    {
        let f = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        if parquet {
            ParquetWriter::new(f).finish(df)?;
        } else {
            CsvWriter::new(f).finish(df)?;
        }
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Learning-curve rows of every run under `dir/runs` (`curve.jsonl`), each with the run's
/// identity (run_id, budget, shape, mode, seed, params), sorted by run and step.
pub fn collect_curve_rows(dir: &Path) -> Result<Vec<serde_json::Map<String, Value>>> {
    let mut rows = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir.join("runs")) else {
        return Ok(rows);
    };
    let mut runs: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("curve.jsonl").is_file())
        .collect();
    runs.sort();
    for run in runs {
        let cfg_path = run.join("config.yaml");
        let text = std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("{}: cannot read", cfg_path.display()))?;
        let cfg: distill::run::DistillConfig = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("{}: unreadable run config", cfg_path.display()))?;
        let budget = std::fs::read_to_string(run.join("plan.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v.get("budget").cloned());
        let curve = run.join("curve.jsonl");
        let text = std::fs::read_to_string(&curve)
            .with_context(|| format!("{}: cannot read", curve.display()))?;
        let s = &cfg.student;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let Ok(Value::Object(point)) = serde_json::from_str::<Value>(line) else {
                anyhow::bail!("{}: line {}: corrupt curve row", curve.display(), i + 1)
            };
            let mut row = serde_json::Map::new();
            row.insert(
                "run_id".into(),
                Value::String(
                    run.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                ),
            );
            row.insert("budget".into(), budget.clone().unwrap_or(Value::Null));
            for (k, v) in [
                ("depth", s.depth),
                ("width", s.hidden_size),
                ("heads", s.num_heads),
                ("patch", s.patch_size),
                ("params", s.num_params()),
            ] {
                row.insert(k.into(), Value::from(v));
            }
            row.insert(
                "mode".into(),
                Value::String(distill::setup::Setup::of(&cfg).to_string()),
            );
            row.insert("seed".into(), Value::from(cfg.seed));
            row.extend(point);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Write `rows` as Parquet and CSV (atomically each).
pub fn write_rows(
    rows: &[serde_json::Map<String, Value>],
    parquet: &Path,
    csv: &Path,
) -> Result<()> {
    let mut df = to_frame(rows)?;
    write_frame(&mut df, parquet, true)?;
    write_frame(&mut df, csv, false)
}

/// Rebuild `runs.parquet` / `runs.csv` (one row per run) and `curves.parquet` / `curves.csv`
/// (one row per run and evaluated step) of a sweep directory from its runs.
pub fn rebuild(dir: &Path) -> Result<DataFrame> {
    with_lock(dir, || {
        let rows = collect_rows(dir)?;
        let mut df = to_frame(&rows)?;
        write_frame(&mut df, &dir.join("runs.parquet"), true)?;
        write_frame(&mut df, &dir.join("runs.csv"), false)?;
        let curve_rows = collect_curve_rows(dir)?;
        if !curve_rows.is_empty() {
            let mut curves = to_frame(&curve_rows)?;
            write_frame(&mut curves, &dir.join("curves.parquet"), true)?;
            write_frame(&mut curves, &dir.join("curves.csv"), false)?;
        }
        Ok(df)
    })
}

/// Read a sweep's table.
pub fn read(dir: &Path) -> Result<DataFrame> {
    let p = dir.join("runs.parquet");
    let f = File::open(&p)
        .with_context(|| format!("{}: no table (run the sweep first)", p.display()))?;
    ParquetReader::new(f)
        .finish()
        .map_err(|e| anyhow::anyhow!("{}: corrupt table: {e}", p.display()))
}

/// Mean and std over seeds of the headline metrics, per shape and mode.
pub fn aggregate(df: &DataFrame) -> Result<DataFrame> {
    let keys = [
        col("budget"),
        col("depth"),
        col("width"),
        col("heads"),
        col("patch"),
        col("mode"),
    ];
    let mut aggs = vec![len().alias("runs"), col("params").first().alias("params")];
    // Every summarised metric the table has (the field's FID only where a run measured it:
    // `eval.metrics: [fid_proxy, fid]`).
    let has = |c: &str| df.get_column_names().iter().any(|n| n.as_str() == c);
    let metrics = distill::column::COLUMNS
        .iter()
        .filter(|c| c.summarised && has(c.name))
        .map(|c| c.name);
    for m in metrics {
        aggs.push(col(m).mean().alias(format!("{m}_mean")));
        aggs.push(col(m).std(1).alias(format!("{m}_std")));
    }
    let out = df
        .clone()
        .lazy()
        .filter(col("status").eq(lit(distill::run::RunStatus::Ok.as_str())))
        .group_by(keys)
        .agg(aggs)
        .sort(
            ["budget", "depth", "width", "heads", "mode"],
            Default::default(),
        )
        .collect()?;
    Ok(out)
}
