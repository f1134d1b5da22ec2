//! Gaussian statistics of Inception features, the Fréchet distance between two of them (as
//! pytorch-fid's `calculate_frechet_distance`, via [`crate::metrics`]), and a file cache for the
//! statistics of a real image set.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};
use nalgebra::{DMatrix, DVector};
use sha2::{Digest, Sha256};

use super::FEATURES;
use crate::metrics;

/// Mean and covariance (N - 1) of a feature set.
#[derive(Debug, Clone)]
pub struct Stats {
    pub n: usize,
    pub mu: DVector<f64>,
    pub sigma: DMatrix<f64>,
}

impl Stats {
    /// From `n x 2048` row-major features.
    pub fn from_features(feats: &[f32]) -> Result<Self> {
        let (mu, sigma) = metrics::mean_and_cov(feats, FEATURES)?;
        Ok(Self {
            n: feats.len() / FEATURES,
            mu,
            sigma,
        })
    }

    /// ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)), clamped at 0.
    pub fn frechet_distance(&self, other: &Stats) -> Result<f64> {
        ensure!(
            self.mu.len() == other.mu.len(),
            "FID: statistics of different dimensions"
        );
        let d = (&self.mu - &other.mu).norm_squared() + self.sigma.trace() + other.sigma.trace()
            - 2.0 * metrics::trace_sqrt_product(&self.sigma, &other.sigma);
        ensure!(d.is_finite(), "FID: result is not finite ({d})");
        Ok(d.max(0.0))
    }

    /// Save as safetensors (`mu` [d], `sigma` [d, d] f64, `n` [1] i64), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let d = self.mu.len();
        let dev = Device::Cpu;
        // nalgebra is column-major; sigma is symmetric, so either order is the row-major matrix.
        let t: HashMap<String, Tensor> = [
            (
                "mu".to_owned(),
                Tensor::from_slice(self.mu.as_slice(), d, &dev)?,
            ),
            (
                "sigma".to_owned(),
                Tensor::from_slice(self.sigma.as_slice(), (d, d), &dev)?,
            ),
            ("n".to_owned(), Tensor::new(&[self.n as i64], &dev)?),
        ]
        .into_iter()
        .collect();
        let mut named: Vec<(&String, &Tensor)> = t.iter().collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        let bytes = safetensors::serialize(named, None)
            .with_context(|| format!("{}: cannot serialise", path.display()))?;
        super::weights::write_atomic(path, &bytes)
    }

    /// Load what [`Self::save`] wrote.
    pub fn load(path: &Path) -> Result<Self> {
        let t = candle_core::safetensors::load(path, &Device::Cpu)
            .with_context(|| format!("{}: cannot read FID statistics", path.display()))?;
        let get = |k: &str| {
            t.get(k)
                .with_context(|| format!("{}: no `{k}` in FID statistics", path.display()))
        };
        let mu: Vec<f64> = get("mu")?.to_vec1()?;
        let sigma: Vec<f64> = get("sigma")?.flatten_all()?.to_vec1()?;
        let n: Vec<i64> = get("n")?.to_vec1()?;
        let d = mu.len();
        ensure!(
            sigma.len() == d * d && n.len() == 1,
            "{}: malformed FID statistics",
            path.display()
        );
        Ok(Self {
            n: n[0].max(0) as usize,
            mu: DVector::from_vec(mu),
            sigma: DMatrix::from_vec(d, d, sigma),
        })
    }
}

/// SHA-256 (hex) of a byte string: the key of a real image set.
pub fn data_key(pixels: &[u8]) -> String {
    hex::encode(Sha256::digest(pixels))
}

/// Cache file of the statistics of an image set, keyed by the weights' and the data's hashes.
pub fn cache_path(weights_sha256: &str, data_sha256: &str) -> PathBuf {
    let short = |s: &str| s.chars().take(16).collect::<String>();
    super::weights::cache_dir().join(format!(
        "stats-{}-{}.safetensors",
        short(weights_sha256),
        short(data_sha256)
    ))
}

/// The statistics of `pixels` (uint8, `n` images of `c` x `h` x `w`), from the cache when present,
/// else computed and cached.
pub fn cached_stats(
    net: &super::FidInception,
    pixels: &[u8],
    n: usize,
    (c, h, w): (usize, usize, usize),
) -> Result<(Stats, PathBuf, bool)> {
    let path = cache_path(&net.weights_sha256, &data_key(pixels));
    if path.is_file() {
        if let Ok(s) = Stats::load(&path) {
            if s.n == n && s.mu.len() == FEATURES {
                return Ok((s, path, true));
            }
        }
    }
    let feats = net.features_u8(pixels, n, c, h, w)?;
    let s = Stats::from_features(&feats)?;
    s.save(&path)?;
    Ok((s, path, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_round_trip_and_self_distance() {
        let dir = tempfile::tempdir().unwrap();
        let feats: Vec<f32> = (0..3 * FEATURES)
            .map(|i| ((i * 7919) % 101) as f32 / 100.0)
            .collect();
        let s = Stats::from_features(&feats).unwrap();
        let p = dir.path().join("s.safetensors");
        s.save(&p).unwrap();
        let r = Stats::load(&p).unwrap();
        assert_eq!(r.n, 3);
        assert_eq!(r.mu, s.mu);
        assert_eq!(r.sigma, s.sigma);
        assert!(Stats::load(&dir.path().join("missing"))
            .unwrap_err()
            .to_string()
            .contains("missing"));
    }
}
