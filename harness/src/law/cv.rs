//! Cross-validation on ln(metric): leave-one-budget-out (does the law extrapolate to a budget it
//! has not seen? — the question a design law must answer) and seeded k-fold.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::fit::{fit_from, predict_ln, Obs};
use super::forms::{Form, Scales};

/// Out-of-fold ln predictions (one per observation) and their RMSE.
#[derive(Debug, Clone, PartialEq)]
pub struct CvResult {
    pub pred_ln: Vec<f64>,
    pub rmse: f64,
}

/// Fit on the complement of each fold and predict the fold. None when a fold leaves nothing to
/// fit on or a refit fails everywhere.
pub fn cross_validate(
    form: Form,
    obs: &[Obs],
    sc: &Scales,
    warm: &[f64],
    folds: &[Vec<usize>],
) -> Option<CvResult> {
    let mut pred = vec![f64::NAN; obs.len()];
    for test in folds {
        let train: Vec<Obs> = (0..obs.len())
            .filter(|i| !test.contains(i))
            .map(|i| obs[i])
            .collect();
        if train.is_empty() {
            return None;
        }
        let f = fit_from(form, &train, sc, &[warm.to_vec()], false)?;
        for &i in test {
            pred[i] = predict_ln(form, &f.theta, &obs[i].x, sc);
        }
    }
    let se: f64 = obs
        .iter()
        .zip(&pred)
        .map(|(o, p)| (o.ln_y - p).powi(2))
        .sum();
    let rmse = (se / obs.len() as f64).sqrt();
    rmse.is_finite().then_some(CvResult {
        pred_ln: pred,
        rmse,
    })
}

/// One fold per budget (needs at least two budgets).
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

/// k = min(5, n) folds over a seeded shuffle of the observations.
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
