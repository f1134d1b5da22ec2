//! The latency model: batch-1 latency per image is a fixed cost, a per-block-per-forward cost
//! (kernel launches, norms, the adaLN modulation) and a cost proportional to the FLOPs. Least
//! squares with every coefficient >= 0 (no cost is negative, so no prediction is), solved exactly
//! over the 2^3 active sets with nalgebra's SVD.

use distill::run::RunStatus;
use distill::setup::Setup;
use nalgebra::{DMatrix, DVector};

use super::data::Table;
use super::LatencyModel;

pub const FORMULA: &str = "latency_ms = c0 + c1*depth*forwards_per_image + c2*gflops_per_image";
/// Fewer usable rows than this and there is no model.
pub const MIN_ROWS: usize = 4;

/// Fit on every ok row with a measured latency (all modes: the features carry the number of
/// forwards, so one-step and multi-step runs inform the same per-forward costs). The typical
/// `forwards_per_image` of `mode` is stored for predicting unmeasured shapes. None when the
/// table lacks the columns or has fewer than `MIN_ROWS` rows.
pub fn fit(t: &Table, mode: Setup) -> Option<LatencyModel> {
    // The quiet pass's teacher row has no setup (its mode reads as None).
    let modes = t.parsed::<Setup>("mode").ok()?;
    // The quiet pass has no status column (it times finished models only).
    let status = t
        .parsed::<RunStatus>("status")
        .unwrap_or_else(|_| vec![Some(RunStatus::Ok); modes.len()]);
    let lat = t.f64s_opt("latency_ms")?;
    let depth = t.f64s_opt("depth")?;
    let fpi = t.f64s_opt("forwards_per_image")?;
    let gpi = t.f64s_opt("gflops_per_image")?;
    let mut rows = Vec::new();
    let (mut mode_fpi, mut all_fpi) = (Vec::new(), Vec::new());
    for i in 0..lat.len() {
        if status[i] != Some(RunStatus::Ok) {
            continue;
        }
        if let (Some(l), Some(d), Some(f), Some(g)) = (lat[i], depth[i], fpi[i], gpi[i]) {
            if [l, d, f, g].iter().all(|v| v.is_finite()) && l > 0.0 {
                rows.push(([1.0, d * f, g], l));
                all_fpi.push(f);
                if modes[i] == Some(mode) {
                    mode_fpi.push(f);
                }
            }
        }
    }
    if rows.len() < MIN_ROWS {
        return None;
    }
    let x = DMatrix::from_fn(rows.len(), 3, |i, j| rows[i].0[j]);
    let y = DVector::from_iterator(rows.len(), rows.iter().map(|r| r.1));
    let coef = nonnegative_least_squares(&x, &y)?;
    let fit = &x * &coef;
    let mean = y.mean();
    let ss_tot: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    let ss_res: f64 = y.iter().zip(fit.iter()).map(|(a, b)| (a - b).powi(2)).sum();
    let r2 = if ss_tot > 0.0 {
        1.0 - ss_res / ss_tot
    } else {
        1.0
    };
    if mode_fpi.is_empty() {
        mode_fpi = all_fpi; // the mode has no timed runs: the table's typical sampler instead
    }
    let forwards_per_image = distill::eval::median(mode_fpi);
    Some(LatencyModel {
        formula: FORMULA.into(),
        coef: coef.iter().copied().collect(),
        r2,
        n: rows.len(),
        forwards_per_image,
        source: String::new(),
    })
}

/// argmin ||X b - y|| subject to b >= 0, for the few columns of the latency model: the best
/// unconstrained fit over every subset of columns whose coefficients are all non-negative.
fn nonnegative_least_squares(x: &DMatrix<f64>, y: &DVector<f64>) -> Option<DVector<f64>> {
    let p = x.ncols();
    let mut best: Option<(f64, DVector<f64>)> = None;
    for mask in 1u32..(1 << p) {
        let cols: Vec<usize> = (0..p).filter(|j| mask & (1 << j) != 0).collect();
        let sub = DMatrix::from_fn(x.nrows(), cols.len(), |i, j| x[(i, cols[j])]);
        let Ok(c) = sub.clone().svd(true, true).solve(y, 1e-12) else {
            continue;
        };
        if c.iter().any(|v| *v < 0.0 || !v.is_finite()) {
            continue;
        }
        let rss = (&sub * &c - y).norm_squared();
        if best.as_ref().is_none_or(|(r, _)| rss < *r) {
            let mut full = DVector::zeros(p);
            for (j, &col) in cols.iter().enumerate() {
                full[col] = c[j];
            }
            best = Some((rss, full));
        }
    }
    best.map(|(_, b)| b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficients_are_never_negative() {
        // y = 5 + 2 a exactly, plus a column b that OLS would give a negative weight (it anti-correlates).
        let rows = [(1.0, 3.0), (2.0, 1.0), (3.0, 4.0), (4.0, 0.5), (5.0, 2.0)];
        let x = DMatrix::from_fn(5, 3, |i, j| [1.0, rows[i].0, rows[i].1][j]);
        let y = DVector::from_iterator(5, rows.iter().map(|r| 5.0 + 2.0 * r.0 - 0.3 * r.1));
        let b = nonnegative_least_squares(&x, &y).unwrap();
        assert!(b.iter().all(|v| *v >= 0.0), "{b}");
        assert_eq!(b[2], 0.0, "the negative-weight column is dropped: {b}");
    }
}
