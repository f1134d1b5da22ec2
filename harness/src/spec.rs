//! Sweep specs (strict YAML) and the enumeration of DiT shapes that fit each parameter budget.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use distill::data::DataConfig;
use distill::eval::EvalConfig;
use distill::kd::KdWeights;
use distill::setup::Setup;
use dit::DitConfig;
use serde::{Deserialize, Deserializer, Serialize};

use crate::fmt::clip;

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
            Raw::N(n) => parse_count(&n.to_string())
                .map(Count)
                .map_err(serde::de::Error::custom),
            Raw::F(f) => parse_count(&f.to_string())
                .map(Count)
                .map_err(serde::de::Error::custom),
            Raw::S(s) => parse_count(&s).map(Count).map_err(serde::de::Error::custom),
        }
    }
}

/// Largest parameter count accepted anywhere (a trillion: far beyond any DiT here, far below overflow).
pub const MAX_COUNT: usize = 1_000_000_000_000;

/// `250k` -> 250000, `1.5M` -> 1500000.
pub fn parse_count(s: &str) -> std::result::Result<usize, String> {
    let t = s.trim();
    let (num, mul) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        Some('g' | 'G' | 'b' | 'B') => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    let v: f64 = num.trim().parse().map_err(|_| {
        format!(
            "`{}` is not a parameter count (e.g. 250k, 1.2M)",
            clip(s, 40)
        )
    })?;
    if !(v > 0.0) {
        return Err(format!(
            "`{}`: parameter count must be positive",
            clip(s, 40)
        ));
    }
    let n = (v * mul).round();
    if !(1.0..=MAX_COUNT as f64).contains(&n) {
        return Err(format!(
            "`{}`: parameter count must lie in 1..={} (1T)",
            clip(s, 40),
            crate::fmt::grouped(MAX_COUNT as i64)
        ));
    }
    Ok(n as usize)
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
#[serde(
    untagged,
    expecting = "a list of positive integers, or a range {from, to, step} (no other keys)"
)]
pub enum Axis {
    List(Vec<usize>),
    Range(Range),
}

/// An inclusive range of axis values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    pub from: usize,
    pub to: usize,
    pub step: usize,
}

/// Most axis combinations enumerated.
const MAX_COMBOS: usize = 1_000_000;

/// Largest value of any axis (depth, width, heads, patch): far beyond a compact DiT.
const MAX_AXIS: usize = 65_536;

impl Axis {
    pub fn values(&self, field: &str) -> Result<Vec<usize>> {
        let v = match self {
            Axis::List(v) => v.clone(),
            Axis::Range(Range { from, to, step }) => {
                if *step == 0 || from > to {
                    return Err(field_error(
                        format!("axes.{field}"),
                        "a range needs from <= to and step > 0",
                    ));
                }
                if *to > MAX_AXIS {
                    return Err(field_error(
                        format!("axes.{field}"),
                        format!("values must be at most {MAX_AXIS} (got to: {to})"),
                    ));
                }
                (*from..=*to).step_by(*step).collect()
            }
        };
        if v.is_empty() || v.contains(&0) {
            return Err(field_error(
                format!("axes.{field}"),
                "values must be positive and not empty",
            ));
        }
        if let Some(x) = v.iter().find(|&&x| x > MAX_AXIS) {
            return Err(field_error(
                format!("axes.{field}"),
                format!("values must be at most {MAX_AXIS} (got {x})"),
            ));
        }
        if let Some(d) = first_duplicate(&v) {
            return Err(field_error(
                format!("axes.{field}"),
                format!("{d} is listed twice"),
            ));
        }
        Ok(v)
    }
}

/// The first value that occurs twice.
fn first_duplicate<T: PartialEq + Clone>(v: &[T]) -> Option<T> {
    v.iter()
        .enumerate()
        .find(|(i, x)| v[..*i].contains(x))
        .map(|(_, x)| x.clone())
}

/// A validation error that names the spec field it is about (the loader adds file and line).
#[derive(Debug, thiserror::Error)]
#[error("{field}: {msg}")]
pub struct FieldError {
    pub field: String,
    pub msg: String,
}

pub fn field_error(field: impl Into<String>, msg: impl Into<String>) -> anyhow::Error {
    FieldError {
        field: field.into(),
        msg: msg.into(),
    }
    .into()
}

/// 1-based line of a dotted field path (`distill.steps`, `budgets[1].tol`, `axes.heads`) in a YAML
/// text: each key is searched for after the line of its parent. None when a key is not written
/// (a default value).
pub fn line_of(text: &str, field: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0usize;
    let mut found = None;
    for seg in field.split('.') {
        let (key, index) = match seg.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        let hit = (from..lines.len()).find(|&i| {
            let l = lines[i].split('#').next().unwrap_or("");
            l.match_indices(key).any(|(at, _)| {
                let before = l[..at].chars().last();
                let after = l[at + key.len()..].trim_start();
                before.is_none_or(|c| c == ' ' || c == '{' || c == ',' || c == '-' || c == '\t')
                    && after.starts_with(':')
            })
        })?;
        from = hit;
        found = Some(hit);
        if let Some(k) = index {
            // The k-th list item after the key: block items (`- `) or, for a flow list, the key's line.
            let items: Vec<usize> = (hit + 1..lines.len())
                .take_while(|&i| lines[i].starts_with(' ') || lines[i].trim().is_empty())
                .filter(|&i| lines[i].trim_start().starts_with("- "))
                .collect();
            if let Some(&i) = items.get(k) {
                from = i;
                found = Some(i);
            }
        }
    }
    found.map(|i| i + 1)
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
        Self {
            min_head_dim: d_min_hd(),
            max_head_dim: 0,
            closest_width: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillSettings {
    /// The distillation setups, each a run per shape and seed: kd, feat, mi1, ta (with `ta:`),
    /// onestep, scratch.
    pub modes: Vec<Setup>,
    /// The teaching assistant of the `ta` runs (required with `ta`, refused without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ta: Option<AssistantSpec>,
    #[serde(default)]
    pub kd: KdWeights,
    pub steps: usize,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_warmup")]
    pub warmup_steps: usize,
    /// The learning rate after warm-up: `constant` (the default: it does not depend on the end
    /// step, so a run's learning curve is the curve of every shorter run and a run can be extended
    /// without retraining; the evaluated EMA weights do the averaging a decay would) or `cosine`
    /// (decays to 0.1 x lr at `steps`).
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Decay of the weight EMA that is evaluated. Its horizon is about 1/(1 - decay) steps, so short
    /// runs want a smaller decay (0.995: ~200 steps) than long ones (0.999: ~1,000).
    #[serde(default = "d_ema")]
    pub ema_decay: f64,
    /// Also evaluate every run where its training FLOPs equal each other setup's run of the same
    /// shape and seed at that run's last step (extra curve points): setups compared at equal
    /// compute as well as at equal steps.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flop_matched: bool,
}

fn d_batch() -> usize {
    distill::train::DEFAULT_BATCH
}

/// The teaching assistant a sweep trains for its `ta` runs (Mirzadeh et al. 2020): a DiT of
/// intermediate size, distilled from the sweep's teacher with output KD and the sweep's distill
/// settings, then the teacher of every `ta` student, whose compute is charged its training. One
/// assistant per student seed, trained with that seed (the `ta` runs' seed-to-seed spread then
/// includes the assistant's), unless `per_seed: false` (one, on the first seed, for every
/// student). Each is trained once into `<cache_dir>/assistants/` (named by its shape, seed and
/// config hash), before the students that read it, and shared by every sweep that asks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssistantSpec {
    pub depth: usize,
    pub width: usize,
    pub heads: usize,
    /// Its patch size and MLP ratio (default: the student's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_ratio: Option<f64>,
    /// Its training steps (default: `distill.steps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    #[serde(default = "d_true")]
    pub per_seed: bool,
}

fn d_true() -> bool {
    true
}

/// A planned teaching assistant: where it is trained, its run config, and its training FLOPs
/// (what each of its students is charged).
#[derive(Debug, Clone)]
pub struct Assistant {
    pub dir: PathBuf,
    pub cfg: distill::run::DistillConfig,
    pub train_flops: f64,
}

/// The learning-rate schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    #[default]
    Constant,
    Cosine,
}

impl LrSchedule {
    /// `OptimConfig::min_lr_ratio`: the floor of the cosine, 1 for a constant rate.
    pub fn min_lr_ratio(self) -> f64 {
        match self {
            LrSchedule::Constant => 1.0,
            LrSchedule::Cosine => 0.1,
        }
    }
}

impl DistillSettings {
    /// The assistant that teaches a `ta` student of shape `student` and seed `seed` (None without
    /// a `ta:` block).
    pub fn assistant(
        &self,
        spec: &SweepSpec,
        student: &DitConfig,
        seed: u64,
    ) -> anyhow::Result<Option<Assistant>> {
        let Some(a) = &self.ta else {
            return Ok(None);
        };
        let shape = DitConfig {
            depth: a.depth,
            hidden_size: a.width,
            num_heads: a.heads,
            patch_size: a.patch.unwrap_or(student.patch_size),
            mlp_ratio: a.mlp_ratio.unwrap_or(student.mlp_ratio),
            ..student.clone()
        };
        let seed = if a.per_seed {
            seed
        } else {
            spec.seeds.first().copied().unwrap_or(seed)
        };
        let mut cfg = self.run_config(spec, Setup::Kd, shape, seed)?;
        cfg.steps = a.steps.unwrap_or(self.steps);
        cfg.eval.at_steps.retain(|&s| s <= cfg.steps);
        let teacher = crate::runner::base_config(spec)?;
        let train_flops = cfg.train_flops(Some(&teacher), cfg.steps);
        let dir =
            spec.cache_dir
                .join("assistants")
                .join(format!("{}-{}", cfg.run_label(), cfg.hash()));
        Ok(Some(Assistant {
            dir,
            cfg,
            train_flops,
        }))
    }

    /// The resolved config of one run of `spec`: this is where a sweep's settings reach a run.
    pub fn run_config(
        &self,
        spec: &SweepSpec,
        setup: Setup,
        student: DitConfig,
        seed: u64,
    ) -> anyhow::Result<distill::run::DistillConfig> {
        // Every field is named (no `..`): a new field of DistillConfig is a compile error here,
        // never a silent default.
        let mut c = distill::run::DistillConfig {
            // Scratch runs get the teacher too: only for the teacher-fidelity columns.
            teacher: Some(spec.teacher.clone()),
            mode: setup.mode(),
            student,
            init: distill::run::StudentInit::Random,
            kd: self.kd.clone(),
            bank: distill::kd::BankConfig::default(),
            perceptual_weight: 0.0,
            steps: self.steps,
            batch_size: self.batch_size,
            optim: distill::optim::OptimConfig {
                lr: self.lr,
                warmup_steps: self.warmup_steps,
                min_lr_ratio: self.lr_schedule.min_lr_ratio(),
                ..Default::default()
            },
            ema_decay: self.ema_decay,
            seed,
            eval: spec.eval.clone(),
            data: spec.data.clone(),
            featnet: spec.featnet.clone(),
            cache_dir: spec.cache_dir.clone(),
            // `apply` sets it (a teaching assistant's cost) or checks that there is none.
            ta_train_flops: None,
        };
        // The setup's mode, KD loss and assistant cost.
        // A sweep's `ta` runs learn from the assistant it trains first (`distill.ta`).
        let planned = match setup {
            Setup::Ta => self.assistant(spec, &c.student, seed)?,
            Setup::Kd | Setup::Feat | Setup::Mi1 | Setup::Onestep | Setup::Scratch => None,
        };
        match planned {
            Some(a) => Setup::apply_planned_assistant(&mut c, a.dir, a.train_flops),
            None => setup
                .apply(&mut c)
                .map_err(|e| field_error("teacher", format!("{e:#}")))?,
        }
        Ok(c)
    }
}
fn d_lr() -> f64 {
    distill::run::DEFAULT_LR
}
fn d_warmup() -> usize {
    distill::run::DEFAULT_WARMUP
}
fn d_ema() -> f64 {
    distill::run::DEFAULT_EMA
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parallel {
    /// Runs at once.
    #[serde(default = "d_jobs")]
    pub jobs: usize,
    /// candle CPU threads per run.
    #[serde(default = "d_one")]
    pub threads_per_job: usize,
}

fn d_one() -> usize {
    1
}
/// Two runs at once, one thread each: what a 2-core machine sustains best (README).
fn d_jobs() -> usize {
    2
}

impl Parallel {
    /// Every thread the sweep runs at once, `jobs × threads_per_job`: its shared preparation and
    /// teacher targets use them all, then each run its job's `threads_per_job`.
    pub fn total_threads(&self) -> usize {
        self.jobs * self.threads_per_job
    }
}

impl Default for Parallel {
    fn default() -> Self {
        Self {
            jobs: d_jobs(),
            threads_per_job: d_one(),
        }
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
    /// How the sweep spends its steps: `{kind: grid}` (every run to `distill.steps`, the default)
    /// or `{kind: halving, min_steps: ..}` (a race per budget; `race/`).
    #[serde(default)]
    pub schedule: crate::race::schedule::Schedule,
}

fn d_featnet() -> PathBuf {
    distill::featnet::default_dir()
}
fn d_cache() -> PathBuf {
    PathBuf::from(distill::run::DEFAULT_CACHE_DIR)
}

/// Largest sweep spec file read (a spec is a few KB; anything this large is not one).
const MAX_SPEC_BYTES: u64 = 1 << 20;

impl SweepSpec {
    /// Parse and validate; every error names the file, the field and (where the field is written)
    /// its line, and never echoes more than a line of the input.
    pub fn from_file(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("{}: cannot read sweep spec", path.display()))?;
        if meta.len() > MAX_SPEC_BYTES {
            bail!(
                "{}: {} bytes is not a sweep spec (at most {} KiB)",
                path.display(),
                meta.len(),
                MAX_SPEC_BYTES / 1024
            );
        }
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "{}: cannot read sweep spec (not UTF-8 text?)",
                path.display()
            )
        })?;
        let spec: Self = serde_yaml_ng::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), clip(&e.to_string(), 400)))?;
        spec.validate().map_err(|e| locate(path, &text, e))?;
        Ok(spec)
    }

    /// Checks of the spec's own fields (the per-run checks of `DistillConfig::validate` run on the
    /// plan as well, before anything starts).
    pub fn validate(&self) -> Result<()> {
        distill::paths::check_dir_name(&self.name).map_err(|e| field_error("name", e))?;
        if let Some(h) = self.schedule.halving() {
            h.validate(self.distill.steps, self.seeds.len())
                .map_err(|(f, m)| field_error(format!("schedule.{f}"), m))?;
            if self.distill.lr_schedule != LrSchedule::Constant {
                return Err(field_error(
                    "distill.lr_schedule",
                    "a race extends runs from their checkpoints, so the rate must not depend on the end step: use `constant`",
                ));
            }
        }
        if self.budgets.is_empty() {
            return Err(field_error("budgets", "at least one budget is needed"));
        }
        for (i, b) in self.budgets.iter().enumerate() {
            if !(b.tol > 0.0 && b.tol < 1.0) {
                return Err(field_error(
                    format!("budgets[{i}].tol"),
                    format!("must lie in (0, 1) (got {})", b.tol),
                ));
            }
            if let Some(j) = self.budgets[..i].iter().position(|c| c.params == b.params) {
                return Err(field_error(
                    format!("budgets[{i}].params"),
                    format!(
                        "budget {} is listed twice (budgets[{j}])",
                        crate::fmt::grouped(b.params.0 as i64)
                    ),
                ));
            }
        }
        for (field, axis) in [
            ("depth", &self.axes.depth),
            ("width", &self.axes.width),
            ("heads", &self.axes.heads),
            ("patch", &self.axes.patch),
        ] {
            axis.values(field)?;
        }
        if self.axes.mlp_ratio.is_empty()
            || self
                .axes
                .mlp_ratio
                .iter()
                .any(|r| !(r.is_finite() && *r > 0.0 && *r <= 64.0))
        {
            return Err(field_error(
                "axes.mlp_ratio",
                "values must be finite, positive (at most 64) and not empty",
            ));
        }
        if let Some(d) = first_duplicate(&self.axes.mlp_ratio) {
            return Err(field_error(
                "axes.mlp_ratio",
                format!("{d} is listed twice"),
            ));
        }
        let c = &self.constraints;
        if c.max_head_dim > 0 && c.max_head_dim < c.min_head_dim {
            return Err(field_error(
                "constraints.max_head_dim",
                format!(
                    "{} is below constraints.min_head_dim ({})",
                    c.max_head_dim, c.min_head_dim
                ),
            ));
        }
        let d = &self.distill;
        if d.modes.is_empty() {
            let names: Vec<String> = Setup::ALL.iter().map(|s| s.to_string()).collect();
            return Err(field_error(
                "distill.modes",
                format!("at least one of {}", names.join(", ")),
            ));
        }
        match (d.modes.contains(&Setup::Ta), &d.ta) {
            (true, None) => {
                return Err(field_error(
                    "distill.modes",
                    "`ta` needs its teaching assistant: add `ta: {depth: D, width: W, heads: H}` under distill (the sweep trains it first)",
                ))
            }
            (false, Some(_)) => {
                return Err(field_error(
                    "distill.ta",
                    "no setup uses the assistant: add `ta` to distill.modes, or remove `ta:`",
                ))
            }
            (true, Some(a)) => {
                if a.depth == 0 || a.width == 0 || a.heads == 0 || a.width % a.heads != 0 {
                    return Err(field_error(
                        "distill.ta",
                        format!(
                            "depth, width and heads must be positive and heads must divide width (got depth {}, width {}, heads {})",
                            a.depth, a.width, a.heads
                        ),
                    ));
                }
                if a.steps == Some(0) {
                    return Err(field_error("distill.ta.steps", "must be positive"));
                }
            }
            (false, None) => {}
        }
        if d.kd.feat > 0.0 && !d.modes.iter().any(|m| m.feature_kd()) {
            return Err(field_error(
                "distill.kd.feat",
                "only the feature setups use it (`kd` is output KD): list `feat` or `mi1` in distill.modes",
            ));
        }
        if !d.kd.map.is_one_to_one() {
            return Err(field_error(
                "distill.kd.map",
                "the setup sets the feature mapping: list `mi1` (many-to-one) or `feat` (one-to-one) in distill.modes",
            ));
        }
        if let Some(m) = first_duplicate(&d.modes) {
            return Err(field_error(
                "distill.modes",
                format!("`{m}` is listed twice"),
            ));
        }
        if !(1..=distill::run::MAX_STEPS).contains(&d.steps) {
            return Err(field_error(
                "distill.steps",
                format!(
                    "must lie in 1..={} (got {})",
                    distill::run::MAX_STEPS,
                    d.steps
                ),
            ));
        }
        if !(1..=distill::run::MAX_BATCH).contains(&d.batch_size) {
            return Err(field_error(
                "distill.batch_size",
                format!(
                    "must lie in 1..={} (got {})",
                    distill::run::MAX_BATCH,
                    d.batch_size
                ),
            ));
        }
        if !(d.lr.is_finite() && d.lr > 0.0) {
            return Err(field_error(
                "distill.lr",
                format!("must be a finite number > 0 (got {})", d.lr),
            ));
        }
        if !(0.0..1.0).contains(&d.ema_decay) {
            return Err(field_error(
                "distill.ema_decay",
                format!("must lie in [0, 1) (got {})", d.ema_decay),
            ));
        }
        d.kd.validate().map_err(|e| nested("distill.kd", e))?;
        if self.seeds.is_empty() {
            return Err(field_error("seeds", "at least one seed"));
        }
        if let Some(s) = first_duplicate(&self.seeds) {
            return Err(field_error("seeds", format!("seed {s} is listed twice")));
        }
        if self.parallel.jobs == 0 || self.parallel.jobs > 1024 {
            return Err(field_error(
                "parallel.jobs",
                format!("must lie in 1..=1024 (got {})", self.parallel.jobs),
            ));
        }
        if self.parallel.threads_per_job == 0 || self.parallel.threads_per_job > 1024 {
            return Err(field_error(
                "parallel.threads_per_job",
                format!(
                    "must lie in 1..=1024 (got {})",
                    self.parallel.threads_per_job
                ),
            ));
        }
        self.eval.validate().map_err(|e| nested("eval", e))?;
        Ok(())
    }
}

/// `inner`'s message `field: msg` (from a nested validator) as a field error under `prefix`.
fn nested(prefix: &str, inner: anyhow::Error) -> anyhow::Error {
    let text = format!("{inner:#}");
    match text.split_once(": ") {
        Some((f, msg)) if !f.contains(' ') => field_error(format!("{prefix}.{f}"), msg),
        _ => field_error(prefix, text),
    }
}

/// An error of the spec at `path` with the line of its field, when it names one.
pub fn locate(path: &Path, text: &str, e: anyhow::Error) -> anyhow::Error {
    match e.downcast_ref::<FieldError>() {
        Some(f) => match line_of(text, &f.field) {
            Some(line) => {
                anyhow::anyhow!("{}: line {line}: {}: {}", path.display(), f.field, f.msg)
            }
            None => anyhow::anyhow!("{}: {}: {}", path.display(), f.field, f.msg),
        },
        None => anyhow::anyhow!("{}: {}", path.display(), clip(&format!("{e:#}"), 600)),
    }
}

/// A shape inside a budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub budget: usize,
    pub cfg: DitConfig,
}

/// Why a shape of the axes was left out (for the message when a budget gets no shape).
#[derive(Debug, Default)]
struct Rejections {
    /// Within a budget's tolerance but excluded: (constraint, count).
    in_tolerance: Vec<(&'static str, usize)>,
    /// Nearest valid shape to each budget (params, label).
    nearest: Vec<Option<(usize, String)>>,
}

impl Rejections {
    fn count(&mut self, why: &'static str) {
        match self.in_tolerance.iter_mut().find(|(w, _)| *w == why) {
            Some((_, n)) => *n += 1,
            None => self.in_tolerance.push((why, 1)),
        }
    }
}

/// Every shape of the axes that meets the constraints and falls inside a budget, deduplicated
/// (a shape inside two budgets is kept for the nearer one). `base` fixes input, channels, classes.
/// Errors name the spec field: a listed head count or patch that fits nothing, a budget no shape
/// fits (with the constraint that excluded the shapes within its tolerance).
pub fn enumerate(spec: &SweepSpec, base: &DitConfig) -> Result<Vec<Planned>> {
    let a = &spec.axes;
    let (patches, depths, widths, heads) = (
        a.patch.values("patch")?,
        a.depth.values("depth")?,
        a.width.values("width")?,
        a.heads.values("heads")?,
    );
    for &p in &patches {
        if !base.input_size.is_multiple_of(p) {
            return Err(field_error(
                "axes.patch",
                format!(
                    "{p} does not divide the teacher's input size {}",
                    base.input_size
                ),
            ));
        }
    }
    for &h in &heads {
        if !widths.iter().any(|w| w % h == 0) {
            return Err(field_error(
                "axes.heads",
                format!(
                    "{h} divides no width of axes.width ({})",
                    clip(&format!("{widths:?}"), 80)
                ),
            ));
        }
    }
    if !widths.iter().any(|w| w % 4 == 0) {
        return Err(field_error(
            "axes.width",
            "no width is a multiple of 4 (the 2D sin-cos position embedding needs it)",
        ));
    }
    let combos = [
        patches.len(),
        a.mlp_ratio.len(),
        depths.len(),
        widths.len(),
        heads.len(),
    ]
    .iter()
    .product::<usize>();
    if combos > MAX_COMBOS {
        return Err(field_error("axes", format!("{combos} combinations of the axes (at most {MAX_COMBOS}); narrow a range or raise its step")));
    }
    let c = &spec.constraints;
    let mut why = Rejections {
        nearest: vec![None; spec.budgets.len()],
        ..Default::default()
    };
    let mut out: Vec<Planned> = Vec::new();
    for &patch in &patches {
        for &mlp_ratio in &a.mlp_ratio {
            for &depth in &depths {
                for &width in &widths {
                    for &h in &heads {
                        let cfg = DitConfig {
                            patch_size: patch,
                            mlp_ratio,
                            depth,
                            hidden_size: width,
                            num_heads: h,
                            ..base.clone()
                        };
                        let n = cfg.num_params() as f64;
                        let within =
                            |b: &Budget| (n - b.params.0 as f64).abs() <= b.tol * b.params.0 as f64;
                        let in_any = spec.budgets.iter().any(within);
                        let reject = if width % h != 0 {
                            Some("heads do not divide the width")
                        } else if cfg.validate().is_err() {
                            Some("the width is not a multiple of 4")
                        } else if cfg.head_dim() < c.min_head_dim {
                            Some("head_dim below constraints.min_head_dim")
                        } else if c.max_head_dim > 0 && cfg.head_dim() > c.max_head_dim {
                            Some("head_dim above constraints.max_head_dim")
                        } else {
                            None
                        };
                        if let Some(r) = reject {
                            if in_any {
                                why.count(r);
                            }
                            continue;
                        }
                        for (i, b) in spec.budgets.iter().enumerate() {
                            let gap = (n - b.params.0 as f64).abs();
                            if why.nearest[i]
                                .as_ref()
                                .is_none_or(|(p, _)| gap < (*p as f64 - b.params.0 as f64).abs())
                            {
                                why.nearest[i] = Some((cfg.num_params(), cfg.shape_label()));
                            }
                        }
                        let best = spec.budgets.iter().filter(|b| within(b)).min_by(|x, y| {
                            let dx = (n / x.params.0 as f64).ln().abs();
                            let dy = (n / y.params.0 as f64).ln().abs();
                            dx.total_cmp(&dy)
                        });
                        if let Some(b) = best {
                            if !out.iter().any(|p| p.cfg == cfg) {
                                out.push(Planned {
                                    budget: b.params.0,
                                    cfg,
                                });
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
                && (a.cfg.depth, a.cfg.num_heads, a.cfg.patch_size)
                    == (b.cfg.depth, b.cfg.num_heads, b.cfg.patch_size)
                && a.cfg.mlp_ratio == b.cfg.mlp_ratio
        };
        let all = out.clone();
        out.retain(|p| {
            !all.iter()
                .any(|q| same(p, q) && (gap(q), q.cfg.hidden_size) < (gap(p), p.cfg.hidden_size))
        });
    }
    for (i, b) in spec.budgets.iter().enumerate() {
        if !out.iter().any(|p| p.budget == b.params.0) {
            let excluded = if why.in_tolerance.is_empty() {
                "no shape of the axes lies within the tolerance".to_string()
            } else {
                let parts: Vec<String> = why
                    .in_tolerance
                    .iter()
                    .map(|(w, n)| format!("{n} excluded because {w}"))
                    .collect();
                format!(
                    "shapes within the tolerance (of any budget) were excluded: {}",
                    parts.join("; ")
                )
            };
            let nearest = match &why.nearest[i] {
                Some((p, label)) => format!(
                    "; the nearest valid shape is {label} with {} params",
                    crate::fmt::grouped(*p as i64)
                ),
                None => String::new(),
            };
            return Err(field_error(
                format!("budgets[{i}]"),
                format!(
                    "budget {} (tol {}): no shape fits: {excluded}{nearest}; widen axes.width or the tolerance, or relax constraints",
                    crate::fmt::grouped(b.params.0 as i64),
                    b.tol
                ),
            ));
        }
    }
    out.sort_by_key(|p| {
        (
            p.budget,
            p.cfg.depth,
            p.cfg.hidden_size,
            p.cfg.num_heads,
            p.cfg.patch_size,
        )
    });
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
            let b = spec
                .budgets
                .iter()
                .find(|b| b.params.0 == p.budget)
                .unwrap();
            assert!((n - b.params.0 as f64).abs() <= b.tol * b.params.0 as f64);
            assert_eq!(p.cfg.hidden_size % p.cfg.num_heads, 0);
            assert!(p.cfg.head_dim() >= 8);
        }
        let mut seen = plan.iter().map(|p| p.cfg.shape_label()).collect::<Vec<_>>();
        seen.dedup();
        assert_eq!(seen.len(), plan.len(), "no duplicates");
        assert!(
            plan.iter().any(|p| p.budget == 100_000) && plan.iter().any(|p| p.budget == 250_000)
        );
    }

    #[test]
    fn closest_width_keeps_one_width_per_depth_and_heads() {
        let mut spec: SweepSpec = serde_yaml_ng::from_str(SPEC).unwrap();
        spec.axes.width = Axis::Range(Range {
            from: 16,
            to: 160,
            step: 4,
        });
        let wide = enumerate(&spec, &DitConfig::default()).unwrap();
        spec.constraints.closest_width = true;
        let iso = enumerate(&spec, &DitConfig::default()).unwrap();
        assert!(iso.len() < wide.len());
        for p in &iso {
            let key = (p.budget, p.cfg.depth, p.cfg.num_heads);
            assert_eq!(
                iso.iter()
                    .filter(|q| (q.budget, q.cfg.depth, q.cfg.num_heads) == key)
                    .count(),
                1,
                "{key:?}"
            );
            // Nothing the wide plan had for this key lies nearer the budget.
            let gap = |c: &DitConfig| (c.num_params() as f64 - p.budget as f64).abs();
            assert!(wide
                .iter()
                .filter(|q| (q.budget, q.cfg.depth, q.cfg.num_heads) == key)
                .all(|q| gap(&q.cfg) >= gap(&p.cfg)));
        }
    }

    #[test]
    fn impossible_budget_is_named() {
        let mut spec: SweepSpec = serde_yaml_ng::from_str(SPEC).unwrap();
        spec.budgets.push(Budget {
            params: Count(50_000_000),
            tol: 0.05,
        });
        let e = enumerate(&spec, &DitConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("50,000,000"), "{e}");
    }

    #[test]
    fn ema_decay_reaches_every_run_and_is_checked() {
        let spec: SweepSpec = serde_yaml_ng::from_str(SPEC).unwrap();
        assert_eq!(spec.distill.ema_decay, 0.999, "default");
        let short: SweepSpec =
            serde_yaml_ng::from_str(&SPEC.replace("steps: 10}", "steps: 10, ema_decay: 0.995}"))
                .unwrap();
        let runs = crate::runner::plan(&short, &DitConfig::default()).unwrap();
        assert!(runs.iter().all(|r| r.cfg.ema_decay == 0.995));
        let bad: SweepSpec =
            serde_yaml_ng::from_str(&SPEC.replace("steps: 10}", "steps: 10, ema_decay: 1.5}"))
                .unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("distill.ema_decay"));
    }
}
