//! The Gaussian diffusion process: linear beta schedule (1e-4 .. 0.02 over 1000 steps, as DDPM,
//! ADM and DiT use), the forward noising q(x_t | x_0), and timestep respacing.

use candle_core::{Result, Tensor};

/// Betas and their cumulative products of alphas, in f64.
#[derive(Debug, Clone)]
pub struct NoiseSchedule {
    pub betas: Vec<f64>,
    pub alphas_cumprod: Vec<f64>,
}

impl NoiseSchedule {
    /// `np.linspace(beta_start, beta_end, steps)` (guided-diffusion's "linear" at 1000 steps).
    pub fn linear(beta_start: f64, beta_end: f64, steps: usize) -> Self {
        let betas: Vec<f64> = if steps == 1 {
            vec![beta_start]
        } else {
            (0..steps)
                .map(|i| beta_start + (beta_end - beta_start) * i as f64 / (steps - 1) as f64)
                .collect()
        };
        Self::from_betas(betas)
    }

    /// The schedule of DiT: linear 1e-4 .. 0.02 over 1000 steps.
    pub fn dit_default() -> Self {
        Self::linear(1e-4, 0.02, 1000)
    }

    pub fn from_betas(betas: Vec<f64>) -> Self {
        let mut alphas_cumprod = Vec::with_capacity(betas.len());
        let mut acc = 1.0;
        for b in &betas {
            acc *= 1.0 - b;
            alphas_cumprod.push(acc);
        }
        Self {
            betas,
            alphas_cumprod,
        }
    }

    pub fn num_steps(&self) -> usize {
        self.betas.len()
    }

    /// `x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps` for a batch with one timestep per item.
    pub fn q_sample(&self, x0: &Tensor, eps: &Tensor, t: &[usize]) -> Result<Tensor> {
        let n = x0.dim(0)?;
        let mut shape = vec![1usize; x0.rank()];
        shape[0] = n;
        let a: Vec<f32> = t
            .iter()
            .map(|&ti| self.alphas_cumprod[ti].sqrt() as f32)
            .collect();
        let s: Vec<f32> = t
            .iter()
            .map(|&ti| (1.0 - self.alphas_cumprod[ti]).sqrt() as f32)
            .collect();
        let a = Tensor::from_vec(a, shape.as_slice(), x0.device())?.to_dtype(x0.dtype())?;
        let s = Tensor::from_vec(s, shape.as_slice(), x0.device())?.to_dtype(x0.dtype())?;
        x0.broadcast_mul(&a)? + eps.broadcast_mul(&s)?
    }
}

/// `steps` timesteps out of `total`, evenly spread and including both ends (guided-diffusion's
/// `space_timesteps(total, [steps])`), ascending.
pub fn respaced_timesteps(total: usize, steps: usize) -> Vec<usize> {
    assert!(
        steps >= 1 && steps <= total,
        "steps must lie in 1..={total}"
    );
    if steps == 1 {
        return vec![total - 1];
    }
    let stride = (total - 1) as f64 / (steps - 1) as f64;
    let mut v: Vec<usize> = (0..steps)
        .map(|i| (i as f64 * stride).round() as usize)
        .collect();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_schedule_matches_the_formula() {
        let s = NoiseSchedule::dit_default();
        assert_eq!(s.num_steps(), 1000);
        assert!((s.betas[0] - 1e-4).abs() < 1e-15);
        assert!((s.betas[999] - 0.02).abs() < 1e-15);
        assert!((s.betas[500] - (1e-4 + 0.0199 * 500.0 / 999.0)).abs() < 1e-15);
        let prod: f64 = s.betas[..10].iter().map(|b| 1.0 - b).product();
        assert!((s.alphas_cumprod[9] - prod).abs() < 1e-15);
        // abar_T is about 4e-5: the last step is almost pure noise.
        assert!(s.alphas_cumprod[999] < 1e-4 && s.alphas_cumprod[999] > 1e-5);
    }

    #[test]
    fn respacing_keeps_both_ends() {
        assert_eq!(
            respaced_timesteps(1000, 1000),
            (0..1000).collect::<Vec<_>>()
        );
        let r = respaced_timesteps(1000, 50);
        assert_eq!(r.len(), 50);
        assert_eq!((r[0], r[49]), (0, 999));
        assert_eq!(respaced_timesteps(1000, 25).len(), 25);
        assert_eq!(respaced_timesteps(1000, 250).len(), 250);
    }
}
