//! fid_vs_params: the metric against model size, one colour per depth, with the chosen law's
//! prediction along each depth (or along the parameter axis for a law of parameters only).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{self, color, legend_position, LogAxis, FAMILY};
use super::{footnote, render, DrawResult, Figure};
use crate::fmt::{num, si};
use crate::results::{Point, Sweep};

struct FidVsParams<'a> {
    sweep: &'a Sweep,
    points: Vec<Point>,
    depths: Vec<i64>,
}

pub fn fid_vs_params(sweep: &Sweep, dir: &Path) -> Result<Vec<PathBuf>> {
    let points = sweep.points();
    let mut depths: BTreeSet<i64> = points.iter().map(|p| p.depth).collect();
    if let Some(law) = &sweep.law {
        depths.extend(law.curves.iter().filter_map(|c| c.depth));
    }
    render(
        dir,
        "fid_vs_params",
        &FidVsParams {
            sweep,
            points,
            depths: depths.into_iter().collect(),
        },
    )
}

impl Figure for FidVsParams<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let s = self.sweep;
        let metric = s.metric_label();
        let note = match &s.law {
            Some(l) => {
                let along = match (l.heads, l.head_dim) {
                    (Some(h), _) => format!("for each depth as the width varies, with {h} heads (head dim = width / {h})"),
                    (None, Some(h)) => format!("for each depth as the width varies, at head dim {}", num(h)),
                    (None, None) => "of the parameter count alone".to_string(),
                };
                format!("Points: mean over seeds of each shape ({} runs), bars: ± 1 std.\nLines: law {}, {}, predicted {along}.", s.mode, l.name, l.formula)
            }
            None => format!("Points: mean over seeds of each shape ({} runs), bars: ± 1 std. No law.json: no law curves (run `ditkd fit`).", s.mode),
        };
        let area = footnote(root, &note)?;
        let curves = s.law.as_ref().map(|l| l.curves.as_slice()).unwrap_or(&[]);
        let xa = LogAxis::fit(
            self.points
                .iter()
                .map(|p| p.params)
                .chain(curves.iter().flat_map(|c| c.points.iter().map(|q| q.0))),
            0.04,
            0.04,
        );
        // The whole error bars (mean ± std) are inside the range: nothing is clipped at the frame.
        let (teacher, floor) = s.reference_values();
        let ya = LogAxis::fit(
            self.points
                .iter()
                .flat_map(|p| [p.mean, p.mean - p.std, p.mean + p.std])
                .chain(curves.iter().flat_map(|c| c.points.iter().map(|q| q.1)))
                .chain(teacher)
                .chain(floor.map(|(m, sd)| (m - sd).max(m * 0.5))),
            0.06,
            0.06,
        );
        let (x0, x1) = (xa.lo, xa.hi);
        let y0 = ya.lo;
        let mut chart = ChartBuilder::on(&area)
            .caption(
                format!("{}: {metric} vs parameters", s.name),
                (FAMILY, style::TITLE),
            )
            .margin(20)
            .x_label_area_size(60)
            .y_label_area_size(90)
            .build_cartesian_2d(xa, ya)?;
        chart
            .configure_mesh()
            .x_desc("parameters (count, log scale)")
            .y_desc(format!("{metric} (lower is better, log scale)"))
            .axis_desc_style((FAMILY, style::LABEL))
            .label_style((FAMILY, style::TICK))
            .x_label_formatter(&|v| si(*v))
            .y_label_formatter(&|v| num(*v))
            .draw()?;

        // The references every student is measured against: real data (floor) and the teacher.
        if let Some((m, sd)) = floor {
            chart
                .draw_series([Rectangle::new(
                    [(x0, (m - sd).max(m * 0.5)), (x1, m + sd)],
                    RGBColor(190, 190, 190).mix(0.5).filled(),
                )])?
                .label(format!("real data {} ± {}", num(m), num(sd)))
                .legend(|(x, y)| {
                    Rectangle::new(
                        [(x, y - 5), (x + 20, y + 5)],
                        RGBColor(190, 190, 190).filled(),
                    )
                });
        }
        if let Some(t) = teacher {
            let f = |k: f64| x0 * (x1 / x0).powf(k / 60.0);
            chart
                .draw_series((0..60).map(|i| {
                    PathElement::new(
                        vec![(f(i as f64), t), (f(i as f64 + 0.5), t)],
                        BLACK.stroke_width(2),
                    )
                }))?
                .label(format!("teacher {}", num(t)))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 8, y)], BLACK.stroke_width(2)));
        }
        for (i, &d) in self.depths.iter().enumerate() {
            let c = color(i);
            let pts: Vec<&Point> = self.points.iter().filter(|p| p.depth == d).collect();
            chart.draw_series(pts.iter().map(|p| {
                ErrorBar::new_vertical(
                    p.params,
                    (p.mean - p.std).max(y0),
                    p.mean,
                    p.mean + p.std,
                    c.stroke_width(2),
                    10,
                )
            }))?;
            chart
                .draw_series(
                    pts.iter()
                        .map(|p| Circle::new((p.params, p.mean), 6, c.filled())),
                )?
                .label(format!("depth {d}"))
                .legend(move |(x, y)| Circle::new((x + 10, y), 6, c.filled()));
            for curve in curves.iter().filter(|cv| cv.depth == Some(d)) {
                chart.draw_series(LineSeries::new(
                    curve.points.iter().copied(),
                    c.stroke_width(2),
                ))?;
            }
        }
        if let Some(l) = &s.law {
            for curve in curves.iter().filter(|cv| cv.depth.is_none()) {
                chart.draw_series(LineSeries::new(
                    curve.points.iter().copied(),
                    BLACK.stroke_width(2),
                ))?;
            }
            let line = if curves.iter().any(|c| c.depth.is_some()) {
                "law {} (line colour = depth)"
            } else {
                "law {}"
            };
            chart
                .draw_series(LineSeries::new(
                    std::iter::empty::<(f64, f64)>(),
                    BLACK.stroke_width(2),
                ))?
                .label(line.replace("{}", &l.name))
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2))
                });
        }
        let mut labels: Vec<String> = self.depths.iter().map(|d| format!("depth {d}")).collect();
        if let Some((m, sd)) = floor {
            labels.push(format!("real data {} ± {}", num(m), num(sd)));
        }
        if let Some(t) = teacher {
            labels.push(format!("teacher {}", num(t)));
        }
        if let Some(l) = &s.law {
            labels.push(format!("law {} (line colour = depth)", l.name));
        }
        let marks: Vec<(f64, f64)> = self.points.iter().map(|p| (p.params, p.mean)).collect();
        let lines: Vec<Vec<(f64, f64)>> = curves
            .iter()
            .map(|c| c.points.clone())
            .chain(self.points.iter().map(|p| {
                vec![
                    (p.params, (p.mean - p.std).max(y0)),
                    (p.params, p.mean + p.std),
                ]
            }))
            .collect();
        let spot = legend_position(&chart, &labels, &marks, &lines, &[]);
        style::draw_legend(&mut chart, spot)?;
        Ok(())
    }
}
