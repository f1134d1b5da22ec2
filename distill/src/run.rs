//! One distillation run end to end: resolved config -> training (resumable) -> evaluation ->
//! `summary.json` + sample grid, in its own directory. The sweep runner calls this per shape.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use dit::{DiT, DitConfig};
use serde::{Deserialize, Serialize};

use crate::data::{DataConfig, Split};
use crate::eval::{evaluate, EvalConfig, EvalResult};
use crate::featnet::FeatNet;
use crate::kd::{BankConfig, KdObjective, KdWeights, Mode, OnestepObjective, SampleBank};
use crate::optim::OptimConfig;
use crate::train::{train, EpsilonObjective, Objective, RunPaths, TrainConfig, TrainOptions};

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
}

fn d_init() -> StudentInit {
    StudentInit::Random
}
fn d_batch() -> usize {
    128
}
fn d_optim() -> OptimConfig {
    OptimConfig { lr: 1e-3, warmup_steps: 100, ..Default::default() }
}
fn d_ema() -> f64 {
    0.999
}
fn d_featnet() -> PathBuf {
    crate::featnet::default_dir()
}
fn d_cache() -> PathBuf {
    PathBuf::from("results/cache")
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
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.student.validate().context("student")?;
        if self.mode != Mode::Scratch && self.teacher.is_none() {
            bail!("teacher: mode `{}` needs a teacher", self.mode);
        }
        if self.steps == 0 || self.batch_size == 0 {
            bail!("steps and batch_size: must be positive");
        }
        if self.eval.samples < 2 {
            bail!("eval.samples: need at least 2");
        }
        Ok(())
    }

    /// Stable hash of the resolved config: a run directory holding this hash is this run.
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(&Sha256::digest(serde_json::to_string(self).unwrap().as_bytes())[..8])
    }

    /// `d4-w96-h4-p4-kd-s0`.
    pub fn run_label(&self) -> String {
        format!("{}-{}-s{}", self.student.shape_label(), self.mode, self.seed)
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

/// What a run produced: one row of the sweep table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// `ok` or `failed`.
    pub status: String,
    pub reason: Option<String>,
    pub config_hash: String,
    pub mode: Mode,
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
    #[serde(flatten)]
    pub metrics: EvalResult,
    pub teacher_hash: Option<String>,
    pub featnet_hash: String,
    pub code_version: String,
}

/// The project's version: the git commit when available, else the crate version.
pub fn code_version() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(crate::paths::repo_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string())
}

/// A finished run's summary, if `dir` holds one for exactly this config.
pub fn completed(dir: &Path, cfg: &DistillConfig) -> Option<Summary> {
    let s: Summary = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).ok()?).ok()?;
    // Done, or failed in a way a rerun would repeat (divergence is deterministic).
    let final_state = s.status == "ok" || s.reason.as_deref().is_some_and(|r| r.contains("diverged"));
    (s.config_hash == cfg.hash() && final_state).then_some(s)
}

/// Teacher samples on the evaluation noise, cached by teacher hash and eval settings.
fn teacher_eval_samples(teacher: &DiT, hash: &str, cfg: &DistillConfig) -> Result<Tensor> {
    use sha2::{Digest, Sha256};
    let key = format!("{hash}|{}|{}|{}", cfg.eval.samples, cfg.eval.seed, serde_json::to_string(&cfg.eval.sampler)?);
    let h = hex::encode(&Sha256::digest(key.as_bytes())[..8]);
    let path = crate::paths::resolve(&cfg.cache_dir).join(format!("teacher-eval-{h}.safetensors"));
    if let Ok(t) = candle_core::safetensors::load(&path, teacher.device()) {
        if let Some(x) = t.get("samples") {
            return Ok(x.clone());
        }
    }
    let (noise, labels) = crate::eval::eval_inputs(teacher, cfg.eval.samples, cfg.eval.seed)?;
    let x = crate::eval::generate(teacher, Mode::Kd, &noise, &labels, &cfg.eval.sampler, cfg.eval.seed)?;
    let mut m = std::collections::HashMap::new();
    m.insert("samples".to_string(), x.clone());
    dit::io::save_safetensors_atomic(&m, &path)?;
    Ok(x)
}

/// Shared, read-only inputs of many runs (loaded once per process).
pub struct Shared {
    pub train: crate::data::Dataset,
    pub featnet: FeatNet,
    pub featnet_hash: String,
    pub test_feats: Vec<f32>,
}

impl Shared {
    pub fn load(data: &DataConfig, featnet_dir: &Path, device: &Device) -> Result<Self> {
        let train = data.load(Split::Train)?;
        let test = data.load(Split::Test)?;
        let featnet = FeatNet::load(featnet_dir, device)?;
        let featnet_hash = FeatNet::hash(featnet_dir)?;
        let test_feats = crate::eval::reference_features(&featnet, &test)?;
        Ok(Self { train, featnet, featnet_hash, test_feats })
    }
}

/// Train (or resume) and evaluate one student in `dir`. Training failures (divergence, I/O) are
/// recorded as `status: failed` in `summary.json` and returned as such; bad configs are errors.
pub fn run_distill(cfg: &DistillConfig, dir: &Path, shared: &Shared, progress: bool) -> Result<Summary> {
    cfg.validate()?;
    if let Some(s) = completed(dir, cfg) {
        return Ok(s);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    dit::io::write_atomic(&dir.join("config.yaml"), serde_yaml_ng::to_string(cfg)?.as_bytes())?;
    let device = Device::Cpu;
    let s = &cfg.student;
    let mut summary = Summary {
        status: "failed".into(),
        reason: None,
        config_hash: cfg.hash(),
        mode: cfg.mode,
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
        metrics: EvalResult::default(),
        teacher_hash: None,
        featnet_hash: shared.featnet_hash.clone(),
        code_version: code_version(),
    };
    let result = (|| -> Result<()> {
        let teacher = match &cfg.teacher {
            Some(p) => {
                let (_, weights) = crate::checkpoint::locate_model(p)?;
                summary.teacher_hash = Some(crate::checkpoint::file_hash(&weights)?[..16].to_string());
                Some(crate::checkpoint::load_model(p, &device)?)
            }
            None => None,
        };
        let tcfg = cfg.train_config();
        let mut student = DiT::new(s, cfg.seed, DType::F32, &device)?;
        if cfg.init == StudentInit::Teacher {
            let t = teacher.as_ref().context("init: `teacher` needs a teacher")?;
            crate::kd::init_from_teacher(&student, t)?;
        }
        let mut objective: Box<dyn Objective> = match cfg.mode {
            Mode::Scratch => Box::new(EpsilonObjective::new()),
            Mode::Kd => {
                let t = crate::checkpoint::load_model(cfg.teacher.as_ref().unwrap(), &device)?;
                let cache = crate::kd::TeacherCache::new(
                    &crate::paths::resolve(&cfg.cache_dir),
                    summary.teacher_hash.as_ref().unwrap(),
                    cfg.seed,
                    cfg.batch_size,
                    s.class_dropout_prob,
                );
                Box::new(KdObjective::new(t, s, cfg.kd.clone(), cfg.seed)?.with_cache(cache))
            }
            Mode::Onestep => {
                let t = teacher.as_ref().unwrap();
                let cache = crate::paths::resolve(&cfg.cache_dir);
                let bank = SampleBank::load_or_generate(t, summary.teacher_hash.as_ref().unwrap(), &cfg.bank, &cache, progress)?;
                let perceptual = (cfg.perceptual_weight > 0.0)
                    .then(|| FeatNet::load(&cfg.featnet, &device).map(|n| (n, cfg.perceptual_weight)))
                    .transpose()?;
                Box::new(OnestepObjective::new(bank, perceptual))
            }
        };
        let t0 = Instant::now();
        let opts = TrainOptions { stop_at: None, progress, label: cfg.run_label() };
        let out = train(&tcfg, &mut student, &shared.train, objective.as_mut(), &RunPaths::new(dir), &opts)?;
        let this_sitting = t0.elapsed().as_secs_f64();
        summary.final_loss = out.final_loss;
        summary.train_wall_s = out.wall_time_s;
        summary.teacher_fraction = objective.teacher_secs() / this_sitting.max(1e-9);

        // ---- evaluate the EMA weights ----------------------------------------------------------
        let t1 = Instant::now();
        let ema = DiT::load(s, &dir.join("ema.safetensors"), DType::F32, &device)?;
        let teacher_samples = match &teacher {
            Some(t) => Some(teacher_eval_samples(t, summary.teacher_hash.as_ref().unwrap(), cfg)?),
            None => None,
        };
        let (m, x) = evaluate(&ema, cfg.mode, &cfg.eval, &shared.featnet, &shared.test_feats, teacher_samples.as_ref())?;
        let k = x.dim(0)?.min(60);
        crate::grid::save_grid(&x.narrow(0, 0, k)?, s.num_classes.min(k), 2, &dir.join("grid.png"))?;
        summary.metrics = m;
        summary.eval_wall_s = t1.elapsed().as_secs_f64();
        Ok(())
    })();
    match result {
        Ok(()) => summary.status = "ok".into(),
        Err(e) => summary.reason = Some(format!("{e:#}")),
    }
    dit::io::write_json_atomic(&dir.join("summary.json"), &summary)?;
    Ok(summary)
}

