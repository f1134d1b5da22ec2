//! The decision at one rung of a race: which shapes of a budget are still plausibly best, and
//! whether the race is over. A pure function of the measured values (and a seeded Monte Carlo),
//! so a sweep killed at any point recomputes exactly the same decision.

use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::schedule::Halving;

/// One shape's measurements at a rung: ln(metric) of each seed, in seed order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapeScores {
    pub shape: String,
    pub seeds: Vec<u64>,
    pub ln_values: Vec<f64>,
}

impl ShapeScores {
    pub fn mean(&self) -> f64 {
        self.ln_values.iter().sum::<f64>() / self.ln_values.len() as f64
    }
}

/// How noisy one run's ln(metric) is, and where that estimate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Noise {
    /// Seed-to-seed standard deviation of one run's ln(metric) used for P(best).
    pub seed_sd: f64,
    /// Degrees of freedom of the pooled within-shape estimate (0: the prior alone).
    pub df: usize,
    /// The evaluation's own noise in ln(metric) (one model, two evaluation seeds): shapes closer
    /// than this cannot be separated by training more seeds with this evaluation.
    pub eval_sd: f64,
}

/// The pooled within-shape standard deviation, shrunk towards `prior` with the weight of
/// `PRIOR_DF` observations (with one seed a shape, the prior alone).
pub fn pooled_noise(shapes: &[ShapeScores], prior: f64, eval_sd: f64) -> Noise {
    const PRIOR_DF: f64 = 2.0;
    let (mut ss, mut df) = (0.0, 0usize);
    for s in shapes.iter().filter(|s| s.ln_values.len() >= 2) {
        let m = s.mean();
        ss += s.ln_values.iter().map(|v| (v - m).powi(2)).sum::<f64>();
        df += s.ln_values.len() - 1;
    }
    let var = (ss + PRIOR_DF * prior * prior) / (df as f64 + PRIOR_DF);
    Noise {
        seed_sd: var.sqrt(),
        df,
        eval_sd,
    }
}

/// P(shape is best) for each shape: the share of Monte Carlo draws, each shape's true mean drawn
/// from N(its mean, seed_sd^2 / its seeds), in which it has the lowest ln(metric). Seeded.
pub fn p_best(shapes: &[ShapeScores], seed_sd: f64, draws: usize, seed: u64) -> Vec<f64> {
    let mut rng = dit::rng::seeded(seed);
    let mut wins = vec![0usize; shapes.len()];
    let sd: Vec<f64> = shapes
        .iter()
        .map(|s| seed_sd / (s.ln_values.len() as f64).sqrt())
        .collect();
    let means: Vec<f64> = shapes.iter().map(ShapeScores::mean).collect();
    for _ in 0..draws {
        let mut best = (f64::INFINITY, 0);
        for i in 0..shapes.len() {
            let z: f64 = StandardNormal.sample(&mut rng);
            let v = means[i] + sd[i] * z;
            if v < best.0 {
                best = (v, i);
            }
        }
        wins[best.1] += 1;
    }
    wins.iter().map(|&w| w as f64 / draws as f64).collect()
}

/// What the race does next for one budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Continue `shapes` (with the seeds they have) to the next rung's steps.
    Promote { shapes: Vec<String> },
    /// At the last rung the contenders cannot be told apart: train one more seed of each.
    AddSeed { shapes: Vec<String>, seed: u64 },
    /// Over: one shape with P(best) >= target, or a tie set (shapes within the evaluation noise
    /// of the best, or the seed cap reached), with the reason.
    Done {
        best: String,
        tie_set: Vec<String>,
        reason: Outcome,
    },
}

/// Why a race ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// One shape has P(best) >= the target.
    Decided,
    /// Every plausible shape lies within the evaluation noise of the best: more seeds cannot
    /// separate them with this evaluation.
    TieWithinEvalNoise,
    /// The seed cap is reached with more than one plausible shape.
    SeedCap,
}

impl Outcome {
    /// "decided: d3-w40-h2-p4", "tie within the evaluation noise: a, b", "seed cap reached, tie
    /// set: a, b".
    pub fn describe(self, best: &str, tie_set: &[String]) -> String {
        match self {
            Outcome::Decided => format!("decided: {best}"),
            Outcome::TieWithinEvalNoise => {
                format!("tie within the evaluation noise: {}", tie_set.join(", "))
            }
            Outcome::SeedCap => format!("seed cap reached, tie set: {}", tie_set.join(", ")),
        }
    }
}

/// One budget's decision at one rung.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetDecision {
    pub budget: usize,
    pub steps: usize,
    pub noise: Noise,
    /// Every shape measured at this rung with its scores and P(best), best mean first.
    pub shapes: Vec<ShapeRow>,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapeRow {
    #[serde(flatten)]
    pub scores: ShapeScores,
    pub mean: f64,
    pub p_best: f64,
}

/// Monte Carlo draws per decision (standard error of a P(best) near 0.9: 0.002).
pub const DRAWS: usize = 20_000;

/// Where a decision is taken.
#[derive(Debug, Clone, Copy)]
pub struct At {
    pub budget: usize,
    pub steps: usize,
    /// This rung is at the schedule's final step count.
    pub last: bool,
    /// The seed a new replicate would use (None: the seed cap is reached).
    pub next_seed: Option<u64>,
    /// Seeds every racing shape has so far.
    pub seeds: usize,
    /// The evaluation's noise in ln(metric).
    pub eval_sd: f64,
    /// Seed of the Monte Carlo draws.
    pub mc_seed: u64,
}

/// Decide one budget at a rung.
pub fn decide(h: &Halving, at: At, mut shapes: Vec<ShapeScores>) -> BudgetDecision {
    let At {
        budget,
        steps,
        last,
        next_seed,
        seeds,
        eval_sd,
        mc_seed,
    } = at;
    shapes.sort_by(|a, b| a.mean().total_cmp(&b.mean()).then(a.shape.cmp(&b.shape)));
    let noise = pooled_noise(&shapes, h.prior_seed_noise, eval_sd);
    let p = p_best(&shapes, noise.seed_sd, DRAWS, mc_seed);
    let rows: Vec<ShapeRow> = shapes
        .iter()
        .zip(&p)
        .map(|(s, &p)| ShapeRow {
            mean: s.mean(),
            scores: s.clone(),
            p_best: p,
        })
        .collect();
    let best = rows[0].scores.shape.clone();
    let plausible: Vec<&ShapeRow> = rows.iter().filter(|r| r.p_best >= h.keep_p).collect();
    let top = rows
        .iter()
        .max_by(|a, b| a.p_best.total_cmp(&b.p_best))
        .map_or(0.0, |r| r.p_best);
    let names = |rs: &[&ShapeRow]| {
        rs.iter()
            .map(|r| r.scores.shape.clone())
            .collect::<Vec<_>>()
    };
    let action = if !last {
        // Keep the best 1/eta (at least min_contenders), and every shape still plausibly best.
        let k = rows
            .len()
            .div_ceil(h.eta)
            .max(h.min_contenders)
            .min(rows.len());
        let kept: Vec<&ShapeRow> = rows
            .iter()
            .enumerate()
            .filter(|(i, r)| *i < k || r.p_best >= h.keep_p)
            .map(|(_, r)| r)
            .collect();
        Action::Promote {
            shapes: names(&kept),
        }
    } else if let Some(seed) = next_seed.filter(|_| seeds < h.final_seeds) {
        // Not yet the replicates the final comparison needs.
        Action::AddSeed {
            shapes: names(&plausible),
            seed,
        }
    } else if top >= h.target || plausible.len() <= 1 {
        Action::Done {
            best: best.clone(),
            tie_set: vec![best],
            reason: Outcome::Decided,
        }
    } else if plausible
        .iter()
        .all(|r| r.mean - rows[0].mean <= noise.eval_sd)
    {
        Action::Done {
            best,
            tie_set: names(&plausible),
            reason: Outcome::TieWithinEvalNoise,
        }
    } else if let Some(seed) = next_seed {
        Action::AddSeed {
            shapes: names(&plausible),
            seed,
        }
    } else {
        Action::Done {
            best,
            tie_set: names(&plausible),
            reason: Outcome::SeedCap,
        }
    };
    BudgetDecision {
        budget,
        steps,
        noise,
        shapes: rows,
        action,
    }
}

/// One line: each shape's P(best) (best mean first) and the action.
pub fn describe(d: &BudgetDecision) -> String {
    let shapes: Vec<String> = d
        .shapes
        .iter()
        .take(6)
        .map(|r| format!("{} P={:.2}", r.scores.shape, r.p_best))
        .collect();
    let more = d.shapes.len().saturating_sub(6);
    let action = match &d.action {
        Action::Promote { shapes } => format!("{} of {} continue", shapes.len(), d.shapes.len()),
        Action::AddSeed { shapes, seed } => format!("seed {seed} added to {}", shapes.join(", ")),
        Action::Done {
            best,
            tie_set,
            reason,
        } => reason.describe(best, tie_set),
    };
    format!(
        "{} steps, seed sd {:.3} ({} df): {}{} -> {action}",
        d.steps,
        d.noise.seed_sd,
        d.noise.df,
        shapes.join(", "),
        if more > 0 {
            format!(" (+{more})")
        } else {
            String::new()
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h() -> Halving {
        Halving {
            min_steps: 100,
            ..Halving::default()
        }
    }

    fn shape(name: &str, v: &[f64]) -> ShapeScores {
        ShapeScores {
            shape: name.into(),
            seeds: (0..v.len() as u64).collect(),
            ln_values: v.to_vec(),
        }
    }

    #[test]
    fn p_best_sums_to_one_is_deterministic_and_favours_the_lower_mean() {
        let s = [shape("a", &[1.0]), shape("b", &[1.05]), shape("c", &[2.0])];
        let p = p_best(&s, 0.08, DRAWS, 7);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(p, p_best(&s, 0.08, DRAWS, 7));
        assert!(p[0] > p[1] && p[1] > p[2], "{p:?}");
        assert!(p[2] < 1e-3, "a shape 12 sd worse is never best: {p:?}");
        // Two shapes 0.05 apart with sd 0.08 each: P = Phi(0.05 / (0.08 sqrt 2)) = 0.67.
        let p2 = p_best(&s[..2], 0.08, DRAWS, 7);
        assert!((p2[0] - 0.669).abs() < 0.01, "{p2:?}");
    }

    #[test]
    fn pooled_noise_uses_replicates_and_falls_back_to_the_prior() {
        let one = [shape("a", &[1.0]), shape("b", &[2.0])];
        let n = pooled_noise(&one, 0.08, 0.0);
        assert_eq!(n.df, 0);
        assert!((n.seed_sd - 0.08).abs() < 1e-12);
        // Many replicates with sd 0.2 pull the estimate to 0.2.
        let v: Vec<f64> = (0..40)
            .map(|i| if i % 2 == 0 { 0.8 } else { 1.2 })
            .collect();
        let n = pooled_noise(&[shape("a", &v)], 0.08, 0.0);
        assert_eq!(n.df, 39);
        assert!((n.seed_sd - 0.2).abs() < 0.01, "{n:?}");
    }

    #[test]
    fn an_early_rung_prunes_only_what_is_clearly_worse() {
        let s = vec![
            shape("a", &[1.0]),
            shape("b", &[1.02]),
            shape("c", &[1.5]),
            shape("d", &[1.6]),
            shape("e", &[1.7]),
            shape("f", &[1.8]),
        ];
        let d = decide(
            &h(),
            At {
                budget: 100,
                steps: 100,
                last: false,
                next_seed: Some(1),
                seeds: 1,
                eval_sd: 0.04,
                mc_seed: 0,
            },
            s,
        );
        // Top ceil(6/2) = 3 by mean; d, e, f are > 6 sd worse and dropped.
        assert_eq!(
            d.action,
            Action::Promote {
                shapes: vec!["a".into(), "b".into(), "c".into()]
            }
        );
    }

    #[test]
    fn the_last_rung_decides_adds_seeds_or_reports_a_tie() {
        let clear = vec![shape("a", &[1.0, 1.01]), shape("b", &[1.6, 1.62])];
        let d = decide(
            &h(),
            At {
                budget: 1,
                steps: 800,
                last: true,
                next_seed: Some(2),
                seeds: 1,
                eval_sd: 0.04,
                mc_seed: 0,
            },
            clear,
        );
        assert!(
            matches!(d.action, Action::Done { reason: Outcome::Decided, ref best, .. } if best == "a")
        );

        let close = vec![shape("a", &[1.0]), shape("b", &[1.1])];
        let d = decide(
            &h(),
            At {
                budget: 1,
                steps: 800,
                last: true,
                next_seed: Some(1),
                seeds: 1,
                eval_sd: 0.04,
                mc_seed: 0,
            },
            close.clone(),
        );
        assert_eq!(
            d.action,
            Action::AddSeed {
                shapes: vec!["a".into(), "b".into()],
                seed: 1
            }
        );
        let d = decide(
            &h(),
            At {
                budget: 1,
                steps: 800,
                last: true,
                next_seed: None,
                seeds: 1,
                eval_sd: 0.04,
                mc_seed: 0,
            },
            close.clone(),
        );
        assert!(
            matches!(d.action, Action::Done { reason: Outcome::SeedCap, ref tie_set, .. } if tie_set.len() == 2)
        );
        // A clear winner still gets the replicates the spec asks for at the last rung.
        let three = Halving {
            final_seeds: 3,
            ..h()
        };
        let clear = vec![shape("a", &[1.0]), shape("b", &[1.6])];
        let at = At {
            budget: 1,
            steps: 800,
            last: true,
            next_seed: Some(1),
            seeds: 1,
            eval_sd: 0.04,
            mc_seed: 0,
        };
        assert_eq!(
            decide(&three, at, clear.clone()).action,
            Action::AddSeed {
                shapes: vec!["a".into()],
                seed: 1
            }
        );
        let at3 = At { seeds: 3, ..at };
        assert!(matches!(
            decide(&three, at3, clear).action,
            Action::Done {
                reason: Outcome::Decided,
                ..
            }
        ));
        // Within the evaluation noise (0.1 <= 0.15): a tie more seeds cannot break.
        let d = decide(
            &h(),
            At {
                budget: 1,
                steps: 800,
                last: true,
                next_seed: Some(1),
                seeds: 1,
                eval_sd: 0.15,
                mc_seed: 0,
            },
            close,
        );
        assert!(matches!(
            d.action,
            Action::Done {
                reason: Outcome::TieWithinEvalNoise,
                ..
            }
        ));
    }
}
