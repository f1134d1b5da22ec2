//! pareto_latency, pareto_params: every run faintly, and the front of shapes (seed means, every
//! mode) that no other shape beats on both cost and quality, as a step line.

use std::path::{Path, PathBuf};

use anyhow::Result;
use distill::setup::Setup;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{self, color, legend_position, LogAxis, FAMILY};
use super::{footnote, render, DrawResult, Figure};
use crate::fmt::{num, si};
use crate::results::{Point, Run, Sweep};

/// Indices of the points no other point beats on both coordinates (both minimised), by ascending x.
pub fn front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..points.len())
        .filter(|&i| points[i].0.is_finite() && points[i].1.is_finite())
        .collect();
    idx.sort_by(|&a, &b| {
        points[a]
            .0
            .total_cmp(&points[b].0)
            .then(points[a].1.total_cmp(&points[b].1))
    });
    let mut best = f64::INFINITY;
    idx.into_iter()
        .filter(|&i| {
            let keep = points[i].1 < best;
            best = best.min(points[i].1);
            keep
        })
        .collect()
}

struct Pareto {
    caption: String,
    x_desc: String,
    y_desc: String,
    note: String,
    modes: Vec<Setup>,
    /// (x, y, mode index) of every usable run.
    runs: Vec<(f64, f64, usize)>,
    /// (x, y, mode index, label) of the front's shapes, by ascending x.
    front: Vec<(f64, f64, usize, String)>,
    x_fmt: fn(&f64) -> String,
    /// The teacher's value and the real-data floor (mean, std) under the students' protocol.
    teacher: Option<f64>,
    floor: Option<(f64, f64)>,
}

fn build(
    sweep: &Sweep,
    cost: &str,
    run_x: fn(&Run) -> Option<f64>,
    point_x: fn(&Point) -> Option<f64>,
) -> Option<Pareto> {
    let modes = crate::results::by_name(sweep.runs.iter().filter_map(|r| r.mode));
    let mode_ix = |m: Setup| modes.iter().position(|x| *x == m).unwrap_or(0);
    let runs: Vec<(f64, f64, usize)> = sweep
        .runs
        .iter()
        .filter_map(|r| {
            Some((
                run_x(r).filter(|x| x.is_finite() && *x > 0.0)?,
                r.value()?,
                r.mode.map_or(0, mode_ix),
            ))
        })
        .collect();
    if runs.is_empty() {
        return None;
    }
    let pts: Vec<Point> = sweep
        .points_all()
        .into_iter()
        .filter(|p| point_x(p).is_some_and(|x| x > 0.0))
        .collect();
    let xy: Vec<(f64, f64)> = pts
        .iter()
        .map(|p| (point_x(p).unwrap_or(0.0), p.mean))
        .collect();
    let front = front(&xy)
        .into_iter()
        .map(|i| {
            (
                xy[i].0,
                xy[i].1,
                mode_ix(pts[i].mode),
                format!("{} {}", pts[i].shape(), pts[i].mode),
            )
        })
        .collect();
    let metric = sweep.metric_label();
    Some(Pareto {
        caption: format!("{}: {metric} vs {cost}, Pareto front", sweep.name),
        x_desc: String::new(),
        y_desc: format!("{metric} (lower is better, log scale)"),
        note: "Faint: every run (colour = mode). Black steps: shapes (mean over seeds) that no other shape beats on both axes.".into(),
        modes,
        runs,
        front,
        x_fmt: |v| num(*v),
        teacher: sweep.reference_values().0,
        floor: sweep.reference_values().1,
    })
}

pub fn pareto_latency(sweep: &Sweep, dir: &Path) -> Result<Option<Vec<PathBuf>>> {
    let Some(mut fig) = build(sweep, "latency", |r| r.latency_ms, |p| p.latency_ms) else {
        return Ok(None);
    };
    fig.x_desc = "latency (ms per image, batch 1, all sampler steps; log scale)".into();
    Ok(Some(render(dir, "pareto_latency", &fig)?))
}

pub fn pareto_params(sweep: &Sweep, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut fig = build(sweep, "parameters", |r| Some(r.params), |p| Some(p.params))
        .ok_or_else(|| anyhow::anyhow!("no usable run has a parameter count"))?;
    fig.x_desc = "parameters (count, log scale)".into();
    fig.x_fmt = |v| si(*v);
    render(dir, "pareto_params", &fig)
}

impl Figure for Pareto {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let area = footnote(root, &self.note)?;
        // Room on the right and at the top for the front's labels (drawn above and right of each point).
        let xa = LogAxis::fit(self.runs.iter().map(|r| r.0), 0.04, 0.14);
        let ya = LogAxis::fit(
            self.runs
                .iter()
                .map(|r| r.1)
                .chain(self.front.iter().map(|f| f.1))
                .chain(self.teacher)
                .chain(self.floor.map(|(m, sd)| (m - sd).max(m * 0.5))),
            0.06,
            0.1,
        );
        let (x0, x1) = (xa.lo, xa.hi);
        let mut chart = ChartBuilder::on(&area)
            .caption(&self.caption, (FAMILY, style::TITLE))
            .margin(20)
            .x_label_area_size(60)
            .y_label_area_size(90)
            .build_cartesian_2d(xa, ya)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_desc)
            .y_desc(&self.y_desc)
            .axis_desc_style((FAMILY, style::LABEL))
            .label_style((FAMILY, style::TICK))
            .x_label_formatter(&self.x_fmt)
            .y_label_formatter(&|v| num(*v))
            .draw()?;
        // The references: real data (grey band, the floor at this sample count) and the teacher (dashed).
        style::draw_references(
            &mut chart,
            |k| x0 * (x1 / x0).powf(k),
            self.teacher,
            self.floor,
        )?;
        for (k, mode) in self.modes.iter().enumerate() {
            let c = color(k);
            chart
                .draw_series(
                    self.runs
                        .iter()
                        .filter(|r| r.2 == k)
                        .map(|r| Circle::new((r.0, r.1), 4, c.mix(0.3).filled())),
                )?
                .label(format!("{mode} run"))
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, c.mix(0.5).filled()));
        }
        // The step line: flat from each front point until the next one improves the metric.
        let mut steps = Vec::new();
        for (i, p) in self.front.iter().enumerate() {
            steps.push((p.0, p.1));
            match self.front.get(i + 1) {
                Some(next) => steps.push((next.0, p.1)),
                None => steps.push((x1, p.1)),
            }
        }
        chart
            .draw_series(LineSeries::new(
                steps.iter().copied(),
                BLACK.stroke_width(2),
            ))?
            .label("Pareto front (seed means)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        let font = (FAMILY, style::NOTE).into_font().color(&BLACK);
        let mut marks: Vec<(f64, f64)> = self.runs.iter().map(|r| (r.0, r.1)).collect();
        let lines = vec![steps];
        let mut boxes = Vec::new();
        for (x, y, k, label) in &self.front {
            chart.draw_series([
                Circle::new((*x, *y), 7, color(*k).filled()),
                Circle::new((*x, *y), 7, BLACK.stroke_width(2)),
            ])?;
            chart.draw_series([
                EmptyElement::at((*x, *y)) + Text::new(label.clone(), (8, -22), font.clone())
            ])?;
            marks.push((*x, *y));
            // The label's box, which the legend must not cover either.
            let (w, h) = chart
                .plotting_area()
                .estimate_text_size(label, &font)
                .unwrap_or((100, 14));
            let (px, py) = chart.backend_coord(&(*x, *y));
            boxes.push(((px + 8, py - 22), (px + 8 + w as i32, py - 22 + h as i32)));
        }
        let mut labels: Vec<String> = self.modes.iter().map(|m| format!("{m} run")).collect();
        labels.push("Pareto front (seed means)".into());
        let spot = legend_position(&chart, &labels, &marks, &lines, &boxes);
        style::draw_legend(&mut chart, spot)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::front;

    #[test]
    fn front_keeps_only_undominated_points() {
        let pts = [(1.0, 5.0), (2.0, 3.0), (3.0, 4.0), (4.0, 1.0), (2.0, 6.0)];
        assert_eq!(front(&pts), vec![0, 1, 3]);
    }
}
