//! Host-side random draws. candle's CPU device cannot be seeded, so every random tensor of the
//! project (initial weights, noise, timesteps, label dropout) comes from a seeded ChaCha stream
//! on the host whose seed is recorded in the run's config.

use candle_core::{Device, Result, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

pub type HostRng = ChaCha8Rng;

/// A seeded generator.
pub fn seeded(seed: u64) -> HostRng {
    use rand::SeedableRng;
    ChaCha8Rng::seed_from_u64(seed)
}

/// Standard-normal f32 values.
pub fn normal_vec(rng: &mut HostRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// A standard-normal f32 tensor of `shape` on `device`.
pub fn randn(rng: &mut HostRng, shape: &[usize], device: &Device) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_vec(normal_vec(rng, n), shape, device)
}

/// Uniform integers in `0..hi`.
pub fn uniform_ints(rng: &mut HostRng, n: usize, hi: usize) -> Vec<u32> {
    (0..n).map(|_| rng.random_range(0..hi) as u32).collect()
}
