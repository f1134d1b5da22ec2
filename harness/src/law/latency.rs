//! The latency model: batch-1 latency per image is a fixed cost, a per-block-per-forward cost
//! (kernel launches, norms, the adaLN modulation) and a cost proportional to the FLOPs. Ordinary
//! least squares through nalgebra's SVD (a linear solve, no optimiser).

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
pub fn fit(t: &Table, mode: &str) -> Option<LatencyModel> {
    let status = t.strs("status").ok()?;
    let modes = t.strs("mode").ok()?;
    let lat = t.f64s_opt("latency_ms")?;
    let depth = t.f64s_opt("depth")?;
    let fpi = t.f64s_opt("forwards_per_image")?;
    let gpi = t.f64s_opt("gflops_per_image")?;
    let mut rows = Vec::new();
    let (mut mode_fpi, mut all_fpi) = (Vec::new(), Vec::new());
    for i in 0..lat.len() {
        if status[i].as_deref() != Some("ok") {
            continue;
        }
        if let (Some(l), Some(d), Some(f), Some(g)) = (lat[i], depth[i], fpi[i], gpi[i]) {
            if [l, d, f, g].iter().all(|v| v.is_finite()) && l > 0.0 {
                rows.push(([1.0, d * f, g], l));
                all_fpi.push(f);
                if modes[i].as_deref() == Some(mode) {
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
    let coef = x.clone().svd(true, true).solve(&y, 1e-12).ok()?;
    let fit = &x * &coef;
    let mean = y.mean();
    let ss_tot: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    let ss_res: f64 = y.iter().zip(fit.iter()).map(|(a, b)| (a - b).powi(2)).sum();
    let r2 = if ss_tot > 0.0 { 1.0 - ss_res / ss_tot } else { 1.0 };
    if mode_fpi.is_empty() {
        mode_fpi = all_fpi; // the mode has no timed runs: the table's typical sampler instead
    }
    mode_fpi.sort_by(f64::total_cmp);
    let forwards_per_image = mode_fpi[mode_fpi.len() / 2];
    Some(LatencyModel { formula: FORMULA.into(), coef: coef.iter().copied().collect(), r2, n: rows.len(), forwards_per_image })
}
