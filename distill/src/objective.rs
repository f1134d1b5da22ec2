//! What a training run minimises: the `Objective` trait, the batch it sees, and the DDPM epsilon
//! loss (the teacher's objective; distillation objectives in `kd.rs` add teacher terms).

use anyhow::Result;
use candle_core::{Tensor, Var};
use dit::rng::HostRng;
use dit::{DiT, Tape};

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
