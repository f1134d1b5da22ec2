//! DDPM and DDIM samplers over a respaced schedule, with classifier-free guidance.
//!
//! Semantics follow guided-diffusion (which DiT uses): the respaced process keeps the original
//! timesteps `t_0 < ... < t_{S-1}` for the model, with `abar_prev = 1` at the last step; x_0 is
//! optionally clipped to [-1, 1] and eps re-derived from it; DDPM uses the "fixed large" variance
//! (beta_t) that DiT uses when it does not learn sigma. All noise is drawn on the host.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::DiT;
use crate::rng::{randn, HostRng};
use crate::schedule::{respaced_timesteps, NoiseSchedule};

/// Which reverse process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SamplerKind {
    Ddpm,
    Ddim,
}

impl std::str::FromStr for SamplerKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "ddpm" => Ok(Self::Ddpm),
            "ddim" => Ok(Self::Ddim),
            _ => Err(format!("unknown sampler `{s}` (expected ddpm or ddim)")),
        }
    }
}

/// How to sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerConfig {
    /// ddpm or ddim.
    pub kind: SamplerKind,
    /// Number of respaced steps (e.g. 25, 50, 250, 1000).
    pub steps: usize,
    /// Classifier-free guidance scale; 1 = conditional model only.
    pub cfg_scale: f64,
    /// DDIM stochasticity (0 = deterministic).
    #[serde(default)]
    pub eta: f64,
    /// Clip the predicted x_0 to [-1, 1] (right for pixel space).
    #[serde(default = "yes")]
    pub clip_denoised: bool,
}

fn yes() -> bool {
    true
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            kind: SamplerKind::Ddim,
            steps: 50,
            cfg_scale: 1.0,
            eta: 0.0,
            clip_denoised: true,
        }
    }
}

impl SamplerConfig {
    /// The respaced steps must lie in `1..=schedule_steps`; guidance and eta must be finite
    /// (guidance >= 0, eta in [0, 1]). Errors name the field.
    pub fn validate(&self, schedule_steps: usize) -> std::result::Result<(), String> {
        if self.steps == 0 || self.steps > schedule_steps {
            return Err(format!(
                "steps: must lie in 1..={schedule_steps} (got {})",
                self.steps
            ));
        }
        if !(self.cfg_scale.is_finite() && self.cfg_scale >= 0.0) {
            return Err(format!(
                "cfg_scale: must be a finite number >= 0 (got {})",
                self.cfg_scale
            ));
        }
        if !(0.0..=1.0).contains(&self.eta) {
            return Err(format!("eta: must lie in [0, 1] (got {})", self.eta));
        }
        Ok(())
    }
}

/// One reverse step's coefficients.
#[derive(Debug, Clone, Copy)]
pub struct StepCoefs {
    /// Original timestep fed to the model.
    pub t: usize,
    pub abar: f64,
    pub abar_prev: f64,
}

/// The respaced steps, last (noisiest) first.
pub fn step_plan(schedule: &NoiseSchedule, steps: usize) -> Vec<StepCoefs> {
    let ts = respaced_timesteps(schedule.num_steps(), steps);
    let mut plan: Vec<StepCoefs> = ts
        .iter()
        .enumerate()
        .map(|(i, &t)| StepCoefs {
            t,
            abar: schedule.alphas_cumprod[t],
            abar_prev: if i == 0 {
                1.0
            } else {
                schedule.alphas_cumprod[ts[i - 1]]
            },
        })
        .collect();
    plan.reverse();
    plan
}

/// x_0 from x_t and eps, optionally clipped; returns (x0, eps consistent with the clipped x0).
pub fn predict_x0(x: &Tensor, eps: &Tensor, abar: f64, clip: bool) -> Result<(Tensor, Tensor)> {
    let x0 = ((x - (eps * (1.0 - abar).sqrt())?)? * (1.0 / abar.sqrt()))?;
    if !clip {
        return Ok((x0, eps.clone()));
    }
    let x0 = x0.clamp(-1f32, 1f32)?;
    let eps = ((x - (&x0 * abar.sqrt())?)? * (1.0 / (1.0 - abar).sqrt()))?;
    Ok((x0, eps))
}

/// One DDIM step (Song et al. eq. 12): `sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z`.
pub fn ddim_step(
    x: &Tensor,
    eps: &Tensor,
    c: StepCoefs,
    eta: f64,
    clip: bool,
    noise: Option<&Tensor>,
) -> Result<Tensor> {
    let (x0, eps) = predict_x0(x, eps, c.abar, clip)?;
    let sigma =
        eta * ((1.0 - c.abar_prev) / (1.0 - c.abar)).sqrt() * (1.0 - c.abar / c.abar_prev).sqrt();
    let dir = (1.0 - c.abar_prev - sigma * sigma).max(0.0).sqrt();
    let mean = ((&x0 * c.abar_prev.sqrt())? + (&eps * dir)?)?;
    match noise {
        Some(z) if sigma > 0.0 => mean + (z * sigma)?,
        _ => Ok(mean),
    }
}

/// One DDPM ancestral step: posterior mean of q(x_prev | x_t, x_0) plus sqrt(beta_t) z.
pub fn ddpm_step(
    x: &Tensor,
    eps: &Tensor,
    c: StepCoefs,
    clip: bool,
    noise: Option<&Tensor>,
) -> Result<Tensor> {
    let (x0, _) = predict_x0(x, eps, c.abar, clip)?;
    let beta = 1.0 - c.abar / c.abar_prev;
    let coef_x0 = beta * c.abar_prev.sqrt() / (1.0 - c.abar);
    let coef_xt = (1.0 - c.abar_prev) * (1.0 - beta).sqrt() / (1.0 - c.abar);
    let mean = ((&x0 * coef_x0)? + (x * coef_xt)?)?;
    match noise {
        Some(z) => mean + (z * beta.sqrt())?,
        None => Ok(mean),
    }
}

/// Sample images from `x_T = noise` for `labels`; every random draw comes from `rng`.
pub fn sample(
    model: &DiT,
    schedule: &NoiseSchedule,
    noise: &Tensor,
    labels: &[u32],
    cfg: &SamplerConfig,
    rng: &mut HostRng,
) -> Result<Tensor> {
    let plan = step_plan(schedule, cfg.steps);
    let n = noise.dim(0)?;
    let mut x = noise.clone();
    for (i, c) in plan.iter().enumerate() {
        let t = vec![c.t as f32; n];
        let eps = model.forward_cfg(&x, &t, labels, cfg.cfg_scale)?.detach();
        let last = i + 1 == plan.len();
        let needs_noise = !last && (cfg.kind == SamplerKind::Ddpm || cfg.eta > 0.0);
        let z = if needs_noise {
            Some(randn(rng, x.dims(), x.device())?.to_dtype(x.dtype())?)
        } else {
            None
        };
        x = match cfg.kind {
            SamplerKind::Ddim => ddim_step(&x, &eps, *c, cfg.eta, cfg.clip_denoised, z.as_ref())?,
            SamplerKind::Ddpm => ddpm_step(&x, &eps, *c, cfg.clip_denoised, z.as_ref())?,
        }
        .detach();
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_transformers::models::stable_diffusion::ddim::DDIMSchedulerConfig;
    use candle_transformers::models::stable_diffusion::schedulers::{
        BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing,
    };

    /// Our DDIM step equals candle-transformers' DDIM scheduler (the diffusers formula) on the
    /// same linear schedule, for the steps where both use the same previous timestep.
    #[test]
    fn ddim_step_matches_candle_transformers() {
        let dev = Device::Cpu;
        let sched = NoiseSchedule::dit_default();
        let cfg = DDIMSchedulerConfig {
            beta_start: 1e-4,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            eta: 0.0,
            steps_offset: 0,
            prediction_type: PredictionType::Epsilon,
            train_timesteps: 1000,
            timestep_spacing: TimestepSpacing::Leading,
        };
        let mut reference = cfg.build(50).unwrap();
        let mut rng = crate::rng::seeded(3);
        let x = randn(&mut rng, &[2, 1, 4, 4], &dev)
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap();
        let eps = randn(&mut rng, &[2, 1, 4, 4], &dev)
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap();
        for &t in &[980usize, 500, 20] {
            let ours = ddim_step(
                &x,
                &eps,
                StepCoefs {
                    t,
                    abar: sched.alphas_cumprod[t],
                    abar_prev: sched.alphas_cumprod[t - 20],
                },
                0.0,
                false,
                None,
            )
            .unwrap();
            let theirs = reference.step(&eps, t, &x).unwrap();
            let d = (ours - theirs)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(d < 1e-9, "t={t}: {d}");
        }
    }

    /// With abar_prev = 1 (the last step) DDIM returns the predicted x_0 exactly.
    #[test]
    fn ddim_last_step_returns_x0() {
        let dev = Device::Cpu;
        let mut rng = crate::rng::seeded(4);
        let x0 = randn(&mut rng, &[1, 1, 4, 4], &dev)
            .unwrap()
            .clamp(-1f32, 1f32)
            .unwrap();
        let eps = randn(&mut rng, &[1, 1, 4, 4], &dev).unwrap();
        let s = NoiseSchedule::dit_default();
        let xt = s.q_sample(&x0, &eps, &[0]).unwrap();
        let c = StepCoefs {
            t: 0,
            abar: s.alphas_cumprod[0],
            abar_prev: 1.0,
        };
        let out = ddim_step(&xt, &eps, c, 0.0, false, None).unwrap();
        let d = (out - x0)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-5, "{d}");
    }

    /// DDPM's posterior mean with the true x_0 matches the closed form of q(x_{t-1} | x_t, x_0).
    #[test]
    fn ddpm_posterior_mean_formula() {
        let s = NoiseSchedule::dit_default();
        let t = 400;
        let c = StepCoefs {
            t,
            abar: s.alphas_cumprod[t],
            abar_prev: s.alphas_cumprod[t - 1],
        };
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[[0.3f64]], &dev).unwrap();
        let eps = Tensor::new(&[[-0.7f64]], &dev).unwrap();
        let xt =
            ((&x0 * c.abar.sqrt()).unwrap() + (&eps * (1.0 - c.abar).sqrt()).unwrap()).unwrap();
        let got = ddpm_step(&xt, &eps, c, false, None)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()[0];
        let beta = s.betas[t];
        let alpha = 1.0 - beta;
        let mu = (s.alphas_cumprod[t - 1].sqrt() * beta / (1.0 - c.abar)) * 0.3
            + (alpha.sqrt() * (1.0 - s.alphas_cumprod[t - 1]) / (1.0 - c.abar))
                * xt.flatten_all().unwrap().to_vec1::<f64>().unwrap()[0];
        assert!((got - mu).abs() < 1e-12, "{got} vs {mu}");
    }

    #[test]
    fn plan_runs_from_noise_to_data() {
        let s = NoiseSchedule::dit_default();
        let p = step_plan(&s, 25);
        assert_eq!(p.len(), 25);
        assert_eq!(p[0].t, 999);
        assert_eq!(p[24].t, 0);
        assert_eq!(p[24].abar_prev, 1.0);
        assert!(p.windows(2).all(|w| w[0].abar_prev == w[1].abar));
    }
}
