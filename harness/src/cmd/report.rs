//! `ditkd report`: `<dir>/report.md`, every number taken from the sweep's table and law.json:
//! run counts, the best shape per budget, the chosen law and how the candidates compare, the
//! design formula, distillation modes compared, the held-out check, and the plots.

use std::fmt::Write as _;
use std::path::Path;
use std::time::SystemTime;

use anyhow::Result;
use distill::run::RunStatus;
use distill::setup::Setup;

use crate::fmt::{grouped, num, si};
use crate::law::LawFile;
use crate::plot::{self, PLOTS};
use crate::results::{read_law, Sweep};

pub fn run(dir: &Path) -> Result<()> {
    let sweep = Sweep::load(dir)?;
    let law = read_law(dir)?;
    let plots = dir.join("plots");
    let mut notes = Vec::new();
    if plots_stale(dir) {
        match plot::write_all(&sweep, &plots) {
            Ok((files, _)) => eprintln!("drew {} plot files into {}", files.len(), plots.display()),
            Err(e) => notes.push(format!("The plots could not be drawn: {e:#}.")),
        }
    }
    let present: Vec<&str> = PLOTS
        .iter()
        .map(|p| p.stem)
        .filter(|s| plots.join(format!("{s}.png")).exists())
        .collect();
    let held = held_out_laws(dir, &mut notes);
    let not_learned = match (&law, crate::law::data::Table::load(dir)) {
        (None, Ok(t)) => {
            let untrained = sweep
                .reference
                .as_ref()
                .and_then(|r| r.untrained.as_ref())
                .map(|m| m.fid_proxy);
            let pts = t.points(&sweep.metric, sweep.mode).unwrap_or_default();
            let (base, _, _) = crate::law::data::base_config(dir, &t, &pts);
            crate::law::guard::check_learned(&t, sweep.mode, base.num_classes, untrained)
                .err()
                .map(|e| e.to_string())
        }
        _ => None,
    };
    let md = markdown_with(
        &sweep,
        law.as_ref(),
        &held,
        &present,
        &notes,
        not_learned.as_deref(),
    );
    let out = dir.join("report.md");
    dit::io::write_atomic(&out, md.as_bytes())?;
    println!("{}", out.display());
    Ok(())
}

/// Held-out fits saved beside the law (`ditkd fit DIR --hold-out B` writes DIR/law-holdout-B.json),
/// in file-name order. One that cannot be read is named in a note, not fatal.
fn held_out_laws(dir: &Path, notes: &mut Vec<String>) -> Vec<LawFile> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("law-holdout") && n.ends_with(".json"))
        })
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        match LawFile::load(&p) {
            Ok(l) if l.holdout.is_some() => out.push(l),
            Ok(_) => notes.push(format!(
                "{}: a law without a held-out budget, skipped.",
                p.display()
            )),
            Err(e) => notes.push(format!("{e:#}.")),
        }
    }
    out
}

/// Plots are redrawn when one is missing or older than the table or the law it shows.
fn plots_stale(dir: &Path) -> bool {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let inputs = [dir.join("runs.parquet"), dir.join("law.json")];
    let newest_input = inputs
        .iter()
        .filter_map(|p| mtime(p))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    [
        "fid_vs_params",
        "fid_vs_depth",
        "fid_vs_width",
        "fid_vs_heads",
        "kd_vs_scratch",
        "pareto_params",
    ]
    .iter()
    .any(
        |s| match mtime(&dir.join("plots").join(format!("{s}.png"))) {
            Some(t) => t < newest_input,
            None => true,
        },
    )
}

fn pm(mean: f64, std: f64) -> String {
    format!("{} ± {}", num(mean), num(std))
}

fn interval(iv: Option<&[f64; 2]>) -> String {
    iv.map(|[a, b]| format!("[{}, {}]", num(*a), num(*b)))
        .unwrap_or_else(|| "–".into())
}

fn opt(v: Option<f64>) -> String {
    v.map(num).unwrap_or_else(|| "–".into())
}

/// The report's text (pure: the caller writes it).
/// `held` are laws fitted with a budget held out (each carries its `holdout` check).
pub fn markdown(
    sweep: &Sweep,
    law: Option<&LawFile>,
    held: &[LawFile],
    plots: &[&str],
    notes: &[String],
) -> String {
    markdown_with(sweep, law, held, plots, notes, None)
}

/// `markdown`, with the guard's verdict when the students have not learned.
pub fn markdown_with(
    sweep: &Sweep,
    law: Option<&LawFile>,
    held: &[LawFile],
    plots: &[&str],
    notes: &[String],
    not_learned: Option<&str>,
) -> String {
    let mut md = String::new();
    let metric = sweep.metric_label();
    let w = &mut md;
    let _ = writeln!(w, "# Sweep `{}`: report\n", sweep.name);
    let _ = writeln!(
        w,
        "Generated by `ditkd report` from `runs.parquet`{}. Metric: {metric} (`{}`, lower is better); the shape analyses use the `{}` runs.\n",
        if law.is_some() { " and `law.json`" } else { "" },
        sweep.metric,
        sweep.mode
    );
    for n in notes {
        let _ = writeln!(w, "> {n}\n");
    }
    runs_section(w, sweep);
    reference_section(w, sweep);
    if let Some(r) = &sweep.race {
        w.push_str(&crate::race::summary::markdown(r));
    }
    if let Some(p) = &sweep.pooled {
        w.push_str(&crate::race::pool::markdown(p));
    }
    best_section(w, sweep, &metric);
    match law {
        Some(l) => {
            law_section(w, l);
            design_section(w, l, &metric);
        }
        None => match not_learned {
            Some(why) => {
                let _ = writeln!(w, "## Design law\n\n**{why}.**\n\nNo law is fitted and no shape is recommended: a law fitted to students at chance describes the evaluation noise, not the shapes.\n");
            }
            None => {
                let _ = writeln!(w, "## Design law\n\nNo `law.json` yet: run `ditkd fit` on this directory to fit the laws, then `ditkd report` again.\n");
            }
        },
    }
    modes_section(w, sweep, &metric);
    paired_section(w, sweep, &metric);
    setups_section(w, sweep, &metric);
    heads_section(w, sweep, &metric);
    for l in law.into_iter().chain(held) {
        if let Some(h) = l.holdout.as_ref() {
            holdout_section(w, l, h, &metric);
        }
    }
    let _ = writeln!(w, "## Plots\n");
    if plots.is_empty() {
        let _ = writeln!(w, "No plots (run `ditkd plot` on this directory).\n");
    }
    for s in plots {
        let _ = writeln!(w, "### {}\n\n![{s}](plots/{s}.png)\n", s.replace('_', " "));
    }
    md
}

fn runs_section(w: &mut String, sweep: &Sweep) {
    let ok = sweep.runs.iter().filter(|r| r.ok()).count();
    let failed: Vec<_> = sweep.runs.iter().filter(|r| !r.ok()).collect();
    let _ = writeln!(
        w,
        "## Runs\n\n{} runs: {ok} ok, {} failed.\n",
        sweep.runs.len(),
        failed.len()
    );
    for note in &sweep.left_out {
        let _ = writeln!(w, "Step-matched: {note}.\n");
    }
    let _ = writeln!(w, "| mode | ok | failed | budgets |\n|---|---:|---:|---|");
    // Runs that do not record their setup first, then the setups by name.
    let unrecorded = sweep.runs.iter().any(|r| r.mode.is_none());
    let modes = crate::results::by_name(sweep.runs.iter().filter_map(|r| r.mode));
    let modes = unrecorded
        .then_some(None)
        .into_iter()
        .chain(modes.into_iter().map(Some));
    for m in modes {
        let rs: Vec<_> = sweep.runs.iter().filter(|r| r.mode == m).collect();
        let budgets: std::collections::BTreeSet<i64> = rs.iter().map(|r| r.budget).collect();
        let budgets: Vec<String> = budgets.into_iter().map(|b| si(b as f64)).collect();
        let n_ok = rs.iter().filter(|r| r.ok()).count();
        let m = m.map_or("(not recorded)".to_string(), |m| m.to_string());
        let _ = writeln!(
            w,
            "| {m} | {n_ok} | {} | {} |",
            rs.len() - n_ok,
            budgets.join(", ")
        );
    }
    let _ = writeln!(w);
    if !failed.is_empty() {
        let _ = writeln!(w, "Failed runs:\n");
        for r in failed.iter().take(20) {
            let _ = writeln!(
                w,
                "- `{}` ({}): {}",
                r.run_id,
                r.status.map_or("unknown", RunStatus::as_str),
                r.reason.as_deref().unwrap_or("no reason recorded")
            );
        }
        if failed.len() > 20 {
            let _ = writeln!(w, "- … and {} more", failed.len() - 20);
        }
        let _ = writeln!(w);
    }
}

/// The teacher (ceiling) and real data (floor) under the students' protocol, and the noise of
/// the evaluation itself.
fn reference_section(w: &mut String, sweep: &Sweep) {
    let _ = writeln!(
        w,
        "## Reference: the teacher, real data and the evaluation noise
"
    );
    let Some(r) = &sweep.reference else {
        let _ = writeln!(
            w,
            "No `reference.json` (it is measured when the sweep runs).\n"
        );
        return;
    };
    let f = &r.floor;
    let _ = writeln!(w, "Every row is scored exactly as the students are: {} images, the same sampler, guidance and evaluation seed; KID is the raw unbiased MMD² (not ×10³); KID and PRDC compare with a fixed real subset of the same size as the generated set.\n", r.samples);
    let _ = writeln!(w, "| model | params | FID-proxy | FID-proxy∞ | KID | precision | recall | coverage | class accuracy |");
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    if let Some(t) = &r.teacher {
        let m = &t.metrics;
        let _ = writeln!(
            w,
            "| teacher d{} w{} h{} | {} | {} | {} | {} | {} | {} | {} | {} |",
            t.depth,
            t.width,
            t.heads,
            grouped(t.params as i64),
            num(m.fid_proxy),
            opt(m.fid_proxy_inf),
            num(m.kid),
            num(m.precision),
            num(m.recall),
            num(m.coverage),
            num(m.class_accuracy)
        );
    }
    let _ = writeln!(
        w,
        "| real training images ({} draws of {}) | – | {} | – | {} | {} | {} | {} | {} |\n",
        f.draws,
        r.samples,
        pm(f.fid_proxy.mean, f.fid_proxy.std),
        pm(f.kid.mean, f.kid.std),
        pm(f.precision.mean, f.precision.std),
        pm(f.recall.mean, f.recall.std),
        pm(f.coverage.mean, f.coverage.std),
        pm(f.class_accuracy.mean, f.class_accuracy.std)
    );
    if let Some(fid) = &f.fid {
        let teacher = r.teacher.as_ref().and_then(|t| t.metrics.fid);
        let _ = writeln!(
            w,
            "The field's FID (TF-FID Inception-v3, weights SHA-256 `{}`, against {} test images): teacher {} (FID∞ {}), real training images {} ({} draws of {}). Students' `fid` and `fid_inf` are columns of `runs.parquet` and `curves.parquet`.\n",
            r.fid_weights_sha256.as_deref().unwrap_or("?"),
            r.fid_real_images.map_or("?".into(), |n| grouped(n as i64)),
            teacher.map_or("–".into(), num),
            opt(r.teacher.as_ref().and_then(|t| t.metrics.fid_inf)),
            pm(fid.mean, fid.std),
            fid.values.len(),
            r.samples
        );
    }
    if let Some(t) = &r.teacher {
        let n = &t.eval_noise_fid_proxy;
        let _ = writeln!(
            w,
            "Evaluation noise: the teacher's weights scored with {} evaluation seeds give FID-proxy {} (sample std {}, {:.1} % of the mean): differences between models smaller than this are not measured by one evaluation. Every evaluation of this sweep uses the same noise, labels and real subset, so differences between models are paired.\n",
            n.values.len(),
            n.values.iter().map(|v| num(*v)).collect::<Vec<_>>().join(" and "),
            num(n.std),
            100.0 * n.std / n.mean
        );
    }
}

fn best_section(w: &mut String, sweep: &Sweep, metric: &str) {
    let _ = writeln!(w, "## Best shape per budget (`{}` runs)\n", sweep.mode);
    let best = sweep.best_per_budget();
    if best.is_empty() {
        let _ = writeln!(
            w,
            "No finished `{}` run has a {metric} value.\n",
            sweep.mode
        );
        return;
    }
    let pts = sweep.points();
    let _ = writeln!(w, "| budget | best shape | {metric} mean ± std | seeds | params | latency (ms/image) | shapes run |");
    let _ = writeln!(w, "|---|---|---:|---:|---:|---:|---:|");
    for p in &best {
        let tried = pts.iter().filter(|q| q.budget == p.budget).count();
        let _ = writeln!(
            w,
            "| {} | depth {}, width {}, heads {} (head dim {}) | {} | {} | {} | {} | {tried} |",
            si(p.budget as f64),
            p.depth,
            p.width,
            p.heads,
            p.head_dim,
            if p.n >= 2 {
                pm(p.mean, p.std)
            } else {
                format!("{} (1 seed: no spread)", num(p.mean))
            },
            p.n,
            grouped(p.params as i64),
            opt(p.latency_ms)
        );
    }
    let _ = writeln!(
        w,
        "\nMean and sample standard deviation over seeds; latency is batch 1, all sampler steps."
    );
    if let Some(t) = sweep.reference.as_ref().and_then(|r| r.teacher.as_ref()) {
        let n = &t.eval_noise_fid_proxy;
        let _ = writeln!(
            w,
            "A single evaluation carries about ±{:.1} % of evaluation noise (the reference section): shapes within that of the best are a tie until measured with more seeds.",
            100.0 * n.std / n.mean
        );
    }
    let _ = writeln!(w);
}

fn law_section(w: &mut String, l: &LawFile) {
    let c = l.chosen();
    let budgets: Vec<String> = l.budgets.iter().map(|b| si(*b as f64)).collect();
    let _ = writeln!(w, "## Design law\n");
    let _ = writeln!(
        w,
        "Chosen law **({})**: `{} = {}`, fitted to {} `{}` runs over budgets {} (chosen on the lowest {} cross-validation error; errors within 2 % of the lowest count as a tie, won by the law with fewer coefficients).",
        c.name,
        l.metric,
        c.formula,
        l.n_runs,
        l.mode,
        budgets.join(", "),
        l.cv_kind.describe()
    );
    if let Some(b) = l.held_out_budget {
        let _ = writeln!(w, "Budget {} was held out of the fit.", si(b as f64));
    }
    let unidentified = l.unidentified();
    if unidentified.is_empty() {
        let _ = writeln!(
            w,
            "N is the parameter count, d the depth, w the width, head_dim = w / heads. Its CV RMSE on ln {} is {} (a typical error of ±{:.0} %).\n",
            l.metric,
            num(c.cv_rmse()),
            100.0 * c.typical_error()
        );
    } else {
        let _ = writeln!(
            w,
            "N is the parameter count, d the depth, w the width, head_dim = w / heads. **The law is not identified**: the data do not pin down {} ({}). Its predictions carry no stated error, and `ditkd best` refuses it without `--force`.\n",
            if unidentified.len() == 1 { "one coefficient" } else { "several coefficients" },
            unidentified.join("; ")
        );
    }
    // How the law compares with the seed noise: the error no law can beat, and whether this
    // one misses the shapes by more.
    if !l.rows.is_empty() {
        let _ = writeln!(w, "Rows fitted: {}.\n", l.rows);
    }
    match (&l.noise, &c.lack_of_fit) {
        (Some(n), Some(t)) => {
            let _ = writeln!(
                w,
                "**Seed noise and lack of fit.** Seeds of one shape scatter by σ = {} in ln {} (pooled within-shape std, {} dof over {} shapes with two or more seeds): no law predicts a single run better. The chosen law's {} CV error is {} ({}× σ). Lack-of-fit test against that noise: **F({}, {}) = {}, p = {}** — {}\n",
                num(n.sigma),
                l.metric,
                n.dof,
                n.replicated,
                l.cv_kind.describe(),
                num(c.cv_rmse()),
                num(c.cv_rmse() / n.sigma),
                t.df_lof,
                t.df_pe,
                num(t.f),
                sci(t.p),
                if t.rejects {
                    format!("the law misses the shapes by more than the seed noise (the shapes' spread about it beyond the noise is τ ≈ {} in ln); `ditkd best` carries τ into P(best) and its intervals.", num(t.sigma_between))
                } else {
                    "the law's misses are within the seed noise.".into()
                }
            );
        }
        (Some(n), None) => {
            let _ = writeln!(w, "**Seed noise.** σ = {} in ln {} ({} dof); the chosen law could not be tested for lack of fit (no more shapes than coefficients).\n", num(n.sigma), l.metric, n.dof);
        }
        (None, _) => {
            let _ = writeln!(w, "**Seed noise unknown**: single seeds, so no lack-of-fit test; P(best) in `ditkd best` falls back on the CV error.\n");
        }
    }
    match &l.floor {
        Some(f) => {
            let what = match f.kind {
                crate::law::FloorChoice::Teacher => "the teacher's measured value",
                _ => "the measured real-data floor",
            };
            let _ = writeln!(
                w,
                "The floor E is fixed at {what} {} ± {} ({}).\n",
                num(f.value),
                num(f.std),
                f.source
            );
        }
        None if l.floor_choice != crate::law::FloorChoice::Data => {
            let _ = writeln!(
                w,
                "The floor E: `--floor {}` (see each law's coefficients).\n",
                l.floor_choice
            );
        }
        None => {}
    }
    let _ = writeln!(
        w,
        "| coefficient | estimate | 90 % bootstrap interval (shapes resampled within budgets) |\n|---|---:|---|"
    );
    for (name, v) in &c.coef {
        let _ = writeln!(
            w,
            "| {name} | {} | {} |",
            num(*v),
            match c.fixed.get(name) {
                Some(why) => why.describe().to_string(),
                None => interval(c.intervals.get(name)),
            }
        );
    }
    let _ = writeln!(
        w,
        "\nAll candidate laws (RSS and RMSEs on ln {}; lower AIC and CV error are better):\n",
        l.metric
    );
    let _ = writeln!(
        w,
        "| law | formula | k | n | RSS | AIC | CV LOBO RMSE | CV k-fold RMSE | lack of fit | chosen |"
    );
    let _ = writeln!(w, "|---|---|---:|---:|---:|---:|---:|---:|---|---|");
    for f in &l.laws {
        let _ = writeln!(
            w,
            "| ({}) | `{}` | {} | {} | {} | {} | {} | {} | {} | {} |",
            f.name,
            f.formula,
            f.k,
            f.n,
            num(f.rss),
            num(f.aic),
            opt(f.cv_lobo_rmse),
            num(f.cv_kfold_rmse),
            f.lack_of_fit.as_ref().map_or("–".into(), |t| format!(
                "F({}, {}) = {}, p = {}",
                t.df_lof,
                t.df_pe,
                num(t.f),
                sci(t.p)
            )),
            if f.name == l.chosen { "✓" } else { "" }
        );
    }
    let _ = writeln!(w, "\nk counts fitted coefficients (a fixed floor is not one); n is runs (learning-curve points for a compute law); CV errors are per run, with whole shapes held out; AIC compares laws fitted on the same points only.");
    for s in &l.skipped {
        let _ = writeln!(w, "\nLaw ({}) was not fitted: {}.", s.name, s.reason);
    }
    if !l.notes.is_empty() {
        let _ = writeln!(w, "\nNotes from the fit:\n");
        for n in &l.notes {
            let _ = writeln!(w, "- {n}");
        }
    }
    let _ = writeln!(w);
}

fn design_section(w: &mut String, l: &LawFile, metric: &str) {
    let d = &l.design;
    let _ = writeln!(w, "## Design formula\n\n`{}`\n", d.formula);
    if !l.unidentified().is_empty() {
        let _ = writeln!(w, "> **Not identified**: the law's coefficients are not pinned down by the data (above), so the optimum below is shown for completeness only; do not use it.\n");
    }
    match &d.exponents {
        Some(e) => {
            let _ = writeln!(
                w,
                "The optimal shape grows with the budget N as x* ≈ c·N^s:\n"
            );
            let _ = writeln!(
                w,
                "| variable | s | c | 90 % interval of s |\n|---|---:|---:|---|"
            );
            for (name, x) in [
                ("depth", &e.depth),
                ("width", &e.width),
                ("head dim", &e.head_dim),
            ] {
                match x {
                    Some(x) => {
                        let _ = writeln!(
                            w,
                            "| {name} | {} | {} | {} |",
                            num(x.s),
                            num(x.c),
                            interval(x.interval.as_ref())
                        );
                    }
                    None => {
                        let _ = writeln!(w, "| {name} | – | – | not determined by this law |");
                    }
                }
            }
        }
        None => {
            let _ = writeln!(w, "Law ({}) depends on the parameter count only, so it cannot say how to split a budget between depth and width.", l.chosen);
        }
    }
    let _ = writeln!(w, "\nThe law's optimum per budget:\n");
    let _ = writeln!(w, "| budget | depth | width | heads | head dim | params | predicted {metric} |\n|---|---:|---:|---:|---:|---:|---:|");
    for i in 0..d.budgets.len() {
        let g = |v: &Vec<usize>| {
            v.get(i)
                .map(|x| x.to_string())
                .unwrap_or_else(|| "–".into())
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} |",
            si(d.budgets[i] as f64),
            g(&d.depth),
            g(&d.width),
            g(&d.heads),
            g(&d.head_dim),
            d.params
                .get(i)
                .map(|x| grouped(*x as i64))
                .unwrap_or_else(|| "–".into()),
            opt(d.predicted.get(i).copied())
        );
    }
    if let Some(m) = &l.latency_model {
        let coef: Vec<String> = m.coef.iter().map(|c| num(*c)).collect();
        let _ = writeln!(
            w,
            "\nLatency model: `{}`, coefficients [{}], R² = {} over {} runs.",
            m.formula,
            coef.join(", "),
            num(m.r2),
            m.n
        );
    }
    let _ = writeln!(w);
}

fn modes_section(w: &mut String, sweep: &Sweep, metric: &str) {
    let cmp = sweep.compare_modes();
    let modes = crate::results::modes_compared(&cmp);
    let _ = writeln!(w, "## KD vs scratch\n");
    if modes.len() < 2 {
        let names: Vec<String> = modes.iter().map(|m| m.to_string()).collect();
        let _ = writeln!(w, "Only `{}` runs: nothing to compare.\n", names.join(""));
        return;
    }
    let both = modes.contains(&Setup::Kd) && modes.contains(&Setup::Scratch);
    let _ = write!(w, "Mean ± std of {metric} over runs. Where some shapes ran in every mode, only those are compared.\n\n| budget | shapes compared |");
    for m in &modes {
        let _ = write!(w, " {m} (n) |");
    }
    let _ = writeln!(w, "{} better |", if both { " kd − scratch |" } else { "" });
    let _ = writeln!(
        w,
        "|---|---|{}{}---|",
        "---:|".repeat(modes.len()),
        if both { "---:|" } else { "" }
    );
    for c in &cmp {
        let shapes = if c.matched_shapes > 0 {
            format!("{} matched", c.matched_shapes)
        } else {
            "all (none shared)".into()
        };
        let _ = write!(w, "| {} | {shapes} |", si(c.budget as f64));
        for m in &modes {
            match c.stats.iter().find(|s| s.mode == *m) {
                Some(s) => {
                    let _ = write!(w, " {} ({}) |", pm(s.mean, s.std), s.n);
                }
                None => w.push_str(" – |"),
            }
        }
        let get = |m: Setup| c.stats.iter().find(|s| s.mode == m).map(|s| s.mean);
        if both {
            match (get(Setup::Kd), get(Setup::Scratch)) {
                (Some(k), Some(s)) => {
                    let _ = write!(w, " {} |", num(k - s));
                }
                _ => w.push_str(" – |"),
            }
        }
        let best = c
            .stats
            .iter()
            .filter(|s| s.mean.is_finite())
            .min_by(|a, b| a.mean.total_cmp(&b.mean));
        let best = best.map_or("–".to_string(), |s| s.mode.to_string());
        let _ = writeln!(w, " {best} |");
    }
    let _ = writeln!(w);
}

/// KD against scratch pair by pair (same shape and seed) at equal steps and at equal training
/// FLOPs, from the learning curves (`results::paired`).
fn paired_section(w: &mut String, sweep: &Sweep, metric: &str) {
    let rows = crate::results::paired::kd_vs_scratch(sweep);
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "## KD vs scratch, paired by seed: equal steps and equal training FLOPs\n\n\
         Each scratch run is paired with the KD run of the same shape and seed (they share the data \
         order and noise, so the difference is KD's). Equal steps: both at scratch's last step. \
         Equal FLOPs: KD read at the curve point where its training FLOPs (the teacher's forward \
         included) equal scratch's at that step. Δ = mean ± sd over the pairs of ln(KD) − \
         ln(scratch) on {metric} (negative: KD better).\n\n\
         | budget | shape | pairs | steps | KD | scratch | Δ ln, equal steps | KD better | KD step at equal FLOPs | KD | Δ ln, equal FLOPs | KD better |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let cell = |m: &Option<crate::results::paired::Matched>| match m {
        Some(m) => (
            format!("{:+.3} ± {:.3}", m.ln_diff, m.ln_diff_std),
            format!("{}/{}", m.kd_better, m.n),
        ),
        None => ("–".into(), "–".into()),
    };
    for r in &rows {
        let (ds, bs) = cell(&r.equal_steps);
        let (df, bf) = cell(&r.equal_flops);
        let flop_steps = r
            .equal_flops
            .as_ref()
            .map_or("no matched point".into(), |m| {
                if m.kd_steps[0] == m.kd_steps[1] {
                    grouped(m.kd_steps[0] as i64)
                } else {
                    format!(
                        "{}-{}",
                        grouped(m.kd_steps[0] as i64),
                        grouped(m.kd_steps[1] as i64)
                    )
                }
            });
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {ds} | {bs} | {flop_steps} | {} | {df} | {bf} |",
            si(r.budget as f64),
            r.shape,
            r.equal_steps.as_ref().map_or(0, |m| m.n),
            grouped(r.steps as i64),
            r.equal_steps.as_ref().map_or("–".into(), |m| num(m.kd)),
            r.equal_steps
                .as_ref()
                .map_or("–".into(), |m| num(m.scratch)),
            r.equal_flops.as_ref().map_or("–".into(), |m| num(m.kd)),
        );
    }
    let _ = writeln!(
        w,
        "\nAlong the learning curve, step-matched: Δ ln (mean ± sd over the pairs, KD better in k \
         of n) at every step both runs of a pair evaluated.\n\n\
         | budget | shape | Δ ln by step |\n|---|---|---|"
    );
    for r in &rows {
        let cells: Vec<String> = r
            .along
            .iter()
            .map(|(step, m)| {
                format!(
                    "{}: {:+.2} ± {:.2} ({}/{})",
                    grouped(*step as i64),
                    m.ln_diff,
                    m.ln_diff_std,
                    m.kd_better,
                    m.n
                )
            })
            .collect();
        let _ = writeln!(
            w,
            "| {} | {} | {} |",
            si(r.budget as f64),
            r.shape,
            cells.join("; ")
        );
    }
    let _ = writeln!(w);
}

/// The head count at fixed budget and depth (`results::heads`): shown when a depth ran with two or
/// more head counts.
fn heads_section(w: &mut String, sweep: &Sweep, metric: &str) {
    let prior = crate::race::schedule::DEFAULT_PRIOR_SEED_NOISE;
    let rows = crate::results::heads::compare_heads(sweep, prior);
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "## The head count at fixed depth\n\n\
         Per budget and depth trained with several head counts (`{}`), each head count's {metric} \
         (geometric mean over the seeds every head count ran; each run in brackets) at the \
         furthest step every head count reached (step-matched), P(best head count) on those seeds \
         by the race's Monte Carlo with the seed noise pooled over every replicate (shrunk towards \
         the prior {prior}), each \
         head count against the most replicated one seed by seed (the head count changes no \
         parameter's shape, so a seed gives them the same initial weights and batches: mean ± sd \
         of the paired difference in ln, negative = better, and on how many seeds it is better), \
         and the batch-1 latency where measured.\n",
        sweep.mode
    );
    for c in &rows {
        let at = c
            .step
            .map_or("each run's final evaluation".to_string(), |s| {
                format!("{} steps", grouped(s as i64))
            });
        let _ = writeln!(
            w,
            "**{} depth {}** at {at}, means on seed(s) {} (seed sd {:.3} in ln, {} df)\n\n\
             | heads | width | head dim | {metric} | P(best) | vs {}, paired | latency (ms/image) |\n\
             |---:|---:|---:|---|---:|---|---:|",
            si(c.budget as f64),
            c.depth,
            if c.common_seeds.is_empty() {
                "each head count's own".to_string()
            } else {
                c.common_seeds
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            c.seed_sd,
            c.df,
            match c.reference {
                1 => "1 head".to_string(),
                h => format!("{h} heads"),
            }
        );
        for r in &c.rows {
            let seeds: Vec<String> = r
                .seeds
                .iter()
                .zip(&r.values)
                .map(|(s, v)| format!("s{s} {}", num(*v)))
                .collect();
            let paired = match &r.vs_reference {
                Some(d) => format!(
                    "{:+.3} ± {:.3} ({}/{} better)",
                    d.ln_diff, d.ln_diff_std, d.better, d.n
                ),
                None if r.heads == c.reference => "reference".into(),
                None => "no shared seed".into(),
            };
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} ({}) | {:.2} | {paired} | {} |",
                r.heads,
                r.width,
                r.head_dim,
                num(r.geo),
                seeds.join(", "),
                r.p_best,
                r.latency_ms.map_or("–".into(), |l| format!("{l:.1}"))
            );
        }
        let _ = writeln!(w);
    }
}

/// Distillation setups shape by shape (`results::setups`): shown when a shape ran under a setup
/// other than kd and scratch (their pairs have the section above).
fn setups_section(w: &mut String, sweep: &Sweep, metric: &str) {
    let prior = crate::race::schedule::DEFAULT_PRIOR_SEED_NOISE;
    let rows = crate::results::setups::compare_setups(sweep, prior);
    let beyond_kd = |c: &crate::results::setups::SetupComparison| {
        c.equal_steps
            .scores
            .iter()
            .any(|s| !matches!(s.setup, Setup::Kd | Setup::Scratch))
    };
    if !rows.iter().any(beyond_kd) {
        return;
    }
    let _ = writeln!(
        w,
        "## Distillation setups: equal steps and equal training FLOPs\n\n\
         Per budget and shape, each setup's {metric} (geometric mean over its seeds, the seeds in \
         brackets) at equal steps (every run at its last step) and at equal total training FLOPs \
         (each run read at its curve point where its FLOPs, the teacher's and an assistant's \
         forwards and the assistant's own training included, equal the cheapest setup's total; \
         `distill.flop_matched: true` puts the points there). P(best): the race's Monte Carlo over \
         the setups with the seed noise pooled over their replicates (shrunk towards the prior \
         {prior}); the setups share seeds, which it ignores, so it is conservative.\n"
    );
    for c in &rows {
        let _ = writeln!(
            w,
            "**{} {}** (equal FLOPs: {:.3e}, `{}`'s total; seed sd {:.3} in ln, {} df)\n\n\
             | setup | {metric} at equal steps | steps | P(best) | {metric} at equal FLOPs | step read | P(best) |\n\
             |---|---|---:|---:|---|---:|---:|",
            si(c.budget as f64),
            c.shape,
            c.flops,
            c.cheapest,
            c.equal_steps.seed_sd,
            c.equal_steps.df,
        );
        for s in &c.equal_steps.scores {
            let f = c.equal_flops.scores.iter().find(|f| f.setup == s.setup);
            let cell = |x: &crate::results::setups::SetupScore| {
                let seeds: Vec<String> = x.values.iter().map(|v| num(*v)).collect();
                format!("{} ({})", num(x.geo), seeds.join(", "))
            };
            let steps = |x: &crate::results::setups::SetupScore| {
                let lo = x.steps.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = x.steps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if lo == hi {
                    grouped(lo as i64)
                } else {
                    format!("{}-{}", grouped(lo as i64), grouped(hi as i64))
                }
            };
            let _ = writeln!(
                w,
                "| {} | {} | {} | {:.2} | {} | {} | {} |",
                s.setup,
                cell(s),
                steps(s),
                s.p_best,
                f.map_or("no matched point".into(), cell),
                f.map_or("–".into(), steps),
                f.map_or("–".into(), |f| format!("{:.2}", f.p_best)),
            );
        }
        let verdict = |m: &crate::results::setups::Matching| {
            m.scores.first().map_or("–".into(), |b| {
                format!("`{}` (P(best) {:.2})", b.setup, b.p_best)
            })
        };
        let _ = writeln!(
            w,
            "\nBest at equal steps: {}; at equal FLOPs: {}.\n",
            verdict(&c.equal_steps),
            verdict(&c.equal_flops)
        );
    }
}

/// Read through JSON, so the section follows law.json's `holdout` as written (fields may be null).
fn holdout_section(w: &mut String, l: &LawFile, h: &crate::law::Holdout, metric: &str) {
    let h = serde_json::to_value(h).unwrap_or_default();
    let fitted: Vec<String> = l.budgets.iter().map(|b| si(*b as f64)).collect();
    let f = |v: &serde_json::Value| opt(v.as_f64());
    let shape = |s: &serde_json::Value| {
        if s.is_null() {
            return "none".to_string();
        }
        format!(
            "depth {}, width {}, heads {} ({} params): predicted {}, measured {}",
            s["depth"],
            s["width"],
            s["heads"],
            s["params"],
            f(&s["predicted"]),
            if s["measured"].is_null() {
                "not run".into()
            } else {
                f(&s["measured"])
            }
        )
    };
    let yn = |v: &serde_json::Value| match v.as_bool() {
        Some(true) => "yes",
        Some(false) => "no",
        None => "not run",
    };
    let _ = writeln!(w, "## Held-out budget check\n");
    let _ = writeln!(
        w,
        "Law ({}) fitted on budgets {} only (without budget {}) predicts the held-out budget's {} runs with RMSE {} on ln {metric} (MAPE {} %).\n",
        l.chosen,
        fitted.join(", "),
        h["budget"].as_f64().map(si).unwrap_or_else(|| "?".into()),
        h["n_runs"],
        f(&h["rmse_log"]),
        f(&h["mape"])
    );
    let _ = writeln!(w, "- law's recommended shape: {}", shape(&h["recommended"]));
    let _ = writeln!(
        w,
        "- recommended shape within 5 % of the best measured: {}",
        yn(&h["recommended_within_5pct"])
    );
    let _ = writeln!(
        w,
        "- best-predicted among the measured shapes: {}",
        shape(&h["best_predicted_measured"])
    );
    let _ = writeln!(w, "- best measured shape: {}", shape(&h["best_measured"]));
    let _ = writeln!(
        w,
        "- best-predicted within 5 % of the best measured: {} (5 % is below the seed noise; the tie set below is the test)",
        yn(&h["within_5pct"])
    );
    let pct = |v: &serde_json::Value| {
        v.as_f64()
            .map_or("?".into(), |x| format!("{:.0} %", 100.0 * x))
    };
    let _ = writeln!(
        w,
        "- coverage of the law's 90 % intervals: {} of the runs (interval of one more run), {} of the shapes (interval of the seed mean); σ = {}, τ = {} in ln",
        pct(&h["coverage90_runs"]),
        pct(&h["coverage90_shapes"]),
        f(&h["sigma"]),
        f(&h["tau"])
    );
    let names: Vec<String> = h["tie_set"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(
        w,
        "- measured tie set (the best-measured shape and every shape its seeds cannot separate from it at 90 %): {}",
        if names.is_empty() { "none".into() } else { names.join(", ") }
    );
    let pass = |v: &serde_json::Value| match v.as_bool() {
        Some(true) => "**in the tie set (pass)**",
        Some(false) => "**not in the tie set (fail)**",
        None => "not measured at this budget (not judged)",
    };
    let _ = writeln!(
        w,
        "- the law's recommended shape: {}; its best-predicted measured shape: {}\n",
        pass(&h["recommended_in_tie_set"]),
        pass(&h["best_predicted_in_tie_set"])
    );
    if let Some(rows) = h["shapes"].as_array().filter(|a| !a.is_empty()) {
        let _ = writeln!(
            w,
            "| shape | params | seeds | measured | predicted | 90 % interval (mean) | 90 % interval (one run) | P(best), measured | tie |\n|---|---:|---:|---:|---:|---|---|---:|---|"
        );
        for r in rows {
            let iv = |v: &serde_json::Value| format!("[{}, {}]", f(&v[0]), f(&v[1]));
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r["shape"].as_str().unwrap_or("?"),
                r["params"],
                r["seeds"],
                f(&r["measured"]),
                f(&r["predicted"]),
                iv(&r["mean_interval"]),
                iv(&r["run_interval"]),
                r["p_best_measured"]
                    .as_f64()
                    .map_or("?".into(), |p| format!("{p:.2}")),
                if r["in_tie_set"].as_bool() == Some(true) {
                    "yes"
                } else {
                    ""
                }
            );
        }
        let _ = writeln!(w);
    }
}

/// A p-value: fixed-point down to 0.001, scientific below.
fn sci(p: f64) -> String {
    if p >= 1e-3 {
        format!("{p:.3}")
    } else {
        format!("{p:.1e}")
    }
}
