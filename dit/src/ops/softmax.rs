//! Softmax over the last axis. Its row kernels also serve the fused attention, which runs them
//! on each head's probability rows in place.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};

use super::float::{max8, sum8};
use super::{fused_cpu, map_rows, map_rows2, row_len, slice, Float};

/// `row = softmax(row)`: the max subtracted (softmax is shift-invariant), then normalised.
#[inline]
pub(crate) fn softmax_in_place<T: Float>(row: &mut [T]) {
    let m = max8(row);
    // The exps in their own loop vectorise; the sum stays in order.
    row.iter_mut().for_each(|v| *v = (*v - m).exp_fast());
    let inv = T::one() / sum8(row.len(), |i| row[i]);
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `g = y * (g - sum(g * y))`: the gradient of the softmax input from that of its output `y`.
#[inline]
pub(crate) fn softmax_grad_in_place<T: Float>(y: &[T], g: &mut [T]) {
    let dot = sum8(y.len(), |i| y[i] * g[i]);
    for (g, &y) in g.iter_mut().zip(y) {
        *g = y * (*g - dot);
    }
}

struct Softmax;
struct SoftmaxGrad;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "ditkd-softmax"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        fn run<T: Float>(n: usize, x: &[T]) -> Vec<T> {
            map_rows(n, x, |x, o| {
                o.copy_from_slice(x);
                softmax_in_place(o);
            })
        }
        let n = row_len(l, self.name())?;
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(run(n, slice(v, l, self.name())?)),
            CpuStorage::F64(v) => CpuStorage::F64(run(n, slice(v, l, self.name())?)),
            _ => candle_core::bail!("{}: f32 or f64 only", self.name()),
        };
        Ok((out, l.shape().clone()))
    }
    /// The gradient needs only the output.
    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxGrad)?,
        ))
    }
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "ditkd-softmax-grad"
    }
    /// `(y, dy) -> dx`.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn run<T: Float>(n: usize, y: &[T], g: &[T]) -> Vec<T> {
            map_rows2(n, y, g, |y, g, o| {
                o.copy_from_slice(g);
                softmax_grad_in_place(y, o);
            })
        }
        let n = row_len(l1, self.name())?;
        let out = match (s1, s2) {
            (CpuStorage::F32(y), CpuStorage::F32(g)) => CpuStorage::F32(run(
                n,
                slice(y, l1, self.name())?,
                slice(g, l2, self.name())?,
            )),
            (CpuStorage::F64(y), CpuStorage::F64(g)) => CpuStorage::F64(run(
                n,
                slice(y, l1, self.name())?,
                slice(g, l2, self.name())?,
            )),
            _ => candle_core::bail!("{}: f32 or f64 only", self.name()),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// Softmax over the last axis from candle primitives (max detached: softmax is shift-invariant).
pub fn softmax_last_reference(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Softmax over the last axis, with a gradient.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    if fused_cpu(x) {
        x.contiguous()?.apply_op1(Softmax)
    } else {
        softmax_last_reference(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{passes_finite_differences, same_as_reference};

    #[test]
    fn softmax_matches_primitives() {
        same_as_reference(softmax_last, softmax_last_reference, &[4, 3, 9], 1e-10);
    }

    #[test]
    fn softmax_passes_finite_differences() {
        passes_finite_differences("softmax", softmax_last);
    }
}
