//! The linear layer `y = x W^T + b` as one graph node.
//!
//! candle's backward gives every graph node a zero-filled gradient buffer and adds each incoming
//! gradient into it, so the primitive chain (reshape, matmul, transpose, bias add, reshape) pays a
//! full-size allocation and add per link. This op is one node whose backward hands every input
//! its gradient directly. (The same holds for `ln_modulate` and `gated_residual`.)

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::gemm::{gemm, gemm_threads, MatMut, MatRef};
use super::mid::sum_mid;
use super::{fused_cpu, slice, Float};

/// `y = x W^T + b`: the bias is copied into every output row and one GEMM accumulates onto it.
struct Linear;

fn linear_fwd<T: Float + 'static>(
    x: &[T],
    w: &[T],
    b: &[T],
    rows: usize,
    k: usize,
    o: usize,
) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(rows * o);
    for _ in 0..rows {
        out.extend_from_slice(b);
    }
    let w = MatRef::rows(w, o, k);
    gemm(
        MatMut::rows(&mut out, rows, o),
        MatRef::rows(x, rows, k),
        w.t(),
        T::one(),
        true,
        gemm_threads(),
    );
    out
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "ditkd-linear"
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
        let (o, k2) = l2.shape().dims2()?;
        let Some((&k, lead)) = l1.dims().split_last() else {
            candle_core::bail!("linear: input must have at least one axis")
        };
        if k != k2 || l3.dims() != [o] {
            candle_core::bail!(
                "linear: input {:?}, weight {:?}, bias {:?} do not match",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let rows: usize = lead.iter().product();
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => {
                CpuStorage::F32(linear_fwd(
                    slice(x, l1, "linear")?,
                    slice(w, l2, "linear")?,
                    slice(b, l3, "linear")?,
                    rows,
                    k,
                    o,
                ))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => {
                CpuStorage::F64(linear_fwd(
                    slice(x, l1, "linear")?,
                    slice(w, l2, "linear")?,
                    slice(b, l3, "linear")?,
                    rows,
                    k,
                    o,
                ))
            }
            _ => candle_core::bail!("linear: f32 or f64 only"),
        };
        let mut dims = lead.to_vec();
        dims.push(o);
        Ok((out, Shape::from(dims)))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (o, k) = w.dims2()?;
        let rows = x.dims()[..x.rank() - 1].iter().product::<usize>();
        let g = g.contiguous()?.reshape((rows, o))?;
        let x2 = x.reshape((rows, k))?;
        // dY W, skipped for inputs nothing upstream learns from (the patchified images, timestep features).
        let dx = if x.track_op() {
            Some(g.matmul(w)?.reshape(x.dims())?)
        } else {
            None
        };
        let dw = g.t()?.matmul(&x2)?; // dY^T X
        let db = sum_mid(&g)?; // column sums of dY
        Ok((dx, Some(dw), Some(db)))
    }
}

/// `x W^T + b` from candle primitives.
pub fn linear_reference(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let Some((&k, lead)) = x.dims().split_last() else {
        candle_core::bail!("linear: input must have at least one axis")
    };
    let rows = lead.iter().product::<usize>();
    let y = x.reshape((rows, k))?.matmul(&w.t()?)?.broadcast_add(b)?;
    let mut out_dims = lead.to_vec();
    out_dims.push(w.dim(0)?);
    y.reshape(out_dims)
}

/// `x W^T + b` over the last axis of `x` (`w: [O, K]`, `b: [O]`), with a gradient.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fused_cpu(x) {
        x.contiguous()?
            .apply_op3(&w.contiguous()?, &b.contiguous()?, Linear)
    } else {
        linear_reference(x, w, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::same_as_reference3;

    #[test]
    fn linear_matches_primitives() {
        same_as_reference3(linear, linear_reference, [&[3, 5, 7], &[4, 7], &[4]]);
        same_as_reference3(linear, linear_reference, [&[6, 7], &[4, 7], &[4]]);
    }
}
