//! `ditkd race`: a racing sweep's stages and decisions as separate commands, so Slurm can run
//! them: each stage is a job array (`race stage --shard K/N`), each decision a job that depends
//! on it (`race decide --submit`) and submits the next stage. `ditkd sweep` runs the same race in
//! one process; both write the same files.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::race::{eval_noise_ln, Phase, Race};
use crate::runner::{parse_shard, sweep_dir, Loaded, RunPlan};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Train shard K/N of the race's current stage (or of its companion runs): a Slurm array task.
    Stage {
        /// The racing sweep's spec (`schedule: {kind: halving, ...}`).
        spec: PathBuf,
        /// Results directory (default results/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// This task's share of the stage's runs, e.g. 2/8.
        #[arg(long)]
        shard: String,
    },
    /// Decide the current stage once its runs are done (writes race/stage-NNN.json). With
    /// --submit, submit whatever is next to Slurm: the stage's array and a decision job after it.
    Decide {
        spec: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
        /// Submit the next stage (or the unfinished part of this one) with sbatch.
        #[arg(long)]
        submit: bool,
        /// Slurm time limit of each array task.
        #[arg(long, default_value = "04:00:00")]
        time: String,
        #[arg(long)]
        partition: Option<String>,
        /// Most array tasks per stage.
        #[arg(long, default_value_t = 64)]
        max_tasks: usize,
        /// The ditkd binary the jobs run (default: this one).
        #[arg(long)]
        binary: Option<PathBuf>,
    },
    /// The race pooled with other sweeps that trained its runs (an audit of pruned shapes, extra
    /// seeds) at its last rung: P(best) per shape, the tie set, where the race stopped each shape,
    /// rank agreement of each rung with the last, and what to train next. Writes
    /// race/pooled.json in the race's directory.
    Pool {
        /// The racing sweep's spec.
        spec: PathBuf,
        /// The race's results directory (default results/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Other results directories whose runs are the race's runs (same config but curve points).
        #[arg(long = "with")]
        with: Vec<PathBuf>,
        /// Pool runs of different code versions, teachers or feature nets.
        #[arg(long)]
        allow_mixed: bool,
    },
    /// Print the race's standing: every stage's decisions, P(best) per shape.
    Status {
        /// A racing sweep's results directory.
        dir: PathBuf,
    },
}

pub fn run(a: Args) -> Result<()> {
    match a.action {
        Action::Stage { spec, out, shard } => stage(&spec, out.as_deref(), &shard),
        Action::Decide {
            spec,
            out,
            submit,
            time,
            partition,
            max_tasks,
            binary,
        } => {
            let sub = submit.then_some(Submit {
                time,
                partition,
                max_tasks: max_tasks.max(1),
                binary,
            });
            decide(&spec, out.as_deref(), sub.as_ref())
        }
        Action::Pool {
            spec,
            out,
            with,
            allow_mixed,
        } => pool(&spec, out.as_deref(), &with, allow_mixed),
        Action::Status { dir } => status(&dir),
    }
}

fn load(spec: &Path) -> Result<(Loaded, crate::race::schedule::Halving)> {
    let l = crate::runner::load(spec, None, None)?;
    let h = l.spec.schedule.halving().cloned().with_context(|| {
        format!(
            "{}: schedule: not a racing sweep (kind: halving)",
            spec.display()
        )
    })?;
    Ok((l, h))
}

fn stage(spec_path: &Path, out: Option<&Path>, shard: &str) -> Result<()> {
    let (k, n) = parse_shard(shard)?;
    let (Loaded { spec, base, runs }, h) = load(spec_path)?;
    let dir = sweep_dir(&spec, out);
    crate::runner::claim_dir(&spec, &dir, false, false)?;
    let race = Race::new(&spec, &h, &runs, &base, &dir);
    let runs = match race.phase()? {
        None => {
            println!("race over: nothing to train");
            return Ok(());
        }
        Some(Phase::Racing { runs, .. } | Phase::Companions { runs }) => runs,
    };
    // Every N-th run of the stage (deterministic): each task gets a mix of shapes.
    let mine: Vec<RunPlan> = runs
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % n == k - 1)
        .map(|(_, r)| r)
        .collect();
    // As in `ditkd sweep`: the shared preparation in one pool of every thread, then each run in
    // its worker's pool of `threads_per_job` (RAYON_NUM_THREADS is the total, set by `main`).
    let all = spec.parallel.total_threads();
    let shared = crate::runner::with_threads(all, || -> Result<distill::run::Shared> {
        let shared = crate::runner::prepare(&spec, &dir)?;
        crate::runner::train_assistants(&spec, &mine, &shared, all, false)?;
        Ok(shared)
    })??;
    let done = crate::runner::execute(&spec, &mine, &dir, &shared, false)?;
    let broken = done
        .iter()
        .filter(|s| s.status == distill::run::RunStatus::Failed)
        .count();
    println!("shard {k}/{n}: {} runs, {broken} failed", done.len());
    anyhow::ensure!(
        broken == 0,
        "{broken} runs failed (their summary.json says why); rerun to retry"
    );
    Ok(())
}

struct Submit {
    time: String,
    partition: Option<String>,
    max_tasks: usize,
    binary: Option<PathBuf>,
}

fn decide(spec_path: &Path, out: Option<&Path>, submit: Option<&Submit>) -> Result<()> {
    if let Some(s) = submit {
        crate::cmd::slurm::check_time(&s.time)?;
        crate::cmd::slurm::check_partition(s.partition.as_deref())?;
    }
    let (Loaded { spec, base, runs }, h) = load(spec_path)?;
    let dir = sweep_dir(&spec, out);
    crate::runner::claim_dir(&spec, &dir, false, false)?;
    let race = Race::new(&spec, &h, &runs, &base, &dir);
    loop {
        let Some(phase) = race.phase()? else {
            crate::table::rebuild(&dir)?;
            print!("{}", crate::race::summary::describe(&race.write_summary()?));
            let n = crate::speed::measure(&dir, &crate::speed::Options::default(), false)?;
            println!(
                "race over; {n} models timed -> {}; table: {}",
                dir.join("latency.parquet").display(),
                dir.join("runs.parquet").display()
            );
            return Ok(());
        };
        let (label, runs) = match &phase {
            Phase::Racing { stage, runs, .. } => (format!("stage {stage}"), runs),
            Phase::Companions { runs } => ("companions".to_string(), runs),
        };
        let pending = race.pending(runs).len();
        if pending > 0 {
            let Some(s) = submit else {
                anyhow::bail!(
                    "{label}: {pending} of {} runs are not finished: run them first (`ditkd race stage ... --shard K/N`, or `ditkd sweep`), or pass --submit",
                    runs.len()
                );
            };
            let tasks = runs.len().min(s.max_tasks);
            let (array, next) = submit_stage(&spec, spec_path, &dir, &label, tasks, s)?;
            println!("{label}: {pending} runs in {tasks} array tasks: array {array} decide {next}");
            return Ok(());
        }
        match phase {
            Phase::Racing { stage, state, .. } => {
                crate::table::rebuild(&dir)?;
                let rec = race.decide_stage(stage, &state, eval_noise_ln(&dir))?;
                for d in &rec.decisions {
                    println!(
                        "stage {stage}, budget {}: {}",
                        d.budget,
                        crate::race::decide::describe(d)
                    );
                }
            }
            // Finished companions: the next phase is the end.
            Phase::Companions { .. } => {}
        }
    }
}

fn pool(spec_path: &Path, out: Option<&Path>, with: &[PathBuf], allow_mixed: bool) -> Result<()> {
    let (Loaded { spec, base, runs }, h) = load(spec_path)?;
    let dir = sweep_dir(&spec, out);
    anyhow::ensure!(
        dir.join("race").join("stage-000.json").is_file(),
        "{}: no race/stage-000.json (the race has not decided a stage yet)",
        dir.display()
    );
    for w in with {
        anyhow::ensure!(
            w.join("runs").is_dir(),
            "--with {}: not a results directory (no runs/)",
            w.display()
        );
    }
    let race = Race::new(&spec, &h, &runs, &base, &dir);
    let pooled = race.pool(with, allow_mixed, eval_noise_ln(&dir))?;
    anyhow::ensure!(
        !pooled.budgets.is_empty(),
        "race pool: no run has reached the last rung ({} steps) yet",
        pooled.steps
    );
    let path = dir.join("race").join("pooled.json");
    dit::io::write_json_atomic(&path, &pooled)?;
    print!("{}", crate::race::pool::describe(&pooled));
    println!("-> {}", path.display());
    Ok(())
}

fn abs(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `sbatch` the stage's array and, after it, a decision job that submits what follows.
fn submit_stage(
    spec: &crate::spec::SweepSpec,
    spec_path: &Path,
    dir: &Path,
    label: &str,
    tasks: usize,
    s: &Submit,
) -> Result<(String, String)> {
    let bin = match &s.binary {
        Some(b) => abs(b),
        None => std::env::current_exe()?,
    };
    let (bin, spec_file, out) = (
        bin.display().to_string(),
        abs(spec_path).display().to_string(),
        abs(dir).display().to_string(),
    );
    let root = std::fs::canonicalize(distill::paths::repo_root())?
        .display()
        .to_string();
    std::fs::create_dir_all(dir.join("slurm-logs"))?;
    let tag = label.replace(' ', "-");
    let partition = s
        .partition
        .as_ref()
        .map(|p| format!("#SBATCH --partition={p}\n"))
        .unwrap_or_default();
    let partition_arg = s
        .partition
        .as_ref()
        .map(|p| format!(" --partition {p}"))
        .unwrap_or_default();
    let cpus = spec.parallel.jobs * spec.parallel.threads_per_job;
    let array = sbatch(
        &[],
        &format!(
            "#!/usr/bin/env bash
#SBATCH --job-name=ditkd-{name}-{tag}
#SBATCH --array=1-{tasks}
#SBATCH --cpus-per-task={cpus}
#SBATCH --time={time}
#SBATCH --output={out}/slurm-logs/{tag}-%a.out
{partition}set -euo pipefail
export DITKD_ROOT={root}
{bin} race stage {spec_file} --out {out} --shard \"$SLURM_ARRAY_TASK_ID/{tasks}\"
",
            name = spec.name,
            time = s.time,
        ),
    )?;
    let next = sbatch(
        &[
            &format!("--dependency=afterok:{array}"),
            "--kill-on-invalid-dep=yes",
        ],
        &format!(
            "#!/usr/bin/env bash
#SBATCH --job-name=ditkd-{name}-decide-{tag}
#SBATCH --cpus-per-task={threads}
#SBATCH --time=01:00:00
#SBATCH --output={out}/slurm-logs/decide-{tag}.out
{partition}set -euo pipefail
export DITKD_ROOT={root}
{bin} --threads {threads} race decide {spec_file} --out {out} --submit --time {time} --max-tasks {max}{partition_arg} --binary {bin}
",
            name = spec.name,
            time = s.time,
            threads = spec.parallel.threads_per_job,
            max = s.max_tasks,
        ),
    )?;
    Ok((array, next))
}

/// Submit `script` on stdin; returns the job id.
fn sbatch(args: &[&str], script: &str) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new("sbatch")
        .arg("--parsable")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("sbatch: cannot start it (is this a Slurm node?)")?;
    child
        .stdin
        .take()
        .context("sbatch: no stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "sbatch failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // --parsable prints `id` or `id;cluster`.
    Ok(id.split(';').next().unwrap_or_default().to_string())
}

fn status(dir: &Path) -> Result<()> {
    let mut k = 0;
    loop {
        let p = dir.join("race").join(format!("stage-{k:03}.json"));
        let Ok(text) = std::fs::read_to_string(&p) else {
            break;
        };
        let rec: crate::race::StageRecord = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a stage record", p.display()))?;
        for d in &rec.decisions {
            println!(
                "stage {k}, budget {}: {}",
                crate::fmt::si(d.budget as f64),
                crate::race::decide::describe(d)
            );
        }
        k += 1;
    }
    anyhow::ensure!(
        k > 0,
        "{}: no race/stage-000.json (not a racing sweep, or no stage decided yet)",
        dir.display()
    );
    if let Ok(text) = std::fs::read_to_string(dir.join("race").join("summary.json")) {
        let s: crate::race::summary::RaceSummary = serde_json::from_str(&text)?;
        print!("{}", crate::race::summary::describe(&s));
    }
    Ok(())
}
