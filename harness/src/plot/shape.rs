//! fid_vs_depth, fid_vs_width, fid_vs_heads: inside each budget, how the metric moves with one
//! shape variable. A budget fixes the parameter count, so a deeper model is a narrower one: the
//! line follows the best shape at each value, the faint points are the budget's other shapes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{self, color, legend_position, lin_bounds, LogAxis, Ticks, FAMILY};
use super::{footnote, render, DrawResult, Figure};
use crate::fmt::{num, si};
use crate::results::{Point, Sweep};

/// One budget: the best point per x value (the line) and every point (faint).
struct Series {
    label: String,
    color: RGBColor,
    best: Vec<(f64, f64, f64)>,
    all: Vec<(f64, f64)>,
}

struct PerBudget {
    caption: String,
    x_desc: String,
    y_desc: String,
    note: String,
    /// Ticks at the values the sweep ran (depths and head counts are few and discrete).
    x_keys: Vec<f64>,
    series: Vec<Series>,
    /// The teacher's value and the real-data floor (mean, std) under the students' protocol.
    teacher: Option<f64>,
    floor: Option<(f64, f64)>,
}

fn per_budget(sweep: &Sweep, x_of: fn(&Point) -> i64) -> (Vec<Series>, Vec<f64>) {
    let mut by_budget: BTreeMap<i64, Vec<Point>> = BTreeMap::new();
    for p in sweep.points() {
        by_budget.entry(p.budget).or_default().push(p);
    }
    let mut keys = std::collections::BTreeSet::new();
    let series = by_budget
        .into_iter()
        .enumerate()
        .map(|(i, (budget, pts))| {
            let mut best: BTreeMap<i64, &Point> = BTreeMap::new();
            for p in &pts {
                keys.insert(x_of(p));
                let e = best.entry(x_of(p)).or_insert(p);
                if p.mean < e.mean {
                    *e = p;
                }
            }
            Series {
                label: format!("budget {}", si(budget as f64)),
                color: color(i),
                best: best
                    .iter()
                    .map(|(x, p)| (*x as f64, p.mean, p.std))
                    .collect(),
                all: pts.iter().map(|p| (x_of(p) as f64, p.mean)).collect(),
            }
        })
        .collect();
    (series, keys.into_iter().map(|k| k as f64).collect())
}

fn write(
    sweep: &Sweep,
    dir: &Path,
    stem: &str,
    var: &str,
    unit: &str,
    x_of: fn(&Point) -> i64,
) -> Result<Vec<PathBuf>> {
    let (series, x_keys) = per_budget(sweep, x_of);
    let metric = sweep.metric_label();
    let (teacher, floor) = sweep.reference_values();
    let fig = PerBudget {
        caption: format!("{}: {metric} vs {var} at fixed budget", sweep.name),
        x_desc: format!("{var} ({unit})"),
        y_desc: format!("{metric} (lower is better, log scale)"),
        note: format!(
            "{} runs. Line: the budget's best shape at each {var} value (mean over seeds, bars ± 1 std); faint points: the budget's other shapes.{}",
            sweep.mode,
            if teacher.is_some() { " Dashed: the teacher; grey band: real data (the floor)." } else { "" }
        ),
        x_keys,
        series,
        teacher,
        floor,
    };
    render(dir, stem, &fig)
}

pub fn fid_vs_depth(sweep: &Sweep, dir: &Path) -> Result<Vec<PathBuf>> {
    write(sweep, dir, "fid_vs_depth", "depth", "DiT blocks", |p| {
        p.depth
    })
}

pub fn fid_vs_width(sweep: &Sweep, dir: &Path) -> Result<Vec<PathBuf>> {
    write(
        sweep,
        dir,
        "fid_vs_width",
        "width",
        "hidden channels",
        |p| p.width,
    )
}

pub fn fid_vs_heads(sweep: &Sweep, dir: &Path) -> Result<Vec<PathBuf>> {
    write(
        sweep,
        dir,
        "fid_vs_heads",
        "heads",
        "attention heads",
        |p| p.heads,
    )
}

impl Figure for PerBudget {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let area = footnote(root, &self.note)?;
        let xs = self.x_keys.iter().copied();
        // Half the smallest gap (or 0.5) on each side keeps the outermost points off the frame.
        let gap = self
            .x_keys
            .windows(2)
            .map(|w| w[1] - w[0])
            .fold(f64::INFINITY, f64::min);
        let (x0, x1) = lin_bounds(xs, if gap.is_finite() { gap / 2.0 } else { 0.5 });
        let ya = LogAxis::fit(
            self.series
                .iter()
                .flat_map(|s| {
                    s.best
                        .iter()
                        .flat_map(|b| [b.1, b.1 - b.2, b.1 + b.2])
                        .chain(s.all.iter().map(|a| a.1))
                })
                .chain(self.teacher)
                .chain(self.floor.map(|(m, sd)| (m - sd).max(m * 0.5))),
            0.06,
            0.06,
        );
        let y0 = ya.lo;
        let mut chart = ChartBuilder::on(&area)
            .caption(&self.caption, (FAMILY, style::TITLE))
            .margin(20)
            .x_label_area_size(60)
            .y_label_area_size(90)
            .build_cartesian_2d(
                Ticks {
                    lo: x0,
                    hi: x1,
                    keys: thin(&self.x_keys, 12),
                },
                ya,
            )?;
        chart
            .configure_mesh()
            .x_desc(&self.x_desc)
            .y_desc(&self.y_desc)
            .axis_desc_style((FAMILY, style::LABEL))
            .label_style((FAMILY, style::TICK))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| num(*v))
            .draw()?;
        // The references: real data (grey band, the floor at this sample count) and the teacher (dashed).
        style::draw_references(&mut chart, |k| x0 + (x1 - x0) * k, self.teacher, self.floor)?;
        for s in &self.series {
            let c = s.color;
            chart.draw_series(
                s.all
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 4, c.mix(0.35).filled())),
            )?;
            chart.draw_series(s.best.iter().map(|&(x, m, sd)| {
                ErrorBar::new_vertical(x, (m - sd).max(y0), m, m + sd, c.stroke_width(2), 10)
            }))?;
            chart.draw_series(LineSeries::new(
                s.best.iter().map(|b| (b.0, b.1)),
                c.stroke_width(2),
            ))?;
            chart
                .draw_series(
                    s.best
                        .iter()
                        .map(|&(x, m, _)| Circle::new((x, m), 6, c.filled())),
                )?
                .label(&s.label)
                .legend(move |(x, y)| Circle::new((x + 10, y), 6, c.filled()));
        }
        let labels: Vec<String> = self.series.iter().map(|s| s.label.clone()).collect();
        let marks: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| {
                s.all
                    .iter()
                    .copied()
                    .chain(s.best.iter().map(|b| (b.0, b.1)))
            })
            .collect();
        let lines: Vec<Vec<(f64, f64)>> = self
            .series
            .iter()
            .flat_map(|s| {
                std::iter::once(s.best.iter().map(|b| (b.0, b.1)).collect()).chain(
                    s.best
                        .iter()
                        .map(|&(x, m, sd)| vec![(x, (m - sd).max(y0)), (x, m + sd)]),
                )
            })
            .collect();
        let spot = legend_position(&chart, &labels, &marks, &lines, &[]);
        style::draw_legend(&mut chart, spot)?;
        Ok(())
    }
}

/// At most about `max` of the sorted `keys`, evenly picked, so many widths do not overprint.
fn thin(keys: &[f64], max: usize) -> Vec<f64> {
    let every = keys.len().div_ceil(max).max(1);
    keys.iter().step_by(every).copied().collect()
}
