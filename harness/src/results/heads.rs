//! The head count as a design axis: for every budget and depth trained with two or more head
//! counts (in the sweep's mode), each head count's metric over its seeds at one step count (the
//! furthest step every head count reached: step-matched, and the same FLOPs but for the
//! attention's small share), with P(best head count) by the race's Monte Carlo under the seed noise
//! pooled over the replicated head counts (shrunk towards the prior), and the batch-1 latency
//! where measured. More heads at one width means a smaller head dim and more, smaller attention
//! GEMMs: the quality they buy is weighed against the time they cost.
//!
//! The head count changes no parameter's shape, so one seed gives every head count the same initial
//! weights and the same batches: each head count is also compared with the most replicated one
//! seed by seed (the paired difference, free of the seed-to-seed spread they share).

use std::collections::BTreeMap;

use distill::setup::Setup;

use super::{mean_std, LearnPoint, Sweep};
use crate::race::decide::{p_best, pooled_noise, ShapeScores, DRAWS};

/// One head count of one (budget, depth).
#[derive(Debug, Clone, PartialEq)]
pub struct HeadsRow {
    pub heads: i64,
    pub width: i64,
    pub head_dim: i64,
    /// The metric per seed (seed order) at the comparison's step.
    pub seeds: Vec<i64>,
    pub values: Vec<f64>,
    /// Geometric mean over the comparison's common seeds.
    pub geo: f64,
    pub p_best: f64,
    /// Mean batch-1 latency (ms per image, all sampler steps) over the runs that measured it.
    pub latency_ms: Option<f64>,
    /// Seed by seed against the reference head count (None for the reference itself, or where no
    /// seed is shared).
    pub vs_reference: Option<PairedHeads>,
}

/// One head count against the reference on the seeds both ran.
#[derive(Debug, Clone, PartialEq)]
pub struct PairedHeads {
    /// Seeds shared with the reference.
    pub n: usize,
    /// Mean and sample std of ln(this) − ln(reference) over them (negative: this one is better).
    pub ln_diff: f64,
    pub ln_diff_std: f64,
    /// Seeds on which this head count is better.
    pub better: usize,
}

/// The head counts of one (budget, depth), best first.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadsComparison {
    pub budget: i64,
    pub depth: i64,
    pub mode: Setup,
    /// The step every row is read at; None: each run's final evaluation (a table without
    /// learning curves, whose runs' steps are not known here).
    pub step: Option<f64>,
    pub rows: Vec<HeadsRow>,
    /// The pooled seed sd in ln used for P(best), and its degrees of freedom.
    pub seed_sd: f64,
    pub df: usize,
    /// The head count the others are paired with: the one with the most seeds (of those, the best).
    pub reference: i64,
    /// The seeds every head count ran: the rows' means and P(best) are over these (all of each
    /// row's seeds where no seed is shared).
    pub common_seeds: Vec<i64>,
}

/// Every (budget, depth) of `sweep.mode` with two or more head counts at a common step. `prior_sd`:
/// the seed noise in ln assumed before replicates (the race's `prior_seed_noise`).
pub fn compare_heads(sweep: &Sweep, prior_sd: f64) -> Vec<HeadsComparison> {
    // (budget, depth) -> (heads, width) -> seed -> curve points.
    type Runs<'a> = BTreeMap<(i64, i64), BTreeMap<i64, Vec<&'a LearnPoint>>>;
    let mut by: BTreeMap<(i64, i64), Runs> = BTreeMap::new();
    // Without learning curves, each run's final value stands in (read at "step" 0).
    let finals: Vec<LearnPoint> = sweep
        .runs
        .iter()
        .filter(|r| r.mode == Some(sweep.mode))
        .filter_map(|r| {
            r.value().map(|value| LearnPoint {
                run_id: r.run_id.clone(),
                budget: r.budget,
                depth: r.depth,
                width: r.width,
                heads: r.heads,
                mode: sweep.mode,
                seed: r.seed,
                step: 0.0,
                train_flops: f64::NAN,
                value,
            })
        })
        .collect();
    let curves = sweep.learning.iter().any(|p| p.mode == sweep.mode);
    let points: &[LearnPoint] = if curves { &sweep.learning } else { &finals };
    for p in points.iter().filter(|p| p.mode == sweep.mode) {
        by.entry((p.budget, p.depth))
            .or_default()
            .entry((p.heads, p.width))
            .or_default()
            .entry(p.seed)
            .or_default()
            .push(p);
    }
    let mut out = Vec::new();
    for ((budget, depth), shapes) in by {
        let mut heads: Vec<i64> = shapes.keys().map(|k| k.0).collect();
        heads.dedup();
        if heads.len() < 2 {
            continue;
        }
        // The furthest step reached by at least one run of every head count.
        let reach = |runs: &BTreeMap<i64, Vec<&LearnPoint>>| {
            runs.values()
                .flat_map(|pts| pts.iter().map(|p| p.step))
                .fold(f64::NEG_INFINITY, f64::max)
        };
        let step = shapes.values().map(reach).fold(f64::INFINITY, f64::min);
        if !step.is_finite() {
            continue;
        }
        let mut rows: Vec<(HeadsRow, ShapeScores)> = Vec::new();
        for (&(h, w), runs) in &shapes {
            let (seeds, values): (Vec<i64>, Vec<f64>) = runs
                .iter()
                .filter_map(|(&seed, pts)| {
                    pts.iter().find(|p| p.step == step).map(|p| (seed, p.value))
                })
                .filter(|(_, v)| v.is_finite() && *v > 0.0)
                .unzip();
            if values.is_empty() {
                continue;
            }
            let lat: Vec<f64> = sweep
                .runs
                .iter()
                .filter(|r| {
                    r.mode == Some(sweep.mode)
                        && (r.budget, r.depth, r.width, r.heads) == (budget, depth, w, h)
                })
                .filter_map(|r| r.latency_ms)
                .collect();
            let s = ShapeScores {
                shape: format!("h{h}"),
                seeds: seeds.iter().map(|&s| s as u64).collect(),
                ln_values: values.iter().map(|v| v.ln()).collect(),
            };
            rows.push((
                HeadsRow {
                    heads: h,
                    width: w,
                    head_dim: w / h.max(1),
                    seeds,
                    values,
                    geo: s.mean().exp(),
                    p_best: 0.0,
                    latency_ms: (!lat.is_empty())
                        .then(|| lat.iter().sum::<f64>() / lat.len() as f64),
                    vs_reference: None,
                },
                s,
            ));
        }
        if rows.len() < 2 {
            continue;
        }
        let scores: Vec<ShapeScores> = rows.iter().map(|r| r.1.clone()).collect();
        // The seed noise from every replicate; the means and P(best) on the seeds every head
        // count ran (seeds share their noise across head counts, so means over different seed
        // sets would compare the seeds as much as the head counts).
        let noise = pooled_noise(&scores, prior_sd, 0.0);
        let mut common: Vec<u64> = scores[0].seeds.clone();
        common.retain(|s| scores.iter().all(|x| x.seeds.contains(s)));
        let balanced: Vec<ShapeScores> = scores
            .iter()
            .map(|x| {
                if common.is_empty() {
                    return x.clone();
                }
                let (seeds, ln_values) = x
                    .seeds
                    .iter()
                    .zip(&x.ln_values)
                    .filter(|(s, _)| common.contains(s))
                    .map(|(s, v)| (*s, *v))
                    .unzip();
                ShapeScores {
                    shape: x.shape.clone(),
                    seeds,
                    ln_values,
                }
            })
            .collect();
        for (r, b) in rows.iter_mut().zip(&balanced) {
            r.0.geo = b.mean().exp();
        }
        let p = p_best(
            &balanced,
            noise.seed_sd,
            DRAWS,
            0x6865_6164 ^ (budget as u64) ^ ((depth as u64) << 32),
        );
        let mut rows: Vec<HeadsRow> = rows
            .into_iter()
            .zip(p)
            .map(|((mut r, _), p)| {
                r.p_best = p;
                r
            })
            .collect();
        rows.sort_by(|a, b| a.geo.total_cmp(&b.geo).then(a.heads.cmp(&b.heads)));
        let reference = rows
            .iter()
            .max_by(|a, b| {
                a.seeds
                    .len()
                    .cmp(&b.seeds.len())
                    .then(b.geo.total_cmp(&a.geo))
            })
            .map(|r| (r.heads, r.seeds.clone(), r.values.clone()));
        let Some((ref_heads, ref_seeds, ref_values)) = reference else {
            continue;
        };
        for r in rows.iter_mut().filter(|r| r.heads != ref_heads) {
            let diffs: Vec<f64> = r
                .seeds
                .iter()
                .zip(&r.values)
                .filter_map(|(s, v)| {
                    let j = ref_seeds.iter().position(|x| x == s)?;
                    Some(v.ln() - ref_values[j].ln())
                })
                .collect();
            if diffs.is_empty() {
                continue;
            }
            let (m, sd) = mean_std(diffs.iter().copied());
            r.vs_reference = Some(PairedHeads {
                n: diffs.len(),
                ln_diff: m,
                ln_diff_std: sd,
                better: diffs.iter().filter(|d| **d < 0.0).count(),
            });
        }
        out.push(HeadsComparison {
            budget,
            depth,
            mode: sweep.mode,
            step: curves.then_some(step),
            rows,
            seed_sd: noise.seed_sd,
            df: noise.df,
            reference: ref_heads,
            common_seeds: common.iter().map(|&s| s as i64).collect(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::results::{test_point, test_sweep as sweep};

    fn pt(heads: i64, width: i64, seed: i64, step: f64, value: f64) -> LearnPoint {
        LearnPoint {
            depth: 3,
            width,
            heads,
            ..test_point(Setup::Kd, seed, step, step, value)
        }
    }

    #[test]
    fn head_counts_at_the_furthest_common_step_with_p_best() {
        let mut l = Vec::new();
        for seed in 0..3 {
            let j = seed as f64 * 0.05;
            // Two heads reached 16,000; one and four heads stopped at 8,000 (and 2,000).
            l.push(pt(2, 40, seed, 8000.0, 12.0 + j));
            l.push(pt(2, 40, seed, 16000.0, 10.0 + j));
            l.push(pt(1, 40, seed, 8000.0, 11.0 + j));
            l.push(pt(4, 40, seed, 2000.0, 30.0 + j));
            l.push(pt(4, 40, seed, 8000.0, 20.0 + j));
        }
        // Another depth with one head count only: not compared; another setup: ignored.
        let mut lone = pt(2, 48, 0, 8000.0, 1.0);
        lone.depth = 2;
        l.push(lone);
        let mut other = pt(8, 40, 0, 8000.0, 1.0);
        other.mode = Setup::Scratch;
        l.push(other);
        let c = compare_heads(&sweep(l), 0.084);
        assert_eq!(c.len(), 1);
        let c = &c[0];
        assert_eq!((c.depth, c.step), (3, Some(8000.0)));
        let order: Vec<i64> = c.rows.iter().map(|r| r.heads).collect();
        assert_eq!(order, vec![1, 2, 4]);
        let one = &c.rows[0];
        assert_eq!((one.head_dim, one.seeds.clone()), (40, vec![0, 1, 2]));
        assert!((one.geo - (11.0f64 * 11.05 * 11.1).cbrt()).abs() < 1e-9);
        assert!(one.p_best > 0.99, "{one:?}");
        let total: f64 = c.rows.iter().map(|r| r.p_best).sum();
        assert!((total - 1.0).abs() < 1e-9);
        assert_eq!(c.df, 6, "three head counts of three seeds");
        assert_eq!(c.rows[2].head_dim, 10);
        // All three have three seeds: the best (one head) is the reference, and the others are
        // paired with it seed by seed (each seed's values move together, so the sd is 0).
        assert_eq!(c.reference, 1);
        assert!(c.rows[0].vs_reference.is_none());
        let two = c.rows[1].vs_reference.as_ref().unwrap();
        assert_eq!((two.n, two.better), (3, 0));
        let want = [0.0, 0.05, 0.1].map(|j| (12.0f64 + j).ln() - (11.0f64 + j).ln());
        assert!(
            (two.ln_diff - want.iter().sum::<f64>() / 3.0).abs() < 1e-12,
            "{two:?}"
        );
        assert!(two.ln_diff_std < 1e-3, "{two:?}");
    }

    #[test]
    fn head_counts_pair_with_the_most_replicated_on_shared_seeds() {
        let mut l = Vec::new();
        // Two heads: seeds 0-3; one head: seeds 0 and 1, better on seed 0 and worse on seed 1.
        for (seed, v) in [(0, 10.0), (1, 10.0), (2, 9.0), (3, 9.5)] {
            l.push(pt(2, 40, seed, 16000.0, v));
        }
        l.push(pt(1, 40, 0, 16000.0, 9.0));
        l.push(pt(1, 40, 1, 16000.0, 11.0));
        let c = compare_heads(&sweep(l), 0.084);
        assert_eq!(c[0].reference, 2);
        // Means and P(best) on the seeds both ran; the noise from all five replicates.
        assert_eq!(c[0].common_seeds, vec![0, 1]);
        assert_eq!(c[0].df, 4);
        let two = c[0].rows.iter().find(|r| r.heads == 2).unwrap();
        assert!((two.geo - 10.0).abs() < 1e-9, "{two:?}");
        assert_eq!(two.seeds, vec![0, 1, 2, 3]);
        let one = c[0].rows.iter().find(|r| r.heads == 1).unwrap();
        let d = one.vs_reference.as_ref().unwrap();
        assert_eq!((d.n, d.better), (2, 1));
        let a = 0.9f64.ln();
        let b = 1.1f64.ln();
        assert!((d.ln_diff - (a + b) / 2.0).abs() < 1e-12);
        assert!((d.ln_diff_std - (a - b).abs() / 2f64.sqrt()).abs() < 1e-12);
    }
}
