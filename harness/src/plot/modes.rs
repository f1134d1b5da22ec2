//! kd_vs_scratch: per budget, the mean ± std of every distillation mode the sweep ran, side by
//! side (on the shapes all modes share where there are any; see `Sweep::compare_modes`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use distill::setup::Setup;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{self, color, legend_position, LogAxis, Ticks, FAMILY};
use super::{footnote, render, DrawResult, Figure};
use crate::fmt::{num, si};
use crate::results::{ModeComparison, Sweep};

struct KdVsScratch<'a> {
    sweep: &'a Sweep,
    cmp: Vec<ModeComparison>,
    modes: Vec<Setup>,
}

pub fn kd_vs_scratch(sweep: &Sweep, dir: &Path) -> Result<Vec<PathBuf>> {
    let cmp = sweep.compare_modes();
    let modes = crate::results::modes_compared(&cmp);
    render(dir, "kd_vs_scratch", &KdVsScratch { sweep, cmp, modes })
}

impl Figure for KdVsScratch<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let metric = self.sweep.metric_label();
        let matched = self.cmp.iter().filter(|c| c.matched_shapes > 0).count();
        let note = format!(
            "Mean over runs, bars ± 1 std. {matched} of {} budgets compare only the shapes every mode ran; the others use all runs of each mode.",
            self.cmp.len()
        );
        let area = footnote(root, &note)?;
        let n = self.cmp.len().max(1) as f64;
        let (teacher, floor) = self.sweep.reference_values();
        let ya = LogAxis::fit(
            self.cmp
                .iter()
                .flat_map(|c| {
                    c.stats
                        .iter()
                        .flat_map(|s| [s.mean, s.mean - s.std, s.mean + s.std])
                })
                .chain(teacher)
                .chain(floor.map(|(m, sd)| (m - sd).max(m * 0.5))),
            0.06,
            0.06,
        );
        let y0 = ya.lo;
        let keys: Vec<f64> = (0..self.cmp.len()).map(|i| i as f64).collect();
        let labels: Vec<String> = self.cmp.iter().map(|c| si(c.budget as f64)).collect();
        let fmt = |v: &f64| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        let mut chart = ChartBuilder::on(&area)
            .caption(
                format!("{}: {metric} by distillation mode", self.sweep.name),
                (FAMILY, style::TITLE),
            )
            .margin(20)
            .x_label_area_size(60)
            .y_label_area_size(90)
            .build_cartesian_2d(
                Ticks {
                    lo: -0.5,
                    hi: n - 0.5,
                    keys,
                },
                ya,
            )?;
        chart
            .configure_mesh()
            .x_desc("parameter budget (count)")
            .y_desc(format!("{metric} (lower is better, log scale)"))
            .axis_desc_style((FAMILY, style::LABEL))
            .label_style((FAMILY, style::TICK))
            .x_label_formatter(&fmt)
            .y_label_formatter(&|v| num(*v))
            .disable_x_mesh()
            .draw()?;
        // The references: real data (grey band, the floor at this sample count) and the teacher (dashed).
        style::draw_references(&mut chart, |k| -0.5 + n * k, teacher, floor)?;
        // Modes sit side by side inside a budget's slot, at a fixed order across budgets.
        let m = self.modes.len().max(1) as f64;
        let (mut marks, mut bars) = (Vec::new(), Vec::new());
        for (k, mode) in self.modes.iter().enumerate() {
            let c = color(k);
            let dx = (k as f64 - (m - 1.0) / 2.0) * 0.6 / m;
            let pts: Vec<(f64, f64, f64)> = self
                .cmp
                .iter()
                .enumerate()
                .filter_map(|(i, cmp)| {
                    cmp.stats
                        .iter()
                        .find(|s| s.mode == *mode)
                        .map(|s| (i as f64 + dx, s.mean, s.std))
                })
                .collect();
            marks.extend(pts.iter().map(|&(x, mu, _)| (x, mu)));
            bars.extend(
                pts.iter()
                    .map(|&(x, mu, sd)| vec![(x, (mu - sd).max(y0)), (x, mu + sd)]),
            );
            chart.draw_series(pts.iter().map(|&(x, mu, sd)| {
                ErrorBar::new_vertical(x, (mu - sd).max(y0), mu, mu + sd, c.stroke_width(2), 12)
            }))?;
            chart
                .draw_series(
                    pts.iter()
                        .map(|&(x, mu, _)| Circle::new((x, mu), 7, c.filled())),
                )?
                .label(mode.to_string())
                .legend(move |(x, y)| Circle::new((x + 10, y), 7, c.filled()));
        }
        let labels: Vec<String> = self.modes.iter().map(|m| m.to_string()).collect();
        let spot = legend_position(&chart, &labels, &marks, &bars, &[]);
        style::draw_legend(&mut chart, spot)?;
        Ok(())
    }
}
