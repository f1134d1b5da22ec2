//! `ditkd sample`: an image grid from a trained model.

use std::path::Path;

use anyhow::Result;
use dit::{SamplerConfig, SamplerKind};

/// Most images one grid draws (a 100 x 100 grid).
pub const MAX_N: usize = 10_000;

pub fn run(
    checkpoint: &Path,
    n: usize,
    steps: usize,
    cfg: f64,
    kind: SamplerKind,
    seed: u64,
    out: &Path,
) -> Result<()> {
    // Every argument is checked before the model loads.
    if !(1..=MAX_N).contains(&n) {
        anyhow::bail!("--n: must lie in 1..={MAX_N} (got {n})");
    }
    let sc = SamplerConfig {
        kind,
        steps,
        cfg_scale: cfg,
        ..Default::default()
    };
    sc.validate(dit::NoiseSchedule::dit_default().num_steps())
        .map_err(|e| anyhow::anyhow!("--{}", e.replace("cfg_scale", "cfg")))?;
    let device = crate::device::get();
    let model = distill::checkpoint::load_model(checkpoint, &device)?;
    let t = std::time::Instant::now();
    distill::grid::sample_grid(&model, &sc, n, seed, out)?;
    println!(
        "wrote {} ({n} samples, {kind:?} {steps} steps, cfg {cfg}, seed {seed}) in {:.1} s",
        out.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
