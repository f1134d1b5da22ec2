//! The design question: among all buildable shapes within a budget, which does the law predict
//! best — and how do the optimal depth, width and head dimension scale with the budget?
//!
//! Feasible shapes (shared by `fit`'s design formula, `--hold-out` and `best`): depth 1..=32,
//! heads in {1,2,3,4,6,8,12,16}, width a multiple of 8 and of the head count in 16..=2048,
//! head_dim ≥ 8, and a valid `DitConfig` on the sweep's base. Ties the law cannot break (law (b)
//! ignores the head count, law (a) everything but N) go to the shape nearest, in log space, to
//! the centre of the fitted ranges: the least extrapolating choice.
//!
//! The design formula and `best` search only the [`Domain`] the data can speak for: depth and
//! head_dim inside their measured ranges, width inside its measured range unless the budget
//! itself lies beyond the fitted parameter range (then only in the budget's direction). A law
//! fitted on depths 2..8 says nothing trustworthy about depth 1, however its exponent points.

use std::cmp::Ordering;

use dit::DitConfig;
use rayon::prelude::*;

use crate::fmt::num;

use super::bootstrap::interval90;
use super::forms::{Feat, Form};
use super::{Design, Exponent, Exponents, LawFit, Shape};

pub const HEADS: [usize; 8] = [1, 2, 3, 4, 6, 8, 12, 16];
pub const MAX_DEPTH: usize = 32;
pub const MIN_WIDTH: usize = 16;
pub const MAX_WIDTH: usize = 2048;
pub const MIN_HEAD_DIM: usize = 8;
/// The design grid searches shapes with params in [LOWER·B, B].
pub const LOWER: f64 = 0.5;
/// Budgets on the design grid.
pub const GRID_POINTS: usize = 12;

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// All feasible shapes on `base`, sorted by params.
pub fn feasible(base: &DitConfig) -> Vec<Shape> {
    let mut out = Vec::new();
    for depth in 1..=MAX_DEPTH {
        for heads in HEADS {
            let step = 8 * heads / gcd(8, heads);
            let mut w = MIN_WIDTH.div_ceil(step) * step;
            while w <= MAX_WIDTH {
                let cfg = DitConfig {
                    depth,
                    hidden_size: w,
                    num_heads: heads,
                    ..base.clone()
                };
                if w / heads >= MIN_HEAD_DIM && cfg.validate().is_ok() {
                    out.push(Shape {
                        depth,
                        width: w,
                        heads,
                        params: cfg.num_params(),
                    });
                }
                w += step;
            }
        }
    }
    out.sort_by_key(|s| (s.params, s.depth, s.width, s.heads));
    out
}

/// The measured ranges a design may use (law.json's `params_range`, `depth_range`,
/// `width_range`, `head_dim_range`, `heads_range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Domain {
    pub params: [usize; 2],
    pub depth: [usize; 2],
    pub width: [usize; 2],
    pub head_dim: [usize; 2],
    /// Head counts measured: a law without a head term ranks every head count of a width alike,
    /// and must not answer with one nobody ran (a study at 2 heads says nothing of 1 head).
    pub heads: [usize; 2],
}

fn within(v: usize, r: [usize; 2]) -> bool {
    r[0] <= v && v <= r[1]
}

impl Domain {
    /// The budget lies outside the fitted parameter range.
    pub fn extrapolates_budget(&self, budget: f64) -> bool {
        budget < self.params[0] as f64 || budget > self.params[1] as f64
    }

    /// `s` may answer `budget`: depth, head count and head_dim measured, and width measured
    /// except beyond the end of the params range that the budget itself exceeds.
    pub fn allows(&self, s: &Shape, budget: f64) -> bool {
        let w_lo = s.width >= self.width[0] || budget < self.params[0] as f64;
        let w_hi = s.width <= self.width[1] || budget > self.params[1] as f64;
        within(s.depth, self.depth)
            && within(s.heads, self.heads)
            && within(s.head_dim(), self.head_dim)
            && w_lo
            && w_hi
    }

    /// `s` as the answer for `budget` extrapolates: the budget lies outside the params range or
    /// the shape outside the measured depth, width or head_dim range.
    pub fn extrapolated(&self, s: &Shape, budget: f64) -> bool {
        self.extrapolates_budget(budget)
            || !within(s.depth, self.depth)
            || !within(s.width, self.width)
            || !within(s.heads, self.heads)
            || !within(s.head_dim(), self.head_dim)
    }

    /// "depth 2..=8, head_dim 12..=44", for messages.
    pub fn describe(&self) -> String {
        format!(
            "depth {}..={}, head_dim {}..={}",
            self.depth[0], self.depth[1], self.head_dim[0], self.head_dim[1]
        )
    }
}

/// How ties the law cannot resolve are broken: depth and width nearest the log-centre of the fitted
/// ranges; then, between head counts of one depth and width (law (a) and (b) have no head term), a
/// head dim inside the measured range, and the fewest heads (per-head work makes more heads slower:
/// measured 20 ms/image at 1 head vs 32 ms at 6, depth 4 width 48, results/fashion-mnist).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reference {
    pub ln_d: f64,
    pub ln_w: f64,
    /// The measured head-dim range.
    pub head_dim: [usize; 2],
}

impl Reference {
    pub fn from_ranges(d: [usize; 2], w: [usize; 2], h: [usize; 2]) -> Self {
        let mid = |r: [usize; 2]| ((r[0].max(1) as f64).ln() + (r[1].max(1) as f64).ln()) / 2.0;
        Self {
            ln_d: mid(d),
            ln_w: mid(w),
            head_dim: h,
        }
    }

    /// Distance of a shape's depth and width from the reference in log space.
    pub fn distance(&self, s: &Shape) -> f64 {
        ((s.depth as f64).ln() - self.ln_d).abs() + ((s.width as f64).ln() - self.ln_w).abs()
    }

    /// Order by prediction, then by distance, then head dim measured and fewest heads (then by
    /// shape, for a total order).
    pub fn cmp(&self, a: (&Shape, f64), b: (&Shape, f64)) -> Ordering {
        let outside = |s: &Shape| !(self.head_dim[0]..=self.head_dim[1]).contains(&s.head_dim());
        a.1.total_cmp(&b.1)
            .then(self.distance(a.0).total_cmp(&self.distance(b.0)))
            .then(outside(a.0).cmp(&outside(b.0)))
            .then(a.0.heads.cmp(&b.0.heads))
            .then((a.0.depth, a.0.width).cmp(&(b.0.depth, b.0.width)))
    }
}

/// Shapes passing `keep`, best predicted first (NaN predictions dropped).
pub fn ranked(
    law: &LawFit,
    shapes: &[Shape],
    keep: impl Fn(&Shape) -> bool,
    r: &Reference,
) -> Vec<(Shape, f64)> {
    ranked_by(shapes, keep, r, |s| law.predict(s))
}

/// Shapes passing `keep`, ordered by `predict` (then `r`'s tie-breaks; NaN predictions dropped).
pub fn ranked_by(
    shapes: &[Shape],
    keep: impl Fn(&Shape) -> bool,
    r: &Reference,
    predict: impl Fn(&Shape) -> f64,
) -> Vec<(Shape, f64)> {
    let mut v: Vec<(Shape, f64)> = shapes
        .iter()
        .filter(|s| keep(s))
        .map(|s| (*s, predict(s)))
        .filter(|(_, p)| p.is_finite())
        .collect();
    v.sort_by(|a, b| r.cmp((&a.0, a.1), (&b.0, b.1)));
    v
}

/// What makes two shapes different in a law's eyes (for listing distinct alternatives).
pub fn law_key(form: Form, s: &Shape) -> (usize, usize, usize) {
    match form {
        Form::A => (s.params, 0, 0),
        Form::B | Form::D | Form::E | Form::F | Form::G => (s.depth, s.width, 0),
        Form::C => (s.depth, s.width, s.heads),
    }
}

/// Feasible shapes with precomputed features, for the many optimum searches of the bootstrap.
pub struct Candidates {
    pub shapes: Vec<Shape>,
    feats: Vec<Feat>,
}

impl Candidates {
    pub fn new(shapes: Vec<Shape>) -> Self {
        let feats = shapes.iter().map(Shape::feat).collect();
        Self { shapes, feats }
    }

    /// The shapes with `law`'s features (a compute law's at its fitted step).
    pub fn for_law(shapes: Vec<Shape>, law: &LawFit) -> Self {
        let feats = shapes.iter().map(|s| law.feat(s)).collect();
        Self { shapes, feats }
    }

    /// Index and prediction of the optimum among the shapes passing `keep` with params in [lo, hi].
    pub fn optimum(
        &self,
        form: Form,
        raw: &[f64],
        lo: f64,
        hi: f64,
        r: &Reference,
        keep: impl Fn(&Shape) -> bool,
    ) -> Option<(usize, f64)> {
        let a = self.shapes.partition_point(|s| (s.params as f64) < lo);
        let b = self.shapes.partition_point(|s| (s.params as f64) <= hi);
        let mut best: Option<(usize, f64)> = None;
        for i in a..b {
            if !keep(&self.shapes[i]) {
                continue;
            }
            let p = form.eval_raw(raw, &self.feats[i]);
            if !p.is_finite() {
                continue;
            }
            let better = match best {
                None => true,
                Some((j, q)) => r.cmp((&self.shapes[i], p), (&self.shapes[j], q)) == Ordering::Less,
            };
            if better {
                best = Some((i, p));
            }
        }
        best
    }
}

/// Log-spaced budgets: `GRID_POINTS − 2` from the smallest to the largest fitted parameter count,
/// plus one step beyond each end (those two rows are extrapolations, and marked so).
pub fn budget_grid(params_range: [usize; 2]) -> Vec<u64> {
    let (a, b) = (
        params_range[0].max(1) as f64,
        params_range[1].max(params_range[0]).max(1) as f64,
    );
    // A single fitted size (or nearly): a 10 % range around it, every row an extrapolation.
    let open = b / a < 1.1;
    let (lo, hi) = if open {
        let m = (a * b).sqrt().ln();
        (m - 1.1f64.ln() / 2.0, m + 1.1f64.ln() / 2.0)
    } else {
        (a.ln(), b.ln())
    };
    let inner = GRID_POINTS - 2;
    let step = (hi - lo) / (inner - 1) as f64;
    let mut g: Vec<u64> = (0..GRID_POINTS)
        .map(|i| (lo + step * (i as f64 - 1.0)).exp().round() as u64)
        .collect();
    if !open {
        // The ends exactly at the fitted range: rounding must not push them outside it.
        (g[1], g[inner]) = (a as u64, b as u64);
    }
    g.dedup();
    g
}

/// Least-squares line ln x = ln c + s·ln N; (s, c). None with fewer than two distinct budgets.
pub fn power_fit(budgets: &[f64], xs: &[f64]) -> Option<(f64, f64)> {
    let n = budgets.len() as f64;
    if budgets.len() < 2 {
        return None;
    }
    let lx: Vec<f64> = budgets.iter().map(|b| b.ln()).collect();
    let ly: Vec<f64> = xs.iter().map(|x| x.ln()).collect();
    let (mx, my) = (lx.iter().sum::<f64>() / n, ly.iter().sum::<f64>() / n);
    let sxx: f64 = lx.iter().map(|x| (x - mx).powi(2)).sum();
    if !(sxx > 0.0) {
        return None;
    }
    let sxy: f64 = lx.iter().zip(&ly).map(|(x, y)| (x - mx) * (y - my)).sum();
    let s = sxy / sxx;
    Some((s, (my - s * mx).exp()))
}

/// The optimum at each grid budget among the shapes the domain allows (None where no shape fits
/// the window).
fn optima(
    form: Form,
    raw: &[f64],
    c: &Candidates,
    grid: &[u64],
    r: &Reference,
    dom: &Domain,
) -> Vec<Option<(usize, f64)>> {
    grid.iter()
        .map(|&b| {
            c.optimum(form, raw, LOWER * b as f64, b as f64, r, |s| {
                dom.allows(s, b as f64)
            })
        })
        .collect()
}

/// Exponents (depth, width, head_dim) of one set of optima, fitted on the budgets inside the
/// fitted params range (on every budget if fewer than two are).
fn exponents_of(
    form: Form,
    c: &Candidates,
    grid: &[u64],
    opt: &[Option<(usize, f64)>],
    dom: &Domain,
) -> [Option<(f64, f64)>; 3] {
    let all: Vec<(f64, Shape)> = grid
        .iter()
        .zip(opt)
        .filter_map(|(b, o)| o.map(|(i, _)| (*b as f64, c.shapes[i])))
        .collect();
    let inside: Vec<(f64, Shape)> = all
        .iter()
        .copied()
        .filter(|(b, _)| !dom.extrapolates_budget(*b))
        .collect();
    let pairs = if inside.len() >= 2 { inside } else { all };
    let bs: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    let var = |f: fn(&Shape) -> usize| {
        power_fit(
            &bs,
            &pairs.iter().map(|p| f(&p.1) as f64).collect::<Vec<_>>(),
        )
    };
    [
        if form.uses_shape() {
            var(|s| s.depth)
        } else {
            None
        },
        if form.uses_shape() {
            var(|s| s.width)
        } else {
            None
        },
        if form.uses_heads() {
            var(|s| s.head_dim())
        } else {
            None
        },
    ]
}

/// The design grid, its optima (inside `dom`) and the exponents, with bootstrap intervals from
/// `draws` (raw coefficient vectors of the same law).
pub fn design(
    law: &LawFit,
    draws: &[Vec<f64>],
    c: &Candidates,
    dom: &Domain,
    r: &Reference,
) -> Design {
    let grid = budget_grid(dom.params);
    let mut d = Design {
        budgets: vec![],
        depth: vec![],
        width: vec![],
        heads: vec![],
        head_dim: vec![],
        params: vec![],
        predicted: vec![],
        extrapolated: vec![],
        exponents: None,
        formula: String::new(),
    };
    let form = law.form();
    let raw = form.from_map(&law.coef);
    let opt = optima(form, &raw, c, &grid, r, dom);
    // Where the law, left alone, would leave the measured ranges: said, never recommended.
    let mut escapes = Vec::new();
    for (b, o) in grid.iter().zip(&opt) {
        if let Some((i, p)) = o {
            let s = c.shapes[*i];
            d.budgets.push(*b);
            d.depth.push(s.depth);
            d.width.push(s.width);
            d.heads.push(s.heads);
            d.head_dim.push(s.head_dim());
            d.params.push(s.params);
            d.predicted.push(*p);
            d.extrapolated.push(dom.extrapolated(&s, *b as f64));
            if let Some((j, q)) = c.optimum(form, &raw, LOWER * *b as f64, *b as f64, r, |_| true) {
                let u = c.shapes[j];
                let outside = !within(u.depth, dom.depth)
                    || (form.uses_heads() && !within(u.head_dim(), dom.head_dim));
                if outside && q < *p {
                    escapes.push(u);
                }
            }
        }
    }
    let point = exponents_of(form, c, &grid, &opt, dom);
    let boot: Vec<[Option<(f64, f64)>; 3]> = draws
        .par_iter()
        .map(|raw| exponents_of(form, c, &grid, &optima(form, raw, c, &grid, r, dom), dom))
        .collect();
    let exp = |j: usize| {
        point[j].map(|(s, cc)| Exponent {
            s,
            c: cc,
            interval: interval90(
                &boot
                    .iter()
                    .filter_map(|e| e[j].map(|x| x.0))
                    .collect::<Vec<_>>(),
            ),
        })
    };
    let fmt = |sym: &str, e: &Option<Exponent>| match e {
        Some(e) => format!(
            "{sym}* ≈ {}·N^{}{}",
            num(e.c),
            num(e.s),
            e.interval
                .map(|[lo, hi]| format!(" (s 90%: {}..{})", num(lo), num(hi)))
                .unwrap_or_default()
        ),
        None => format!("{sym}* not identifiable"),
    };
    let beyond: Vec<String> = d
        .budgets
        .iter()
        .zip(&d.extrapolated)
        .filter(|(_, x)| **x)
        .map(|(b, _)| b.to_string())
        .collect();
    let scope = format!(
        "searched {} (the measured ranges), width as the budget allows; fitted on budgets {}..={}{}",
        dom.describe(),
        dom.params[0],
        dom.params[1],
        if beyond.is_empty() { String::new() } else { format!("; rows marked extrapolated: budgets {}", beyond.join(", ")) }
    );
    let no_heads = |f: Form| format!(", head_dim* not determined (law ({f}) has no head term)");
    d.formula = match form {
        Form::A => format!("law (a) depends on parameters only: depth, width and head_dim are not identifiable (the optimum is the largest model within the budget) [{scope}]"),
        Form::B | Form::C | Form::D | Form::E | Form::F | Form::G => {
            let ex = Exponents { depth: exp(0), width: exp(1), head_dim: exp(2) };
            let mut f = format!("{}, {}", fmt("d", &ex.depth), fmt("w", &ex.width));
            f += &match form {
                Form::C => format!(", {}", fmt("head_dim", &ex.head_dim)),
                Form::A | Form::B | Form::D | Form::E | Form::F | Form::G => no_heads(form),
            };
            f += &format!(" [{scope}]");
            let mut bounds = Vec::new();
            if d.width.contains(&MAX_WIDTH) {
                bounds.push(format!("width={MAX_WIDTH}"));
            }
            if !bounds.is_empty() {
                f += &format!(" [optimum hits the search bound {} at some budgets]", bounds.join(", "));
            }
            if !escapes.is_empty() {
                let mut depths: Vec<usize> = escapes.iter().map(|s| s.depth).collect();
                depths.sort_unstable();
                depths.dedup();
                let mut hds: Vec<usize> = escapes.iter().map(|s| s.head_dim()).filter(|h| !within(*h, dom.head_dim)).collect();
                hds.sort_unstable();
                hds.dedup();
                let mut what = format!("depth {}", depths.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("/"));
                if form.uses_heads() && !hds.is_empty() {
                    what += &format!(", head_dim {}", hds.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("/"));
                }
                f += &format!(
                    " [unrestricted, the law would pick {what} at {} of {} budgets: outside the measured ranges, an extrapolation the data cannot support]",
                    escapes.len(),
                    d.budgets.len()
                );
            }
            d.exponents = Some(ex);
            f
        }
    };
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feasible_shapes_obey_the_rules() {
        let shapes = feasible(&DitConfig::default());
        assert!(shapes.len() > 1000);
        for s in &shapes {
            assert!(
                s.width % 8 == 0 && s.width % s.heads == 0 && s.head_dim() >= MIN_HEAD_DIM,
                "{s}"
            );
            assert!(
                (1..=MAX_DEPTH).contains(&s.depth) && (MIN_WIDTH..=MAX_WIDTH).contains(&s.width)
            );
        }
        assert!(shapes.windows(2).all(|w| w[0].params <= w[1].params));
        assert!(shapes.iter().any(|s| s.heads == 3 && s.width == 24));
        assert!(!shapes.iter().any(|s| s.heads == 3 && s.width == 16));
    }

    #[test]
    fn ties_between_head_counts_go_to_a_measured_head_dim_then_fewest_heads() {
        let r = Reference::from_ranges([1, 8], [24, 128], [12, 64]);
        let s = |heads| Shape {
            depth: 2,
            width: 96,
            heads,
            params: 0,
        };
        // Law (b) gives every head count of depth 2, width 96 the same prediction.
        let mut v: Vec<(Shape, f64)> = [1, 2, 3, 4, 6, 8]
            .into_iter()
            .map(|h| (s(h), 30.0))
            .collect();
        v.sort_by(|a, b| r.cmp((&a.0, a.1), (&b.0, b.1)));
        let order: Vec<usize> = v.iter().map(|x| x.0.heads).collect();
        assert_eq!(
            order,
            vec![2, 3, 4, 6, 8, 1],
            "head dim 96 (1 head) was never measured: last"
        );
        // A better prediction still wins whatever its heads.
        assert_eq!(r.cmp((&s(8), 29.0), (&s(2), 30.0)), Ordering::Less);
    }

    #[test]
    fn power_fit_recovers_a_power_law() {
        let b = [1e4, 1e5, 1e6];
        let x: Vec<f64> = b.iter().map(|n: &f64| 0.5 * n.powf(0.3)).collect();
        let (s, c) = power_fit(&b, &x).unwrap();
        assert!((s - 0.3).abs() < 1e-12 && (c - 0.5).abs() < 1e-9);
        assert!(power_fit(&[1e4], &[3.0]).is_none());
    }

    #[test]
    fn budget_grid_spans_the_fitted_range_and_one_step_beyond() {
        let g = budget_grid([73_408, 331_424]);
        assert_eq!(g.len(), GRID_POINTS);
        assert_eq!((g[1], g[g.len() - 2]), (73_408, 331_424));
        assert!(
            g[0] < 73_408
                && g[0] as f64 > 73_408.0 / 1.3
                && g[g.len() - 1] > 331_424
                && (g[g.len() - 1] as f64) < 331_424.0 * 1.3
        );
        assert!(g.windows(2).all(|w| w[0] < w[1]));
        // One fitted size: a few budgets around it.
        let g = budget_grid([100_000, 100_000]);
        assert!(
            g.len() >= 3 && g[0] < 100_000 && *g.last().unwrap() > 100_000,
            "{g:?}"
        );
    }

    #[test]
    fn domain_keeps_measured_depth_and_head_dim() {
        let dom = Domain {
            params: [70_000, 330_000],
            depth: [2, 8],
            width: [24, 88],
            head_dim: [12, 44],
            heads: [2, 4],
        };
        let base = DitConfig::default();
        let s = |d, w, h| Shape::on_base(d, w, h, &base);
        assert!(dom.allows(&s(2, 40, 2), 80_000.0));
        assert!(!dom.allows(&s(1, 40, 2), 80_000.0), "depth 1 was never run");
        assert!(
            !dom.allows(&s(2, 64, 8), 80_000.0),
            "head_dim 8 was never run"
        );
        assert!(
            !dom.allows(&s(2, 40, 1), 80_000.0) && dom.extrapolated(&s(2, 40, 1), 80_000.0),
            "one head was never run, though head_dim 40 was"
        );
        assert!(
            !dom.allows(&s(2, 96, 4), 300_000.0),
            "width 96 only for a budget beyond the range"
        );
        assert!(dom.allows(&s(2, 96, 4), 400_000.0) && dom.extrapolated(&s(2, 96, 4), 400_000.0));
        assert!(
            !dom.allows(&s(2, 16, 1), 400_000.0),
            "a budget above the range widens upwards only"
        );
        assert!(!dom.extrapolated(&s(2, 40, 2), 80_000.0));
    }
}
