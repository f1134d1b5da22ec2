//! A run's learning curve: its EMA weights evaluated at several steps of training, one row per
//! point in `curve.jsonl` (rewritten atomically), gathered by the sweep into `curves.parquet`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::eval::EvalResult;

/// One evaluation of a run part-way (or all the way) through training.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CurveRow {
    pub step: usize,
    /// Training images seen (step x batch).
    pub images_seen: usize,
    /// Cumulative training FLOPs (analytic): the student's forward and backward, plus the
    /// teacher's forwards for KD (cached or not, they are part of the method's cost).
    pub train_flops: f64,
    /// Training wall time up to this step (s).
    pub train_wall_s: f64,
    /// Wall time of this evaluation (s).
    pub eval_wall_s: f64,
    #[serde(flatten)]
    pub metrics: EvalResult,
}

/// `curve.jsonl` of a run directory.
pub struct CurveLog {
    path: PathBuf,
    rows: Vec<CurveRow>,
}

impl CurveLog {
    /// The rows written so far (none for a new run); rows beyond `upto` (a checkpoint older than
    /// the log, which a crash between the two cannot produce, but a copied directory can) are dropped.
    pub fn open(dir: &Path, upto: usize) -> Result<Self> {
        let path = dir.join("curve.jsonl");
        let mut rows = Vec::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let row: CurveRow = serde_json::from_str(line).with_context(|| {
                    format!("{}: line {}: corrupt curve row", path.display(), i + 1)
                })?;
                if row.step <= upto {
                    rows.push(row);
                }
            }
        }
        Ok(Self { path, rows })
    }

    pub fn has(&self, step: usize) -> bool {
        self.rows.iter().any(|r| r.step == step)
    }

    pub fn rows(&self) -> &[CurveRow] {
        &self.rows
    }

    /// Add (or replace) the row of `row.step` and rewrite the file atomically.
    pub fn put(&mut self, row: CurveRow) -> Result<()> {
        self.rows.retain(|r| r.step != row.step);
        self.rows.push(row);
        self.rows.sort_by_key(|r| r.step);
        let mut text = String::new();
        for r in &self.rows {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        dit::io::write_atomic(&self.path, text.as_bytes())
    }

    /// Seconds spent evaluating the curve's points before the last.
    pub fn eval_secs_before(&self, last: usize) -> f64 {
        self.rows
            .iter()
            .filter(|r| r.step < last)
            .map(|r| r.eval_wall_s)
            .sum()
    }
}
