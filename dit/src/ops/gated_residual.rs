//! adaLN-Zero's gated residual `x + a * gate[:, None, :]` as one graph node (see `linear.rs` for why).

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::mid::{bcast_mid, mid_dims, mul_mid_reference, sum_mid, MulMid};
use super::{fused_cpu, slice, Float};

/// `x + a * gate`, `x, a: [N, T, D]`, `gate: [N, D]`.
struct GatedResidual;

fn gated_residual_fwd<T: Float>(x: &[T], a: &[T], g: &[T], t: usize, d: usize) -> Vec<T> {
    let mut out = bcast_mid(a, g, t, d, |a, g| a * g);
    out.par_iter_mut()
        .zip(x.par_iter())
        .for_each(|(o, &x)| *o += x);
    out
}

impl CustomOp3 for GatedResidual {
    fn name(&self) -> &'static str {
        "ditkd-gated-residual"
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
        let (_, t, d) = mid_dims(l2, l3, "gated_residual")?;
        if l1.dims() != l2.dims() {
            candle_core::bail!(
                "gated_residual: x {:?} and branch {:?} differ",
                l1.dims(),
                l2.dims()
            );
        }
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(a), CpuStorage::F32(g)) => {
                CpuStorage::F32(gated_residual_fwd(
                    slice(x, l1, "gated_residual")?,
                    slice(a, l2, "gated_residual")?,
                    slice(g, l3, "gated_residual")?,
                    t,
                    d,
                ))
            }
            (CpuStorage::F64(x), CpuStorage::F64(a), CpuStorage::F64(g)) => {
                CpuStorage::F64(gated_residual_fwd(
                    slice(x, l1, "gated_residual")?,
                    slice(a, l2, "gated_residual")?,
                    slice(g, l3, "gated_residual")?,
                    t,
                    d,
                ))
            }
            _ => candle_core::bail!("gated_residual: f32 or f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }
    fn bwd(
        &self,
        _x: &Tensor,
        a: &Tensor,
        gate: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let da = g.apply_op2_no_bwd(gate, &MulMid)?;
        let dgate = sum_mid(&(&g * a)?)?;
        Ok((Some(g), Some(da), Some(dgate)))
    }
}

/// `x + a * gate[:, None, :]` from the separate ops.
pub fn gated_residual_reference(x: &Tensor, a: &Tensor, gate: &Tensor) -> Result<Tensor> {
    x + mul_mid_reference(a, gate)?
}

/// `x + a * gate` with `gate: [N, D]` broadcast over the tokens of `x, a: [N, T, D]`, with a gradient.
pub fn gated_residual(x: &Tensor, a: &Tensor, gate: &Tensor) -> Result<Tensor> {
    if fused_cpu(x) {
        x.contiguous()?
            .apply_op3(&a.contiguous()?, &gate.contiguous()?, GatedResidual)
    } else {
        gated_residual_reference(x, a, gate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::same_as_reference3;

    #[test]
    fn gated_residual_matches_primitives() {
        same_as_reference3(
            gated_residual,
            gated_residual_reference,
            [&[3, 5, 8], &[3, 5, 8], &[3, 8]],
        );
    }
}
