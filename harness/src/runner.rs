//! The sweep runner: spec -> planned runs -> concurrent, resumable distillation runs, with the
//! table rewritten after every finished run (an interrupted sweep still leaves a valid table).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use distill::run::{run_distill, DistillConfig, Shared, Summary};
use dit::DitConfig;

use crate::spec::{enumerate, field_error, SweepSpec};

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
        format!(
            "{:03}-d{}-w{}-h{}-{}-s{}",
            self.index,
            s.depth,
            s.hidden_size,
            s.num_heads,
            distill::setup::Setup::of(&self.cfg),
            self.cfg.seed
        )
    }
}

/// The sweep's output directory: `results/<name>` unless overridden.
pub fn sweep_dir(spec: &SweepSpec, out: Option<&Path>) -> PathBuf {
    match out {
        Some(o) => o.to_path_buf(),
        None => distill::paths::output(Path::new("results")).join(&spec.name),
    }
}

/// The teacher's config fixes the students' input, channels and classes.
pub fn base_config(spec: &SweepSpec) -> Result<DitConfig> {
    let (cfg, _) = distill::checkpoint::locate_model(&spec.teacher)
        .map_err(|e| field_error("teacher", format!("{e:#}")))?;
    distill::checkpoint::read_dit_config(&cfg).map_err(|e| field_error("teacher", format!("{e:#}")))
}

/// Every run: seeds x shapes x modes, in a fixed order. Seed-major, so a study stopped half-way
/// already holds every shape and mode once (enough to fit the law), and each seed's teacher
/// targets are computed once and reused while they are hot. Every run's config is validated
/// here, so an invalid setting fails before anything trains.
pub fn plan(spec: &SweepSpec, base: &DitConfig) -> Result<Vec<RunPlan>> {
    let shapes = enumerate(spec, base)?;
    let mut runs = Vec::new();
    for &seed in &spec.seeds {
        for p in &shapes {
            for &setup in &spec.distill.modes {
                let cfg = spec
                    .distill
                    .run_config(spec, setup, p.cfg.clone(), seed)
                    .with_context(|| format!("run {}", runs.len()))?;
                cfg.validate()
                    .with_context(|| format!("run {} ({})", runs.len(), cfg.run_label()))?;
                runs.push(RunPlan {
                    index: runs.len(),
                    budget: p.budget,
                    cfg,
                });
            }
        }
    }
    if spec.distill.flop_matched {
        with_flop_matched_points(spec, base, &mut runs)?;
    }
    Ok(runs)
}

/// The step at which `cfg`'s training FLOPs come closest to `target` (within half a step), if
/// that is short of `steps`: where a run that pays more per step is compared with a cheaper one at
/// equal training compute.
pub(crate) fn flop_matched_step(
    cfg: &distill::run::DistillConfig,
    teacher: &dit::DitConfig,
    target: f64,
    steps: usize,
) -> Option<usize> {
    let fixed = cfg.train_flops(Some(teacher), 0);
    let per_step = cfg.train_flops(Some(teacher), 1) - fixed;
    if !(per_step > 0.0) {
        return None;
    }
    let s = ((target - fixed) / per_step).round();
    (s >= 1.0 && s < steps as f64).then_some(s as usize)
}

/// Add `step` to `r`'s curve points.
pub(crate) fn add_curve_point(r: &mut RunPlan, step: usize) {
    r.cfg.eval.at_steps.push(step);
    r.cfg.eval.at_steps.sort_unstable();
    r.cfg.eval.at_steps.dedup();
}

/// The architecture a run's per-step teacher cost is counted on: the sweep's teacher, or a `ta`
/// run's assistant.
fn run_teacher(spec: &SweepSpec, base: &DitConfig, cfg: &DistillConfig) -> Result<DitConfig> {
    Ok(match distill::setup::Setup::of(cfg) {
        distill::setup::Setup::Ta => spec
            .distill
            .assistant(spec, &cfg.student, cfg.seed)?
            .map_or_else(|| base.clone(), |a| a.cfg.student),
        distill::setup::Setup::Kd
        | distill::setup::Setup::Feat
        | distill::setup::Setup::Mi1
        | distill::setup::Setup::Onestep
        | distill::setup::Setup::Scratch => base.clone(),
    })
}

/// `distill.flop_matched`: every run also gets a curve point at each step where its training
/// FLOPs equal another setup's run of the same budget, shape and seed at that run's last step
/// (within half a step; only where that is short of its own last step). Setups that pay more per
/// step (a teacher's forward, an assistant's training) are then compared with cheaper ones at
/// equal training compute from measured points, beside the comparison at equal steps.
fn with_flop_matched_points(
    spec: &SweepSpec,
    base: &DitConfig,
    runs: &mut [RunPlan],
) -> Result<()> {
    let teachers: Vec<DitConfig> = runs
        .iter()
        .map(|r| run_teacher(spec, base, &r.cfg))
        .collect::<Result<_>>()?;
    let finals: Vec<f64> = runs
        .iter()
        .zip(&teachers)
        .map(|(r, t)| r.cfg.train_flops(Some(t), r.cfg.steps))
        .collect();
    let key = |r: &RunPlan| (r.budget, r.cfg.student.shape_label(), r.cfg.seed);
    for i in 0..runs.len() {
        for j in 0..runs.len() {
            if i == j || key(&runs[i]) != key(&runs[j]) {
                continue;
            }
            let (cfg, steps) = (&runs[i].cfg, runs[i].cfg.steps);
            if let Some(s) = flop_matched_step(cfg, &teachers[i], finals[j], steps) {
                add_curve_point(&mut runs[i], s);
            }
        }
    }
    Ok(())
}

/// A sweep ready to run: the validated spec (with command-line overrides), the teacher's
/// config and the validated plan. `--dry-run`, the sweep, `study` and `slurm` all load through
/// here, so they accept and refuse exactly the same specs; every error names the spec file and,
/// where it can, the field and line.
pub struct Loaded {
    pub spec: SweepSpec,
    pub base: DitConfig,
    pub runs: Vec<RunPlan>,
}

pub fn load(path: &Path, jobs: Option<usize>, threads_per_job: Option<usize>) -> Result<Loaded> {
    let mut spec = SweepSpec::from_file(path)?;
    set_parallel(&mut spec, jobs, threads_per_job)?;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let at = |e: anyhow::Error| crate::spec::locate(path, &text, e);
    let base = base_config(&spec).map_err(at)?;
    let runs = plan(&spec, &base).map_err(at)?;
    preflight(&spec).map_err(at)?;
    Ok(Loaded { spec, base, runs })
}

/// The command line's `--jobs` and `--threads-per-job` over the spec's `parallel`.
fn set_parallel(
    spec: &mut SweepSpec,
    jobs: Option<usize>,
    threads_per_job: Option<usize>,
) -> Result<()> {
    // Parallelism changes how fast runs go, never what they compute (not part of a run's hash).
    if let Some(j) = jobs {
        anyhow::ensure!(
            (1..=1024).contains(&j),
            "--jobs: must lie in 1..=1024 (got {j})"
        );
        spec.parallel.jobs = j;
    }
    if let Some(t) = threads_per_job {
        anyhow::ensure!(
            (1..=1024).contains(&t),
            "--threads-per-job: must lie in 1..=1024 (got {t})"
        );
        spec.parallel.threads_per_job = t;
    }
    Ok(())
}

/// Every thread a sweep of the spec at `path` runs at once (`Parallel::total_threads`, with the
/// command line's overrides): the RAYON_NUM_THREADS `main` gives a sweeping process before any
/// thread starts (`Cli::environment`). None when the spec or an override is unusable (the command
/// itself then says why).
pub fn sweep_threads(
    path: &Path,
    jobs: Option<usize>,
    threads_per_job: Option<usize>,
) -> Option<usize> {
    let mut spec = SweepSpec::from_file(path).ok()?;
    set_parallel(&mut spec, jobs, threads_per_job).ok()?;
    Some(spec.parallel.total_threads())
}

/// `f` inside a pool of `threads` rayon threads: the GEMMs and parallel loops under it size
/// themselves from it (`rayon::current_num_threads()`), whatever the process's global pool.
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> Result<R> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    Ok(pool.install(f))
}

/// Inputs every run reads, checked before any starts: the feature net and the data directory.
fn preflight(spec: &SweepSpec) -> Result<()> {
    let featnet = distill::paths::resolve(&spec.featnet);
    for f in ["featnet.json", "featnet.safetensors"] {
        if !featnet.join(f).is_file() {
            return Err(field_error(
                "featnet",
                format!(
                    "{}: missing (train it with `ditkd featnet`)",
                    featnet.join(f).display()
                ),
            ));
        }
    }
    spec.data
        .check()
        .map_err(|e| field_error("data", format!("{e:#}")))?;
    if spec.eval.wants_fid() {
        distill::inception::weights::check_available()
            .map_err(|e| field_error("eval.metrics", format!("`fid`: {e:#}")))?;
    }
    Ok(())
}

/// Hash of what a sweep computes (the spec without `parallel`): a results directory belongs to
/// one sweep, and a second sweep must not write into it.
pub fn spec_hash(spec: &SweepSpec) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut v = serde_json::to_value(spec)?;
    if let Some(o) = v.as_object_mut() {
        o.remove("parallel");
    }
    Ok(hex::encode(
        &Sha256::digest(serde_json::to_string(&v)?.as_bytes())[..8],
    ))
}

/// Refuse `dir` when it holds another sweep's spec (another name, or the same name with other
/// settings unless `allow_changed`): two sweeps in one table would mix their runs.
pub fn claim_dir(
    spec: &SweepSpec,
    dir: &Path,
    allow_changed: bool,
    allow_mixed_code: bool,
) -> Result<()> {
    if !allow_mixed_code {
        same_code(dir)?;
    }
    let p = dir.join("spec.yaml");
    let Ok(text) = std::fs::read_to_string(&p) else {
        return Ok(());
    };
    let old: SweepSpec = serde_yaml_ng::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: this results directory holds an unreadable spec ({}); choose another --out",
            p.display(),
            crate::fmt::clip(&e.to_string(), 200)
        )
    })?;
    if old.name != spec.name {
        anyhow::bail!(
            "{}: this directory holds sweep `{}`, not `{}`: its table would mix two sweeps; choose another --out",
            dir.display(),
            old.name,
            spec.name
        );
    }
    let (a, b) = (spec_hash(&old)?, spec_hash(spec)?);
    if a != b && !allow_changed {
        anyhow::bail!(
            "{}: sweep `{}` was started with other settings (spec hash {a}, now {b}); finished runs whose configs still match are kept if you continue with --allow-changed-spec, or choose another --out",
            dir.display(),
            spec.name
        );
    }
    Ok(())
}

/// Refuse a directory whose finished runs another build wrote: a table (and a study) holds the
/// rows of one `code_version`, so continuing there takes the build that started it.
fn same_code(dir: &Path) -> Result<()> {
    let ours = distill::run::code_version();
    let mut other: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for e in std::fs::read_dir(dir.join("runs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(e.path().join("summary.json")) else {
            continue;
        };
        let Ok(s) = serde_json::from_str::<Summary>(&text) else {
            continue;
        };
        if s.code_version != ours {
            let v = other
                .entry(s.code_version)
                .or_insert((0, e.file_name().to_string_lossy().into_owned()));
            v.0 += 1;
        }
    }
    if other.is_empty() {
        return Ok(());
    }
    let which: Vec<String> = other
        .iter()
        .map(|(v, (n, first))| format!("{n} by {v} (e.g. runs/{first})"))
        .collect();
    anyhow::bail!(
        "{}: finished runs were written by another build: {}; this binary is {ours}. Continuing would mix code versions in one table: build the commit that started this sweep and continue with it, or pass --allow-mixed-code",
        dir.display(),
        which.join(", ")
    )
}

/// `K/N` -> (K, N), 1-based K.
pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let shown = crate::fmt::clip(s, 40);
    let bad = || {
        anyhow::anyhow!("--shard `{shown}`: expected K/N with whole numbers 1 <= K <= N, e.g. 2/4")
    };
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n): (usize, usize) = (
        k.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || k == 0 || k > n {
        return Err(bad());
    }
    Ok((k, n))
}

/// Runs of shard K of N: whole (seed, shape) groups of `modes` consecutive runs, every N-th group
/// starting at K-1. A shape's KD and scratch runs stay together, so every shard gets both modes and
/// a mix of cheap and dear shapes (deterministic).
pub fn shard(runs: Vec<RunPlan>, k: usize, n: usize, modes: usize) -> Vec<RunPlan> {
    runs.into_iter()
        .filter(|r| (r.index / modes.max(1)) % n == k - 1)
        .collect()
}

/// Wall-time estimate of a run on one thread (s), for the dry-run table. Rates measured on a
/// 2-core machine running 2 jobs × 1 thread (sweeps/quick.yaml, README): student training at
/// ~25 GFLOP/s plus ~2.5 ms per block per step of fixed overhead, teacher forwards (no gradient)
/// at ~50 GFLOP/s, evaluation sampling at ~12 GFLOP/s plus ~5 s of metrics and timing. The
/// teacher's outputs are cached per seed, so only the first run of a seed that reads the shared
/// cache (`Setup::reads_teacher_cache`) pays for them (`pays_teacher`).
pub fn estimate_secs(r: &RunPlan, teacher: &DitConfig, pays_teacher: bool) -> f64 {
    let s = &r.cfg.student;
    let images = (r.cfg.steps * r.cfg.batch_size) as f64;
    let train = 3.0 * s.forward_flops() as f64 * images / 25e9
        + r.cfg.steps as f64 * s.depth as f64 * 2.5e-3;
    let teach = if pays_teacher {
        teacher.forward_flops() as f64 * images / 50e9
    } else {
        0.0
    };
    let eval_forwards = r.cfg.eval.samples as f64
        * distill::eval::forwards_per_image(r.cfg.mode, &r.cfg.eval.sampler) as f64;
    let eval = eval_forwards * s.forward_flops() as f64 / 12e9 + 5.0;
    train + teach + eval
}

/// What every run of a sweep reads, loaded once: the data, the feature net and the test set's
/// features, and the sweep's `reference.json` (the real-data floor and the teacher under the
/// students' protocol), measured before any student.
pub fn prepare(spec: &SweepSpec, dir: &Path) -> Result<Shared> {
    std::fs::create_dir_all(dir.join("runs"))
        .with_context(|| format!("creating {}", dir.join("runs").display()))?;
    dit::io::write_atomic(
        &dir.join("spec.yaml"),
        serde_yaml_ng::to_string(spec)?.as_bytes(),
    )?;
    let mut shared = Shared::load(
        &spec.data,
        &spec.featnet,
        Some(&spec.cache_dir),
        &crate::device::get(),
    )?;
    shared
        .load_fid(&spec.data, &spec.eval, &spec.cache_dir)
        .context("the FID's real statistics")?;
    let quiet = distill::eval::EvalConfig {
        speed: false,
        ..spec.eval.clone()
    };
    distill::reference::Reference::ensure(
        dir,
        &quiet,
        Some(&spec.teacher),
        &shared,
        &spec.cache_dir,
    )
    .context("measuring the real-data floor and the teacher")?;
    Ok(shared)
}

/// The teacher's outputs of every output-KD stream (seed, batch) that two or more runs share,
/// computed once with all `threads` before the runs start, so concurrent students do not each
/// compute the same targets on one core. It trains a throwaway minimal student with the real
/// objective (the same code path, hence exactly the stream the students read), then removes it.
pub fn prefill_teacher_targets(
    runs: &[RunPlan],
    dir: &Path,
    shared: &Shared,
    threads: usize,
    progress: bool,
) -> Result<()> {
    // One stream per teacher (the sweep's, or a `ta` run's assistant), seed and batch.
    let mut streams: std::collections::BTreeMap<(Option<PathBuf>, u64, usize), Vec<&RunPlan>> =
        std::collections::BTreeMap::new();
    for r in runs
        .iter()
        .filter(|r| distill::setup::Setup::of(&r.cfg).reads_teacher_cache())
    {
        streams
            .entry((r.cfg.teacher.clone(), r.cfg.seed, r.cfg.batch_size))
            .or_default()
            .push(r);
    }
    for ((_, seed, batch), rs) in streams.into_iter().filter(|(_, rs)| rs.len() >= 2) {
        let steps = rs.iter().map(|r| r.cfg.steps).max().unwrap_or(0);
        let first = &rs[0].cfg;
        let Some(teacher) = &first.teacher else {
            continue;
        };
        let hash = distill::checkpoint::file_hash(&distill::checkpoint::locate_model(teacher)?.1)?
            [..16]
            .to_string();
        let cache = distill::kd::TeacherCache::new(
            &distill::paths::output(&first.cache_dir),
            &hash,
            seed,
            batch,
            first.student.class_dropout_prob,
        );
        if !cache.incomplete(steps) {
            continue;
        }
        let mut cfg = first.clone();
        cfg.student = DitConfig {
            depth: 1,
            hidden_size: 16,
            num_heads: 2,
            ..first.student.clone()
        };
        cfg.steps = steps;
        cfg.eval = distill::eval::EvalConfig {
            samples: distill::eval::MIN_SAMPLES,
            speed: false,
            at_steps: Vec::new(),
            curve_points: 0,
            // The throwaway student is never looked at: no FID.
            metrics: vec![distill::eval::Metric::FidProxy],
            fid_real_images: None,
            ..first.eval.clone()
        };
        let pass = dir
            .join(".teacher-pass")
            .join(format!("s{seed}-b{batch}-{}", &hash[..8]));
        with_threads(threads, || run_distill(&cfg, &pass, shared, progress))?
            .with_context(|| format!("teacher targets of seed {seed}, batch {batch}"))?;
        std::fs::remove_dir_all(dir.join(".teacher-pass")).ok();
    }
    Ok(())
}

/// The teaching assistants the `ta` runs of `runs` learn from, each once (the spec's `distill.ta`).
pub fn assistants(spec: &SweepSpec, runs: &[RunPlan]) -> Result<Vec<crate::spec::Assistant>> {
    let mut out: BTreeMap<PathBuf, crate::spec::Assistant> = BTreeMap::new();
    for r in runs
        .iter()
        .filter(|r| distill::setup::Setup::of(&r.cfg) == distill::setup::Setup::Ta)
    {
        if let Some(a) = spec.distill.assistant(spec, &r.cfg.student, r.cfg.seed)? {
            out.entry(a.dir.clone()).or_insert(a);
        }
    }
    Ok(out.into_values().collect())
}

/// Train the teaching assistants of `runs` before any of their students starts, each with every
/// thread. An assistant is a run directory in the cache: it resumes from its checkpoint after a
/// kill like any run, and one already finished is not trained again. A lock file beside it keeps
/// two processes (Slurm shards, two sweeps) from training it at once: the second waits, then finds
/// it done. The finished assistant's training FLOPs must equal what its students were planned to
/// be charged.
pub fn train_assistants(
    spec: &SweepSpec,
    runs: &[RunPlan],
    shared: &Shared,
    threads: usize,
    progress: bool,
) -> Result<()> {
    for a in assistants(spec, runs)? {
        let dir = distill::paths::output(&a.dir);
        std::fs::create_dir_all(dir.parent().unwrap_or(&dir))
            .with_context(|| format!("creating {}", dir.display()))?;
        let lock_path = dir.with_extension("lock");
        let lock = std::fs::File::create(&lock_path)
            .with_context(|| format!("{}: cannot create the lock", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("{}: cannot lock", lock_path.display()))?;
        let summary = match distill::run::completed(&dir, &a.cfg) {
            Some(s) => s,
            None => with_threads(threads, || run_distill(&a.cfg, &dir, shared, progress))?
                .with_context(|| format!("the teaching assistant {}", dir.display()))?,
        };
        drop(lock);
        anyhow::ensure!(
            summary.status == distill::run::RunStatus::Ok,
            "the teaching assistant {} did not finish ({}): {}",
            dir.display(),
            summary.status,
            summary.reason.unwrap_or_default()
        );
        anyhow::ensure!(
            (summary.train_flops - a.train_flops).abs() <= 1e-9 * a.train_flops,
            "the teaching assistant {} took {:.6e} training FLOPs, its students were planned with {:.6e}",
            dir.display(),
            summary.train_flops,
            a.train_flops
        );
    }
    Ok(())
}

/// A worker's share of the queue and results: a run that panicked is caught before it could
/// poison them, and a poisoned lock's data are still whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Execute `runs` with `jobs` concurrent workers of `threads` candle threads each.
pub fn execute(
    spec: &SweepSpec,
    runs: &[RunPlan],
    dir: &Path,
    shared: &Shared,
    progress: bool,
) -> Result<Vec<Summary>> {
    let queue = Mutex::new(runs.iter().cloned().collect::<VecDeque<_>>());
    let results = Mutex::new(Vec::new());
    let first_error = Mutex::new(None);
    // One line for the sweep, one per active run beneath it (each run's training bar).
    if progress {
        distill::progress::attach(indicatif::MultiProgress::new());
    }
    let overall =
        distill::progress::bar(runs.len() as u64, &format!("sweep {}", spec.name), progress);
    let jobs = spec.parallel.jobs.min(runs.len()).max(1);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                let pool = match rayon::ThreadPoolBuilder::new().num_threads(spec.parallel.threads_per_job).build() {
                    Ok(p) => p,
                    Err(e) => {
                        lock(&first_error).get_or_insert(format!("a worker's thread pool: {e}"));
                        return;
                    }
                };
                loop {
                    let Some(r) = lock(&queue).pop_front() else { break };
                    let run_dir = dir.join("runs").join(r.dir_name());
                    let plan = serde_json::json!({"index": r.index, "budget": r.budget, "sweep": spec.name});
                    if let Err(e) = dit::io::write_json_atomic(&run_dir.join("plan.json"), &plan) {
                        lock(&first_error).get_or_insert(format!("{}: {e:#}", r.dir_name()));
                        continue;
                    }
                    // A bug that panics inside one run must not take the other runs down with it:
                    // it is recorded as that run's error, and the sweep goes on.
                    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.install(|| run_distill(&r.cfg, &run_dir, shared, progress))))
                        .unwrap_or_else(|p| {
                            let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
                            Err(anyhow::anyhow!("internal error (a panic, please report it): {msg}"))
                        });
                    match out {
                        Ok(summary) => {
                            if summary.status != distill::run::RunStatus::Ok {
                                overall.println(format!("{}: failed: {}", r.dir_name(), summary.reason.clone().unwrap_or_default()));
                            }
                            lock(&results).push(summary);
                            if let Err(e) = crate::table::rebuild(dir) {
                                overall.println(format!("table: {e:#}"));
                            }
                        }
                        Err(e) => {
                            lock(&first_error).get_or_insert(format!("{}: {e:#}", r.dir_name()));
                        }
                    }
                    overall.inc(1);
                }
            });
        }
    });
    overall.finish_and_clear();
    crate::table::rebuild(dir)?;
    if let Some(e) = first_error
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        anyhow::bail!(e);
    }
    Ok(results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner))
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
            assert!(part
                .iter()
                .any(|r| r.cfg.mode == distill::kd::Mode::Scratch));
            for r in &part {
                assert!(part.iter().any(|q| q.cfg.student == r.cfg.student
                    && q.cfg.seed == r.cfg.seed
                    && q.cfg.mode != r.cfg.mode));
            }
            seen.extend(part.iter().map(|r| r.index));
        }
        seen.sort();
        assert_eq!(seen, (0..all.len()).collect::<Vec<_>>());
    }
}
