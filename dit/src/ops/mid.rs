//! Per-row broadcasts over a middle axis, with a fast sum-reduction backward: `x: [A, B, C]`
//! combined with `s: [A, C]` broadcast over `B` (the adaLN shifts and scales over the tokens), or
//! `x: [B, C]` with `s: [C]` (a bias over rows).
//!
//! candle's `broadcast_add/mul` backward reduces with `sum_keepdim` over a non-trailing axis,
//! which walks strided indices element by element: from the bias adds and adaLN modulations it
//! was ~15% of the training step. These ops reduce in one contiguous pass instead.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{fused_cpu, slice, Float, CHUNK};

/// `out[a, b, :] = f(x[a, b, :], s[a, :])` elementwise, for `x: [A, B, C]` flattened and `s: [A, C]`.
pub(crate) fn bcast_mid<T: Float>(
    x: &[T],
    s: &[T],
    b: usize,
    c: usize,
    f: impl Fn(T, T) -> T + Sync,
) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    let c = c.max(1);
    let per = (CHUNK / c).max(1) * c;
    out.par_chunks_mut(per)
        .zip(x.par_chunks(per))
        .enumerate()
        .for_each(|(k, (o, x))| {
            let row0 = k * per / c;
            for (r, (o, x)) in o.chunks_mut(c).zip(x.chunks(c)).enumerate() {
                let ai = (row0 + r) / b.max(1);
                let s = &s[ai * c..(ai + 1) * c];
                for ((o, &x), &s) in o.iter_mut().zip(x).zip(s) {
                    *o = f(x, s);
                }
            }
        });
    out
}

fn sum_mid_cpu<T: Float>(g: &[T], a: usize, b: usize, c: usize) -> Vec<T> {
    let mut out = vec![T::zero(); a * c];
    let c = c.max(1);
    out.par_chunks_mut(c).enumerate().for_each(|(i, acc)| {
        for row in g[i * b * c..(i + 1) * b * c].chunks(c) {
            for (o, &v) in acc.iter_mut().zip(row) {
                *o += v;
            }
        }
    });
    out
}

/// `(A, B, C)` of `[A, B, C]` with `[A, C]`, or of `[B, C]` with `[C]` (A = 1).
pub(crate) fn mid_dims(l1: &Layout, l2: &Layout, op: &str) -> Result<(usize, usize, usize)> {
    let (a, b, c) = match l1.dims() {
        &[b, c] => (1, b, c),
        _ => l1.shape().dims3()?,
    };
    let s = match l2.dims() {
        &[c] => (1, c),
        _ => l2.shape().dims2()?,
    };
    if l1.dims().len() != l2.dims().len() + 1 || s != (a, c) {
        candle_core::bail!(
            "{op}: shapes {:?} and {:?} do not broadcast",
            l1.dims(),
            l2.dims()
        );
    }
    Ok((a, b, c))
}

/// The elementwise combination of a middle-axis broadcast.
trait MidOp: CustomOp2 {
    fn apply<T: Float>(x: T, s: T) -> T;

    fn mid_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (_, b, c) = mid_dims(l1, l2, name)?;
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(s)) => CpuStorage::F32(bcast_mid(
                slice(x, l1, name)?,
                slice(s, l2, name)?,
                b,
                c,
                Self::apply,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(s)) => CpuStorage::F64(bcast_mid(
                slice(x, l1, name)?,
                slice(s, l2, name)?,
                b,
                c,
                Self::apply,
            )),
            _ => candle_core::bail!("{name}: f32 or f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// `x + s[:, None, :]`.
struct AddMid;
/// `x * s[:, None, :]`.
pub(crate) struct MulMid;
/// `[A, B, C] -> [A, C]`, summing over `B`.
struct SumMid;

impl MidOp for AddMid {
    #[inline(always)]
    fn apply<T: Float>(x: T, s: T) -> T {
        x + s
    }
}

impl MidOp for MulMid {
    #[inline(always)]
    fn apply<T: Float>(x: T, s: T) -> T {
        x * s
    }
}

impl CustomOp2 for AddMid {
    fn name(&self) -> &'static str {
        "ditkd-add-mid"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.mid_fwd(s1, l1, s2, l2)
    }
    /// `dx = dy`, `ds = sum_b dy`.
    fn bwd(
        &self,
        _x: &Tensor,
        _s: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let ds = sum_mid(&g)?;
        Ok((Some(g), Some(ds)))
    }
}

impl CustomOp2 for MulMid {
    fn name(&self) -> &'static str {
        "ditkd-mul-mid"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.mid_fwd(s1, l1, s2, l2)
    }
    /// `dx = dy * s`, `ds = sum_b dy * x`.
    fn bwd(
        &self,
        x: &Tensor,
        s: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let ds = sum_mid(&(&g * x)?)?;
        Ok((Some(g.apply_op2_no_bwd(s, &MulMid)?), Some(ds)))
    }
}

impl CustomOp1 for SumMid {
    fn name(&self) -> &'static str {
        "ditkd-sum-mid"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (a, b, c) = l.shape().dims3()?;
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(sum_mid_cpu(slice(v, l, "sum_mid")?, a, b, c)),
            CpuStorage::F64(v) => CpuStorage::F64(sum_mid_cpu(slice(v, l, "sum_mid")?, a, b, c)),
            _ => candle_core::bail!("sum_mid: f32 or f64 only"),
        };
        Ok((out, Shape::from((a, c))))
    }
}

/// `[A, B, C] -> [A, C]` (or `[B, C] -> [C]`), summing over `B` (no gradient: only used inside
/// backward passes).
pub(crate) fn sum_mid(g: &Tensor) -> Result<Tensor> {
    if g.rank() == 2 {
        let (b, c) = g.dims2()?;
        return g
            .contiguous()?
            .reshape((1, b, c))?
            .apply_op1_no_bwd(&SumMid)?
            .reshape(c);
    }
    g.contiguous()?.apply_op1_no_bwd(&SumMid)
}

/// `x + s[:, None, :]` from candle primitives.
pub fn add_mid_reference(x: &Tensor, s: &Tensor) -> Result<Tensor> {
    if x.rank() == 2 {
        return x.broadcast_add(s);
    }
    x.broadcast_add(&s.unsqueeze(1)?)
}

/// `x * s[:, None, :]` from candle primitives.
pub fn mul_mid_reference(x: &Tensor, s: &Tensor) -> Result<Tensor> {
    x.broadcast_mul(&s.unsqueeze(1)?)
}

/// `x + s[:, None, :]` for `x: [A, B, C]`, `s: [A, C]` (or `x + s` for `x: [B, C]`, `s: [C]`),
/// with a gradient.
pub fn add_mid(x: &Tensor, s: &Tensor) -> Result<Tensor> {
    if fused_cpu(x) {
        x.contiguous()?.apply_op2(&s.contiguous()?, AddMid)
    } else {
        add_mid_reference(x, s)
    }
}

/// `x * s[:, None, :]` for `x: [A, B, C]`, `s: [A, C]`, with a gradient.
pub fn mul_mid(x: &Tensor, s: &Tensor) -> Result<Tensor> {
    if fused_cpu(x) {
        x.contiguous()?.apply_op2(&s.contiguous()?, MulMid)
    } else {
        mul_mid_reference(x, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{max_diff, passes_finite_differences, rand};
    use candle_core::{IndexOp, Var};

    #[test]
    fn add_mul_mid_match_primitives() {
        type Op = fn(&Tensor, &Tensor) -> Result<Tensor>;
        let pairs: [(Op, Op); 2] = [(add_mid, add_mid_reference), (mul_mid, mul_mid_reference)];
        for (f, r) in pairs {
            for (a, b, c) in [(4, 5, 6), (1, 9, 7), (3, 1000, 11)] {
                let x = Var::from_tensor(&rand(&[a, b, c], 1)).unwrap();
                let s = Var::from_tensor(&rand(&[a, c], 2)).unwrap();
                let w = rand(&[a, b, c], 3);
                let (yf, yr) = (
                    f(x.as_tensor(), s.as_tensor()).unwrap(),
                    r(x.as_tensor(), s.as_tensor()).unwrap(),
                );
                assert!(max_diff(&yf, &yr) < 1e-12);
                let gf = (yf * &w).unwrap().sum_all().unwrap().backward().unwrap();
                let gr = (yr * &w).unwrap().sum_all().unwrap().backward().unwrap();
                for v in [&x, &s] {
                    let d = max_diff(
                        gf.get(v.as_tensor()).unwrap(),
                        gr.get(v.as_tensor()).unwrap(),
                    );
                    assert!(d < 1e-10, "gradient differs by {d}");
                }
            }
        }
    }

    #[test]
    fn bias_add_matches_primitives() {
        let x = Var::from_tensor(&rand(&[37, 6], 1)).unwrap();
        let s = Var::from_tensor(&rand(&[6], 2)).unwrap();
        let w = rand(&[37, 6], 3);
        let (yf, yr) = (
            add_mid(x.as_tensor(), s.as_tensor()).unwrap(),
            x.as_tensor().broadcast_add(s.as_tensor()).unwrap(),
        );
        assert!(max_diff(&yf, &yr) < 1e-12);
        let gf = (yf * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (yr * &w).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &s] {
            let (a, b) = (
                gf.get(v.as_tensor()).unwrap(),
                gr.get(v.as_tensor()).unwrap(),
            );
            assert_eq!(a.dims(), b.dims());
            assert!(max_diff(a, b) < 1e-10);
        }
    }

    /// x: [2, 3, 3] against s = a slice of x itself, so both arguments' gradients are exercised.
    #[test]
    fn mid_ops_pass_finite_differences() {
        passes_finite_differences("add_mid", |x: &Tensor| {
            add_mid(x, &x.i((.., 0, ..))?.sqr()?)
        });
        passes_finite_differences("mul_mid", |x: &Tensor| mul_mid(x, &x.i((.., 1, ..))?));
        passes_finite_differences("bias", |x: &Tensor| {
            add_mid(&x.reshape((6, 3))?, &x.i((0, 0, ..))?.sqr()?)
        });
    }
}
