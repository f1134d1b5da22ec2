//! `ditkd sweep`, `ditkd table`, `ditkd merge`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::fmt::grouped;
use distill::run::{RunStatus, Shared, Summary};

use crate::runner::{estimate_secs, execute, parse_shard, shard, sweep_dir, Loaded, RunPlan};
use crate::spec::SweepSpec;

/// What `ditkd sweep` was asked to do.
pub struct Args<'a> {
    pub spec: &'a Path,
    pub dry_run: bool,
    pub shard: Option<&'a str>,
    pub out: Option<&'a Path>,
    pub jobs: Option<usize>,
    pub threads_per_job: Option<usize>,
    pub allow_changed_spec: bool,
    pub allow_mixed_code: bool,
}

pub fn run(a: &Args) -> Result<()> {
    let Loaded {
        spec,
        base,
        mut runs,
    } = crate::runner::load(a.spec, a.jobs, a.threads_per_job)?;
    let total = runs.len();
    if let Some(s) = a.shard {
        anyhow::ensure!(
            spec.schedule.halving().is_none(),
            "--shard: a racing sweep (schedule: halving) decides between stages; run it whole, or through `ditkd slurm`"
        );
        let (k, n) = parse_shard(s)?;
        runs = shard(runs, k, n, spec.distill.modes.len());
    }
    let dir = sweep_dir(&spec, a.out);
    crate::runner::claim_dir(&spec, &dir, a.allow_changed_spec, a.allow_mixed_code)?;
    if a.dry_run {
        print_plan(&spec, &base, &runs, total, &dir);
        return Ok(());
    }
    // The shared preparation and the teacher's targets use every thread of the sweep, in one pool;
    // then each run trains in its worker's own pool of `threads_per_job` threads
    // (`runner::execute`). (RAYON_NUM_THREADS, which candle's kernels read, is the same total:
    // `main` set it from the spec before any thread started, see `Cli::environment`.)
    let t = std::time::Instant::now();
    let all = spec.parallel.total_threads();
    // A race's later seeds are only trained for its contenders: their targets are computed by
    // those runs as they go.
    let first_seeds: Vec<RunPlan> = match spec.schedule.halving() {
        None => runs.clone(),
        Some(h) => {
            let initial = &spec.seeds[..h.initial_seeds];
            runs.iter()
                .filter(|r| initial.contains(&r.cfg.seed))
                .cloned()
                .collect()
        }
    };
    let shared = crate::runner::with_threads(all, || -> Result<Shared> {
        let shared = crate::runner::prepare(&spec, &dir)?;
        crate::runner::train_assistants(&spec, &runs, &shared, all, true)?;
        crate::runner::prefill_teacher_targets(&first_seeds, &dir, &shared, all, true)?;
        Ok(shared)
    })??;
    let results = match spec.schedule.halving() {
        None => execute(&spec, &runs, &dir, &shared, true)?,
        Some(h) => crate::race::run(&spec, h, &runs, &base, &dir, &shared, true)?,
    };
    let failed: Vec<&Summary> = results
        .iter()
        .filter(|s| s.status != RunStatus::Ok)
        .collect();
    println!(
        "{} runs done ({} not ok) in {:.1} min; table: {}",
        results.len(),
        failed.len(),
        t.elapsed().as_secs_f64() / 60.0,
        dir.join("runs.parquet").display()
    );
    if a.shard.is_none() && results.iter().any(|s| s.status == RunStatus::Ok) {
        // Every run is done: time each model again with nothing else running.
        let n = crate::speed::measure(&dir, &crate::speed::Options::default(), true)?;
        println!(
            "latency: {n} models timed in a quiet pass -> {}",
            dir.join("latency.parquet").display()
        );
    }
    for s in &failed {
        eprintln!(
            "{} d{}-w{}-h{}-p{} {} seed {}: {}",
            s.status,
            s.depth,
            s.width,
            s.heads,
            s.patch,
            s.mode,
            s.seed,
            s.reason.as_deref().unwrap_or("no reason recorded")
        );
    }
    // Diverged runs are results (a shape that trains unstably); any other failure, or nothing
    // ok at all, is an error, so a Slurm `afterok` merge does not run on a broken shard.
    let broken = failed
        .iter()
        .filter(|s| s.status == RunStatus::Failed)
        .count();
    if broken > 0 || (!results.is_empty() && failed.len() == results.len()) {
        anyhow::bail!("{} of {} runs failed (reasons above); finished runs are kept, rerun the same command to retry the failed ones", failed.len(), results.len());
    }
    Ok(())
}

fn print_plan(
    spec: &SweepSpec,
    base: &dit::DitConfig,
    runs: &[crate::runner::RunPlan],
    total: usize,
    dir: &Path,
) {
    println!(
        "{:>4} {:>10} {:>5} {:>5} {:>5} {:>8} {:>9} {:>8} {:>7} {:>4} {:>9}  curve points (steps)",
        "id",
        "budget",
        "depth",
        "width",
        "heads",
        "head_dim",
        "params",
        "GFLOPs",
        "mode",
        "seed",
        "est. s"
    );
    let mut secs = 0.0;
    let mut teacher_paid = std::collections::HashSet::new();
    for r in runs {
        let pays_teacher = distill::setup::Setup::of(&r.cfg).reads_teacher_cache()
            && teacher_paid.insert(r.cfg.seed);
        let s = &r.cfg.student;
        let e = estimate_secs(r, base, pays_teacher) / spec.parallel.threads_per_job as f64;
        secs += e;
        println!(
            "{:>4} {:>10} {:>5} {:>5} {:>5} {:>8} {:>9} {:>8.4} {:>7} {:>4} {:>9.0}  {}",
            r.index,
            grouped(r.budget as i64),
            s.depth,
            s.hidden_size,
            s.num_heads,
            s.head_dim(),
            grouped(s.num_params() as i64),
            s.forward_gflops(),
            distill::setup::Setup::of(&r.cfg).to_string(),
            r.cfg.seed,
            e,
            r.cfg
                .eval
                .at_steps
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    // The teaching assistants are trained first, each with every thread.
    for a in crate::runner::assistants(spec, runs).unwrap_or_default() {
        let done = distill::run::completed(&distill::paths::output(&a.dir), &a.cfg).is_some();
        println!(
            "teaching assistant {} ({} params, {} steps, {:.3e} training FLOPs charged to each of its students){} -> {}",
            a.cfg.run_label(),
            a.cfg.student.num_params(),
            a.cfg.steps,
            a.train_flops,
            if done { ", already trained" } else { "" },
            a.dir.display()
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
    if let Some(h) = spec.schedule.halving() {
        let rungs = h.rungs(spec.distill.steps);
        let first = runs
            .iter()
            .filter(|r| {
                distill::setup::Setup::of(&r.cfg) == spec.distill.modes[0]
                    && spec.seeds[..h.initial_seeds].contains(&r.cfg.seed)
            })
            .count();
        println!(
            "race ({} mode): rungs at {} steps; stage 0 trains {first} runs to {} steps, each later rung keeps the best 1/{} (at least {}) and every shape with P(best) >= {}; at {} steps seeds are added (up to {}) until P(best) >= {} or a tie within the evaluation noise. The estimate above is the full grid's.",
            spec.distill.modes[0],
            rungs.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", "),
            rungs[0],
            h.eta,
            h.min_contenders,
            h.keep_p,
            spec.distill.steps,
            spec.seeds.len(),
            h.target
        );
    }
}

pub fn table(dir: &Path, raw: bool) -> Result<()> {
    let dir = distill::paths::resolve(dir);
    // Printed whole: `main` sets POLARS_FMT_MAX_ROWS/_COLS and POLARS_TABLE_WIDTH for this
    // command (`Cli::environment`).
    let df = crate::table::read(&dir)?;
    if raw {
        println!("{df}");
    } else {
        println!("{}", crate::table::aggregate(&df)?);
    }
    match distill::reference::Reference::load(&dir) {
        Some(r) => print!("{}", reference_lines(&r)),
        None => println!("(no reference.json: the teacher and the real-data floor are measured when the sweep runs)"),
    }
    Ok(())
}

/// The teacher and the real-data floor under the students' protocol, as `ditkd table` prints them.
pub fn reference_lines(r: &distill::reference::Reference) -> String {
    let f = &r.floor;
    let mut s = format!(
        "real data ({} training images, {} draws): fid_proxy {:.3} ± {:.3}, kid {:.5} ± {:.5}, precision {:.3}, recall {:.3}, coverage {:.3}, class_accuracy {:.3}\n",
        r.samples, f.draws, f.fid_proxy.mean, f.fid_proxy.std, f.kid.mean, f.kid.std, f.precision.mean, f.recall.mean, f.coverage.mean, f.class_accuracy.mean
    );
    if let Some(fid) = &f.fid {
        s += &format!(
            "real data, the field's FID ({} of the draws against {} test images; Inception weights {}): fid {:.3} ± {:.3}\n",
            fid.values.len(),
            r.fid_real_images.map_or("?".into(), |n| n.to_string()),
            r.fid_weights_sha256.as_deref().map_or("?", |h| &h[..h.len().min(16)]),
            fid.mean,
            fid.std
        );
    }
    if let Some(t) = &r.teacher {
        let m = &t.metrics;
        s += &format!(
            "teacher d{}-w{}-h{} ({} params): fid_proxy {:.3} (fid_proxy_inf {}), kid {:.5}, precision {:.3}, recall {:.3}, coverage {:.3}, class_accuracy {:.3}\n",
            t.depth,
            t.width,
            t.heads,
            crate::fmt::grouped(t.params as i64),
            m.fid_proxy,
            m.fid_proxy_inf.map_or("-".into(), |v| format!("{v:.3}")),
            m.kid,
            m.precision,
            m.recall,
            m.coverage,
            m.class_accuracy
        );
        if let Some(v) = m.fid {
            s += &format!(
                "teacher, the field's FID: fid {v:.3} (fid_inf {})\n",
                m.fid_inf.map_or("-".into(), |v| format!("{v:.3}"))
            );
        }
        let n = &t.eval_noise_fid_proxy;
        s += &format!(
            "evaluation noise (teacher's weights, evaluation seeds {}): fid_proxy {} -> ±{:.3} (sample std, {:.1} %)\n",
            n.values.len(),
            n.values.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>().join(" / "),
            n.std,
            100.0 * n.std / n.mean
        );
    }
    s
}

/// Columns that measure the machine, not the run: they may differ between two copies of one run.
const TIMING: [&str; 5] = [
    "train_wall_s",
    "eval_wall_s",
    "teacher_fraction",
    "latency_ms",
    "images_per_s",
];

/// A finished run found in a merge input.
struct Found {
    src: PathBuf,
    /// The summary without its timing columns (what must agree between copies).
    result: serde_json::Value,
    summary: Summary,
}

/// Finished runs of one results directory (`<dir>/runs/*/summary.json`); every summary must parse.
fn finished_runs(dir: &Path) -> Result<(Vec<(String, Found)>, usize)> {
    let runs = dir.join("runs");
    let entries = std::fs::read_dir(&runs).with_context(|| {
        format!(
            "{}: not a sweep results directory (no runs/)",
            dir.display()
        )
    })?;
    let (mut found, mut unfinished) = (Vec::new(), 0);
    for e in entries {
        let src = e
            .with_context(|| format!("{}: cannot list", runs.display()))?
            .path();
        let p = src.join("summary.json");
        if !p.exists() {
            unfinished += 1;
            continue;
        }
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()))?;
        let summary: Summary = serde_json::from_str(&text)
            .with_context(|| format!("{}: unreadable run summary", p.display()))?;
        let mut result: serde_json::Value = serde_json::from_str(&text)?;
        if let Some(o) = result.as_object_mut() {
            for k in TIMING {
                o.remove(k);
            }
        }
        let id = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        found.push((
            id,
            Found {
                src,
                result,
                summary,
            },
        ));
    }
    Ok((found, unfinished))
}

/// Gather shard outputs into `out` (copying each run's small files) and rebuild its table.
/// Everything is checked before anything is written: every input exists and every summary
/// parses; one run id never holds two different results; the runs were scored by one feature
/// net, distilled from one teacher, by one code version, under one spec (unless `allow_mixed`).
/// The teacher's row and the real-data floor (`reference.json`) of the merged directory: copied
/// when every input that has one measured the same values (their `key` hashes the spec they were
/// measured for, so it may differ), left out with a note when they disagree. Kept when `out`
/// already has one. "The same" is equal to 1e-4 relative: the teacher's row and the floor are
/// recomputed per sweep, and the same measurement on another machine differs in the last digits
/// (at most 1.6e-6 relative among the racing study's 26 sweeps, from the floor's matrix square
/// root); another teacher, floor draw or sample count differs at the percent level.
fn merge_reference(out: &Path, sources: &[PathBuf]) -> Result<Option<String>> {
    let file = distill::reference::FILE;
    if out.join(file).exists() {
        return Ok(None);
    }
    let mut found: Vec<(PathBuf, serde_json::Value)> = Vec::new();
    for d in sources {
        let p = d.join(file);
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        let mut v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a reference file", p.display()))?;
        if let Some(o) = v.as_object_mut() {
            o.remove("key");
        }
        found.push((p, v));
    }
    let Some((first, v0)) = found.first() else {
        return Ok(None);
    };
    if let Some((other, _)) = found.iter().find(|(_, v)| !same_measurement(v, v0)) {
        return Ok(Some(format!(
            "{} and {} measured different teacher or floor values: no {file} in the merged directory",
            first.display(),
            other.display()
        )));
    }
    let bytes =
        std::fs::read(first).with_context(|| format!("{}: cannot read", first.display()))?;
    dit::io::write_atomic(&out.join(file), &bytes)?;
    Ok(Some(format!(
        "{file} from {} ({} of the inputs have one, all equal to 1e-4)",
        first.display(),
        found.len()
    )))
}

/// Two JSON values of one shape whose numbers agree to 1e-4 relative (absolute below 1).
fn same_measurement(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-4 * x.abs().max(y.abs()).max(1.0),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_measurement(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_measurement(v, w)))
        }
        _ => a == b,
    }
}

pub fn merge(out: &Path, inputs: &[PathBuf], allow_mixed: bool) -> Result<()> {
    anyhow::ensure!(
        !inputs.is_empty(),
        "merge: name at least one input directory"
    );
    let out = distill::paths::output(out);
    let mut all: std::collections::BTreeMap<String, Found> = std::collections::BTreeMap::new();
    let mut sources: Vec<PathBuf> = Vec::new();
    if out.join("runs").is_dir() {
        sources.push(out.clone());
    }
    for input in inputs {
        if !input.is_dir() {
            anyhow::bail!("{}: no such results directory", input.display());
        }
        if std::fs::canonicalize(input).ok() != std::fs::canonicalize(&out).ok() {
            sources.push(input.clone());
        }
    }
    let mut unfinished = 0;
    for dir in &sources {
        let (found, open) = finished_runs(dir)?;
        unfinished += open;
        for (id, f) in found {
            match all.get(&id) {
                Some(prev) if prev.result != f.result => anyhow::bail!(
                    "run `{id}`: {} and {} hold different results under one id; merge refuses to pick one (remove the wrong copy)",
                    prev.src.display(),
                    f.src.display()
                ),
                Some(_) => {}
                None => {
                    all.insert(id, f);
                }
            }
        }
    }
    // One instrument, one teacher, one code version, one spec.
    let mut mixed = Vec::new();
    let distinct = |vals: Vec<String>| {
        let mut v = vals;
        v.sort();
        v.dedup();
        v
    };
    let featnets = distinct(
        all.values()
            .map(|f| f.summary.featnet_hash.clone())
            .collect(),
    );
    let teachers = distinct(
        all.values()
            .filter_map(|f| f.summary.teacher_hash.clone())
            .collect(),
    );
    let versions = distinct(
        all.values()
            .map(|f| f.summary.code_version.clone())
            .collect(),
    );
    let specs = distinct(
        sources
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("spec.yaml")).ok())
            .filter_map(|t| serde_yaml_ng::from_str::<SweepSpec>(&t).ok())
            .filter_map(|s| crate::runner::spec_hash(&s).ok())
            .collect(),
    );
    for (what, v) in [
        ("feature nets (featnet_hash)", &featnets),
        ("teachers (teacher_hash)", &teachers),
        ("code versions (code_version)", &versions),
        ("sweep specs", &specs),
    ] {
        if v.len() > 1 {
            mixed.push(format!("{} {what}: {}", v.len(), v.join(", ")));
        }
    }
    if !mixed.is_empty() && !allow_mixed {
        anyhow::bail!("merge: the inputs mix {}; their metrics are not comparable (pass --allow-mixed to merge anyway)", mixed.join("; "));
    }
    std::fs::create_dir_all(out.join("runs"))
        .with_context(|| format!("creating {}", out.join("runs").display()))?;
    let mut copied = 0;
    for (id, f) in &all {
        if f.src
            .parent()
            .and_then(|p| p.parent())
            .and_then(|p| std::fs::canonicalize(p).ok())
            == std::fs::canonicalize(&out).ok()
        {
            continue; // already in `out`
        }
        let dst = out.join("runs").join(id);
        std::fs::create_dir_all(&dst).with_context(|| format!("creating {}", dst.display()))?;
        // summary.json last: a run directory with a summary is complete.
        for name in [
            "plan.json",
            "config.yaml",
            "metrics.jsonl",
            "curve.jsonl",
            "grid.png",
            "summary.json",
        ] {
            let from = f.src.join(name);
            if from.exists() {
                let bytes = std::fs::read(&from)
                    .with_context(|| format!("{}: cannot read", from.display()))?;
                dit::io::write_atomic(&dst.join(name), &bytes)?;
            }
        }
        copied += 1;
    }
    if !out.join("spec.yaml").exists() {
        if let Some(spec) = sources
            .iter()
            .map(|d| d.join("spec.yaml"))
            .find(|p| p.exists())
        {
            let bytes =
                std::fs::read(&spec).with_context(|| format!("{}: cannot read", spec.display()))?;
            dit::io::write_atomic(&out.join("spec.yaml"), &bytes)?;
        }
    }
    let reference_note = merge_reference(&out, &sources)?;
    let df = crate::table::rebuild(&out)?;
    if let Some(n) = reference_note {
        eprintln!("note: {n}");
    }
    if unfinished > 0 {
        eprintln!("note: {unfinished} unfinished run(s) (no summary.json) were not merged");
    }
    if !mixed.is_empty() {
        eprintln!(
            "warning: merged across {} (--allow-mixed)",
            mixed.join("; ")
        );
    }
    println!(
        "merged {copied} new run(s); {} runs in {}",
        df.height(),
        out.join("runs.parquet").display()
    );
    Ok(())
}
