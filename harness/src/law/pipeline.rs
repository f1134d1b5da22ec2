//! `ditkd fit` end to end: table -> points -> every candidate law (fit, CV, bootstrap) -> the
//! choice -> design formula, latency model, hold-out check -> a `LawFile`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};

use super::bootstrap::{interval90, refit, resamples};
use super::cv::{cross_validate, kfold_folds, lobo_folds, CvResult};
use super::data::{base_config, base_json, range, Point, Table};
use super::design::{design, feasible, Candidates, Domain, Reference};
use super::fit::{fit_from, scales, Obs};
use super::forms::Form;
use super::{holdout, latency, CvKind, CvPrediction, LatencyModel, LawFile, LawFit, Skipped};

/// What `ditkd fit` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    pub dir: PathBuf,
    pub metric: String,
    pub mode: String,
    pub bootstrap: usize,
    pub hold_out: Option<u64>,
    pub seed: u64,
}

/// Fewer usable runs than this and no law is fitted.
pub const MIN_POINTS: usize = 4;

/// One law's full fit, its CV results and bootstrap refits.
struct Candidate {
    law: LawFit,
    lobo: Option<CvResult>,
    kfold: CvResult,
    draws: Vec<Vec<f64>>,
}

/// Fit one law: the thorough multi-start fit, both CVs, the bootstrap. Err(reason) = skipped.
fn fit_law(
    form: Form,
    obs: &[Obs],
    budgets: &[u64],
    o: &Options,
    warm: &[Vec<f64>],
) -> std::result::Result<Candidate, String> {
    let (n, k) = (obs.len(), form.k());
    if k + 1 > n {
        return Err(format!(
            "{k} coefficients need at least {} runs; {n} available",
            k + 1
        ));
    }
    let sc = scales(obs);
    let f = fit_from(form, obs, &sc, warm, true)
        .ok_or("no starting point converged to finite values")?;
    let raw = form.to_raw(&f.theta, &sc);
    if raw.iter().any(|v| !v.is_finite()) {
        return Err(format!("coefficients overflow: {raw:?}"));
    }
    let lobo =
        lobo_folds(budgets).and_then(|folds| cross_validate(form, obs, &sc, &f.theta, &folds));
    let kfold = cross_validate(form, obs, &sc, &f.theta, &kfold_folds(n, o.seed))
        .ok_or("k-fold refits failed")?;
    let draws = refit(form, obs, &sc, &f.theta, &resamples(n, o.bootstrap, o.seed));
    let intervals = form
        .coef_names()
        .iter()
        .enumerate()
        .filter_map(|(j, name)| {
            interval90(&draws.iter().map(|d| d[j]).collect::<Vec<_>>())
                .map(|iv| (name.to_string(), iv))
        })
        .collect();
    let rss = f.rss.max(f64::MIN_POSITIVE); // a perfect fit would make the AIC −∞
    let law = LawFit {
        name: form,
        formula: form.formula().into(),
        coef: form.to_map(&raw),
        intervals,
        rss: f.rss,
        aic: n as f64 * (rss / n as f64).ln() + 2.0 * k as f64,
        cv_lobo_rmse: lobo.as_ref().map(|c| c.rmse),
        cv_kfold_rmse: kfold.rmse,
        k,
        n,
    };
    Ok(Candidate {
        law,
        lobo,
        kfold,
        draws,
    })
}

/// Run the whole fit. Errors name the table file.
pub fn fit_sweep(o: &Options) -> Result<LawFile> {
    let table = Table::load(&o.dir)?;
    let p = table.path.display().to_string();
    let all = table.points(&o.metric, &o.mode)?;
    // No law for students that have not left chance: it would describe the evaluation noise.
    let (base0, _, _) = base_config(&o.dir, &table, &all);
    let untrained =
        distill::reference::Reference::load(&o.dir).and_then(|r| r.untrained.map(|m| m.fid_proxy));
    super::guard::check_learned(&table, &o.mode, base0.num_classes, untrained)
        .map_err(|e| anyhow::Error::new(e).context(p.clone()))?;

    let what = format!(
        "status ok, mode `{}`, finite positive `{}`",
        o.mode, o.metric
    );
    let (train, held): (Vec<Point>, Vec<Point>) = match o.hold_out {
        None => (all, Vec::new()),
        Some(b) => {
            let (held, train): (Vec<Point>, Vec<Point>) =
                all.into_iter().partition(|q| q.budget == b);
            if held.is_empty() {
                let mut bs: Vec<u64> = train.iter().map(|q| q.budget).collect();
                bs.sort_unstable();
                bs.dedup();
                bail!(
                    "{p}: --hold-out {b}: no usable runs ({what}) at that budget (budgets: {bs:?})"
                );
            }
            (train, held)
        }
    };
    if train.len() < MIN_POINTS {
        let excl = if o.hold_out.is_some() {
            ", held-out budget excluded"
        } else {
            ""
        };
        bail!(
            "{p}: {} usable runs ({what}{excl}); a law needs at least {MIN_POINTS}",
            train.len()
        );
    }

    let obs: Vec<Obs> = train
        .iter()
        .map(|q| Obs {
            x: q.feat(),
            ln_y: q.y.ln(),
        })
        .collect();
    let budgets: Vec<u64> = train.iter().map(|q| q.budget).collect();
    let mut distinct = budgets.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let mut notes = Vec::new();
    if distinct.len() < 2 {
        notes.push("a single budget: leave-one-budget-out CV is impossible, the law is chosen by k-fold CV".into());
    }

    let ygeo = (obs.iter().map(|q| q.ln_y).sum::<f64>() / obs.len() as f64).exp();
    let mut cands: Vec<Candidate> = Vec::new();
    let mut skipped = Vec::new();
    for &form in Form::ALL {
        // (c) nests (b): also start it from (b)'s optimum plus a small head term, so it can
        // never fit worse than (b) merely for want of a good start.
        let warm: Vec<Vec<f64>> = match (form, cands.iter().find(|c| c.law.name == Form::B)) {
            (Form::C, Some(b)) => {
                let th = Form::B.to_theta(&Form::B.from_map(&b.law.coef), &scales(&obs));
                [-0.7, 0.0, 0.7]
                    .iter()
                    .map(|lh| {
                        th.iter()
                            .copied()
                            .chain([(0.01 * ygeo).ln(), *lh])
                            .collect()
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        match fit_law(form, &obs, &budgets, o, &warm) {
            Ok(c) => {
                if c.draws.len() < o.bootstrap {
                    notes.push(format!(
                        "law ({}): {} of {} bootstrap refits failed and were dropped",
                        form.name(),
                        o.bootstrap - c.draws.len(),
                        o.bootstrap
                    ));
                }
                cands.push(c);
            }
            Err(reason) => skipped.push(Skipped { name: form, reason }),
        }
    }
    if cands.is_empty() {
        bail!(
            "{p}: no law could be fitted ({})",
            skipped
                .iter()
                .map(|s| format!("{}: {}", s.name, s.reason))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }

    // The choice: lowest LOBO CV error (k-fold when LOBO is unavailable for every law), the
    // simplest law winning near-ties.
    let use_lobo = cands.iter().any(|c| c.lobo.is_some());
    let score = |c: &Candidate| {
        if use_lobo {
            c.lobo.as_ref().map_or(f64::INFINITY, |l| l.rmse)
        } else {
            c.kfold.rmse
        }
    };
    let best = choose(
        &cands
            .iter()
            .map(|c| (score(c), c.law.k))
            .collect::<Vec<_>>(),
    );
    let chosen = &cands[best];
    let chosen_cv = if use_lobo {
        chosen.lobo.as_ref().unwrap_or(&chosen.kfold)
    } else {
        &chosen.kfold
    };
    let cv_kind = if use_lobo && chosen.lobo.is_some() {
        CvKind::Lobo
    } else {
        CvKind::Kfold
    };
    let cv_predictions = train
        .iter()
        .zip(&chosen_cv.pred_ln)
        .map(|(q, pl)| CvPrediction {
            run_id: q.run_id.clone(),
            budget: q.budget,
            depth: q.shape.depth,
            width: q.shape.width,
            heads: q.shape.heads,
            head_dim: q.shape.head_dim(),
            params: q.shape.params,
            seed: q.seed,
            measured: q.y,
            predicted: pl.exp(),
        })
        .collect();

    let (base, base_source, base_notes) = base_config(&o.dir, &table, &train);
    notes.extend(base_notes);
    let mismatched = train
        .iter()
        .filter(|q| q.shape.config(&base).num_params() != q.shape.params)
        .count();
    if mismatched > 0 {
        notes.push(format!("{mismatched} runs' params differ from dit::counts on the base config ({base_source}): the design search may be off"));
    }
    let params_range = range(&train, |q| q.shape.params);
    let depth_range = range(&train, |q| q.shape.depth);
    let width_range = range(&train, |q| q.shape.width);
    let head_dim_range = range(&train, |q| q.shape.head_dim());
    // The design keeps to the measured depth and head_dim ranges (`Domain`): a law fitted on
    // depths 2..8 cannot vouch for depth 1, whatever its exponent says.
    let domain = Domain {
        params: params_range,
        depth: depth_range,
        width: width_range,
        head_dim: head_dim_range,
    };
    let reference = Reference::from_ranges(depth_range, width_range, head_dim_range);
    let candidates = Candidates::new(feasible(&base));
    let design = design(&chosen.law, &chosen.draws, &candidates, &domain, &reference);
    let holdout = o
        .hold_out
        .map(|b| holdout::evaluate(&chosen.law, &held, &candidates.shapes, b, &reference));
    let form = chosen.law.form();
    let bootstrap: Vec<BTreeMap<String, f64>> =
        chosen.draws.iter().map(|d| form.to_map(d)).collect();

    Ok(LawFile {
        metric: o.metric.clone(),
        mode: o.mode.clone(),
        table: p,
        table_hash: table.hash.clone(),
        n_runs: train.len(),
        budgets: distinct,
        held_out_budget: o.hold_out,
        params_range,
        depth_range,
        width_range,
        head_dim_range,
        base: base_json(&base),
        base_source,
        chosen: chosen.law.name,
        skipped,
        cv_kind,
        cv_predictions,
        design,
        latency_model: match Table::load_file(&o.dir.join("latency.parquet")) {
            Ok(quiet) => latency::fit(&quiet, &o.mode).map(|m| LatencyModel {
                source: "quiet pass (latency.parquet)".into(),
                ..m
            }),
            Err(_) => latency::fit(&table, &o.mode).map(|m| LatencyModel {
                source: "in-training timings (runs.parquet; run `ditkd latency` for quiet ones)"
                    .into(),
                ..m
            }),
        },
        holdout,
        bootstrap,
        seed: o.seed,
        notes,
        laws: cands.into_iter().map(|c| c.law).collect(),
    })
}

/// CV errors within this fraction of the lowest count as a tie, which the law with the fewest
/// coefficients wins: a law that is no better out of sample should not buy extra parameters.
pub const CV_TIE: f64 = 0.02;

/// Index of the chosen law among `(cv error, coefficient count)` pairs (in the order fitted).
fn choose(scored: &[(f64, usize)]) -> usize {
    let lowest = scored.iter().map(|s| s.0).fold(f64::INFINITY, f64::min);
    (0..scored.len())
        .filter(|&i| scored[i].0 <= lowest * (1.0 + CV_TIE))
        .min_by(|&a, &b| {
            scored[a]
                .1
                .cmp(&scored[b].1)
                .then(scored[a].0.total_cmp(&scored[b].0))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod choice_tests {
    use super::choose;

    #[test]
    fn lowest_cv_error_wins() {
        assert_eq!(choose(&[(0.30, 3), (0.20, 5), (0.25, 7)]), 1);
    }

    #[test]
    fn near_ties_go_to_the_simplest_law() {
        // (c) is 0.02 % better than (b): not worth two more coefficients.
        assert_eq!(choose(&[(0.62, 3), (0.4809, 5), (0.4808, 7)]), 1);
        // Within 2 % of the lowest (0.47): (b) and (c); the simpler (b) wins, (a) is out.
        assert_eq!(choose(&[(0.48, 3), (0.475, 5), (0.47, 7)]), 1);
        assert_eq!(choose(&[(0.479, 3), (0.475, 5), (0.47, 7)]), 0);
    }

    #[test]
    fn failed_cv_is_never_chosen_over_a_finite_one() {
        assert_eq!(choose(&[(f64::INFINITY, 3), (0.5, 5)]), 1);
    }
}
