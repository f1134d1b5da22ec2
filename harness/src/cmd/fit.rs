//! `ditkd fit`: fit the candidate design laws to a sweep's table and save them, with the chosen
//! one marked, as law.json (see `harness::law`).

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::law::pipeline::{fit_sweep, Options};
use crate::law::{LawFile, ScoredShape};

pub struct Args {
    pub dir: PathBuf,
    pub metric: String,
    pub mode: distill::setup::Setup,
    pub bootstrap: usize,
    pub hold_out: Option<String>,
    pub out: Option<PathBuf>,
    pub seed: u64,
    /// Choose this law instead of the lowest CV error.
    pub law: Option<crate::law::Form>,
    /// Where the floor E comes from.
    pub floor: crate::law::FloorChoice,
    /// Fit only shapes with at least this head dim.
    pub min_head_dim: Option<usize>,
    /// Fit the compute law on curve points from this step on.
    pub min_curve_step: Option<u64>,
}

pub fn run(a: Args) -> Result<()> {
    anyhow::ensure!(
        a.bootstrap <= 100_000,
        "--bootstrap: at most 100,000 resamples (got {})",
        a.bootstrap
    );
    let hold_out = match &a.hold_out {
        Some(s) => Some(
            crate::spec::parse_count(s).map_err(|e| anyhow::anyhow!("--hold-out: {e}"))? as u64,
        ),
        None => None,
    };
    let law = fit_sweep(&Options {
        dir: a.dir.clone(),
        metric: a.metric,
        mode: a.mode,
        bootstrap: a.bootstrap,
        hold_out,
        seed: a.seed,
        law: a.law,
        floor: a.floor,
        min_head_dim: a.min_head_dim,
        min_curve_step: a.min_curve_step,
    })?;
    // A held-out fit never replaces the sweep's law: by default it lands beside it, where
    // `ditkd report` picks it up as the held-out check.
    // Named from the parsed budget, so `400k`, `400000` and `0.4M` all write law-holdout-400k.json.
    // Each setup keeps its own law: law.json is output KD's, law-<setup>.json another setup's.
    let out = a.out.unwrap_or_else(|| match (hold_out, a.mode) {
        (Some(b), distill::setup::Setup::Kd) => a
            .dir
            .join(format!("law-holdout-{}.json", crate::fmt::si(b as f64))),
        (Some(b), m) => a
            .dir
            .join(format!("law-{m}-holdout-{}.json", crate::fmt::si(b as f64))),
        (None, m) => crate::law::setup_law_path(&a.dir, m),
    });
    law.save(&out)
        .with_context(|| format!("writing {}", out.display()))?;
    print!("{}", summary(&law));
    println!("wrote {}", out.display());
    Ok(())
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.4}"))
}

fn shape(s: &ScoredShape) -> String {
    format!(
        "d={} w={} h={} (head_dim {}, {} params)",
        s.depth, s.width, s.heads, s.head_dim, s.params
    )
}

/// The human summary: the laws, the chosen one's coefficients, the design formula, the checks.
pub fn summary(l: &LawFile) -> String {
    let mut s = String::new();
    let mut line = |t: String| {
        s.push_str(&t);
        s.push('\n');
    };
    line(format!(
        "{} ({} mode): {} runs, budgets {:?}, params {}..{}, table {}",
        l.metric, l.mode, l.n_runs, l.budgets, l.params_range[0], l.params_range[1], l.table
    ));
    line(format!("rows: {}", l.rows));
    match &l.noise {
        Some(n) => line(format!(
            "seed noise: σ = {:.4} in ln {} ({} dof over {} shapes with 2+ seeds): no law can predict a run better",
            n.sigma, l.metric, n.dof, n.replicated
        )),
        None => line("seed noise: unknown (single seeds)".into()),
    }
    match &l.floor {
        Some(f) => line(format!(
            "floor E fixed at {:.4} ± {:.4} from {}",
            f.value, f.std, f.source
        )),
        None => line(format!(
            "floor E: --floor {} (no measured value pinned)",
            l.floor_choice
        )),
    }
    line(format!(
        "{:<6}{:>3}{:>6}{:>12}{:>10}{:>11}{:>11}{:>18}  formula",
        "law", "k", "cells", "RSS", "AIC", "LOBO CV", "k-fold CV", "lack of fit p"
    ));
    for f in &l.laws {
        let mark = if f.name == l.chosen { " *" } else { "  " };
        line(format!(
            "{:<6}{:>3}{:>6}{:>12.5}{:>10.2}{:>11}{:>11.4}{:>18}  {}{}",
            format!("{}{mark}", f.name),
            f.k,
            f.cells,
            f.rss,
            f.aic,
            opt(f.cv_lobo_rmse),
            f.cv_kfold_rmse,
            f.lack_of_fit.as_ref().map_or("-".into(), |t| format!(
                "F({},{})={:.2} p={:.1e}",
                t.df_lof, t.df_pe, t.f, t.p
            )),
            f.formula,
            if f.fixed.is_empty() {
                String::new()
            } else {
                format!(
                    " [{}]",
                    f.fixed
                        .iter()
                        .map(|(k, w)| format!("{k} {}", w.describe()))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        ));
    }
    for sk in &l.skipped {
        line(format!("{:<6} skipped: {}", sk.name, sk.reason));
    }
    let c = l.chosen();
    let unidentified = l.unidentified();
    if unidentified.is_empty() {
        line(format!(
            "chosen: ({}) {}  — lowest {} CV error, RMSE {:.4} on ln {} ≈ ±{:.1} %",
            c.name,
            c.formula,
            l.cv_kind.describe(),
            c.cv_rmse(),
            l.metric,
            100.0 * c.typical_error()
        ));
    } else {
        // No error statement for a law the data do not pin down.
        line(format!(
            "chosen: ({}) {}  — lowest {} CV error, but NOT IDENTIFIED: {}",
            c.name,
            c.formula,
            l.cv_kind.describe(),
            unidentified.join("; ")
        ));
    }
    // In the formula's order (the map is alphabetical).
    let names: Vec<String> = c
        .form()
        .coef_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    for k in &names {
        let v = c.coef.get(k).copied().unwrap_or(f64::NAN);
        let iv = match (c.intervals.get(k), c.fixed.get(k)) {
            (_, Some(w)) => format!("   {}", w.describe()),
            (Some([lo, hi]), None) => format!("   90% [{lo:.4e}, {hi:.4e}]"),
            (None, None) => String::new(),
        };
        line(format!("  {k:<6} = {v:.4e}{iv}"));
    }
    if let Some(t) = &c.lack_of_fit {
        line(format!(
            "lack of fit: F({}, {}) = {:.3}, p = {:.3e}: {}",
            t.df_lof,
            t.df_pe,
            t.f,
            t.p,
            if t.rejects {
                format!("the law misses the shapes by more than the seed noise (τ ≈ {:.4} in ln beyond it)", t.sigma_between)
            } else {
                "the law's misses are within the seed noise".into()
            }
        ));
    }
    line(format!("design: {}", l.design.formula));
    line(format!(
        "  {:>10}{:>7}{:>7}{:>7}{:>10}{:>10}{:>11}",
        "budget", "depth", "width", "heads", "head_dim", "params", "predicted"
    ));
    for i in 0..l.design.budgets.len() {
        let d = &l.design;
        line(format!(
            "  {:>10}{:>7}{:>7}{:>7}{:>10}{:>10}{:>11.4}",
            d.budgets[i],
            d.depth[i],
            d.width[i],
            d.heads[i],
            d.head_dim[i],
            d.params[i],
            d.predicted[i]
        ));
    }
    match &l.latency_model {
        Some(m) => line(format!(
            "latency: {} with c = [{:.3}, {:.4}, {:.3}], R² {:.3} ({} runs)",
            m.formula, m.coef[0], m.coef[1], m.coef[2], m.r2, m.n
        )),
        None => line("latency: no model (fewer than 4 ok runs with a measured latency)".into()),
    }
    if let Some(h) = &l.holdout {
        line(format!(
            "hold-out budget {}: {} runs, RMSE(ln) {:.4}, mean abs error {:.1} %",
            h.budget, h.n_runs, h.rmse_log, h.mape
        ));
        let r = &h.recommended;
        line(format!(
            "  law's optimum in [0.9B, 1.1B]: {} predicted {}, measured {}{}",
            shape(r),
            opt(r.predicted),
            opt(r.measured),
            h.recommended_within_5pct
                .map_or(" (not run)".into(), |w| format!(
                    " ({} 5 % of the best)",
                    if w { "within" } else { "not within" }
                ))
        ));
        line(format!(
            "  best predicted among the measured: {} measured {}",
            shape(&h.best_predicted_measured),
            opt(h.best_predicted_measured.measured)
        ));
        line(format!(
            "  best measured: {} measured {}",
            shape(&h.best_measured),
            opt(h.best_measured.measured)
        ));
        line(format!(
            "  within 5 % of the best measured: {}",
            if h.within_5pct { "yes" } else { "no" }
        ));
        line(format!(
            "  coverage of the law's 90 % intervals: {:.0} % of runs (one-run interval), {:.0} % of shapes (seed-mean interval); σ {:.4}, τ {:.4} in ln",
            100.0 * h.coverage90_runs,
            100.0 * h.coverage90_shapes,
            h.sigma,
            h.tau
        ));
        let verdict = |v: Option<bool>| match v {
            Some(true) => "in",
            Some(false) => "NOT in",
            None => "not measured, so not judged against",
        };
        line(format!(
            "  measured tie set (not separable from the best at 90 % by the seeds): {}; the law's recommended shape is {} it, its best-predicted measured shape {} it",
            h.tie_set.join(", "),
            verdict(h.recommended_in_tie_set),
            verdict(h.best_predicted_in_tie_set)
        ));
    }
    for n in &l.notes {
        line(format!("note: {n}"));
    }
    s
}
