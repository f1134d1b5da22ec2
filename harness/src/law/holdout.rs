//! `--hold-out B`: the law fitted without budget B, judged on B's runs — the honest test of a
//! design law, which exists to answer budgets nobody has run yet.

use std::collections::BTreeMap;

use super::bootstrap::interval90;
use super::data::{by_shape, Point};
use super::design::{ranked, Reference};
use super::query::label;
use super::rank::{self, Belief};
use super::{HeldShape, Holdout, LawFit, ScoredShape, Shape};

/// Tolerance band of the held-out budget for the law's recommendation.
pub const BAND: (f64, f64) = (0.9, 1.1);
/// "As good as the best": within this relative margin of the best measured value.
pub const WITHIN: f64 = 0.05;

/// What the law's intervals rest on: its bootstrap draws (coefficients; empty: the point fit
/// only), the seed noise σ and the shapes' spread τ about the law (both in ln), and the seed of
/// the Monte Carlo draws.
pub struct Uncertainty<'a> {
    pub draws: &'a [BTreeMap<String, f64>],
    pub sigma: f64,
    pub tau: f64,
    pub seed: u64,
}

/// Monte Carlo draws per interval and per P(best).
const DRAWS: usize = 20_000;

/// 90 % intervals of ln(metric) at `s`: of the shape's mean over `n` seeds, and of one more run.
fn ln_intervals(law: &LawFit, u: &Uncertainty, s: &Shape, n: usize, seed: u64) -> [[f64; 2]; 2] {
    let point = [law.coef.clone()];
    let coefs = if u.draws.is_empty() {
        &point[..]
    } else {
        u.draws
    };
    let reps = DRAWS.div_ceil(coefs.len());
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
    let (mut mean, mut run) = (Vec::new(), Vec::new());
    for c in coefs {
        let m = law.predict_with(c, s).ln();
        if !m.is_finite() {
            continue;
        }
        for _ in 0..reps {
            let theta = m + u.tau * rank::std_normal(&mut rng);
            mean.push(theta + u.sigma / (n.max(1) as f64).sqrt() * rank::std_normal(&mut rng));
            run.push(theta + u.sigma * rank::std_normal(&mut rng));
        }
    }
    let nan = [f64::NAN; 2];
    [
        interval90(&mean).unwrap_or(nan),
        interval90(&run).unwrap_or(nan),
    ]
}

/// One measured shape of the held-out budget: its seeds' ln values.
struct Cell {
    shape: Shape,
    ln: Vec<f64>,
}

impl Cell {
    fn mean(&self) -> f64 {
        self.ln.iter().sum::<f64>() / self.ln.len() as f64
    }
}

fn cells(held: &[Point]) -> Vec<Cell> {
    let mut acc: BTreeMap<(usize, usize, usize), Cell> = BTreeMap::new();
    for p in held {
        acc.entry((p.shape.depth, p.shape.width, p.shape.heads))
            .or_insert_with(|| Cell {
                shape: p.shape,
                ln: Vec::new(),
            })
            .ln
            .push(p.y.ln());
    }
    acc.into_values().collect()
}

/// P(best) of each measured shape from its seeds alone (the law says nothing: τ = ∞), and the
/// tie set: the best-measured shape and every shape not separable from it at 90 %.
fn measured_ranking(cells: &[Cell], sigma: f64, seed: u64) -> (Vec<f64>, Vec<usize>) {
    let beliefs: Vec<Belief> = cells
        .iter()
        .map(|c| Belief {
            law_ln: vec![0.0],
            measured: Some((c.mean(), c.ln.len())),
        })
        .collect();
    let draws = rank::draws(&beliefs, f64::INFINITY, sigma, DRAWS, seed);
    let pb = rank::p_best(&draws);
    let Some(best) = (0..cells.len()).min_by(|&a, &b| cells[a].mean().total_cmp(&cells[b].mean()))
    else {
        return (pb, Vec::new());
    };
    let tie = (0..cells.len())
        .filter(|&j| j == best || rank::versus(&draws, best, j).0 >= 1.0 - rank::SEPARATE)
        .collect();
    (pb, tie)
}

fn scored(s: &Shape, predicted: Option<f64>, measured: Option<f64>) -> ScoredShape {
    ScoredShape {
        depth: s.depth,
        width: s.width,
        heads: s.heads,
        head_dim: s.head_dim(),
        params: s.params,
        predicted,
        measured,
    }
}

/// Errors on the held-out runs, the coverage of the law's 90 % intervals, the measured tie set
/// and whether the law's pick is in it at `budget`. `held` (the budget's runs at the fitted step)
/// must be non-empty; `pruned` are the budget's shapes measured only at fewer steps (a race
/// stopped them: they are not in the tie set).
pub fn evaluate(
    law: &LawFit,
    held: &[Point],
    pruned: &[Shape],
    shapes: &[Shape],
    budget: u64,
    r: &Reference,
    u: &Uncertainty,
) -> Holdout {
    let n = held.len().max(1) as f64;
    let preds: Vec<f64> = held.iter().map(|p| law.predict(&p.shape)).collect();
    let rmse_log = (held
        .iter()
        .zip(&preds)
        .map(|(p, q)| (q.ln() - p.y.ln()).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    let mape = 100.0
        * held
            .iter()
            .zip(&preds)
            .map(|(p, q)| ((q - p.y) / p.y).abs())
            .sum::<f64>()
        / n;

    let measured = by_shape(held);
    let measured_of = |s: &Shape| {
        measured
            .iter()
            .find(|m| (m.0.depth, m.0.width, m.0.heads) == (s.depth, s.width, s.heads))
            .map(|m| m.1)
    };
    let best = measured
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|m| (m.0, m.1));
    let (best_shape, best_val) = best.unwrap_or((held[0].shape, held[0].y));
    let near_best = |v: f64| v <= best_val * (1.0 + WITHIN);

    let b = budget as f64;
    let in_band = ranked(
        law,
        shapes,
        |s| (s.params as f64) >= BAND.0 * b && (s.params as f64) <= BAND.1 * b,
        r,
    );
    let pick = in_band.first().copied().or_else(|| {
        ranked(law, shapes, |s| (s.params as f64) <= BAND.1 * b, r)
            .first()
            .copied()
    });
    let (rec_shape, rec_pred) = pick.unwrap_or((best_shape, law.predict(&best_shape)));
    let recommended = scored(
        &rec_shape,
        Some(rec_pred).filter(|v| v.is_finite()),
        measured_of(&rec_shape),
    );
    let recommended_within_5pct = recommended.measured.map(near_best);

    let run_shapes: Vec<Shape> = measured.iter().map(|m| m.0).collect();
    let bpm = ranked(law, &run_shapes, |_| true, r)
        .first()
        .map(|(s, p)| (*s, *p));
    let (bpm_shape, bpm_pred) = bpm.unwrap_or((best_shape, f64::NAN));
    let bpm_val = measured_of(&bpm_shape).unwrap_or(best_val);

    // Coverage of the 90 % intervals: each run against the interval of one more run of its shape,
    // each shape's seed mean against the interval of a mean over that many seeds.
    let cells = cells(held);
    let mut runs_in = 0usize;
    let mut shapes_in = 0usize;
    let mut intervals = Vec::new();
    for (i, c) in cells.iter().enumerate() {
        let [mean_iv, run_iv] = ln_intervals(law, u, &c.shape, c.ln.len(), u.seed ^ i as u64);
        let inside = |iv: [f64; 2], v: f64| iv[0] <= v && v <= iv[1];
        runs_in += c.ln.iter().filter(|&&v| inside(run_iv, v)).count();
        shapes_in += usize::from(inside(mean_iv, c.mean()));
        intervals.push(HeldShape {
            shape: label(c.shape.depth, c.shape.width, c.shape.heads),
            params: c.shape.params,
            seeds: c.ln.len(),
            measured: c.mean().exp(),
            predicted: law.predict(&c.shape),
            mean_interval: mean_iv.map(f64::exp),
            run_interval: run_iv.map(f64::exp),
            p_best_measured: f64::NAN,
            in_tie_set: false,
        });
    }
    let (pb, tie) = measured_ranking(&cells, u.sigma, u.seed ^ 0x71e5);
    for (j, h) in intervals.iter_mut().enumerate() {
        h.p_best_measured = pb.get(j).copied().unwrap_or(f64::NAN);
        h.in_tie_set = tie.contains(&j);
    }
    let tie_set: Vec<String> = tie.iter().map(|&j| intervals[j].shape.clone()).collect();
    // The law's pick stands for the measured shape of its depth and heads nearest in params (an
    // iso-parameter design measures one width per depth); a depth the race stopped early is out.
    let twin = |s: &Shape| {
        cells
            .iter()
            .enumerate()
            .filter(|(_, c)| (c.shape.depth, c.shape.heads) == (s.depth, s.heads))
            .min_by_key(|(_, c)| c.shape.params.abs_diff(s.params))
            .map(|(j, _)| j)
    };
    let in_tie = |s: &Shape| match twin(s) {
        Some(j) => Some(tie.contains(&j)),
        None => pruned
            .iter()
            .any(|p| (p.depth, p.heads) == (s.depth, s.heads))
            .then_some(false),
    };

    Holdout {
        budget,
        n_runs: held.len(),
        coverage90_runs: runs_in as f64 / held.len().max(1) as f64,
        coverage90_shapes: shapes_in as f64 / cells.len().max(1) as f64,
        sigma: u.sigma,
        tau: u.tau,
        recommended_in_tie_set: in_tie(&rec_shape),
        best_predicted_in_tie_set: in_tie(&bpm_shape),
        tie_set,
        shapes: intervals,
        rmse_log,
        mape,
        recommended,
        recommended_within_5pct,
        best_predicted_measured: scored(
            &bpm_shape,
            Some(bpm_pred).filter(|v| v.is_finite()),
            Some(bpm_val),
        ),
        best_measured: scored(
            &best_shape,
            Some(law.predict(&best_shape)).filter(|v| v.is_finite()),
            Some(best_val),
        ),
        within_5pct: near_best(bpm_val),
    }
}
