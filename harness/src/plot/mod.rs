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

/// How one plot is drawn.
#[derive(Clone, Copy)]
pub enum Draw {
    /// Every sweep with measured runs has it.
    Always(fn(&Sweep, &Path) -> Result<Vec<PathBuf>>),
    /// It needs data a sweep may lack (latency, law.json, training logs): `None` if it does, and
    /// the reason the report gives for skipping it.
    Optional(
        fn(&Sweep, &Path) -> Result<Option<Vec<PathBuf>>>,
        &'static str,
    ),
}

/// One plot: its file stem (`<stem>.png`, `<stem>.svg`) and how it is drawn.
#[derive(Clone, Copy)]
pub struct Plot {
    pub stem: &'static str,
    pub draw: Draw,
}

const NO_CURVES: &str = "no curves.parquet (set eval.curve_points or eval.at_steps)";

/// Every plot, in the order the report shows them. Adding a plot is its file and one line here.
pub const PLOTS: &[Plot] = &[
    Plot {
        stem: "fid_vs_params",
        draw: Draw::Always(scaling::fid_vs_params),
    },
    Plot {
        stem: "learning_steps",
        draw: Draw::Optional(learning::learning_steps, NO_CURVES),
    },
    Plot {
        stem: "learning_flops",
        draw: Draw::Optional(learning::learning_flops, NO_CURVES),
    },
    Plot {
        stem: "fid_vs_depth",
        draw: Draw::Always(shape::fid_vs_depth),
    },
    Plot {
        stem: "fid_vs_width",
        draw: Draw::Always(shape::fid_vs_width),
    },
    Plot {
        stem: "fid_vs_heads",
        draw: Draw::Always(shape::fid_vs_heads),
    },
    Plot {
        stem: "kd_vs_scratch",
        draw: Draw::Always(modes::kd_vs_scratch),
    },
    Plot {
        stem: "pareto_params",
        draw: Draw::Always(pareto::pareto_params),
    },
    Plot {
        stem: "pareto_latency",
        draw: Draw::Optional(pareto::pareto_latency, "no run measured latency_ms"),
    },
    Plot {
        stem: "parity",
        draw: Draw::Optional(
            parity::parity,
            "no law.json with cv_predictions (run `ditkd fit` first)",
        ),
    },
    Plot {
        stem: "training_curves",
        draw: Draw::Optional(curves::training_curves, "no run has a metrics.jsonl"),
    },
];

/// Every plot of `sweep` into `dir`: the files written, and a line per plot skipped and why.
pub fn write_all(sweep: &Sweep, dir: &Path) -> Result<(Vec<PathBuf>, Vec<String>)> {
    if sweep.runs.iter().all(|r| r.value().is_none()) {
        bail!(
            "no finished run has a {} value: nothing to plot",
            sweep.metric
        );
    }
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for p in PLOTS {
        let name = p.stem;
        match p.draw {
            Draw::Always(f) => files.extend(f(sweep, dir).with_context(|| format!("plot {name}"))?),
            Draw::Optional(f, why) => {
                match f(sweep, dir).with_context(|| format!("plot {name}"))? {
                    Some(f) => files.extend(f),
                    None => skipped.push(format!("{name}: {why}")),
                }
            }
        }
    }
    if sweep.law.is_none() {
        skipped
            .push("law curves on fid_vs_params: no law.json (run `ditkd fit` first)".to_string());
    }
    Ok((files, skipped))
}

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
