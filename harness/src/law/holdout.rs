//! `--hold-out B`: the law fitted without budget B, judged on B's runs — the honest test of a
//! design law, which exists to answer budgets nobody has run yet.

use super::data::{by_shape, Point};
use super::design::{ranked, Reference};
use super::{Holdout, LawFit, ScoredShape, Shape};

/// Tolerance band of the held-out budget for the law's recommendation.
pub const BAND: (f64, f64) = (0.9, 1.1);
/// "As good as the best": within this relative margin of the best measured value.
pub const WITHIN: f64 = 0.05;

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

/// Errors on the held-out runs and whether the law picks a (near-)best shape at `budget`.
/// `held` must be non-empty.
pub fn evaluate(
    law: &LawFit,
    held: &[Point],
    shapes: &[Shape],
    budget: u64,
    r: &Reference,
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

    Holdout {
        budget,
        n_runs: held.len(),
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
