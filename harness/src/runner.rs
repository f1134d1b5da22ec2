//! The sweep runner: spec -> planned runs -> concurrent, resumable distillation runs, with the
//! table rewritten after every finished run (an interrupted sweep still leaves a valid table).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use candle_core::Device;
use dit::DitConfig;
use distill::optim::OptimConfig;
use distill::run::{run_distill, DistillConfig, Shared, Summary};

use crate::spec::{enumerate, SweepSpec};

/// One run of the sweep.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Position in the deterministic plan (shards split on it).
    pub index: usize,
    pub budget: usize,
    pub cfg: DistillConfig,
}

impl RunPlan {
    /// `007-d4-w96-h4-kd-s0`.
    pub fn dir_name(&self) -> String {
        let s = &self.cfg.student;
        format!("{:03}-d{}-w{}-h{}-{}-s{}", self.index, s.depth, s.hidden_size, s.num_heads, self.cfg.mode, self.cfg.seed)
    }
}

/// The sweep's output directory: `results/<name>` unless overridden.
pub fn sweep_dir(spec: &SweepSpec, out: Option<&Path>) -> PathBuf {
    match out {
        Some(o) => o.to_path_buf(),
        None => distill::paths::resolve(Path::new("results")).join(&spec.name),
    }
}

/// The teacher's config fixes the students' input, channels and classes.
pub fn base_config(spec: &SweepSpec) -> Result<DitConfig> {
    let (cfg, _) = distill::checkpoint::locate_model(&spec.teacher).with_context(|| "teacher")?;
    distill::checkpoint::read_dit_config(&cfg)
}

/// Every run: seeds x shapes x modes, in a fixed order. Seed-major, so a study stopped half-way
/// already holds every shape and mode once (enough to fit the law), and each seed's teacher
/// targets are computed once and reused while they are hot.
pub fn plan(spec: &SweepSpec, base: &DitConfig) -> Result<Vec<RunPlan>> {
    let shapes = enumerate(spec, base)?;
    let mut runs = Vec::new();
    for &seed in &spec.seeds {
        for p in &shapes {
            for &mode in &spec.distill.modes {
                // Scratch runs get the teacher too: only for the teacher-fidelity columns.
                let mut c = DistillConfig::new(Some(spec.teacher.clone()), mode, p.cfg.clone(), spec.distill.steps);
                c.kd = spec.distill.kd.clone();
                c.batch_size = spec.distill.batch_size;
                c.optim = OptimConfig { lr: spec.distill.lr, warmup_steps: spec.distill.warmup_steps, ..Default::default() };
                c.ema_decay = spec.distill.ema_decay;
                c.seed = seed;
                c.eval = spec.eval.clone();
                c.data = spec.data.clone();
                c.featnet = spec.featnet.clone();
                c.cache_dir = spec.cache_dir.clone();
                runs.push(RunPlan { index: runs.len(), budget: p.budget, cfg: c });
            }
        }
    }
    Ok(runs)
}

/// `K/N` -> (K, N), 1-based K.
pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let (k, n) = s.split_once('/').with_context(|| format!("--shard `{s}`: expected K/N, e.g. 2/4"))?;
    let (k, n): (usize, usize) = (k.trim().parse()?, n.trim().parse()?);
    if n == 0 || k == 0 || k > n {
        anyhow::bail!("--shard `{s}`: need 1 <= K <= N");
    }
    Ok((k, n))
}

/// Runs of shard K of N: whole (seed, shape) groups of `modes` consecutive runs, every N-th group
/// starting at K-1. A shape's KD and scratch runs stay together, so every shard gets both modes and
/// a mix of cheap and dear shapes (deterministic).
pub fn shard(runs: Vec<RunPlan>, k: usize, n: usize, modes: usize) -> Vec<RunPlan> {
    runs.into_iter().filter(|r| (r.index / modes.max(1)) % n == k - 1).collect()
}

/// Run directories are named `<index>-<shape>-<mode>-s<seed>`, and the index depends on the plan's
/// order. A run started under another order (an older version) is found by the rest of its name and
/// its config hash and renamed to this plan's name, so the sweep resumes it instead of training it
/// again beside the old copy. Returns how many were renamed.
pub fn adopt_renamed(dir: &Path, runs: &[RunPlan]) -> Result<usize> {
    let Ok(entries) = std::fs::read_dir(dir.join("runs")) else { return Ok(0) };
    let existing: Vec<String> = entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    let mut renamed = 0;
    for r in runs {
        let name = r.dir_name();
        if existing.contains(&name) {
            continue;
        }
        let suffix = &name[name.find('-').unwrap_or(0)..];
        let hash = r.cfg.hash();
        for old in &existing {
            let Some(index) = old.strip_suffix(suffix) else { continue };
            if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let from = dir.join("runs").join(old);
            let same = std::fs::read_to_string(from.join("config.yaml"))
                .ok()
                .and_then(|y| serde_yaml_ng::from_str::<DistillConfig>(&y).ok())
                .is_some_and(|c| c.hash() == hash);
            if same && std::fs::rename(&from, dir.join("runs").join(&name)).is_ok() {
                renamed += 1;
                break;
            }
        }
    }
    Ok(renamed)
}

/// Wall-time estimate of a run on one thread (s), for the dry-run table. Rates measured on a
/// 2-core machine running 2 jobs × 1 thread (sweeps/quick.yaml, README): student training at
/// ~25 GFLOP/s plus ~2.5 ms per block per step of fixed overhead, teacher forwards (no gradient)
/// at ~50 GFLOP/s, evaluation sampling at ~12 GFLOP/s plus ~5 s of metrics and timing. The
/// teacher's outputs are cached per seed, so only the first KD run of a seed pays for them
/// (`pays_teacher`).
pub fn estimate_secs(r: &RunPlan, teacher: &DitConfig, pays_teacher: bool) -> f64 {
    let s = &r.cfg.student;
    let images = (r.cfg.steps * r.cfg.batch_size) as f64;
    let train = 3.0 * s.forward_flops() as f64 * images / 25e9 + r.cfg.steps as f64 * s.depth as f64 * 2.5e-3;
    let teach = if pays_teacher { teacher.forward_flops() as f64 * images / 50e9 } else { 0.0 };
    let eval_forwards = r.cfg.eval.samples as f64 * distill::eval::forwards_per_image(r.cfg.mode, &r.cfg.eval.sampler) as f64;
    let eval = eval_forwards * s.forward_flops() as f64 / 12e9 + 5.0;
    train + teach + eval
}

/// Execute `runs` with `jobs` concurrent workers of `threads` candle threads each.
pub fn execute(spec: &SweepSpec, runs: &[RunPlan], dir: &Path, progress: bool) -> Result<Vec<Summary>> {
    std::fs::create_dir_all(dir.join("runs"))?;
    dit::io::write_atomic(&dir.join("spec.yaml"), serde_yaml_ng::to_string(spec)?.as_bytes())?;
    // candle's GEMM reads its thread count from RAYON_NUM_THREADS; each worker runs in its own pool.
    std::env::set_var("RAYON_NUM_THREADS", spec.parallel.threads_per_job.to_string());
    let shared = Shared::load(&spec.data, &spec.featnet, &Device::Cpu)?;
    let queue = Mutex::new(runs.iter().cloned().collect::<VecDeque<_>>());
    let results = Mutex::new(Vec::new());
    let first_error = Mutex::new(None);
    // One line for the sweep, one per active run beneath it (each run's training bar).
    if progress {
        distill::progress::attach(indicatif::MultiProgress::new());
    }
    let overall = distill::progress::bar(runs.len() as u64, &format!("sweep {}", spec.name), progress);
    let jobs = spec.parallel.jobs.min(runs.len()).max(1);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(spec.parallel.threads_per_job).build().expect("thread pool");
                loop {
                    let Some(r) = queue.lock().unwrap().pop_front() else { break };
                    let run_dir = dir.join("runs").join(r.dir_name());
                    let plan = serde_json::json!({"index": r.index, "budget": r.budget, "sweep": spec.name});
                    if let Err(e) = dit::io::write_json_atomic(&run_dir.join("plan.json"), &plan) {
                        first_error.lock().unwrap().get_or_insert(format!("{}: {e:#}", r.dir_name()));
                        continue;
                    }
                    let out = pool.install(|| run_distill(&r.cfg, &run_dir, &shared, progress));
                    match out {
                        Ok(summary) => {
                            if summary.status != "ok" {
                                overall.println(format!("{}: failed: {}", r.dir_name(), summary.reason.clone().unwrap_or_default()));
                            }
                            results.lock().unwrap().push(summary);
                            if let Err(e) = crate::table::rebuild(dir) {
                                overall.println(format!("table: {e:#}"));
                            }
                        }
                        Err(e) => {
                            first_error.lock().unwrap().get_or_insert(format!("{}: {e:#}", r.dir_name()));
                        }
                    }
                    overall.inc(1);
                }
            });
        }
    });
    overall.finish_and_clear();
    crate::table::rebuild(dir)?;
    if let Some(e) = first_error.into_inner().unwrap() {
        anyhow::bail!(e);
    }
    Ok(results.into_inner().unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "
name: t
teacher: results/teachers/x
budgets: [{params: 100k, tol: 0.5}]
axes: {depth: [2, 3], width: {from: 32, to: 128, step: 16}, heads: [2]}
distill: {modes: [kd, scratch], steps: 10}
seeds: [0, 1]
";

    fn runs() -> Vec<RunPlan> {
        let spec: SweepSpec = serde_yaml_ng::from_str(SPEC).unwrap();
        plan(&spec, &DitConfig::default()).unwrap()
    }

    #[test]
    fn shards_partition_the_plan_and_keep_both_modes_of_a_shape() {
        let all = runs();
        assert!(all.len() >= 8);
        let mut seen = vec![];
        for k in 1..=2 {
            let part = shard(all.clone(), k, 2, 2);
            // Each shard trains both modes, and a shape's KD and scratch runs land together.
            assert!(part.iter().any(|r| r.cfg.mode == distill::kd::Mode::Kd));
            assert!(part.iter().any(|r| r.cfg.mode == distill::kd::Mode::Scratch));
            for r in &part {
                assert!(part.iter().any(|q| q.cfg.student == r.cfg.student && q.cfg.seed == r.cfg.seed && q.cfg.mode != r.cfg.mode));
            }
            seen.extend(part.iter().map(|r| r.index));
        }
        seen.sort();
        assert_eq!(seen, (0..all.len()).collect::<Vec<_>>());
    }

    #[test]
    fn a_run_named_under_another_order_is_renamed_not_retrained() {
        let all = runs();
        let tmp = tempfile::tempdir().unwrap();
        let r = &all[1];
        let suffix = &r.dir_name()[3..];
        let old = tmp.path().join("runs").join(format!("017{suffix}"));
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("config.yaml"), serde_yaml_ng::to_string(&r.cfg).unwrap()).unwrap();
        // Same name pattern but another config (different steps): left alone.
        let mut other = all[2].cfg.clone();
        other.steps += 1;
        let stranger = tmp.path().join("runs").join(format!("018{}", &all[2].dir_name()[3..]));
        std::fs::create_dir_all(&stranger).unwrap();
        std::fs::write(stranger.join("config.yaml"), serde_yaml_ng::to_string(&other).unwrap()).unwrap();

        assert_eq!(adopt_renamed(tmp.path(), &all).unwrap(), 1);
        assert!(tmp.path().join("runs").join(r.dir_name()).join("config.yaml").exists());
        assert!(!old.exists());
        assert!(stranger.exists());
        assert_eq!(adopt_renamed(tmp.path(), &all).unwrap(), 0, "nothing left to adopt");
    }
}
