//! Sweep specs (strict YAML) and the enumeration of DiT shapes that fit each parameter budget.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use dit::DitConfig;
use distill::data::DataConfig;
use distill::eval::EvalConfig;
use distill::kd::{KdWeights, Mode};
use serde::{Deserialize, Deserializer, Serialize};

/// A parameter count written as `250000`, `250k`, `1.2M`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Count(pub usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            F(f64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Count(n as usize)),
            Raw::F(f) if f > 0.0 => Ok(Count(f as usize)),
            Raw::F(f) => Err(serde::de::Error::custom(format!("parameter count must be positive (got {f})"))),
            Raw::S(s) => parse_count(&s).map(Count).map_err(serde::de::Error::custom),
        }
    }
}

/// `250k` -> 250000, `1.5M` -> 1500000.
pub fn parse_count(s: &str) -> std::result::Result<usize, String> {
    let t = s.trim();
    let (num, mul) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        Some('g' | 'G' | 'b' | 'B') => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("`{s}` is not a parameter count (e.g. 250k, 1.2M)"))?;
    if !(v > 0.0) {
        return Err(format!("`{s}`: parameter count must be positive"));
    }
    Ok((v * mul).round() as usize)
}

/// One budget: shapes with `|params - target| <= tol * target`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub params: Count,
    #[serde(default = "d_tol")]
    pub tol: f64,
}

fn d_tol() -> f64 {
    0.1
}

/// A list of values, or an inclusive range `{from, to, step}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Axis {
    List(Vec<usize>),
    Range { from: usize, to: usize, step: usize },
}

impl Axis {
    pub fn values(&self, field: &str) -> Result<Vec<usize>> {
        let v = match self {
            Axis::List(v) => v.clone(),
            Axis::Range { from, to, step } => {
                if *step == 0 || from > to {
                    bail!("axes.{field}: range needs from <= to and step > 0");
                }
                (*from..=*to).step_by(*step).collect()
            }
        };
        if v.is_empty() || v.contains(&0) {
            bail!("axes.{field}: values must be positive and not empty");
        }
        Ok(v)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Axes {
    pub depth: Axis,
    pub width: Axis,
    pub heads: Axis,
    #[serde(default = "d_patch")]
    pub patch: Axis,
    #[serde(default = "d_mlp")]
    pub mlp_ratio: Vec<f64>,
}

fn d_patch() -> Axis {
    Axis::List(vec![4])
}
fn d_mlp() -> Vec<f64> {
    vec![4.0]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    /// Smallest head dimension allowed.
    #[serde(default = "d_min_hd")]
    pub min_head_dim: usize,
    /// Largest head dimension allowed (0 = none).
    #[serde(default)]
    pub max_head_dim: usize,
    /// Iso-parameter design: per budget, depth, heads, patch and MLP ratio keep only the width whose
    /// parameter count lies nearest the budget, so each depth is compared at one size.
    #[serde(default)]
    pub closest_width: bool,
}

fn d_min_hd() -> usize {
    8
}

impl Default for Constraints {
    fn default() -> Self {
        Self { min_head_dim: d_min_hd(), max_head_dim: 0, closest_width: false }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillSettings {
    pub modes: Vec<Mode>,
    #[serde(default)]
    pub kd: KdWeights,
    pub steps: usize,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_warmup")]
    pub warmup_steps: usize,
    /// Decay of the weight EMA that is evaluated. Its horizon is about 1/(1 - decay) steps, so short
    /// runs want a smaller decay (0.995: ~200 steps) than long ones (0.999: ~1,000).
    #[serde(default = "d_ema")]
    pub ema_decay: f64,
}

fn d_batch() -> usize {
    64
}
fn d_lr() -> f64 {
    1e-3
}
fn d_warmup() -> usize {
    100
}
fn d_ema() -> f64 {
    0.999
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parallel {
    /// Runs at once.
    #[serde(default = "d_one")]
    pub jobs: usize,
    /// candle CPU threads per run.
    #[serde(default = "d_one")]
    pub threads_per_job: usize,
}

fn d_one() -> usize {
    1
}

impl Default for Parallel {
    fn default() -> Self {
        Self { jobs: 2, threads_per_job: 1 }
    }
}

/// A whole sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    pub name: String,
    pub teacher: PathBuf,
    #[serde(default)]
    pub data: DataConfig,
    pub budgets: Vec<Budget>,
    pub axes: Axes,
    #[serde(default)]
    pub constraints: Constraints,
    pub distill: DistillSettings,
    pub seeds: Vec<u64>,
    #[serde(default)]
    pub eval: EvalConfig,
    #[serde(default)]
    pub parallel: Parallel,
    /// The FID-proxy feature net.
    #[serde(default = "d_featnet")]
    pub featnet: PathBuf,
    /// Shared caches (teacher samples, sample banks).
    #[serde(default = "d_cache")]
    pub cache_dir: PathBuf,
}

fn d_featnet() -> PathBuf {
    distill::featnet::default_dir()
}
fn d_cache() -> PathBuf {
    PathBuf::from("results/cache")
}

impl SweepSpec {
    /// Parse and validate; every error names the file (and the field and line, where YAML knows it).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read sweep spec", path.display()))?;
        let spec: Self = serde_yaml_ng::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        spec.validate().map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() || self.name.contains('/') {
            bail!("name: must be a non-empty directory name");
        }
        if self.budgets.is_empty() {
            bail!("budgets: at least one budget is needed");
        }
        for (i, b) in self.budgets.iter().enumerate() {
            if !(b.tol > 0.0 && b.tol < 1.0) {
                bail!("budgets[{i}].tol: must lie in (0, 1) (got {})", b.tol);
            }
        }
        for (field, axis) in [("depth", &self.axes.depth), ("width", &self.axes.width), ("heads", &self.axes.heads), ("patch", &self.axes.patch)] {
            axis.values(field)?;
        }
        if self.axes.mlp_ratio.iter().any(|r| !(*r > 0.0)) || self.axes.mlp_ratio.is_empty() {
            bail!("axes.mlp_ratio: values must be positive");
        }
        if self.distill.modes.is_empty() {
            bail!("distill.modes: at least one of kd, onestep, scratch");
        }
        if self.distill.steps == 0 || self.distill.batch_size == 0 {
            bail!("distill.steps and distill.batch_size: must be positive");
        }
        if !(self.distill.lr > 0.0) {
            bail!("distill.lr: must be positive");
        }
        if !(0.0..1.0).contains(&self.distill.ema_decay) {
            bail!("distill.ema_decay: must lie in [0, 1) (got {})", self.distill.ema_decay);
        }
        if self.seeds.is_empty() {
            bail!("seeds: at least one seed");
        }
        if self.parallel.jobs == 0 || self.parallel.threads_per_job == 0 {
            bail!("parallel.jobs and parallel.threads_per_job: must be positive");
        }
        if self.eval.samples < 2 {
            bail!("eval.samples: at least 2");
        }
        Ok(())
    }
}

/// A shape inside a budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub budget: usize,
    pub cfg: DitConfig,
}

/// Every shape of the axes that meets the constraints and falls inside a budget, deduplicated
/// (a shape inside two budgets is kept for the nearer one). `base` fixes input, channels, classes.
pub fn enumerate(spec: &SweepSpec, base: &DitConfig) -> Result<Vec<Planned>> {
    let a = &spec.axes;
    let mut out: Vec<Planned> = Vec::new();
    for &patch in &a.patch.values("patch")? {
        for &mlp_ratio in &a.mlp_ratio {
            for &depth in &a.depth.values("depth")? {
                for &width in &a.width.values("width")? {
                    for &heads in &a.heads.values("heads")? {
                        let cfg = DitConfig { patch_size: patch, mlp_ratio, depth, hidden_size: width, num_heads: heads, ..base.clone() };
                        if cfg.validate().is_err() {
                            continue; // heads must divide width, patch the input, width % 4
                        }
                        let hd = cfg.head_dim();
                        if hd < spec.constraints.min_head_dim || (spec.constraints.max_head_dim > 0 && hd > spec.constraints.max_head_dim) {
                            continue;
                        }
                        let n = cfg.num_params() as f64;
                        let best = spec
                            .budgets
                            .iter()
                            .filter(|b| (n - b.params.0 as f64).abs() <= b.tol * b.params.0 as f64)
                            .min_by(|x, y| {
                                let dx = (n / x.params.0 as f64).ln().abs();
                                let dy = (n / y.params.0 as f64).ln().abs();
                                dx.partial_cmp(&dy).unwrap()
                            });
                        if let Some(b) = best {
                            if !out.iter().any(|p| p.cfg == cfg) {
                                out.push(Planned { budget: b.params.0, cfg });
                            }
                        }
                    }
                }
            }
        }
    }
    if spec.constraints.closest_width {
        let gap = |p: &Planned| (p.cfg.num_params() as f64 - p.budget as f64).abs();
        let same = |a: &Planned, b: &Planned| {
            a.budget == b.budget
                && (a.cfg.depth, a.cfg.num_heads, a.cfg.patch_size) == (b.cfg.depth, b.cfg.num_heads, b.cfg.patch_size)
                && a.cfg.mlp_ratio == b.cfg.mlp_ratio
        };
        let all = out.clone();
        out.retain(|p| !all.iter().any(|q| same(p, q) && (gap(q), q.cfg.hidden_size) < (gap(p), p.cfg.hidden_size)));
    }
    for b in &spec.budgets {
        if !out.iter().any(|p| p.budget == b.params.0) {
            bail!(
                "budget {} (tol {}): no shape of the axes fits it; widen the axes or the tolerance",
                crate::cmd::info::group(b.params.0),
                b.tol
            );
        }
    }
    out.sort_by_key(|p| (p.budget, p.cfg.depth, p.cfg.hidden_size, p.cfg.num_heads, p.cfg.patch_size));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "
name: t
teacher: results/teachers/x
budgets:
  - {params: 100k, tol: 0.15}
  - {params: 250k, tol: 0.1}
axes:
  depth: [2, 3, 4, 6]
  width: {from: 32, to: 128, step: 16}
  heads: [1, 2, 4]
distill: {modes: [kd, scratch], steps: 10}
seeds: [0]
";

    #[test]
    fn counts_parse() {
        assert_eq!(parse_count("250k").unwrap(), 250_000);
        assert_eq!(parse_count("1.5M").unwrap(), 1_500_000);
        assert!(parse_count("lots").is_err());
        assert!(parse_count("-3k").is_err());
    }

    #[test]
    fn enumeration_respects_budgets_and_constraints() {
        let spec: SweepSpec = serde_yaml_ng::from_str(SPEC).unwrap();
        spec.validate().unwrap();
        let plan = enumerate(&spec, &DitConfig::default()).unwrap();
        assert!(!plan.is_empty());
        for p in &plan {
            let n = p.cfg.num_params() as f64;
            let b = spec.budgets.iter().find(|b| b.params.0 == p.budget).unwrap();
            assert!((n - b.params.0 as f64).abs() <= b.tol * b.params.0 as f64);
            assert_eq!(p.cfg.hidden_size % p.cfg.num_heads, 0);
            assert!(p.cfg.head_dim() >= 8);
        }
        let mut seen = plan.iter().map(|p| p.cfg.shape_label()).collect::<Vec<_>>();
        seen.dedup();
        assert_eq!(seen.len(), plan.len(), "no duplicates");
        assert!(plan.iter().any(|p| p.budget == 100_000) && plan.iter().any(|p| p.budget == 250_000));
    }

    #[test]
    fn closest_width_keeps_one_width_per_depth_and_heads() {
        let mut spec: SweepSpec = serde_yaml_ng::from_str(SPEC).unwrap();
        spec.axes.width = Axis::Range { from: 16, to: 160, step: 4 };
        let wide = enumerate(&spec, &DitConfig::default()).unwrap();
        spec.constraints.closest_width = true;
        let iso = enumerate(&spec, &DitConfig::default()).unwrap();
        assert!(iso.len() < wide.len());
        for p in &iso {
            let key = (p.budget, p.cfg.depth, p.cfg.num_heads);
            assert_eq!(iso.iter().filter(|q| (q.budget, q.cfg.depth, q.cfg.num_heads) == key).count(), 1, "{key:?}");
            // Nothing the wide plan had for this key lies nearer the budget.
            let gap = |c: &DitConfig| (c.num_params() as f64 - p.budget as f64).abs();
            assert!(wide.iter().filter(|q| (q.budget, q.cfg.depth, q.cfg.num_heads) == key).all(|q| gap(&q.cfg) >= gap(&p.cfg)));
        }
    }

    #[test]
    fn impossible_budget_is_named() {
        let mut spec: SweepSpec = serde_yaml_ng::from_str(SPEC).unwrap();
        spec.budgets.push(Budget { params: Count(50_000_000), tol: 0.05 });
        let e = enumerate(&spec, &DitConfig::default()).unwrap_err().to_string();
        assert!(e.contains("50,000,000"), "{e}");
    }

    #[test]
    fn ema_decay_reaches_every_run_and_is_checked() {
        let spec: SweepSpec = serde_yaml_ng::from_str(SPEC).unwrap();
        assert_eq!(spec.distill.ema_decay, 0.999, "default");
        let short: SweepSpec = serde_yaml_ng::from_str(&SPEC.replace("steps: 10}", "steps: 10, ema_decay: 0.995}")).unwrap();
        let runs = crate::runner::plan(&short, &DitConfig::default()).unwrap();
        assert!(runs.iter().all(|r| r.cfg.ema_decay == 0.995));
        let bad: SweepSpec = serde_yaml_ng::from_str(&SPEC.replace("steps: 10}", "steps: 10, ema_decay: 1.5}")).unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("distill.ema_decay"));
    }
}
