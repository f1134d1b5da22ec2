//! adaLN: `LayerNorm(x) * (1 + scale) + shift` (the reference's `modulate(norm(x), shift, scale)`)
//! as one graph node (see `linear.rs` for why).

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::layer_norm::{layer_norm_reference, layer_norm_row, LayerNorm, LayerNormGrad};
use super::mid::{add_mid_reference, mid_dims, mul_mid_reference, sum_mid, MulMid};
use super::{fused_cpu, map_rows, slice, Float, CHUNK};

/// `LayerNorm(x) * (1 + scale) + shift`, `x: [N, T, D]`, `shift, scale: [N, D]`.
struct LnModulate;

fn ln_modulate_fwd<T: Float>(x: &[T], shift: &[T], scale: &[T], t: usize, d: usize) -> Vec<T> {
    let mut out = map_rows(d, x, layer_norm_row);
    let per = (CHUNK / d).max(1) * d;
    out.par_chunks_mut(per).enumerate().for_each(|(k, o)| {
        for (r, o) in o.chunks_mut(d).enumerate() {
            let a = (k * per / d + r) / t;
            let (sh, sc) = (&shift[a * d..(a + 1) * d], &scale[a * d..(a + 1) * d]);
            for ((o, &sh), &sc) in o.iter_mut().zip(sh).zip(sc) {
                *o = *o * (T::one() + sc) + sh;
            }
        }
    });
    out
}

impl CustomOp3 for LnModulate {
    fn name(&self) -> &'static str {
        "ditkd-ln-modulate"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, t, d) = mid_dims(l1, l2, "ln_modulate")?;
        mid_dims(l1, l3, "ln_modulate")?;
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(sh), CpuStorage::F32(sc)) => {
                CpuStorage::F32(ln_modulate_fwd(
                    slice(x, l1, "ln_modulate")?,
                    slice(sh, l2, "ln_modulate")?,
                    slice(sc, l3, "ln_modulate")?,
                    t,
                    d,
                ))
            }
            (CpuStorage::F64(x), CpuStorage::F64(sh), CpuStorage::F64(sc)) => {
                CpuStorage::F64(ln_modulate_fwd(
                    slice(x, l1, "ln_modulate")?,
                    slice(sh, l2, "ln_modulate")?,
                    slice(sc, l3, "ln_modulate")?,
                    t,
                    d,
                ))
            }
            _ => candle_core::bail!("ln_modulate: f32 or f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        _shift: &Tensor,
        scale: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let xhat = x.apply_op1_no_bwd(&LayerNorm)?;
        let d_shift = sum_mid(&g)?;
        let d_scale = sum_mid(&(&g * &xhat)?)?;
        let g_hat = g.apply_op2_no_bwd(&(scale + 1.0)?, &MulMid)?;
        let dx = x.apply_op2_no_bwd(&g_hat, &LayerNormGrad)?;
        Ok((Some(dx), Some(d_shift), Some(d_scale)))
    }
}

/// `LayerNorm(x) * (1 + scale) + shift` from the separate ops.
pub fn ln_modulate_reference(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    add_mid_reference(
        &mul_mid_reference(&layer_norm_reference(x)?, &(scale + 1.0)?)?,
        shift,
    )
}

/// adaLN: affine-free LayerNorm (eps 1e-6) of `x: [N, T, D]`, then `* (1 + scale) + shift` with
/// `shift, scale: [N, D]` broadcast over the tokens, with a gradient.
pub fn ln_modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    if fused_cpu(x) {
        x.contiguous()?
            .apply_op3(&shift.contiguous()?, &scale.contiguous()?, LnModulate)
    } else {
        ln_modulate_reference(x, shift, scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::same_as_reference3;

    #[test]
    fn ln_modulate_matches_primitives() {
        same_as_reference3(
            ln_modulate,
            ln_modulate_reference,
            [&[3, 5, 8], &[3, 8], &[3, 8]],
        );
    }
}
