//! Tiny models for tests and examples, trained in seconds on real Fashion-MNIST images: one
//! teacher shape and one feature net, defined here once for every crate's tests.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{DType, Device};
use dit::{DiT, DitConfig};

use crate::data::{DataConfig, Dataset, Split};
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

/// Steps of the shared fixtures' teacher ([`tiny_teacher_config`]).
pub const FIXTURE_TEACHER_STEPS: usize = 6;
/// Training images (the first of Fashion-MNIST's training split) of the shared fixtures.
pub const FIXTURE_TRAIN_IMAGES: usize = 512;

/// The shared fixtures: a teacher run directory and a feature net directory, read-only, and a
/// cache directory for the feature net's and the teacher's cached outputs (keyed by their hashes,
/// written atomically, so tests that do not look inside it can share it).
#[derive(Debug, Clone)]
pub struct Fixtures {
    pub dir: PathBuf,
}

impl Fixtures {
    pub fn teacher(&self) -> PathBuf {
        self.dir.join("teacher")
    }
    pub fn featnet(&self) -> PathBuf {
        self.dir.join("featnet")
    }
    pub fn cache(&self) -> PathBuf {
        self.dir.join("cache")
    }
}

/// The key of the shared fixtures: their settings and the code version (a hash over the crates'
/// sources, this file's training code included), so a change to either builds new ones.
pub fn fixtures_key() -> String {
    use sha2::{Digest, Sha256};
    let key = format!(
        "{}|featnet 1 epoch seed 0|{FIXTURE_TRAIN_IMAGES} images|{}",
        serde_json::to_string(&tiny_teacher_config(FIXTURE_TEACHER_STEPS)).unwrap_or_default(),
        crate::run::code_version()
    );
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// The tiny teacher ([`FIXTURE_TEACHER_STEPS`] steps) and feature net trained on the first
/// [`FIXTURE_TRAIN_IMAGES`] training images, built once under `base` (a test's
/// `CARGO_TARGET_TMPDIR`) in `ditkd-fixtures-<key>/` and shared by every test of every test binary
/// (and by the `ditkd` processes they start: the paths are absolute when `base` is).
///
/// Built under an exclusive lock on `base/ditkd-fixtures-<key>.lock` into a temporary directory
/// that is renamed into place when complete: concurrent callers wait for the one that trains, and
/// none ever sees half a fixture. Their files are made read-only, so a test that writes into them
/// fails instead of changing another test's inputs.
pub fn shared_fixtures(base: &Path) -> Result<Fixtures> {
    anyhow::ensure!(
        base.is_absolute(),
        "{}: the shared fixtures need an absolute directory (other processes read them)",
        base.display()
    );
    let name = format!("ditkd-fixtures-{}", fixtures_key());
    let f = Fixtures {
        dir: base.join(&name),
    };
    if f.dir.is_dir() {
        return Ok(f);
    }
    std::fs::create_dir_all(base)?;
    let lock = std::fs::File::create(base.join(format!("{name}.lock")))?;
    lock.lock()?;
    if f.dir.is_dir() {
        return Ok(f); // built by the holder of the lock we waited for
    }
    // Left by a builder that died; nobody else builds while we hold the lock.
    let tmp = base.join(format!(".{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    let data = DataConfig::default()
        .load(Split::Train)?
        .take(FIXTURE_TRAIN_IMAGES);
    train_featnet(&data, &tmp.join("featnet"))?;
    train_teacher(
        &tiny_teacher_config(FIXTURE_TEACHER_STEPS),
        &data,
        &tmp.join("teacher"),
    )?;
    read_only(&tmp.join("featnet"))?;
    read_only(&tmp.join("teacher"))?;
    std::fs::create_dir_all(tmp.join("cache"))?;
    std::fs::rename(&tmp, &f.dir)?;
    Ok(f)
}

/// Make every file under `dir` read-only and readable by all (safetensors files are written
/// owner-only); directories stay writable, so the tree can be deleted.
fn read_only(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            read_only(&p)?;
        } else {
            let mut perm = std::fs::metadata(&p)?.permissions();
            #[cfg(unix)]
            std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o444);
            #[cfg(not(unix))]
            perm.set_readonly(true);
            std::fs::set_permissions(&p, perm)?;
        }
    }
    Ok(())
}
