//! Cross-validation on ln(metric): leave-one-budget-out (does the law extrapolate to a budget it
//! has not seen? — the question a design law must answer) and seeded k-fold. Folds hold whole
//! shapes (groups): the seeds of one shape share its deviation from any law, so a fold that kept
//! one seed in training would flatter the law.
//!
//! Each fold refits on the cells of the other groups and predicts the held-out *runs* (the
//! targets: every run at the fitted step), so the error is per run, comparable with the pooled
//! seed noise (the error a perfect law would still make) and across laws fitted on different
//! cells (the compute law fits learning-curve cells but is scored on the same runs).

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::fit::{fit_from, predict_ln, Obs, Pin};
use super::forms::{Feat, Form, Scales};

/// One run the CV predicts: its features (at its training compute) and ln(metric).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    pub x: Feat,
    pub ln_y: f64,
    pub group: usize,
}

/// Out-of-fold ln predictions (one per target) and their RMSE.
#[derive(Debug, Clone, PartialEq)]
pub struct CvResult {
    pub pred_ln: Vec<f64>,
    pub rmse: f64,
}

/// Fit on the cells outside each fold of groups and predict the fold's targets. None when a fold
/// leaves nothing to fit on or a refit fails everywhere.
pub fn cross_validate(
    form: Form,
    obs: &[Obs],
    targets: &[Target],
    sc: &Scales,
    warm: &[f64],
    pin: Pin,
    folds: &[Vec<usize>],
) -> Option<CvResult> {
    let mut pred = vec![f64::NAN; targets.len()];
    for test in folds {
        if !targets.iter().any(|t| test.contains(&t.group)) {
            continue;
        }
        let train: Vec<Obs> = obs
            .iter()
            .filter(|o| !test.contains(&o.group))
            .copied()
            .collect();
        if train.len() <= form.k() - usize::from(pin.is_some()) {
            return None;
        }
        let f = fit_from(form, &train, sc, &[warm.to_vec()], false, pin)?;
        for (p, t) in pred.iter_mut().zip(targets) {
            if test.contains(&t.group) {
                *p = predict_ln(form, &f.theta, &t.x, sc);
            }
        }
    }
    let se: f64 = targets
        .iter()
        .zip(&pred)
        .map(|(t, p)| (t.ln_y - p).powi(2))
        .sum();
    let rmse = (se / targets.len().max(1) as f64).sqrt();
    rmse.is_finite().then_some(CvResult {
        pred_ln: pred,
        rmse,
    })
}

/// One fold per budget, over groups (`budgets[g]` is group g's budget; needs two budgets).
pub fn lobo_folds(budgets: &[u64]) -> Option<Vec<Vec<usize>>> {
    let mut distinct: Vec<u64> = budgets.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    (distinct.len() >= 2).then(|| {
        distinct
            .iter()
            .map(|b| (0..budgets.len()).filter(|&i| budgets[i] == *b).collect())
            .collect()
    })
}

/// k = min(5, n) folds over a seeded shuffle of the `n` groups.
pub fn kfold_folds(n: usize, seed: u64) -> Vec<Vec<usize>> {
    let k = n.clamp(1, 5);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    (0..k)
        .map(|f| {
            idx.iter()
                .enumerate()
                .filter(|(j, _)| j % k == f)
                .map(|(_, &i)| i)
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_partition_the_points() {
        for n in [4, 7, 23] {
            let folds = kfold_folds(n, 3);
            assert_eq!(folds.len(), n.min(5));
            let mut all: Vec<usize> = folds.concat();
            all.sort_unstable();
            assert_eq!(all, (0..n).collect::<Vec<_>>());
        }
        assert_eq!(kfold_folds(9, 1), kfold_folds(9, 1));
        assert_eq!(
            lobo_folds(&[5, 7, 5, 9]).unwrap(),
            vec![vec![0, 2], vec![1], vec![3]]
        );
        assert!(lobo_folds(&[5, 5]).is_none());
    }
}
