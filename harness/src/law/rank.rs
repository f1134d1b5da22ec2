//! Which shape is best, with what probability: the law's bootstrap draws, the shapes' spread
//! about the law beyond the seed noise (τ, the lack-of-fit test's 90 % upper bound: its moment
//! estimate is 0 whenever the law is within the noise, which would make the law exact) and the
//! seeds measured.
//!
//! For every law draw b and every candidate shape s, the shape's true mean ln(metric) θ_s is
//! drawn from what is known of it: the law's value m_b(s) with the shape's own deviation
//! N(0, τ²), updated, where the shape was measured (mean ln ȳ over n seeds, seed noise σ), to
//! the normal posterior (precision-weighted: 1/τ² from the law, n/σ² from the seeds). P(best) is
//! the share of draws in which a shape has the lowest θ; two shapes are a tie when the
//! recommended one is lower in fewer than 90 % of the draws. The seeds that would separate a tie
//! come from the seed noise alone: n more seeds of each shape make the difference of their means
//! known to σ·√(1/(n_a + m) + 1/(n_b + m)), which must fall below |gap| / z₀.₉.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::stats::normal_quantile;

/// What is known of one candidate shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Belief {
    /// ln of the law's prediction, one per law draw (at least one).
    pub law_ln: Vec<f64>,
    /// Mean ln(metric) over the seeds measured, and their count.
    pub measured: Option<(f64, usize)>,
}

/// Confidence the recommended shape must beat another with before they are told apart.
pub const SEPARATE: f64 = 0.9;
/// At most this many more seeds are proposed to separate two shapes.
pub const MAX_SEEDS: usize = 50;

/// The posterior mean and variance of θ given the law's value `m` (shape deviation variance
/// `tau2`, may be ∞) and the seeds.
fn posterior(m: f64, tau2: f64, measured: Option<(f64, usize)>, sigma2: f64) -> (f64, f64) {
    match measured {
        Some((y, n)) if n > 0 && sigma2 > 0.0 => {
            let pm = n as f64 / sigma2;
            if tau2.is_infinite() {
                (y, 1.0 / pm)
            } else if tau2 <= 0.0 {
                (m, 0.0)
            } else {
                let pl = 1.0 / tau2;
                ((pl * m + pm * y) / (pl + pm), 1.0 / (pl + pm))
            }
        }
        _ => (m, if tau2.is_finite() { tau2 } else { f64::NAN }),
    }
}

/// Draws of θ: `[draw][shape]`, `reps` per law draw, seeded. `tau` is the shapes' spread about the
/// law (∞: the law says nothing a measurement does not override), `sigma` the seed noise.
pub fn draws(beliefs: &[Belief], tau: f64, sigma: f64, reps: usize, seed: u64) -> Vec<Vec<f64>> {
    let b = beliefs.iter().map(|x| x.law_ln.len()).min().unwrap_or(0);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (tau2, sigma2) = (tau * tau, sigma * sigma);
    let mut out = Vec::with_capacity(b * reps);
    for i in 0..b {
        for _ in 0..reps.max(1) {
            out.push(
                beliefs
                    .iter()
                    .map(|x| {
                        let (mean, var) = posterior(x.law_ln[i], tau2, x.measured, sigma2);
                        if var > 0.0 {
                            mean + var.sqrt() * std_normal(&mut rng)
                        } else {
                            mean
                        }
                    })
                    .collect(),
            );
        }
    }
    out
}

/// The seed noise σ and the shapes' spread τ about the law that P(best) and the intervals use,
/// with where they come from: σ pooled over the shapes' seeds and τ the lack-of-fit test's 90 %
/// upper bound when both were measured, else the law's CV error stands in for what is missing.
pub fn sigma_tau(
    noise: Option<&super::Noise>,
    lof: Option<&super::LackOfFit>,
    cv_rmse: f64,
) -> (f64, f64, String) {
    match (noise, lof) {
        // A law file from before the bound (its field 0 with a positive estimate) keeps the estimate.
        (Some(n), Some(l)) if l.sigma_between_hi == 0.0 && l.sigma_between > 0.0 => (
            n.sigma,
            l.sigma_between,
            format!(
                "σ pooled over {} shapes' seeds ({} dof); τ the lack-of-fit test's estimate (a law file without its upper bound)",
                n.cells, n.dof
            ),
        ),
        (Some(n), Some(l)) => (
            n.sigma,
            l.sigma_between_hi.max(l.sigma_between),
            format!(
                "σ pooled over {} shapes' seeds ({} dof); τ the lack-of-fit test's 90 % upper bound, its estimate {:.4}",
                n.cells, n.dof, l.sigma_between
            ),
        ),
        (Some(n), None) => (
            n.sigma,
            cv_rmse,
            "σ pooled over seeds; τ = the CV error (no lack-of-fit test)".to_string(),
        ),
        (None, _) => (
            cv_rmse,
            cv_rmse,
            "single seeds: σ and τ both taken as the CV error".to_string(),
        ),
    }
}

/// A standard normal draw (Box–Muller).
pub fn std_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// P(best) of each shape: the share of draws in which it is lowest (NaN draws skipped).
pub fn p_best(draws: &[Vec<f64>]) -> Vec<f64> {
    let k = draws.first().map_or(0, Vec::len);
    let mut wins = vec![0usize; k];
    let mut total = 0usize;
    for d in draws {
        if d.iter().any(|v| !v.is_finite()) {
            continue;
        }
        let best = (0..k).min_by(|&a, &b| d[a].total_cmp(&d[b]));
        if let Some(i) = best {
            wins[i] += 1;
            total += 1;
        }
    }
    wins.iter()
        .map(|w| *w as f64 / total.max(1) as f64)
        .collect()
}

/// P(θ_b < θ_a) over the draws, and the mean of θ_b − θ_a.
pub fn versus(draws: &[Vec<f64>], a: usize, b: usize) -> (f64, f64) {
    let d: Vec<f64> = draws
        .iter()
        .map(|x| x[b] - x[a])
        .filter(|v| v.is_finite())
        .collect();
    let n = d.len().max(1) as f64;
    (
        d.iter().filter(|v| **v < 0.0).count() as f64 / n,
        d.iter().sum::<f64>() / n,
    )
}

/// More seeds of each of two shapes (now measured `n_a` and `n_b` times) after which a gap of
/// `gap` in ln(metric) is told apart at `SEPARATE` (one-sided) against seed noise `sigma`; None
/// when even `MAX_SEEDS` do not (the two are equivalent within the noise).
pub fn seeds_to_separate(gap: f64, sigma: f64, n_a: usize, n_b: usize) -> Option<usize> {
    let z = normal_quantile(SEPARATE);
    (1..=MAX_SEEDS).find(|&m| {
        let se = sigma * (1.0 / (n_a + m) as f64 + 1.0 / (n_b + m) as f64).sqrt();
        z * se <= gap.abs()
    })
}

#[cfg(test)]
mod tests {
    use super::super::stats::normal_cdf;
    use super::*;

    /// Two measured shapes, a law that says nothing (τ = ∞): P(the lower one is best) is
    /// Φ(gap / (σ·√(2/n))).
    #[test]
    fn p_best_is_calibrated_on_two_measured_shapes() {
        for (gap, sigma, n) in [(0.1, 0.084, 2), (0.05, 0.084, 4), (0.2, 0.1, 1)] {
            let beliefs = vec![
                Belief {
                    law_ln: vec![0.0],
                    measured: Some((3.0, n)),
                },
                Belief {
                    law_ln: vec![0.0],
                    measured: Some((3.0 + gap, n)),
                },
            ];
            let d = draws(&beliefs, f64::INFINITY, sigma, 40_000, 7);
            let p = p_best(&d);
            let want = normal_cdf(gap / (sigma * (2.0 / n as f64).sqrt()));
            assert!(
                (p[0] - want).abs() < 0.01,
                "{gap} {sigma} {n}: {p:?} vs {want}"
            );
            assert!((p[0] + p[1] - 1.0).abs() < 1e-12);
            let (beats, mean) = versus(&d, 0, 1);
            assert!((beats - (1.0 - want)).abs() < 0.01 && (mean - gap).abs() < 0.01);
        }
    }

    /// The law's draws alone (no τ, no seeds): P(best) is the share of draws each shape wins.
    #[test]
    fn p_best_follows_the_law_draws_and_seeds_shrink_towards_them() {
        let beliefs = vec![
            Belief {
                law_ln: vec![1.0, 1.0, 2.0, 1.0],
                measured: None,
            },
            Belief {
                law_ln: vec![1.5, 1.5, 1.5, 1.5],
                measured: None,
            },
        ];
        let p = p_best(&draws(&beliefs, 0.0, 0.1, 3, 1));
        assert_eq!(p, vec![0.75, 0.25]);
        // τ = σ/√n: the posterior sits halfway between the law and the seeds.
        let (m, v) = posterior(1.0, 0.01, Some((2.0, 4)), 0.04);
        assert!((m - 1.5).abs() < 1e-12 && (v - 0.005).abs() < 1e-12);
    }

    #[test]
    fn seeds_that_separate_a_gap() {
        // gap 0.1, σ 0.084, 2 seeds each: z·σ·√(2/(2+m)) ≤ 0.1 first at m = 1 (√(2/3)·0.1077).
        assert_eq!(seeds_to_separate(0.1, 0.084, 2, 2), Some(1));
        // Half the gap needs about four times the seeds: 2 + m ≥ 2·(1.2816·0.084/0.05)² = 9.3.
        assert_eq!(seeds_to_separate(0.05, 0.084, 2, 2), Some(8));
        // An unmeasured shape (0 seeds) needs seeds of its own.
        assert_eq!(seeds_to_separate(0.3, 0.084, 2, 0), Some(1));
        assert_eq!(seeds_to_separate(0.0, 0.084, 2, 2), None);
    }
}
