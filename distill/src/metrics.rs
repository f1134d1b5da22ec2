//! Distribution metrics on feature matrices (row-major f32, one row per image), computed in f64:
//! Fréchet distance (FID on Inception-like features), KID (unbiased polynomial-kernel MMD^2) and
//! precision/recall/density/coverage (Naeem et al. 2020). Definitions match the golden vectors in
//! `distill/tests/fixtures/*.expected.json` (pytorch-fid, the `prdc` package).
//!
//! Every function returns an error on bad input (too few rows, mismatched dims, non-finite values).

use anyhow::{bail, ensure, Result};
use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// KID over subsets: mean and population std (ddof 0, as torch-fidelity) of the per-subset MMD^2.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KidResult {
    pub mean: f64,
    pub std: f64,
}

/// Naeem et al. 2020 fidelity/diversity metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prdc {
    pub precision: f64,
    pub recall: f64,
    pub density: f64,
    pub coverage: f64,
}

/// Nearest-neighbour count used for PRDC (the paper's and the package's default).
pub const PRDC_K: usize = 5;

/// Checks shape and finiteness; returns the row count.
fn check(name: &str, x: &[f32], dim: usize, min_rows: usize) -> Result<usize> {
    ensure!(dim > 0, "{name}: feature dim must be > 0");
    ensure!(
        x.len().is_multiple_of(dim),
        "{name}: {} values is not a whole number of rows of dim {dim} (mismatched feature dims?)",
        x.len()
    );
    let n = x.len() / dim;
    ensure!(
        n >= min_rows,
        "{name}: need at least {min_rows} rows, got {n}"
    );
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        bail!(
            "{name}: non-finite value {} at row {}, column {}",
            x[i],
            i / dim,
            i % dim
        );
    }
    Ok(n)
}

fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Exact squared Euclidean distance (differences, not the |a|^2 - 2ab + |b|^2 expansion, so
/// duplicates give exactly 0 and the strict `<` tests are not decided by cancellation noise).
/// Eight independent accumulators let LLVM vectorise the reduction (it may not reorder one sum).
#[inline]
fn sqdist(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += (x[l] - y[l]) * (x[l] - y[l]);
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Mean and covariance (N-1 normalisation, as `np.cov(rowvar=False)`) of `n x dim` rows.
pub fn mean_and_cov(x: &[f32], dim: usize) -> Result<(DVector<f64>, DMatrix<f64>)> {
    let n = check("features", x, dim, 2)?;
    let mut m = DMatrix::from_row_slice(n, dim, &to_f64(x));
    let mu = DVector::from_iterator(dim, m.column_iter().map(|c| c.sum() / n as f64));
    for (mut c, &mu_j) in m.column_iter_mut().zip(mu.iter()) {
        c.add_scalar_mut(-mu_j);
    }
    let mut cov = m.tr_mul(&m) / (n as f64 - 1.0);
    symmetrize(&mut cov);
    Ok((mu, cov))
}

fn symmetrize(a: &mut DMatrix<f64>) {
    let t = a.transpose();
    *a += t;
    *a *= 0.5;
}

/// Square root of a symmetric PSD matrix; eigenvalues that rounding made negative count as 0.
fn sqrt_psd(a: &DMatrix<f64>) -> DMatrix<f64> {
    let e = SymmetricEigen::new(a.clone());
    let s = e.eigenvalues.map(|l| l.max(0.0).sqrt());
    &e.eigenvectors * DMatrix::from_diagonal(&s) * e.eigenvectors.transpose()
}

/// tr((S1 S2)^(1/2)) for PSD S1, S2. S1 S2 is similar to A S2 A with A = S1^(1/2), which is
/// symmetric PSD, so the trace is the sum of the square roots of its eigenvalues. Unlike a
/// general `sqrtm`, this stays real and finite for singular covariances.
pub fn trace_sqrt_product(s1: &DMatrix<f64>, s2: &DMatrix<f64>) -> f64 {
    let a = sqrt_psd(s1);
    let mut m = &a * s2 * &a;
    symmetrize(&mut m);
    m.symmetric_eigenvalues()
        .iter()
        .map(|&l| l.max(0.0).sqrt())
        .sum()
}

/// Fréchet distance between Gaussians fitted to `real` and `fake` (pytorch-fid's
/// `calculate_frechet_distance`). Clamped at 0: it is a squared distance, negatives are rounding.
pub fn frechet_distance(real: &[f32], fake: &[f32], dim: usize) -> Result<f64> {
    check("real", real, dim, 2)?;
    check("fake", fake, dim, 2)?;
    let (mu_r, s_r) = mean_and_cov(real, dim)?;
    let (mu_f, s_f) = mean_and_cov(fake, dim)?;
    let d = (mu_r - mu_f).norm_squared() + s_r.trace() + s_f.trace()
        - 2.0 * trace_sqrt_product(&s_r, &s_f);
    ensure!(
        d.is_finite(),
        "frechet_distance: result is not finite ({d})"
    );
    Ok(d.max(0.0))
}

/// Sum of k(a, b) = (a.b / d + 1)^3 over all rows a of `x` and b of `y` (minus the diagonal
/// when `skip_diag`, for x = y). Blocks of rows go through nalgebra's GEMM (much faster than
/// row-by-row dots) so at most a block x n kernel tile per thread is live; block sums are
/// collected in order, so the result does not depend on rayon's scheduling.
fn kernel_sum(x: &DMatrix<f64>, y: &DMatrix<f64>, skip_diag: bool) -> f64 {
    const BLOCK: usize = 128;
    let (d, yt) = (x.ncols() as f64, y.transpose());
    let starts: Vec<usize> = (0..x.nrows()).step_by(BLOCK).collect();
    let parts: Vec<f64> = starts
        .par_iter()
        .map(|&r0| {
            let g = x.rows(r0, BLOCK.min(x.nrows() - r0)) * &yt;
            let mut s = 0.0;
            for (j, col) in g.column_iter().enumerate() {
                for (i, &v) in col.iter().enumerate() {
                    if !(skip_diag && r0 + i == j) {
                        s += (v / d + 1.0).powi(3);
                    }
                }
            }
            s
        })
        .collect();
    parts.iter().sum()
}

/// The rows `idx` of a row-major `dim`-column buffer, as a matrix.
fn gather(x: &[f64], idx: &[usize], dim: usize) -> DMatrix<f64> {
    DMatrix::from_fn(idx.len(), dim, |i, j| x[idx[i] * dim + j])
}

/// Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3 between the rows of `x` (m) and `y` (n).
fn mmd2_unbiased(x: &DMatrix<f64>, y: &DMatrix<f64>) -> f64 {
    let (m, n) = (x.nrows() as f64, y.nrows() as f64);
    kernel_sum(x, x, true) / (m * (m - 1.0)) + kernel_sum(y, y, true) / (n * (n - 1.0))
        - 2.0 * kernel_sum(x, y, false) / (m * n)
}

/// KID as the golden vectors define it: one subset made of the first m = min(N, M) rows of each
/// set.
pub fn kid_first_rows(real: &[f32], fake: &[f32], dim: usize) -> Result<f64> {
    let n = check("kid: real", real, dim, 2)?;
    let m = check("kid: fake", fake, dim, 2)?;
    let r = n.min(m);
    let rows = |v: &[f32]| DMatrix::from_row_slice(r, dim, &to_f64(&v[..r * dim]));
    Ok(mmd2_unbiased(&rows(real), &rows(fake)))
}

/// KID over `n_subsets` random subsets of `subset_size` rows per set (default and cap
/// min(1000, N, M); drawn without replacement, independently per subset and set, from a
/// ChaCha8 stream seeded with `seed`).
pub fn kid(
    real: &[f32],
    fake: &[f32],
    dim: usize,
    subset_size: Option<usize>,
    n_subsets: usize,
    seed: u64,
) -> Result<KidResult> {
    let n = check("kid: real", real, dim, 2)?;
    let m = check("kid: fake", fake, dim, 2)?;
    ensure!(n_subsets > 0, "kid: n_subsets must be > 0");
    let s = subset_size.unwrap_or(1000).min(n).min(m);
    ensure!(s >= 2, "kid: subset size must be >= 2, got {s}");
    let (x, y) = (to_f64(real), to_f64(fake));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mmds: Vec<f64> = (0..n_subsets)
        .map(|_| {
            let xi = rand::seq::index::sample(&mut rng, n, s).into_vec();
            let yi = rand::seq::index::sample(&mut rng, m, s).into_vec();
            mmd2_unbiased(&gather(&x, &xi, dim), &gather(&y, &yi, dim))
        })
        .collect();
    let mean = mmds.iter().sum::<f64>() / mmds.len() as f64;
    let var = mmds.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / mmds.len() as f64;
    Ok(KidResult {
        mean,
        std: var.sqrt(),
    })
}

/// Squared distance of each row to its k-th nearest other row of the same set (the (k+1)-th
/// smallest including itself at 0, as the `prdc` package). O(N^2 d), one N-buffer per thread.
fn kth_radii_sq(x: &[f64], n: usize, dim: usize, k: usize) -> Vec<f64> {
    (0..n)
        .into_par_iter()
        .map_init(
            || vec![0.0f64; n],
            |buf, i| {
                let a = &x[i * dim..(i + 1) * dim];
                for (j, d) in buf.iter_mut().enumerate() {
                    *d = sqdist(a, &x[j * dim..(j + 1) * dim]);
                }
                *buf.select_nth_unstable_by(k, |p, q| p.total_cmp(q)).1
            },
        )
        .collect()
}

/// Precision, recall, density and coverage (Naeem et al. 2020) with `k` nearest neighbours,
/// Euclidean distances and strict `<` (compared squared: same order). Needs more than `k` rows
/// per set. No N x M matrix is stored: one pass over real rows keeps per-fake hit counts (one
/// M-vector per rayon fold).
pub fn prdc(real: &[f32], fake: &[f32], dim: usize, k: usize) -> Result<Prdc> {
    ensure!(k > 0, "prdc: k must be > 0");
    let n = check("prdc: real", real, dim, k + 1)?;
    let m = check("prdc: fake", fake, dim, k + 1)?;
    let (x, y) = (to_f64(real), to_f64(fake));
    let r_real = kth_radii_sq(&x, n, dim, k);
    let r_fake = kth_radii_sq(&y, m, dim, k);

    // (hits per fake j: #real i with d(i,j) < r_i, #real covered for recall, #real for coverage)
    type Acc = (Vec<u32>, usize, usize);
    let (hits, recall_n, coverage_n) = (0..n)
        .into_par_iter()
        .with_min_len(16)
        .fold(
            || -> Acc { (vec![0u32; m], 0, 0) },
            |(mut hits, mut rec, mut cov), i| {
                let a = &x[i * dim..(i + 1) * dim];
                let (mut in_fake_ball, mut nearest) = (false, f64::INFINITY);
                for j in 0..m {
                    let d = sqdist(a, &y[j * dim..(j + 1) * dim]);
                    hits[j] += (d < r_real[i]) as u32;
                    in_fake_ball |= d < r_fake[j];
                    nearest = nearest.min(d);
                }
                rec += in_fake_ball as usize;
                cov += (nearest < r_real[i]) as usize;
                (hits, rec, cov)
            },
        )
        .reduce(
            || (vec![0u32; m], 0, 0),
            |(mut h1, r1, c1), (h2, r2, c2)| {
                h1.iter_mut().zip(&h2).for_each(|(a, b)| *a += b);
                (h1, r1 + r2, c1 + c2)
            },
        );
    let total_hits: u64 = hits.iter().map(|&h| h as u64).sum();
    Ok(Prdc {
        precision: hits.iter().filter(|&&h| h > 0).count() as f64 / m as f64,
        recall: recall_n as f64 / n as f64,
        density: total_hits as f64 / (k as f64 * m as f64),
        coverage: coverage_n as f64 / n as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use rand_distr::StandardNormal;

    fn gauss(rows: usize, dim: usize, mean: f32, std: f32, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..rows * dim)
            .map(|_| mean + std * rng.sample::<f32, _>(StandardNormal))
            .collect()
    }

    #[test]
    fn fid_self_is_zero() {
        let x = gauss(300, 16, 0.5, 2.0, 1);
        let d = frechet_distance(&x, &x, 16).unwrap();
        assert!(d.abs() < 1e-8, "{d}");
    }

    #[test]
    fn fid_1d_matches_closed_form() {
        let (a, b) = (gauss(500, 1, 1.0, 2.0, 2), gauss(400, 1, -0.5, 0.7, 3));
        // On 1-D sample statistics FID is exactly (mu1 - mu2)^2 + (s1 - s2)^2 (s with N-1).
        let stats = |v: &[f32]| {
            let n = v.len() as f64;
            let mu = v.iter().map(|&x| x as f64).sum::<f64>() / n;
            let var = v.iter().map(|&x| (x as f64 - mu).powi(2)).sum::<f64>() / (n - 1.0);
            (mu, var.sqrt())
        };
        let ((m1, s1), (m2, s2)) = (stats(&a), stats(&b));
        let want = (m1 - m2).powi(2) + (s1 - s2).powi(2);
        let got = frechet_distance(&a, &b, 1).unwrap();
        assert!((got - want).abs() < 1e-9 * want.max(1.0), "{got} vs {want}");
        // ... and close to the population value 1.5^2 + 1.3^2.
        assert!((got - 3.94).abs() < 0.5, "{got}");
    }

    #[test]
    fn fid_singular_covariances() {
        // 5 rows in 16 dims: both covariances have rank <= 4.
        let (a, b) = (gauss(5, 16, 0.0, 1.0, 4), gauss(5, 16, 0.3, 1.5, 5));
        let d = frechet_distance(&a, &b, 16).unwrap();
        assert!(d.is_finite() && d >= 0.0, "{d}");
        assert!(frechet_distance(&a, &a, 16).unwrap() < 1e-8);
        // A duplicated column makes the covariance singular with many rows too.
        let dup = |v: &[f32]| -> Vec<f32> { v.chunks(8).flat_map(|r| [r, r].concat()).collect() };
        let (c, e) = (gauss(200, 8, 0.0, 1.0, 6), gauss(200, 8, 0.1, 1.2, 7));
        let d2 = frechet_distance(&dup(&c), &dup(&e), 16).unwrap();
        let d1 = frechet_distance(&c, &e, 8).unwrap();
        // Duplicating every column doubles every term of the distance.
        assert!(
            (d2 - 2.0 * d1).abs() < 1e-6 * d1.max(1.0),
            "{d2} vs 2 * {d1}"
        );
    }

    #[test]
    fn fid_rejects_bad_input() {
        let x = gauss(10, 4, 0.0, 1.0, 8);
        assert!(frechet_distance(&x[..4], &x, 4).is_err()); // one row
        assert!(frechet_distance(&x[..7], &x, 4).is_err()); // not whole rows
        let mut y = x.clone();
        y[5] = f32::NAN;
        let e = frechet_distance(&x, &y, 4).unwrap_err().to_string();
        assert!(e.contains("non-finite") && e.contains("row 1"), "{e}");
    }

    #[test]
    fn kid_subsets_match_first_rows_on_full_sets() {
        let (a, b) = (gauss(120, 8, 0.0, 1.0, 9), gauss(120, 8, 0.4, 1.0, 10));
        let first = kid_first_rows(&a, &b, 8).unwrap();
        // Subsets of every row are permutations; the unbiased MMD^2 does not see the order.
        let full = kid(&a, &b, 8, Some(120), 3, 0).unwrap();
        assert!(
            (full.mean - first).abs() < 1e-12 && full.std < 1e-12,
            "{full:?} vs {first}"
        );
        assert!(first > 0.0);
        let r1 = kid(&a, &b, 8, Some(50), 5, 42).unwrap();
        assert_eq!(
            r1,
            kid(&a, &b, 8, Some(50), 5, 42).unwrap(),
            "same seed, same subsets"
        );
        assert!(r1.std > 0.0);
        // Independent draws of one distribution: near 0, far below the shifted pair.
        let same = kid_first_rows(&a, &gauss(120, 8, 0.0, 1.0, 14), 8).unwrap();
        assert!(same.abs() < 0.2 * first, "{same} vs {first}");
    }

    #[test]
    fn prdc_self_is_one() {
        let x = gauss(200, 8, 0.0, 1.0, 11);
        let p = prdc(&x, &x, 8, 5).unwrap();
        assert_eq!(
            (p.precision, p.recall, p.coverage),
            (1.0, 1.0, 1.0),
            "{p:?}"
        );
        assert!(p.density > 0.5 && p.density < 2.0, "{p:?}");
    }

    #[test]
    fn too_few_rows_is_an_error_not_a_panic() {
        let (a, b) = (gauss(5, 8, 0.0, 1.0, 3), gauss(40, 8, 0.0, 1.0, 4));
        let e = prdc(&a, &b, 8, PRDC_K).unwrap_err().to_string();
        assert!(e.contains("prdc: real") && e.contains("at least 6"), "{e}");
        assert!(kid(&a[..8], &b, 8, None, 10, 0).is_err());
        assert!(kid_first_rows(&b, &[f32::NAN; 16], 8)
            .unwrap_err()
            .to_string()
            .contains("non-finite"));
    }
}
