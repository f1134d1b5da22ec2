//! Design laws: how a sweep's metric (the FID-proxy by default) depends on a DiT's shape, fitted
//! by `ditkd fit` into `law.json` and queried by `ditkd best`, the plots and the notebooks.
//!
//! This file holds the public types — `LawFile` is exactly the JSON schema of `law.json` — and
//! prediction. The fitting lives beside it, one idea per file: `forms` (the candidate laws and
//! their parameterisations), `data` (table -> points), `fit` (weighted Levenberg–Marquardt),
//! `noise` (cells, the pooled seed noise, the lack-of-fit test), `cv` (leave-one-budget-out and
//! k-fold, over shapes), `bootstrap` (over shapes), `stats` (normal and F distributions),
//! `design` (feasible shapes, optima, the design formula), `latency` (the latency model),
//! `holdout`, `pipeline` (all of it, in order), `rank` (P(best), ties, the seeds that separate
//! them) and `query` (`ditkd best`).

pub mod bootstrap;
pub mod cv;
pub mod data;
pub mod design;
pub mod fit;
pub mod floor;
pub mod forms;
pub mod guard;
pub mod holdout;
pub mod latency;
pub mod noise;
pub mod pipeline;
pub mod query;
pub mod rank;
pub mod stats;

pub use floor::{Fixed, FloorChoice};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use dit::DitConfig;
use serde::{Deserialize, Serialize};

pub use forms::{Feat, Form};

/// A DiT shape, as the laws see it. `params` comes from `dit::counts` on the sweep's base config
/// (or the table's `params` column for measured runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shape {
    pub depth: usize,
    pub width: usize,
    pub heads: usize,
    pub params: usize,
}

impl Shape {
    pub fn head_dim(&self) -> usize {
        self.width / self.heads.max(1)
    }

    pub fn feat(&self) -> Feat {
        Feat::new(
            self.params as f64,
            self.depth as f64,
            self.width as f64,
            self.head_dim() as f64,
        )
    }

    /// The shape on `base` (input, patch, channels, classes, mlp ratio), with its params recounted.
    pub fn on_base(depth: usize, width: usize, heads: usize, base: &DitConfig) -> Self {
        let cfg = DitConfig {
            depth,
            hidden_size: width,
            num_heads: heads,
            ..base.clone()
        };
        Self {
            depth,
            width,
            heads,
            params: cfg.num_params(),
        }
    }

    pub fn config(&self, base: &DitConfig) -> DitConfig {
        DitConfig {
            depth: self.depth,
            hidden_size: self.width,
            num_heads: self.heads,
            ..base.clone()
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "depth={},width={},heads={}",
            self.depth, self.width, self.heads
        )
    }
}

/// The pooled seed-to-seed noise of ln(metric): within-shape standard deviation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Noise {
    /// Pooled within-shape standard deviation of ln(metric).
    pub sigma: f64,
    /// Its degrees of freedom, Σ (seeds − 1).
    pub dof: usize,
    /// Shapes (cells) pooled, and how many of them had two or more seeds.
    pub cells: usize,
    pub replicated: usize,
}

/// The lack-of-fit F test of a law against the pooled seed noise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LackOfFit {
    /// (SS_lof / df_lof) / (SS_pe / df_pe).
    pub f: f64,
    /// Cells − fitted coefficients.
    pub df_lof: usize,
    /// Runs − cells (pure error).
    pub df_pe: usize,
    /// P(F > f) under the law: small means the law misses by more than the seed noise.
    pub p: f64,
    pub ss_lof: f64,
    pub ss_pe: f64,
    /// The shapes' spread about the law beyond the seed noise (ANOVA moment estimate, ≥ 0), in
    /// ln(metric): what an unmeasured shape may sit off the law by.
    pub sigma_between: f64,
    /// Its one-sided 90 % upper confidence bound, from the F ratio (F / λ ~ F(df_lof, df_pe) with
    /// λ = 1 + n0·τ²/σ²): what `ditkd best` carries into P(best) and its intervals, so that a test
    /// that cannot rule a spread out does not make the law exact (the moment estimate is 0 whenever
    /// F ≤ 1). 0 in law files written before it existed (then the estimate above is used).
    #[serde(default)]
    pub sigma_between_hi: f64,
    /// p < 0.05.
    pub rejects: bool,
}

/// Training FLOPs of a shape: steps · (c0 + c1 · forward FLOPs of the student), fitted exactly on
/// the learning-curve rows (the student's forward and backward plus, for KD, the teacher's
/// forward; see `DistillConfig::train_flops`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComputeModel {
    pub per_step: [f64; 2],
    /// The step count the law's shape-only predictions (`LawFit::predict`) are made at.
    pub step: u64,
    /// The largest step measured.
    pub max_step: u64,
    /// The students' base config (to count a shape's forward FLOPs).
    pub base: DitConfig,
}

impl ComputeModel {
    /// Training FLOPs of `s` after `steps` steps.
    pub fn flops(&self, s: &Shape, steps: f64) -> f64 {
        let fwd = s.config(&self.base).forward_flops() as f64;
        steps * (self.per_step[0] + self.per_step[1] * fwd)
    }
}

/// Where a prediction is made along training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum At {
    /// After this many training steps (each shape pays its own FLOPs per step).
    Steps(f64),
    /// At this many training FLOPs for every shape (an iso-compute comparison).
    Flops(f64),
    /// Trained to convergence (the compute term gone).
    Converged,
}

/// One fitted candidate law.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LawFit {
    /// Which law ("a" … "f" in law.json).
    pub name: Form,
    pub formula: String,
    /// Coefficients in the formula's units (N in parameters, d in blocks, w and h0 in channels,
    /// C in training FLOPs), the fixed ones included.
    pub coef: BTreeMap<String, f64>,
    /// 90 % bootstrap percentile intervals of the fitted coefficients; empty with `--bootstrap 0`.
    pub intervals: BTreeMap<String, [f64; 2]>,
    /// Coefficients held fixed, and why.
    #[serde(default)]
    pub fixed: BTreeMap<String, Fixed>,
    /// Residual sum of squares on ln(metric), over the single runs (curve points for law (f)).
    pub rss: f64,
    /// n·ln(RSS/n) + 2k (comparable between laws fitted on the same points only).
    pub aic: f64,
    /// Leave-one-budget-out RMSE on ln(metric) per run; null with fewer than two budgets.
    pub cv_lobo_rmse: Option<f64>,
    /// k-fold (k = min(5, shapes), seeded shuffle of shapes) RMSE on ln(metric) per run.
    pub cv_kfold_rmse: f64,
    /// Coefficients fitted (fixed ones not counted).
    pub k: usize,
    /// Points fitted: runs, or learning-curve points for law (f).
    pub n: usize,
    /// Cells fitted: shapes, or (shape, step) pairs for law (f).
    #[serde(default)]
    pub cells: usize,
    /// The lack-of-fit F test against the pooled seed noise; null without replicated cells.
    #[serde(default)]
    pub lack_of_fit: Option<LackOfFit>,
    /// The compute model of a law with a compute term.
    #[serde(default)]
    pub compute: Option<ComputeModel>,
}

impl LawFit {
    pub fn form(&self) -> Form {
        self.name
    }

    /// The predicted metric (not its log) for a shape (a compute law: at the fitted step).
    pub fn predict(&self, s: &Shape) -> f64 {
        self.predict_with(&self.coef, s)
    }

    /// The prediction with other coefficients of the same law (a bootstrap draw).
    pub fn predict_with(&self, coef: &BTreeMap<String, f64>, s: &Shape) -> f64 {
        let f = self.form();
        f.eval_raw(&f.from_map(coef), &self.feat(s))
    }

    /// A shape's features, at the fitted step's compute for a compute law.
    pub fn feat(&self, s: &Shape) -> Feat {
        match &self.compute {
            Some(c) => s.feat().at(c.step as f64, c.flops(s, c.step as f64)),
            None => s.feat(),
        }
    }

    /// A shape's features at `at` (a law without a compute term ignores it).
    pub fn feat_at(&self, s: &Shape, at: At) -> Feat {
        match (&self.compute, at) {
            (Some(c), At::Steps(st)) => s.feat().at(st, c.flops(s, st)),
            (Some(c), At::Flops(fl)) => s.feat().at(fl / c.flops(s, 1.0), fl),
            (Some(_), At::Converged) => s.feat().at(f64::INFINITY, f64::INFINITY),
            (None, _) => s.feat(),
        }
    }

    /// The prediction with coefficients `coef` at `at`.
    pub fn predict_at(&self, coef: &BTreeMap<String, f64>, s: &Shape, at: At) -> f64 {
        let f = self.form();
        f.eval_raw(&f.from_map(coef), &self.feat_at(s, at))
    }

    /// The CV error the law was chosen on (LOBO, else k-fold), as RMSE on ln(metric).
    pub fn cv_rmse(&self) -> f64 {
        self.cv_lobo_rmse.unwrap_or(self.cv_kfold_rmse)
    }

    /// The CV error as a typical relative error: exp(rmse) − 1 (0.12 = ±12 %).
    pub fn typical_error(&self) -> f64 {
        self.cv_rmse().exp() - 1.0
    }
}

/// A law skipped for lack of points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub name: Form,
    pub reason: String,
}

/// The cross-validation a law is chosen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CvKind {
    /// Leave one budget out (the law must predict a budget it never saw).
    #[default]
    Lobo,
    /// k-fold over runs (one budget only).
    Kfold,
}

impl CvKind {
    /// How the report and `best` name it.
    pub fn describe(self) -> &'static str {
        match self {
            CvKind::Lobo => "leave-one-budget-out",
            CvKind::Kfold => "k-fold",
        }
    }
}

/// One run's out-of-sample prediction by the chosen law.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvPrediction {
    pub run_id: String,
    pub budget: u64,
    pub depth: usize,
    pub width: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub params: usize,
    pub seed: Option<i64>,
    pub measured: f64,
    pub predicted: f64,
}

/// The scaling exponent of one design variable: x* ≈ c·N^s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exponent {
    pub s: f64,
    pub c: f64,
    /// 90 % bootstrap interval of `s`; null without bootstrap draws.
    pub interval: Option<[f64; 2]>,
}

/// Exponents of the optimal depth, width and head dimension; null where the law cannot tell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exponents {
    pub depth: Option<Exponent>,
    pub width: Option<Exponent>,
    pub head_dim: Option<Exponent>,
}

/// The chosen law's optimum on a log-spaced grid of budgets, and the power laws through it. The
/// search keeps to the measured depth and head_dim ranges (see `design::Domain`); the grid spans
/// the fitted params range plus one step beyond each end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Design {
    pub budgets: Vec<u64>,
    pub depth: Vec<usize>,
    pub width: Vec<usize>,
    pub heads: Vec<usize>,
    pub head_dim: Vec<usize>,
    pub params: Vec<usize>,
    pub predicted: Vec<f64>,
    /// Per row: the budget lies outside the fitted params range, or the optimum outside the
    /// measured depth, width or head_dim range (an extrapolation).
    pub extrapolated: Vec<bool>,
    /// Null for law (a): depth and width are not identifiable from parameters alone.
    pub exponents: Option<Exponents>,
    pub formula: String,
}

/// Batch-1 latency per image: latency_ms = c0 + c1·depth·forwards_per_image + c2·gflops_per_image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyModel {
    pub formula: String,
    pub coef: Vec<f64>,
    pub r2: f64,
    /// Rows fitted.
    pub n: usize,
    /// Forwards per image of the fitted mode's sampler (the typical value in the table), used to
    /// predict unmeasured shapes.
    pub forwards_per_image: f64,
    /// Where the timings came from: the quiet pass (`latency.parquet`) or the runs' own timings
    /// (measured while other runs trained).
    #[serde(default)]
    pub source: String,
}

impl LatencyModel {
    /// Predicted batch-1 latency (ms per image) of a shape.
    pub fn predict(&self, cfg: &DitConfig) -> f64 {
        let fpi = self.forwards_per_image;
        let c = |i: usize| self.coef.get(i).copied().unwrap_or(f64::NAN);
        c(0) + c(1) * cfg.depth as f64 * fpi + c(2) * cfg.forward_gflops() * fpi
    }
}

/// A shape with its predicted and (if run) measured metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredShape {
    pub depth: usize,
    pub width: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub params: usize,
    pub predicted: Option<f64>,
    /// Mean over seeds of the measured metric; null when the shape was not run.
    pub measured: Option<f64>,
}

/// `--hold-out B`: how the law fitted on the other budgets does on budget B.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holdout {
    pub budget: u64,
    pub n_runs: usize,
    /// Share of the held-out runs inside the law's 90 % interval of one more run of their shape
    /// (bootstrap draws of the law, the shapes' spread τ about it and the seed noise σ).
    #[serde(default)]
    pub coverage90_runs: f64,
    /// Share of the held-out shapes whose seed mean lies inside the law's 90 % interval of a mean
    /// over that many seeds.
    #[serde(default)]
    pub coverage90_shapes: f64,
    /// The σ and τ (ln) the intervals and the measured P(best) use.
    #[serde(default)]
    pub sigma: f64,
    #[serde(default)]
    pub tau: f64,
    /// The measured tie set at B: the best-measured shape and every shape not separable from it at
    /// 90 % by its seeds alone.
    #[serde(default)]
    pub tie_set: Vec<String>,
    /// The law's recommended shape (as the measured shape of its depth and heads) is in the tie
    /// set: the pass criterion (null when no shape of that depth and heads was run at B).
    #[serde(default)]
    pub recommended_in_tie_set: Option<bool>,
    /// The best-predicted of the measured shapes is in the tie set.
    #[serde(default)]
    pub best_predicted_in_tie_set: Option<bool>,
    /// Every measured shape at B: seeds, measured and predicted values, the law's intervals.
    #[serde(default)]
    pub shapes: Vec<HeldShape>,
    /// RMSE of ln predicted vs ln measured over the held-out runs.
    pub rmse_log: f64,
    /// Mean absolute percentage error (in %).
    pub mape: f64,
    /// The law's optimum among feasible shapes with params in [0.9B, 1.1B] (should no feasible
    /// shape fall in that band: the optimum below 1.1B).
    pub recommended: ScoredShape,
    /// The recommended shape's measured value is within 5 % of the best measured (null if not run).
    /// (The sweep rarely ran the exact optimum, hence `within_5pct` below.)
    pub recommended_within_5pct: Option<bool>,
    /// The best-predicted shape among those measured at B.
    pub best_predicted_measured: ScoredShape,
    /// The best measured shape at B (mean over seeds).
    pub best_measured: ScoredShape,
    /// `best_predicted_measured` is within 5 % of `best_measured`.
    pub within_5pct: bool,
}

/// One measured shape of a held-out budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldShape {
    pub shape: String,
    pub params: usize,
    pub seeds: usize,
    /// Geometric mean over its seeds.
    pub measured: f64,
    pub predicted: f64,
    /// The law's 90 % interval of the mean over `seeds` seeds, and of one more run.
    pub mean_interval: [f64; 2],
    pub run_interval: [f64; 2],
    /// P(best) among the budget's measured shapes from their seeds alone.
    pub p_best_measured: f64,
    pub in_tie_set: bool,
}

/// The measured value the laws' E is fixed at: the real-data floor, or the teacher's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloorRef {
    pub value: f64,
    /// Its standard deviation over the reference's draws.
    pub std: f64,
    pub source: String,
    /// Which measured value it is (`ditkd fit --floor`; law files before it: the data's).
    #[serde(default)]
    pub kind: FloorChoice,
}

/// A shape as measured at the fitted step: mean and count of ln(metric) over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasuredShape {
    pub budget: u64,
    pub depth: usize,
    pub width: usize,
    pub heads: usize,
    pub params: usize,
    pub seeds: usize,
    /// Mean over seeds of ln(metric).
    pub mean_ln: f64,
}

impl MeasuredShape {
    pub fn is(&self, s: &Shape) -> bool {
        (self.depth, self.width, self.heads) == (s.depth, s.width, s.heads)
    }
}

/// A shape variable with a fitted range in `law.json` (`params_range`, `depth_range`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    Params,
    Depth,
    Width,
    Heads,
    HeadDim,
}

impl Axis {
    /// The name in messages (and in law.json's `<name>_range`).
    pub fn name(self) -> &'static str {
        match self {
            Axis::Params => "params",
            Axis::Depth => "depth",
            Axis::Width => "width",
            Axis::Heads => "heads",
            Axis::HeadDim => "head_dim",
        }
    }
}

/// A shape's value outside the fitted range of one axis ("depth 9 outside the fitted 2..=8").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange {
    pub axis: Axis,
    pub value: usize,
    pub range: [usize; 2],
}

impl std::fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} outside the fitted {}..={}",
            self.axis.name(),
            self.value,
            self.range[0],
            self.range[1]
        )
    }
}

/// `law.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LawFile {
    pub metric: String,
    /// The setup whose runs were fitted (serde's lowercase name, as `Setup` writes it).
    pub mode: distill::setup::Setup,
    /// Path of the runs.parquet fitted.
    pub table: String,
    /// SHA-256 (hex) of that file's bytes.
    pub table_hash: String,
    /// Runs fitted (after the hold-out, if any).
    pub n_runs: usize,
    /// Budgets of the fitted runs.
    pub budgets: Vec<u64>,
    pub held_out_budget: Option<u64>,
    pub params_range: [usize; 2],
    pub depth_range: [usize; 2],
    pub width_range: [usize; 2],
    pub head_dim_range: [usize; 2],
    /// Head counts of the fitted runs (a law.json written before this field: any head count).
    #[serde(default = "any_heads")]
    pub heads_range: [usize; 2],
    /// The students' DitConfig without depth, hidden_size and num_heads (see `base_source`).
    pub base: serde_json::Value,
    /// Where `base` came from (a run's config.yaml, a dit.json, or defaults plus the table).
    #[serde(default)]
    pub base_source: String,
    /// Name of the chosen law (lowest leave-one-budget-out CV error, k-fold with < 2 budgets; CV
    /// errors within 2 % of the lowest go to the law with fewest coefficients).
    pub chosen: Form,
    pub laws: Vec<LawFit>,
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    /// Which CV the choice and `cv_predictions` use.
    #[serde(default)]
    pub cv_kind: CvKind,
    pub cv_predictions: Vec<CvPrediction>,
    pub design: Design,
    pub latency_model: Option<LatencyModel>,
    #[serde(default)]
    pub holdout: Option<Holdout>,
    /// The chosen law's bootstrap coefficient draws (for prediction intervals).
    #[serde(default)]
    pub bootstrap: Vec<BTreeMap<String, f64>>,
    #[serde(default)]
    pub seed: u64,
    /// Caveats found while fitting (mixed patch sizes, failed fits, extrapolation).
    #[serde(default)]
    pub notes: Vec<String>,
    /// The step count of the runs the laws without a compute term were fitted on (null when the
    /// table has no `steps` column).
    #[serde(default)]
    pub fit_step: Option<u64>,
    /// Which rows each kind of law was fitted on, in words.
    #[serde(default)]
    pub rows: String,
    /// The pooled seed noise of ln(metric) at the fitted step (null with single seeds).
    #[serde(default)]
    pub noise: Option<Noise>,
    /// The measured floor E is fixed at (null: none measured for this metric, or `--floor free`
    /// or `zero`; `floor_choice` says which was asked for).
    #[serde(default)]
    pub floor: Option<FloorRef>,
    /// Where E was asked to come from (`ditkd fit --floor`).
    #[serde(default)]
    pub floor_choice: FloorChoice,
    /// The law's domain in head dim (`ditkd fit --min-head-dim`): shapes below it were left out.
    #[serde(default)]
    pub min_head_dim: Option<usize>,
    /// The first learning-curve step the compute law was fitted on (`ditkd fit --min-curve-step`).
    #[serde(default)]
    pub min_curve_step: Option<u64>,
    /// Every shape measured at the fitted step (the seeds `ditkd best` combines with the law).
    #[serde(default)]
    pub measured: Vec<MeasuredShape>,
}

/// `<dir>/law.json`, or the path itself when it names a `.json` file.
/// A sweep's law for one distillation setup: `law.json` for output KD (the default), else
/// `law-<setup>.json` (what `ditkd fit --mode <setup>` writes), so each setup keeps its own.
pub fn setup_law_path(dir: &Path, setup: distill::setup::Setup) -> PathBuf {
    match setup {
        distill::setup::Setup::Kd => dir.join("law.json"),
        distill::setup::Setup::Feat
        | distill::setup::Setup::Mi1
        | distill::setup::Setup::Ta
        | distill::setup::Setup::Onestep
        | distill::setup::Setup::Scratch => dir.join(format!("law-{setup}.json")),
    }
}

pub fn law_path(path_or_dir: &Path) -> PathBuf {
    if path_or_dir.is_dir() || path_or_dir.extension().is_none_or(|e| e != "json") {
        path_or_dir.join("law.json")
    } else {
        path_or_dir.to_path_buf()
    }
}

fn any_heads() -> [usize; 2] {
    [1, usize::MAX]
}

impl LawFile {
    /// Read `law.json` (or `<dir>/law.json`).
    pub fn load(path_or_dir: impl AsRef<Path>) -> Result<LawFile> {
        let p = law_path(path_or_dir.as_ref());
        if !p.exists() {
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            bail!(
                "{}: no fitted law (run `ditkd fit {}` first)",
                p.display(),
                dir.display()
            );
        }
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let law: LawFile = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a law.json", p.display()))?;
        if law.laws.iter().all(|l| l.name != law.chosen) {
            bail!(
                "{}: chosen law `{}` is not among the fitted laws",
                p.display(),
                law.chosen
            );
        }
        Ok(law)
    }

    /// Write atomically (temporary file + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        dit::io::write_json_atomic(path, self)
    }

    /// The chosen law's coefficients its bootstrap does not pin down (see `guard::unidentified`).
    pub fn unidentified(&self) -> Vec<String> {
        let min = self
            .cv_predictions
            .iter()
            .map(|c| c.measured)
            .filter(|v| v.is_finite())
            .fold(f64::INFINITY, f64::min);
        guard::unidentified(self.chosen(), if min.is_finite() { min } else { 0.0 })
    }

    /// The chosen law (`load` checked that it exists).
    pub fn chosen(&self) -> &LawFit {
        self.laws
            .iter()
            .find(|l| l.name == self.chosen)
            .unwrap_or(&self.laws[0])
    }

    /// The base DitConfig of the sweep's students (depth/width/heads are placeholders).
    pub fn base_config(&self) -> Result<DitConfig> {
        let cfg: DitConfig = serde_json::from_value(self.base.clone())
            .context("law.json: `base` is not a DitConfig")?;
        Ok(cfg)
    }

    /// Every feasible shape on the base config (see `design::feasible`), and every measured shape
    /// off that grid (a sweep's widths step by 4 where the grid's step by 8: d6-w60 must still
    /// answer with its seeds), sorted by params.
    pub fn feasible_shapes(&self) -> Result<Vec<Shape>> {
        let mut v = design::feasible(&self.base_config()?);
        for m in &self.measured {
            let s = Shape {
                depth: m.depth,
                width: m.width,
                heads: m.heads,
                params: m.params,
            };
            if !v.contains(&s) {
                v.push(s);
            }
        }
        v.sort_by_key(|s| (s.params, s.depth, s.width, s.heads));
        Ok(v)
    }

    /// 90 % interval of the chosen law's prediction for `s`, from the bootstrap draws.
    pub fn predict_interval(&self, s: &Shape) -> Option<[f64; 2]> {
        let law = self.chosen();
        let preds: Vec<f64> = self
            .bootstrap
            .iter()
            .map(|c| law.predict_with(c, s))
            .filter(|v| v.is_finite())
            .collect();
        bootstrap::interval90(&preds)
    }

    /// Where a shape lies outside the fitted ranges (params, depth, width, heads, head dim), in
    /// that order.
    pub fn extrapolates(&self, s: &Shape) -> Vec<OutOfRange> {
        [
            (Axis::Params, s.params, self.params_range),
            (Axis::Depth, s.depth, self.depth_range),
            (Axis::Width, s.width, self.width_range),
            (Axis::Heads, s.heads, self.heads_range),
            (Axis::HeadDim, s.head_dim(), self.head_dim_range),
        ]
        .into_iter()
        .filter(|&(_, v, r)| v < r[0] || v > r[1])
        .map(|(axis, value, range)| OutOfRange { axis, value, range })
        .collect()
    }

    /// The measured ranges the design and `best` keep to.
    pub fn domain(&self) -> design::Domain {
        design::Domain {
            params: self.params_range,
            depth: self.depth_range,
            width: self.width_range,
            head_dim: self.head_dim_range,
            heads: self.heads_range,
        }
    }

    /// Reference shape for breaking ties the law cannot resolve (the centre of the fitted ranges).
    pub fn reference(&self) -> design::Reference {
        design::Reference::from_ranges(self.depth_range, self.width_range, self.head_dim_range)
    }
}
