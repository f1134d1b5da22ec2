//! What a finished (or running) race cost and how settled its answer is: `race/summary.json`.
//!
//! * Compute: the CPU-hours the race's runs took (training, learning-curve and final evaluations,
//!   times the threads of a job), against what the full grid (every shape x every seed x every
//!   mode to the last rung's steps) would have cost at the same measured per-step and per-
//!   evaluation costs. The teacher-target pre-pass is shared by both and counted in neither.
//! * Stability: per budget, the Spearman rank correlation of the last rung's shapes between the
//!   last two rungs (their seed means at both step counts): near 1, more training no longer moves
//!   the answer.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use distill::curve::CurveLog;
use distill::run::Summary;
use serde::{Deserialize, Serialize};

use super::decide::{Action, BudgetDecision, Outcome};
use super::{Race, StageRecord};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaceSummary {
    pub code_version: String,
    pub rungs: Vec<usize>,
    pub budgets: Vec<BudgetSummary>,
    /// CPU-hours of every run in the race (companions included).
    pub cpu_hours: f64,
    /// CPU-hours the full grid at the same final steps, seeds and modes would have taken.
    pub grid_cpu_hours: f64,
    pub runs: usize,
    pub grid_runs: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetSummary {
    pub budget: usize,
    pub best: Option<String>,
    pub p_best: Option<f64>,
    pub tie_set: Vec<String>,
    pub outcome: Option<Outcome>,
    pub seeds: usize,
    /// Spearman correlation of the last rung's shapes between the last two rungs (None with
    /// fewer than 2 shapes or a single rung), and how many shapes it is over.
    pub spearman_last_two_rungs: Option<f64>,
    pub spearman_shapes: usize,
    /// The first decision at the budget's last rung (every shape that reached it) and, when seeds
    /// were added after it, the decision that ended (or last moved) the race.
    #[serde(default)]
    pub last_rung: Option<BudgetDecision>,
    #[serde(default)]
    pub last: Option<BudgetDecision>,
    /// (steps, shapes scored) of each of the budget's stages.
    #[serde(default)]
    pub history: Vec<(usize, usize)>,
}

/// Spearman's rho of two equally long samples (average ranks for ties).
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    let rank = |v: &[f64]| -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            for &k in &idx[i..=j] {
                r[k] = (i + j) as f64 / 2.0 + 1.0;
            }
            i = j + 1;
        }
        r
    };
    let (ra, rb) = (rank(a), rank(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    (va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
}

fn read_summary(dir: &Path) -> Option<Summary> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).ok()?).ok()
}

impl Race<'_> {
    /// The summary of the race on disk (also while it runs: undecided budgets have no best).
    pub fn summary(&self, records: &[StageRecord], threads_per_job: usize) -> Result<RaceSummary> {
        let (_, state) = self.replay()?;
        let mut budgets = Vec::new();
        for b in &state {
            let decisions: Vec<_> = records
                .iter()
                .flat_map(|r| &r.decisions)
                .filter(|d| d.budget == b.budget)
                .collect();
            let last = decisions.last();
            let (best, tie_set, outcome) = match &b.done {
                Some(Action::Done {
                    best,
                    tie_set,
                    reason,
                }) => (Some(best.clone()), tie_set.clone(), Some(*reason)),
                _ => (None, Vec::new(), None),
            };
            let p_best = last.and_then(|d| {
                let best = best.as_ref()?;
                d.shapes
                    .iter()
                    .find(|r| &r.scores.shape == best)
                    .map(|r| r.p_best)
            });
            let (rho, n) = self.rank_stability(b.budget, &decisions)?;
            budgets.push(BudgetSummary {
                budget: b.budget,
                best,
                p_best,
                tie_set,
                outcome,
                seeds: b.seeds.len(),
                spearman_last_two_rungs: rho,
                spearman_shapes: n,
                last_rung: last
                    .and_then(|l| decisions.iter().find(|d| d.steps == l.steps))
                    .map(|d| (*d).clone()),
                last: last.map(|d| (*d).clone()),
                history: decisions
                    .iter()
                    .map(|d| (d.steps, d.shapes.len()))
                    .collect(),
            });
        }
        let (cpu_hours, grid_cpu_hours, runs) = self.cost(threads_per_job);
        Ok(RaceSummary {
            code_version: distill::run::code_version(),
            rungs: self.rungs.clone(),
            budgets,
            cpu_hours,
            grid_cpu_hours,
            runs,
            grid_runs: self.grid.len(),
        })
    }

    /// Spearman of the shapes measured at the budget's last rung, between that rung and the one
    /// before (their first seed's values, the only seeds every rung has).
    fn rank_stability(
        &self,
        budget: usize,
        decisions: &[&super::decide::BudgetDecision],
    ) -> Result<(Option<f64>, usize)> {
        // The last rung's first decision scores all its shapes (later ones, after seeds were
        // added, only the plausible ones).
        let Some(last_steps) = decisions.last().map(|d| d.steps) else {
            return Ok((None, 0));
        };
        let Some(last) = decisions.iter().find(|d| d.steps == last_steps) else {
            return Ok((None, 0));
        };
        let Some(i) = self.rungs.iter().position(|&s| s == last.steps) else {
            return Ok((None, 0));
        };
        if i == 0 {
            return Ok((None, 0));
        }
        let prev = self.rungs[i - 1];
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for row in &last.shapes {
            let (Some(&seed), Some(&now)) =
                (row.scores.seeds.first(), row.scores.ln_values.first())
            else {
                continue;
            };
            let r = self.trial(budget, &row.scores.shape, self.mode, seed, last.steps)?;
            let curve = CurveLog::open(&self.dir.join("runs").join(r.dir_name()), usize::MAX)?;
            if let Some(before) = curve
                .rows()
                .iter()
                .find(|c| c.step == prev)
                .map(|c| c.metrics.fid_proxy)
                .filter(|v| v.is_finite() && *v > 0.0)
            {
                a.push(before.ln());
                b.push(now);
            }
        }
        Ok((spearman(&a, &b), a.len()))
    }

    /// (CPU-hours spent, CPU-hours of the full grid, runs trained).
    fn cost(&self, threads_per_job: usize) -> (f64, f64, usize) {
        let last = *self.rungs.last().unwrap_or(&self.spec.distill.steps);
        let threads = threads_per_job.max(1) as f64;
        let mut spent = 0.0;
        let mut runs = 0;
        // Per shape (budget, label): the cheapest measured seconds per step and per evaluation.
        let mut per_step: BTreeMap<(usize, String), f64> = BTreeMap::new();
        let mut per_eval: BTreeMap<(usize, String), f64> = BTreeMap::new();
        for ((budget, shape, _, _), r) in &self.grid {
            let Some(s) = read_summary(&self.dir.join("runs").join(r.dir_name())) else {
                continue;
            };
            runs += 1;
            spent += s.train_wall_s + s.eval_wall_s + s.curve_eval_wall_s;
            if s.steps > 0 && s.train_wall_s > 0.0 {
                let k = (*budget, shape.clone());
                let v = s.train_wall_s / s.steps as f64;
                per_step
                    .entry(k.clone())
                    .and_modify(|x| *x = x.min(v))
                    .or_insert(v);
                per_eval
                    .entry(k)
                    .and_modify(|x| *x = x.min(s.eval_wall_s))
                    .or_insert(s.eval_wall_s);
            }
        }
        let evals = self.spec.eval.curve_steps(last).len() as f64;
        let mut grid = 0.0;
        for (budget, shape, _, _) in self.grid.keys() {
            let k = (*budget, shape.clone());
            if let (Some(st), Some(ev)) = (per_step.get(&k), per_eval.get(&k)) {
                grid += st * last as f64 + ev * evals;
            }
        }
        (spent * threads / 3600.0, grid * threads / 3600.0, runs)
    }
}

/// A few lines for a person: per budget the answer and its stability, then the compute.
pub fn describe(s: &RaceSummary) -> String {
    let mut out = String::new();
    for b in &s.budgets {
        let answer = match (&b.best, b.outcome) {
            (Some(best), Some(Outcome::Decided)) => {
                format!("{best} (P(best) {:.2})", b.p_best.unwrap_or(f64::NAN))
            }
            (Some(_), Some(o)) => format!(
                "tie set {{{}}} ({})",
                b.tie_set.join(", "),
                match o {
                    Outcome::TieWithinEvalNoise => "within the evaluation noise",
                    _ => "seed cap reached",
                }
            ),
            _ => "undecided (race still running)".to_string(),
        };
        let rho = b
            .spearman_last_two_rungs
            .map_or("n/a".to_string(), |r| format!("{r:.2}"));
        out.push_str(&format!(
            "budget {}: {answer}; {} seeds; Spearman last two rungs {rho} over {} shapes\n",
            crate::fmt::si(b.budget as f64),
            b.seeds,
            b.spearman_shapes
        ));
    }
    out.push_str(&format!(
        "compute: {:.2} CPU-h for {} runs; the full grid ({} runs to {} steps) would take {:.2} CPU-h at the same measured costs\n",
        s.cpu_hours,
        s.runs,
        s.grid_runs,
        s.rungs.last().copied().unwrap_or(0),
        s.grid_cpu_hours
    ));
    out
}

/// The report's section: per budget the last decision's shapes, the answer and its stability,
/// then the compute against the full grid.
pub fn markdown(s: &RaceSummary) -> String {
    use std::fmt::Write;
    let mut w = String::new();
    let _ = writeln!(
        w,
        "## Race

A racing sweep (`race/stage-NNN.json`): rungs at {} steps; FID-proxy below is the geometric mean over seeds at the budget's last rung, ± the seed-to-seed sd of ln FID-proxy used for P(best) (step-matched within a budget).\n",
        s.rungs.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
    );
    for b in &s.budgets {
        let _ = writeln!(w, "### Budget {}\n", crate::fmt::si(b.budget as f64));
        let _ = writeln!(
            w,
            "Stages (steps: shapes scored): {}.\n",
            b.history
                .iter()
                .map(|(st, n)| format!("{st}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let tables = match (&b.last_rung, &b.last) {
            (Some(a), Some(z)) if a != z => {
                vec![("at the last rung", a), ("after the added seeds", z)]
            }
            (_, Some(z)) => vec![("at the last rung", z)],
            _ => Vec::new(),
        };
        for (what, d) in tables {
            let _ = writeln!(
                w,
                "{what}:\n\n| shape | seeds | FID-proxy | P(best) |\n|---|---:|---:|---:|"
            );
            for r in &d.shapes {
                let _ = writeln!(
                    w,
                    "| {} | {} | {:.2} (±{:.1} %) | {:.2} |",
                    r.scores.shape,
                    r.scores.ln_values.len(),
                    r.mean.exp(),
                    100.0 * (d.noise.seed_sd / (r.scores.ln_values.len() as f64).sqrt()),
                    r.p_best
                );
            }
            let _ =
                writeln!(
                w,
                "\nSeed noise {:.3} in ln ({} df{}); evaluation noise {:.3} in ln, at {} steps.\n",
                d.noise.seed_sd,
                d.noise.df,
                if d.noise.df == 0 { ", the prior alone" } else { "" },
                d.noise.eval_sd,
                d.steps
            );
        }
        let answer = match (&b.best, b.outcome) {
            (Some(best), Some(Outcome::Decided)) => format!(
                "**{best}** is best with P(best) {:.2}",
                b.p_best.unwrap_or(f64::NAN)
            ),
            (Some(_), Some(Outcome::TieWithinEvalNoise)) => format!(
                "**tie set {{{}}}**: every plausible shape lies within the evaluation noise of the best",
                b.tie_set.join(", ")
            ),
            (Some(_), _) => format!(
                "**tie set {{{}}}**: the seed cap was reached before one shape reached the target",
                b.tie_set.join(", ")
            ),
            _ => "undecided: the race is still running".to_string(),
        };
        let rho = b.spearman_last_two_rungs.map_or(
            "not available (fewer than 2 shapes reached the last rung)".to_string(),
            |r| format!("{r:.2} over {} shapes", b.spearman_shapes),
        );
        let _ = writeln!(
            w,
            "{answer} ({} seeds). Rank correlation of the last rung's shapes between the last two rungs: {rho}.\n",
            b.seeds
        );
    }
    let _ = writeln!(
        w,
        "Compute: {:.2} CPU-hours for {} runs; the full grid ({} runs to {} steps) would take {:.2} CPU-hours at the same measured per-step and per-evaluation costs ({:.1}x).\n",
        s.cpu_hours,
        s.runs,
        s.grid_runs,
        s.rungs.last().copied().unwrap_or(0),
        s.grid_cpu_hours,
        s.grid_cpu_hours / s.cpu_hours.max(1e-12)
    );
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_of_same_reversed_and_tied_orders() {
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), Some(1.0));
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        let r = spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert!((r - 0.8).abs() < 1e-12, "{r}");
        assert_eq!(spearman(&[1.0], &[1.0]), None);
        assert_eq!(
            spearman(&[1.0, 1.0], &[1.0, 2.0]),
            None,
            "no variation, no correlation"
        );
    }
}
