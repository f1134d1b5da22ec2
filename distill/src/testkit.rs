//! Tiny models for tests and examples, trained in seconds on real Fashion-MNIST images: one
//! teacher shape and one feature net, defined here once for every crate's tests.

use std::path::Path;

use anyhow::Result;
use candle_core::{DType, Device};
use dit::{DiT, DitConfig};

use crate::data::{DataConfig, Dataset};
use crate::featnet::FeatNet;
use crate::objective::EpsilonObjective;
use crate::paths::RunPaths;
use crate::train::{train, TrainConfig, TrainOptions};

/// The tiny teacher: 2 blocks of width 32, 2 heads, patch 7 (16 tokens), batch 16, EMA 0.9,
/// one checkpoint at the end and two log lines.
pub fn tiny_teacher_config(steps: usize) -> TrainConfig {
    TrainConfig {
        name: "t".into(),
        model: DitConfig {
            hidden_size: 32,
            depth: 2,
            num_heads: 2,
            patch_size: 7,
            ..Default::default()
        },
        data: DataConfig::default(),
        optim: Default::default(),
        steps,
        batch_size: 16,
        seed: 0,
        ema_decay: 0.9,
        ema_warmup: true,
        checkpoint_every: steps,
        log_every: (steps / 2).max(1),
        sampler: Default::default(),
    }
}

/// Train `cfg` on `data` into the run directory `dir` (a teacher a sweep can load).
pub fn train_teacher(cfg: &TrainConfig, data: &Dataset, dir: &Path) -> Result<()> {
    let mut t = DiT::new(&cfg.model, cfg.seed, DType::F32, &Device::Cpu)?;
    train(
        cfg,
        &mut t,
        data,
        &mut EpsilonObjective::new(),
        &RunPaths::new(dir),
        &TrainOptions::default(),
    )?;
    Ok(())
}

/// A one-epoch feature net on `data`, saved to `dir` (a real one is trained by `ditkd featnet`).
pub fn train_featnet(data: &Dataset, dir: &Path) -> Result<()> {
    let mut net = FeatNet::new(1, 28, 10, 0, &Device::Cpu)?;
    net.train(data, 1, 0, false)?;
    net.save(dir)
}
