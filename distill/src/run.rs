//! One distillation run end to end: resolved config -> training (resumable) -> evaluation ->
//! `summary.json` + sample grid, in its own directory. The sweep runner calls this per shape.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use dit::{DiT, DitConfig};
use serde::{Deserialize, Serialize};

use crate::curve::{CurveLog, CurveRow};
use crate::data::{DataConfig, Split};
use crate::eval::{evaluate, EvalConfig, EvalResult, FidScorer};
use crate::featnet::FeatNet;
use crate::kd::{BankConfig, KdObjective, KdWeights, Mode, OnestepObjective, SampleBank};
use crate::objective::{EpsilonObjective, Objective};
use crate::optim::OptimConfig;
use crate::paths::RunPaths;
use crate::train::{train, TrainConfig, TrainOptions};

/// How a student starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StudentInit {
    Random,
    /// Copy embedders, blocks (by the block map) and final layer from the teacher (same width only).
    Teacher,
}

/// The resolved configuration of one student run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    /// Teacher run directory or weights file (any DiT checkpoint; a distilled student can teach).
    pub teacher: Option<PathBuf>,
    pub mode: Mode,
    pub student: DitConfig,
    #[serde(default = "d_init")]
    pub init: StudentInit,
    #[serde(default)]
    pub kd: KdWeights,
    #[serde(default)]
    pub bank: BankConfig,
    /// Weight of the feature-net perceptual loss in one-step mode (0 = plain L2).
    #[serde(default)]
    pub perceptual_weight: f64,
    pub steps: usize,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    #[serde(default = "d_optim")]
    pub optim: OptimConfig,
    #[serde(default = "d_ema")]
    pub ema_decay: f64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub eval: EvalConfig,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default = "d_featnet")]
    pub featnet: PathBuf,
    /// Shared caches (sample banks, teacher evaluation samples).
    #[serde(default = "d_cache")]
    pub cache_dir: PathBuf,
    /// Training FLOPs of the teacher when it is a teaching assistant (a distilled student, setup
    /// `ta`): charged to this student's compute. Absent otherwise (and then left out of the
    /// serialised config, so other runs keep their hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ta_train_flops: Option<f64>,
}

/// Largest step count a run accepts.
pub const MAX_STEPS: usize = 100_000_000;
/// Largest batch a run accepts (a batch is held in memory with its activations).
pub const MAX_BATCH: usize = 8192;

fn d_init() -> StudentInit {
    StudentInit::Random
}
/// A student's learning rate, warm-up and EMA decay when a config does not say (the sweep spec's
/// defaults are these too).
pub const DEFAULT_LR: f64 = 1e-3;
pub const DEFAULT_WARMUP: usize = 100;
pub const DEFAULT_EMA: f64 = 0.999;

fn d_batch() -> usize {
    crate::train::DEFAULT_BATCH
}
fn d_optim() -> OptimConfig {
    OptimConfig {
        lr: DEFAULT_LR,
        warmup_steps: DEFAULT_WARMUP,
        ..Default::default()
    }
}
fn d_ema() -> f64 {
    DEFAULT_EMA
}
fn d_featnet() -> PathBuf {
    crate::featnet::default_dir()
}
/// Where runs cache what they share (teacher targets, real-image features), unless configured.
pub const DEFAULT_CACHE_DIR: &str = "results/cache";

fn d_cache() -> PathBuf {
    PathBuf::from(DEFAULT_CACHE_DIR)
}

impl DistillConfig {
    /// A config with defaults for everything but the essentials.
    pub fn new(teacher: Option<PathBuf>, mode: Mode, student: DitConfig, steps: usize) -> Self {
        Self {
            teacher,
            mode,
            student,
            init: d_init(),
            kd: KdWeights::default(),
            bank: BankConfig::default(),
            perceptual_weight: 0.0,
            steps,
            batch_size: d_batch(),
            optim: d_optim(),
            ema_decay: d_ema(),
            seed: 0,
            eval: EvalConfig::default(),
            data: DataConfig::default(),
            featnet: d_featnet(),
            cache_dir: d_cache(),
            ta_train_flops: None,
        }
    }

    /// Everything a run needs that can be checked without loading anything: called before any
    /// run of a sweep starts (and by `--dry-run`), so no error surfaces after training.
    pub fn validate(&self) -> Result<()> {
        self.student.validate().context("student")?;
        if self.mode.needs_teacher() && self.teacher.is_none() {
            bail!("teacher: mode `{}` needs a teacher", self.mode);
        }
        if !(1..=MAX_STEPS).contains(&self.steps) {
            bail!("steps: must lie in 1..={MAX_STEPS} (got {})", self.steps);
        }
        if !(1..=MAX_BATCH).contains(&self.batch_size) {
            bail!(
                "batch_size: must lie in 1..={MAX_BATCH} (got {})",
                self.batch_size
            );
        }
        self.optim.validate().context("optim")?;
        if !(0.0..1.0).contains(&self.ema_decay) {
            bail!("ema_decay: must lie in [0, 1) (got {})", self.ema_decay);
        }
        self.kd.validate().context("kd")?;
        if !(self.perceptual_weight.is_finite() && self.perceptual_weight >= 0.0) {
            bail!(
                "perceptual_weight: must be finite and >= 0 (got {})",
                self.perceptual_weight
            );
        }
        if self.mode.trains_on_bank() {
            if !(1..=crate::eval::MAX_SAMPLES).contains(&self.bank.size) {
                bail!(
                    "bank.size: must lie in 1..={} (got {})",
                    crate::eval::MAX_SAMPLES,
                    self.bank.size
                );
            }
            self.bank
                .sampler
                .validate(dit::NoiseSchedule::dit_default().num_steps())
                .map_err(|e| anyhow::anyhow!("bank.sampler.{e}"))?;
        }
        if let Some(f) = self.ta_train_flops {
            if !(f.is_finite() && f >= 0.0 && self.mode.takes_assistant()) {
                bail!("ta_train_flops: a KD run's teaching-assistant cost, finite and >= 0 (got {f}, mode {})", self.mode);
            }
        }
        self.eval.validate().context("eval")?;
        if let Some(s) = self.eval.at_steps.iter().find(|&&s| s > self.steps) {
            bail!(
                "eval.at_steps: step {s} is beyond the run's {} steps",
                self.steps
            );
        }
        Ok(())
    }

    /// Stable hash of the resolved config: a run directory holding this hash is this run.
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(
            &Sha256::digest(serde_json::to_string(self).unwrap_or_default().as_bytes())[..8],
        )
    }

    /// `d4-w96-h4-p4-kd-s0` (the setup names the run: `kd`, `feat`, `mi1`, `ta`, `onestep`, `scratch`).
    pub fn run_label(&self) -> String {
        format!(
            "{}-{}-s{}",
            self.student.shape_label(),
            crate::setup::Setup::of(self),
            self.seed
        )
    }

    /// Training FLOPs up to `step` (analytic, 2 x multiply-accumulates): the student's forward
    /// and backward (3 forwards' worth) per image, plus what the method pays its teacher.
    pub fn train_flops(&self, teacher: Option<&DitConfig>, step: usize) -> f64 {
        let images = (step * self.batch_size) as f64;
        let student = 3.0 * self.student.forward_flops() as f64 * images;
        let teacher = match (self.mode, teacher) {
            // One teacher forward per training image (cached outputs were computed once, by someone).
            (Mode::Kd, Some(t)) => t.forward_flops() as f64 * images,
            // The bank: every triple is a full guided sampling run of the teacher.
            (Mode::Onestep, Some(t)) => {
                (self.bank.size * crate::eval::forwards_per_image(Mode::Kd, &self.bank.sampler))
                    as f64
                    * t.forward_flops() as f64
            }
            (Mode::Kd | Mode::Onestep, None) | (Mode::Scratch, _) => 0.0,
        };
        // A teaching assistant's own training is paid before this student's first step.
        student + teacher + self.ta_train_flops.unwrap_or(0.0)
    }

    /// The learning-curve row of `step`.
    pub fn curve_row(
        &self,
        teacher: Option<&DitConfig>,
        step: usize,
        train_wall_s: f64,
        eval_wall_s: f64,
        metrics: EvalResult,
    ) -> CurveRow {
        CurveRow {
            step,
            images_seen: step * self.batch_size,
            train_flops: self.train_flops(teacher, step),
            train_wall_s,
            eval_wall_s,
            metrics,
        }
    }

    /// The training config handed to the loop.
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            name: self.run_label(),
            model: self.student.clone(),
            data: self.data.clone(),
            optim: self.optim.clone(),
            steps: self.steps,
            batch_size: self.batch_size,
            seed: self.seed,
            ema_decay: self.ema_decay,
            ema_warmup: true,
            checkpoint_every: 100.min(self.steps),
            log_every: 25.min(self.steps),
            sampler: self.eval.sampler.clone(),
        }
    }
}

/// How a run ended (the table's `status` column: `Display` and `FromStr` use serde's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::VariantArray)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Trained and evaluated.
    Ok,
    /// The loss became NaN or infinite: deterministic, so a resume does not retry it.
    Diverged,
    /// Anything else (I/O, a bad checkpoint, non-finite samples): a resume retries it.
    Failed,
}

impl RunStatus {
    /// Every status, in declaration order (derived).
    pub const ALL: &'static [RunStatus] = <RunStatus as strum::VariantArray>::VARIANTS;

    /// The `status` column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Diverged => "diverged",
            Self::Failed => "failed",
        }
    }

    /// A rerun of the same config would end the same way (finished, or diverged).
    pub fn is_final(self) -> bool {
        match self {
            Self::Ok | Self::Diverged => true,
            Self::Failed => false,
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `status` read back from a table.
impl std::str::FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        crate::names::parse(RunStatus::ALL, s, "run status")
    }
}

/// What a run produced: one row of the sweep table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub status: RunStatus,
    pub reason: Option<String>,
    pub config_hash: String,
    /// The setup (`kd`, `feat`, `mi1`, `ta`, `onestep`, `scratch`; older summaries hold the first
    /// three's names as their mode).
    pub mode: crate::setup::Setup,
    pub seed: u64,
    pub depth: usize,
    pub width: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub patch: usize,
    pub mlp_ratio: f64,
    pub params: usize,
    pub gflops: f64,
    pub steps: usize,
    pub batch_size: usize,
    pub final_loss: f64,
    pub train_wall_s: f64,
    /// Share of the training wall time spent in teacher forward passes.
    pub teacher_fraction: f64,
    pub eval_wall_s: f64,
    /// Wall time of the learning-curve evaluations before the last step (s).
    #[serde(default)]
    pub curve_eval_wall_s: f64,
    /// Training FLOPs of the whole run (analytic; with the teacher's forwards for KD and one-step).
    #[serde(default)]
    pub train_flops: f64,
    /// None unless the run was evaluated: a failed run's metric columns are null, never 0.
    #[serde(flatten)]
    pub metrics: Option<EvalResult>,
    pub teacher_hash: Option<String>,
    pub featnet_hash: String,
    pub code_version: String,
}

/// The code that computed a row: a hash of the three crates' sources and `Cargo.lock`, taken at
/// build time (`build.rs`). Committing results does not change it; changing any source file does.
pub fn code_version() -> String {
    env!("DITKD_SOURCE_HASH").to_string()
}

/// A finished run's summary, if `dir` holds one for exactly this config.
pub fn completed(dir: &Path, cfg: &DistillConfig) -> Option<Summary> {
    let s: Summary =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).ok()?).ok()?;
    // Done, or failed in a way a rerun would repeat (divergence is deterministic).
    (s.config_hash == cfg.hash() && s.status.is_final()).then_some(s)
}

/// Shared, read-only inputs of many runs (loaded once per process).
pub struct Shared {
    pub train: crate::data::Dataset,
    pub featnet: FeatNet,
    pub featnet_hash: String,
    /// Hash of the test set's pixels and labels (keys the cached features and the reference).
    pub data_hash: String,
    pub test_feats: Vec<f32>,
    /// Where the runs compute (the feature net lives there too).
    pub device: Device,
    /// The FID Inception and the test set's statistics, when an evaluation lists `fid`
    /// ([`Shared::load_fid`]).
    pub fid: Option<FidScorer>,
}

impl Shared {
    /// The training set, the feature net and the test set's features. With a cache directory the
    /// features are computed once per feature net and test set (keyed by both hashes) and read
    /// back by every later process.
    pub fn load(
        data: &DataConfig,
        featnet_dir: &Path,
        cache_dir: Option<&Path>,
        device: &Device,
    ) -> Result<Self> {
        let train = data.load(Split::Train)?;
        let test = data.load(Split::Test)?;
        let featnet = FeatNet::load(featnet_dir, device)?;
        let featnet_hash = FeatNet::hash(featnet_dir)?;
        let data_hash = dataset_hash(&test);
        let test_feats = match cache_dir {
            Some(dir) => cached_reference_features(
                &featnet,
                &featnet_hash,
                &data_hash,
                &test,
                &crate::paths::output(dir),
            )?,
            None => crate::eval::reference_features(&featnet, &test)?,
        };
        Ok(Self {
            train,
            featnet,
            featnet_hash,
            data_hash,
            test_feats,
            device: device.clone(),
            fid: None,
        })
    }

    /// With `fid` in `eval.metrics`: load the Inception weights (the error names the set-up
    /// command when they are absent) and the statistics of the test set (or its first
    /// `eval.fid_real_images`), computed once and cached in `cache_dir/inception/` by the weights'
    /// and the pixels' SHA-256. Without `fid`, nothing.
    pub fn load_fid(
        &mut self,
        data: &DataConfig,
        eval: &EvalConfig,
        cache_dir: &Path,
    ) -> Result<()> {
        if !eval.wants_fid() {
            return Ok(());
        }
        let test = data.load(Split::Test)?;
        let dir = crate::paths::output(cache_dir).join("inception");
        self.fid = Some(FidScorer::load(&test, eval.fid_real_images, &dir)?);
        Ok(())
    }

    /// The FID scorer an evaluation under `eval` uses: None without `fid`; an error when `fid` is
    /// on and it was not loaded (or was loaded for another number of real images).
    pub fn fid_for(&self, eval: &EvalConfig) -> Result<Option<&FidScorer>> {
        if !eval.wants_fid() {
            return Ok(None);
        }
        let f = self.fid.as_ref().context(
            "eval.metrics lists `fid` but the FID Inception was not loaded (Shared::load_fid)",
        )?;
        anyhow::ensure!(
            f.real_images == eval.fid_real_images,
            "eval.fid_real_images: {:?}, but the loaded FID statistics are of {:?} real images",
            eval.fid_real_images,
            f.real_images
        );
        Ok(Some(f))
    }
}

fn dataset_hash(d: &crate::data::Dataset) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for v in &d.images {
        h.update(v.to_le_bytes());
    }
    h.update(&d.labels);
    hex::encode(&h.finalize()[..8])
}

fn cached_reference_features(
    net: &FeatNet,
    net_hash: &str,
    data_hash: &str,
    test: &crate::data::Dataset,
    dir: &Path,
) -> Result<Vec<f32>> {
    let path = dir.join(format!(
        "featnet-test-{}-{data_hash}.safetensors",
        &net_hash[..net_hash.len().min(16)]
    ));
    if let Ok(t) = candle_core::safetensors::load(&path, &Device::Cpu) {
        if let Some(f) = t
            .get("features")
            .and_then(|f| f.flatten_all().ok())
            .and_then(|f| f.to_vec1::<f32>().ok())
        {
            if f.len() == test.len() * crate::featnet::FEAT_DIM {
                return Ok(f);
            }
        }
    }
    let feats = crate::eval::reference_features(net, test)?;
    let t = Tensor::from_slice(&feats, (test.len(), crate::featnet::FEAT_DIM), &Device::Cpu)?;
    dit::io::save_safetensors_atomic(
        &std::collections::HashMap::from([("features".to_string(), t)]),
        &path,
    )?;
    Ok(feats)
}

/// Train (or resume) and evaluate one student in `dir`. Training failures (divergence, I/O) are
/// recorded as `status: failed` in `summary.json` and returned as such; bad configs are errors.
pub fn run_distill(
    cfg: &DistillConfig,
    dir: &Path,
    shared: &Shared,
    progress: bool,
) -> Result<Summary> {
    cfg.validate()?;
    if let Some(s) = completed(dir, cfg) {
        return Ok(s);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    dit::io::write_atomic(
        &dir.join("config.yaml"),
        serde_yaml_ng::to_string(cfg)?.as_bytes(),
    )?;
    let device = shared.device.clone();
    let s = &cfg.student;
    let mut summary = Summary {
        status: RunStatus::Failed,
        reason: None,
        config_hash: cfg.hash(),
        mode: crate::setup::Setup::of(cfg),
        seed: cfg.seed,
        depth: s.depth,
        width: s.hidden_size,
        heads: s.num_heads,
        head_dim: s.head_dim(),
        patch: s.patch_size,
        mlp_ratio: s.mlp_ratio,
        params: s.num_params(),
        gflops: s.forward_gflops(),
        steps: cfg.steps,
        batch_size: cfg.batch_size,
        final_loss: f64::NAN,
        train_wall_s: 0.0,
        teacher_fraction: 0.0,
        eval_wall_s: 0.0,
        curve_eval_wall_s: 0.0,
        train_flops: 0.0,
        metrics: None,
        teacher_hash: None,
        featnet_hash: shared.featnet_hash.clone(),
        code_version: code_version(),
    };
    let result = (|| -> Result<()> {
        let teacher = match &cfg.teacher {
            Some(p) => {
                let (_, weights) = crate::checkpoint::locate_model(p)?;
                summary.teacher_hash =
                    Some(crate::checkpoint::file_hash(&weights)?[..16].to_string());
                Some(crate::checkpoint::load_model(p, &device)?)
            }
            None => None,
        };
        let tcfg = cfg.train_config();
        let mut student = DiT::new(s, cfg.seed, DType::F32, &device)?;
        if cfg.init == StudentInit::Teacher {
            let t = teacher
                .as_ref()
                .context("init: `teacher` needs a teacher")?;
            crate::kd::init_from_teacher(&student, t)?;
        }
        let mut objective: Box<dyn Objective> = match cfg.mode {
            Mode::Scratch => Box::new(EpsilonObjective::new()),
            Mode::Kd => {
                let path = cfg
                    .teacher
                    .as_ref()
                    .context("teacher: kd needs a teacher")?;
                let hash = summary
                    .teacher_hash
                    .as_ref()
                    .context("teacher: kd needs a teacher")?;
                let t = crate::checkpoint::load_model(path, &device)?;
                let cache = crate::kd::TeacherCache::new(
                    &crate::paths::output(&cfg.cache_dir),
                    hash,
                    cfg.seed,
                    cfg.batch_size,
                    s.class_dropout_prob,
                );
                Box::new(KdObjective::new(t, s, cfg.kd.clone(), cfg.seed)?.with_cache(cache))
            }
            Mode::Onestep => {
                let t = teacher
                    .as_ref()
                    .context("teacher: onestep needs a teacher")?;
                let hash = summary
                    .teacher_hash
                    .as_ref()
                    .context("teacher: onestep needs a teacher")?;
                let cache = crate::paths::output(&cfg.cache_dir);
                let bank = SampleBank::load_or_generate(t, hash, &cfg.bank, &cache, progress)?;
                let perceptual = (cfg.perceptual_weight > 0.0)
                    .then(|| {
                        FeatNet::load(&cfg.featnet, &device).map(|n| (n, cfg.perceptual_weight))
                    })
                    .transpose()?;
                Box::new(OnestepObjective::new(bank, perceptual))
            }
        };
        // ---- train, evaluating the EMA weights at each curve point on the way ---------------------
        // Training stops at each point (a checkpoint), is evaluated, and resumes from the checkpoint:
        // bit-identical to one uninterrupted call (tested), and a killed run resumes mid-curve.
        let t0 = Instant::now();
        let resumed_at = crate::checkpoint::find(dir)
            .and_then(|d| crate::checkpoint::read_meta(&d).ok())
            .map_or(0, |m| m.step);
        let mut curve = CurveLog::open(dir, resumed_at)?;
        let quiet = EvalConfig {
            speed: false,
            ..cfg.eval.clone()
        };
        let teacher_cfg = teacher.as_ref().map(|t| t.cfg.clone());
        let fid = shared.fid_for(&cfg.eval)?;
        let mut out = None;
        for &point in &cfg.eval.curve_steps(cfg.steps) {
            let opts = TrainOptions {
                stop_at: Some(point),
                progress,
                label: cfg.run_label(),
            };
            let o = train(
                &tcfg,
                &mut student,
                &shared.train,
                objective.as_mut(),
                &RunPaths::new(dir),
                &opts,
            )?;
            // A point before the checkpoint this sitting started from (a run extended to more
            // steps, whose new curve points fall inside what it had trained) has no weights left
            // to evaluate: it is skipped, never filled with later weights.
            if point < cfg.steps && point >= resumed_at && !curve.has(point) {
                let t = Instant::now();
                let ema = DiT::load(s, &dir.join("ema.safetensors"), DType::F32, &device)?;
                let (m, _) = evaluate(
                    &ema,
                    cfg.mode,
                    &quiet,
                    &shared.featnet,
                    &shared.test_feats,
                    None,
                    fid,
                )?;
                curve.put(cfg.curve_row(
                    teacher_cfg.as_ref(),
                    point,
                    o.wall_time_s,
                    t.elapsed().as_secs_f64(),
                    m,
                ))?;
            }
            out = Some(o);
        }
        let out = out.context("a run has at least its last step to train")?;
        let this_sitting = t0.elapsed().as_secs_f64();
        summary.final_loss = out.final_loss;
        summary.train_wall_s = out.wall_time_s;
        summary.teacher_fraction = objective.teacher_secs() / this_sitting.max(1e-9);
        summary.train_flops = cfg.train_flops(teacher_cfg.as_ref(), cfg.steps);

        // ---- evaluate the final EMA weights ------------------------------------------------------
        let t1 = Instant::now();
        let ema = DiT::load(s, &dir.join("ema.safetensors"), DType::F32, &device)?;
        let teacher_samples = match (&teacher, &summary.teacher_hash) {
            (Some(t), Some(h)) => Some(crate::reference::teacher_samples(
                t,
                h,
                &cfg.eval,
                &cfg.cache_dir,
            )?),
            _ => None,
        };
        let (m, x) = evaluate(
            &ema,
            cfg.mode,
            &cfg.eval,
            &shared.featnet,
            &shared.test_feats,
            teacher_samples.as_ref(),
            fid,
        )?;
        let k = x.dim(0)?.min(60);
        crate::grid::save_grid(
            &x.narrow(0, 0, k)?,
            s.num_classes.min(k),
            2,
            &dir.join("grid.png"),
        )?;
        summary.eval_wall_s = t1.elapsed().as_secs_f64();
        summary.curve_eval_wall_s = curve.eval_secs_before(cfg.steps);
        curve.put(cfg.curve_row(
            teacher_cfg.as_ref(),
            cfg.steps,
            out.wall_time_s,
            summary.eval_wall_s,
            m.clone(),
        ))?;
        summary.metrics = Some(m);
        Ok(())
    })();
    match result {
        Ok(()) => summary.status = RunStatus::Ok,
        Err(e) => {
            if e.downcast_ref::<crate::train::Diverged>().is_some() {
                summary.status = RunStatus::Diverged;
            }
            summary.metrics = None;
            summary.reason = Some(format!("{e:#}"));
        }
    }
    dit::io::write_json_atomic(&dir.join("summary.json"), &summary)?;
    Ok(summary)
}
