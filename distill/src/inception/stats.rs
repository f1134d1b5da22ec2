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

    /// The FID of the feature rows `feats` (`n x d`, row-major) against these statistics: the same
    /// value as `self.frechet_distance(&Stats::from_features(feats))`, computed cheaply for
    /// `n < d` (a sweep's few hundred or thousand samples against 2048 dimensions): with `X` the
    /// centred rows, S_f = X^T X / (n - 1), and the nonzero eigenvalues of S^(1/2) S_f S^(1/2)
    /// are those of the `n x n` matrix X S X^T / (n - 1), so tr((S S_f)^(1/2)) needs one `n x n`
    /// eigen-decomposition instead of two of `d x d`.
    pub fn frechet_distance_to(&self, feats: &[f32]) -> Result<f64> {
        let d = self.mu.len();
        ensure!(
            d > 0 && feats.len().is_multiple_of(d) && feats.len() / d >= 2,
            "FID: {} values are not at least 2 feature rows of {d}",
            feats.len()
        );
        let n = feats.len() / d;
        if n >= d {
            let (mu, sigma) = metrics::mean_and_cov(feats, d)?;
            return self.frechet_distance(&Stats { n, mu, sigma });
        }
        let mut x =
            DMatrix::from_row_slice(n, d, &feats.iter().map(|&v| v as f64).collect::<Vec<_>>());
        let mu_f = DVector::from_iterator(d, x.column_iter().map(|c| c.sum() / n as f64));
        for (mut c, &m) in x.column_iter_mut().zip(mu_f.iter()) {
            c.add_scalar_mut(-m);
        }
        let scale = 1.0 / (n as f64 - 1.0);
        let trace_f = x.norm_squared() * scale;
        let mut m = (&x * &self.sigma) * x.transpose() * scale;
        let t = m.transpose();
        m += t;
        m *= 0.5;
        let tr_sqrt: f64 = m
            .symmetric_eigenvalues()
            .iter()
            .map(|&l| l.max(0.0).sqrt())
            .sum();
        let v = (&self.mu - &mu_f).norm_squared() + self.sigma.trace() + trace_f - 2.0 * tr_sqrt;
        ensure!(v.is_finite(), "FID: result is not finite ({v})");
        Ok(v.max(0.0))
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
    cache_path_in(&super::weights::cache_dir(), weights_sha256, data_sha256)
}

/// [`cache_path`] in the cache directory `dir`.
pub fn cache_path_in(dir: &Path, weights_sha256: &str, data_sha256: &str) -> PathBuf {
    let short = |s: &str| s.chars().take(16).collect::<String>();
    dir.join(format!(
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
    chw: (usize, usize, usize),
) -> Result<(Stats, PathBuf, bool)> {
    cached_stats_in(&super::weights::cache_dir(), net, pixels, n, chw)
}

/// The uint8 pixels of a data set's first `n` images (its `[-1, 1]` floats were made from them).
pub fn dataset_pixels(d: &crate::data::Dataset, n: usize) -> Vec<u8> {
    d.images[..n.min(d.len()) * d.image_len()]
        .iter()
        .map(|&x| ((x + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8)
        .collect()
}

/// The statistics of the first `n` images of `d` (all when `n` is larger), cached in `dir`:
/// (statistics, cache file, whether it was read from the cache).
pub fn dataset_stats(
    dir: &Path,
    net: &super::FidInception,
    d: &crate::data::Dataset,
    n: usize,
) -> Result<(Stats, PathBuf, bool)> {
    let n = n.min(d.len());
    ensure!(n >= 2, "FID: need at least 2 real images (got {n})");
    cached_stats_in(
        dir,
        net,
        &dataset_pixels(d, n),
        n,
        (d.channels, d.height, d.width),
    )
}

/// [`cached_stats`] with the cache in `dir`.
pub fn cached_stats_in(
    dir: &Path,
    net: &super::FidInception,
    pixels: &[u8],
    n: usize,
    (c, h, w): (usize, usize, usize),
) -> Result<(Stats, PathBuf, bool)> {
    let path = cache_path_in(dir, &net.weights_sha256, &data_key(pixels));
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

    /// The `n x n` route of `frechet_distance_to` agrees with the `d x d` one (pytorch-fid's), for
    /// fewer rows than dimensions and for more.
    #[test]
    fn distance_to_features_matches_the_full_computation() {
        let d = 24;
        let val = |i: usize, salt: usize| {
            (((i * 7919 + salt * 104_729) % 1013) as f32 / 1013.0 - 0.5)
                * (1.0 + (i % d) as f32 / 8.0)
        };
        let real: Vec<f32> = (0..60 * d).map(|i| val(i, 1)).collect();
        let (mu, sigma) = metrics::mean_and_cov(&real, d).unwrap();
        let s = Stats { n: 60, mu, sigma };
        for rows in [2, 7, 23, 40] {
            let fake: Vec<f32> = (0..rows * d).map(|i| val(i, 3) * 1.3 + 0.1).collect();
            let want = metrics::frechet_distance(&real, &fake, d).unwrap();
            let got = s.frechet_distance_to(&fake).unwrap();
            // The d x d route takes square roots of the d - n eigenvalues that are 0 in exact
            // arithmetic and about 1e-15 in f64: up to ~1e-7 relative of its own error.
            assert!(
                (got - want).abs() <= 1e-6 * want.max(1.0),
                "{rows} rows: {got} vs {want}"
            );
        }
        assert!(s.frechet_distance_to(&[0.0; 24]).is_err());
        assert!(s.frechet_distance_to(&[0.0; 30]).is_err());
    }

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
        let far: Vec<f32> = feats.iter().map(|v| v + 0.5).collect();
        let want = FEATURES as f64 * 0.25;
        assert!((s.frechet_distance_to(&far).unwrap() - want).abs() < 1e-6 * want);
        assert!(Stats::load(&dir.path().join("missing"))
            .unwrap_err()
            .to_string()
            .contains("missing"));
    }
}
