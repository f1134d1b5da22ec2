//! The training loop: seeded batches, an objective's loss, backward, clipped AdamW with warm-up +
//! cosine LR, EMA, `metrics.jsonl`, atomic checkpoints and exact resume. `train` reads top to
//! bottom; the state it checkpoints, the batches and the log are small types below it.

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
use crate::objective::{Batch, Objective};
use crate::optim::{AdamW, OptimConfig};
use crate::order::DataOrder;
use crate::paths::RunPaths;

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

    /// Stable hash of the resolved config (keys runs).
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let s = serde_json::to_string(self).unwrap_or_default();
        hex::encode(&Sha256::digest(s.as_bytes())[..8])
    }

    /// The hash a checkpoint must carry to be resumed by this config: everything that shapes the
    /// trajectory of the weights. When the learning rate does not depend on the end step (a
    /// constant rate after warm-up), the step count and how often the run checkpoints and logs do
    /// not either, so a finished run can be extended to more steps without retraining (the racing
    /// sweep does), bit-identical to a run that was given the larger count from the start.
    pub fn resume_key(&self) -> String {
        if self.optim.schedule_ends() {
            return self.hash();
        }
        Self {
            steps: 0,
            checkpoint_every: 0,
            log_every: 0,
            ..self.clone()
        }
        .hash()
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

// ---------------------------------------------------------------------------------------------
//                                        The loop
// ---------------------------------------------------------------------------------------------

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
    let mut state = State::new(cfg, model, objective)?;
    let resumed_from = state.resume(model, run)?;
    let (start, end) = (
        state.opt.step,
        opts.stop_at.unwrap_or(cfg.steps).min(cfg.steps),
    );
    let mut batches = Batches::new(cfg, model, data);
    let mut log = RunLog::open(run, state.wall_before)?;
    let pb = progress_bar(cfg, opts, start, end);

    for step in start..end {
        let batch = batches.get(step, &mut state.rng)?;
        // The blocks take the hand-written backward (dit::backward) through the tape.
        let mut tape = Tape::new();
        let (loss, parts) = objective.loss(model, &mut tape, &batch, &mut state.rng)?;
        let loss_v = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        if !loss_v.is_finite() {
            return Err(Diverged { step, loss: loss_v }.into());
        }
        let grads = model.backward(&loss, tape)?;
        let lr = cfg.optim.lr_at(step, cfg.steps);
        let grad_norm = state.opt.step(&grads, lr)?;
        state.ema.update(&state.model_vars, step)?;

        let done = step + 1;
        log.add(loss_v);
        if done % cfg.log_every == 0 || done == end {
            let mean = log.write(done, lr, grad_norm, &parts)?;
            if let Some(pb) = &pb {
                pb.set_message(format!("loss {mean:.4}"));
            }
        }
        if let Some(pb) = &pb {
            pb.set_position(done as u64);
        }
        if done % cfg.checkpoint_every == 0 || done == end {
            state.save(model, run, done, log.wall_time_s())?;
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    if !run.dir.join("ema.safetensors").exists() {
        // Resumed at the end with the run's outputs missing (deleted, or a copy of the checkpoint
        // alone): the restored EMA is the final one.
        state.save_outputs(model, run)?;
    }
    Ok(TrainOutcome {
        steps_done: state.opt.step,
        final_loss: log.last_loss()?,
        wall_time_s: log.wall_time_s(),
        resumed_from,
    })
}

// ---------------------------------------------------------------------------------------------
//                      Training state: optimiser, EMA, RNG, checkpoints
// ---------------------------------------------------------------------------------------------

/// Everything a checkpoint holds besides the model's weights.
struct State {
    /// The model's variables, sorted by name (the EMA follows these).
    model_vars: Vec<(String, Var)>,
    /// The objective's own trained variables (feature projectors), saved beside the model's.
    extra: Vec<(String, Var)>,
    opt: AdamW,
    ema: Ema,
    rng: HostRng,
    config_hash: String,
    /// Wall time spent before this sitting (from the checkpoint resumed).
    wall_before: f64,
}

impl State {
    fn new(cfg: &TrainConfig, model: &DiT, objective: &dyn Objective) -> Result<Self> {
        let model_vars = dit::vars::sorted(&model.varmap);
        // The optimiser sorts all variables by name, so the objective's own variables (feature
        // projectors) are found by name, not by position.
        let extra = objective.extra_vars();
        let mut vars = model_vars.clone();
        vars.extend(extra.iter().cloned());
        Ok(Self {
            opt: AdamW::new(vars, cfg.optim.clone())?,
            ema: Ema::new(&model_vars, cfg.ema_decay, cfg.ema_warmup)?,
            rng: dit::rng::seeded(cfg.seed ^ 0x005E_ED0F_D1FF),
            config_hash: cfg.resume_key(),
            wall_before: 0.0,
            model_vars,
            extra,
        })
    }

    /// Restore the latest checkpoint of `run`, if any; returns the step it was taken at.
    fn resume(&mut self, model: &mut DiT, run: &RunPaths) -> Result<Option<usize>> {
        let Some(dir) = checkpoint::find(&run.dir) else {
            return Ok(None);
        };
        let meta = checkpoint::read_meta(&dir)?;
        if meta.config_hash != self.config_hash {
            bail!(
                "{}: checkpoint was written by another config (hash {} != {}); move it away to start over",
                dir.display(),
                meta.config_hash,
                self.config_hash
            );
        }
        checkpoint::restore(&dir, model, &mut self.ema, &mut self.opt)?;
        restore_extra_vars(&dir, &self.extra)?;
        self.rng = meta.rng.restore()?;
        self.wall_before = meta.wall_time_s;
        // A resumed run rewrites the log lines that came after its checkpoint.
        truncate_metrics(&run.metrics(), meta.step)?;
        Ok(Some(meta.step))
    }

    /// The run's outputs first, then the checkpoint that declares them done: a kill between the
    /// two leaves an older checkpoint and a rerun rewrites the outputs.
    fn save(&self, model: &DiT, run: &RunPaths, step: usize, wall_time_s: f64) -> Result<()> {
        let meta = CheckpointMeta {
            step,
            rng: RngState::capture(&self.rng),
            wall_time_s,
            config_hash: self.config_hash.clone(),
        };
        self.save_outputs(model, run)?;
        checkpoint::save(
            &run.dir,
            model,
            &self.ema,
            &self.opt,
            &meta,
            &extra_tensors(&self.extra),
        )
    }
}

impl State {
    /// What a run directory holds besides its checkpoint: the EMA weights and the model config.
    fn save_outputs(&self, model: &DiT, run: &RunPaths) -> Result<()> {
        dit::io::save_safetensors_atomic(&self.ema.tensors(), &run.dir.join("ema.safetensors"))?;
        dit::io::write_json_atomic(&run.dir.join("dit.json"), &model.cfg)
    }
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

// ---------------------------------------------------------------------------------------------
//                                 Batches with label dropout
// ---------------------------------------------------------------------------------------------

/// Batch `step` of the data order, labels dropped to the null class with the model's probability
/// (classifier-free guidance), drawn from the run's RNG.
struct Batches<'a> {
    data: &'a Dataset,
    order: DataOrder,
    batch_size: usize,
    null: u32,
    p_drop: f64,
    device: Device,
    dtype: candle_core::DType,
}

impl<'a> Batches<'a> {
    fn new(cfg: &TrainConfig, model: &DiT, data: &'a Dataset) -> Self {
        Self {
            data,
            order: DataOrder::new(cfg.seed, data.len()),
            batch_size: cfg.batch_size,
            null: model.cfg.null_class() as u32,
            p_drop: model.cfg.class_dropout_prob,
            device: model.device().clone(),
            dtype: model.dtype(),
        }
    }

    fn get(&mut self, step: usize, rng: &mut HostRng) -> Result<Batch> {
        let idx = self.order.batch(step, self.batch_size);
        let (x, mut y) = self.data.gather(&idx);
        for label in y.iter_mut() {
            if self.p_drop > 0.0 && rand::Rng::random::<f64>(rng) < self.p_drop {
                *label = self.null;
            }
        }
        let d = self.data;
        let x0 = Tensor::from_vec(x, (idx.len(), d.channels, d.height, d.width), &self.device)?
            .to_dtype(self.dtype)?;
        Ok(Batch { x0, y, step })
    }
}

// ---------------------------------------------------------------------------------------------
//                                  metrics.jsonl and progress
// ---------------------------------------------------------------------------------------------

/// The run's `metrics.jsonl`: one line per logged window of steps (mean loss, LR, gradient norm,
/// speed, wall time, and the objective's named loss parts).
struct RunLog {
    file: std::fs::File,
    path: PathBuf,
    /// Sum and count of the losses of the current window, and when it started.
    window: (f64, usize, Instant),
    last_loss: Option<f64>,
    wall_before: f64,
    t0: Instant,
}

impl RunLog {
    fn open(run: &RunPaths, wall_before: f64) -> Result<Self> {
        let path = run.metrics();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("{}: cannot open", path.display()))?;
        Ok(Self {
            file,
            path,
            window: (0.0, 0, Instant::now()),
            last_loss: None,
            wall_before,
            t0: Instant::now(),
        })
    }

    fn add(&mut self, loss: f64) {
        self.window.0 += loss;
        self.window.1 += 1;
    }

    /// Training wall time of the run so far, earlier sittings included.
    fn wall_time_s(&self) -> f64 {
        self.wall_before + self.t0.elapsed().as_secs_f64()
    }

    /// Write the window ending at `step` and start the next; returns its mean loss.
    fn write(
        &mut self,
        step: usize,
        lr: f64,
        grad_norm: f64,
        parts: &[(String, f64)],
    ) -> Result<f64> {
        let (sum, n, since) = self.window;
        let mean = sum / n as f64;
        let mut rec = serde_json::json!({
            "step": step,
            "loss": mean,
            "lr": lr,
            "grad_norm": grad_norm,
            "it_per_s": n as f64 / since.elapsed().as_secs_f64().max(1e-9),
            "wall_time_s": self.wall_time_s(),
        });
        for (k, v) in parts {
            rec[k] = serde_json::json!(v);
        }
        writeln!(self.file, "{rec}")?;
        self.file.flush()?;
        self.last_loss = Some(mean);
        self.window = (0.0, 0, Instant::now());
        Ok(mean)
    }

    /// Mean loss of the last logged window: this sitting's, or (resumed at the end, nothing left to
    /// train) the last line on disk, as an uninterrupted run reports.
    fn last_loss(&self) -> Result<f64> {
        if let Some(l) = self.last_loss {
            return Ok(l);
        }
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        Ok(text
            .lines()
            .last()
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .and_then(|v| v["loss"].as_f64())
            .unwrap_or(f64::NAN))
    }
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

fn progress_bar(
    cfg: &TrainConfig,
    opts: &TrainOptions,
    start: usize,
    end: usize,
) -> Option<indicatif::ProgressBar> {
    (opts.progress && end > start).then(|| {
        let pb = crate::progress::bar(cfg.steps as u64, &opts.label, true);
        pb.set_position(start as u64);
        pb.reset_eta();
        pb
    })
}
