//! `ditkd fit` end to end: table -> points -> every candidate law (fit, CV, bootstrap) -> the
//! choice -> design formula, latency model, hold-out check -> a `LawFile`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};

use super::bootstrap::{interval90, refit, stratified};
use super::cv::{cross_validate, kfold_folds, lobo_folds, CvResult, Target};
use super::data::{
    at_common_step, base_config, base_json, curve_points, range, CurvePoint, Point, Table,
};
use super::design::{design, feasible, Candidates, Domain, Reference};
use super::fit::{fit_from, predict_ln, scales, Obs, Pin};
use super::forms::{Feat, Form};
use super::noise::{cells, lack_of_fit, pooled};
use super::{
    holdout, latency, ComputeModel, CvKind, CvPrediction, Fixed, FloorRef, LatencyModel, LawFile,
    LawFit, MeasuredShape, Shape, Skipped,
};

/// What `ditkd fit` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    pub dir: PathBuf,
    pub metric: String,
    pub mode: distill::setup::Setup,
    pub bootstrap: usize,
    pub hold_out: Option<u64>,
    pub seed: u64,
    /// Choose this law instead of the lowest CV error (`ditkd fit --law`).
    pub law: Option<Form>,
    /// Where the floor E comes from (`ditkd fit --floor`).
    pub floor: super::FloorChoice,
    /// The law's domain: only shapes whose head dim is at least this are fitted, judged and
    /// searched (`ditkd fit --min-head-dim`; None: every measured head dim).
    pub min_head_dim: Option<usize>,
    /// The compute law is fitted on the learning-curve points from this step on (`ditkd fit
    /// --min-curve-step`; None: every point): students that sit on a plateau before they learn
    /// follow no power law in compute there.
    pub min_curve_step: Option<u64>,
}

/// Fewer usable runs than this and no law is fitted.
pub const MIN_POINTS: usize = 4;

/// A freely fitted floor below this fraction of the smallest measured value sits at its bound:
/// it is dropped (fixed at 0) and the law refitted without it.
pub const FLOOR_AT_BOUND: f64 = 1e-3;

/// One law's full fit, its CV results and bootstrap refits.
struct Candidate {
    law: LawFit,
    lobo: Option<CvResult>,
    kfold: CvResult,
    draws: Vec<Vec<f64>>,
}

/// Everything the laws are fitted and judged on.
struct Data<'a> {
    /// Cells of the laws without a compute term (shapes at the fitted step) and of the compute
    /// law (shape, step).
    static_obs: &'a [Obs],
    curve_obs: &'a [Obs],
    /// Runs at the fitted step (what CV predicts).
    targets: &'a [Target],
    static_targets: &'a [Target],
    /// Budget per group (shape).
    group_budgets: &'a [u64],
    compute: Option<&'a ComputeModel>,
    floor: Option<&'a FloorRef>,
    single_points: usize,
    curve_points: usize,
}

/// Fit one law: the thorough multi-start fit, both CVs, the bootstrap, the lack-of-fit test.
/// Err(reason) = skipped.
fn fit_law(
    form: Form,
    d: &Data,
    o: &Options,
    warm: &[Vec<f64>],
) -> std::result::Result<Candidate, String> {
    let (obs, targets) = if form.uses_compute() {
        if d.compute.is_none() {
            return Err(format!(
                "no learning curves ({}): the compute term needs curve points at several steps",
                o.dir.join("curves.parquet").display()
            ));
        }
        let mut steps: Vec<u64> = d.curve_obs.iter().map(|c| c.x.ln_c.to_bits()).collect();
        steps.sort_unstable();
        steps.dedup();
        if steps.len() < 3 {
            return Err("the learning curves have fewer than 3 distinct compute values".into());
        }
        (d.curve_obs, d.targets)
    } else {
        (d.static_obs, d.static_targets)
    };
    let (mut pin, mut why) = super::floor::pin_for(form, o.floor, d.floor);
    let k_free = |pin: Pin| form.k() - usize::from(pin.is_some());
    let n = obs.len();
    if k_free(pin) + 1 > n {
        return Err(format!(
            "{} coefficients need at least {} shapes; {n} available",
            k_free(pin),
            k_free(pin) + 1
        ));
    }
    let sc = scales(obs);
    let mut f = fit_from(form, obs, &sc, warm, true, pin)
        .ok_or("no starting point converged to finite values")?;
    if pin.is_none() {
        let ymin = obs
            .iter()
            .map(|c| c.ln_y)
            .fold(f64::INFINITY, f64::min)
            .exp();
        if form.to_raw(&f.theta, &sc)[0] < FLOOR_AT_BOUND * ymin {
            pin = Some(0.0);
            why = Some(Fixed::NotIdentified);
            f = fit_from(form, obs, &sc, &[f.theta.clone()], true, pin)
                .ok_or("the refit without the floor did not converge")?;
        }
    }
    let k = k_free(pin);
    let mut raw = form.to_raw(&f.theta, &sc);
    if let Some(e) = pin {
        raw[0] = e; // exactly, not exp(ln e)
    }
    if raw.iter().any(|v| !v.is_finite()) {
        return Err(format!("coefficients overflow: {raw:?}"));
    }
    let lobo = lobo_folds(d.group_budgets)
        .and_then(|folds| cross_validate(form, obs, targets, &sc, &f.theta, pin, &folds));
    let kfold = cross_validate(
        form,
        obs,
        targets,
        &sc,
        &f.theta,
        pin,
        &kfold_folds(d.group_budgets.len(), o.seed),
    )
    .ok_or("k-fold refits failed")?;
    let draws = refit(
        form,
        obs,
        &sc,
        &f.theta,
        pin,
        &stratified(d.group_budgets, o.bootstrap, o.seed),
    );
    let first_free = usize::from(pin.is_some());
    let intervals = form
        .coef_names()
        .iter()
        .enumerate()
        .skip(first_free)
        .filter_map(|(j, name)| {
            interval90(&draws.iter().map(|d| d[j]).collect::<Vec<_>>())
                .map(|iv| (name.to_string(), iv))
        })
        .collect();
    let pred: Vec<f64> = obs
        .iter()
        .map(|c| predict_ln(form, &f.theta, &c.x, &sc))
        .collect();
    let lof = lack_of_fit(obs, &pred, k);
    // Over single runs (curve points): the cells' weighted misses plus the seeds' scatter.
    let rss_runs = f.rss + obs.iter().map(|c| c.ss).sum::<f64>();
    let points = if form.uses_compute() {
        d.curve_points
    } else {
        d.single_points
    };
    let rss = rss_runs.max(f64::MIN_POSITIVE); // a perfect fit would make the AIC −∞
    let law = LawFit {
        name: form,
        formula: form.formula().into(),
        coef: form.to_map(&raw),
        intervals,
        fixed: why
            .map(|w| [("E".to_string(), w)].into_iter().collect())
            .unwrap_or_default(),
        rss: rss_runs,
        aic: points as f64 * (rss / points.max(1) as f64).ln() + 2.0 * k as f64,
        cv_lobo_rmse: lobo.as_ref().map(|c| c.rmse),
        cv_kfold_rmse: kfold.rmse,
        k,
        n: points,
        cells: n,
        lack_of_fit: lof,
        compute: if form.uses_compute() {
            d.compute.cloned()
        } else {
            None
        },
    };
    Ok(Candidate {
        law,
        lobo,
        kfold,
        draws,
    })
}

/// Training FLOPs per step as c0 + c1·(student forward FLOPs), least squares over the curve
/// points (exact when they follow `DistillConfig::train_flops`). None without curves, or when
/// every curve comes from one student size (c1 is then not identified).
fn compute_model(curve: &[CurvePoint], base: &dit::DitConfig, step: u64) -> Option<ComputeModel> {
    let xy: Vec<(f64, f64)> = curve
        .iter()
        .map(|c| {
            (
                c.shape.config(base).forward_flops() as f64,
                c.train_flops / c.step as f64,
            )
        })
        .collect();
    let n = xy.len() as f64;
    if xy.len() < 2 {
        return None;
    }
    let (mx, my) = (
        xy.iter().map(|p| p.0).sum::<f64>() / n,
        xy.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = xy.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if !(sxx > 0.0) {
        return None;
    }
    let c1 = xy.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / sxx;
    let c0 = my - c1 * mx;
    Some(ComputeModel {
        per_step: [c0, c1],
        step,
        max_step: curve.iter().map(|c| c.step).max().unwrap_or(step),
        base: base.clone(),
    })
}

/// Run the whole fit. Errors name the table file. `--floor auto` fits with each floor it can and
/// keeps the one whose chosen law cross-validates best across budgets (see `floor`).
pub fn fit_sweep(o: &Options) -> Result<LawFile> {
    if o.floor != super::FloorChoice::Auto {
        return fit_one(o);
    }
    let mut fits: Vec<(super::FloorChoice, LawFile)> = Vec::new();
    let mut skipped = Vec::new();
    for c in super::FloorChoice::AUTO {
        match fit_one(&Options {
            floor: c,
            ..o.clone()
        }) {
            Ok(l) => fits.push((c, l)),
            Err(e) if c == super::FloorChoice::Teacher => skipped.push(format!("teacher: {e:#}")),
            Err(e) => return Err(e),
        }
    }
    let lobo = |l: &LawFile| l.chosen().cv_rmse();
    let best = fits
        .iter()
        .map(|(_, l)| lobo(l))
        .fold(f64::INFINITY, f64::min);
    let scores: Vec<String> = fits
        .iter()
        .map(|(c, l)| format!("{c} {:.4} (law ({}))", lobo(l), l.chosen))
        .collect();
    // The first (in `AUTO`'s order) within 2 % of the lowest error.
    let i = fits
        .iter()
        .position(|(_, l)| lobo(l) <= best * (1.0 + CV_TIE))
        .unwrap_or(0);
    let (c, mut law) = fits.swap_remove(i);
    law.notes.insert(
        0,
        format!(
            "--floor auto: chose `{c}`, the lowest leave-one-budget-out error of the chosen law (within 2 %, in the order data, teacher, free){}: {}{}",
            if o.hold_out.is_some() {
                ", judged without the held-out budget"
            } else {
                ""
            },
            scores.join(", "),
            if skipped.is_empty() {
                String::new()
            } else {
                format!("; not tried: {}", skipped.join("; "))
            }
        ),
    );
    Ok(law)
}

fn fit_one(o: &Options) -> Result<LawFile> {
    let table = Table::load(&o.dir)?;
    let p = table.path.display().to_string();
    let (all, copies) = table.points_with_copies(&o.metric, o.mode)?;
    // No law for students that have not left chance: it would describe the evaluation noise.
    let (base0, _, _) = base_config(&o.dir, &table, &all);
    let untrained =
        distill::reference::Reference::load(&o.dir).and_then(|r| r.untrained.map(|m| m.fid_proxy));
    super::guard::check_learned(&table, o.mode, base0.num_classes, untrained)
        .map_err(|e| anyhow::Error::new(e).context(p.clone()))?;

    let what = format!(
        "status ok, mode `{}`, finite positive `{}`",
        o.mode, o.metric
    );
    // The law's domain: shapes below the head dim asked for are left out of everything.
    let mut domain_note = None;
    let all = match o.min_head_dim {
        None => all,
        Some(h) => {
            let (keep, out): (Vec<Point>, Vec<Point>) =
                all.into_iter().partition(|q| q.shape.head_dim() >= h);
            if !out.is_empty() {
                let mut shapes: Vec<String> = out
                    .iter()
                    .map(|q| {
                        format!(
                            "{} at {} (head dim {})",
                            super::query::label(q.shape.depth, q.shape.width, q.shape.heads),
                            crate::fmt::si(q.budget as f64),
                            q.shape.head_dim()
                        )
                    })
                    .collect();
                shapes.sort();
                shapes.dedup();
                domain_note = Some(format!(
                    "--min-head-dim {h}: {} runs outside the law's domain left out of the fit, its checks and its design search: {}",
                    out.len(),
                    shapes.join(", ")
                ));
            }
            keep
        }
    };
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
    let mut notes: Vec<String> = domain_note.into_iter().collect();
    if !copies.is_empty() {
        notes.push(format!(
            "{} runs repeat another run's experiment (same budget, shape and seed, e.g. a race's run and an audit's copy merged into one table) and count once, the longest kept: {}",
            copies.len(),
            copies.join(", ")
        ));
    }

    // The rows: the laws without a compute term at one step count, the compute law on every
    // learning-curve point of every fitted run.
    let (fit_step, at_step, left_out) = at_common_step(&train);
    // The held-out budget's shapes measured only at fewer steps (pruned by a race).
    let (held, held_short): (Vec<Point>, Vec<Point>) = held
        .into_iter()
        .partition(|q| fit_step.is_none() || q.steps == fit_step);
    let pruned: Vec<Shape> = held_short.iter().map(|q| q.shape).collect();
    if let (Some(b), true) = (o.hold_out, held.is_empty()) {
        let mut at: Vec<u64> = held_short.iter().filter_map(|q| q.steps).collect();
        at.sort_unstable();
        at.dedup();
        bail!(
            "{p}: --hold-out {b}: none of its {} runs reached the fitted step {} (they stopped at {at:?} steps): let the budget's runs finish, or fit without --hold-out",
            held_short.len(),
            fit_step.unwrap_or(0)
        );
    }
    if left_out > 0 {
        notes.push(format!(
            "{left_out} of {} runs stopped at another step count than {} (a racing sweep's pruned shapes): the laws without a compute term leave them out; the compute law uses their learning curves",
            train.len(),
            fit_step.unwrap_or(0)
        ));
    }
    if at_step.len() < MIN_POINTS {
        bail!(
            "{p}: {} usable runs at {} steps ({what}); a law needs at least {MIN_POINTS}",
            at_step.len(),
            fit_step.unwrap_or(0)
        );
    }
    let (base, base_source, base_notes) = base_config(&o.dir, &table, &train);
    notes.extend(base_notes);
    let mut curve = curve_points(&o.dir, &o.metric, &train)?;
    if let Some(s) = o.min_curve_step {
        let before = curve.len();
        curve.retain(|c| c.step >= s);
        if curve.len() < before {
            notes.push(format!(
                "--min-curve-step {s}: the compute law is fitted on the {} learning-curve points from step {s} on ({} earlier points left out)",
                curve.len(),
                before - curve.len()
            ));
        }
    }
    let compute = fit_step
        .or_else(|| curve.iter().map(|c| c.step).max())
        .and_then(|st| compute_model(&curve, &base, st));
    let floor = super::floor::measured(&o.dir, &o.metric, o.floor).map_err(anyhow::Error::msg)?;

    // Groups: one per (budget, shape).
    let key = |q: &Point| (q.budget, q.shape.depth, q.shape.width, q.shape.heads);
    let mut groups: Vec<((u64, usize, usize, usize), Shape)> = Vec::new();
    for q in &train {
        if !groups.iter().any(|g| g.0 == key(q)) {
            groups.push((key(q), q.shape));
        }
    }
    let group_of = |k: (u64, usize, usize, usize)| groups.iter().position(|g| g.0 == k);
    let group_budgets: Vec<u64> = groups.iter().map(|g| g.0 .0).collect();
    let feat_at_step = |s: &Shape| match (&compute, fit_step) {
        (Some(c), Some(st)) => s.feat().at(st as f64, c.flops(s, st as f64)),
        _ => s.feat(),
    };
    let items: Vec<(usize, usize, Feat, f64)> = at_step
        .iter()
        .filter_map(|q| {
            let g = group_of(key(q))?;
            Some((g, g, feat_at_step(&q.shape), q.y.ln()))
        })
        .collect();
    let static_obs = cells(&items);
    let targets: Vec<Target> = items
        .iter()
        .map(|(_, g, x, y)| Target {
            x: *x,
            ln_y: *y,
            group: *g,
        })
        .collect();
    let static_targets: Vec<Target> = targets
        .iter()
        .map(|t| Target {
            x: t.x.static_only(),
            ..*t
        })
        .collect();
    let curve_items: Vec<((usize, u64), usize, Feat, f64)> = curve
        .iter()
        .filter_map(|c| {
            let g = group_of((c.budget, c.shape.depth, c.shape.width, c.shape.heads))?;
            Some((
                (g, c.step),
                g,
                c.shape.feat().at(c.step as f64, c.train_flops),
                c.y.ln(),
            ))
        })
        .collect();
    let curve_obs = cells(&curve_items);
    let noise = pooled(&static_obs);
    match &noise {
        Some(nz) => notes.push(format!(
            "seed noise: pooled within-shape std of ln {} = {:.4} ({} dof, {} of {} shapes with two or more seeds)",
            o.metric, nz.sigma, nz.dof, nz.replicated, nz.cells
        )),
        None => notes.push("single seeds: no seed noise to pool, so no lack-of-fit test and P(best) leans on the CV error".into()),
    }
    let mut distinct = group_budgets.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 2 {
        notes.push("a single budget: leave-one-budget-out CV is impossible, the law is chosen by k-fold CV".into());
    }
    let rows = format!(
        "laws without a compute term: the {} runs at {}, as {} shape means weighted by their seed counts; {}",
        at_step.len(),
        fit_step.map_or("their final step".into(), |s| format!("step {s}")),
        static_obs.len(),
        if curve.is_empty() {
            "no learning curves (curves.parquet), so no compute law".to_string()
        } else {
            format!(
                "compute law: {} learning-curve points of {} runs, as {} (shape, step) means",
                curve.len(),
                {
                    let mut ids: Vec<&str> = curve.iter().map(|c| c.run_id.as_str()).collect();
                    ids.sort_unstable();
                    ids.dedup();
                    ids.len()
                },
                curve_obs.len()
            )
        }
    );
    let data = Data {
        static_obs: &static_obs,
        curve_obs: &curve_obs,
        targets: &targets,
        static_targets: &static_targets,
        group_budgets: &group_budgets,
        compute: compute.as_ref(),
        floor: floor.as_ref(),
        single_points: at_step.len(),
        curve_points: curve.len(),
    };

    let ygeo = (static_obs.iter().map(|q| q.w * q.ln_y).sum::<f64>()
        / static_obs.iter().map(|q| q.w).sum::<f64>())
    .exp();
    let mut cands: Vec<Candidate> = Vec::new();
    let mut skipped = Vec::new();
    for &form in Form::ALL {
        // (c) nests (b): also start it from (b)'s optimum plus a small head term, so it can
        // never fit worse than (b) merely for want of a good start; (f) likewise from (d) plus a
        // small compute term. The inner law and the starting values of the extra coefficients.
        let nested: Option<(Form, Vec<[f64; 2]>)> = match form {
            Form::C => Some((
                Form::B,
                [-0.7, 0.0, 0.7].map(|lh| [(0.01 * ygeo).ln(), lh]).to_vec(),
            )),
            Form::F => Some((
                Form::D,
                [0.3f64, 1.0].map(|b| [(0.1 * ygeo).ln(), b.ln()]).to_vec(),
            )),
            // (g) is not nested in a fitted law: its grid starts cover it.
            Form::A | Form::B | Form::D | Form::E | Form::G => None,
        };
        let warm: Vec<Vec<f64>> = match nested
            .and_then(|(n, tails)| cands.iter().find(|c| c.law.name == n).map(|b| (b, tails)))
        {
            Some((b, tails)) => {
                let inner = b.law.form();
                let obs = if form.uses_compute() {
                    &curve_obs
                } else {
                    &static_obs
                };
                let th = inner.to_theta(&inner.from_map(&b.law.coef), &scales(obs));
                tails
                    .iter()
                    .map(|t| th.iter().copied().chain(*t).collect())
                    .collect()
            }
            None => Vec::new(),
        };
        match fit_law(form, &data, o, &warm) {
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
    let best = match o.law {
        None => best,
        Some(f) => match cands.iter().position(|c| c.law.name == f) {
            Some(i) => {
                if i != best {
                    notes.push(format!(
                        "law ({f}) chosen by --law; the lowest CV error is law ({})'s",
                        cands[best].law.name
                    ));
                }
                i
            }
            None => bail!(
                "{p}: --law {f}: that law was not fitted ({})",
                skipped
                    .iter()
                    .find(|s| s.name == f)
                    .map_or("unknown".into(), |s| s.reason.clone())
            ),
        },
    };
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
    if let (Some(l), Some(nz)) = (&chosen.law.lack_of_fit, &noise) {
        notes.push(format!(
            "lack of fit of the chosen law ({}): F({}, {}) = {:.2}, p = {:.2e}{}; its {} CV error {:.4} against the seed noise {:.4}",
            chosen.law.name,
            l.df_lof,
            l.df_pe,
            l.f,
            l.p,
            if l.rejects {
                format!(": it misses the shapes by more than the seed noise (about {:.3} in ln beyond it)", l.sigma_between)
            } else {
                ": within the seed noise".into()
            },
            cv_kind.describe(),
            chosen_cv.rmse,
            nz.sigma
        ));
    }
    let cv_predictions = at_step
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
    let heads_range = range(&train, |q| q.shape.heads);
    // The design keeps to the measured depth, head count and head_dim ranges (`Domain`): a law
    // fitted on depths 2..8 cannot vouch for depth 1, whatever its exponent says.
    let domain = Domain {
        params: params_range,
        depth: depth_range,
        width: width_range,
        head_dim: head_dim_range,
        heads: heads_range,
    };
    let reference = Reference::from_ranges(depth_range, width_range, head_dim_range);
    let candidates = Candidates::for_law(feasible(&base), &chosen.law);
    let design = design(&chosen.law, &chosen.draws, &candidates, &domain, &reference);
    let form = chosen.law.form();
    let bootstrap: Vec<BTreeMap<String, f64>> =
        chosen.draws.iter().map(|d| form.to_map(d)).collect();
    let (sigma, tau, _) = super::rank::sigma_tau(
        noise.as_ref(),
        chosen.law.lack_of_fit.as_ref(),
        chosen.law.cv_rmse(),
    );
    let holdout = o.hold_out.map(|b| {
        // The held-out pick keeps to the design's domain too (a params-only law ranks every shape
        // of the band alike, and must not answer with a depth nobody measured).
        let in_domain: Vec<_> = candidates
            .shapes
            .iter()
            .filter(|s| domain.allows(s, b as f64))
            .copied()
            .collect();
        let u = holdout::Uncertainty {
            draws: &bootstrap,
            sigma,
            tau,
            seed: o.seed ^ b,
        };
        holdout::evaluate(&chosen.law, &held, &pruned, &in_domain, b, &reference, &u)
    });
    let measured = static_obs
        .iter()
        .map(|c| {
            let (k, s) = groups[c.group];
            MeasuredShape {
                budget: k.0,
                depth: s.depth,
                width: s.width,
                heads: s.heads,
                params: s.params,
                seeds: c.w as usize,
                mean_ln: c.ln_y,
            }
        })
        .collect();

    Ok(LawFile {
        metric: o.metric.clone(),
        mode: o.mode,
        table: p,
        table_hash: table.hash.clone(),
        n_runs: at_step.len(),
        budgets: distinct,
        held_out_budget: o.hold_out,
        params_range,
        depth_range,
        width_range,
        head_dim_range,
        heads_range,
        base: base_json(&base),
        base_source,
        chosen: chosen.law.name,
        skipped,
        cv_kind,
        cv_predictions,
        design,
        latency_model: match Table::load_file(&o.dir.join("latency.parquet")) {
            Ok(quiet) => latency::fit(&quiet, o.mode).map(|m| LatencyModel {
                source: "quiet pass (latency.parquet)".into(),
                ..m
            }),
            Err(_) => latency::fit(&table, o.mode).map(|m| LatencyModel {
                source: "in-training timings (runs.parquet; run `ditkd latency` for quiet ones)"
                    .into(),
                ..m
            }),
        },
        holdout,
        bootstrap,
        seed: o.seed,
        notes,
        fit_step,
        rows,
        noise,
        floor,
        floor_choice: o.floor,
        min_head_dim: o.min_head_dim,
        min_curve_step: o.min_curve_step,
        measured,
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
