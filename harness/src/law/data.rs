//! From a sweep's table to the points a law is fitted on, and the students' base config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use distill::run::RunStatus;
use distill::setup::Setup;
use dit::DitConfig;
use polars::prelude::*;

use super::{Feat, Shape};

/// One usable run: status ok, the fitted mode, a finite positive metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub run_id: String,
    pub budget: u64,
    pub shape: Shape,
    pub seed: Option<i64>,
    /// Training steps of the run (null when the table has no `steps` column).
    pub steps: Option<u64>,
    /// The metric (not its log).
    pub y: f64,
}

/// One learning-curve point (a row of `curves.parquet`) of a fitted run.
#[derive(Debug, Clone, PartialEq)]
pub struct CurvePoint {
    pub run_id: String,
    pub budget: u64,
    pub shape: Shape,
    pub step: u64,
    pub train_flops: f64,
    pub y: f64,
}

/// The learning-curve points of the runs `run_ids` (the fitted ones) with a finite positive
/// `metric`, a positive step and positive training FLOPs. Empty when the sweep has no
/// `curves.parquet`; errors name the file.
pub fn curve_points(dir: &Path, metric: &str, runs: &[Point]) -> Result<Vec<CurvePoint>> {
    let path = dir.join("curves.parquet");
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let t = Table::load_file(&path)?;
    let ids = t.strs("run_id")?;
    let step = t.f64s("step")?;
    let flops = t.f64s("train_flops")?;
    let ys = t.f64s(metric)?;
    let by_id: BTreeMap<&str, &Point> = runs.iter().map(|q| (q.run_id.as_str(), q)).collect();
    let mut out = Vec::new();
    for i in 0..t.df.height() {
        let Some(run) = ids[i].as_deref().and_then(|id| by_id.get(id)) else {
            continue;
        };
        let (Some(st), Some(fl), Some(y)) = (step[i], flops[i], ys[i]) else {
            continue;
        };
        if !(st >= 1.0 && fl > 0.0 && y > 0.0 && y.is_finite() && fl.is_finite()) {
            continue;
        }
        out.push(CurvePoint {
            run_id: run.run_id.clone(),
            budget: run.budget,
            shape: run.shape,
            step: st as u64,
            train_flops: fl,
            y,
        });
    }
    Ok(out)
}

/// The step count the laws without a compute term are fitted at, the runs at it, and how many
/// were left out: every run when they agree (or the table has no `steps` column); otherwise
/// the step count most runs share (the larger among ties) — a racing sweep's pruned shapes
/// stopped earlier, and a law without a compute term cannot compare them with finished ones.
pub fn at_common_step(pts: &[Point]) -> (Option<u64>, Vec<Point>, usize) {
    let Some(step) = modal_step(pts.iter().filter_map(|q| q.steps)) else {
        return (None, pts.to_vec(), 0);
    };
    let kept: Vec<Point> = pts
        .iter()
        .filter(|q| q.steps.is_none_or(|s| s == step))
        .cloned()
        .collect();
    let left = pts.len() - kept.len();
    (Some(step), kept, left)
}

impl Point {
    pub fn feat(&self) -> Feat {
        self.shape.feat()
    }
}

/// `<dir>/runs.parquet`, its SHA-256 and its contents.
pub struct Table {
    pub path: PathBuf,
    pub hash: String,
    pub df: DataFrame,
}

use distill::checkpoint::file_hash;

impl Table {
    pub fn load(dir: &Path) -> Result<Table> {
        let path = dir.join("runs.parquet");
        if !path.is_file() {
            bail!(
                "{}: no table (run `ditkd sweep` into {} first)",
                path.display(),
                dir.display()
            );
        }
        let hash = file_hash(&path)?;
        let df = crate::table::read(dir)?;
        Ok(Table { path, hash, df })
    }

    /// Any Parquet table (e.g. `latency.parquet`).
    pub fn load_file(path: &Path) -> Result<Table> {
        let f = std::fs::File::open(path)
            .with_context(|| format!("{}: cannot open", path.display()))?;
        let df = ParquetReader::new(f)
            .finish()
            .map_err(|e| anyhow::anyhow!("{}: corrupt table: {e}", path.display()))?;
        Ok(Table {
            path: path.to_path_buf(),
            hash: file_hash(path)?,
            df,
        })
    }

    fn need(&self, name: &str) -> Result<&Column> {
        self.df.column(name).map_err(|_| {
            let names: Vec<String> = self
                .df
                .get_column_names()
                .iter()
                .map(|s| s.to_string())
                .collect();
            anyhow::anyhow!(
                "{}: no column `{name}` (columns: {})",
                self.path.display(),
                names.join(", ")
            )
        })
    }

    /// A numeric column as f64 (null -> None); missing column -> error naming the file.
    pub fn f64s(&self, name: &str) -> Result<Vec<Option<f64>>> {
        let c = self.need(name)?.cast(&DataType::Float64).map_err(|e| {
            anyhow::anyhow!(
                "{}: column `{name}` is not numeric: {e}",
                self.path.display()
            )
        })?;
        Ok(c.f64()?.iter().collect())
    }

    /// A numeric column, or None if the table lacks it.
    pub fn f64s_opt(&self, name: &str) -> Option<Vec<Option<f64>>> {
        self.df.column(name).ok().and_then(|_| self.f64s(name).ok())
    }

    pub fn strs(&self, name: &str) -> Result<Vec<Option<String>>> {
        let c = self.need(name)?.cast(&DataType::String)?;
        Ok(c.str()?.iter().map(|o| o.map(str::to_string)).collect())
    }

    /// A text column parsed into `T` (`status` into `RunStatus`, `mode` into `Setup`): a null,
    /// or a value that is not a name of `T` (the quiet pass's `teacher` row), reads as None;
    /// a missing column is an error naming the file.
    pub fn parsed<T: std::str::FromStr>(&self, name: &str) -> Result<Vec<Option<T>>> {
        Ok(self
            .strs(name)?
            .into_iter()
            .map(|s| s.and_then(|s| s.parse().ok()))
            .collect())
    }

    /// The usable runs of `mode` for `metric`: status ok and a finite positive metric (the laws
    /// are fitted on its log), one per experiment ([`one_per_experiment`]). Errors name the file
    /// when nothing is left.
    pub fn points(&self, metric: &str, mode: Setup) -> Result<Vec<Point>> {
        Ok(self.points_with_copies(metric, mode)?.0)
    }

    /// [`Table::points`], and the run ids left out as copies of another run's experiment.
    pub fn points_with_copies(
        &self,
        metric: &str,
        mode: Setup,
    ) -> Result<(Vec<Point>, Vec<String>)> {
        Ok(one_per_experiment(self.all_points(metric, mode)?))
    }

    fn all_points(&self, metric: &str, mode: Setup) -> Result<Vec<Point>> {
        let p = self.path.display();
        let status = self.parsed::<RunStatus>("status")?;
        let modes = self.parsed::<Setup>("mode")?;
        let ys = self.f64s(metric)?;
        let run_ids = self.strs("run_id")?;
        let budget = self.f64s("budget")?;
        let depth = self.f64s("depth")?;
        let width = self.f64s("width")?;
        let heads = self.f64s("heads")?;
        let params = self.f64s("params")?;
        let seed = self.f64s_opt("seed");
        let steps = self.f64s_opt("steps");
        let ok: Vec<usize> = (0..self.df.height())
            .filter(|&i| status[i] == Some(RunStatus::Ok) && modes[i] == Some(mode))
            .collect();
        if ok.is_empty() {
            // The table's own text, whatever it holds.
            let mut present: Vec<String> = self.strs("mode")?.into_iter().flatten().collect();
            present.sort();
            present.dedup();
            bail!(
                "{p}: no runs with status `ok` and mode `{mode}` (modes in the table: {})",
                if present.is_empty() {
                    "none".into()
                } else {
                    present.join(", ")
                }
            );
        }
        // One law is fitted on one measuring instrument: rows scored by different feature nets, or
        // distilled from different teachers, are not comparable.
        for col in ["featnet_hash", "teacher_hash"] {
            let Ok(vals) = self.strs(col) else { continue };
            let mut seen: Vec<&str> = ok.iter().filter_map(|&i| vals[i].as_deref()).collect();
            seen.sort();
            seen.dedup();
            if seen.len() > 1 {
                bail!(
                    "{p}: the `{mode}` runs were scored with {} different `{col}` values ({}): a law fits one feature net and one teacher; fit each group separately",
                    seen.len(),
                    seen.join(", ")
                );
            }
        }
        let mut pts = Vec::new();
        for i in ok {
            let Some(y) = ys[i].filter(|y| y.is_finite() && *y > 0.0) else {
                continue;
            };
            let int = |col: &[Option<f64>], name: &str| -> Result<usize> {
                match col[i] {
                    Some(v) if v >= 1.0 => Ok(v as usize),
                    _ => bail!(
                        "{p}: run {} has no valid `{name}`",
                        run_ids[i].as_deref().unwrap_or("?")
                    ),
                }
            };
            let shape = Shape {
                depth: int(&depth, "depth")?,
                width: int(&width, "width")?,
                heads: int(&heads, "heads")?,
                params: int(&params, "params")?,
            };
            pts.push(Point {
                run_id: run_ids[i].clone().unwrap_or_default(),
                budget: int(&budget, "budget")? as u64,
                shape,
                seed: seed.as_ref().and_then(|s| s[i]).map(|v| v as i64),
                steps: steps
                    .as_ref()
                    .and_then(|s| s[i])
                    .filter(|v| *v >= 1.0)
                    .map(|v| v as u64),
                y,
            });
        }
        Ok(pts)
    }

    /// The first value of a column among the given runs, with whether the runs disagree.
    fn common(&self, name: &str, run_ids: &[&str]) -> Option<(f64, bool)> {
        let col = self.f64s_opt(name)?;
        let ids = self.strs("run_id").ok()?;
        let vals: Vec<f64> = (0..col.len())
            .filter(|&i| ids[i].as_deref().is_some_and(|id| run_ids.contains(&id)))
            .filter_map(|i| col[i])
            .collect();
        let first = *vals.first()?;
        Some((first, vals.iter().any(|v| *v != first)))
    }
}

/// One run per experiment: runs of the same budget, shape and seed (of one setup) trained more
/// than once (a race's run and an audit's copy of it, merged into one table; a race's pruned run
/// and the same run trained on to the last rung) are one experiment, not two seeds. The run that
/// trained longest is kept (it holds the other's learning curve), the first in table order on a
/// tie. Returns the kept points, in table order, and the ids left out.
pub fn one_per_experiment(pts: Vec<Point>) -> (Vec<Point>, Vec<String>) {
    let (kept, dropped) = longest_per_key(
        pts,
        |p| {
            let s = p.shape;
            p.seed
                .map(|seed| (p.budget, [s.depth, s.width, s.heads, s.params], seed))
        },
        |p| p.steps,
    );
    (kept, dropped.into_iter().map(|p| p.run_id).collect())
}

/// Of the items sharing a key, the one with the most steps (the first in order on a tie); items
/// without a key are all kept. Returns the kept items and the others, each in input order. The
/// one rule behind the law's fit (`one_per_experiment`) and the report's step matching
/// (`results::step_matched`).
pub fn longest_per_key<T, K: Ord>(
    items: Vec<T>,
    key: impl Fn(&T) -> Option<K>,
    steps: impl Fn(&T) -> Option<u64>,
) -> (Vec<T>, Vec<T>) {
    let mut keep: BTreeMap<K, usize> = BTreeMap::new();
    for (i, x) in items.iter().enumerate() {
        let Some(k) = key(x) else { continue };
        match keep.get(&k) {
            Some(&j) if steps(&items[j]) >= steps(x) => {}
            _ => {
                keep.insert(k, i);
            }
        }
    }
    let kept: std::collections::BTreeSet<usize> = keep.values().copied().collect();
    let (mut out, mut dropped) = (Vec::new(), Vec::new());
    for (i, x) in items.into_iter().enumerate() {
        if key(&x).is_none() || kept.contains(&i) {
            out.push(x);
        } else {
            dropped.push(x);
        }
    }
    (out, dropped)
}

/// The step count most items share (the larger among ties); None when no item has one.
pub fn modal_step(steps: impl IntoIterator<Item = u64>) -> Option<u64> {
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for s in steps {
        *count.entry(s).or_default() += 1;
    }
    count
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)))
        .map(|(s, _)| *s)
}

/// The students' config minus depth/width/heads. Tried in order: a fitted run's `config.yaml`
/// (`student`, the exact config it trained), its `dit.json`, the teacher named in that
/// config.yaml (students share its input, channels and classes), and last the Fashion-MNIST
/// defaults of `DitConfig` with `patch`/`mlp_ratio` from the table. Returns the config, where it
/// came from, and notes (mixed patch sizes or MLP ratios, which the laws do not model).
pub fn base_config(dir: &Path, table: &Table, pts: &[Point]) -> (DitConfig, String, Vec<String>) {
    let ids: Vec<&str> = pts.iter().map(|p| p.run_id.as_str()).collect();
    let mut notes = Vec::new();
    let patch = table.common("patch", &ids);
    let mlp = table.common("mlp_ratio", &ids);
    if patch.is_some_and(|p| p.1) {
        notes.push("the fitted runs mix patch sizes; the laws ignore the patch (base uses the first run's)".into());
    }
    if mlp.is_some_and(|m| m.1) {
        notes.push(
            "the fitted runs mix MLP ratios; the laws ignore it (base uses the first run's)".into(),
        );
    }
    let from_table = |mut c: DitConfig| {
        if let Some((p, _)) = patch {
            c.patch_size = p as usize;
        }
        if let Some((m, _)) = mlp {
            c.mlp_ratio = m;
        }
        c
    };
    for p in pts {
        let run = dir.join("runs").join(&p.run_id);
        let yaml = std::fs::read_to_string(run.join("config.yaml"))
            .ok()
            .and_then(|t| serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&t).ok());
        if let Some(y) = &yaml {
            if let Some(c) = y
                .get("student")
                .and_then(|s| serde_yaml_ng::from_value::<DitConfig>(s.clone()).ok())
            {
                return (c, format!("{}", run.join("config.yaml").display()), notes);
            }
        }
        for cand in [
            run.join("dit.json"),
            run.join("checkpoint").join("dit.json"),
        ] {
            if let Ok(c) = distill::checkpoint::read_dit_config(&cand) {
                return (c, cand.display().to_string(), notes);
            }
        }
        let teacher = yaml
            .as_ref()
            .and_then(|y| y.get("teacher"))
            .and_then(|t| t.as_str())
            .map(PathBuf::from);
        if let Some(t) = teacher {
            if let Ok((cfg, _)) = distill::checkpoint::locate_model(&t) {
                if let Ok(c) = distill::checkpoint::read_dit_config(&cfg) {
                    return (
                        from_table(c),
                        format!(
                            "teacher {} with patch/mlp_ratio from the table",
                            cfg.display()
                        ),
                        notes,
                    );
                }
            }
        }
    }
    (
        from_table(DitConfig::default()),
        "DitConfig defaults (28x28x1, 10 classes) with patch/mlp_ratio from the table".into(),
        notes,
    )
}

/// `base` as JSON without the three shape fields the laws vary.
pub fn base_json(base: &DitConfig) -> serde_json::Value {
    let mut v = serde_json::to_value(base).unwrap_or(serde_json::Value::Null);
    if let Some(o) = v.as_object_mut() {
        for k in ["depth", "hidden_size", "num_heads"] {
            o.remove(k);
        }
    }
    v
}

/// Mean measured value per shape (over seeds), in first-seen order.
pub fn by_shape(pts: &[Point]) -> Vec<(Shape, f64, usize)> {
    let mut acc: BTreeMap<(usize, usize, usize), (Shape, f64, usize, usize)> = BTreeMap::new();
    for (i, p) in pts.iter().enumerate() {
        let e = acc
            .entry((p.shape.depth, p.shape.width, p.shape.heads))
            .or_insert((p.shape, 0.0, 0, i));
        e.1 += p.y;
        e.2 += 1;
    }
    let mut v: Vec<_> = acc.into_values().collect();
    v.sort_by_key(|e| e.3);
    v.into_iter()
        .map(|(s, sum, n, _)| (s, sum / n as f64, n))
        .collect()
}

/// [min, max] of a per-point quantity.
pub fn range(pts: &[Point], f: impl Fn(&Point) -> usize) -> [usize; 2] {
    let lo = pts.iter().map(&f).min().unwrap_or(0);
    let hi = pts.iter().map(&f).max().unwrap_or(0);
    [lo, hi]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(id: &str, depth: usize, seed: i64, steps: u64, y: f64) -> Point {
        Point {
            run_id: id.into(),
            budget: 100_000,
            shape: Shape {
                depth,
                width: 40,
                heads: 2,
                params: 100_000 + depth,
            },
            seed: Some(seed),
            steps: Some(steps),
            y,
        }
    }

    #[test]
    fn a_run_trained_twice_counts_once_and_the_longest_copy_is_kept() {
        let pts = vec![
            pt("race-d3-s0", 3, 0, 16_000, 16.48),
            pt("race-d4-s0", 4, 0, 250, 141.5),
            pt("race-d3-s1", 3, 1, 16_000, 16.2),
            pt("audit-d3-s0", 3, 0, 16_000, 16.47),
            pt("audit-d4-s0", 4, 0, 16_000, 15.95),
        ];
        let (kept, dropped) = one_per_experiment(pts);
        let ids: Vec<&str> = kept.iter().map(|p| p.run_id.as_str()).collect();
        assert_eq!(ids, ["race-d3-s0", "race-d3-s1", "audit-d4-s0"]);
        assert_eq!(dropped, ["race-d4-s0", "audit-d3-s0"]);
    }
}
