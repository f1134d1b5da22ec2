//! What the plots draw from law.json: the chosen law's curves through the measured points and its
//! cross-validated predictions.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use dit::DitConfig;

use super::Point;
use crate::law::{Feat, LawFile};

/// The law's prediction along one line of shapes (one depth, or the parameter axis for law a).
#[derive(Debug, Clone, PartialEq)]
pub struct LawCurve {
    /// The depth the curve is drawn at; None for a law of parameters only.
    pub depth: Option<i64>,
    /// (params, predicted metric), ordered by params.
    pub points: Vec<(f64, f64)>,
}

/// One cross-validated prediction of law.json's `cv_predictions`.
#[derive(Debug, Clone, PartialEq)]
pub struct CvPoint {
    pub budget: i64,
    pub measured: f64,
    pub predicted: f64,
}

/// What the plots draw from law.json.
#[derive(Debug, Clone, PartialEq)]
pub struct LawOverlay {
    pub name: String,
    pub formula: String,
    /// RMSE on ln(metric) of the cross-validation the law was chosen on.
    pub cv_rmse: Option<f64>,
    /// "lobo" (leave one budget out) or "kfold".
    pub cv_kind: crate::law::CvKind,
    /// The head count the curves hold fixed (head dim = width / heads), as the sweep did.
    pub heads: Option<i64>,
    /// The head dim the curves hold fixed instead, when no head count is known.
    pub head_dim: Option<f64>,
    pub curves: Vec<LawCurve>,
    pub cv: Vec<CvPoint>,
}

/// Samples per curve: smooth at the plot's size.
const SAMPLES: usize = 80;

/// The overlay of `law` over the measured `points` (the law's mode).
pub fn overlay(law: &LawFile, points: &[Point]) -> Result<LawOverlay> {
    let chosen = law.chosen();
    let form = chosen.form();
    let raw = form.from_map(&chosen.coef);
    let [n_lo, n_hi] = law.params_range.map(|v| v as f64);
    let in_range = |n: f64| n >= n_lo / 1.1 && n <= n_hi * 1.1;
    let mut curves = Vec::new();
    let mut head_dim = None;
    let mut heads = None;
    if form.uses_shape() {
        let base = law.base_config()?;
        // Law c depends on the head dim. A sweep that varies the width holds the head count (the
        // head dim grows with the width), so the curves do too, at the count most runs used; with
        // no points, at a fixed head dim mid-range.
        heads = mode(points.iter().map(|p| p.heads)).filter(|&h| h > 0);
        let fixed_hd = {
            let [a, b] = law.head_dim_range.map(|v| v as f64);
            (a * b).sqrt()
        };
        if heads.is_none() {
            head_dim = Some(fixed_hd);
        }
        let hd_of = |w: usize| heads.map_or(fixed_hd, |h| w as f64 / h as f64);
        let mut depths: BTreeSet<i64> = points.iter().map(|p| p.depth).collect();
        if depths.is_empty() {
            depths.extend(law.depth_range[0] as i64..=law.depth_range[1] as i64);
        }
        for d in depths {
            // Width runs continuously (every integer the geometric grid hits) across the fitted range.
            let widths: BTreeSet<usize> =
                geom(law.width_range[0] as f64, law.width_range[1] as f64)
                    .map(|w| w.round() as usize)
                    .collect();
            let pts: Vec<(f64, f64)> = widths
                .into_iter()
                .filter(|&w| w > 0)
                .map(|w| {
                    let cfg = DitConfig {
                        depth: d as usize,
                        hidden_size: w,
                        ..base.clone()
                    };
                    let n = cfg.num_params() as f64;
                    let mut x = Feat::new(n, d as f64, w as f64, hd_of(w));
                    // A compute law is drawn at the step it was fitted at.
                    if let Some(c) = &chosen.compute {
                        x = x.at(
                            c.step as f64,
                            c.step as f64
                                * (c.per_step[0] + c.per_step[1] * cfg.forward_flops() as f64),
                        );
                    }
                    (n, form.eval_raw(&raw, &x))
                })
                .filter(|&(n, y)| in_range(n) && y.is_finite() && y > 0.0)
                .collect();
            if pts.len() > 1 {
                curves.push(LawCurve {
                    depth: Some(d),
                    points: pts,
                });
            }
        }
    } else {
        let pts = geom(n_lo / 1.1, n_hi * 1.1)
            .map(|n| (n, form.eval_raw(&raw, &Feat::new(n, 1.0, 1.0, 1.0))))
            .filter(|&(_, y)| y.is_finite() && y > 0.0)
            .collect();
        curves.push(LawCurve {
            depth: None,
            points: pts,
        });
    }
    Ok(LawOverlay {
        name: chosen.name.to_string(),
        formula: chosen.formula.clone(),
        cv_rmse: Some(chosen.cv_rmse()).filter(|v| v.is_finite()),
        cv_kind: law.cv_kind,
        head_dim,
        heads,
        curves,
        cv: law
            .cv_predictions
            .iter()
            .filter(|c| c.measured > 0.0 && c.predicted > 0.0)
            .map(|c| CvPoint {
                budget: c.budget as i64,
                measured: c.measured,
                predicted: c.predicted,
            })
            .collect(),
    })
}

/// `SAMPLES` log-spaced values from `lo` to `hi`.
fn geom(lo: f64, hi: f64) -> impl Iterator<Item = f64> {
    let (a, b) = (lo.max(1e-12).ln(), hi.max(lo).max(1e-12).ln());
    (0..SAMPLES).map(move |i| (a + (b - a) * i as f64 / (SAMPLES - 1) as f64).exp())
}

/// The most frequent value (the smallest among ties).
fn mode(vals: impl Iterator<Item = i64>) -> Option<i64> {
    let mut count: BTreeMap<i64, usize> = BTreeMap::new();
    for v in vals {
        *count.entry(v).or_default() += 1;
    }
    count
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(v, _)| v)
}
