//! `ditkd best --budget N`: the law's predicted optimum shape under a parameter budget.

use std::path::PathBuf;

use anyhow::{anyhow, Result};

use crate::law::query::{best, label, Answer, Pick, Prediction};
use crate::law::{law_path, At, LawFile};

/// What `ditkd best` was asked.
pub struct Args {
    pub budget: String,
    pub results: PathBuf,
    pub max_latency_ms: Option<f64>,
    pub json: bool,
    pub force: bool,
    pub steps: Option<String>,
    pub train_flops: Option<f64>,
    /// The distillation setup whose law answers.
    pub setup: distill::setup::Setup,
}

pub fn run(a: Args) -> Result<()> {
    let Args {
        budget,
        results,
        max_latency_ms,
        json,
        force,
        steps,
        train_flops,
        setup,
    } = a;
    // A results directory holds one law per setup; a law file given directly must be that setup's.
    let law_file = if results.is_dir() {
        crate::law::setup_law_path(&results, setup)
    } else {
        law_path(&results)
    };
    if results.is_dir() && !law_file.exists() && setup != distill::setup::Setup::Kd {
        anyhow::bail!(
            "{}: no law for setup `{setup}` (fit it with `ditkd fit {} --mode {setup}`)",
            law_file.display(),
            results.display()
        );
    }
    let results = results.as_path();
    let b = crate::spec::parse_count(&budget).map_err(|e| anyhow!("--budget: {e}"))? as u64;
    let ask = match (steps, train_flops) {
        (Some(s), _) => {
            let n = crate::spec::parse_count(&s).map_err(|e| anyhow!("--steps: {e}"))?;
            anyhow::ensure!(n >= 1, "--steps: must be at least 1 (got {s})");
            Some(At::Steps(n as f64))
        }
        (None, Some(f)) => {
            anyhow::ensure!(
                f.is_finite() && f > 0.0,
                "--train-flops: must be a finite number of FLOPs > 0 (got {f})"
            );
            Some(At::Flops(f))
        }
        (None, None) => None,
    };
    if let Some(l) = max_latency_ms {
        anyhow::ensure!(
            l.is_finite() && l > 0.0,
            "--max-latency-ms: must be a finite number of milliseconds > 0 (got {l})"
        );
    }
    let law = LawFile::load(&law_file)?;
    anyhow::ensure!(
        law.mode == setup,
        "{}: this law was fitted on the `{}` runs, not `{setup}` (--setup)",
        law_file.display(),
        law.mode
    );
    let unidentified = law.unidentified();
    if !unidentified.is_empty() && !force {
        anyhow::bail!(
            "{}: the fitted law is not identified ({}): its recommendation would be noise. Measure more (seeds, steps, budgets) and refit, or pass --force to see it anyway",
            law_file.display(),
            unidentified.join("; ")
        );
    }
    let a = best(&law, &law_file, results, b, max_latency_ms, ask)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&a)?);
    } else {
        print!("{}", text(&a));
    }
    Ok(())
}

/// Contenders listed in the text (ties and measured shapes always; `--json` has them all).
const SHOWN: usize = 8;

fn row(p: &Pick) -> String {
    let iv = p
        .interval
        .map_or("-".into(), |[lo, hi]| format!("[{lo:.4}, {hi:.4}]"));
    let lat = p.latency_ms.map_or("-".into(), |l| format!("{l:.1}"));
    let pb = p.p_best.map_or("-".into(), |v| format!("{v:.2}"));
    format!(
        "{:>6}{:>7}{:>7}{:>10}{:>11}{:>11.4}  {:<22}{:>10}{:>9}",
        p.depth, p.width, p.heads, p.head_dim, p.params, p.predicted, iv, lat, pb
    )
}

fn at(p: &Prediction) -> String {
    let flops = p
        .train_flops
        .map_or(String::new(), |f| format!(" ({f:.3e} training FLOPs)"));
    match p.at {
        At::Steps(s) => format!("after {s} steps{flops}"),
        At::Flops(f) => format!("at {f:.3e} training FLOPs"),
        At::Converged => "at convergence".into(),
    }
}

fn prediction(metric: &str, p: &Prediction) -> String {
    let iv = |v: Option<[f64; 2]>| v.map_or("-".into(), |[lo, hi]| format!("[{lo:.4}, {hi:.4}]"));
    format!(
        "predicted {metric} {}: {:.4}, 90 % interval of the shape's mean {}, of one more run {}\n",
        at(p),
        p.predicted,
        iv(p.interval),
        iv(p.run_interval)
    )
}

fn text(a: &Answer) -> String {
    let mut s = format!(
        "best shape for {} params ({} mode, law ({}): {}):\n",
        a.budget, a.mode, a.law, a.formula
    );
    s += &format!(
        "{:>6}{:>7}{:>7}{:>10}{:>11}{:>11}  {:<22}{:>10}{:>9}\n",
        "depth",
        "width",
        "heads",
        "head_dim",
        "params",
        a.metric,
        "90% law interval",
        "ms/image",
        "P(best)"
    );
    let law_optimum = a
        .alternatives
        .iter()
        .all(|p| p.predicted >= a.best.predicted);
    s += &format!(
        "{}   <- {}\n",
        row(&a.best),
        if law_optimum {
            "predicted optimum"
        } else {
            "pick (most likely best with its seeds; the law's optimum is below)"
        }
    );
    for p in &a.alternatives {
        s += &format!("{}\n", row(p));
    }
    s += &format!(
        "how sure: the law's {} CV error is about ±{:.1} % per run\n",
        a.cv_kind.describe(),
        a.typical_error_pct
    );
    if let Some(p) = &a.prediction {
        s += &prediction(&a.metric, p);
    }
    if let Some(p) = &a.converged {
        s += &prediction(&a.metric, p);
    }
    s += &format!(
        "P(best) among the top {} shapes, from the law's bootstrap draws, the shapes' spread about the law (τ = {:.4} in ln) and the seed noise (σ = {:.4}; {}){}:\n",
        a.contenders.len(),
        a.tau,
        a.sigma,
        a.noise_source,
        a.lack_of_fit_p
            .map_or(String::new(), |p| format!("; lack-of-fit p = {p:.2e}"))
    );
    s += &format!(
        "  {:<14}{:>10}{:>11}{:>9}{:>13}{:>9}{:>7}{:>12}\n",
        "shape", "params", "predicted", "P(best)", "P(beats it)", "gap %", "seeds", "more seeds"
    );
    let shown = a
        .contenders
        .iter()
        .enumerate()
        .filter(|(i, c)| *i < SHOWN || c.tie || c.seeds > 0);
    for (i, c) in shown {
        let more = match (i, c.more_seeds) {
            (0, _) => "(pick)".to_string(),
            (_, Some(m)) => m.to_string(),
            (_, None) => format!(">{}", crate::law::rank::MAX_SEEDS),
        };
        s += &format!(
            "  {:<14}{:>10}{:>11.4}{:>9.3}{:>13}{:>9}{:>7}{:>12}{}\n",
            label(c.depth, c.width, c.heads),
            c.params,
            c.predicted,
            c.p_best,
            if i == 0 {
                "-".into()
            } else {
                format!("{:.3}", c.p_beats_pick)
            },
            if i == 0 {
                "-".into()
            } else {
                format!("{:+.1}", c.gap_pct)
            },
            c.seeds,
            more,
            if c.tie { "  tie" } else { "" }
        );
    }
    if a.tie.is_empty() {
        s += "tie set: none, the pick beats every other contender at 90 %\n";
    } else {
        s += &format!(
            "tie set (not separable from the pick at 90 %): {}\n",
            a.tie.join(", ")
        );
    }
    if let Some(r) = &a.resolve {
        s += &format!("{r}\n");
    }
    match &a.best_measured {
        Some(m) => {
            s += &format!(
                "best measured within ±10 %: depth={} width={} heads={} ({} params): {} = {:.4} (mean of {} seed{}; law predicts {:.4}) [{}]\n",
                m.depth,
                m.width,
                m.heads,
                m.params,
                a.metric,
                m.measured,
                m.seeds,
                if m.seeds == 1 { "" } else { "s" },
                m.predicted,
                m.run_ids.join(", ")
            )
        }
        None => s += "no measured run within ±10 % of the budget\n",
    }
    for w in &a.warnings {
        s += &format!("warning: {w}\n");
    }
    s
}
