//! `ditkd sample`: an image grid from a trained model.

use std::path::Path;

use anyhow::Result;
use candle_core::Device;
use dit::SamplerConfig;

pub fn run(checkpoint: &Path, n: usize, steps: usize, cfg: f64, sampler: &str, seed: u64, out: &Path) -> Result<()> {
    let device = Device::Cpu;
    let model = distill::checkpoint::load_model(checkpoint, &device)?;
    let kind = sampler.parse().map_err(anyhow::Error::msg)?;
    if steps == 0 || steps > 1000 {
        anyhow::bail!("--steps: must lie in 1..=1000 (got {steps})");
    }
    let sc = SamplerConfig { kind, steps, cfg_scale: cfg, ..Default::default() };
    let t = std::time::Instant::now();
    distill::train::sample_grid(&model, &sc, n, seed, out)?;
    println!(
        "wrote {} ({n} samples, {sampler} {steps} steps, cfg {cfg}, seed {seed}) in {:.1} s",
        out.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
