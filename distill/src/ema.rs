//! Exponential moving average of the weights, the copy that is sampled from.

use std::collections::HashMap;

use candle_core::{Result, Tensor, Var};

/// EMA of named variables with the warm-up decay `min(target, (1 + n) / (10 + n))`, so early
/// averages are not dominated by the random initialisation.
pub struct Ema {
    pub target_decay: f64,
    pub warmup: bool,
    names: Vec<String>,
    values: Vec<Var>, // updated in place, see optim.rs
}

impl Ema {
    /// Start from a copy of the current weights.
    pub fn new(vars: &[(String, Var)], target_decay: f64, warmup: bool) -> Result<Self> {
        let names = vars.iter().map(|(n, _)| n.clone()).collect();
        let values = vars
            .iter()
            .map(|(_, v)| Var::from_tensor(&v.as_tensor().copy()?))
            .collect::<Result<_>>()?;
        Ok(Self {
            target_decay,
            warmup,
            names,
            values,
        })
    }

    /// Decay used at update number `n` (0-based).
    pub fn decay_at(&self, n: usize) -> f64 {
        if self.warmup {
            self.target_decay.min((1.0 + n as f64) / (10.0 + n as f64))
        } else {
            self.target_decay
        }
    }

    /// `ema = d * ema + (1 - d) * w`; `vars` in the order given to `new`.
    pub fn update(&mut self, vars: &[(String, Var)], n: usize) -> Result<()> {
        let d = self.decay_at(n);
        for (e, (_, v)) in self.values.iter_mut().zip(vars) {
            let (et, vt) = (e.as_tensor(), v.as_tensor());
            let fused = |t: &Tensor| {
                t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && t.is_contiguous()
            };
            if fused(et) && fused(vt) {
                // In place, the same f32 arithmetic as the tensor ops below.
                let op = crate::optim::fused::Ema {
                    d: d as f32,
                    one_minus_d: (1.0 - d) as f32,
                };
                et.inplace_op2(vt, &op)?;
            } else {
                e.set(&((et * d)? + (vt.detach() * (1.0 - d))?)?)?;
            }
        }
        Ok(())
    }

    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.names
            .iter()
            .cloned()
            .zip(self.values.iter().map(|v| v.as_tensor().detach()))
            .collect()
    }

    pub fn load(&mut self, t: &HashMap<String, Tensor>) -> anyhow::Result<()> {
        for (name, slot) in self.names.iter().zip(self.values.iter_mut()) {
            let s = t
                .get(name)
                .ok_or_else(|| anyhow::anyhow!("EMA state: tensor `{name}` is missing"))?;
            if s.dims() != slot.dims() {
                anyhow::bail!(
                    "EMA state: `{name}` has shape {:?}, expected {:?}",
                    s.dims(),
                    slot.dims()
                );
            }
            slot.set(&s.to_device(slot.device())?.to_dtype(slot.dtype())?)?;
        }
        Ok(())
    }
}
