//! The training loop: seeded batches, an objective's loss, backward, clipped AdamW with warm-up +
//! cosine LR, EMA, `metrics.jsonl`, atomic checkpoints and exact resume.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, Var};
use dit::rng::HostRng;
use dit::{DiT, DitConfig, SamplerConfig, Tape};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, CheckpointMeta, RngState};
use crate::data::{DataConfig, Dataset};
use crate::ema::Ema;
use crate::optim::{AdamW, OptimConfig};

/// Everything that defines a diffusion training run (the teacher's YAML, or a student's resolved config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Run name (directory under `results/teachers/` for a teacher).
    pub name: String,
    /// The DiT shape.
    #[serde(default)]
    pub model: DitConfig,
    /// Training images.
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub optim: OptimConfig,
    /// Optimiser updates.
    pub steps: usize,
    /// Images per update.
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Seed of every random draw (init, data order, noise, timesteps, label dropout).
    #[serde(default)]
    pub seed: u64,
    /// EMA target decay.
    #[serde(default = "d_ema")]
    pub ema_decay: f64,
    /// EMA warm-up `min(decay, (1+n)/(10+n))`.
    #[serde(default = "d_true")]
    pub ema_warmup: bool,
    /// Save a checkpoint every this many steps (and at the end).
    #[serde(default = "d_ckpt")]
    pub checkpoint_every: usize,
    /// Log a metrics line every this many steps.
    #[serde(default = "d_log")]
    pub log_every: usize,
    /// How the run's sample grid is drawn.
    #[serde(default = "d_sampler")]
    pub sampler: SamplerConfig,
}

/// Images per optimiser step when a config does not say (teachers, students and sweeps alike).
pub const DEFAULT_BATCH: usize = 64;

fn d_batch() -> usize {
    DEFAULT_BATCH
}
fn d_ema() -> f64 {
    0.9999
}
fn d_true() -> bool {
    true
}
fn d_ckpt() -> usize {
    250
}
fn d_log() -> usize {
    25
}
fn d_sampler() -> SamplerConfig {
    SamplerConfig {
        cfg_scale: 2.0,
        ..Default::default()
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        crate::paths::check_dir_name(&self.name).map_err(|e| anyhow::anyhow!("name: {e}"))?;
        self.model.validate().context("model")?;
        if !(1..=crate::run::MAX_STEPS).contains(&self.steps) {
            bail!(
                "steps: must lie in 1..={} (got {})",
                crate::run::MAX_STEPS,
                self.steps
            );
        }
        if !(1..=crate::run::MAX_BATCH).contains(&self.batch_size) {
            bail!(
                "batch_size: must lie in 1..={} (got {})",
                crate::run::MAX_BATCH,
                self.batch_size
            );
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            bail!("ema_decay: must lie in [0, 1) (got {})", self.ema_decay);
        }
        self.optim.validate().context("optim")?;
        if self.checkpoint_every == 0 {
            bail!("checkpoint_every: must be positive");
        }
        if self.log_every == 0 {
            bail!("log_every: must be positive");
        }
        self.sampler
            .validate(dit::NoiseSchedule::dit_default().num_steps())
            .map_err(|e| anyhow::anyhow!("sampler.{e}"))?;
        Ok(())
    }

    /// Read and validate a YAML file; unknown keys and wrong types are errors naming the file.
    pub fn from_yaml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let cfg: Self = serde_yaml_ng::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
        Ok(cfg)
    }

    /// Stable hash of the resolved config (keys runs and guards resumes).
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let s = serde_json::to_string(self).expect("config serialises");
        hex::encode(&Sha256::digest(s.as_bytes())[..8])
    }
}

/// A run whose loss became NaN or infinite. Deterministic: a rerun of the same config diverges at
/// the same step, so a resumed sweep records it once and does not retry it.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("diverged: loss is {loss} at step {step} (the last checkpoint is kept; lower optim.lr or check the data)")]
pub struct Diverged {
    pub step: usize,
    pub loss: f64,
}

/// The deterministic order of training examples: epoch `e` is a permutation drawn from
/// `seed` and `e`, so batch `s` is a function of the step alone (exact resume needs no state).
pub struct DataOrder {
    seed: u64,
    n: usize,
    epoch: usize,
    perm: Vec<usize>,
}

impl DataOrder {
    pub fn new(seed: u64, n: usize) -> Self {
        let mut o = Self {
            seed,
            n,
            epoch: usize::MAX,
            perm: Vec::new(),
        };
        o.load_epoch(0);
        o
    }

    fn load_epoch(&mut self, e: usize) {
        use rand::seq::SliceRandom;
        let mut rng = dit::rng::seeded(
            self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (e as u64).wrapping_add(0xD1B5),
        );
        self.perm = (0..self.n).collect();
        self.perm.shuffle(&mut rng);
        self.epoch = e;
    }

    /// Indices of batch `step` of size `b`.
    pub fn batch(&mut self, step: usize, b: usize) -> Vec<usize> {
        (0..b)
            .map(|j| {
                let k = step * b + j;
                let e = k / self.n;
                if e != self.epoch {
                    self.load_epoch(e);
                }
                self.perm[k % self.n]
            })
            .collect()
    }
}

/// One batch as the objective sees it.
pub struct Batch {
    /// `[B, C, H, W]` clean images in [-1, 1].
    pub x0: Tensor,
    /// Labels after label dropout (null class = num_classes).
    pub y: Vec<u32>,
    /// 0-based optimiser step this batch is for.
    pub step: usize,
}

/// What a training run minimises. The teacher's objective is the DDPM epsilon loss; distillation
/// objectives add teacher terms.
pub trait Objective {
    /// The scalar loss for `batch`, drawing any randomness from `rng`; may return named parts
    /// for the log. The model runs through `model.forward_recorded(.., tape)`, so that
    /// `model.backward(&loss, tape)` takes the blocks' hand-written backward.
    fn loss(
        &mut self,
        model: &DiT,
        tape: &mut Tape,
        batch: &Batch,
        rng: &mut HostRng,
    ) -> Result<(Tensor, Vec<(String, f64)>)>;
    /// Variables the optimiser updates besides the model's (e.g. feature projectors).
    fn extra_vars(&self) -> Vec<(String, Var)> {
        Vec::new()
    }
    /// Seconds spent in a live teacher so far (0 without one).
    fn teacher_secs(&self) -> f64 {
        0.0
    }
}

/// The simple DDPM loss: MSE between the true and the predicted noise at a uniform timestep.
pub struct EpsilonObjective {
    pub schedule: dit::NoiseSchedule,
}

impl EpsilonObjective {
    pub fn new() -> Self {
        Self {
            schedule: dit::NoiseSchedule::dit_default(),
        }
    }
}

impl Default for EpsilonObjective {
    fn default() -> Self {
        Self::new()
    }
}

/// Draw `(t, eps, x_t)` for a batch from the host RNG.
pub fn noise_batch(
    schedule: &dit::NoiseSchedule,
    x0: &Tensor,
    rng: &mut HostRng,
) -> Result<(Vec<usize>, Tensor, Tensor)> {
    let n = x0.dim(0)?;
    let t: Vec<usize> = dit::rng::uniform_ints(rng, n, schedule.num_steps())
        .iter()
        .map(|&v| v as usize)
        .collect();
    let eps = dit::rng::randn(rng, x0.dims(), x0.device())?.to_dtype(x0.dtype())?;
    let xt = schedule.q_sample(x0, &eps, &t)?;
    Ok((t, eps, xt))
}

impl Objective for EpsilonObjective {
    fn loss(
        &mut self,
        model: &DiT,
        tape: &mut Tape,
        batch: &Batch,
        rng: &mut HostRng,
    ) -> Result<(Tensor, Vec<(String, f64)>)> {
        let (t, eps, xt) = noise_batch(&self.schedule, &batch.x0, rng)?;
        let tf: Vec<f32> = t.iter().map(|&v| v as f32).collect();
        let pred = model.eps(&model.forward_recorded(&xt, &tf, &batch.y, tape)?.0)?;
        let loss = (pred - eps)?.sqr()?.mean_all()?;
        Ok((loss, Vec::new()))
    }
}

/// Paths of a run directory.
pub struct RunPaths {
    pub dir: PathBuf,
}

impl RunPaths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn metrics(&self) -> PathBuf {
        self.dir.join("metrics.jsonl")
    }
}

/// What a finished (or stopped) training call reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOutcome {
    pub steps_done: usize,
    /// Mean loss of the last logged window.
    pub final_loss: f64,
    pub wall_time_s: f64,
    pub resumed_from: Option<usize>,
}

/// Options of one training call that are not part of the run's identity.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Stop (after checkpointing) once this many steps are done in total, even if `steps` is larger
    /// (used to split a long run into sittings, and by the resume test).
    pub stop_at: Option<usize>,
    /// Show a progress bar.
    pub progress: bool,
    /// Prefix shown on the progress bar.
    pub label: String,
}

/// Keep only metrics lines of steps `<= step` (a resumed run rewrites what came after its checkpoint).
fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    dit::io::write_atomic(path, kept.as_bytes())
}

/// Train `model` on `data` with `objective`, resuming from `run`'s checkpoint when there is one.
/// The EMA weights are written to `run/ema.safetensors` at every checkpoint.
pub fn train(
    cfg: &TrainConfig,
    model: &mut DiT,
    data: &Dataset,
    objective: &mut dyn Objective,
    run: &RunPaths,
    opts: &TrainOptions,
) -> Result<TrainOutcome> {
    cfg.validate()?;
    std::fs::create_dir_all(&run.dir).with_context(|| format!("creating {}", run.dir.display()))?;
    let device = model.device().clone();
    let mut vars: Vec<(String, Var)> = model
        .varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let model_vars = vars.clone();
    // The optimiser sorts all variables by name, so the objective's own variables (feature
    // projectors) are found by name, not by position.
    let extra = objective.extra_vars();
    vars.extend(extra.iter().cloned());
    let mut opt = AdamW::new(vars, cfg.optim.clone())?;
    let mut ema = Ema::new(&model_vars, cfg.ema_decay, cfg.ema_warmup)?;
    let mut rng = dit::rng::seeded(cfg.seed ^ 0x005E_ED0F_D1FF);
    let config_hash = cfg.hash();
    let mut wall_before = 0.0;
    let mut resumed_from = None;

    // ---- resume -------------------------------------------------------------------------------
    if let Some(dir) = checkpoint::find(&run.dir) {
        let meta = checkpoint::read_meta(&dir)?;
        if meta.config_hash != config_hash {
            bail!(
                "{}: checkpoint was written by another config (hash {} != {}); move it away to start over",
                dir.display(),
                meta.config_hash,
                config_hash
            );
        }
        checkpoint::restore(&dir, model, &mut ema, &mut opt)?;
        restore_extra_vars(&dir, &extra)?;
        rng = meta.rng.restore()?;
        wall_before = meta.wall_time_s;
        resumed_from = Some(meta.step);
        truncate_metrics(&run.metrics(), meta.step)?;
    }
    let start = opt.step;
    let end = opts.stop_at.unwrap_or(cfg.steps).min(cfg.steps);
    let mut order = DataOrder::new(cfg.seed, data.len());
    let null = model.cfg.null_class() as u32;
    let p_drop = model.cfg.class_dropout_prob;

    let pb = (opts.progress && end > start).then(|| {
        let pb = crate::progress::bar(cfg.steps as u64, &opts.label, true);
        pb.set_position(start as u64);
        pb.reset_eta();
        pb
    });

    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run.metrics())?;
    let t0 = Instant::now();
    let mut window = (0.0f64, 0usize, Instant::now());
    let mut last_loss = f64::NAN;
    for step in start..end {
        // ---- batch: images, labels with dropout -------------------------------------------------
        let idx = order.batch(step, cfg.batch_size);
        let (x, mut y) = data.gather(&idx);
        for label in y.iter_mut() {
            if p_drop > 0.0 && rand::Rng::random::<f64>(&mut rng) < p_drop {
                *label = null;
            }
        }
        let x0 = Tensor::from_vec(
            x,
            (idx.len(), data.channels, data.height, data.width),
            &device,
        )?
        .to_dtype(model.dtype())?;
        let batch = Batch { x0, y, step };

        // ---- loss, backward, update ---------------------------------------------------------------
        let mut tape = Tape::new(); // the blocks take the hand-written backward (dit::backward)
        let (loss, parts) = objective.loss(model, &mut tape, &batch, &mut rng)?;
        let loss_v = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        if !loss_v.is_finite() {
            return Err(Diverged { step, loss: loss_v }.into());
        }
        let grads = model.backward(&loss, tape)?;
        let lr = cfg.optim.lr_at(step, cfg.steps);
        let gnorm = opt.step(&grads, lr)?;
        ema.update(&model_vars, step)?;

        // ---- log, checkpoint ----------------------------------------------------------------------
        window.0 += loss_v;
        window.1 += 1;
        let done = step + 1;
        if done % cfg.log_every == 0 || done == end {
            let secs = window.2.elapsed().as_secs_f64();
            let mut rec = serde_json::json!({
                "step": done,
                "loss": window.0 / window.1 as f64,
                "lr": lr,
                "grad_norm": gnorm,
                "it_per_s": window.1 as f64 / secs.max(1e-9),
                "wall_time_s": wall_before + t0.elapsed().as_secs_f64(),
            });
            for (k, v) in &parts {
                rec[k] = serde_json::json!(v);
            }
            last_loss = window.0 / window.1 as f64;
            writeln!(log, "{rec}")?;
            log.flush()?;
            if let Some(pb) = &pb {
                pb.set_message(format!("loss {:.4}", window.0 / window.1 as f64));
            }
            window = (0.0, 0, Instant::now());
        }
        if let Some(pb) = &pb {
            pb.set_position(done as u64);
        }
        if done % cfg.checkpoint_every == 0 || done == end {
            let meta = CheckpointMeta {
                step: done,
                rng: RngState::capture(&rng),
                wall_time_s: wall_before + t0.elapsed().as_secs_f64(),
                config_hash: config_hash.clone(),
            };
            // The run's outputs first, then the checkpoint that declares them done: a kill between
            // the two leaves an older checkpoint and a rerun rewrites the outputs.
            dit::io::save_safetensors_atomic(&ema.tensors(), &run.dir.join("ema.safetensors"))?;
            dit::io::write_json_atomic(&run.dir.join("dit.json"), &model.cfg)?;
            checkpoint::save(&run.dir, model, &ema, &opt, &meta, &extra_tensors(&extra))?;
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    if !run.dir.join("ema.safetensors").exists() {
        // A run killed at the end by an older version: the restored EMA is the final one.
        dit::io::save_safetensors_atomic(&ema.tensors(), &run.dir.join("ema.safetensors"))?;
        dit::io::write_json_atomic(&run.dir.join("dit.json"), &model.cfg)?;
    }
    if last_loss.is_nan() {
        // Nothing left to train (resumed at the end): the last logged window, as an uninterrupted run reports.
        last_loss = std::fs::read_to_string(run.metrics())
            .ok()
            .and_then(|t| {
                t.lines()
                    .last()
                    .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            })
            .and_then(|v| v["loss"].as_f64())
            .unwrap_or(f64::NAN);
    }
    Ok(TrainOutcome {
        steps_done: opt.step,
        final_loss: last_loss,
        wall_time_s: wall_before + t0.elapsed().as_secs_f64(),
        resumed_from,
    })
}

/// Extra (non-model) trained variables, e.g. feature projectors: saved inside the checkpoint.
fn extra_tensors(extra: &[(String, Var)]) -> std::collections::HashMap<String, Tensor> {
    extra
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

fn restore_extra_vars(dir: &Path, extra: &[(String, Var)]) -> Result<()> {
    if extra.is_empty() {
        return Ok(());
    }
    let p = dir.join("extra.safetensors");
    let t = candle_core::safetensors::load(&p, &Device::Cpu)
        .with_context(|| format!("{}: missing", p.display()))?;
    for (name, var) in extra {
        let v = t
            .get(name)
            .with_context(|| format!("{}: tensor `{name}` missing", p.display()))?;
        if v.dims() != var.dims() {
            bail!(
                "{}: `{name}` has shape {:?}, expected {:?}",
                p.display(),
                v.dims(),
                var.dims()
            );
        }
        var.set(&v.to_device(var.device())?)?;
    }
    Ok(())
}

/// Draw `n` samples (labels cycling 0..num_classes) from `model` with a seeded RNG and save a grid.
pub fn sample_grid(
    model: &DiT,
    sampler: &SamplerConfig,
    n: usize,
    seed: u64,
    path: &Path,
) -> Result<Tensor> {
    let mut rng = dit::rng::seeded(seed);
    let c = &model.cfg;
    let labels: Vec<u32> = (0..n).map(|i| (i % c.num_classes) as u32).collect();
    let noise = dit::rng::randn(
        &mut rng,
        &[n, c.in_channels, c.input_size, c.input_size],
        model.device(),
    )?;
    let x = dit::sampler::sample(
        model,
        &dit::NoiseSchedule::dit_default(),
        &noise,
        &labels,
        sampler,
        &mut rng,
    )?;
    let cols = if n.is_multiple_of(c.num_classes) && n >= c.num_classes {
        c.num_classes
    } else {
        (n as f64).sqrt().ceil() as usize
    };
    crate::grid::save_grid(&x, cols, 2, path)?;
    Ok(x)
}
