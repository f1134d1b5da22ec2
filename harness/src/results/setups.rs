//! Distillation setups compared shape by shape: for every budget and shape trained under two or
//! more setups (kd, feat, mi1, ta, onestep, scratch), each setup's metric over its seeds
//!
//! * at equal steps: each run at its last step;
//! * at equal total training FLOPs: each run read at the learning-curve point where its training
//!   FLOPs (the teacher's and an assistant's forwards, and the assistant's own training, included)
//!   equal the cheapest setup's at its last step (`distill.flop_matched` puts a point there); no
//!   point within half a step's FLOPs: no value, never an interpolation;
//!
//! with P(best setup) by the race's Monte Carlo (`race::decide::p_best`) under the seed noise
//! pooled over the setups' replicates, shrunk towards the prior. The setups share their seeds'
//! data order and noise, which this unpaired P(best) ignores: it is conservative.

use std::collections::BTreeMap;

use distill::setup::Setup;

use super::{LearnPoint, Sweep};
use crate::race::decide::{p_best, pooled_noise, ShapeScores, DRAWS};

/// One setup of one shape at one matching.
#[derive(Debug, Clone, PartialEq)]
pub struct SetupScore {
    pub setup: Setup,
    /// The metric per seed (seed order) and the steps read.
    pub values: Vec<f64>,
    pub steps: Vec<f64>,
    /// Geometric mean over the seeds.
    pub geo: f64,
    pub p_best: f64,
}

/// One matching (equal steps or equal FLOPs) of one shape's setups.
#[derive(Debug, Clone, PartialEq)]
pub struct Matching {
    /// Setups with a value, best (lowest geometric mean) first.
    pub scores: Vec<SetupScore>,
    /// Setups without a matched point (equal FLOPs only).
    pub missing: Vec<Setup>,
    /// The pooled seed sd in ln used for P(best), and its degrees of freedom.
    pub seed_sd: f64,
    pub df: usize,
}

/// One shape of one budget under several setups.
#[derive(Debug, Clone, PartialEq)]
pub struct SetupComparison {
    pub budget: i64,
    pub shape: String,
    /// The FLOPs every setup is read at for equal FLOPs (the cheapest setup's total, mean over
    /// its seeds) and that setup.
    pub flops: f64,
    pub cheapest: Setup,
    pub equal_steps: Matching,
    pub equal_flops: Matching,
}

fn matching(per_setup: Vec<(Setup, Vec<(f64, f64)>)>, prior_sd: f64) -> Matching {
    let (with, missing): (Vec<_>, Vec<_>) = per_setup.into_iter().partition(|(_, v)| !v.is_empty());
    let shapes: Vec<ShapeScores> = with
        .iter()
        .map(|(s, v)| ShapeScores {
            shape: s.to_string(),
            seeds: (0..v.len() as u64).collect(),
            ln_values: v.iter().map(|(x, _)| x.ln()).collect(),
        })
        .collect();
    let noise = pooled_noise(&shapes, prior_sd, 0.0);
    let p = if shapes.is_empty() {
        Vec::new()
    } else {
        p_best(&shapes, noise.seed_sd, DRAWS, 0)
    };
    let mut scores: Vec<SetupScore> = with
        .into_iter()
        .zip(shapes.iter().zip(p))
        .map(|((setup, v), (s, p_best))| SetupScore {
            setup,
            values: v.iter().map(|x| x.0).collect(),
            steps: v.iter().map(|x| x.1).collect(),
            geo: s.mean().exp(),
            p_best,
        })
        .collect();
    scores.sort_by(|a, b| a.geo.total_cmp(&b.geo));
    Matching {
        scores,
        missing: missing.into_iter().map(|(s, _)| s).collect(),
        seed_sd: noise.seed_sd,
        df: noise.df,
    }
}

/// Every budget and shape with two or more setups, in budget and shape order. `prior_sd`: the
/// seed noise in ln assumed before replicates (the race's `prior_seed_noise`).
pub fn compare_setups(sweep: &Sweep, prior_sd: f64) -> Vec<SetupComparison> {
    type Key = (i64, i64, i64, i64);
    // Shape -> setup -> seed -> the run's curve points.
    let mut curves: BTreeMap<Key, BTreeMap<Setup, BTreeMap<i64, Vec<&LearnPoint>>>> =
        BTreeMap::new();
    for p in &sweep.learning {
        curves
            .entry((p.budget, p.depth, p.width, p.heads))
            .or_default()
            .entry(p.mode)
            .or_default()
            .entry(p.seed)
            .or_default()
            .push(p);
    }
    let last = |pts: &[&LearnPoint]| -> Option<LearnPoint> {
        pts.iter()
            .max_by(|a, b| a.step.total_cmp(&b.step))
            .map(|p| (*p).clone())
    };
    let mut out = Vec::new();
    for ((budget, d, w, h), setups) in curves {
        if setups.len() < 2 {
            continue;
        }
        // Equal steps: every run at its last step.
        let eq_steps: Vec<(Setup, Vec<(f64, f64)>)> = setups
            .iter()
            .map(|(s, seeds)| {
                let v = seeds
                    .values()
                    .filter_map(|pts| last(pts))
                    .map(|p| (p.value, p.step))
                    .collect();
                (*s, v)
            })
            .collect();
        // Equal FLOPs: the cheapest setup's total (mean over its seeds' last points).
        let totals: Vec<(Setup, f64)> = setups
            .iter()
            .filter_map(|(s, seeds)| {
                let f: Vec<f64> = seeds
                    .values()
                    .filter_map(|pts| last(pts))
                    .map(|p| p.train_flops)
                    .collect();
                (!f.is_empty()).then(|| (*s, f.iter().sum::<f64>() / f.len() as f64))
            })
            .collect();
        let Some(&(cheapest, flops)) = totals.iter().min_by(|a, b| a.1.total_cmp(&b.1)) else {
            continue;
        };
        let eq_flops: Vec<(Setup, Vec<(f64, f64)>)> = setups
            .iter()
            .map(|(s, seeds)| {
                let v = seeds
                    .values()
                    .filter_map(|pts| {
                        // The cheapest setup's own runs: each at its last step (its seeds' totals
                        // differ only by rounding).
                        if *s == cheapest {
                            last(pts)
                        } else {
                            super::point_at_flops(pts.iter().copied(), flops).cloned()
                        }
                    })
                    .map(|p| (p.value, p.step))
                    .collect();
                (*s, v)
            })
            .collect();
        out.push(SetupComparison {
            budget,
            shape: crate::law::query::label(d as usize, w as usize, h as usize),
            flops,
            cheapest,
            equal_steps: matching(eq_steps, prior_sd),
            equal_flops: matching(eq_flops, prior_sd),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::results::{test_point, test_sweep as sweep};

    fn pt(mode: Setup, seed: i64, step: f64, flops: f64, value: f64) -> LearnPoint {
        LearnPoint {
            depth: 2,
            width: 32,
            ..test_point(mode, seed, step, flops, value)
        }
    }

    #[test]
    fn setups_at_equal_steps_and_at_the_cheapest_setups_flops_with_p_best() {
        // Scratch costs 1 FLOP a step, kd 4, mi1 5: scratch's 100 steps = kd's 25 = mi1's 20.
        let mut l = Vec::new();
        for seed in 0..3 {
            let j = seed as f64 * 0.1;
            l.push(pt(Setup::Scratch, seed, 100.0, 100.0, 30.0 + j));
            l.push(pt(Setup::Kd, seed, 25.0, 100.0, 40.0 + j));
            l.push(pt(Setup::Kd, seed, 100.0, 400.0, 20.0 + j));
            l.push(pt(Setup::Mi1, seed, 20.0, 100.0, 50.0 + j));
            l.push(pt(Setup::Mi1, seed, 100.0, 500.0, 10.0 + j));
        }
        // A shape under one setup only is not compared.
        let mut lone = pt(Setup::Kd, 0, 100.0, 400.0, 1.0);
        lone.width = 40;
        l.push(lone);
        let c = compare_setups(&sweep(l), 0.084);
        assert_eq!(c.len(), 1);
        let c = &c[0];
        assert_eq!((c.cheapest, c.flops), (Setup::Scratch, 100.0));
        let order = |m: &Matching| m.scores.iter().map(|s| s.setup).collect::<Vec<_>>();
        assert_eq!(
            order(&c.equal_steps),
            vec![Setup::Mi1, Setup::Kd, Setup::Scratch]
        );
        assert_eq!(
            order(&c.equal_flops),
            vec![Setup::Scratch, Setup::Kd, Setup::Mi1]
        );
        let kd = &c.equal_flops.scores[1];
        assert_eq!(kd.steps, vec![25.0; 3]);
        assert!((kd.geo - (40.0f64 * 40.1 * 40.2).cbrt()).abs() < 1e-9);
        // Well separated with a small seed sd: the best is certain, and P sums to one.
        let best = &c.equal_steps.scores[0];
        assert!(best.p_best > 0.999, "{best:?}");
        let total: f64 = c.equal_flops.scores.iter().map(|s| s.p_best).sum();
        assert!((total - 1.0).abs() < 1e-9);
        assert!(c.equal_flops.missing.is_empty());
        assert_eq!(c.equal_steps.df, 6, "three setups of three seeds");
    }

    #[test]
    fn a_setup_without_a_flop_matched_point_is_listed_as_missing() {
        let l = vec![
            pt(Setup::Scratch, 0, 100.0, 100.0, 30.0),
            // kd's only point is at 4x scratch's FLOPs: no equal-FLOPs value.
            pt(Setup::Kd, 0, 100.0, 400.0, 20.0),
        ];
        let c = compare_setups(&sweep(l), 0.084);
        assert_eq!(c[0].equal_flops.missing, vec![Setup::Kd]);
        assert_eq!(c[0].equal_flops.scores.len(), 1);
        assert!((c[0].equal_flops.scores[0].p_best - 1.0).abs() < 1e-12);
    }
}
