//! KD against scratch, run by run: each scratch run paired with the KD run of the same shape and
//! seed (they share their noise, so the pair's difference is what KD changes), compared at equal
//! steps and at equal training FLOPs, both from measured learning-curve points.
//!
//! KD pays the teacher's forward on every training image, so at equal FLOPs the KD run is read
//! at the earlier step where its FLOPs equal the scratch run's at its last step (a racing sweep
//! puts a curve point there: `race::with_flop_matched_points`). No KD point within half a KD step's
//! FLOPs: no equal-FLOPs value, never an interpolation.

use std::collections::BTreeMap;

use distill::setup::Setup;

use super::{mean_std, LearnPoint, Sweep};

/// One matching of a shape's pairs: KD over scratch in ln, over the seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Matched {
    /// Pairs (seeds) compared.
    pub n: usize,
    /// Geometric means of the metric over those seeds.
    pub kd: f64,
    pub scratch: f64,
    /// Mean and sample std of ln(kd) − ln(scratch) over the pairs (negative: KD better).
    pub ln_diff: f64,
    pub ln_diff_std: f64,
    /// Pairs in which KD is better.
    pub kd_better: usize,
    /// The KD step(s) read (equal FLOPs: fewer than scratch's), min and max over the pairs.
    pub kd_steps: [f64; 2],
}

/// One shape of one budget.
#[derive(Debug, Clone, PartialEq)]
pub struct PairedShape {
    pub budget: i64,
    pub shape: String,
    /// The scratch runs' last step.
    pub steps: f64,
    pub equal_steps: Option<Matched>,
    pub equal_flops: Option<Matched>,
    /// Equal steps at every curve point both runs of a pair have, in step order: where along
    /// training KD's lead (or lag) opens and closes.
    pub along: Vec<(f64, Matched)>,
}

fn matched(pairs: &[(f64, f64, f64)]) -> Option<Matched> {
    if pairs.is_empty() {
        return None;
    }
    let n = pairs.len() as f64;
    let geo = |f: &dyn Fn(&(f64, f64, f64)) -> f64| {
        (pairs.iter().map(|p| f(p).ln()).sum::<f64>() / n).exp()
    };
    let (m, s) = mean_std(pairs.iter().map(|(k, sc, _)| k.ln() - sc.ln()));
    let steps = pairs.iter().map(|p| p.2);
    Some(Matched {
        n: pairs.len(),
        kd: geo(&|p| p.0),
        scratch: geo(&|p| p.1),
        ln_diff: m,
        ln_diff_std: s,
        kd_better: pairs.iter().filter(|(k, sc, _)| k < sc).count(),
        kd_steps: [
            steps.clone().fold(f64::INFINITY, f64::min),
            steps.fold(f64::NEG_INFINITY, f64::max),
        ],
    })
}

/// Every shape with scratch runs and KD twins, in budget and shape order.
pub fn kd_vs_scratch(sweep: &Sweep) -> Vec<PairedShape> {
    type Key = (i64, i64, i64, i64);
    let mut curves: BTreeMap<(Key, Setup, i64), Vec<&LearnPoint>> = BTreeMap::new();
    for p in &sweep.learning {
        let key = (p.budget, p.depth, p.width, p.heads);
        curves.entry((key, p.mode, p.seed)).or_default().push(p);
    }
    // Per shape: (kd, scratch, kd step) at equal steps and at equal FLOPs, one per seed.
    type Pairs = Vec<(f64, f64, f64)>;
    let mut by_shape: BTreeMap<Key, (f64, Pairs, Pairs)> = BTreeMap::new();
    // (shape, step bits) -> the pairs at that step.
    let mut along: BTreeMap<(Key, u64), Pairs> = BTreeMap::new();
    for ((key, mode, seed), pts) in &curves {
        if *mode != Setup::Scratch {
            continue;
        }
        let Some(last) = pts.iter().max_by(|a, b| a.step.total_cmp(&b.step)) else {
            continue;
        };
        let Some(kd) = curves.get(&(*key, Setup::Kd, *seed)) else {
            continue;
        };
        let e = by_shape
            .entry(*key)
            .or_insert((last.step, Vec::new(), Vec::new()));
        e.0 = e.0.max(last.step);
        if let Some(k) = kd.iter().find(|k| k.step == last.step) {
            e.1.push((k.value, last.value, k.step));
        }
        for p in pts {
            if let Some(k) = kd.iter().find(|k| k.step == p.step) {
                along
                    .entry((*key, p.step.to_bits()))
                    .or_default()
                    .push((k.value, p.value, k.step));
            }
        }
        let near = super::point_at_flops(kd.iter().copied(), last.train_flops);
        if let Some(k) = near {
            e.2.push((k.value, last.value, k.step));
        }
    }
    by_shape
        .into_iter()
        .map(|((budget, d, w, h), (steps, eq_steps, eq_flops))| {
            let key = (budget, d, w, h);
            // Steps are non-negative, so their bits sort as the steps do.
            let curve: Vec<(f64, Matched)> = along
                .range((key, 0)..=(key, u64::MAX))
                .filter_map(|((_, bits), pairs)| matched(pairs).map(|m| (f64::from_bits(*bits), m)))
                .collect();
            PairedShape {
                budget,
                shape: crate::law::query::label(d as usize, w as usize, h as usize),
                steps,
                equal_steps: matched(&eq_steps),
                equal_flops: matched(&eq_flops),
                along: curve,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::results::{test_point as pt, test_sweep};

    #[test]
    fn pairs_by_seed_at_equal_steps_and_at_the_flop_matched_kd_point() {
        // KD costs 10 FLOPs a step, scratch 1: scratch's 100 steps = KD's 10.
        let mut learning = Vec::new();
        for (seed, kd10, kd100, sc100) in [(0, 30.0, 20.0, 25.0), (1, 40.0, 22.0, 24.0)] {
            learning.push(pt(Setup::Kd, seed, 10.0, 100.0, kd10));
            learning.push(pt(Setup::Kd, seed, 100.0, 1000.0, kd100));
            learning.push(pt(Setup::Scratch, seed, 50.0, 50.0, 60.0));
            learning.push(pt(Setup::Scratch, seed, 100.0, 100.0, sc100));
        }
        // A KD run with no scratch twin is not compared.
        learning.push(pt(Setup::Kd, 7, 100.0, 1000.0, 1.0));
        let sweep = test_sweep(learning);
        let p = kd_vs_scratch(&sweep);
        assert_eq!(p.len(), 1);
        let (s, f) = (
            p[0].equal_steps.as_ref().unwrap(),
            p[0].equal_flops.as_ref().unwrap(),
        );
        assert_eq!((s.n, s.kd_better, p[0].steps), (2, 2, 100.0));
        assert!((s.kd - (20.0f64 * 22.0).sqrt()).abs() < 1e-9);
        assert!((s.scratch - (25.0f64 * 24.0).sqrt()).abs() < 1e-9);
        assert_eq!((f.n, f.kd_better, f.kd_steps), (2, 0, [10.0, 10.0]));
        let d = ((30.0f64 / 25.0).ln() + (40.0f64 / 24.0).ln()) / 2.0;
        assert!((f.ln_diff - d).abs() < 1e-9);
        // Along the curve: the steps both runs of a pair evaluated (100; scratch's 50 and KD's
        // 10 have no twin), each paired like the last one.
        let steps: Vec<f64> = p[0].along.iter().map(|a| a.0).collect();
        assert_eq!(steps, vec![100.0]);
        assert_eq!(p[0].along[0].1, *s);
    }
}
