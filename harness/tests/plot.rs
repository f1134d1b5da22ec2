//! `ditkd plot` and `ditkd report` on a synthetic sweep directory: every plot is written as a
//! readable PNG and an SVG with its axis labels, the law overlays are optional, and the report's
//! best-shape table carries the table's numbers.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::ditkd;
use distill::setup::Setup;
use dit::DitConfig;
use harness::fmt::{grouped, num, si};
use harness::results::{mean_std, CvPoint, LawCurve, LawOverlay, Sweep};
use serde_json::json;

/// (depth, width, heads).
type Shape = (usize, usize, usize);

/// Budget -> the shapes (depth, width, heads) planned for it (params within ~±20 %).
fn plan() -> Vec<(i64, Vec<Shape>)> {
    vec![
        (55_000, vec![(2, 32, 2), (2, 32, 4), (1, 48, 2), (1, 48, 4)]),
        (
            100_000,
            vec![
                (1, 64, 2),
                (1, 64, 4),
                (2, 48, 2),
                (2, 48, 4),
                (4, 32, 2),
                (4, 32, 4),
            ],
        ),
        (
            180_000,
            vec![
                (2, 64, 2),
                (2, 64, 4),
                (3, 48, 2),
                (3, 48, 4),
                (4, 48, 2),
                (4, 48, 4),
            ],
        ),
    ]
}

fn params(d: usize, w: usize, h: usize) -> usize {
    DitConfig {
        depth: d,
        hidden_size: w,
        num_heads: h,
        patch_size: 4,
        ..Default::default()
    }
    .num_params()
}

/// A law-(c)-like metric with diminishing returns in depth and width, a head-dim optimum, seed
/// noise, and scratch worse than KD.
fn fid(d: usize, w: usize, h: usize, mode: &str, seed: i64) -> f64 {
    let hd = (w / h) as f64;
    let base = 0.2
        + 4.0 * (d as f64).powf(-0.6)
        + 40.0 * (w as f64).powf(-0.8)
        + 0.05 * (hd / 16.0).ln().powi(2);
    let v = base * (1.0 + 0.03 * (seed as f64 - 0.5)) * if mode == "scratch" { 1.25 } else { 1.0 };
    (v * 1e6).round() / 1e6
}

/// (run_id, budget, d, w, h, mode, seed, ok)
type Row = (String, i64, usize, usize, usize, String, i64, bool);

fn rows() -> Vec<Row> {
    let mut out = Vec::new();
    let mut i = 0;
    for (b, shapes) in plan() {
        for &(d, w, h) in &shapes {
            // Scratch only on the two-head shapes: the comparison must use the matched ones.
            let modes: &[&str] = if h == 2 { &["kd", "scratch"] } else { &["kd"] };
            for m in modes {
                for s in 0..2 {
                    out.push((
                        format!("{i:04}-d{d}-w{w}-h{h}-{m}-s{s}"),
                        b,
                        d,
                        w,
                        h,
                        m.to_string(),
                        s,
                        true,
                    ));
                    i += 1;
                }
            }
        }
    }
    out.push((
        format!("{i:04}-d4-w32-h2-kd-s2"),
        100_000,
        4,
        32,
        2,
        "kd".into(),
        2,
        false,
    ));
    out
}

/// A sweep directory as `ditkd sweep` leaves it: runs/<id>/{summary,plan}.json, metrics.jsonl,
/// spec.yaml and the table rebuilt from them.
fn synthetic(dir: &Path) {
    std::fs::write(dir.join("spec.yaml"), "name: synthetic\n").unwrap();
    for (id, b, d, w, h, m, s, ok) in rows() {
        let run = dir.join("runs").join(&id);
        std::fs::create_dir_all(&run).unwrap();
        let summary = json!({
            "mode": m, "seed": s, "depth": d, "width": w, "heads": h, "head_dim": w / h, "patch": 4, "mlp_ratio": 4.0,
            "params": params(d, w, h), "steps": 10, "batch_size": 8,
            "fid_proxy": if ok { json!(fid(d, w, h, &m, s)) } else { json!(null) },
            "latency_ms": if ok { json!(2.0 + 1.5 * d as f64 + 0.01 * w as f64) } else { json!(null) },
            "status": if ok { "ok" } else { "failed" },
            "reason": if ok { json!(null) } else { json!("diverged: loss is NaN at step 7") },
        });
        std::fs::write(run.join("summary.json"), summary.to_string()).unwrap();
        std::fs::write(run.join("plan.json"), json!({ "budget": b }).to_string()).unwrap();
        let log: String = (1..=5)
            .map(|k| format!("{}\n", json!({"step": 2 * k, "loss": 1.0 / (1.0 + 0.3 * k as f64) + 0.01 * d as f64, "lr": 1e-3})))
            .collect();
        std::fs::write(run.join("metrics.jsonl"), log).unwrap();
        // The run's learning curve: its metric approaching the final value as it trains.
        let student = DitConfig {
            depth: d,
            hidden_size: w,
            num_heads: h,
            patch_size: 4,
            ..Default::default()
        };
        let cfg = distill::run::DistillConfig::new(None, m.parse().unwrap(), student, 10);
        std::fs::write(
            run.join("config.yaml"),
            serde_yaml_ng::to_string(&cfg).unwrap(),
        )
        .unwrap();
        if ok {
            let curve: String = [2, 5, 10]
                .iter()
                .map(|&k| format!("{}\n", json!({"step": k, "images_seen": 8 * k, "train_flops": 1e6 * (k * d * w) as f64, "fid_proxy": fid(d, w, h, &m, s) * (1.0 + 4.0 / k as f64)})))
                .collect();
            std::fs::write(run.join("curve.jsonl"), curve).unwrap();
        }
    }
    harness::table::rebuild(dir).unwrap();
}

/// The x-axis label each plot must carry (its SVG holds the text).
const LABELS: [(&str, &str); 11] = [
    (
        "learning_steps",
        "training step (optimiser updates, log scale)",
    ),
    ("learning_flops", "training FLOPs"),
    ("fid_vs_params", "parameters (count, log scale)"),
    ("fid_vs_depth", "depth (DiT blocks)"),
    ("fid_vs_width", "width (hidden channels)"),
    ("fid_vs_heads", "heads (attention heads)"),
    ("kd_vs_scratch", "parameter budget (count)"),
    ("pareto_params", "parameters (count, log scale)"),
    ("pareto_latency", "latency (ms per image"),
    ("training_curves", "training step (optimiser updates)"),
    ("parity", "measured FID-proxy"),
];

fn check_plot(plots: &Path, stem: &str, label: &str) {
    let png = plots.join(format!("{stem}.png"));
    let img = image::open(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert_eq!((img.width(), img.height()), (1200, 800), "{stem}");
    let svg = std::fs::read_to_string(plots.join(format!("{stem}.svg"))).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains(label),
        "{stem}.svg lacks `{label}`"
    );
    assert!(
        svg.contains("synthetic"),
        "{stem}.svg: the title names the sweep"
    );
}

/// With DITKD_KEEP_PLOTS=DIR set, copy the PNGs of a test into DIR/<name>/ to look at them.
fn keep(plots: &Path, name: &str) {
    let Some(dir) = std::env::var_os("DITKD_KEEP_PLOTS") else {
        return;
    };
    let out = Path::new(&dir).join(name);
    std::fs::create_dir_all(&out).unwrap();
    for e in std::fs::read_dir(plots).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "png") {
            std::fs::copy(e.path(), out.join(e.file_name())).unwrap();
        }
    }
}

/// The y tick labels of a plot's SVG: the text elements right-aligned left of the plot area.
fn y_tick_labels(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter(|t| t.contains("text-anchor=\"end\""))
        .filter_map(|t| {
            Some(
                t.split_once('>')?
                    .1
                    .split_once("</text>")?
                    .0
                    .trim()
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn plot_and_report_without_a_law() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synthetic(dir);
    let d = dir.to_str().unwrap();

    let (rc, out, err) = ditkd(&["plot", d]);
    assert_eq!(rc, 0, "{err}");
    let plots = dir.join("plots");
    for (stem, label) in LABELS.iter().filter(|(s, _)| *s != "parity") {
        check_plot(&plots, stem, label);
        assert!(
            out.contains(&format!("{stem}.png")) && out.contains(&format!("{stem}.svg")),
            "{out}"
        );
    }
    assert!(!plots.join("parity.png").exists());
    keep(&plots, "without_law");
    assert!(
        err.contains("skipped parity") && err.contains("law.json"),
        "{err}"
    );
    // Nothing half-written is left behind.
    let stray: Vec<_> = std::fs::read_dir(&plots)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");

    std::fs::remove_dir_all(&plots).unwrap();
    let (rc, _, err) = ditkd(&["report", d]);
    assert_eq!(rc, 0, "{err}");
    assert!(
        plots.join("fid_vs_params.png").exists(),
        "report draws missing plots"
    );
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("# Sweep `synthetic`"), "{md}");
    let n = rows().len();
    assert!(
        md.contains(&format!("{n} runs: {} ok, 1 failed", n - 1)),
        "{md}"
    );
    assert!(md.contains("diverged: loss is NaN at step 7"), "{md}");
    assert!(md.contains("No `law.json` yet"), "{md}");

    // Best shape per budget, recomputed here from the rows: mean ± std over the kd seeds.
    let mut by_shape: BTreeMap<(i64, usize, usize, usize), Vec<f64>> = BTreeMap::new();
    for (_, b, dd, w, h, m, s, ok) in rows() {
        if ok && m == "kd" {
            by_shape
                .entry((b, dd, w, h))
                .or_default()
                .push(fid(dd, w, h, &m, s));
        }
    }
    for (b, _) in plan() {
        let ((_, dd, w, h), vals) = by_shape
            .iter()
            .filter(|(k, _)| k.0 == b)
            .min_by(|x, y| {
                mean_std(x.1.iter().copied())
                    .0
                    .total_cmp(&mean_std(y.1.iter().copied()).0)
            })
            .unwrap();
        let (mean, std) = mean_std(vals.iter().copied());
        let row = format!(
            "| {} | depth {dd}, width {w}, heads {h} (head dim {}) | {} ± {} | 2 | {} |",
            si(b as f64),
            w / h,
            num(mean),
            num(std),
            grouped(params(*dd, *w, *h) as i64)
        );
        assert!(md.contains(&row), "missing `{row}` in\n{md}");
    }
    // KD vs scratch on the matched (two-head) shapes, KD better by construction.
    assert!(
        md.contains("## KD vs scratch") && md.contains("matched"),
        "{md}"
    );
    let kd_rows = md
        .lines()
        .filter(|l| l.contains(" matched |") && l.trim_end().ends_with("| kd |"))
        .count();
    assert_eq!(kd_rows, plan().len(), "{md}");
    for (stem, _) in LABELS.iter().filter(|(s, _)| *s != "parity") {
        assert!(
            md.contains(&format!("](plots/{stem}.png)")),
            "{stem} not linked"
        );
    }
}

#[test]
fn law_overlays_are_drawn_from_plain_data() {
    let tmp = tempfile::tempdir().unwrap();
    synthetic(tmp.path());
    let mut sweep = Sweep::load(tmp.path()).unwrap();
    assert!(sweep.law.is_none() && sweep.mode == Setup::Kd && sweep.metric == "fid_proxy");
    let curve = |d: i64| LawCurve {
        depth: Some(d),
        points: (0..20)
            .map(|i| (4e4 * 1.1f64.powi(i), 1.0 + 3.0 / (d as f64 + i as f64)))
            .collect(),
    };
    let cv = sweep
        .runs
        .iter()
        .filter_map(|r| {
            Some(CvPoint {
                budget: r.budget,
                measured: r.value()?,
                predicted: r.value()? * 1.05,
            })
        })
        .collect();
    sweep.law = Some(LawOverlay {
        name: "b".into(),
        formula: "E + A*d^(-alpha) + B*w^(-beta)".into(),
        cv_rmse: Some(0.05),
        cv_kind: harness::law::CvKind::Lobo,
        heads: None,
        head_dim: Some(16.0),
        curves: vec![curve(1), curve(2), curve(4)],
        cv,
    });
    let plots = tmp.path().join("plots");
    let (files, skipped) = harness::plot::write_all(&sweep, &plots).unwrap();
    assert_eq!(files.len(), 2 * LABELS.len(), "{files:?}");
    assert!(skipped.is_empty(), "{skipped:?}");
    for (stem, label) in LABELS {
        check_plot(&plots, stem, label);
    }
    let svg = std::fs::read_to_string(plots.join("fid_vs_params.svg")).unwrap();
    assert!(svg.contains("law b"), "the law is in the legend");
    keep(&plots, "overlay");
}

#[test]
fn plot_and_report_with_a_fitted_law() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synthetic(dir);
    let d = dir.to_str().unwrap();
    let (rc, _, err) = ditkd(&["fit", d, "--bootstrap", "20"]);
    assert_eq!(rc, 0, "{err}");
    let law: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("law.json")).unwrap()).unwrap();
    let chosen = law["chosen"].as_str().unwrap();

    let (rc, out, err) = ditkd(&["plot", d]);
    assert_eq!(rc, 0, "{err}");
    assert!(!err.contains("skipped"), "{err}");
    for (stem, label) in LABELS {
        check_plot(&dir.join("plots"), stem, label);
        assert!(out.contains(&format!("{stem}.png")), "{out}");
    }
    let svg = std::fs::read_to_string(dir.join("plots/fid_vs_params.svg")).unwrap();
    assert!(
        svg.contains(&format!("law {chosen}")),
        "the law is in the legend"
    );
    keep(&dir.join("plots"), "fitted_law");
    // Every log-metric axis labels at least three values.
    for stem in [
        "fid_vs_params",
        "fid_vs_depth",
        "kd_vs_scratch",
        "pareto_params",
        "parity",
        "training_curves",
    ] {
        let svg = std::fs::read_to_string(dir.join(format!("plots/{stem}.svg"))).unwrap();
        let labels = y_tick_labels(&svg);
        assert!(labels.len() >= 3, "{stem}: y ticks {labels:?}");
    }

    let (rc, _, err) = ditkd(&["report", d]);
    assert_eq!(rc, 0, "{err}");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains(&format!("Chosen law **({chosen})**")), "{md}");
    for l in law["laws"].as_array().unwrap() {
        let row = format!(
            "| ({}) | `{}` | {} |",
            l["name"].as_str().unwrap(),
            l["formula"].as_str().unwrap(),
            l["k"]
        );
        assert!(md.contains(&row), "missing `{row}` in\n{md}");
    }
    for (name, v) in law["laws"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == chosen)
        .unwrap()["coef"]
        .as_object()
        .unwrap()
    {
        assert!(
            md.contains(&format!("| {name} | {} |", num(v.as_f64().unwrap()))),
            "coefficient {name} in\n{md}"
        );
    }
    assert!(
        md.contains(law["design"]["formula"].as_str().unwrap()),
        "{md}"
    );
    assert!(md.contains("](plots/parity.png)"), "{md}");
    assert!(
        !md.contains("Held-out budget check"),
        "no held-out fit yet:\n{md}"
    );

    // A held-out fit lands beside the law (never over it) and the report shows its check.
    let before = std::fs::read(dir.join("law.json")).unwrap();
    let (rc, out, err) = ditkd(&["fit", d, "--hold-out", "180k", "--bootstrap", "5"]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("law-holdout-180k.json"), "{out}");
    assert_eq!(
        std::fs::read(dir.join("law.json")).unwrap(),
        before,
        "law.json untouched"
    );
    let held: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("law-holdout-180k.json")).unwrap())
            .unwrap();
    assert_eq!(held["held_out_budget"], 180_000);
    let (rc, _, err) = ditkd(&["report", d]);
    assert_eq!(rc, 0, "{err}");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        md.contains("## Held-out budget check")
            && md.contains("fitted on budgets 55k, 100k only (without budget 180k)"),
        "{md}"
    );
    assert!(
        md.contains(&format!(
            "RMSE {} on ln",
            num(held["holdout"]["rmse_log"].as_f64().unwrap())
        )),
        "{md}"
    );
}
