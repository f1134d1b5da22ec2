//! training_curves: every run's logged training loss against its step, coloured by budget.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{self, color, legend_position, lin_bounds, LogAxis, FAMILY};
use super::{footnote, render, DrawResult, Figure};
use crate::fmt::{num, si};
use crate::results::Sweep;

struct Curves<'a> {
    sweep: &'a Sweep,
    budgets: Vec<i64>,
}

/// None when no run has a metrics.jsonl.
pub fn training_curves(sweep: &Sweep, dir: &Path) -> Result<Option<Vec<PathBuf>>> {
    if sweep.curves.is_empty() {
        return Ok(None);
    }
    let budgets: BTreeSet<i64> = sweep.curves.iter().map(|c| c.budget).collect();
    Ok(Some(render(
        dir,
        "training_curves",
        &Curves {
            sweep,
            budgets: budgets.into_iter().collect(),
        },
    )?))
}

impl Figure for Curves<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let curves = &self.sweep.curves;
        let note = format!(
            "{} runs, every mode: the mean loss of each logging window (metrics.jsonl).",
            curves.len()
        );
        let area = footnote(root, &note)?;
        let (_, x1) = lin_bounds(
            curves.iter().flat_map(|c| c.points.iter().map(|p| p.0)),
            0.0,
        );
        let ya = LogAxis::fit(
            curves.iter().flat_map(|c| c.points.iter().map(|p| p.1)),
            0.04,
            0.04,
        );
        let mut chart = ChartBuilder::on(&area)
            .caption(
                format!("{}: training loss", self.sweep.name),
                (FAMILY, style::TITLE),
            )
            .margin(20)
            .x_label_area_size(60)
            .y_label_area_size(90)
            .build_cartesian_2d(0.0..x1.max(1.0) * 1.02, ya)?;
        chart
            .configure_mesh()
            .x_desc("training step (optimiser updates)")
            .max_light_lines(2)
            .y_desc("training loss (objective of the run's mode, log scale)")
            .axis_desc_style((FAMILY, style::LABEL))
            .label_style((FAMILY, style::TICK))
            .x_label_formatter(&|v| si(*v))
            .y_label_formatter(&|v| num(*v))
            .draw()?;
        for (i, &b) in self.budgets.iter().enumerate() {
            let c = color(i);
            for curve in curves.iter().filter(|cv| cv.budget == b) {
                let style = c.mix(0.55).stroke_width(1);
                // A single logged point would draw nothing as a line.
                if curve.points.len() == 1 {
                    chart.draw_series([Circle::new(curve.points[0], 3, style.filled())])?;
                } else {
                    chart.draw_series(LineSeries::new(curve.points.iter().copied(), style))?;
                }
            }
            chart
                .draw_series(LineSeries::new(
                    std::iter::empty::<(f64, f64)>(),
                    c.stroke_width(2),
                ))?
                .label(format!("budget {}", si(b as f64)))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                });
        }
        let labels: Vec<String> = self
            .budgets
            .iter()
            .map(|b| format!("budget {}", si(*b as f64)))
            .collect();
        let lines: Vec<Vec<(f64, f64)>> = curves.iter().map(|c| c.points.clone()).collect();
        let spot = legend_position(&chart, &labels, &[], &lines, &[]);
        style::draw_legend(&mut chart, spot)?;
        Ok(())
    }
}
