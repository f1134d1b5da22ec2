//! The case bootstrap: resample runs with replacement (seeded), refit, and read uncertainty off
//! the spread of the refits — coefficient intervals here, prediction and design-exponent
//! intervals downstream from the same draws.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::fit::{fit_from, Obs};
use super::forms::{Form, Scales};

/// `b` resamples of `0..n` with replacement; draw i uses stream i of the seeded generator, so
/// the draws do not depend on thread scheduling (and every law sees the same resamples).
pub fn resamples(n: usize, b: usize, seed: u64) -> Vec<Vec<usize>> {
    (0..b)
        .map(|i| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(i as u64 + 1);
            (0..n).map(|_| rng.random_range(0..n)).collect()
        })
        .collect()
}

/// Raw coefficients of `form` refitted on each resample (failed refits are dropped).
pub fn refit(
    form: Form,
    obs: &[Obs],
    sc: &Scales,
    warm: &[f64],
    draws: &[Vec<usize>],
) -> Vec<Vec<f64>> {
    draws
        .par_iter()
        .filter_map(|idx| {
            let sample: Vec<Obs> = idx.iter().map(|&i| obs[i]).collect();
            let f = fit_from(form, &sample, sc, &[warm.to_vec()], false)?;
            let raw = form.to_raw(&f.theta, sc);
            raw.iter().all(|v| v.is_finite()).then_some(raw)
        })
        .collect()
}

/// The q-quantile (0..=1) of sorted values, linearly interpolated.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The 90 % percentile interval [q05, q95] of the finite values (None if there are fewer than 2).
pub fn interval90(vals: &[f64]) -> Option<[f64; 2]> {
    let mut v: Vec<f64> = vals.iter().copied().filter(|x| x.is_finite()).collect();
    if v.len() < 2 {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some([quantile(&v, 0.05), quantile(&v, 0.95)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_resamples_are_reproducible() {
        let a = resamples(10, 5, 7);
        assert_eq!(a, resamples(10, 5, 7));
        assert_ne!(a, resamples(10, 5, 8));
        assert!(a.iter().all(|d| d.len() == 10 && d.iter().all(|&i| i < 10)));
    }

    #[test]
    fn interval_of_a_uniform_grid() {
        let v: Vec<f64> = (0..=100).map(f64::from).collect();
        assert_eq!(interval90(&v), Some([5.0, 95.0]));
        assert_eq!(interval90(&[1.0]), None);
    }
}
