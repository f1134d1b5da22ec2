//! A named parameter store whose initial values are drawn on the host from a seeded RNG.
//!
//! candle's CPU device cannot be seeded, so `VarBuilder`'s device-side initialisers would make every
//! run different. Here each variable is drawn from a ChaCha stream in a fixed creation order, then
//! registered in a `VarMap` under the reference implementation's name (for saving, loading and the
//! optimiser).

use std::collections::HashMap;
use std::sync::MutexGuard;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// How a variable starts.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    Zeros,
    /// N(0, std^2).
    Normal(f64),
    /// Xavier/Glorot uniform with the given fan-in and fan-out (`nn.init.xavier_uniform_`).
    XavierUniform {
        fan_in: usize,
        fan_out: usize,
    },
}

pub struct Params {
    pub varmap: VarMap,
    rng: ChaCha8Rng,
    pub device: Device,
    pub dtype: DType,
}

impl Params {
    pub fn new(seed: u64, dtype: DType, device: &Device) -> Self {
        Self {
            varmap: VarMap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            device: device.clone(),
            dtype,
        }
    }

    /// The variable `name`, created with `init` on first request.
    pub fn get(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        if let Some(v) = lock_vars(&self.varmap).get(name) {
            if v.dims() != shape {
                candle_core::bail!(
                    "parameter `{name}`: shape {:?} requested, {:?} stored",
                    shape,
                    v.dims()
                );
            }
            return Ok(v.as_tensor().clone());
        }
        let n: usize = shape.iter().product();
        let values: Vec<f64> = match init {
            Init::Zeros => vec![0.0; n],
            Init::Normal(std) => {
                let d = Normal::new(0.0, std).map_err(|e| {
                    candle_core::Error::Msg(format!("parameter `{name}`: N(0, {std}^2): {e}"))
                })?;
                (0..n).map(|_| d.sample(&mut self.rng)).collect()
            }
            Init::XavierUniform { fan_in, fan_out } => {
                let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
                (0..n).map(|_| self.rng.random_range(-a..a)).collect()
            }
        };
        let t = Tensor::from_vec(values, shape, &self.device)?.to_dtype(self.dtype)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        lock_vars(&self.varmap).insert(name.to_string(), var);
        Ok(out)
    }
}

/// The name -> variable map of `varmap`. A poisoned lock (a panic elsewhere while it was held)
/// still guards a consistent map, since every access here inserts or reads whole entries, so the
/// guard is taken over rather than the panic spread.
pub(crate) fn lock_vars(varmap: &VarMap) -> MutexGuard<'_, HashMap<String, Var>> {
    varmap
        .data()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sum of the element counts of every variable.
pub fn count_vars(varmap: &VarMap) -> usize {
    varmap.all_vars().iter().map(|v| v.elem_count()).sum()
}
