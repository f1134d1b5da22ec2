//! The sweep's plots (plotters), each written as PNG and SVG with the embedded font.
//!
//! Every figure is a struct of prepared data implementing [`Figure`]; [`render`] draws it on both
//! backends into temporary files and renames them into place, so a reader never sees a half
//! drawn plot.

pub mod curves;
pub mod learning;
pub mod modes;
pub mod pareto;
pub mod parity;
pub mod scaling;
pub mod shape;
pub mod style;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

pub use crate::results::Sweep;

pub type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A plot that can be drawn on any plotters backend.
pub trait Figure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// Draw `fig` into `dir/stem.png` and `dir/stem.svg`; returns both paths.
pub fn render(dir: &Path, stem: &str, fig: &impl Figure) -> Result<Vec<PathBuf>> {
    style::init_font();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let png = dir.join(format!("{stem}.png"));
    // The bitmap backend picks its encoder from the extension, so the temporary name ends in .png.
    let tmp = dir.join(format!(".{stem}.{}.tmp.png", std::process::id()));
    let drawn = (|| -> Result<()> {
        let root = BitMapBackend::new(&tmp, style::SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        fig.draw(&root).map_err(|e| anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow!("{e}"))?;
        Ok(())
    })();
    if let Err(e) = drawn {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("drawing {}", png.display())));
    }
    std::fs::rename(&tmp, &png)
        .with_context(|| format!("renaming {} to {}", tmp.display(), png.display()))?;

    let svg = dir.join(format!("{stem}.svg"));
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, style::SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        fig.draw(&root)
            .map_err(|e| anyhow!("drawing {}: {e}", svg.display()))?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    dit::io::write_atomic(&svg, text.as_bytes())?;
    Ok(vec![png, svg])
}

/// A plot every sweep with measured runs has.
type Always = fn(&Sweep, &Path) -> Result<Vec<PathBuf>>;
/// A plot that needs data a sweep may lack (latency, law.json, training logs): None if it does.
type Optional = fn(&Sweep, &Path) -> Result<Option<Vec<PathBuf>>>;

/// Every plot of `sweep` into `dir`: the files written, and a line per plot skipped and why.
pub fn write_all(sweep: &Sweep, dir: &Path) -> Result<(Vec<PathBuf>, Vec<String>)> {
    if sweep.runs.iter().all(|r| r.value().is_none()) {
        bail!(
            "no finished run has a {} value: nothing to plot",
            sweep.metric
        );
    }
    let always: [(&str, Always); 6] = [
        ("fid_vs_params", scaling::fid_vs_params),
        ("fid_vs_depth", shape::fid_vs_depth),
        ("fid_vs_width", shape::fid_vs_width),
        ("fid_vs_heads", shape::fid_vs_heads),
        ("kd_vs_scratch", modes::kd_vs_scratch),
        ("pareto_params", pareto::pareto_params),
    ];
    let optional: [(&str, Optional, &str); 5] = [
        (
            "learning_steps",
            learning::learning_steps,
            "no curves.parquet (set eval.curve_points or eval.at_steps)",
        ),
        (
            "learning_flops",
            learning::learning_flops,
            "no curves.parquet (set eval.curve_points or eval.at_steps)",
        ),
        (
            "pareto_latency",
            pareto::pareto_latency,
            "no run measured latency_ms",
        ),
        (
            "parity",
            parity::parity,
            "no law.json with cv_predictions (run `ditkd fit` first)",
        ),
        (
            "training_curves",
            curves::training_curves,
            "no run has a metrics.jsonl",
        ),
    ];
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for (name, f) in always {
        files.extend(f(sweep, dir).with_context(|| format!("plot {name}"))?);
    }
    for (name, f, why) in optional {
        match f(sweep, dir).with_context(|| format!("plot {name}"))? {
            Some(f) => files.extend(f),
            None => skipped.push(format!("{name}: {why}")),
        }
    }
    if sweep.law.is_none() {
        skipped
            .push("law curves on fid_vs_params: no law.json (run `ditkd fit` first)".to_string());
    }
    Ok((files, skipped))
}

/// The stems `write_all` can write, in the order the report shows them.
pub const STEMS: [&str; 11] = [
    "fid_vs_params",
    "learning_steps",
    "learning_flops",
    "fid_vs_depth",
    "fid_vs_width",
    "fid_vs_heads",
    "kd_vs_scratch",
    "pareto_params",
    "pareto_latency",
    "parity",
    "training_curves",
];

/// Write `note` (lines split at '\n') in a strip along the bottom of `root`; returns the area
/// above it for the chart.
pub fn footnote<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    note: &str,
) -> Result<DrawingArea<DB, Shift>, DrawingAreaErrorKind<DB::ErrorType>> {
    let h = root.dim_in_pixel().1 as i32;
    let lines: Vec<&str> = note.lines().collect();
    let line_h = style::NOTE as i32 + 6;
    let (top, bottom) = root.split_vertically(h - 14 - line_h * lines.len() as i32);
    let font = (style::FAMILY, style::NOTE)
        .into_font()
        .color(&RGBColor(70, 70, 70));
    for (i, l) in lines.iter().enumerate() {
        bottom.draw_text(l, &font, (24, 6 + line_h * i as i32))?;
    }
    Ok(top)
}
