//! `ditkd sweep`, `ditkd table`, `ditkd merge`.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cmd::info::group;
use crate::runner::{base_config, estimate_secs, execute, parse_shard, plan, shard, sweep_dir};
use crate::spec::SweepSpec;

pub fn run(
    spec_path: &Path,
    dry_run: bool,
    shard_arg: Option<&str>,
    out: Option<&Path>,
    jobs: Option<usize>,
    threads_per_job: Option<usize>,
) -> Result<()> {
    let mut spec = SweepSpec::from_file(spec_path)?;
    // Parallelism changes how fast runs go, never what they compute (not part of a run's hash).
    if let Some(j) = jobs {
        anyhow::ensure!(j >= 1, "--jobs must be at least 1");
        spec.parallel.jobs = j;
    }
    if let Some(t) = threads_per_job {
        anyhow::ensure!(t >= 1, "--threads-per-job must be at least 1");
        spec.parallel.threads_per_job = t;
    }
    let base = base_config(&spec)?;
    let mut runs = plan(&spec, &base)?;
    let total = runs.len();
    if let Some(s) = shard_arg {
        let (k, n) = parse_shard(s)?;
        runs = shard(runs, k, n, spec.distill.modes.len());
    }
    let dir = sweep_dir(&spec, out);
    if dry_run {
        println!("{:>4} {:>10} {:>5} {:>5} {:>5} {:>8} {:>9} {:>8} {:>7} {:>4} {:>9}", "id", "budget", "depth", "width", "heads", "head_dim", "params", "GFLOPs", "mode", "seed", "est. s");
        let mut secs = 0.0;
        let mut teacher_paid = std::collections::HashSet::new();
        for r in &runs {
            let pays_teacher = r.cfg.mode == distill::kd::Mode::Kd && teacher_paid.insert(r.cfg.seed);
            let s = &r.cfg.student;
            let e = estimate_secs(r, &base, pays_teacher) / spec.parallel.threads_per_job as f64;
            secs += e;
            println!(
                "{:>4} {:>10} {:>5} {:>5} {:>5} {:>8} {:>9} {:>8.4} {:>7} {:>4} {:>9.0}",
                r.index,
                group(r.budget),
                s.depth,
                s.hidden_size,
                s.num_heads,
                s.head_dim(),
                group(s.num_params()),
                s.forward_gflops(),
                r.cfg.mode.to_string(),
                r.cfg.seed,
                e
            );
        }
        println!(
            "{} runs ({} in the whole sweep); estimated {:.1} h on {} concurrent job(s) -> {}",
            runs.len(),
            total,
            secs / 3600.0 / spec.parallel.jobs as f64,
            spec.parallel.jobs,
            dir.display()
        );
        return Ok(());
    }
    let adopted = crate::runner::adopt_renamed(&dir, &runs)?;
    if adopted > 0 {
        println!("{adopted} run(s) started under an earlier run order renamed to this plan's names");
    }
    let t = std::time::Instant::now();
    let results = execute(&spec, &runs, &dir, true)?;
    let failed = results.iter().filter(|s| s.status != "ok").count();
    println!(
        "{} runs done ({failed} failed) in {:.1} min; table: {}",
        results.len(),
        t.elapsed().as_secs_f64() / 60.0,
        dir.join("runs.parquet").display()
    );
    Ok(())
}

pub fn table(dir: &Path, raw: bool) -> Result<()> {
    let dir = distill::paths::resolve(dir);
    let df = crate::table::read(&dir)?;
    std::env::set_var("POLARS_FMT_MAX_ROWS", "200");
    std::env::set_var("POLARS_FMT_MAX_COLS", "40");
    std::env::set_var("POLARS_TABLE_WIDTH", "400");
    if raw {
        println!("{df}");
    } else {
        println!("{}", crate::table::aggregate(&df)?);
    }
    Ok(())
}

/// Gather shard outputs into `out` (copying each run's small files) and rebuild its table.
pub fn merge(out: &Path, inputs: &[PathBuf]) -> Result<()> {
    let out = distill::paths::resolve(out);
    std::fs::create_dir_all(out.join("runs"))?;
    for input in inputs {
        let input = distill::paths::resolve(input);
        if input == out {
            continue;
        }
        for e in std::fs::read_dir(input.join("runs"))? {
            let src = e?.path();
            if !src.join("summary.json").exists() {
                continue;
            }
            let dst = out.join("runs").join(src.file_name().unwrap());
            std::fs::create_dir_all(&dst)?;
            for f in ["summary.json", "plan.json", "config.yaml", "metrics.jsonl", "grid.png"] {
                if src.join(f).exists() {
                    std::fs::copy(src.join(f), dst.join(f))?;
                }
            }
        }
        if input.join("spec.yaml").exists() && !out.join("spec.yaml").exists() {
            std::fs::copy(input.join("spec.yaml"), out.join("spec.yaml"))?;
        }
    }
    let df = crate::table::rebuild(&out)?;
    println!("merged {} runs into {}", df.height(), out.join("runs.parquet").display());
    Ok(())
}
