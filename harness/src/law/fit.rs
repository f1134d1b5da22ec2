//! Weighted non-linear least squares on ln(metric) with the `levenberg-marquardt` crate, from
//! several starting points (the laws are non-convex in their exponents; the best local optimum
//! wins).
//!
//! An observation is a cell — one shape (at one training step, for the compute law) — holding
//! the mean of ln(metric) over its seeds, weighted by the seed count: with a common seed noise
//! σ², the cell mean has variance σ²/n, so weight n is the inverse-variance weight, and the
//! coefficients equal those of a fit to the single runs. The floor `E` may be held fixed
//! (`Pin`): the measured real-data floor, or 0 where the data cannot identify it.

use levenberg_marquardt::{LeastSquaresProblem, LevenbergMarquardt};
use nalgebra::{DMatrix, DVector, Dyn, Owned};

use super::forms::{Feat, Form, Scales};

/// One fitted observation (a cell): the shape's log-features, the mean of ln(metric) over its
/// `w` seeds, their within-cell sum of squares `ss` (0 for one seed) and the cell's group (its
/// shape's index: CV folds and bootstrap draws take or leave whole groups).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Obs {
    pub x: Feat,
    pub ln_y: f64,
    pub w: f64,
    pub ss: f64,
    pub group: usize,
}

impl Obs {
    /// A single run, its own group.
    pub fn single(x: Feat, ln_y: f64, group: usize) -> Self {
        Self {
            x,
            ln_y,
            w: 1.0,
            ss: 0.0,
            group,
        }
    }
}

/// The floor held fixed during the fit: `Some(E)` (E ≥ 0; 0 drops the floor) or free.
pub type Pin = Option<f64>;

/// θ₀ (ln E) of a pinned floor (0 maps to the clamp, which `Form::to_raw` reports as 0).
pub fn pinned_theta0(e: f64) -> f64 {
    if e > 0.0 {
        e.ln()
    } else {
        -300.0
    }
}

/// A converged fit: free parameters θ (see `forms`) and the RSS on ln(metric).
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    pub theta: Vec<f64>,
    pub rss: f64,
}

/// Fitting constants: the means of the log-features (logs of the geometric means), and the
/// bounds of ln h0, the observed head-dim range widened 4× each way (see `forms`).
pub fn scales(obs: &[Obs]) -> Scales {
    let n = obs.len().max(1) as f64;
    let m = |f: fn(&Feat) -> f64| obs.iter().map(|o| f(&o.x)).sum::<f64>() / n;
    let finite_mean = |f: fn(&Feat) -> f64| {
        let v: Vec<f64> = obs
            .iter()
            .map(|o| f(&o.x))
            .filter(|v| v.is_finite())
            .collect();
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let (ln_c, ln_s) = (finite_mean(|x| x.ln_c), finite_mean(|x| x.ln_s));
    let lo = obs.iter().map(|o| o.x.ln_h).fold(f64::INFINITY, f64::min);
    let hi = obs
        .iter()
        .map(|o| o.x.ln_h)
        .fold(f64::NEG_INFINITY, f64::max);
    let widen = 4.0f64.ln();
    Scales {
        c: Feat {
            ln_n: m(|x| x.ln_n),
            ln_d: m(|x| x.ln_d),
            ln_w: m(|x| x.ln_w),
            ln_h: m(|x| x.ln_h),
            ln_c,
            ln_s,
        },
        ln_h0: [lo - widen, hi + widen],
    }
}

struct Problem<'a> {
    form: Form,
    obs: &'a [Obs],
    sc: Scales,
    /// The full θ (a pinned floor included).
    th: Vec<f64>,
    /// Indices of θ the optimiser moves (all but 0 when the floor is pinned).
    free: Vec<usize>,
}

impl Problem<'_> {
    /// Weighted residuals √w·(ln y − ln f) and their Jacobian −√w·(∂f/∂θ)/f (free columns).
    fn eval(&self, jac: Option<&mut DMatrix<f64>>) -> DVector<f64> {
        let k = self.form.k();
        let mut g = vec![0.0; k];
        let mut r = DVector::zeros(self.obs.len());
        let mut jac = jac;
        for (i, o) in self.obs.iter().enumerate() {
            let f = self.form.eval_theta(&self.th, &o.x, &self.sc, &mut g);
            let sw = o.w.sqrt();
            r[i] = sw * (o.ln_y - f.ln());
            if let Some(j) = jac.as_deref_mut() {
                for (c, &p) in self.free.iter().enumerate() {
                    j[(i, c)] = -sw * g[p] / f;
                }
            }
        }
        r
    }
}

impl LeastSquaresProblem<f64, Dyn, Dyn> for Problem<'_> {
    type ResidualStorage = Owned<f64, Dyn>;
    type JacobianStorage = Owned<f64, Dyn, Dyn>;
    type ParameterStorage = Owned<f64, Dyn>;

    fn set_params(&mut self, x: &DVector<f64>) {
        for (c, &p) in self.free.iter().enumerate() {
            self.th[p] = x[c];
        }
    }

    fn params(&self) -> DVector<f64> {
        DVector::from_iterator(self.free.len(), self.free.iter().map(|&p| self.th[p]))
    }

    fn residuals(&self) -> Option<DVector<f64>> {
        let r = self.eval(None);
        r.iter().all(|v| v.is_finite()).then_some(r)
    }

    fn jacobian(&self) -> Option<DMatrix<f64>> {
        let mut j = DMatrix::zeros(self.obs.len(), self.free.len());
        self.eval(Some(&mut j));
        j.iter().all(|v| v.is_finite()).then_some(j)
    }
}

/// Weighted RSS of θ on the cells, Σ w·(ln ȳ − ln f)² (NaN if the law is undefined somewhere):
/// the lack-of-fit part. The RSS over single runs adds the within-cell Σ ss.
pub fn rss(form: Form, th: &[f64], obs: &[Obs], sc: &Scales) -> f64 {
    let mut g = vec![0.0; form.k()];
    obs.iter()
        .map(|o| o.w * (o.ln_y - form.eval_theta(th, &o.x, sc, &mut g).ln()).powi(2))
        .sum()
}

/// Predicted ln(metric) for a feature vector.
pub fn predict_ln(form: Form, th: &[f64], x: &Feat, sc: &Scales) -> f64 {
    let mut g = vec![0.0; form.k()];
    form.eval_theta(th, x, sc, &mut g).ln()
}

/// A small grid of starting points in θ: the floor E at a few fractions of the smallest value,
/// the rest of the (geometric) mean split over the terms, and a slow and a fast exponent.
/// `thorough = false` keeps two of them (refits that also warm-start from the full fit).
pub fn grid_starts(form: Form, obs: &[Obs], thorough: bool) -> Vec<Vec<f64>> {
    let n = obs.iter().map(|o| o.w).sum::<f64>().max(1e-12);
    let ymin = obs
        .iter()
        .map(|o| o.ln_y)
        .fold(f64::INFINITY, f64::min)
        .exp();
    let ygeo = (obs.iter().map(|o| o.w * o.ln_y).sum::<f64>() / n).exp();
    let fracs: &[f64] = if thorough { &[0.1, 0.5, 0.9] } else { &[0.5] };
    let exps: &[f64] = if thorough { &[0.3, 1.0] } else { &[0.5] };
    let heads: &[f64] = if thorough { &[-0.7, 0.0, 0.7] } else { &[0.0] };
    let mut out = Vec::new();
    for &fe in fracs {
        let e0 = (fe * ymin).max(1e-12);
        let rest = (ygeo - e0).max(0.05 * ygeo);
        match form {
            Form::A => {
                for &a in exps {
                    out.push(vec![e0.ln(), rest.ln(), a]);
                }
            }
            Form::B | Form::C => {
                for &a in exps {
                    for &b in exps {
                        let base = vec![e0.ln(), (rest / 2.0).ln(), a, (rest / 2.0).ln(), b];
                        if form == Form::B {
                            out.push(base);
                        } else {
                            for &lh in heads {
                                let mut v = base.clone();
                                v.extend([(0.05 * ygeo).ln(), lh]);
                                out.push(v);
                            }
                        }
                    }
                }
            }
            Form::G => {
                // Half the excess to the training term at the centre; no depth effect, or the
                // deep-students-need-longer one, and a slow or a fast rate in steps.
                for &a in exps {
                    for (lb, delta) in [(0.0, 0.0), (0.5, 1.5)] {
                        out.push(vec![e0.ln(), (rest / 2.0).ln(), a, 0.0, 0.0, lb, delta]);
                    }
                }
            }
            Form::D | Form::E | Form::F => {
                for &a in exps {
                    let v = match form {
                        Form::D => vec![e0.ln(), rest.ln(), a, 0.0],
                        Form::E => vec![e0.ln(), rest.ln(), a, 0.0, 0.0],
                        // Half the excess to the compute term, at a slow or a fast rate.
                        Form::A | Form::B | Form::C | Form::F | Form::G => vec![
                            e0.ln(),
                            (rest / 2.0).ln(),
                            a,
                            0.0,
                            (rest / 2.0).ln(),
                            a.ln(),
                        ],
                    };
                    out.push(v);
                }
            }
        }
    }
    out
}

/// Fit `form` to `obs` from every start (θ₀ replaced by the pinned floor, if any); the lowest
/// finite RSS wins (None if all fail).
pub fn fit(form: Form, obs: &[Obs], sc: &Scales, starts: &[Vec<f64>], pin: Pin) -> Option<Fitted> {
    let lm = LevenbergMarquardt::new().with_patience(200);
    let free: Vec<usize> = (usize::from(pin.is_some())..form.k()).collect();
    let mut best: Option<Fitted> = None;
    for s in starts {
        if s.len() != form.k() {
            continue;
        }
        let mut th = s.clone();
        if let Some(e) = pin {
            th[0] = pinned_theta0(e);
        }
        if th.iter().any(|v| !v.is_finite()) {
            continue;
        }
        let p = Problem {
            form,
            obs,
            sc: *sc,
            th,
            free: free.clone(),
        };
        let (p, _report) = lm.minimize(p);
        let th = p.th;
        let r = rss(form, &th, obs, sc);
        if r.is_finite()
            && th.iter().all(|v| v.is_finite())
            && best.as_ref().is_none_or(|b| r < b.rss)
        {
            best = Some(Fitted { theta: th, rss: r });
        }
    }
    best
}

/// Fit with the grid plus optional warm starts (the full fit's θ for refits; law (b)'s θ for (c)).
pub fn fit_from(
    form: Form,
    obs: &[Obs],
    sc: &Scales,
    warm: &[Vec<f64>],
    thorough: bool,
    pin: Pin,
) -> Option<Fitted> {
    let mut starts = warm.to_vec();
    starts.extend(grid_starts(form, obs, thorough));
    fit(form, obs, sc, &starts, pin)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Noise-free data from law (a) is recovered to high precision.
    #[test]
    fn recovers_law_a_without_noise() {
        let truth = [0.4, 3.0e3, 0.7];
        let obs: Vec<Obs> = [2e4, 5e4, 1e5, 2e5, 4e5, 8e5]
            .iter()
            .map(|&n| {
                let x = Feat::new(n, 4.0, 64.0, 16.0);
                Obs::single(x, Form::A.eval_raw(&truth, &x).ln(), 0)
            })
            .collect();
        let sc = scales(&obs);
        let f = fit_from(Form::A, &obs, &sc, &[], true, None).unwrap();
        let raw = Form::A.to_raw(&f.theta, &sc);
        assert!(f.rss < 1e-12, "{}", f.rss);
        for (a, b) in raw.iter().zip(truth) {
            assert!((a - b).abs() < 1e-4 * b, "{raw:?}");
        }
    }
}
