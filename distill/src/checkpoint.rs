//! Training checkpoints: model, EMA, optimiser moments, RNG position and step, as safetensors +
//! JSON in one directory that is swapped in atomically (written as `checkpoint.tmp/`, then renamed;
//! the previous one survives as `checkpoint.old/` until the swap is done).
//!
//! Also: finding and loading a trained model from a run directory or a weights file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use dit::{DiT, DitConfig};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Exact position of a ChaCha stream: seed, stream and word position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RngState {
    pub seed_hex: String,
    pub stream: u64,
    /// u128 as a decimal string (JSON numbers are not 128-bit).
    pub word_pos: String,
}

impl RngState {
    pub fn capture(rng: &ChaCha8Rng) -> Self {
        Self {
            seed_hex: hex::encode(rng.get_seed()),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    pub fn restore(&self) -> Result<ChaCha8Rng> {
        use rand::SeedableRng;
        let bytes = hex::decode(&self.seed_hex).context("rng.seed_hex is not hex")?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("rng.seed_hex must be 32 bytes"))?;
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(
            self.word_pos
                .parse()
                .context("rng.word_pos is not an integer")?,
        );
        Ok(rng)
    }
}

/// The JSON half of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Optimiser updates completed.
    pub step: usize,
    pub rng: RngState,
    /// Training wall time accumulated over all sittings.
    pub wall_time_s: f64,
    /// Hash of the resolved training config; a checkpoint of another config is not resumed.
    pub config_hash: String,
}

pub const CHECKPOINT_DIR: &str = "checkpoint";

/// Write `checkpoint/` under `run_dir` atomically.
pub fn save(
    run_dir: &Path,
    model: &DiT,
    ema: &crate::ema::Ema,
    opt: &crate::optim::AdamW,
    meta: &CheckpointMeta,
    extra: &std::collections::HashMap<String, candle_core::Tensor>,
) -> Result<()> {
    let final_dir = run_dir.join(CHECKPOINT_DIR);
    let tmp = run_dir.join(format!("{CHECKPOINT_DIR}.tmp"));
    let old = run_dir.join(format!("{CHECKPOINT_DIR}.old"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    dit::io::save_safetensors_atomic(&model.named_tensors(), &tmp.join("model.safetensors"))?;
    dit::io::save_safetensors_atomic(&ema.tensors(), &tmp.join("ema.safetensors"))?;
    dit::io::save_safetensors_atomic(&opt.state_tensors(), &tmp.join("optim.safetensors"))?;
    dit::io::write_json_atomic(&tmp.join("dit.json"), &model.cfg)?;
    // Extra trained variables (e.g. feature-KD projectors) go inside before the swap, so a checkpoint
    // is always complete.
    if !extra.is_empty() {
        dit::io::save_safetensors_atomic(extra, &tmp.join("extra.safetensors"))?;
    }
    dit::io::write_json_atomic(&tmp.join("state.json"), meta)?;
    if final_dir.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        std::fs::rename(&final_dir, &old)?;
    }
    std::fs::rename(&tmp, &final_dir)?;
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    Ok(())
}

/// The checkpoint directory to resume from, if any (falls back to `checkpoint.old/` when a swap
/// was interrupted).
pub fn find(run_dir: &Path) -> Option<PathBuf> {
    for name in [CHECKPOINT_DIR.to_string(), format!("{CHECKPOINT_DIR}.old")] {
        let d = run_dir.join(name);
        if d.join("state.json").exists() {
            return Some(d);
        }
    }
    None
}

pub fn read_meta(dir: &Path) -> Result<CheckpointMeta> {
    let p = dir.join("state.json");
    let s = std::fs::read_to_string(&p)
        .with_context(|| format!("{}: cannot read checkpoint state", p.display()))?;
    serde_json::from_str(&s).with_context(|| format!("{}: corrupt checkpoint state", p.display()))
}

/// Restore model, EMA and optimiser from `dir`.
pub fn restore(
    dir: &Path,
    model: &mut DiT,
    ema: &mut crate::ema::Ema,
    opt: &mut crate::optim::AdamW,
) -> Result<CheckpointMeta> {
    let meta = read_meta(dir)?;
    model.load_weights(&dir.join("model.safetensors"))?;
    let dev = model.device().clone();
    let load = |name: &str| {
        let p = dir.join(name);
        candle_core::safetensors::load(&p, &dev)
            .with_context(|| format!("{}: corrupt or missing checkpoint file", p.display()))
    };
    ema.load(&load("ema.safetensors")?)
        .with_context(|| format!("{}", dir.display()))?;
    opt.load_state(&load("optim.safetensors")?, meta.step)
        .with_context(|| format!("{}", dir.display()))?;
    Ok(meta)
}

/// Where a trained model's config and weights live, given a run directory, a checkpoint
/// directory or a `.safetensors` file. Directories prefer the EMA weights.
pub fn locate_model(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let path = crate::paths::resolve(path);
    if !path.exists() {
        bail!("{}: no such checkpoint file or directory", path.display());
    }
    let config_near = |dir: &Path| -> Option<PathBuf> {
        [
            dir.join("dit.json"),
            dir.join(CHECKPOINT_DIR).join("dit.json"),
            dir.join("..").join("dit.json"),
        ]
        .into_iter()
        .find(|p| p.exists())
    };
    if path.is_file() {
        let dir = path.parent().unwrap_or(Path::new("."));
        let cfg = config_near(dir)
            .with_context(|| format!("{}: no dit.json beside the weights", path.display()))?;
        return Ok((cfg, path));
    }
    let weights = [
        path.join("ema.safetensors"),
        path.join(CHECKPOINT_DIR).join("ema.safetensors"),
        path.join("model.safetensors"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .with_context(|| {
        format!(
            "{}: no ema.safetensors or model.safetensors in this directory",
            path.display()
        )
    })?;
    let cfg = config_near(&path)
        .with_context(|| format!("{}: no dit.json in this directory", path.display()))?;
    Ok((cfg, weights))
}

pub fn read_dit_config(path: &Path) -> Result<DitConfig> {
    let s = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let cfg: DitConfig = serde_json::from_str(&s)
        .with_context(|| format!("{}: not a DiT config", path.display()))?;
    cfg.validate()
        .with_context(|| format!("{}", path.display()))?;
    Ok(cfg)
}

/// Load a trained model (see `locate_model`).
pub fn load_model(path: &Path, device: &Device) -> Result<DiT> {
    let (cfg_path, weights) = locate_model(path)?;
    let cfg = read_dit_config(&cfg_path)?;
    DiT::load(&cfg, &weights, DType::F32, device)
}

/// SHA-256 of a file, hex (identifies teachers and feature nets in tables).
pub fn file_hash(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}
