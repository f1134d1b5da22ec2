//! The design question: among all buildable shapes within a budget, which does the law predict
//! best — and how do the optimal depth, width and head dimension scale with the budget?
//!
//! Feasible shapes (shared by `fit`'s design formula, `--hold-out` and `best`): depth 1..=32,
//! heads in {1,2,3,4,6,8,12,16}, width a multiple of 8 and of the head count in 16..=2048,
//! head_dim ≥ 8, and a valid `DitConfig` on the sweep's base. Ties the law cannot break (law (b)
//! ignores the head count, law (a) everything but N) go to the shape nearest, in log space, to
//! the centre of the fitted ranges: the least extrapolating choice.

use std::cmp::Ordering;

use dit::DitConfig;
use rayon::prelude::*;

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
                let cfg = DitConfig { depth, hidden_size: w, num_heads: heads, ..base.clone() };
                if w / heads >= MIN_HEAD_DIM && cfg.validate().is_ok() {
                    out.push(Shape { depth, width: w, heads, params: cfg.num_params() });
                }
                w += step;
            }
        }
    }
    out.sort_by_key(|s| (s.params, s.depth, s.width, s.heads));
    out
}

/// Tie-break target: the log-centre of the fitted depth, width and head-dim ranges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reference {
    pub ln_d: f64,
    pub ln_w: f64,
    pub ln_h: f64,
}

impl Reference {
    pub fn from_ranges(d: [usize; 2], w: [usize; 2], h: [usize; 2]) -> Self {
        let mid = |r: [usize; 2]| ((r[0].max(1) as f64).ln() + (r[1].max(1) as f64).ln()) / 2.0;
        Self { ln_d: mid(d), ln_w: mid(w), ln_h: mid(h) }
    }

    /// Distance of a shape from the reference in log space.
    pub fn distance(&self, s: &Shape) -> f64 {
        ((s.depth as f64).ln() - self.ln_d).abs() + ((s.width as f64).ln() - self.ln_w).abs() + ((s.head_dim() as f64).ln() - self.ln_h).abs()
    }

    /// Order by prediction, then by distance (then by shape, for a total order).
    pub fn cmp(&self, a: (&Shape, f64), b: (&Shape, f64)) -> Ordering {
        a.1.total_cmp(&b.1)
            .then(self.distance(a.0).total_cmp(&self.distance(b.0)))
            .then((a.0.depth, a.0.width, a.0.heads).cmp(&(b.0.depth, b.0.width, b.0.heads)))
    }
}

/// Shapes passing `keep`, best predicted first (NaN predictions dropped).
pub fn ranked(law: &LawFit, shapes: &[Shape], keep: impl Fn(&Shape) -> bool, r: &Reference) -> Vec<(Shape, f64)> {
    let mut v: Vec<(Shape, f64)> = shapes.iter().filter(|s| keep(s)).map(|s| (*s, law.predict(s))).filter(|(_, p)| p.is_finite()).collect();
    v.sort_by(|a, b| r.cmp((&a.0, a.1), (&b.0, b.1)));
    v
}

/// What makes two shapes different in a law's eyes (for listing distinct alternatives).
pub fn law_key(form: Option<Form>, s: &Shape) -> (usize, usize, usize) {
    match form {
        Some(Form::A) => (s.params, 0, 0),
        Some(Form::B) => (s.depth, s.width, 0),
        _ => (s.depth, s.width, s.heads),
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

    /// Index and prediction of the optimum with params in [lo, hi].
    pub fn optimum(&self, form: Form, raw: &[f64], lo: f64, hi: f64, r: &Reference) -> Option<(usize, f64)> {
        let a = self.shapes.partition_point(|s| (s.params as f64) < lo);
        let b = self.shapes.partition_point(|s| (s.params as f64) <= hi);
        let mut best: Option<(usize, f64)> = None;
        for i in a..b {
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

/// Log-spaced budgets from a bit below to a bit beyond the fitted params range.
pub fn budget_grid(params_range: [usize; 2]) -> Vec<u64> {
    let lo = (params_range[0].max(1) as f64 / 1.5).ln();
    let hi = (params_range[1].max(1) as f64 * 1.5).ln();
    let mut g: Vec<u64> = (0..GRID_POINTS).map(|i| (lo + (hi - lo) * i as f64 / (GRID_POINTS - 1) as f64).exp().round() as u64).collect();
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

/// The optimum at each grid budget (None where no shape fits the window).
fn optima(form: Form, raw: &[f64], c: &Candidates, grid: &[u64], r: &Reference) -> Vec<Option<(usize, f64)>> {
    grid.iter().map(|&b| c.optimum(form, raw, LOWER * b as f64, b as f64, r)).collect()
}

/// Exponents (depth, width, head_dim) of one set of optima.
fn exponents_of(form: Form, c: &Candidates, grid: &[u64], opt: &[Option<(usize, f64)>]) -> [Option<(f64, f64)>; 3] {
    let pairs: Vec<(f64, Shape)> = grid.iter().zip(opt).filter_map(|(b, o)| o.map(|(i, _)| (*b as f64, c.shapes[i]))).collect();
    let bs: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    let var = |f: fn(&Shape) -> usize| power_fit(&bs, &pairs.iter().map(|p| f(&p.1) as f64).collect::<Vec<_>>());
    [
        if form.uses_shape() { var(|s| s.depth) } else { None },
        if form.uses_shape() { var(|s| s.width) } else { None },
        if form.uses_heads() { var(|s| s.head_dim()) } else { None },
    ]
}

/// The design grid, its optima and the exponents, with bootstrap intervals from `draws` (raw
/// coefficient vectors of the same law).
pub fn design(law: &LawFit, draws: &[Vec<f64>], c: &Candidates, params_range: [usize; 2], r: &Reference) -> Design {
    let grid = budget_grid(params_range);
    let Some(form) = law.form() else {
        return Design { budgets: grid, depth: vec![], width: vec![], heads: vec![], head_dim: vec![], params: vec![], predicted: vec![], exponents: None, formula: format!("unknown law `{}`", law.name) };
    };
    let raw = form.from_map(&law.coef);
    let opt = optima(form, &raw, c, &grid, r);
    let mut d = Design { budgets: vec![], depth: vec![], width: vec![], heads: vec![], head_dim: vec![], params: vec![], predicted: vec![], exponents: None, formula: String::new() };
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
        }
    }
    let point = exponents_of(form, c, &grid, &opt);
    let boot: Vec<[Option<(f64, f64)>; 3]> = draws.par_iter().map(|raw| exponents_of(form, c, &grid, &optima(form, raw, c, &grid, r))).collect();
    let exp = |j: usize| {
        point[j].map(|(s, cc)| Exponent { s, c: cc, interval: interval90(&boot.iter().filter_map(|e| e[j].map(|x| x.0)).collect::<Vec<_>>()) })
    };
    let fmt = |sym: &str, e: &Option<Exponent>| match e {
        Some(e) => format!(
            "{sym}* ≈ {:.3}·N^{:.3}{}",
            e.c,
            e.s,
            e.interval.map(|[lo, hi]| format!(" (s 90%: {lo:.3}..{hi:.3})")).unwrap_or_default()
        ),
        None => format!("{sym}* not identifiable"),
    };
    d.formula = match form {
        Form::A => "law (a) depends on parameters only: depth, width and head_dim are not identifiable (the optimum is the largest model within the budget)".into(),
        _ => {
            let ex = Exponents { depth: exp(0), width: exp(1), head_dim: exp(2) };
            let mut f = format!("{}, {}", fmt("d", &ex.depth), fmt("w", &ex.width));
            f += &match form {
                Form::C => format!(", {}", fmt("head_dim", &ex.head_dim)),
                _ => ", head_dim* not determined (law (b) has no head term)".into(),
            };
            let mut bounds = Vec::new();
            if d.depth.iter().any(|&v| v == MAX_DEPTH) {
                bounds.push(format!("depth={MAX_DEPTH}"));
            }
            if d.width.iter().any(|&v| v == MAX_WIDTH) {
                bounds.push(format!("width={MAX_WIDTH}"));
            }
            if form == Form::C && d.head_dim.iter().any(|&v| v == MIN_HEAD_DIM) {
                bounds.push(format!("head_dim={MIN_HEAD_DIM}"));
            }
            if !bounds.is_empty() {
                f += &format!(" [optimum hits the search bound {} at some budgets]", bounds.join(", "));
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
            assert!(s.width % 8 == 0 && s.width % s.heads == 0 && s.head_dim() >= MIN_HEAD_DIM, "{s}");
            assert!((1..=MAX_DEPTH).contains(&s.depth) && (MIN_WIDTH..=MAX_WIDTH).contains(&s.width));
        }
        assert!(shapes.windows(2).all(|w| w[0].params <= w[1].params));
        assert!(shapes.iter().any(|s| s.heads == 3 && s.width == 24));
        assert!(!shapes.iter().any(|s| s.heads == 3 && s.width == 16));
    }

    #[test]
    fn power_fit_recovers_a_power_law() {
        let b = [1e4, 1e5, 1e6];
        let x: Vec<f64> = b.iter().map(|n: &f64| 0.5 * n.powf(0.3)).collect();
        let (s, c) = power_fit(&b, &x).unwrap();
        assert!((s - 0.3).abs() < 1e-12 && (c - 0.5).abs() < 1e-9);
        assert!(power_fit(&[1e4], &[3.0]).is_none());
    }
}
