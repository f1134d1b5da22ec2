//! learning_steps, learning_flops: each shape's metric as it trains (its learning curve, mean over
//! seeds), one panel per budget, against optimiser steps or against training FLOPs (teacher
//! forwards included for KD), with the teacher as a dashed line and real data as a grey band.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{self, color, LogAxis, FAMILY};
use super::{footnote, render, DrawResult, Figure};
use crate::fmt::{num, si};
use crate::results::{LearnPoint, Sweep};

/// The x axis of a learning-curve figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Along {
    Steps,
    Flops,
}

impl Along {
    fn x(self, p: &LearnPoint) -> f64 {
        match self {
            Along::Steps => p.step,
            Along::Flops => p.train_flops,
        }
    }
    fn label(self) -> &'static str {
        match self {
            Along::Steps => "training step (optimiser updates, log scale)",
            Along::Flops => {
                "training FLOPs (student fwd+bwd, plus teacher forwards for KD; log scale)"
            }
        }
    }
}

/// One line: a shape's mean over seeds at each evaluated x.
struct Line {
    label: String,
    points: Vec<(f64, f64)>,
}

struct Learning<'a> {
    sweep: &'a Sweep,
    along: Along,
    panels: Vec<(i64, Vec<Line>)>,
}

fn panels(sweep: &Sweep, along: Along) -> Vec<(i64, Vec<Line>)> {
    let mut by: BTreeMap<(i64, i64, i64, i64), BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    let mut xs: BTreeMap<(i64, i64, i64, i64, u64), f64> = BTreeMap::new();
    for p in sweep.learning.iter().filter(|p| p.mode == sweep.mode) {
        let key = (p.budget, p.depth, p.width, p.heads);
        let step = p.step as u64;
        by.entry(key)
            .or_default()
            .entry(step)
            .or_default()
            .push(p.value);
        xs.insert((p.budget, p.depth, p.width, p.heads, step), along.x(p));
    }
    let budgets: BTreeSet<i64> = by.keys().map(|k| k.0).collect();
    budgets
        .into_iter()
        .map(|b| {
            let lines = by
                .iter()
                .filter(|(k, _)| k.0 == b)
                .map(|(&(b, d, w, h), steps)| Line {
                    label: format!("d{d} w{w} h{h}"),
                    points: steps
                        .iter()
                        .map(|(&s, v)| {
                            (xs[&(b, d, w, h, s)], v.iter().sum::<f64>() / v.len() as f64)
                        })
                        .collect(),
                })
                .collect();
            (b, lines)
        })
        .collect()
}

/// None when the sweep has no learning curves.
pub fn learning_steps(sweep: &Sweep, dir: &Path) -> Result<Option<Vec<PathBuf>>> {
    draw(sweep, dir, Along::Steps, "learning_steps")
}

/// None when the sweep has no learning curves.
pub fn learning_flops(sweep: &Sweep, dir: &Path) -> Result<Option<Vec<PathBuf>>> {
    draw(sweep, dir, Along::Flops, "learning_flops")
}

fn draw(sweep: &Sweep, dir: &Path, along: Along, stem: &str) -> Result<Option<Vec<PathBuf>>> {
    let panels = panels(sweep, along);
    if panels.is_empty()
        || panels
            .iter()
            .all(|(_, l)| l.iter().all(|l| l.points.len() < 2))
    {
        return Ok(None);
    }
    Ok(Some(render(
        dir,
        stem,
        &Learning {
            sweep,
            along,
            panels,
        },
    )?))
}

impl Figure for Learning<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let s = self.sweep;
        let metric = s.metric_label();
        let (teacher, floor) = s.reference_values();
        let mut note = format!("Lines: each shape's {metric} of its EMA weights during training ({} runs, mean over seeds), one panel per budget.", s.mode);
        if let Some(t) = teacher {
            note += &format!(
                "\nDashed: the teacher ({}) under the same protocol.",
                num(t)
            );
        }
        if let Some((m, sd)) = floor {
            note += &format!(
                " Grey band: real training images ({} ± {}), the floor at this sample count.",
                num(m),
                num(sd)
            );
        }
        let area = footnote(root, &note)?;
        let (head, area) = area.split_vertically(48);
        let along = match self.along {
            Along::Steps => "training steps",
            Along::Flops => "training FLOPs",
        };
        head.draw_text(
            &format!(
                "{}: {metric} as the students learn, against {along}",
                s.name
            ),
            &(FAMILY, style::TITLE).into_font().color(&BLACK),
            (24, 10),
        )?;
        let cells = area.split_evenly((1, self.panels.len()));
        let all = self
            .panels
            .iter()
            .flat_map(|(_, ls)| ls.iter().flat_map(|l| l.points.iter().copied()));
        let ys: Vec<f64> = all
            .clone()
            .map(|p| p.1)
            .chain(teacher)
            .chain(floor.map(|f| (f.0 - f.1).max(f.0 * 0.5)))
            .collect();
        for (cell, (budget, lines)) in cells.iter().zip(&self.panels) {
            let xa = LogAxis::fit(
                lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)),
                0.04,
                0.04,
            );
            let ya = LogAxis::fit(ys.iter().copied(), 0.06, 0.06);
            let (x0, x1) = (xa.lo, xa.hi);
            let mut chart = ChartBuilder::on(cell)
                .caption(
                    format!("budget {}", si(*budget as f64)),
                    (FAMILY, style::LABEL),
                )
                .margin(14)
                .x_label_area_size(50)
                .y_label_area_size(70)
                .build_cartesian_2d(xa, ya)?;
            chart
                .configure_mesh()
                .x_desc(self.along.label())
                .y_desc(format!("{metric} (log scale)"))
                .axis_desc_style((FAMILY, style::NOTE))
                .label_style((FAMILY, style::TICK))
                .x_label_formatter(&|v| si(*v))
                .y_label_formatter(&|v| num(*v))
                .draw()?;
            style::draw_references(&mut chart, |k| x0 * (x1 / x0).powf(k), teacher, floor)?;
            for (i, l) in lines.iter().enumerate() {
                let c = color(i);
                chart
                    .draw_series(LineSeries::new(l.points.iter().copied(), c.stroke_width(2)))?
                    .label(l.label.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                    });
                chart.draw_series(l.points.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
            }
            chart
                .configure_series_labels()
                .label_font((FAMILY, style::NOTE))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK.mix(0.3))
                .position(SeriesLabelPosition::UpperRight)
                .draw()?;
        }
        Ok(())
    }
}
