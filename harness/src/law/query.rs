//! `ditkd best`: the fitted law's optimum under a parameter budget, with an interval, the
//! runner-up shapes, the best measured run near that budget, and how far to trust it: the
//! probability each top shape is the best (`rank`), the shapes the optimum cannot be told apart
//! from (the tie set), and the seeds that would separate them.
//!
//! The optimum and its alternatives keep to the measured depth and head_dim ranges (see
//! `design::Domain`). When the law, searched over every feasible shape, would pick something
//! better-predicted outside them, that shape is reported too (`unrestricted`, and the first
//! warning), labelled as the extrapolation it is.

use std::path::Path;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::bootstrap::interval90;
use super::data::{by_shape, Table};
use super::design::{law_key, ranked_by};
use super::rank::{self, Belief};
use super::{At, Axis, LawFile, MeasuredShape, Shape};

/// Alternatives listed after the optimum.
pub const ALTERNATIVES: usize = 5;
/// Shapes (distinct in the law's eyes) P(best) is computed among.
pub const CONTENDERS: usize = 12;
/// Draws of the shapes' true means behind P(best): at least this many.
pub const DRAWS: usize = 4000;
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
    /// The probability this shape is the best of the contenders (null where not computed).
    #[serde(default)]
    pub p_best: Option<f64>,
}

/// A top shape with its probability of being best, and what separating it from the pick takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contender {
    pub depth: usize,
    pub width: usize,
    pub heads: usize,
    pub params: usize,
    /// Predicted metric (point law).
    pub predicted: f64,
    pub p_best: f64,
    /// P(this shape is better than the recommended one).
    pub p_beats_pick: f64,
    /// Its mean deficit to the recommended one over the draws, in % of the metric.
    pub gap_pct: f64,
    /// Seeds measured at the fitted step.
    pub seeds: usize,
    /// More seeds of each of the two that would separate them at 90 % if the gap is as
    /// estimated; null: not even `rank::MAX_SEEDS` would (equivalent within the noise).
    pub more_seeds: Option<usize>,
    /// Cannot be told apart from the pick: P(beats pick) ≥ 10 %.
    pub tie: bool,
}

/// The recommended shape's predicted metric with its uncertainty at one training compute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub at: At,
    /// Training FLOPs of the recommended shape there (null at convergence or without a compute model).
    pub train_flops: Option<f64>,
    pub predicted: f64,
    /// 90 % interval of the shape's mean metric (law draws, the shape's deviation from the law,
    /// its seeds).
    pub interval: Option<[f64; 2]>,
    /// 90 % interval of one more run of it (adds the seed noise).
    pub run_interval: Option<[f64; 2]>,
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
    pub mode: distill::setup::Setup,
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
    /// Where along training the shapes are compared (steps, FLOPs; see `prediction`).
    #[serde(default)]
    pub prediction: Option<Prediction>,
    /// The same shape trained to convergence (laws with a compute term only).
    #[serde(default)]
    pub converged: Option<Prediction>,
    /// The top shapes with their probability of being best, the pick first.
    #[serde(default)]
    pub contenders: Vec<Contender>,
    /// The contenders the pick cannot be told apart from (at 90 %).
    #[serde(default)]
    pub tie: Vec<String>,
    /// What to run to resolve the tie.
    #[serde(default)]
    pub resolve: Option<String>,
    /// Seed noise σ and the shapes' spread τ about the law (ln metric) that P(best) uses, and
    /// where they came from.
    #[serde(default)]
    pub sigma: f64,
    #[serde(default)]
    pub tau: f64,
    #[serde(default)]
    pub noise_source: String,
    /// The chosen law's lack-of-fit p-value (null: not testable).
    #[serde(default)]
    pub lack_of_fit_p: Option<f64>,
}

/// "d2-w96-h2".
pub fn label(depth: usize, width: usize, heads: usize) -> String {
    format!("d{depth}-w{width}-h{heads}")
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
        p_best: None,
    }
}

/// 90 % interval of exp(values).
fn exp_interval(v: impl Iterator<Item = f64>) -> Option<[f64; 2]> {
    interval90(&v.map(f64::exp).collect::<Vec<_>>())
}

/// Answer the budget query. `results` holds runs.parquet (for the measured runs; its absence is
/// a warning, not an error); `law_path` only names the law in errors.
pub fn best(
    law: &LawFile,
    law_path: &Path,
    results: &Path,
    budget: u64,
    max_latency_ms: Option<f64>,
    ask: Option<At>,
) -> Result<Answer> {
    let chosen = law.chosen();
    let mut warnings = Vec::new();
    // Where along training: asked, else the largest step measured.
    let fit_step = chosen.compute.as_ref().map(|c| c.step).or(law.fit_step);
    let max_step = chosen.compute.as_ref().map(|c| c.max_step).or(law.fit_step);
    let at = match (ask, &chosen.compute) {
        (Some(a), Some(_)) => a,
        (Some(a), None) => {
            let same = matches!((a, law.fit_step), (At::Steps(s), Some(f)) if s == f as f64);
            if !same {
                warnings.push(format!(
                    "law ({}) has no compute term: its predictions hold at the step count it was fitted at ({}), not at the training compute asked; fit a sweep with learning curves for a compute law",
                    chosen.name,
                    law.fit_step.map_or("unknown".into(), |s| s.to_string())
                ));
            }
            law.fit_step.map_or(a, |s| At::Steps(s as f64))
        }
        (None, _) => max_step.map_or(At::Converged, |s| At::Steps(s as f64)),
    };
    let predict_pt = |s: &Shape| chosen.predict_at(&chosen.coef, s, at);
    // The seeds measured speak for the shapes at the step they were run to only.
    let comparable = match (at, fit_step) {
        (At::Steps(s), Some(f)) => s == f as f64,
        (At::Steps(_), None) => chosen.compute.is_none(),
        (At::Flops(_) | At::Converged, _) => chosen.compute.is_none(),
    };
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
    let everywhere = ranked_by(&shapes, keep, &reference, predict_pt);
    let inside = ranked_by(
        &shapes,
        |s| keep(s) && dom.allows(s, budget as f64),
        &reference,
        predict_pt,
    );
    // No measured-range shape fits at all (a budget below the smallest one): the unrestricted
    // optimum is all there is, and says so.
    let fallback = inside.is_empty() && !everywhere.is_empty();
    if fallback {
        warnings.push(format!("no shape within the measured ranges ({}) fits this budget: the optimum below is searched over every feasible shape, an extrapolation", dom.describe()));
    }
    let ranked = if fallback { everywhere.clone() } else { inside };
    let Some((law_top, top_pred)) = ranked.first().copied() else {
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
    // The measured shapes the law cannot tell from `s` (law (d) has no head term: d6-w40 at 1 and
    // at 2 heads are one shape to it), lowest measured mean first. Where there are any, they stand
    // for `s`: a law-only twin would ignore what the seeds say (and be a second contender with the
    // same prediction, splitting or stealing its P(best)).
    let measured_near = |m: &MeasuredShape| (m.params as f64) >= (1.0 - NEAR) * budget as f64;
    let twins = |s: &Shape| -> Vec<Shape> {
        if !comparable {
            return Vec::new();
        }
        let mut v: Vec<(Shape, f64)> = ranked
            .iter()
            .filter(|(t, _)| law_key(form, t) == law_key(form, s))
            .filter_map(|(t, _)| {
                law.measured
                    .iter()
                    .find(|m| m.is(t) && measured_near(m))
                    .map(|m| (*t, m.mean_ln))
            })
            .collect();
        v.sort_by(|a, b| a.1.total_cmp(&b.1));
        v.into_iter().map(|x| x.0).collect()
    };
    let top = twins(&law_top).first().copied().unwrap_or(law_top);
    let mut seen = vec![law_key(form, &top)];
    let mut alternatives = Vec::new();
    for (s, p) in ranked.iter().skip(1) {
        if alternatives.len() == ALTERNATIVES {
            break;
        }
        let k = law_key(form, s);
        if !seen.contains(&k) {
            seen.push(k);
            let s = twins(s).first().copied().unwrap_or(*s);
            alternatives.push(pick(law, &s, *p, lat(&s)));
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
    // The parameter count's extrapolation is the budget's, warned about above.
    for e in law.extrapolates(&top) {
        if e.axis != Axis::Params {
            warnings.push(format!("the optimum's {e}: extrapolation"));
        }
    }
    // P(best) among the contenders: the top shapes of the law, and the measured ones near the budget.
    let mut cont: Vec<Shape> = Vec::new();
    let mut keys = Vec::new();
    for (s, _) in &ranked {
        if cont.len() == CONTENDERS {
            break;
        }
        let k = law_key(form, s);
        if !keys.contains(&k) {
            keys.push(k);
            let tw = twins(s);
            if tw.is_empty() {
                cont.push(*s);
            }
            for t in tw {
                if !cont.contains(&t) {
                    cont.push(t);
                }
            }
        }
    }
    for m in &law.measured {
        if !measured_near(m) {
            continue;
        }
        if let Some((s, _)) = ranked.iter().find(|(s, _)| m.is(s)) {
            if !cont.contains(s) {
                cont.push(*s);
            }
        }
    }
    let lof = chosen.lack_of_fit.as_ref();
    let (sigma, tau, noise_source) = rank::sigma_tau(law.noise.as_ref(), lof, chosen.cv_rmse());
    let seeds_of = |s: &Shape| law.measured.iter().find(|m| m.is(s)).map_or(0, |m| m.seeds);
    let law_draws: Vec<&std::collections::BTreeMap<String, f64>> = if law.bootstrap.is_empty() {
        vec![&chosen.coef]
    } else {
        law.bootstrap.iter().collect()
    };
    let belief = |s: &Shape, at: At, measured: bool| Belief {
        law_ln: law_draws
            .iter()
            .map(|c| chosen.predict_at(c, s, at).ln())
            .collect(),
        measured: if measured {
            law.measured
                .iter()
                .find(|m| m.is(s))
                .map(|m| (m.mean_ln, m.seeds))
        } else {
            None
        },
    };
    let reps = DRAWS.div_ceil(law_draws.len());
    let p_best_of = |cont: &[Shape]| {
        let beliefs: Vec<Belief> = cont.iter().map(|s| belief(s, at, comparable)).collect();
        let draws = rank::draws(&beliefs, tau, sigma, reps, law.seed);
        let pb = rank::p_best(&draws);
        (draws, pb)
    };
    let (mut draws, mut pb) = p_best_of(&cont);
    // The pick is the contender most likely best once the seeds measured are counted, which need
    // not be the law's own optimum: a measured shape sits off the law by what its seeds say.
    let law_optimum = top;
    if let Some(j) = (1..pb.len())
        .filter(|&j| pb[j] > pb[0])
        .max_by(|&a, &b| pb[a].total_cmp(&pb[b]))
    {
        let s = cont.remove(j);
        cont.insert(0, s);
        (draws, pb) = p_best_of(&cont);
    }
    let top = cont[0];
    let top_pred = predict_pt(&top);
    if top != law_optimum {
        let p_law = cont
            .iter()
            .position(|s| *s == law_optimum)
            .map_or(f64::NAN, |j| pb[j]);
        warnings.push(format!(
            "the pick {} is the contender most likely best once the seeds measured are counted (P(best) {:.2}); the law's own optimum is {} (predicted {:.4}, P(best) {:.2})",
            label(top.depth, top.width, top.heads),
            pb[0],
            label(law_optimum.depth, law_optimum.width, law_optimum.heads),
            predict_pt(&law_optimum),
            p_law
        ));
        // The law's ranking (the first table) keeps its optimum, next to the pick.
        alternatives.retain(|a| (a.depth, a.width, a.heads) != (top.depth, top.width, top.heads));
        alternatives.insert(
            0,
            pick(
                law,
                &law_optimum,
                predict_pt(&law_optimum),
                lat(&law_optimum),
            ),
        );
        alternatives.truncate(ALTERNATIVES);
    }
    let mut contenders = Vec::new();
    for (j, s) in cont.iter().enumerate() {
        let (beats, gap) = if j == 0 {
            (0.0, 0.0)
        } else {
            rank::versus(&draws, 0, j)
        };
        let tie = j > 0 && beats >= 1.0 - rank::SEPARATE;
        contenders.push(Contender {
            depth: s.depth,
            width: s.width,
            heads: s.heads,
            params: s.params,
            predicted: predict_pt(s),
            p_best: pb.get(j).copied().unwrap_or(f64::NAN),
            p_beats_pick: beats,
            gap_pct: 100.0 * (gap.exp() - 1.0),
            seeds: seeds_of(s),
            more_seeds: if j == 0 {
                None
            } else {
                rank::seeds_to_separate(gap, sigma, seeds_of(&top), seeds_of(s))
            },
            tie,
        });
    }
    for a in alternatives.iter_mut() {
        a.p_best = contenders
            .iter()
            .find(|c| (c.depth, c.width, c.heads) == (a.depth, a.width, a.heads))
            .map(|c| c.p_best);
    }
    let tie: Vec<String> = contenders
        .iter()
        .filter(|c| c.tie)
        .map(|c| label(c.depth, c.width, c.heads))
        .collect();
    let pick_label = label(top.depth, top.width, top.heads);
    let resolve = (!tie.is_empty()).then(|| {
        let parts: Vec<String> = contenders
            .iter()
            .filter(|c| c.tie)
            .map(|c| {
                let l = label(c.depth, c.width, c.heads);
                match c.more_seeds {
                    Some(m) => format!(
                        "{m} more seed{} each of {pick_label} and {l} (now {} and {}; gap {:+.1} %)",
                        if m == 1 { "" } else { "s" },
                        seeds_of(&top),
                        c.seeds,
                        c.gap_pct
                    ),
                    None => format!(
                        "{l}: not separable with {} more seeds each (gap {:+.1} %): equivalent within the noise",
                        rank::MAX_SEEDS,
                        c.gap_pct
                    ),
                }
            })
            .collect();
        format!("to separate at 90 %: {}", parts.join("; "))
    });
    let prediction_at = |at: At, comparable: bool| {
        let b = [belief(&top, at, comparable)];
        let d = rank::draws(&b, tau, sigma, reps, law.seed ^ 0x5eed);
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(law.seed);
        Prediction {
            at,
            train_flops: match (&chosen.compute, at) {
                (Some(c), At::Steps(st)) => Some(c.flops(&top, st)),
                (Some(_), At::Flops(f)) => Some(f),
                _ => None,
            },
            predicted: chosen.predict_at(&chosen.coef, &top, at),
            interval: exp_interval(d.iter().map(|x| x[0])),
            run_interval: exp_interval(d.iter().map(|x| x[0] + sigma * rank::std_normal(&mut rng))),
        }
    };
    let prediction = Some(prediction_at(at, comparable));
    let converged = chosen
        .compute
        .as_ref()
        .map(|_| prediction_at(At::Converged, false));

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
            let pts = t.points(&law.metric, law.mode).unwrap_or_else(|e| {
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
        mode: law.mode,
        law: chosen.name.to_string(),
        formula: chosen.formula.clone(),
        best: Pick {
            p_best: contenders.first().map(|c| c.p_best),
            ..pick(law, &top, top_pred, lat(&top))
        },
        alternatives,
        unrestricted,
        best_measured,
        typical_error_pct: 100.0 * chosen.typical_error(),
        cv_kind: law.cv_kind,
        max_latency_ms,
        warnings,
        prediction,
        converged,
        contenders,
        tie,
        resolve,
        sigma,
        tau,
        noise_source,
        lack_of_fit_p: lof.map(|l| l.p),
    })
}
