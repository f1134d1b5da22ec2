//! The shape bootstrap: resample shapes (groups: all of a shape's seeds, and for the compute law
//! all its curve points, travel together) with replacement within each budget (seeded), refit,
//! and read uncertainty off the spread of the refits — coefficient intervals here, prediction,
//! P(best) and design-exponent intervals downstream from the same draws. Resampling runs instead
//! would treat two seeds of one shape as two shapes, and understate how far a new shape can sit
//! from the law.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::fit::{fit_from, Obs, Pin};
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

/// `b` resamples of the groups, each budget's groups resampled among themselves (`strata[g]` is
/// group g's budget), so every draw keeps the design's budgets.
pub fn stratified(strata: &[u64], b: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut levels: Vec<u64> = strata.to_vec();
    levels.sort_unstable();
    levels.dedup();
    let members: Vec<Vec<usize>> = levels
        .iter()
        .map(|l| (0..strata.len()).filter(|&g| strata[g] == *l).collect())
        .collect();
    (0..b)
        .map(|i| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(i as u64 + 1);
            members
                .iter()
                .flat_map(|m| {
                    (0..m.len())
                        .map(|_| m[rng.random_range(0..m.len())])
                        .collect::<Vec<_>>()
                })
                .collect()
        })
        .collect()
}

/// Raw coefficients of `form` refitted on each resample of groups (failed refits are dropped).
pub fn refit(
    form: Form,
    obs: &[Obs],
    sc: &Scales,
    warm: &[f64],
    pin: Pin,
    draws: &[Vec<usize>],
) -> Vec<Vec<f64>> {
    let groups = obs.iter().map(|o| o.group).max().map_or(0, |g| g + 1);
    let mut by_group: Vec<Vec<usize>> = vec![Vec::new(); groups];
    for (i, o) in obs.iter().enumerate() {
        by_group[o.group].push(i);
    }
    draws
        .par_iter()
        .filter_map(|idx| {
            let sample: Vec<Obs> = idx
                .iter()
                .filter(|&&g| g < groups)
                .flat_map(|&g| by_group[g].iter().map(|&i| obs[i]))
                .collect();
            if sample.len() < form.k() {
                return None;
            }
            let f = fit_from(form, &sample, sc, &[warm.to_vec()], false, pin)?;
            let mut raw = form.to_raw(&f.theta, sc);
            if let Some(e) = pin {
                raw[0] = e;
            }
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
    fn stratified_resamples_keep_each_budget() {
        let strata = [1, 1, 1, 2, 2, 3];
        for d in stratified(&strata, 20, 4) {
            assert_eq!(d.len(), 6);
            assert!(d[..3].iter().all(|&g| g < 3));
            assert!(d[3..5].iter().all(|&g| g == 3 || g == 4));
            assert_eq!(d[5], 5);
        }
        assert_eq!(stratified(&strata, 3, 1), stratified(&strata, 3, 1));
    }

    #[test]
    fn interval_of_a_uniform_grid() {
        let v: Vec<f64> = (0..=100).map(f64::from).collect();
        assert_eq!(interval90(&v), Some([5.0, 95.0]));
        assert_eq!(interval90(&[1.0]), None);
    }
}
