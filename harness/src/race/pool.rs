//! A race pooled with the sweeps that audit it (`ditkd race pool`): every run of the raced mode
//! at the race's last rung, from the race's own directory and from other results directories
//! that trained the same runs (shapes the race pruned, trained on to the last rung; extra seeds),
//! decided together.
//!
//! A run from another directory counts as the race's run of (budget, shape, seed) when its config
//! equals the race's plan for it in everything but the curve points (`eval.at_steps`, which do
//! not change training). Every pooled run must come from one code version, teacher and feature
//! net (else `--allow-mixed`). Per budget the answer holds:
//! * each shape's seeds, FID-proxy and P(best) at the last rung (pooled seed noise, as the race);
//! * the rung at which the race stopped each shape: a pruned shape that is plausibly best at the
//!   last rung means the race's pruning failed at that budget;
//! * how the ranking at each earlier rung agrees with the last one (Spearman over the shapes with
//!   both, each shape as its mean over the seeds measured at both): where it is low, pruning at
//!   that rung is guessing;
//! * the verdict: decided, a tie, or what to train next (seeds up to the schedule's
//!   `final_seeds` for every plausible shape, then one more each while undecided).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use distill::curve::CurveLog;
use distill::run::{DistillConfig, RunStatus, Summary};
use distill::setup::Setup;
use serde::{Deserialize, Serialize};

use super::decide::{p_best, pooled_noise, Noise, Outcome, ShapeScores, DRAWS};
use super::summary::spearman;
use super::Race;

/// `race/pooled.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pooled {
    /// The code version of every pooled run (the list when mixed).
    pub code_versions: Vec<String>,
    /// The race's last rung: where every shape is compared (step-matched).
    pub steps: usize,
    /// The directories the runs come from, the race's first.
    pub sources: Vec<PathBuf>,
    pub budgets: Vec<PooledBudget>,
    /// What every pooled source's runs cost, against the full grid.
    #[serde(default)]
    pub cost: StudyCost,
}

/// The compute of a study (the race and every sweep pooled with it: audits, extra seeds, other
/// setups, other axes), from each run's own measured wall times (`train_wall_s`, the final and the
/// curve evaluations, times the race's threads per job), against the full grid: every shape of
/// every budget of the race's grid, the raced setup, `final_seeds` seeds, trained to the last
/// rung and evaluated at the race's curve points and the end, at each shape's measured median cost
/// per step and per evaluation. Sweep-level work (the teacher-target prefill, the reference
/// evaluations) is shared by both and counted in neither.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StudyCost {
    /// CPU-hours of every run found, by setup (the raced one first), and in all.
    pub by_setup: Vec<(String, f64, usize)>,
    pub cpu_hours: f64,
    pub runs: usize,
    /// CPU-hours of the raced setup's runs alone (what the grid replaces).
    pub raced_cpu_hours: f64,
    pub grid_cpu_hours: f64,
    pub grid_runs: usize,
    pub grid_seeds: usize,
    /// Grid shapes without a measured cost (left out of `grid_cpu_hours`).
    pub unmeasured: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PooledBudget {
    pub budget: usize,
    pub noise: Noise,
    /// Every shape measured at the last rung, best mean first.
    pub shapes: Vec<PooledShape>,
    pub verdict: Verdict,
    /// Agreement of each earlier rung's ranking with the last rung's.
    pub rank_agreement: Vec<RungAgreement>,
    /// Runs found in more than one directory (the first is used): their values should agree.
    pub duplicates: Vec<Duplicate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PooledShape {
    pub shape: String,
    pub seeds: Vec<u64>,
    /// FID-proxy of each seed at the last rung.
    pub fid_proxy: Vec<f64>,
    /// Mean of ln(FID-proxy) over the seeds.
    pub mean_ln: f64,
    pub p_best: f64,
    /// The last rung the race itself trained this shape to (its last rung: a contender; None:
    /// the race never scored it).
    pub raced_to: Option<usize>,
    /// The directory each seed's run comes from.
    pub from: Vec<PathBuf>,
}

/// The pooled answer for one budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// One shape with P(best) >= the schedule's target, or a tie set, with the reason.
    Done {
        best: String,
        tie_set: Vec<String>,
        reason: Outcome,
    },
    /// Not decided yet: these runs (to the last rung) would move it on.
    Train { runs: Vec<ToRun> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToRun {
    pub shape: String,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RungAgreement {
    pub steps: usize,
    /// Shapes with a value at both this rung and the last (each its mean over the seeds with both).
    pub shapes: usize,
    pub spearman: Option<f64>,
    /// The best of those shapes at this rung (the last rung's best is `shapes[0]`).
    pub best_here: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Duplicate {
    pub shape: String,
    pub seed: u64,
    /// (directory, FID-proxy at the last rung) of each copy.
    pub copies: Vec<(PathBuf, f64)>,
}

/// One finished run found in a source directory.
struct Found {
    run_dir: PathBuf,
    source: PathBuf,
    summary: Summary,
}

/// A config's identity as training: everything but the curve points.
fn training_hash(cfg: &DistillConfig) -> String {
    let mut c = cfg.clone();
    c.eval.at_steps.clear();
    c.hash()
}

/// ln(FID-proxy) of the run in `run_dir` at `steps`, when it reached them and the value is usable.
pub(crate) fn score_at(run_dir: &Path, steps: usize) -> Result<Option<f64>> {
    let ok = std::fs::read_to_string(run_dir.join("summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Summary>(&t).ok())
        .is_some_and(|s| s.status == RunStatus::Ok || s.steps > steps);
    if !ok {
        return Ok(None);
    }
    let curve = CurveLog::open(run_dir, usize::MAX)?;
    Ok(curve
        .rows()
        .iter()
        .find(|row| row.step == steps)
        .map(|row| row.metrics.fid_proxy)
        .filter(|v| v.is_finite() && *v > 0.0)
        .map(f64::ln))
}

/// Every run directory under `source/runs` with a readable config and summary.
fn runs_in(source: &Path) -> Result<Vec<(PathBuf, DistillConfig, Summary)>> {
    let runs = source.join("runs");
    let entries = std::fs::read_dir(&runs).with_context(|| {
        format!(
            "{}: no runs/ directory (not a results directory)",
            runs.display()
        )
    })?;
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    dirs.sort();
    for d in dirs {
        let (Ok(cfg), Ok(sum)) = (
            std::fs::read_to_string(d.join("config.yaml")),
            std::fs::read_to_string(d.join("summary.json")),
        ) else {
            continue;
        };
        let cfg: DistillConfig = serde_yaml_ng::from_str(&cfg)
            .with_context(|| format!("{}: not a run config", d.join("config.yaml").display()))?;
        let Ok(sum) = serde_json::from_str::<Summary>(&sum) else {
            continue;
        };
        out.push((d, cfg, sum));
    }
    Ok(out)
}

/// The pooled decision of one budget at the last rung (the race's rules: pooled seed noise,
/// P(best) by seeded Monte Carlo, plausible = P(best) >= keep_p).
fn verdict(
    h: &super::schedule::Halving,
    wanted: &[u64],
    shapes: &[ShapeScores],
    p: &[f64],
    noise: &Noise,
) -> Verdict {
    let plausible: Vec<usize> = (0..shapes.len()).filter(|&i| p[i] >= h.keep_p).collect();
    // First every plausible shape gets the seeds the final comparison needs.
    let missing: Vec<ToRun> = plausible
        .iter()
        .flat_map(|&i| {
            wanted[..h.final_seeds.min(wanted.len())]
                .iter()
                .filter(move |s| !shapes[i].seeds.contains(s))
                .map(move |&seed| ToRun {
                    shape: shapes[i].shape.clone(),
                    seed,
                })
        })
        .collect();
    if !missing.is_empty() {
        return Verdict::Train { runs: missing };
    }
    let best = shapes[0].shape.clone();
    let top = p.iter().copied().fold(0.0, f64::max);
    let names = || -> Vec<String> { plausible.iter().map(|&i| shapes[i].shape.clone()).collect() };
    if top >= h.target || plausible.len() <= 1 {
        return Verdict::Done {
            tie_set: vec![best.clone()],
            best,
            reason: Outcome::Decided,
        };
    }
    let best_mean = shapes[0].mean();
    if plausible
        .iter()
        .all(|&i| shapes[i].mean() - best_mean <= noise.eval_sd)
    {
        return Verdict::Done {
            best,
            tie_set: names(),
            reason: Outcome::TieWithinEvalNoise,
        };
    }
    // One more seed of every plausible shape that the seed list still has one for; the seed cap
    // is reached only when no plausible shape has one left (pooled sweeps can leave them uneven).
    let more: Vec<ToRun> = plausible
        .iter()
        .filter_map(|&i| {
            wanted
                .iter()
                .find(|s| !shapes[i].seeds.contains(s))
                .map(|&seed| ToRun {
                    shape: shapes[i].shape.clone(),
                    seed,
                })
        })
        .collect();
    if more.is_empty() {
        Verdict::Done {
            best,
            tie_set: names(),
            reason: Outcome::SeedCap,
        }
    } else {
        Verdict::Train { runs: more }
    }
}

impl Race<'_> {
    /// The race pooled with the runs of `with` (other results directories) at the last rung.
    pub fn pool(&self, with: &[PathBuf], allow_mixed: bool, eval_sd: f64) -> Result<Pooled> {
        let last = *self.rungs.last().unwrap_or(&self.spec.distill.steps);
        // The race's plan of every (budget, shape, seed) of the raced mode, by training identity.
        let mut planned: BTreeMap<String, (usize, String, u64)> = BTreeMap::new();
        for (b, shape, mode, seed) in self.grid.keys() {
            if *mode != self.mode {
                continue;
            }
            let r = self.trial(*b, shape, self.mode, *seed, last)?;
            planned.insert(training_hash(&r.cfg), (*b, shape.clone(), *seed));
        }
        // Each directory once (the race's own first), however it is spelled.
        let mut sources = vec![self.dir.clone()];
        let mut seen = vec![std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone())];
        for w in with {
            let c = std::fs::canonicalize(w).unwrap_or_else(|_| w.clone());
            if !seen.contains(&c) {
                seen.push(c);
                sources.push(w.clone());
            }
        }
        // (budget, shape, seed) -> every copy found, in source order.
        let mut found: BTreeMap<(usize, String, u64), Vec<(Found, f64)>> = BTreeMap::new();
        for source in &sources {
            for (run_dir, cfg, summary) in runs_in(source)? {
                let Some(key) = planned.get(&training_hash(&cfg)) else {
                    continue;
                };
                if let Some(v) = score_at(&run_dir, last)? {
                    found.entry(key.clone()).or_default().push((
                        Found {
                            run_dir,
                            source: source.clone(),
                            summary,
                        },
                        v,
                    ));
                }
            }
        }
        let distinct = |f: &dyn Fn(&Summary) -> Option<String>| -> Vec<String> {
            let mut v: Vec<String> = found
                .values()
                .flat_map(|c| c.iter().filter_map(|(x, _)| f(&x.summary)))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let versions = distinct(&|s| Some(s.code_version.clone()));
        let teachers = distinct(&|s| s.teacher_hash.clone());
        let featnets = distinct(&|s| Some(s.featnet_hash.clone()));
        for (what, vals) in [
            ("code versions", &versions),
            ("teachers", &teachers),
            ("feature nets", &featnets),
        ] {
            anyhow::ensure!(
                vals.len() <= 1 || allow_mixed,
                "race pool: the runs come from {} different {what} ({}); a pooled answer needs one (--allow-mixed to pool anyway)",
                vals.len(),
                vals.join(", ")
            );
        }
        // The furthest rung the race trained (or is training) each shape to: the rungs it was
        // scored at, and the next rung of every promotion.
        let (records, _) = self.replay()?;
        let mut raced_to: BTreeMap<(usize, String), usize> = BTreeMap::new();
        let mut reach = |budget: usize, shape: &str, steps: usize| {
            let e = raced_to.entry((budget, shape.to_string())).or_default();
            *e = (*e).max(steps);
        };
        for d in records.iter().flat_map(|r| &r.decisions) {
            for row in &d.shapes {
                reach(d.budget, &row.scores.shape, d.steps);
            }
            if let super::decide::Action::Promote { shapes } = &d.action {
                let next = self
                    .rungs
                    .iter()
                    .find(|&&s| s > d.steps)
                    .copied()
                    .unwrap_or(d.steps);
                for shape in shapes {
                    reach(d.budget, shape, next);
                }
            }
        }
        let mut budgets = Vec::new();
        let budget_list: Vec<usize> = {
            let mut b: Vec<usize> = found.keys().map(|k| k.0).collect();
            b.dedup();
            b
        };
        for budget in budget_list {
            let mut by_shape: BTreeMap<String, Vec<(u64, &Found, f64)>> = BTreeMap::new();
            let mut duplicates = Vec::new();
            for ((_, shape, seed), copies) in
                found.iter().filter(|(k, c)| k.0 == budget && !c.is_empty())
            {
                if copies.len() > 1 {
                    duplicates.push(Duplicate {
                        shape: shape.clone(),
                        seed: *seed,
                        copies: copies
                            .iter()
                            .map(|(f, v)| (f.run_dir.clone(), v.exp()))
                            .collect(),
                    });
                }
                let (f, v) = &copies[0];
                by_shape
                    .entry(shape.clone())
                    .or_default()
                    .push((*seed, f, *v));
            }
            let mut scores: Vec<(ShapeScores, Vec<&Found>)> = by_shape
                .iter()
                .map(|(shape, runs)| {
                    (
                        ShapeScores {
                            shape: shape.clone(),
                            seeds: runs.iter().map(|r| r.0).collect(),
                            ln_values: runs.iter().map(|r| r.2).collect(),
                        },
                        runs.iter().map(|r| r.1).collect(),
                    )
                })
                .collect();
            scores.sort_by(|a, b| {
                a.0.mean()
                    .total_cmp(&b.0.mean())
                    .then(a.0.shape.cmp(&b.0.shape))
            });
            let shapes: Vec<ShapeScores> = scores.iter().map(|s| s.0.clone()).collect();
            let noise = pooled_noise(&shapes, self.halving.prior_seed_noise, eval_sd);
            let p = p_best(&shapes, noise.seed_sd, DRAWS, 0x706f_6f6c ^ budget as u64);
            let verdict = verdict(self.halving, &self.spec.seeds, &shapes, &p, &noise);
            let rank_agreement = self.rank_agreement(&scores, last)?;
            budgets.push(PooledBudget {
                budget,
                noise,
                shapes: scores
                    .iter()
                    .zip(&p)
                    .map(|((s, runs), &p)| PooledShape {
                        shape: s.shape.clone(),
                        seeds: s.seeds.clone(),
                        fid_proxy: s.ln_values.iter().map(|v| v.exp()).collect(),
                        mean_ln: s.mean(),
                        p_best: p,
                        raced_to: raced_to.get(&(budget, s.shape.clone())).copied(),
                        from: runs.iter().map(|f| f.source.clone()).collect(),
                    })
                    .collect(),
                verdict,
                rank_agreement,
                duplicates,
            });
        }
        let cost = self.study_cost(&sources, last)?;
        Ok(Pooled {
            code_versions: versions,
            steps: last,
            sources,
            budgets,
            cost,
        })
    }

    /// Every run of every source, costed, against the full grid (see [`StudyCost`]).
    fn study_cost(&self, sources: &[PathBuf], last: usize) -> Result<StudyCost> {
        let threads = self.spec.parallel.threads_per_job.max(1) as f64;
        let mut by_setup: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        // (shape label, setup) -> measured seconds per step and per final evaluation.
        let mut per_step: BTreeMap<(String, Setup), Vec<f64>> = BTreeMap::new();
        let mut per_eval: BTreeMap<(String, Setup), Vec<f64>> = BTreeMap::new();
        for source in sources {
            for (_, cfg, s) in runs_in(source)? {
                let secs = s.train_wall_s + s.eval_wall_s + s.curve_eval_wall_s;
                let e = by_setup.entry(s.mode.to_string()).or_default();
                e.0 += secs * threads / 3600.0;
                e.1 += 1;
                if s.steps > 0 && s.train_wall_s > 0.0 {
                    let k = (cfg.student.shape_label(), s.mode);
                    per_step
                        .entry(k.clone())
                        .or_default()
                        .push(s.train_wall_s / s.steps as f64);
                    per_eval.entry(k).or_default().push(s.eval_wall_s);
                }
            }
        }
        let evals = self.spec.eval.curve_steps(last).len() as f64;
        let seeds = self.halving.final_seeds.max(1);
        let (mut grid, mut grid_runs, mut unmeasured) = (0.0, 0, Vec::new());
        let mut shapes: Vec<&String> = self
            .grid
            .keys()
            .filter(|k| k.2 == self.mode)
            .map(|k| &k.1)
            .collect();
        shapes.sort();
        shapes.dedup();
        for shape in shapes {
            let k = (shape.clone(), self.mode);
            match (per_step.get(&k), per_eval.get(&k)) {
                (Some(st), Some(ev)) => {
                    grid += seeds as f64 * (median(st) * last as f64 + median(ev) * evals);
                    grid_runs += seeds;
                }
                _ => unmeasured.push(shape.clone()),
            }
        }
        let raced = self.mode.to_string();
        let mut rows: Vec<(String, f64, usize)> =
            by_setup.into_iter().map(|(m, (h, n))| (m, h, n)).collect();
        rows.sort_by_key(|r| r.0 != raced);
        Ok(StudyCost {
            cpu_hours: rows.iter().map(|r| r.1).sum(),
            runs: rows.iter().map(|r| r.2).sum(),
            raced_cpu_hours: rows.iter().filter(|r| r.0 == raced).map(|r| r.1).sum(),
            by_setup: rows,
            grid_cpu_hours: grid * threads / 3600.0,
            grid_runs,
            grid_seeds: seeds,
            unmeasured,
        })
    }

    /// Spearman of each earlier rung's shape means against the last rung's (per shape, the seeds
    /// measured at both).
    fn rank_agreement(
        &self,
        scores: &[(ShapeScores, Vec<&Found>)],
        last: usize,
    ) -> Result<Vec<RungAgreement>> {
        let mut out = Vec::new();
        for &steps in self.rungs.iter().filter(|&&s| s < last) {
            let (mut here, mut there, mut names) = (Vec::new(), Vec::new(), Vec::new());
            for (s, runs) in scores {
                // The shape's mean over the seeds measured at both this rung and the last.
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for (run, &now) in runs.iter().zip(&s.ln_values) {
                    if let Some(v) = score_at(&run.run_dir, steps)? {
                        a.push(v);
                        b.push(now);
                    }
                }
                if !a.is_empty() {
                    here.push(a.iter().sum::<f64>() / a.len() as f64);
                    there.push(b.iter().sum::<f64>() / b.len() as f64);
                    names.push(s.shape.clone());
                }
            }
            let best_here = here
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| names[i].clone());
            out.push(RungAgreement {
                steps,
                shapes: here.len(),
                spearman: spearman(&here, &there),
                best_here,
            });
        }
        Ok(out)
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// The study's compute in a sentence.
fn cost_text(p: &Pooled) -> String {
    let c = &p.cost;
    if c.runs == 0 {
        return "no costed runs".to_string();
    }
    let parts: Vec<String> = c
        .by_setup
        .iter()
        .map(|(m, h, n)| format!("{m} {h:.1} CPU-h ({n} runs)"))
        .collect();
    let mut t = format!(
        "{:.1} CPU-hours for {} runs ({}); the full grid of the raced setup ({} runs: every shape x {} seeds to {} steps) would take {:.1} CPU-hours at the measured median costs per step and per evaluation, against the {:.1} this study spent on that setup ({:.2}x)",
        c.cpu_hours,
        c.runs,
        parts.join(", "),
        c.grid_runs,
        c.grid_seeds,
        p.steps,
        c.grid_cpu_hours,
        c.raced_cpu_hours,
        c.grid_cpu_hours / c.raced_cpu_hours.max(1e-12)
    );
    if !c.unmeasured.is_empty() {
        t.push_str(&format!(
            "; not costed (never trained): {}",
            c.unmeasured.join(", ")
        ));
    }
    t
}

/// Where the race left a shape: "contender" (it reached the last rung), "pruned at N", or "not raced".
fn race_cell(raced_to: Option<usize>, last: usize) -> String {
    match raced_to {
        Some(steps) if steps >= last => "contender".to_string(),
        Some(steps) => format!("pruned at {steps}"),
        None => "not raced".to_string(),
    }
}

/// "s0 11.56, s1 12.10": each seed's FID-proxy.
fn seeds_cell(r: &PooledShape) -> String {
    r.seeds
        .iter()
        .zip(&r.fid_proxy)
        .map(|(s, v)| format!("s{s} {v:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "250: -0.26, 500: ..., 8000: +0.66": each earlier rung's Spearman with the last.
fn agreement_cell(b: &PooledBudget) -> String {
    b.rank_agreement
        .iter()
        .map(|a| match a.spearman {
            Some(rho) => format!("{}: {rho:+.2}", a.steps),
            None => format!("{}: -", a.steps),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The verdict in words: the outcome, or what to train (seeds grouped by shape).
fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Done {
            best,
            tie_set,
            reason,
        } => reason.describe(best, tie_set),
        Verdict::Train { runs } => {
            let mut by: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for r in runs {
                by.entry(&r.shape).or_default().push(r.seed.to_string());
            }
            format!(
                "undecided; to resolve it, train {}",
                by.iter()
                    .map(|(shape, seeds)| format!("{shape} seed {}", seeds.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        }
    }
}

/// The pooled answer as text: per budget a table of shapes and the verdict.
pub fn describe(p: &Pooled) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "pooled at {} steps (step-matched) from {}; code version {}",
        p.steps,
        p.sources
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        p.code_versions.join(", ")
    );
    for b in &p.budgets {
        let _ = writeln!(
            s,
            "\nbudget {}: seed sd {:.3} in ln ({} df), evaluation sd {:.3}",
            crate::fmt::si(b.budget as f64),
            b.noise.seed_sd,
            b.noise.df,
            b.noise.eval_sd
        );
        let _ = writeln!(
            s,
            "  {:<14} {:>8} {:>10}  {:<24} race",
            "shape", "P(best)", "FID-proxy", "seeds"
        );
        for r in &b.shapes {
            let _ = writeln!(
                s,
                "  {:<14} {:>8.2} {:>10.2}  {:<24} {}",
                r.shape,
                r.p_best,
                r.mean_ln.exp(),
                seeds_cell(r),
                race_cell(r.raced_to, p.steps)
            );
        }
        let _ = writeln!(
            s,
            "  ranking at each rung vs {} (Spearman of seed means, {} shapes): {}",
            p.steps,
            b.rank_agreement.first().map_or(0, |a| a.shapes),
            agreement_cell(b)
        );
        for d in &b.duplicates {
            let _ = writeln!(
                s,
                "  trained twice: {} seed {}: {}",
                d.shape,
                d.seed,
                d.copies
                    .iter()
                    .map(|(dir, v)| format!("{v:.4} ({})", dir.display()))
                    .collect::<Vec<_>>()
                    .join(" vs ")
            );
        }
        let _ = writeln!(s, "  -> {}", verdict_text(&b.verdict));
    }
    let _ = writeln!(s, "\ncompute: {}", cost_text(p));
    s
}

/// The pooled answer as a report section (`ditkd report` of the race's directory).
pub fn markdown(p: &Pooled) -> String {
    use std::fmt::Write;
    let mut w = String::new();
    let _ = writeln!(
        w,
        "## The race pooled with its audits\n\n`race/pooled.json` (`ditkd race pool`): every run of the raced setup that reached the last rung ({} steps, step-matched), from {}, including shapes the race stopped early and trained on by another sweep. Code version: {}. FID-proxy is the geometric mean over seeds; P(best) uses the pooled seed sd and the race's Monte Carlo.\n",
        p.steps,
        p.sources
            .iter()
            .map(|d| format!("`{}`", d.display()))
            .collect::<Vec<_>>()
            .join(", "),
        p.code_versions.join(", ")
    );
    for b in &p.budgets {
        let _ = writeln!(
            w,
            "### Budget {} (seed sd {:.3} in ln, {} df; evaluation sd {:.3})\n\n| shape | FID-proxy per seed | FID-proxy | P(best) | in the race |\n|---|---|---:|---:|---|",
            crate::fmt::si(b.budget as f64),
            b.noise.seed_sd,
            b.noise.df,
            b.noise.eval_sd
        );
        for r in &b.shapes {
            let race = match r.raced_to {
                Some(steps) if steps < p.steps => format!("**{}**", race_cell(r.raced_to, p.steps)),
                _ => race_cell(r.raced_to, p.steps),
            };
            let _ = writeln!(
                w,
                "| {} | {} | {:.2} | {:.2} | {race} |",
                r.shape,
                seeds_cell(r),
                r.mean_ln.exp(),
                r.p_best
            );
        }
        let _ = writeln!(
            w,
            "\nRanking at each rung against {} steps (Spearman of seed means, {} shapes): {}.\n",
            p.steps,
            b.rank_agreement.first().map_or(0, |a| a.shapes),
            agreement_cell(b)
        );
        let _ = writeln!(w, "Verdict: {}.\n", verdict_text(&b.verdict));
    }
    let _ = writeln!(w, "Compute: {}.\n", cost_text(p));
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::race::schedule::Halving;

    fn shape(name: &str, seeds: &[u64], v: &[f64]) -> ShapeScores {
        ShapeScores {
            shape: name.into(),
            seeds: seeds.to_vec(),
            ln_values: v.to_vec(),
        }
    }

    fn noise(eval_sd: f64) -> Noise {
        Noise {
            seed_sd: 0.084,
            df: 0,
            eval_sd,
        }
    }

    fn h() -> Halving {
        Halving {
            final_seeds: 3,
            ..Halving::default()
        }
    }

    #[test]
    fn plausible_shapes_first_get_the_final_seeds_then_one_more_each() {
        // A pruned shape with one seed that is plausibly best is asked for seeds 1 and 2; a shape
        // below keep_p is not.
        let s = [
            shape("a", &[0], &[2.45]),
            shape("b", &[0, 1, 2], &[2.46, 2.44, 2.47]),
            shape("c", &[0], &[3.2]),
        ];
        let p = [0.5, 0.49, 0.01];
        let v = verdict(&h(), &[0, 1, 2, 3], &s, &p, &noise(0.0));
        let Verdict::Train { runs } = v else {
            panic!("{v:?}")
        };
        let want: Vec<(&str, u64)> = vec![("a", 1), ("a", 2)];
        let got: Vec<(&str, u64)> = runs.iter().map(|r| (r.shape.as_str(), r.seed)).collect();
        assert_eq!(got, want);
        // With the final seeds in place and still undecided: one more seed of each plausible shape.
        let s = [
            shape("a", &[0, 1, 2], &[2.3, 2.4, 2.5]),
            shape("b", &[0, 1, 2], &[2.4, 2.45, 2.5]),
        ];
        let v = verdict(&h(), &[0, 1, 2, 3], &s, &[0.6, 0.4], &noise(0.0));
        assert_eq!(
            v,
            Verdict::Train {
                runs: vec![
                    ToRun {
                        shape: "a".into(),
                        seed: 3
                    },
                    ToRun {
                        shape: "b".into(),
                        seed: 3
                    }
                ]
            }
        );
        // One plausible shape at the cap and one below it: the one below gets its seed first.
        let uneven = [
            shape("a", &[0, 1, 2, 3], &[2.3, 2.4, 2.5, 2.4]),
            shape("b", &[0, 1, 2], &[2.4, 2.45, 2.5]),
        ];
        let v = verdict(&h(), &[0, 1, 2, 3], &uneven, &[0.6, 0.4], &noise(0.0));
        assert_eq!(
            v,
            Verdict::Train {
                runs: vec![ToRun {
                    shape: "b".into(),
                    seed: 3
                }]
            }
        );
        // At the seed cap: a tie set; within the evaluation noise: a tie for that reason.
        let v = verdict(&h(), &[0, 1, 2], &s, &[0.6, 0.4], &noise(0.0));
        assert!(
            matches!(v, Verdict::Done { reason: Outcome::SeedCap, ref tie_set, .. } if tie_set.len() == 2)
        );
        let v = verdict(&h(), &[0, 1, 2], &s, &[0.6, 0.4], &noise(0.1));
        assert!(matches!(
            v,
            Verdict::Done {
                reason: Outcome::TieWithinEvalNoise,
                ..
            }
        ));
        // One shape above the target: decided.
        let v = verdict(&h(), &[0, 1, 2], &s, &[0.95, 0.05], &noise(0.0));
        assert!(
            matches!(v, Verdict::Done { reason: Outcome::Decided, ref best, .. } if best == "a")
        );
    }
}
