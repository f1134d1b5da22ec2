//! Affine-free LayerNorm (eps 1e-6) over the last axis, as the DiT's `norm1`, `norm2` and the
//! final layer's norm (`elementwise_affine=False`); its statistics and row kernels also serve
//! `ln_modulate` and the blocks' hand-written backward.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};

use super::float::{cast, sum8};
use super::{fused_cpu, map_rows, map_rows2, row_len, slice, Float};

const LN_EPS: f64 = 1e-6;

/// Mean and 1 / sqrt(var + eps) of a row (affine-free LayerNorm's statistics).
#[inline(always)]
pub(crate) fn ln_stats<T: Float>(x: &[T]) -> (T, T) {
    let n = cast::<T>(x.len() as f64);
    let mean = sum8(x.len(), |i| x[i]) / n;
    let var = sum8(x.len(), |i| (x[i] - mean) * (x[i] - mean)) / n;
    (mean, T::one() / (var + cast(LN_EPS)).sqrt())
}

pub(crate) fn layer_norm_row<T: Float>(x: &[T], o: &mut [T]) {
    let (mean, inv) = ln_stats(x);
    for (o, &x) in o.iter_mut().zip(x) {
        *o = (x - mean) * inv;
    }
}

/// With y = (x - mu) / sigma: dx = (dy - mean(dy) - y * mean(dy * y)) / sigma.
fn layer_norm_grad_row<T: Float>(x: &[T], g: &[T], o: &mut [T]) {
    let n = cast::<T>(x.len() as f64);
    let (mean, inv) = ln_stats(x);
    let mg = sum8(x.len(), |i| g[i]) / n;
    let mgy = sum8(x.len(), |i| g[i] * (x[i] - mean) * inv) / n;
    for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
        *o = (g - mg - (x - mean) * inv * mgy) * inv;
    }
}

pub(crate) struct LayerNorm;
/// `(x, dy) -> dx` of `LayerNorm`.
pub(crate) struct LayerNormGrad;

impl CustomOp1 for LayerNorm {
    fn name(&self) -> &'static str {
        "ditkd-layer-norm"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let n = row_len(l, self.name())?;
        let out = match s {
            CpuStorage::F32(v) => {
                CpuStorage::F32(map_rows(n, slice(v, l, self.name())?, layer_norm_row))
            }
            CpuStorage::F64(v) => {
                CpuStorage::F64(map_rows(n, slice(v, l, self.name())?, layer_norm_row))
            }
            _ => candle_core::bail!("{}: f32 or f64 only", self.name()),
        };
        Ok((out, l.shape().clone()))
    }
    /// The gradient needs the input (its statistics are recomputed, not kept).
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            arg.apply_op2_no_bwd(&grad.contiguous()?, &LayerNormGrad)?,
        ))
    }
}

impl CustomOp2 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "ditkd-layer-norm-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let n = row_len(l1, self.name())?;
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => CpuStorage::F32(map_rows2(
                n,
                slice(x, l1, self.name())?,
                slice(g, l2, self.name())?,
                layer_norm_grad_row,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(g)) => CpuStorage::F64(map_rows2(
                n,
                slice(x, l1, self.name())?,
                slice(g, l2, self.name())?,
                layer_norm_grad_row,
            )),
            _ => candle_core::bail!("{}: f32 or f64 only", self.name()),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// Affine-free LayerNorm (eps 1e-6) over the last axis from candle primitives.
pub fn layer_norm_reference(x: &Tensor) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    xc.broadcast_div(&(var + LN_EPS)?.sqrt()?)
}

/// LayerNorm over the last axis without affine weights (eps 1e-6), with a gradient.
pub fn layer_norm(x: &Tensor) -> Result<Tensor> {
    if fused_cpu(x) {
        x.contiguous()?.apply_op1(LayerNorm)
    } else {
        layer_norm_reference(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{passes_finite_differences, same_as_reference};

    #[test]
    fn layer_norm_matches_primitives() {
        same_as_reference(layer_norm, layer_norm_reference, &[4, 3, 16], 1e-10);
    }

    #[test]
    fn layer_norm_passes_finite_differences() {
        passes_finite_differences("layer_norm", layer_norm);
    }
}
