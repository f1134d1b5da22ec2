//! The candidate laws: their formulas, coefficient names, and the two parameterisations each has.
//!
//! * The reported ("raw") coefficients are in the formula's own units (N in parameters, d in
//!   blocks, w in channels), so a notebook can evaluate the formula without knowing anything else.
//! * The fitting parameters θ are unconstrained: positive coefficients are `exp` of a free number
//!   (so f > 0 everywhere and ln f is defined), and the shape variables are centred on a scale
//!   (their geometric mean) so the problem is well conditioned. The conversion between the two is
//!   exact, which lets every refit (CV folds, bootstrap draws) warm-start from the full fit.
//! * Laws (d)–(f) have one exponential term in ln N and ln d; its constant `c` is reported in
//!   ln units (ln(y − E) = c − a ln N + b ln d), so `a` and `b` are elasticities.
//! * The head-dim sweet spot h0 of law (c) is bounded (ln h0 = mid + half·tanh(t)) to the fitted
//!   head-dim range widened 4× each way: a "sweet spot" far outside the data is no sweet spot but
//!   a disguised linear term in ln head_dim, which the unbounded fit happily finds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Exponent arguments are clamped here so a wild LM step gives a large but finite residual
/// instead of an infinity that would stall the optimiser.
const EXP_CLAMP: f64 = 300.0;

fn cexp(x: f64) -> f64 {
    x.clamp(-EXP_CLAMP, EXP_CLAMP).exp()
}

/// One of the candidate laws. `Form::VARIANTS` (derived) is the list fitted, so a new variant is
/// fitted without being registered anywhere, and every `match` on it names what it must define.
///
/// Every law starts with the floor `E` (coefficient 0). It is fixed at the measured real-data
/// floor when the sweep has one (`reference.json`); laws (a)–(c) otherwise fit it, and drop it
/// (fix it at 0) when the fit puts it at its bound; laws (d)–(f) never fit it (see `floor_free`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::VariantArray)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// y = E + A·N^(−α): parameters only.
    A,
    /// y = E + A·d^(−α) + B·w^(−β): depth and width with diminishing returns.
    B,
    /// (b) + C·(ln(head_dim/h0))²: a head-dimension sweet spot.
    C,
    /// ln(y − E) = c − a·ln N + b·ln d: log-linear in the parameter count and the depth (at fixed
    /// depth the width is the parameter count in disguise, so it gets no term of its own).
    D,
    /// (d) + g·ln N·ln d: the depth's effect changes with the budget.
    E,
    /// y = E + exp(c − a·ln N + b·ln d) + B·C^(−β), C the training FLOPs: (d) at convergence plus
    /// a compute term, fitted on the learning-curve points (`curves.parquet`) of every run.
    F,
    /// y = E + exp(c − a·ln N + b·ln d)·(1 + exp(k + δ·ln d − β·ln S)), S the training steps: the
    /// converged gap of (d) times a training excess that shrinks as S^(−β) and grows with depth as
    /// d^δ (deeper students sit longer on a plateau), fitted on the learning-curve points.
    G,
}

/// The natural logs of a shape's variables (what every law is a function of), and of the training
/// compute the metric was measured at (`ln_c`, NaN when unknown, +∞ at convergence; only the
/// compute law reads it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Feat {
    pub ln_n: f64,
    pub ln_d: f64,
    pub ln_w: f64,
    pub ln_h: f64,
    pub ln_c: f64,
    /// ln of the training steps (NaN when unknown, +∞ at convergence; only law (g) reads it).
    pub ln_s: f64,
}

impl Feat {
    pub fn new(params: f64, depth: f64, width: f64, head_dim: f64) -> Self {
        Self {
            ln_n: params.ln(),
            ln_d: depth.ln(),
            ln_w: width.ln(),
            ln_h: head_dim.ln(),
            ln_c: f64::NAN,
            ln_s: f64::NAN,
        }
    }

    /// The same shape after `steps` of training that cost `train_flops` (both +∞: converged).
    pub fn at(self, steps: f64, train_flops: f64) -> Self {
        Self {
            ln_c: train_flops.ln(),
            ln_s: steps.ln(),
            ..self
        }
    }

    /// Without the training position (what the laws without a compute term see).
    pub fn static_only(self) -> Self {
        Self {
            ln_c: f64::NAN,
            ln_s: f64::NAN,
            ..self
        }
    }
}

/// Fitting constants: the centres (logs of the geometric means of the fitted data; a shift only,
/// no change in the model, but LM then starts near unit-scale coefficients) and the bounds of ln h0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scales {
    pub c: Feat,
    pub ln_h0: [f64; 2],
}

impl Scales {
    fn h0_mid_half(&self) -> (f64, f64) {
        (
            (self.ln_h0[0] + self.ln_h0[1]) / 2.0,
            ((self.ln_h0[1] - self.ln_h0[0]) / 2.0).max(1e-9),
        )
    }

    /// ln h0 from its free parameter, and d(ln h0)/dt.
    fn ln_h0(&self, t: f64) -> (f64, f64) {
        let (mid, half) = self.h0_mid_half();
        let th = t.tanh();
        (mid + half * th, half * (1.0 - th * th))
    }

    /// The free parameter of ln h0 (just inside the bounds if h0 lies outside them).
    fn t_of(&self, ln_h0: f64) -> f64 {
        let (mid, half) = self.h0_mid_half();
        ((ln_h0 - mid) / half).clamp(-0.999_999, 0.999_999).atanh()
    }
}

impl std::fmt::Display for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A law by its name (`ditkd fit --law c`): "unknown law `z` (a, b, c, d, e, f)" otherwise.
impl std::str::FromStr for Form {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        distill::names::parse(Form::ALL, s, "law")
    }
}

impl Form {
    /// Every candidate law, in the order fitted.
    pub const ALL: &'static [Form] = <Form as strum::VariantArray>::VARIANTS;

    /// The name in law.json and the report: "a", "b", … (as serde writes it).
    pub fn name(self) -> &'static str {
        match self {
            Form::A => "a",
            Form::B => "b",
            Form::C => "c",
            Form::D => "d",
            Form::E => "e",
            Form::F => "f",
            Form::G => "g",
        }
    }

    pub fn formula(self) -> &'static str {
        match self {
            Form::A => "E + A*N^(-alpha)",
            Form::B => "E + A*d^(-alpha) + B*w^(-beta)",
            Form::C => "E + A*d^(-alpha) + B*w^(-beta) + C*ln(head_dim/h0)^2",
            Form::D => "E + exp(c - a*ln(N) + b*ln(d))",
            Form::E => "E + exp(c - a*ln(N) + b*ln(d) + g*ln(N)*ln(d))",
            Form::F => "E + exp(c - a*ln(N) + b*ln(d)) + B*C^(-beta)",
            Form::G => "E + exp(c - a*ln(N) + b*ln(d))*(1 + exp(k + delta*ln(d) - beta*ln(S)))",
        }
    }

    /// Coefficient names, in the order of `raw` vectors.
    pub fn coef_names(self) -> &'static [&'static str] {
        match self {
            Form::A => &["E", "A", "alpha"],
            Form::B => &["E", "A", "alpha", "B", "beta"],
            Form::C => &["E", "A", "alpha", "B", "beta", "C", "h0"],
            Form::D => &["E", "c", "a", "b"],
            Form::E => &["E", "c", "a", "b", "g"],
            Form::F => &["E", "c", "a", "b", "B", "beta"],
            Form::G => &["E", "c", "a", "b", "k", "beta", "delta"],
        }
    }

    /// Coefficients, the floor `E` included (see `LawFit::k` for the ones fitted).
    pub fn k(self) -> usize {
        self.coef_names().len()
    }

    /// Does the law distinguish depth from width / the head count?
    pub fn uses_shape(self) -> bool {
        match self {
            Form::A => false,
            Form::B | Form::C | Form::D | Form::E | Form::F | Form::G => true,
        }
    }
    pub fn uses_heads(self) -> bool {
        match self {
            Form::C => true,
            Form::A | Form::B | Form::D | Form::E | Form::F | Form::G => false,
        }
    }

    /// Is `name` an additive coefficient of ln(y − E) (the constant and the elasticities of laws
    /// (d)–(f))? Such a coefficient is identified whenever the design has full rank: an interval
    /// spanning 0 says its effect is not significant, not that the data cannot pin it down, and
    /// its uncertainty reaches every prediction through the bootstrap draws.
    pub fn linear(self, name: &str) -> bool {
        match self {
            Form::A | Form::B | Form::C => false,
            Form::D | Form::E | Form::F => matches!(name, "c" | "a" | "b" | "g"),
            Form::G => matches!(name, "c" | "a" | "b" | "k" | "delta"),
        }
    }

    /// Is the law a function of the training compute (fitted on learning-curve points)?
    pub fn uses_compute(self) -> bool {
        match self {
            Form::F | Form::G => true,
            Form::A | Form::B | Form::C | Form::D | Form::E => false,
        }
    }

    /// May the floor `E` be fitted when no measured floor exists? Laws (d)–(f) are log-linear
    /// in their shape terms: a free floor would make them as unidentified as the study showed
    /// the floor of (b) to be, so they fix it at 0 instead.
    pub fn floor_free(self) -> bool {
        match self {
            Form::A | Form::B | Form::C => true,
            Form::D | Form::E | Form::F | Form::G => false,
        }
    }

    /// f(x; θ) and ∂f/∂θ, with θ the free parameters and x centred by `sc`.
    pub fn eval_theta(self, th: &[f64], x: &Feat, sc: &Scales, grad: &mut [f64]) -> f64 {
        let e = cexp(th[0]);
        grad[0] = e;
        let (xn, xd) = (x.ln_n - sc.c.ln_n, x.ln_d - sc.c.ln_d);
        match self {
            Form::A => {
                let t = cexp(th[1] - th[2] * xn);
                grad[1] = t;
                grad[2] = -t * xn;
                e + t
            }
            Form::B | Form::C => {
                let xw = x.ln_w - sc.c.ln_w;
                let t1 = cexp(th[1] - th[2] * xd);
                let t2 = cexp(th[3] - th[4] * xw);
                grad[1] = t1;
                grad[2] = -t1 * xd;
                grad[3] = t2;
                grad[4] = -t2 * xw;
                let mut f = e + t1 + t2;
                if self == Form::C {
                    let c = cexp(th[5]);
                    let (lh0, dlh0) = sc.ln_h0(th[6]);
                    let z = x.ln_h - lh0;
                    grad[5] = c * z * z;
                    grad[6] = -2.0 * c * z * dlh0;
                    f += c * z * z;
                }
                f
            }
            Form::D | Form::F => {
                let t = cexp(th[1] - th[2] * xn + th[3] * xd);
                grad[1] = t;
                grad[2] = -t * xn;
                grad[3] = t * xd;
                let mut f = e + t;
                if self == Form::F {
                    let xc = x.ln_c - sc.c.ln_c;
                    let beta = cexp(th[5]);
                    // At convergence (ln C = +∞) the compute term and its gradient vanish.
                    let t2 = if xc == f64::INFINITY {
                        0.0
                    } else {
                        cexp(th[4] - beta * xc)
                    };
                    grad[4] = t2;
                    grad[5] = if t2 == 0.0 { 0.0 } else { -t2 * xc * beta };
                    f += t2;
                }
                f
            }
            Form::G => {
                let t = cexp(th[1] - th[2] * xn + th[3] * xd);
                let xs = x.ln_s - sc.c.ln_s;
                let beta = cexp(th[5]);
                // At convergence (ln S = +∞) the training excess and its gradient vanish.
                let u = if xs == f64::INFINITY {
                    0.0
                } else {
                    cexp(th[4] + th[6] * xd - beta * xs)
                };
                let m = 1.0 + u;
                grad[1] = t * m;
                grad[2] = -t * m * xn;
                grad[3] = t * m * xd;
                grad[4] = t * u;
                grad[5] = if u == 0.0 { 0.0 } else { -t * u * xs * beta };
                grad[6] = t * u * xd;
                e + t * m
            }
            Form::E => {
                let t = cexp(th[1] - th[2] * xn + th[3] * xd + th[4] * xn * xd);
                grad[1] = t;
                grad[2] = -t * xn;
                grad[3] = t * xd;
                grad[4] = t * xn * xd;
                e + t
            }
        }
    }

    /// θ -> coefficients in the formula's units (see the module doc). A floor at the clamp
    /// (ln E ≤ −300, how a floor fixed at 0 is held) is reported as exactly 0.
    pub fn to_raw(self, th: &[f64], sc: &Scales) -> Vec<f64> {
        let mut r = vec![if th[0] <= -EXP_CLAMP {
            0.0
        } else {
            th[0].exp()
        }];
        let (cn, cd) = (sc.c.ln_n, sc.c.ln_d);
        match self {
            Form::A => r.extend([(th[1] + th[2] * cn).exp(), th[2]]),
            Form::B | Form::C => {
                r.extend([
                    (th[1] + th[2] * cd).exp(),
                    th[2],
                    (th[3] + th[4] * sc.c.ln_w).exp(),
                    th[4],
                ]);
                if self == Form::C {
                    r.extend([th[5].exp(), sc.ln_h0(th[6]).0.exp()]);
                }
            }
            Form::D | Form::F => {
                r.extend([th[1] + th[2] * cn - th[3] * cd, th[2], th[3]]);
                if self == Form::F {
                    let beta = th[5].exp();
                    r.extend([(th[4] + beta * sc.c.ln_c).exp(), beta]);
                }
            }
            Form::G => {
                let (beta, delta) = (th[5].exp(), th[6]);
                r.extend([
                    th[1] + th[2] * cn - th[3] * cd,
                    th[2],
                    th[3],
                    th[4] - delta * cd + beta * sc.c.ln_s,
                    beta,
                    delta,
                ]);
            }
            Form::E => {
                let (a, b, g) = (th[2], th[3], th[4]);
                r.extend([
                    th[1] + a * cn - b * cd + g * cn * cd,
                    a + g * cd,
                    b - g * cn,
                    g,
                ]);
            }
        }
        r
    }

    /// The inverse of `to_raw` (raw positive coefficients must be > 0, a floor of 0 maps to the
    /// clamp; h0 is pulled inside its bounds).
    pub fn to_theta(self, raw: &[f64], sc: &Scales) -> Vec<f64> {
        let mut t = vec![raw[0].ln().max(-EXP_CLAMP)];
        let (cn, cd) = (sc.c.ln_n, sc.c.ln_d);
        match self {
            Form::A => t.extend([raw[1].ln() - raw[2] * cn, raw[2]]),
            Form::B | Form::C => {
                t.extend([
                    raw[1].ln() - raw[2] * cd,
                    raw[2],
                    raw[3].ln() - raw[4] * sc.c.ln_w,
                    raw[4],
                ]);
                if self == Form::C {
                    t.extend([raw[5].ln(), sc.t_of(raw[6].ln())]);
                }
            }
            Form::D | Form::F => {
                t.extend([raw[1] - raw[2] * cn + raw[3] * cd, raw[2], raw[3]]);
                if self == Form::F {
                    t.extend([raw[4].ln() - raw[5] * sc.c.ln_c, raw[5].ln()]);
                }
            }
            Form::G => {
                let (beta, delta) = (raw[5], raw[6]);
                t.extend([
                    raw[1] - raw[2] * cn + raw[3] * cd,
                    raw[2],
                    raw[3],
                    raw[4] + delta * cd - beta * sc.c.ln_s,
                    beta.ln(),
                    delta,
                ]);
            }
            Form::E => {
                let g = raw[4];
                let (a, b) = (raw[2] - g * cd, raw[3] + g * cn);
                t.extend([raw[1] - a * cn + b * cd - g * cn * cd, a, b, g]);
            }
        }
        t
    }

    /// The law's value from raw coefficients (computed through logs: A·N^(−α) = exp(ln A − α ln N)).
    pub fn eval_raw(self, raw: &[f64], x: &Feat) -> f64 {
        let pow = |c: f64, a: f64, lx: f64| (c.ln() - a * lx).exp();
        match self {
            Form::A => raw[0] + pow(raw[1], raw[2], x.ln_n),
            Form::B | Form::C => {
                let mut f = raw[0] + pow(raw[1], raw[2], x.ln_d) + pow(raw[3], raw[4], x.ln_w);
                if self == Form::C {
                    let z = x.ln_h - raw[6].ln();
                    f += raw[5] * z * z;
                }
                f
            }
            Form::D | Form::F => {
                let mut f = raw[0] + (raw[1] - raw[2] * x.ln_n + raw[3] * x.ln_d).exp();
                if self == Form::F {
                    f += if x.ln_c == f64::INFINITY {
                        0.0
                    } else {
                        pow(raw[4], raw[5], x.ln_c)
                    };
                }
                f
            }
            Form::E => {
                raw[0]
                    + (raw[1] - raw[2] * x.ln_n + raw[3] * x.ln_d + raw[4] * x.ln_n * x.ln_d).exp()
            }
            Form::G => {
                let excess = if x.ln_s == f64::INFINITY {
                    0.0
                } else {
                    (raw[4] + raw[6] * x.ln_d - raw[5] * x.ln_s).exp()
                };
                raw[0] + (raw[1] - raw[2] * x.ln_n + raw[3] * x.ln_d).exp() * (1.0 + excess)
            }
        }
    }

    /// Raw vector -> named map (the JSON form).
    pub fn to_map(self, raw: &[f64]) -> BTreeMap<String, f64> {
        self.coef_names()
            .iter()
            .zip(raw)
            .map(|(n, v)| (n.to_string(), *v))
            .collect()
    }

    /// Named map -> raw vector; NaN for a missing name (the prediction is then NaN, not a panic).
    pub fn from_map(self, m: &BTreeMap<String, f64>) -> Vec<f64> {
        self.coef_names()
            .iter()
            .map(|n| m.get(*n).copied().unwrap_or(f64::NAN))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc() -> Scales {
        Scales {
            c: Feat::new(3e5, 4.0, 96.0, 24.0).at(2000.0, 1e12),
            ln_h0: [2.0f64.ln(), 256.0f64.ln()],
        }
    }

    #[test]
    fn theta_and_raw_agree() {
        let x = Feat::new(2.1e5, 6.0, 64.0, 16.0).at(700.0, 3e11);
        for &form in Form::ALL {
            let th: Vec<f64> = (0..form.k()).map(|i| 0.3 - 0.17 * i as f64).collect();
            let mut g = vec![0.0; form.k()];
            let f = form.eval_theta(&th, &x, &sc(), &mut g);
            let raw = form.to_raw(&th, &sc());
            assert!(
                (form.eval_raw(&raw, &x) - f).abs() < 1e-12 * f.abs().max(1.0),
                "{form:?}"
            );
            let back = form.to_theta(&raw, &sc());
            for (a, b) in th.iter().zip(&back) {
                assert!((a - b).abs() < 1e-9, "{form:?}: {th:?} vs {back:?}");
            }
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let x = Feat::new(4.4e5, 3.0, 128.0, 32.0).at(4000.0, 5e12);
        for &form in Form::ALL {
            let th: Vec<f64> = (0..form.k()).map(|i| -0.2 + 0.11 * i as f64).collect();
            let mut g = vec![0.0; form.k()];
            form.eval_theta(&th, &x, &sc(), &mut g);
            for j in 0..form.k() {
                let (mut p, mut m) = (th.clone(), th.clone());
                p[j] += 1e-6;
                m[j] -= 1e-6;
                let mut tmp = vec![0.0; form.k()];
                let fd = (form.eval_theta(&p, &x, &sc(), &mut tmp)
                    - form.eval_theta(&m, &x, &sc(), &mut tmp))
                    / 2e-6;
                assert!(
                    (fd - g[j]).abs() < 1e-6 * fd.abs().max(1.0),
                    "{form:?} θ{j}: {fd} vs {}",
                    g[j]
                );
            }
        }
    }
}
