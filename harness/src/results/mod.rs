//! A sweep as plain structs: the runs of `runs.parquet`, their training curves, and the fitted
//! law's overlays. The plots take these (not files), so tests can draw from hand-made data.

pub mod heads;
pub mod overlay;
pub mod paired;
pub mod setups;

pub use overlay::{CvPoint, LawCurve, LawOverlay};

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use distill::run::RunStatus;
use distill::setup::Setup;
use polars::prelude::*;
use serde_json::Value;

use crate::law::LawFile;

/// One row of the table (the fields the plots and the report use).
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub run_id: String,
    pub budget: i64,
    /// The run's setup; None when the row does not record one.
    pub mode: Option<Setup>,
    pub seed: i64,
    pub depth: i64,
    pub width: i64,
    pub heads: i64,
    pub head_dim: i64,
    pub params: f64,
    /// The plotted metric (the law's metric, `fid_proxy` without a law); None if not measured.
    pub metric: Option<f64>,
    pub latency_ms: Option<f64>,
    /// How the run ended; None when the row does not record it.
    pub status: Option<RunStatus>,
    pub reason: Option<String>,
    /// Training steps of the run (None when the table has no `steps` column).
    pub steps: Option<i64>,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.status == Some(RunStatus::Ok)
    }
    /// The metric of a usable run: ok, finite and positive (the plots are log scale).
    pub fn value(&self) -> Option<f64> {
        self.metric
            .filter(|v| self.ok() && v.is_finite() && *v > 0.0)
    }
}

/// One shape in one mode: its runs' metric averaged over seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub budget: i64,
    pub mode: Setup,
    pub depth: i64,
    pub width: i64,
    pub heads: i64,
    pub head_dim: i64,
    pub params: f64,
    pub mean: f64,
    /// Sample standard deviation over seeds (0 for a single seed).
    pub std: f64,
    pub n: usize,
    /// Mean batch-1 latency (ms per image) of the seeds that measured it.
    pub latency_ms: Option<f64>,
}

impl Point {
    pub fn shape(&self) -> String {
        format!("d{} w{} h{}", self.depth, self.width, self.heads)
    }
}

/// A run's training loss against its step (`metrics.jsonl`).
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub run_id: String,
    pub budget: i64,
    pub points: Vec<(f64, f64)>,
}

/// A sweep, ready to plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    pub name: String,
    /// The metric column plotted (`fid_proxy` unless law.json models another).
    pub metric: String,
    /// The mode of the shape plots and the law (law.json's, else kd when present).
    pub mode: Setup,
    pub runs: Vec<Run>,
    pub curves: Vec<Curve>,
    pub law: Option<LawOverlay>,
    /// The teacher and the real-data floor under the students' protocol (`reference.json`).
    pub reference: Option<distill::reference::Reference>,
    /// Learning-curve points of every run (`curves.parquet`).
    pub learning: Vec<LearnPoint>,
    /// A racing sweep's summary (`race/summary.json`), if it is one.
    pub race: Option<crate::race::summary::RaceSummary>,
    /// The race pooled with its audits (`race/pooled.json`), if `ditkd race pool` wrote one.
    pub pooled: Option<crate::race::pool::Pooled>,
    /// What `step_matched` left out of `runs`, in words (empty: nothing).
    pub left_out: Vec<String>,
}

/// One evaluation of one run part-way through training (a row of `curves.parquet`).
#[derive(Debug, Clone, PartialEq)]
pub struct LearnPoint {
    pub run_id: String,
    pub budget: i64,
    pub depth: i64,
    pub width: i64,
    pub heads: i64,
    pub mode: Setup,
    pub seed: i64,
    pub step: f64,
    pub train_flops: f64,
    pub value: f64,
}

/// `dir/curves.parquet` (empty when the sweep has none).
fn learning_of(dir: &Path, metric: &str) -> Result<Vec<LearnPoint>> {
    let p = dir.join("curves.parquet");
    let Ok(f) = std::fs::File::open(&p) else {
        return Ok(Vec::new());
    };
    let df = ParquetReader::new(f)
        .finish()
        .map_err(|e| anyhow::anyhow!("{}: corrupt table: {e}", p.display()))?;
    let (ids, modes) = (strings(&df, "run_id")?, parsed::<Setup>(&df, "mode")?);
    let cols = [
        "budget",
        "depth",
        "width",
        "heads",
        "seed",
        "step",
        "train_flops",
        metric,
    ]
    .map(|c| floats(&df, c));
    let [budget, depth, width, heads, seed, step, flops, value] = cols;
    let (budget, depth, width, heads, seed, step, flops, value) = (
        budget?, depth?, width?, heads?, seed?, step?, flops?, value?,
    );
    let mut out = Vec::new();
    for i in 0..df.height() {
        // A point without a setup belongs to no mode's curves.
        let (Some(b), Some(d), Some(w), Some(h), Some(st), Some(fl), Some(v), Some(mode)) = (
            budget[i], depth[i], width[i], heads[i], step[i], flops[i], value[i], modes[i],
        ) else {
            continue;
        };
        if !(v.is_finite() && v > 0.0) {
            continue;
        }
        out.push(LearnPoint {
            run_id: ids[i].clone().unwrap_or_default(),
            budget: b as i64,
            depth: d as i64,
            width: w as i64,
            heads: h as i64,
            mode,
            seed: seed[i].unwrap_or(0.0) as i64,
            step: st,
            train_flops: fl,
            value: v,
        });
    }
    Ok(out)
}

/// Mean and std of one mode's runs in one budget.
#[derive(Debug, Clone, PartialEq)]
pub struct ModeStat {
    pub mode: Setup,
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

/// All modes of one budget, compared on the same shapes where every mode ran some.
#[derive(Debug, Clone, PartialEq)]
pub struct ModeComparison {
    pub budget: i64,
    /// Shapes every mode ran (0: no shape is shared, so all runs of each mode are used).
    pub matched_shapes: usize,
    pub stats: Vec<ModeStat>,
}

impl Sweep {
    /// Read `dir/runs.parquet`, `dir/runs/*/metrics.jsonl` and, if present, `dir/law.json`.
    pub fn load(dir: &Path) -> Result<Sweep> {
        let df = crate::table::read(dir)?;
        let law = read_law(dir)?;
        let metric = law
            .as_ref()
            .map(|l| l.metric.clone())
            .unwrap_or_else(|| "fid_proxy".into());
        let runs = runs_of(&df, &metric)
            .with_context(|| format!("{}: reading the table", dir.display()))?;
        let (runs, left_out) = step_matched(runs);
        let mode = law
            .as_ref()
            .map(|l| l.mode)
            .unwrap_or_else(|| default_mode(&runs));
        let curves = curves_of(dir, &runs)?;
        let learning = learning_of(dir, &metric)?;
        let reference = distill::reference::Reference::load(dir);
        let mut sweep = Sweep {
            name: sweep_name(dir),
            metric,
            mode,
            runs,
            curves,
            law: None,
            reference,
            learning,
            race: std::fs::read_to_string(dir.join("race").join("summary.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok()),
            pooled: std::fs::read_to_string(dir.join("race").join("pooled.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok()),
            left_out,
        };
        if let Some(l) = law {
            let overlay = overlay::overlay(&l, &sweep.points())
                .with_context(|| format!("{}: law.json", dir.display()))?;
            sweep.law = Some(overlay);
        }
        Ok(sweep)
    }

    /// What the axes call the metric.
    pub fn metric_label(&self) -> String {
        distill::column::column(&self.metric).map_or(self.metric.clone(), |c| c.label.into())
    }

    /// The teacher's and the real data's value of the sweep's metric (teacher, floor mean, floor std).
    pub fn reference_values(&self) -> (Option<f64>, Option<(f64, f64)>) {
        let Some(r) = &self.reference else {
            return (None, None);
        };
        let Some(c) = distill::column::column(&self.metric) else {
            return (None, None);
        };
        let floor = (c.floor)(&r.floor).map(|f| (f.mean, f.std));
        (
            r.teacher.as_ref().and_then(|t| (c.value)(&t.metrics)),
            floor,
        )
    }

    /// Usable runs of every mode, averaged over seeds per (budget, shape, mode), ordered by
    /// budget, shape and the mode's name.
    pub fn points_all(&self) -> Vec<Point> {
        let mut groups: BTreeMap<(i64, i64, i64, i64, Setup), Vec<&Run>> = BTreeMap::new();
        for r in self.runs.iter().filter(|r| r.value().is_some()) {
            // A run without a setup belongs to no mode.
            let Some(mode) = r.mode else { continue };
            groups
                .entry((r.budget, r.depth, r.width, r.heads, mode))
                .or_default()
                .push(r);
        }
        let mut points: Vec<Point> = groups
            .into_iter()
            .map(|((budget, depth, width, heads, mode), rs)| {
                let (mean, std) = mean_std(rs.iter().filter_map(|r| r.value()));
                let lat: Vec<f64> = rs
                    .iter()
                    .filter_map(|r| r.latency_ms)
                    .filter(|v| v.is_finite())
                    .collect();
                Point {
                    budget,
                    mode,
                    depth,
                    width,
                    heads,
                    head_dim: rs[0].head_dim,
                    params: rs[0].params,
                    mean,
                    std,
                    n: rs.len(),
                    latency_ms: (!lat.is_empty())
                        .then(|| lat.iter().sum::<f64>() / lat.len() as f64),
                }
            })
            .collect();
        points.sort_by_cached_key(|p| (p.budget, p.depth, p.width, p.heads, p.mode.to_string()));
        points
    }

    /// `points_all` of the sweep's main mode.
    pub fn points(&self) -> Vec<Point> {
        self.points_all()
            .into_iter()
            .filter(|p| p.mode == self.mode)
            .collect()
    }

    /// Budgets with usable runs, ascending.
    pub fn budgets(&self) -> Vec<i64> {
        self.runs
            .iter()
            .filter(|r| r.value().is_some())
            .map(|r| r.budget)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// The best (lowest mean) shape of the main mode per budget.
    pub fn best_per_budget(&self) -> Vec<Point> {
        let mut best: BTreeMap<i64, Point> = BTreeMap::new();
        for p in self.points() {
            match best.get(&p.budget) {
                Some(b) if b.mean <= p.mean => {}
                _ => {
                    best.insert(p.budget, p);
                }
            }
        }
        best.into_values().collect()
    }

    /// Modes compared per budget. Shapes differ in quality far more than modes do, so when some
    /// shapes ran in every mode of a budget only those are compared; otherwise all runs are.
    pub fn compare_modes(&self) -> Vec<ModeComparison> {
        let mut out = Vec::new();
        for b in self.budgets() {
            let runs: Vec<&Run> = self
                .runs
                .iter()
                .filter(|r| r.budget == b && r.value().is_some())
                .collect();
            let modes = by_name(runs.iter().filter_map(|r| r.mode));
            let shapes_of = |m: Setup| -> BTreeSet<(i64, i64, i64)> {
                runs.iter()
                    .filter(|r| r.mode == Some(m))
                    .map(|r| (r.depth, r.width, r.heads))
                    .collect()
            };
            let mut shared: Option<BTreeSet<(i64, i64, i64)>> = None;
            for &m in &modes {
                let s = shapes_of(m);
                shared = Some(match shared {
                    None => s,
                    Some(prev) => prev.intersection(&s).copied().collect(),
                });
            }
            let shared = shared.unwrap_or_default();
            let matched = modes.len() > 1 && !shared.is_empty();
            let stats = modes
                .iter()
                .map(|&m| {
                    let vals = runs
                        .iter()
                        .filter(|r| {
                            r.mode == Some(m)
                                && (!matched || shared.contains(&(r.depth, r.width, r.heads)))
                        })
                        .filter_map(|r| r.value());
                    let vals: Vec<f64> = vals.collect();
                    let (mean, std) = mean_std(vals.iter().copied());
                    ModeStat {
                        mode: m,
                        mean,
                        std,
                        n: vals.len(),
                    }
                })
                .collect();
            out.push(ModeComparison {
                budget: b,
                matched_shapes: if matched { shared.len() } else { 0 },
                stats,
            });
        }
        out
    }
}

/// The distinct setups among `modes`, ordered by name: the order of the report's and the plots'
/// mode lists (and of their colours).
pub fn by_name(modes: impl IntoIterator<Item = Setup>) -> Vec<Setup> {
    let mut v: Vec<Setup> = modes
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    v.sort_by_cached_key(|m| m.to_string());
    v
}

/// Every mode of the comparisons, ordered by name (the columns of the report's table and the
/// plot's order of modes).
pub fn modes_compared(cmp: &[ModeComparison]) -> Vec<Setup> {
    by_name(cmp.iter().flat_map(|c| c.stats.iter().map(|s| s.mode)))
}

/// A run's learning-curve point nearest `flops`, if within half of one of its steps' FLOPs (the
/// nearest step, with rounding slack): the equal-FLOPs reading, never an interpolation.
pub fn point_at_flops<'a>(
    pts: impl IntoIterator<Item = &'a LearnPoint>,
    flops: f64,
) -> Option<&'a LearnPoint> {
    pts.into_iter()
        .filter(|k| {
            let half_step = 0.5 * k.train_flops / k.step.max(1.0);
            (k.train_flops - flops).abs() <= half_step * (1.0 + 1e-9)
        })
        .min_by(|a, b| {
            (a.train_flops - flops)
                .abs()
                .total_cmp(&(b.train_flops - flops).abs())
        })
}

/// Test data: a learning-curve point of budget 50k, depth 1, width 40, 2 heads.
#[cfg(test)]
pub(crate) fn test_point(mode: Setup, seed: i64, step: f64, flops: f64, value: f64) -> LearnPoint {
    LearnPoint {
        run_id: format!("{mode}-{seed}"),
        budget: 50_000,
        depth: 1,
        width: 40,
        heads: 2,
        mode,
        seed,
        step,
        train_flops: flops,
        value,
    }
}

/// Test data: a sweep holding only learning-curve points.
#[cfg(test)]
pub(crate) fn test_sweep(learning: Vec<LearnPoint>) -> Sweep {
    Sweep {
        name: "t".into(),
        metric: "fid_proxy".into(),
        mode: Setup::Kd,
        runs: Vec::new(),
        curves: Vec::new(),
        law: None,
        reference: None,
        learning,
        race: None,
        pooled: None,
        left_out: Vec::new(),
    }
}

/// Mean and sample std (0 for fewer than two values).
pub fn mean_std(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let v: Vec<f64> = vals.collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// The sweep's law: output KD's (law.json) if it has one, else the first setup's that it has
/// (`law-<setup>.json`, e.g. a sweep of scratch runs only).
pub fn read_law(dir: &Path) -> Result<Option<LawFile>> {
    distill::setup::Setup::ALL
        .iter()
        .map(|&s| crate::law::setup_law_path(dir, s))
        .find(|p| p.exists())
        .map(LawFile::load)
        .transpose()
}

/// The sweep's name: the `name` of its spec.yaml, else the directory's name.
pub fn sweep_name(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("spec.yaml"))
        .ok()
        .and_then(|t| serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&t).ok())
        .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_string))
        .unwrap_or_else(|| {
            let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
            abs.file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "sweep".into())
        })
}

/// kd when it ran, else the first mode (by name) with a usable run; kd when no usable run
/// records its mode.
fn default_mode(runs: &[Run]) -> Setup {
    let modes = by_name(
        runs.iter()
            .filter(|r| r.value().is_some())
            .filter_map(|r| r.mode),
    );
    if modes.contains(&Setup::Kd) {
        Setup::Kd
    } else {
        modes.first().copied().unwrap_or(Setup::Kd)
    }
}

fn floats(df: &DataFrame, name: &str) -> Result<Vec<Option<f64>>> {
    match df.column(name) {
        Err(_) => Ok(vec![None; df.height()]),
        Ok(c) => Ok(c.cast(&DataType::Float64)?.f64()?.iter().collect()),
    }
}

/// A text column parsed (`status`, `mode`): a missing column, a null or a value that is not a
/// name of `T` reads as None.
fn parsed<T: std::str::FromStr>(df: &DataFrame, name: &str) -> Result<Vec<Option<T>>> {
    Ok(strings(df, name)?
        .into_iter()
        .map(|s| s.and_then(|s| s.parse().ok()))
        .collect())
}

fn strings(df: &DataFrame, name: &str) -> Result<Vec<Option<String>>> {
    match df.column(name) {
        Err(_) => Ok(vec![None; df.height()]),
        Ok(c) => Ok(c
            .cast(&DataType::String)?
            .str()?
            .iter()
            .map(|s| s.map(str::to_string))
            .collect()),
    }
}

/// The table's rows as `Run`s; integer columns that are missing read as 0 (a failed run that never
/// recorded its shape still counts as failed).
pub fn runs_of(df: &DataFrame, metric: &str) -> Result<Vec<Run>> {
    let int = |name: &str| -> Result<Vec<i64>> {
        Ok(floats(df, name)?
            .into_iter()
            .map(|v| v.unwrap_or(0.0) as i64)
            .collect())
    };
    let (budget, seed, depth, width, heads, head_dim) = (
        int("budget")?,
        int("seed")?,
        int("depth")?,
        int("width")?,
        int("heads")?,
        int("head_dim")?,
    );
    let (params, value, latency, steps) = (
        floats(df, "params")?,
        floats(df, metric)?,
        floats(df, "latency_ms")?,
        floats(df, "steps")?,
    );
    let (id, mode, status, reason) = (
        strings(df, "run_id")?,
        parsed::<Setup>(df, "mode")?,
        parsed::<RunStatus>(df, "status")?,
        strings(df, "reason")?,
    );
    Ok((0..df.height())
        .map(|i| Run {
            run_id: id[i].clone().unwrap_or_default(),
            budget: budget[i],
            mode: mode[i],
            seed: seed[i],
            depth: depth[i],
            width: width[i],
            heads: heads[i],
            head_dim: if head_dim[i] > 0 || heads[i] == 0 {
                head_dim[i]
            } else {
                width[i] / heads[i]
            },
            params: params[i].unwrap_or(f64::NAN),
            metric: value[i],
            latency_ms: latency[i],
            status: status[i],
            reason: reason[i].clone(),
            steps: steps[i].map(|s| s as i64),
        })
        .collect())
}

/// The runs every shape table and plot compares, step-matched, as the law's fit is: a run trained
/// twice (same budget, setup, shape and seed: a race's run and an audit's copy merged into one
/// table) counts once, the longest kept; then the finished runs that stopped at another step count
/// than the one most finished runs share (the larger among ties; a racing sweep's pruned shapes)
/// are left out (their learning curves stay in the learning plots). Runs that did not finish stay,
/// for the run counts. Returns the runs kept and, in words, what was left out.
pub fn step_matched(runs: Vec<Run>) -> (Vec<Run>, Vec<String>) {
    use crate::law::data::{longest_per_key, modal_step};
    // Runs that did not finish have no key: they are all kept, for the run counts.
    let (runs, copies) = longest_per_key(
        runs,
        |r| {
            r.ok()
                .then_some((r.budget, r.mode, r.depth, r.width, r.heads, r.seed))
        },
        |r| r.steps.map(|s| s as u64),
    );
    let copies: Vec<String> = copies.into_iter().map(|r| r.run_id).collect();
    let step = modal_step(
        runs.iter()
            .filter(|r| r.ok())
            .filter_map(|r| r.steps)
            .map(|s| s as u64),
    );
    let (mut kept, mut short) = (Vec::new(), Vec::new());
    for r in runs {
        match (r.ok(), r.steps, step) {
            (true, Some(s), Some(m)) if s as u64 != m => {
                short.push(format!("{} ({s} steps)", r.run_id))
            }
            _ => kept.push(r),
        }
    }
    let mut notes = Vec::new();
    if !copies.is_empty() {
        notes.push(format!(
            "{} runs repeat another run's experiment (same budget, setup, shape and seed) and count once, the longest kept; left out: {}",
            copies.len(),
            copies.join(", ")
        ));
    }
    if !short.is_empty() {
        notes.push(format!(
            "{} finished runs stopped at another step count than {} (a racing sweep's pruned shapes) and are left out of the shape tables and plots (their learning curves are kept): {}",
            short.len(),
            step.unwrap_or(0),
            short.join(", ")
        ));
    }
    (kept, notes)
}

/// Loss curves of the table's runs (runs without a readable metrics.jsonl are left out).
fn curves_of(dir: &Path, runs: &[Run]) -> Result<Vec<Curve>> {
    let mut out = Vec::new();
    for r in runs {
        let Ok(text) =
            std::fs::read_to_string(dir.join("runs").join(&r.run_id).join("metrics.jsonl"))
        else {
            continue;
        };
        let mut points: Vec<(f64, f64)> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| Some((v["step"].as_f64()?, v["loss"].as_f64()?)))
            .filter(|(s, l)| s.is_finite() && l.is_finite() && *l > 0.0)
            .collect();
        // A resumed run logs again the steps after its last checkpoint: keep the latest of each.
        points.reverse();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        points.dedup_by(|later, kept| later.0 == kept.0);
        if !points.is_empty() {
            out.push(Curve {
                run_id: r.run_id.clone(),
                budget: r.budget,
                points,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, depth: i64, seed: i64, steps: i64, value: f64) -> Run {
        Run {
            run_id: id.into(),
            budget: 100_000,
            mode: Some(Setup::Kd),
            seed,
            depth,
            width: 40,
            heads: 2,
            head_dim: 20,
            params: 1e5,
            metric: Some(value),
            latency_ms: None,
            status: Some(RunStatus::Ok),
            reason: None,
            steps: Some(steps),
        }
    }

    #[test]
    fn a_races_pruned_runs_and_copies_leave_the_shape_tables() {
        let mut failed = run("f", 5, 0, 100, 1.0);
        failed.status = Some(RunStatus::Failed);
        let runs = vec![
            // The race's run of d3 seed 0, pruned at 2,000 steps, and the audit's copy at 16,000.
            run("race-d3-s0", 3, 0, 2000, 40.0),
            run("audit-d3-s0", 3, 0, 16000, 11.6),
            run("seed-d3-s1", 3, 1, 16000, 12.7),
            // A shape the race pruned at 250 and nobody trained on.
            run("race-d8-s0", 8, 0, 250, 110.0),
            run("race-d2-s0", 2, 0, 16000, 13.2),
            failed,
        ];
        let (kept, notes) = step_matched(runs);
        let ids: Vec<&str> = kept.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, vec!["audit-d3-s0", "seed-d3-s1", "race-d2-s0", "f"]);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("race-d3-s0"), "{notes:?}");
        assert!(
            notes[1].contains("race-d8-s0 (250 steps)") && notes[1].contains("16000"),
            "{notes:?}"
        );
        // A table of one step count and no copies is left alone.
        let plain = vec![run("a", 1, 0, 4000, 1.0), run("b", 2, 0, 4000, 2.0)];
        let (kept, notes) = step_matched(plain.clone());
        assert_eq!((kept, notes.len()), (plain, 0));
    }
}
