//! `ditkd teacher`: train (or resume) the teacher DiT.

use std::path::Path;

use anyhow::Result;
use candle_core::DType;
use distill::data::Split;
use distill::objective::EpsilonObjective;
use distill::paths::RunPaths;
use distill::train::{train, TrainConfig, TrainOptions};
use dit::DiT;

pub fn run(config: &Path, out: &Path, stop_at: Option<usize>, grid: usize) -> Result<()> {
    anyhow::ensure!(
        (1..=crate::cmd::sample::MAX_N).contains(&grid),
        "--grid: must lie in 1..={} (got {grid})",
        crate::cmd::sample::MAX_N
    );
    let cfg = TrainConfig::from_yaml_file(config)?;
    let run_dir = distill::paths::output(out).join(&cfg.name);
    std::fs::create_dir_all(&run_dir)?;
    dit::io::write_atomic(
        &run_dir.join("config.yaml"),
        serde_yaml_ng::to_string(&cfg)?.as_bytes(),
    )?;
    let device = crate::device::get();
    let data = cfg.data.load(Split::Train)?;
    let mut model = DiT::new(&cfg.model, cfg.seed, DType::F32, &device)?;
    eprintln!(
        "teacher `{}`: {} params, {:.4} GFLOPs/forward, {} tokens; {} training images; run dir {}",
        cfg.name,
        crate::fmt::grouped(cfg.model.num_params() as i64),
        cfg.model.forward_gflops(),
        cfg.model.num_tokens(),
        data.len(),
        run_dir.display()
    );
    let opts = TrainOptions {
        stop_at,
        progress: true,
        label: cfg.name.clone(),
    };
    let outcome = train(
        &cfg,
        &mut model,
        &data,
        &mut EpsilonObjective::new(),
        &RunPaths::new(&run_dir),
        &opts,
    )?;
    eprintln!(
        "{} / {} steps done, last loss {:.4}, {:.0} s of training in all",
        outcome.steps_done, cfg.steps, outcome.final_loss, outcome.wall_time_s
    );
    // Sample from the EMA weights.
    let ema = DiT::load(
        &cfg.model,
        &run_dir.join("ema.safetensors"),
        DType::F32,
        &device,
    )?;
    let grid_path = run_dir.join("grid.png");
    distill::grid::sample_grid(&ema, &cfg.sampler, grid, 0, &grid_path)?;
    eprintln!("sample grid: {}", grid_path.display());
    Ok(())
}
