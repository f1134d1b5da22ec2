//! `ditkd slurm`: a submission script for a Slurm cluster. Slurm is the engine: a job array runs
//! one shard per task (`ditkd sweep --shard K/N`), and a merge job that depends on the whole array
//! (`afterok`, killed if the dependency can never be met) combines the shard tables.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::runner::{base_config, plan, sweep_dir};
use crate::spec::SweepSpec;

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
    std::path::absolute(distill::paths::resolve(p)).unwrap_or_else(|_| p.to_path_buf())
}

/// The script text.
pub fn script(a: &Args) -> Result<String> {
    let spec = SweepSpec::from_file(&a.spec)?;
    let runs = plan(&spec, &base_config(&spec)?)?.len();
    let shards = a.shards.unwrap_or(runs).clamp(1, runs.max(1));
    let dir = abs(&sweep_dir(&spec, a.out.as_deref()));
    let spec_path = abs(&a.spec);
    let bin = match &a.binary {
        Some(b) => abs(b),
        None => std::env::current_exe()?,
    };
    let cpus = spec.parallel.jobs * spec.parallel.threads_per_job;
    let partition = a.partition.as_ref().map(|p| format!("#SBATCH --partition={p}\n")).unwrap_or_default();
    let root = std::fs::canonicalize(distill::paths::repo_root())?;
    let (bin, spec_file, dir, root) = (bin.display().to_string(), spec_path.display().to_string(), dir.display().to_string(), root.display().to_string());
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
EOS
)
echo "array $array_id merge $merge_id"
"#,
        name = spec.name,
        time = a.time,
    ))
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
