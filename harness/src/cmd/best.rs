//! `ditkd best --budget N`: the law's predicted optimum shape under a parameter budget.

use std::path::Path;

use anyhow::{anyhow, Result};

use crate::law::query::{best, Answer, Pick};
use crate::law::{law_path, LawFile};

pub fn run(
    budget: &str,
    results: &Path,
    max_latency_ms: Option<f64>,
    json: bool,
    force: bool,
) -> Result<()> {
    let b = crate::spec::parse_count(budget).map_err(|e| anyhow!("--budget: {e}"))? as u64;
    if let Some(l) = max_latency_ms {
        anyhow::ensure!(
            l.is_finite() && l > 0.0,
            "--max-latency-ms: must be a finite number of milliseconds > 0 (got {l})"
        );
    }
    let law = LawFile::load(results)?;
    let unidentified = law.unidentified();
    if !unidentified.is_empty() && !force {
        anyhow::bail!(
            "{}: the fitted law is not identified ({}): its recommendation would be noise. Measure more (seeds, steps, budgets) and refit, or pass --force to see it anyway",
            crate::law::law_path(results).display(),
            unidentified.join("; ")
        );
    }
    let a = best(&law, &law_path(results), results, b, max_latency_ms)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&a)?);
    } else {
        print!("{}", text(&a));
    }
    Ok(())
}

fn row(p: &Pick) -> String {
    let iv = p
        .interval
        .map_or("-".into(), |[lo, hi]| format!("[{lo:.4}, {hi:.4}]"));
    let lat = p.latency_ms.map_or("-".into(), |l| format!("{l:.1}"));
    format!(
        "{:>6}{:>7}{:>7}{:>10}{:>11}{:>11.4}  {:<22}{:>10}",
        p.depth, p.width, p.heads, p.head_dim, p.params, p.predicted, iv, lat
    )
}

fn text(a: &Answer) -> String {
    let mut s = format!(
        "best shape for {} params ({} mode, law ({}): {}):\n",
        a.budget, a.mode, a.law, a.formula
    );
    s += &format!(
        "{:>6}{:>7}{:>7}{:>10}{:>11}{:>11}  {:<22}{:>10}\n",
        "depth", "width", "heads", "head_dim", "params", a.metric, "90% interval", "ms/image"
    );
    s += &format!("{}   <- predicted optimum\n", row(&a.best));
    for p in &a.alternatives {
        s += &format!("{}\n", row(p));
    }
    s += &format!(
        "how sure: the law's {} CV error is about ±{:.1} % per run\n",
        a.cv_kind.describe(),
        a.typical_error_pct
    );
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
