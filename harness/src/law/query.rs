//! `ditkd best`: the fitted law's optimum under a parameter budget, with an interval, the
//! runner-up shapes, the best measured run near that budget, and how far to trust it.
//!
//! The optimum and its alternatives keep to the measured depth and head_dim ranges (see
//! `design::Domain`). When the law, searched over every feasible shape, would pick something
//! better-predicted outside them, that shape is reported too (`unrestricted`, and the first
//! warning), labelled as the extrapolation it is.

use std::path::Path;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::data::{by_shape, Table};
use super::design::{law_key, ranked};
use super::{LawFile, Shape};

/// Alternatives listed after the optimum.
pub const ALTERNATIVES: usize = 5;
/// "Near the budget" for measured runs: params within ±10 %.
pub const NEAR: f64 = 0.1;

/// A shape the law predicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pick {
    pub depth: usize,
    pub width: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub params: usize,
    pub predicted: f64,
    /// 90 % interval from the bootstrap draws (null without draws).
    pub interval: Option<[f64; 2]>,
    /// Predicted batch-1 latency (ms per image), when the law has a latency model.
    pub latency_ms: Option<f64>,
}

/// The best measured shape near the budget (mean over seeds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    pub run_ids: Vec<String>,
    pub depth: usize,
    pub width: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub params: usize,
    pub measured: f64,
    pub seeds: usize,
    /// The law's prediction for this shape.
    pub predicted: f64,
}

/// The answer, printed as text or (with --json) as this object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub budget: u64,
    pub metric: String,
    pub mode: String,
    pub law: String,
    pub formula: String,
    /// The optimum among the shapes inside the measured depth and head_dim ranges.
    pub best: Pick,
    /// Runner-up shapes, inside the same ranges.
    pub alternatives: Vec<Pick>,
    /// The optimum over every feasible shape, when it lies outside the measured ranges and the
    /// law predicts it better than `best`: an extrapolation, not a recommendation.
    #[serde(default)]
    pub unrestricted: Option<Pick>,
    pub best_measured: Option<Measured>,
    /// The chosen law's CV error as a typical relative error, in % (exp(rmse) − 1).
    pub typical_error_pct: f64,
    pub cv_kind: super::CvKind,
    pub max_latency_ms: Option<f64>,
    /// Extrapolation and staleness warnings.
    pub warnings: Vec<String>,
}

fn pick(law: &LawFile, s: &Shape, predicted: f64, latency: Option<f64>) -> Pick {
    Pick {
        depth: s.depth,
        width: s.width,
        heads: s.heads,
        head_dim: s.head_dim(),
        params: s.params,
        predicted,
        interval: law.predict_interval(s),
        latency_ms: latency,
    }
}

/// Answer the budget query. `results` holds runs.parquet (for the measured runs; its absence is
/// a warning, not an error); `law_path` only names the law in errors.
pub fn best(
    law: &LawFile,
    law_path: &Path,
    results: &Path,
    budget: u64,
    max_latency_ms: Option<f64>,
) -> Result<Answer> {
    let chosen = law.chosen();
    let base = law.base_config()?;
    let latency = match (max_latency_ms, &law.latency_model) {
        (Some(_), None) => bail!("{}: no latency model (the table had fewer than 4 ok runs with a measured latency), so --max-latency-ms cannot be applied", law_path.display()),
        (_, m) => m.clone(),
    };
    let lat = |s: &Shape| latency.as_ref().map(|m| m.predict(&s.config(&base)));
    let shapes = law.feasible_shapes()?;
    let keep = |s: &Shape| {
        s.params as u64 <= budget
            && max_latency_ms.is_none_or(|max| lat(s).is_some_and(|l| l <= max))
    };
    let dom = law.domain();
    let reference = law.reference();
    let everywhere = ranked(chosen, &shapes, keep, &reference);
    let inside = ranked(
        chosen,
        &shapes,
        |s| keep(s) && dom.allows(s, budget as f64),
        &reference,
    );
    let mut warnings = Vec::new();
    // No measured-range shape fits at all (a budget below the smallest one): the unrestricted
    // optimum is all there is, and says so.
    let fallback = inside.is_empty() && !everywhere.is_empty();
    if fallback {
        warnings.push(format!("no shape within the measured ranges ({}) fits this budget: the optimum below is searched over every feasible shape, an extrapolation", dom.describe()));
    }
    let ranked = if fallback { everywhere.clone() } else { inside };
    let Some((top, top_pred)) = ranked.first().copied() else {
        let smallest = shapes.first().map_or(0, |s| s.params);
        match max_latency_ms {
            Some(max) => {
                bail!("no feasible shape with params <= {budget} and predicted latency <= {max} ms")
            }
            None => {
                bail!("no feasible shape with params <= {budget} (the smallest has {smallest})")
            }
        }
    };
    let form = chosen.form();
    let mut seen = vec![law_key(form, &top)];
    let mut alternatives = Vec::new();
    for (s, p) in ranked.iter().skip(1) {
        if alternatives.len() == ALTERNATIVES {
            break;
        }
        let k = law_key(form, s);
        if !seen.contains(&k) {
            seen.push(k);
            alternatives.push(pick(law, s, *p, lat(s)));
        }
    }

    let unrestricted = everywhere
        .first()
        .filter(|(s, p)| !fallback && law_key(form, s) != law_key(form, &top) && *p < top_pred)
        .map(|(s, p)| pick(law, s, *p, lat(s)));
    if let Some(u) = &unrestricted {
        warnings.insert(
            0,
            format!(
                "unrestricted optimum (extrapolation): outside the measured ranges ({}, width {}..={}) the law would pick depth={} width={} heads={} (head_dim {}, {} params), predicted {:.4} vs {:.4} in range; the data cannot support it, so it is not recommended",
                dom.describe(),
                dom.width[0],
                dom.width[1],
                u.depth,
                u.width,
                u.heads,
                u.head_dim,
                u.params,
                u.predicted,
                top_pred
            ),
        );
    }
    let [lo, hi] = law.params_range;
    if budget < lo as u64 || budget > hi as u64 {
        warnings.push(format!("budget {budget} lies outside the fitted params range {lo}..{hi}: this is an extrapolation"));
    }
    for e in law.extrapolates(&top) {
        if !e.starts_with("params") {
            warnings.push(format!("the optimum's {e}: extrapolation"));
        }
    }
    let best_measured = match Table::load(results) {
        Err(e) => {
            warnings.push(format!("no measured runs to compare: {e:#}"));
            None
        }
        Ok(t) => {
            if t.hash != law.table_hash {
                warnings.push(format!(
                    "{} changed since the law was fitted (run `ditkd fit {}` again)",
                    t.path.display(),
                    results.display()
                ));
            }
            let pts = t.points(&law.metric, &law.mode).unwrap_or_else(|e| {
                warnings.push(format!("no measured runs to compare: {e:#}"));
                Vec::new()
            });
            let near: Vec<_> = pts
                .into_iter()
                .filter(|q| (q.shape.params as f64 - budget as f64).abs() <= NEAR * budget as f64)
                .collect();
            by_shape(&near)
                .into_iter()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(s, mean, seeds)| Measured {
                    run_ids: near
                        .iter()
                        .filter(|q| q.shape == s)
                        .map(|q| q.run_id.clone())
                        .collect(),
                    depth: s.depth,
                    width: s.width,
                    heads: s.heads,
                    head_dim: s.head_dim(),
                    params: s.params,
                    measured: mean,
                    seeds,
                    predicted: chosen.predict(&s),
                })
        }
    };
    Ok(Answer {
        budget,
        metric: law.metric.clone(),
        mode: law.mode.clone(),
        law: chosen.name.to_string(),
        formula: chosen.formula.clone(),
        best: pick(law, &top, top_pred, lat(&top)),
        alternatives,
        unrestricted,
        best_measured,
        typical_error_pct: 100.0 * chosen.typical_error(),
        cv_kind: law.cv_kind,
        max_latency_ms,
        warnings,
    })
}
