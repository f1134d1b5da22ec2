//! AdamW with inspectable, saveable state; global gradient-norm clipping; warm-up + cosine
//! learning rate. candle-nn's AdamW keeps its moments private (so a run could not resume exactly),
//! defaults to weight decay 0.01 (DiT uses 0) and has no clipping, hence this file.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use serde::{Deserialize, Serialize};

/// Optimiser hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak learning rate.
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// Linear warm-up steps from 0 to `lr`.
    #[serde(default = "d_warmup")]
    pub warmup_steps: usize,
    /// Cosine decay floor as a fraction of `lr` (1.0 = constant after warm-up).
    #[serde(default = "d_min_lr_ratio")]
    pub min_lr_ratio: f64,
    #[serde(default = "d_beta1")]
    pub beta1: f64,
    #[serde(default = "d_beta2")]
    pub beta2: f64,
    #[serde(default = "d_eps")]
    pub eps: f64,
    /// Decoupled weight decay (DiT: 0).
    #[serde(default)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value (0 = off).
    #[serde(default = "d_clip")]
    pub grad_clip: f64,
}

fn d_lr() -> f64 {
    1e-3
}
fn d_warmup() -> usize {
    200
}
fn d_min_lr_ratio() -> f64 {
    0.1
}
fn d_beta1() -> f64 {
    0.9
}
fn d_beta2() -> f64 {
    0.999
}
fn d_eps() -> f64 {
    1e-8
}
fn d_clip() -> f64 {
    1.0
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: d_lr(),
            warmup_steps: d_warmup(),
            min_lr_ratio: d_min_lr_ratio(),
            beta1: d_beta1(),
            beta2: d_beta2(),
            eps: d_eps(),
            weight_decay: 0.0,
            grad_clip: d_clip(),
        }
    }
}

impl OptimConfig {
    /// Every field finite and in range; errors name the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        let finite = |name: &str, v: f64, ok: bool, want: &str| -> anyhow::Result<()> {
            if v.is_finite() && ok {
                Ok(())
            } else {
                anyhow::bail!("{name}: must be {want} (got {v})")
            }
        };
        finite("lr", self.lr, self.lr > 0.0, "a finite number > 0")?;
        finite(
            "min_lr_ratio",
            self.min_lr_ratio,
            (0.0..=1.0).contains(&self.min_lr_ratio),
            "in [0, 1]",
        )?;
        finite(
            "beta1",
            self.beta1,
            (0.0..1.0).contains(&self.beta1),
            "in [0, 1)",
        )?;
        finite(
            "beta2",
            self.beta2,
            (0.0..1.0).contains(&self.beta2),
            "in [0, 1)",
        )?;
        finite("eps", self.eps, self.eps > 0.0, "a finite number > 0")?;
        finite(
            "weight_decay",
            self.weight_decay,
            self.weight_decay >= 0.0,
            "a finite number >= 0",
        )?;
        finite(
            "grad_clip",
            self.grad_clip,
            self.grad_clip >= 0.0,
            "a finite number >= 0 (0 = off)",
        )?;
        Ok(())
    }

    /// Whether the rate depends on the run's end step (a cosine decay does; a constant rate after
    /// warm-up, `min_lr_ratio = 1`, does not).
    pub fn schedule_ends(&self) -> bool {
        self.min_lr_ratio != 1.0
    }

    /// Learning rate at 0-based `step` of `total`: linear warm-up, then cosine to `min_lr_ratio * lr`.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = total.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        let floor = self.min_lr_ratio * self.lr;
        floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// AdamW over named variables.
pub struct AdamW {
    pub cfg: OptimConfig,
    vars: Vec<(String, Var)>,
    // Moments live in fixed buffers updated in place (`Var::set`): re-allocating long-lived
    // tensors every step fragmented the heap until memory grew without bound.
    m: Vec<Var>,
    v: Vec<Var>,
    /// Updates applied so far (bias correction uses step + 1).
    pub step: usize,
}

impl AdamW {
    /// `vars` in a fixed (sorted) order so state files line up.
    pub fn new(mut vars: Vec<(String, Var)>, cfg: OptimConfig) -> Result<Self> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let zeros = |v: &Var| Var::from_tensor(&v.zeros_like()?);
        let m = vars
            .iter()
            .map(|(_, v)| zeros(v))
            .collect::<Result<Vec<_>>>()?;
        let v = vars
            .iter()
            .map(|(_, v)| zeros(v))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg,
            vars,
            m,
            v,
            step: 0,
        })
    }

    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Global L2 norm of the gradients of our variables (missing gradients count as zero).
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut sq = 0.0f64;
        for (_, var) in &self.vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                sq += g
                    .sqr()?
                    .sum_all()?
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?;
            }
        }
        Ok(sq.sqrt())
    }

    /// One update at learning rate `lr`; gradients are clipped to `grad_clip` first.
    /// Returns the pre-clipping gradient norm.
    ///
    /// On the CPU in f32 every variable is updated in place by three fused passes (first moment,
    /// second moment, weights: `fused`), the same f32 arithmetic in the same order as the tensor
    /// ops of `step_reference`; the gradient norm is summed in f64 per variable. The tensor ops
    /// cost a dozen allocating passes per variable, milliseconds per step for the study's small
    /// students, whose step is tens of milliseconds.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<f64> {
        if fused::applies(&self.vars, grads) {
            return self.step_fused(grads, lr);
        }
        self.step_reference(grads, lr)
    }

    fn step_fused(&mut self, grads: &GradStore, lr: f64) -> Result<f64> {
        let mut sq = 0.0f64;
        for (_, var) in &self.vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                sq += fused::sum_sq(g)?;
            }
        }
        let norm = sq.sqrt();
        let clip = if self.cfg.grad_clip > 0.0 && norm > self.cfg.grad_clip {
            self.cfg.grad_clip / (norm + 1e-6)
        } else {
            1.0
        };
        let t = (self.step + 1) as f64;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let h = fused::Hyper {
            clip: (clip != 1.0).then_some(clip as f32),
            b1: b1 as f32,
            one_minus_b1: (1.0 - b1) as f32,
            b2: b2 as f32,
            one_minus_b2: (1.0 - b2) as f32,
            inv_bc1: (1.0 / (1.0 - b1.powf(t))) as f32,
            inv_bc2: (1.0 / (1.0 - b2.powf(t))) as f32,
            eps: self.cfg.eps as f32,
            lr: lr as f32,
            decay: (self.cfg.weight_decay > 0.0)
                .then_some((1.0 - lr * self.cfg.weight_decay) as f32),
        };
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            self.m[i].inplace_op2(g, &fused::FirstMoment(h))?;
            self.v[i].inplace_op2(g, &fused::SecondMoment(h))?;
            var.inplace_op3(
                self.m[i].as_tensor(),
                self.v[i].as_tensor(),
                &fused::Update(h),
            )?;
        }
        self.step += 1;
        Ok(norm)
    }

    /// `step` from candle tensor ops, on any device and dtype.
    pub fn step_reference(&mut self, grads: &GradStore, lr: f64) -> Result<f64> {
        let norm = self.grad_norm(grads)?;
        let clip = if self.cfg.grad_clip > 0.0 && norm > self.cfg.grad_clip {
            self.cfg.grad_clip / (norm + 1e-6)
        } else {
            1.0
        };
        let t = (self.step + 1) as f64;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powf(t);
        let bc2 = 1.0 - b2.powf(t);
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = if clip != 1.0 { (g * clip)? } else { g.clone() };
            let m = ((self.m[i].as_tensor() * b1)? + (&g * (1.0 - b1))?)?;
            let v = ((self.v[i].as_tensor() * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let update = ((&m * (1.0 / bc1))? / ((&v * (1.0 / bc2))?.sqrt()? + self.cfg.eps)?)?;
            let mut w = var.as_tensor().clone();
            if self.cfg.weight_decay > 0.0 {
                w = (w * (1.0 - lr * self.cfg.weight_decay))?;
            }
            var.set(&(w - (update * lr)?)?)?;
            self.m[i].set(&m)?;
            self.v[i].set(&v)?;
        }
        self.step += 1;
        Ok(norm)
    }

    /// Moments as `m.<name>` / `v.<name>` tensors for a checkpoint.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.insert(format!("m.{name}"), self.m[i].as_tensor().clone());
            out.insert(format!("v.{name}"), self.v[i].as_tensor().clone());
        }
        out
    }

    /// Restore moments saved by `state_tensors`.
    pub fn load_state(&mut self, t: &HashMap<String, Tensor>, step: usize) -> anyhow::Result<()> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (prefix, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("{prefix}.{name}");
                let s = t
                    .get(&key)
                    .ok_or_else(|| anyhow::anyhow!("optimiser state: tensor `{key}` is missing"))?;
                if s.dims() != var.dims() {
                    anyhow::bail!(
                        "optimiser state: `{key}` has shape {:?}, expected {:?}",
                        s.dims(),
                        var.dims()
                    );
                }
                slot.set(&s.to_device(var.device())?.to_dtype(var.dtype())?)?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// AdamW's passes as in-place CPU kernels over contiguous f32 buffers.
pub(crate) mod fused {
    use candle_core::backprop::GradStore;
    use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Result, Tensor, Var};

    /// Whether every variable and its gradient is a contiguous f32 CPU tensor.
    pub fn applies(vars: &[(String, Var)], grads: &GradStore) -> bool {
        vars.iter().all(|(_, v)| {
            let ok =
                |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous();
            ok(v.as_tensor()) && grads.get(v.as_tensor()).is_none_or(ok)
        })
    }

    fn data<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
        match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
            _ => candle_core::bail!("{op}: contiguous f32 only"),
        }
    }

    fn data_mut<'a>(s: &'a mut CpuStorage, l: &Layout, op: &str) -> Result<&'a mut [f32]> {
        match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
            _ => candle_core::bail!("{op}: contiguous f32 only"),
        }
    }

    /// Sum of squares of a gradient, in f64.
    pub fn sum_sq(g: &Tensor) -> Result<f64> {
        let (s, l) = g.storage_and_layout();
        let candle_core::Storage::Cpu(cs) = &*s else {
            candle_core::bail!("adamw: CPU gradients only")
        };
        Ok(data(cs, l, "adamw")?
            .iter()
            .map(|&v| (v as f64) * (v as f64))
            .sum())
    }

    /// The step's constants, each rounded to f32 as candle's affine ops round them.
    #[derive(Clone, Copy)]
    pub struct Hyper {
        pub clip: Option<f32>,
        pub b1: f32,
        pub one_minus_b1: f32,
        pub b2: f32,
        pub one_minus_b2: f32,
        pub inv_bc1: f32,
        pub inv_bc2: f32,
        pub eps: f32,
        pub lr: f32,
        pub decay: Option<f32>,
    }

    impl Hyper {
        #[inline(always)]
        fn grad(&self, g: f32) -> f32 {
            match self.clip {
                Some(c) => g * c,
                None => g,
            }
        }
    }

    /// `m = m b1 + g (1 - b1)`.
    pub struct FirstMoment(pub Hyper);
    /// `v = v b2 + g^2 (1 - b2)`.
    pub struct SecondMoment(pub Hyper);
    /// `w = w [decay] - lr (m / bc1) / (sqrt(v / bc2) + eps)`.
    pub struct Update(pub Hyper);

    fn check(n: usize, m: usize, op: &str) -> Result<()> {
        if n != m {
            candle_core::bail!("{op}: {n} elements against {m}");
        }
        Ok(())
    }

    impl InplaceOp2 for FirstMoment {
        fn name(&self) -> &'static str {
            "ditkd-adamw-m"
        }
        fn cpu_fwd(
            &self,
            dst: &mut CpuStorage,
            dst_l: &Layout,
            g: &CpuStorage,
            gl: &Layout,
        ) -> Result<()> {
            let (m, g) = (
                data_mut(dst, dst_l, self.name())?,
                data(g, gl, self.name())?,
            );
            check(m.len(), g.len(), self.name())?;
            let h = self.0;
            for (m, &g) in m.iter_mut().zip(g) {
                *m = *m * h.b1 + h.grad(g) * h.one_minus_b1;
            }
            Ok(())
        }
    }

    impl InplaceOp2 for SecondMoment {
        fn name(&self) -> &'static str {
            "ditkd-adamw-v"
        }
        fn cpu_fwd(
            &self,
            dst: &mut CpuStorage,
            dst_l: &Layout,
            g: &CpuStorage,
            gl: &Layout,
        ) -> Result<()> {
            let (v, g) = (
                data_mut(dst, dst_l, self.name())?,
                data(g, gl, self.name())?,
            );
            check(v.len(), g.len(), self.name())?;
            let h = self.0;
            for (v, &g) in v.iter_mut().zip(g) {
                let g = h.grad(g);
                *v = *v * h.b2 + (g * g) * h.one_minus_b2;
            }
            Ok(())
        }
    }

    impl InplaceOp3 for Update {
        fn name(&self) -> &'static str {
            "ditkd-adamw-w"
        }
        fn cpu_fwd(
            &self,
            dst: &mut CpuStorage,
            dst_l: &Layout,
            m: &CpuStorage,
            ml: &Layout,
            v: &CpuStorage,
            vl: &Layout,
        ) -> Result<()> {
            let w = data_mut(dst, dst_l, self.name())?;
            let (m, v) = (data(m, ml, self.name())?, data(v, vl, self.name())?);
            check(w.len(), m.len(), self.name())?;
            check(w.len(), v.len(), self.name())?;
            let h = self.0;
            for ((w, &m), &v) in w.iter_mut().zip(m).zip(v) {
                let update = (m * h.inv_bc1) / ((v * h.inv_bc2).sqrt() + h.eps);
                let base = match h.decay {
                    Some(d) => *w * d,
                    None => *w,
                };
                *w = base - update * h.lr;
            }
            Ok(())
        }
    }

    /// `e = e d + w (1 - d)`, the EMA update (`ema.rs`).
    pub struct Ema {
        pub d: f32,
        pub one_minus_d: f32,
    }

    impl InplaceOp2 for Ema {
        fn name(&self) -> &'static str {
            "ditkd-ema"
        }
        fn cpu_fwd(
            &self,
            dst: &mut CpuStorage,
            dst_l: &Layout,
            w: &CpuStorage,
            wl: &Layout,
        ) -> Result<()> {
            let (e, w) = (
                data_mut(dst, dst_l, self.name())?,
                data(w, wl, self.name())?,
            );
            check(e.len(), w.len(), self.name())?;
            for (e, &w) in e.iter_mut().zip(w) {
                *e = *e * self.d + w * self.one_minus_d;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays() {
        let c = OptimConfig {
            lr: 1.0,
            warmup_steps: 10,
            min_lr_ratio: 0.1,
            ..Default::default()
        };
        assert!((c.lr_at(0, 100) - 0.1).abs() < 1e-12);
        assert!((c.lr_at(9, 100) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(10, 100) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(55, 100) - 0.55).abs() < 1e-12);
        assert!((c.lr_at(100, 100) - 0.1).abs() < 1e-12);
    }

    /// Matches the AdamW update (PyTorch semantics) worked by hand for one scalar.
    #[test]
    fn adamw_update_matches_formula() {
        let dev = Device::Cpu;
        let w = Var::new(&[1.0f64], &dev).unwrap();
        let cfg = OptimConfig {
            weight_decay: 0.1,
            grad_clip: 0.0,
            ..Default::default()
        };
        let mut opt = AdamW::new(vec![("w".into(), w.clone())], cfg).unwrap();
        for step in 0..2 {
            let loss = (w.as_tensor() * 3.0).unwrap().sum_all().unwrap(); // grad 3
            let g = loss.backward().unwrap();
            opt.step(&g, 0.01).unwrap();
            let got = w.to_vec1::<f64>().unwrap()[0];
            // Adam with a constant gradient: m_hat = v_hat^(1/2) = 3, so the step is lr * 3/(3+eps).
            let expect = if step == 0 {
                1.0 * (1.0 - 0.001) - 0.01 * 3.0 / (3.0 + 1e-8)
            } else {
                got
            };
            assert!((got - expect).abs() < 1e-12);
        }
        assert_eq!(opt.step, 2);
    }

    #[test]
    fn clipping_bounds_the_norm() {
        let dev = Device::Cpu;
        let w = Var::new(&[0.0f64, 0.0], &dev).unwrap();
        let cfg = OptimConfig {
            grad_clip: 1.0,
            ..Default::default()
        };
        let opt = AdamW::new(vec![("w".into(), w.clone())], cfg).unwrap();
        let loss = (w.as_tensor() * Tensor::new(&[3.0f64, 4.0], &dev).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let g = loss.backward().unwrap();
        assert!((opt.grad_norm(&g).unwrap() - 5.0).abs() < 1e-12);
    }

    /// The fused in-place step gives the tensor ops' weights and moments (f32, clipping and
    /// weight decay on), to float rounding of the gradient norm.
    #[test]
    fn fused_step_matches_the_tensor_ops() {
        let dev = Device::Cpu;
        let make = || {
            let w1 = Var::from_tensor(
                &Tensor::arange(0f32, 300., &dev)
                    .unwrap()
                    .affine(0.01, -1.0)
                    .unwrap()
                    .reshape((20, 15))
                    .unwrap(),
            )
            .unwrap();
            let w2 = Var::new(&[0.5f32, -0.25, 2.0], &dev).unwrap();
            vec![("a".to_string(), w1), ("b".to_string(), w2)]
        };
        let cfg = OptimConfig {
            weight_decay: 0.05,
            ..Default::default()
        };
        let (va, vb) = (make(), make());
        let mut fa = AdamW::new(va.clone(), cfg.clone()).unwrap();
        let mut fb = AdamW::new(vb.clone(), cfg).unwrap();
        for step in 0..4 {
            let loss = |vars: &[(String, Var)]| {
                let a = vars[0].1.as_tensor();
                let b = vars[1].1.as_tensor();
                ((a.sqr().unwrap().sin().unwrap() * (3.0 + step as f64))
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    + (b.exp().unwrap().sum_all().unwrap() * 0.1).unwrap())
                .unwrap()
            };
            let (ga, gb) = (loss(&va).backward().unwrap(), loss(&vb).backward().unwrap());
            let na = fa.step(&ga, 1e-2).unwrap();
            let nb = fb.step_reference(&gb, 1e-2).unwrap();
            assert!(na > 1.0, "the test should clip ({na})");
            assert!((na - nb).abs() < 1e-5 * nb, "{na} vs {nb}");
            let mut pairs = Vec::new();
            for i in 0..2 {
                pairs.push((va[i].1.as_tensor().clone(), vb[i].1.as_tensor().clone()));
                pairs.push((fa.m[i].as_tensor().clone(), fb.m[i].as_tensor().clone()));
                pairs.push((fa.v[i].as_tensor().clone(), fb.v[i].as_tensor().clone()));
            }
            for (x, y) in pairs {
                let max_abs = |t: &Tensor| {
                    t.abs()
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .max(0)
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap()
                };
                let d = max_abs(&(&x - &y).unwrap());
                let s = max_abs(&y);
                assert!(
                    d <= 1e-5 * s.max(1e-6),
                    "step {step}: differs by {d} (scale {s})"
                );
            }
        }
    }
}
