//! parity: the law's cross-validated predictions (law.json `cv_predictions`) against the measured
//! values, on log axes with the y = x line: points off the line are what the law gets wrong on
//! data it did not see.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{self, color, legend_position, LogAxis, FAMILY};
use super::{footnote, render, DrawResult, Figure};
use crate::fmt::{num, si};
use crate::results::{LawOverlay, Sweep};

struct Parity<'a> {
    sweep: &'a Sweep,
    law: &'a LawOverlay,
}

/// None when the sweep has no law (or the law no CV predictions).
pub fn parity(sweep: &Sweep, dir: &Path) -> Result<Option<Vec<PathBuf>>> {
    match &sweep.law {
        Some(law) if !law.cv.is_empty() => Ok(Some(render(dir, "parity", &Parity { sweep, law })?)),
        _ => Ok(None),
    }
}

impl Figure for Parity<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let metric = self.sweep.metric_label();
        let rmse = self
            .law
            .cv_rmse
            .map(|r| format!("; RMSE {}", num(r)))
            .unwrap_or_default();
        let held = if self.law.cv_kind == crate::law::CvKind::Kfold {
            "its fold (k-fold CV)"
        } else {
            "its budget (leave-one-budget-out CV)"
        };
        let note = format!(
            "Each run predicted by law {} fitted without {held}{rmse} on ln {metric}.",
            self.law.name
        );
        let area = footnote(root, &note)?;
        let cv = &self.law.cv;
        // One range for both axes, so y = x is the diagonal.
        let axis = LogAxis::fit(
            cv.iter().flat_map(|p| [p.measured, p.predicted]),
            0.06,
            0.06,
        );
        let (lo, hi) = (axis.lo, axis.hi);
        let mut chart = ChartBuilder::on(&area)
            .caption(
                format!(
                    "{}: law {} cross-validated {metric}",
                    self.sweep.name, self.law.name
                ),
                (FAMILY, style::TITLE),
            )
            .margin(20)
            .x_label_area_size(60)
            .y_label_area_size(90)
            .build_cartesian_2d(axis.clone(), axis)?;
        chart
            .configure_mesh()
            .x_desc(format!("measured {metric} (log scale)"))
            .y_desc(format!("predicted {metric} (log scale)"))
            .axis_desc_style((FAMILY, style::LABEL))
            .label_style((FAMILY, style::TICK))
            .x_label_formatter(&|v| num(*v))
            .y_label_formatter(&|v| num(*v))
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                [(lo, lo), (hi, hi)],
                BLACK.mix(0.6).stroke_width(1),
            ))?
            .label("y = x")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.6)));
        let budgets: BTreeSet<i64> = cv.iter().map(|p| p.budget).collect();
        let mut labels = vec!["y = x".to_string()];
        labels.extend(budgets.iter().map(|b| format!("budget {}", si(*b as f64))));
        for (i, b) in budgets.into_iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(
                    cv.iter()
                        .filter(|p| p.budget == b)
                        .map(|p| Circle::new((p.measured, p.predicted), 6, c.filled())),
                )?
                .label(format!("budget {}", si(b as f64)))
                .legend(move |(x, y)| Circle::new((x + 10, y), 6, c.filled()));
        }
        let spot = legend_position(
            &chart,
            &labels,
            &cv.iter()
                .map(|p| (p.measured, p.predicted))
                .collect::<Vec<_>>(),
            &[vec![(lo, lo), (hi, hi)]],
            &[],
        );
        style::draw_legend(&mut chart, spot)?;
        Ok(())
    }
}
