//! A racing sweep (`schedule: {kind: halving}`): per budget, every shape starts short, the shapes
//! that are clearly worse stop at each rung, the contenders continue from their checkpoints
//! (nothing is retrained), and at the last rung seeds are added until the decision is made.
//!
//! Every decision is written to `race/stage-NNN.json` before the next stage starts, and is a pure
//! function of the measured curve rows, so a sweep killed at any point (kill -9 included) resumes
//! where it was and decides exactly as an uninterrupted one.

pub mod decide;
pub mod pool;
pub mod schedule;
pub mod summary;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use distill::run::{Shared, Summary};
use distill::setup::Setup;
use serde::{Deserialize, Serialize};

use crate::runner::RunPlan;
use crate::spec::SweepSpec;
use decide::{Action, At, BudgetDecision, ShapeScores};
use schedule::Halving;

/// Where a budget's race stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetState {
    pub budget: usize,
    /// Index into the schedule's rungs.
    pub rung: usize,
    /// Shapes still racing (shape labels).
    pub shapes: Vec<String>,
    /// Seeds every racing shape has.
    pub seeds: Vec<u64>,
    /// The final decision, once made.
    pub done: Option<Action>,
}

/// One stage's record: `race/stage-NNN.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub stage: usize,
    pub code_version: String,
    pub decisions: Vec<BudgetDecision>,
    /// The race after this stage's decisions.
    pub after: Vec<BudgetState>,
}

/// The race of a spec.
pub struct Race<'a> {
    pub spec: &'a SweepSpec,
    pub halving: &'a Halving,
    pub rungs: Vec<usize>,
    /// The raced setup (the first of `distill.modes`).
    pub mode: Setup,
    /// Every run the grid would have (shapes x seeds x modes at `distill.steps`), by
    /// (budget, shape label, mode, seed); the raced mode's runs carry their FLOP-matched curve
    /// points (`with_flop_matched_points`).
    pub(crate) grid: BTreeMap<(usize, String, Setup, u64), RunPlan>,
    /// The teacher's architecture (what KD pays per training image).
    pub(crate) teacher: dit::DitConfig,
    pub(crate) dir: PathBuf,
}

use crate::runner::{add_curve_point, flop_matched_step};

/// The race's plans with, on every run of the raced mode, a curve point at each step where its
/// training FLOPs equal a companion mode's at the step cap (KD pays the teacher's forward, so a
/// KD run passes the FLOPs of a scratch run's 8,000 steps well before its own 8,000): with the
/// companions' own points at equal steps, each pair is compared at equal steps and at equal
/// training FLOPs from measured curve points, and no run has to train past the step cap.
fn with_flop_matched_points(
    mut grid: BTreeMap<(usize, String, Setup, u64), RunPlan>,
    spec: &SweepSpec,
    teacher: &dit::DitConfig,
) -> BTreeMap<(usize, String, Setup, u64), RunPlan> {
    let raced = spec.distill.modes[0];
    let steps = spec.distill.steps;
    let targets: Vec<((usize, String, Setup, u64), f64)> = grid
        .iter()
        .filter(|((_, _, mode, _), _)| *mode != raced)
        .map(|((b, shape, _, seed), r)| {
            (
                (*b, shape.clone(), raced, *seed),
                r.cfg.train_flops(Some(teacher), steps),
            )
        })
        .collect();
    for (key, target) in targets {
        if let Some(r) = grid.get_mut(&key) {
            if let Some(s) = flop_matched_step(&r.cfg, teacher, target, steps) {
                add_curve_point(r, s);
            }
        }
    }
    grid
}

fn stage_path(dir: &Path, k: usize) -> PathBuf {
    dir.join("race").join(format!("stage-{k:03}.json"))
}

impl<'a> Race<'a> {
    pub fn new(
        spec: &'a SweepSpec,
        halving: &'a Halving,
        grid: &[RunPlan],
        teacher: &dit::DitConfig,
        dir: &Path,
    ) -> Self {
        let grid = grid
            .iter()
            .map(|r| {
                (
                    (
                        r.budget,
                        r.cfg.student.shape_label(),
                        Setup::of(&r.cfg),
                        r.cfg.seed,
                    ),
                    r.clone(),
                )
            })
            .collect();
        Self {
            spec,
            halving,
            rungs: halving.rungs(spec.distill.steps),
            mode: spec.distill.modes[0],
            grid: with_flop_matched_points(grid, spec, teacher),
            teacher: teacher.clone(),
            dir: dir.to_path_buf(),
        }
    }

    /// Every budget at rung 0 with all its shapes and the initial seeds.
    fn initial(&self) -> Vec<BudgetState> {
        let seeds = self.spec.seeds[..self.halving.initial_seeds].to_vec();
        let mut by_budget: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (b, shape, mode, seed) in self.grid.keys() {
            if *mode == self.mode && *seed == seeds[0] {
                by_budget.entry(*b).or_default().push(shape.clone());
            }
        }
        by_budget
            .into_iter()
            .map(|(budget, shapes)| BudgetState {
                budget,
                rung: 0,
                shapes,
                seeds: seeds.clone(),
                done: None,
            })
            .collect()
    }

    /// The stage records on disk, in order, and the race after the last of them.
    pub fn replay(&self) -> Result<(Vec<StageRecord>, Vec<BudgetState>)> {
        let mut records = Vec::new();
        let mut state = self.initial();
        loop {
            let p = stage_path(&self.dir, records.len());
            let Ok(text) = std::fs::read_to_string(&p) else {
                break;
            };
            let rec: StageRecord = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a race stage record", p.display()))?;
            state = rec.after.clone();
            records.push(rec);
        }
        Ok((records, state))
    }

    /// The run of (budget, shape, seed) at `steps` of the raced mode (`mode` for companions).
    pub(crate) fn trial(
        &self,
        budget: usize,
        shape: &str,
        mode: Setup,
        seed: u64,
        steps: usize,
    ) -> Result<RunPlan> {
        let mut r = self
            .grid
            .get(&(budget, shape.to_string(), mode, seed))
            .with_context(|| {
                format!("race: no planned run {shape} {mode} seed {seed} in budget {budget}")
            })?
            .clone();
        r.cfg.steps = steps;
        r.cfg.eval.at_steps.retain(|&s| s <= steps);
        r.cfg
            .validate()
            .with_context(|| format!("race: run {}", r.dir_name()))?;
        Ok(r)
    }

    /// The runs of the next stage: every undecided budget's racing shapes x seeds at its rung.
    pub fn stage_runs(&self, state: &[BudgetState]) -> Result<Vec<RunPlan>> {
        let mut runs = Vec::new();
        for b in state.iter().filter(|b| b.done.is_none()) {
            for shape in &b.shapes {
                for &seed in &b.seeds {
                    runs.push(self.trial(b.budget, shape, self.mode, seed, self.rungs[b.rung])?);
                }
            }
        }
        Ok(runs)
    }

    /// The measured value of a run at `steps`: ln(FID-proxy) from its learning curve (None when
    /// the run failed or diverged, or has no row at that step).
    fn score(&self, r: &RunPlan, steps: usize) -> Result<Option<f64>> {
        pool::score_at(&self.dir.join("runs").join(r.dir_name()), steps)
    }

    /// Decide every undecided budget after its stage's runs are done, write the record, and
    /// return the race after it.
    pub fn decide_stage(
        &self,
        k: usize,
        state: &[BudgetState],
        eval_sd: f64,
    ) -> Result<StageRecord> {
        let mut decisions = Vec::new();
        let mut after = Vec::new();
        for b in state {
            if b.done.is_some() {
                after.push(b.clone());
                continue;
            }
            let steps = self.rungs[b.rung];
            let mut shapes = Vec::new();
            for shape in &b.shapes {
                let mut s = ShapeScores {
                    shape: shape.clone(),
                    seeds: Vec::new(),
                    ln_values: Vec::new(),
                };
                for &seed in &b.seeds {
                    let r = self.trial(b.budget, shape, self.mode, seed, steps)?;
                    if let Some(v) = self.score(&r, steps)? {
                        s.seeds.push(seed);
                        s.ln_values.push(v);
                    }
                }
                // A shape whose every run failed or diverged is out of the race.
                if !s.ln_values.is_empty() {
                    shapes.push(s);
                }
            }
            anyhow::ensure!(
                !shapes.is_empty(),
                "race: budget {}: every run at {steps} steps failed (see their summary.json)",
                b.budget
            );
            let last = b.rung + 1 == self.rungs.len();
            let next_seed = self.spec.seeds.get(b.seeds.len()).copied();
            let at = At {
                budget: b.budget,
                steps,
                last,
                next_seed,
                seeds: b.seeds.len(),
                eval_sd,
                mc_seed: (k as u64) << 32 ^ b.budget as u64,
            };
            let d = decide::decide(self.halving, at, shapes);
            let mut next = b.clone();
            match &d.action {
                Action::Promote { shapes } => {
                    next.rung += 1;
                    next.shapes = shapes.clone();
                }
                Action::AddSeed { shapes, seed } => {
                    next.shapes = shapes.clone();
                    next.seeds.push(*seed);
                }
                Action::Done { .. } => next.done = Some(d.action.clone()),
            }
            decisions.push(d);
            after.push(next);
        }
        let rec = StageRecord {
            stage: k,
            code_version: distill::run::code_version(),
            decisions,
            after,
        };
        let p = stage_path(&self.dir, k);
        std::fs::create_dir_all(p.parent().unwrap_or(&self.dir))?;
        dit::io::write_json_atomic(&p, &rec)?;
        Ok(rec)
    }

    /// The other modes at each budget's final racing shapes and seeds, at the last rung's steps
    /// (equal steps with the raced mode). Where a companion pays more per step than the raced
    /// mode (KD raced against scratch is the other way round, see `with_flop_matched_points`), it
    /// gets a curve point at the raced run's training FLOPs (equal compute).
    pub fn companion_runs(&self, state: &[BudgetState]) -> Result<Vec<RunPlan>> {
        let steps = *self.rungs.last().unwrap_or(&self.spec.distill.steps);
        let mut runs = Vec::new();
        for b in state {
            let shapes: Vec<String> = match &b.done {
                Some(Action::Done { tie_set, .. }) => tie_set.clone(),
                _ => b.shapes.clone(),
            };
            for shape in &shapes {
                for &seed in &b.seeds {
                    let raced = self.trial(b.budget, shape, self.mode, seed, steps)?;
                    let raced_flops = raced.cfg.train_flops(Some(&self.teacher), steps);
                    for &mode in self.spec.distill.modes.iter().skip(1) {
                        let mut r = self.trial(b.budget, shape, mode, seed, steps)?;
                        if let Some(s) =
                            flop_matched_step(&r.cfg, &self.teacher, raced_flops, steps)
                        {
                            add_curve_point(&mut r, s);
                        }
                        runs.push(r);
                    }
                }
            }
        }
        Ok(runs)
    }
}

impl Race<'_> {
    /// Write `race/summary.json` from what is on disk.
    pub fn write_summary(&self) -> Result<summary::RaceSummary> {
        let (records, _) = self.replay()?;
        let s = self.summary(&records, self.spec.parallel.threads_per_job)?;
        std::fs::create_dir_all(self.dir.join("race"))?;
        dit::io::write_json_atomic(&self.dir.join("race").join("summary.json"), &s)?;
        Ok(s)
    }
}

/// What a race needs next.
pub enum Phase {
    /// Stage `stage`: these runs, then a decision.
    Racing {
        stage: usize,
        state: Vec<BudgetState>,
        runs: Vec<RunPlan>,
    },
    /// Every budget is decided: the other modes at the final shapes.
    Companions { runs: Vec<RunPlan> },
}

impl Race<'_> {
    /// Where the race on disk stands (`None`: over, companions included).
    pub fn phase(&self) -> Result<Option<Phase>> {
        let (records, state) = self.replay()?;
        if state.iter().any(|b| b.done.is_none()) {
            return Ok(Some(Phase::Racing {
                stage: records.len(),
                runs: self.stage_runs(&state)?,
                state,
            }));
        }
        let runs = self.companion_runs(&state)?;
        if self.pending(&runs).is_empty() {
            return Ok(None);
        }
        Ok(Some(Phase::Companions { runs }))
    }

    /// The runs of `runs` without a finished summary for exactly their config.
    pub fn pending<'r>(&self, runs: &'r [RunPlan]) -> Vec<&'r RunPlan> {
        runs.iter()
            .filter(|r| {
                distill::run::completed(&self.dir.join("runs").join(r.dir_name()), &r.cfg).is_none()
            })
            .collect()
    }
}

/// Run the race of `spec` in `dir` to its end (resuming whatever is on disk), then its companions.
pub fn run(
    spec: &SweepSpec,
    halving: &Halving,
    grid: &[RunPlan],
    base: &dit::DitConfig,
    dir: &Path,
    shared: &Shared,
    progress: bool,
) -> Result<Vec<Summary>> {
    // The students' base config is the teacher's own (`runner::base_config`).
    let race = Race::new(spec, halving, grid, base, dir);
    let eval_sd = eval_noise_ln(dir);
    let mut summaries = Vec::new();
    while let Some(phase) = race.phase()? {
        match phase {
            Phase::Racing { stage, state, runs } => {
                eprintln!(
                    "race stage {stage}: {} runs ({})",
                    runs.len(),
                    describe(&race, &state)
                );
                summaries = crate::runner::execute(spec, &runs, dir, shared, progress)?;
                let rec = race.decide_stage(stage, &state, eval_sd)?;
                for d in &rec.decisions {
                    eprintln!(
                        "  budget {}: {}",
                        crate::fmt::si(d.budget as f64),
                        decide::describe(d)
                    );
                }
            }
            Phase::Companions { runs } => {
                eprintln!(
                    "race: {} companion runs ({}) at the final shapes",
                    runs.len(),
                    spec.distill
                        .modes
                        .iter()
                        .skip(1)
                        .map(|m| m.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                summaries.extend(crate::runner::execute(spec, &runs, dir, shared, progress)?);
                // A companion that failed is reported by the caller; a rerun retries it.
                break;
            }
        }
    }
    let s = race.write_summary()?;
    eprint!("{}", summary::describe(&s));
    Ok(summaries)
}

fn describe(race: &Race, state: &[BudgetState]) -> String {
    state
        .iter()
        .filter(|b| b.done.is_none())
        .map(|b| {
            format!(
                "budget {}: {} shapes x {} seeds at {} steps",
                crate::fmt::si(b.budget as f64),
                b.shapes.len(),
                b.seeds.len(),
                race.rungs[b.rung]
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The evaluation noise in ln(FID-proxy), from the sweep's reference (the teacher evaluated at two
/// evaluation seeds): 0 when it was not measured.
pub fn eval_noise_ln(dir: &Path) -> f64 {
    distill::reference::Reference::load(dir)
        .and_then(|r| r.teacher)
        .map(|t| t.eval_noise_fid_proxy)
        .filter(|m| m.mean > 0.0)
        .map_or(0.0, |m| (1.0 + m.std / m.mean).ln())
}
