//! The seed noise and the lack-of-fit test: how far shapes scatter about their own mean from
//! seed to seed (pure error), and whether a law's misses are larger than that.
//!
//! Cells are shapes (at one training step for the compute law); the pure error is the pooled
//! within-cell variance of ln(metric), on Σ(n − 1) degrees of freedom. The lack-of-fit sum of
//! squares is Σ n·(ln ȳ − ln f)² over the cells, on (cells − fitted coefficients) degrees of
//! freedom. Their mean-square ratio is F-distributed when the law is right (exactly for a linear
//! law with normal noise; approximately for the non-linear ones, and for curve cells, whose steps
//! share a run and so are correlated).

use std::collections::BTreeMap;

use super::fit::Obs;
use super::forms::Feat;
use super::stats::{f_quantile, f_sf};
use super::{LackOfFit, Noise};

/// Group single observations into cells by `key`: the mean of ln y over the cell, the count as
/// weight, the within-cell sum of squares. The features are the first member's (a cell's members
/// share them). In first-seen order of the keys.
pub fn cells<K: Ord + Clone>(items: &[(K, usize, Feat, f64)]) -> Vec<Obs> {
    let mut acc: BTreeMap<K, (usize, usize, Feat, Vec<f64>)> = BTreeMap::new();
    for (i, (k, g, x, y)) in items.iter().enumerate() {
        acc.entry(k.clone())
            .or_insert((i, *g, *x, Vec::new()))
            .3
            .push(*y);
    }
    let mut v: Vec<_> = acc.into_values().collect();
    v.sort_by_key(|e| e.0);
    v.into_iter()
        .map(|(_, group, x, ys)| {
            let n = ys.len() as f64;
            let m = ys.iter().sum::<f64>() / n;
            Obs {
                x,
                ln_y: m,
                w: n,
                ss: ys.iter().map(|y| (y - m).powi(2)).sum(),
                group,
            }
        })
        .collect()
}

/// The pooled within-cell standard deviation of ln(metric); None without a replicated cell.
pub fn pooled(obs: &[Obs]) -> Option<Noise> {
    let dof: f64 = obs.iter().map(|o| o.w - 1.0).sum();
    let ss: f64 = obs.iter().map(|o| o.ss).sum();
    let replicated = obs.iter().filter(|o| o.w >= 2.0).count();
    (dof >= 1.0 && replicated > 0).then(|| Noise {
        sigma: (ss / dof).sqrt(),
        dof: dof.round() as usize,
        cells: obs.len(),
        replicated,
    })
}

/// Confidence of the upper bound on the shapes' spread about the law (`sigma_between_hi`).
pub const TAU_CONFIDENCE: f64 = 0.9;

/// Significance level below which the lack-of-fit test rejects the law.
pub const ALPHA: f64 = 0.05;

/// The lack-of-fit F test of predictions `pred_ln` (one per cell) with `k` fitted coefficients.
/// None without pure-error degrees of freedom or with no more cells than coefficients.
pub fn lack_of_fit(obs: &[Obs], pred_ln: &[f64], k: usize) -> Option<LackOfFit> {
    let n: f64 = obs.iter().map(|o| o.w).sum();
    let cells = obs.len();
    let df_pe = n - cells as f64;
    if df_pe < 1.0 || cells <= k {
        return None;
    }
    let df_lof = (cells - k) as f64;
    let ss_lof: f64 = obs
        .iter()
        .zip(pred_ln)
        .map(|(o, p)| o.w * (o.ln_y - p).powi(2))
        .sum();
    let ss_pe: f64 = obs.iter().map(|o| o.ss).sum();
    if !ss_lof.is_finite() || !(ss_pe > 0.0) {
        return None;
    }
    let (ms_lof, ms_pe) = (ss_lof / df_lof, ss_pe / df_pe);
    let f = ms_lof / ms_pe;
    let p = f_sf(f, df_lof, df_pe);
    // The between-cell deviation the law leaves, by the ANOVA moment estimator with the
    // unbalanced design's effective replicate count n0.
    let n0 = if cells > 1 {
        (n - obs.iter().map(|o| o.w * o.w).sum::<f64>() / n) / (cells as f64 - 1.0)
    } else {
        1.0
    };
    let tau2 = ((ms_lof - ms_pe) / n0.max(1.0)).max(0.0);
    let lambda_hi = f / f_quantile(1.0 - TAU_CONFIDENCE, df_lof, df_pe);
    let tau2_hi = ((lambda_hi - 1.0) * ms_pe / n0.max(1.0)).max(tau2);
    Some(LackOfFit {
        f,
        df_lof: df_lof as usize,
        df_pe: df_pe as usize,
        p,
        ss_lof,
        ss_pe,
        sigma_between: tau2.sqrt(),
        sigma_between_hi: tau2_hi.sqrt(),
        rejects: p < ALPHA,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x() -> Feat {
        Feat::new(1e5, 2.0, 64.0, 32.0)
    }

    #[test]
    fn cells_pool_seeds_and_the_f_test_reads_them() {
        // Two shapes, two seeds each: ln y = 1 ± 0.1 and 2 ± 0.2.
        let items = vec![
            (0, 0, x(), 0.9),
            (1, 1, x(), 2.2),
            (0, 0, x(), 1.1),
            (1, 1, x(), 1.8),
        ];
        let c = cells(&items);
        assert_eq!(c.len(), 2);
        assert!((c[0].ln_y - 1.0).abs() < 1e-12 && c[0].w == 2.0);
        assert!((c[1].ss - 0.08).abs() < 1e-12);
        let noise = pooled(&c).unwrap();
        assert_eq!(noise.dof, 2);
        assert!((noise.sigma - (0.1f64 / 2.0).sqrt()).abs() < 1e-12);
        // A one-coefficient law predicting the grand mean 1.5: SS_lof = 2·0.25·2 = 1, on 1 df;
        // MS_pe = 0.05: F = 20 on (1, 2).
        let lof = lack_of_fit(&c, &[1.5, 1.5], 1).unwrap();
        assert!((lof.f - 20.0).abs() < 1e-9 && lof.df_lof == 1 && lof.df_pe == 2);
        assert!((lof.p - f_sf(20.0, 1.0, 2.0)).abs() < 1e-12);
        // Exact predictions: F = 0, p = 1.
        let exact = lack_of_fit(&c, &[1.0, 2.0], 1).unwrap();
        assert!(exact.p == 1.0 && !exact.rejects && exact.sigma_between == 0.0);
        // Exact predictions leave no spread to bound above 0 only through F: F = 0 bounds τ at 0.
        assert_eq!(exact.sigma_between_hi, 0.0);
        // F = 20 on (1, 2): λ ≤ 20 / F₀.₁(1, 2) at 90 %, τ²_hi = (λ − 1)·MS_pe / n0 (n0 = 2).
        let q = f_quantile(0.1, 1.0, 2.0);
        assert!((1.0 - f_sf(q, 1.0, 2.0) - 0.1).abs() < 1e-9);
        let hi = ((20.0 / q - 1.0) * 0.05 / 2.0).sqrt();
        assert!(
            (lof.sigma_between_hi - hi).abs() < 1e-9,
            "{}",
            lof.sigma_between_hi
        );
        assert!(lof.sigma_between_hi > lof.sigma_between);
        // A law within the noise (F < 1) has the moment estimate 0, but not the bound.
        let close = lack_of_fit(&c, &[1.05, 1.9], 1).unwrap();
        assert!(close.f < 1.0 && close.sigma_between == 0.0 && close.sigma_between_hi > 0.0);
        // Single seeds: no pure error, no test.
        assert!(lack_of_fit(&cells(&items[..2]), &[1.0, 2.0], 1).is_none());
        assert!(pooled(&cells(&items[..2])).is_none());
    }
}
