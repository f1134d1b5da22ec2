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
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<f64> {
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
}
