//! `ditkd slurm`: a submission script for a Slurm cluster. Slurm is the engine: a job array runs
//! one shard per task (`ditkd sweep --shard K/N`), and a merge job that depends on the whole array
//! (`afterok`, killed if the dependency can never be met) combines the shard tables.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::runner::{sweep_dir, Loaded};

pub struct Args {
    pub spec: PathBuf,
    pub shards: Option<usize>,
    pub out: Option<PathBuf>,
    pub output: Option<PathBuf>,
    pub time: String,
    pub partition: Option<String>,
    pub binary: Option<PathBuf>,
}

fn abs(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Slurm's `--time` formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS (or UNLIMITED).
pub fn check_time(t: &str) -> Result<()> {
    let nums = |s: &str, n: usize| {
        let parts: Vec<&str> = s.split(':').collect();
        parts.len() <= n
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()))
    };
    let ok = t == "UNLIMITED"
        || match t.split_once('-') {
            Some((d, rest)) => {
                !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) && nums(rest, 3)
            }
            None => nums(t, 3),
        };
    anyhow::ensure!(
        ok,
        "--time `{}`: not a Slurm time limit (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS)",
        crate::fmt::clip(t, 40)
    );
    Ok(())
}

/// A Slurm partition name (letters, digits, - _ . ,).
pub fn check_partition(p: Option<&str>) -> Result<()> {
    if let Some(p) = p {
        let ok = !p.is_empty()
            && p.len() <= 64
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ','));
        anyhow::ensure!(
            ok,
            "--partition `{}`: not a Slurm partition name (letters, digits, - _ . ,)",
            crate::fmt::clip(p, 40)
        );
    }
    Ok(())
}

/// The script text.
pub fn script(a: &Args) -> Result<String> {
    check_time(&a.time)?;
    check_partition(a.partition.as_deref())?;
    if a.shards == Some(0) {
        anyhow::bail!("--shards: must be at least 1");
    }
    let Loaded { spec, runs, .. } = crate::runner::load(&a.spec, None, None)?;
    if spec.schedule.halving().is_some() {
        return Ok(race_script(a, &spec));
    }
    let runs = runs.len();
    if let Some(s) = a.shards.filter(|&s| s > runs) {
        eprintln!("note: --shards {s} is more than the {runs} runs: using {runs} array tasks");
    }
    let shards = a.shards.unwrap_or(runs).clamp(1, runs.max(1));
    let dir = abs(&sweep_dir(&spec, a.out.as_deref()));
    let spec_path = abs(&a.spec);
    let bin = match &a.binary {
        Some(b) => abs(b),
        None => std::env::current_exe()?,
    };
    let cpus = spec.parallel.jobs * spec.parallel.threads_per_job;
    let partition = a
        .partition
        .as_ref()
        .map(|p| format!("#SBATCH --partition={p}\n"))
        .unwrap_or_default();
    let root = std::fs::canonicalize(distill::paths::repo_root())?;
    let (bin, spec_file, dir, root) = (
        bin.display().to_string(),
        spec_path.display().to_string(),
        dir.display().to_string(),
        root.display().to_string(),
    );
    Ok(format!(
        r#"#!/usr/bin/env bash
# Slurm submission for sweep `{name}`: {runs} runs in {shards} array tasks, then a merge job.
# Submit with: bash THIS_FILE   (prints the array and merge job ids)
set -euo pipefail
DITKD={bin}
SPEC={spec_file}
OUT={dir}
mkdir -p "$OUT/shards" "$OUT/slurm-logs"
export DITKD_ROOT={root}

array_id=$(sbatch --parsable <<'EOS'
#!/usr/bin/env bash
#SBATCH --job-name=ditkd-{name}
#SBATCH --array=1-{shards}
#SBATCH --cpus-per-task={cpus}
#SBATCH --time={time}
#SBATCH --output={dir}/slurm-logs/shard-%a.out
{partition}set -euo pipefail
export DITKD_ROOT={root}
{bin} sweep {spec_file} --shard "$SLURM_ARRAY_TASK_ID/{shards}" --out "{dir}/shards/$SLURM_ARRAY_TASK_ID"
EOS
)

merge_id=$(sbatch --parsable --dependency=afterok:$array_id --kill-on-invalid-dep=yes <<'EOS'
#!/usr/bin/env bash
#SBATCH --job-name=ditkd-{name}-merge
#SBATCH --cpus-per-task=1
#SBATCH --time=00:30:00
#SBATCH --output={dir}/slurm-logs/merge.out
{partition}set -euo pipefail
export DITKD_ROOT={root}
{bin} merge --out {dir} {dir}/shards/*
# Every run is done: time each model once more with nothing else running.
{bin} --threads {threads} latency {dir}
EOS
)
echo "array $array_id merge $merge_id"
"#,
        name = spec.name,
        time = a.time,
        threads = spec.parallel.threads_per_job,
    ))
}

/// A racing sweep decides between stages, so its submission is one command that submits stage 0
/// (a job array) and a decision job after it; each decision job submits the next stage the same
/// way (`ditkd race decide --submit`), until the race and its companion runs are done.
fn race_script(a: &Args, spec: &crate::spec::SweepSpec) -> String {
    let dir = abs(&sweep_dir(spec, a.out.as_deref()));
    let bin = match &a.binary {
        Some(b) => abs(b),
        None => std::env::current_exe().unwrap_or_else(|_| PathBuf::from("ditkd")),
    };
    let root = std::fs::canonicalize(distill::paths::repo_root())
        .unwrap_or_else(|_| distill::paths::repo_root());
    let partition = a
        .partition
        .as_ref()
        .map(|p| format!(" --partition {p}"))
        .unwrap_or_default();
    let max_tasks = a.shards.unwrap_or(64);
    format!(
        r#"#!/usr/bin/env bash
# Slurm submission for racing sweep `{name}`: every stage is a job array and every decision a job
# that depends on it and submits the next stage (race/stage-NNN.json records each decision).
# Submit with: bash THIS_FILE   (prints the first array and decision job ids)
set -euo pipefail
export DITKD_ROOT={root}
mkdir -p {dir}/slurm-logs
{bin} race decide {spec} --out {dir} --submit --time {time} --max-tasks {max_tasks}{partition} --binary {bin}
"#,
        name = spec.name,
        root = root.display(),
        dir = dir.display(),
        bin = bin.display(),
        spec = abs(&a.spec).display(),
        time = a.time,
    )
}

pub fn run(a: Args) -> Result<()> {
    let text = script(&a)?;
    match &a.output {
        Some(p) => {
            dit::io::write_atomic(p, text.as_bytes())?;
            eprintln!("wrote {} (submit with: bash {})", p.display(), p.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}
