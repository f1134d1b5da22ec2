//! GELU with the tanh approximation (the reference MLP's `nn.GELU(approximate="tanh")`).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::float::cast;
use super::{fused_cpu, slice, Float, CHUNK};

const GELU_C: f64 = 0.797_884_560_802_865_4; // sqrt(2 / pi)
const GELU_A: f64 = 0.044_715;

/// tanh through one exp: libm's tanhf is several times slower than expf and dominated profiles.
/// `1 - 2 / (1 + e^{2u})` saturates correctly at both ends (e^{2u} -> inf or 0).
#[inline(always)]
fn tanh_fast<T: Float>(u: T) -> T {
    let two = T::one() + T::one();
    T::one() - two / (T::one() + (two * u).exp_fast())
}

fn gelu_fwd<T: Float>(x: &[T]) -> Vec<T> {
    let (c, a, half) = (cast::<T>(GELU_C), cast::<T>(GELU_A), cast::<T>(0.5));
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(o, x)| {
            for (o, &x) in o.iter_mut().zip(x) {
                *o = half * x * (T::one() + tanh_fast(c * (x + a * x * x * x)));
            }
        });
    out
}

/// `x = GELU(x)` in place, on the calling thread (the inference path's chunks are its tasks).
pub(crate) fn gelu_in_place<T: Float>(x: &mut [T]) {
    let (c, a, half) = (cast::<T>(GELU_C), cast::<T>(GELU_A), cast::<T>(0.5));
    for x in x.iter_mut() {
        let v = *x;
        *x = half * v * (T::one() + tanh_fast(c * (v + a * v * v * v)));
    }
}

/// d GELU(x) / dx of the tanh approximation.
#[inline(always)]
fn gelu_deriv<T: Float>(x: T) -> T {
    let (c, a, half, three) = (
        cast::<T>(GELU_C),
        cast::<T>(GELU_A),
        cast::<T>(0.5),
        cast::<T>(3.0),
    );
    let th = tanh_fast(c * (x + a * x * x * x));
    half * (T::one() + th) + half * x * (T::one() - th * th) * c * (T::one() + three * a * x * x)
}

/// `g *= GELU'(x)` elementwise: the gradient of the GELU input from that of its output, in place.
pub(crate) fn gelu_grad_in_place<T: Float>(x: &[T], g: &mut [T]) {
    g.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(g, x)| {
            for (g, &x) in g.iter_mut().zip(x) {
                *g *= gelu_deriv(x);
            }
        });
}

struct Gelu;
/// `(x, dy) -> dx` of `Gelu`.
struct GeluGrad;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "ditkd-gelu"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(gelu_fwd(slice(v, l, "gelu")?)),
            CpuStorage::F64(v) => CpuStorage::F64(gelu_fwd(slice(v, l, "gelu")?)),
            _ => candle_core::bail!("gelu: f32 or f64 only"),
        };
        Ok((out, l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &GeluGrad)?))
    }
}

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "ditkd-gelu-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn run<T: Float>(x: &[T], g: &[T]) -> Vec<T> {
            let mut out = g.to_vec();
            gelu_grad_in_place(x, &mut out);
            out
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => {
                CpuStorage::F32(run(slice(x, l1, "gelu")?, slice(g, l2, "gelu")?))
            }
            (CpuStorage::F64(x), CpuStorage::F64(g)) => {
                CpuStorage::F64(run(slice(x, l1, "gelu")?, slice(g, l2, "gelu")?))
            }
            _ => candle_core::bail!("gelu grad: f32 or f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// GELU, tanh approximation (as the reference's `nn.GELU(approximate="tanh")`), with a gradient.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if fused_cpu(x) {
        x.contiguous()?.apply_op1(Gelu)
    } else {
        x.gelu()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{passes_finite_differences, same_as_reference};

    #[test]
    fn gelu_matches_candle() {
        // candle's GELU backward uses 6-digit constants; ours is exact (see the finite-difference test).
        same_as_reference(gelu, |x| x.gelu(), &[3, 5, 7], 1e-5);
    }

    #[test]
    fn gelu_passes_finite_differences() {
        passes_finite_differences("gelu", gelu);
    }
}
