//! Batched matmul: one single-threaded GEMM per batch item, batch items in parallel.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{gemm, MatMut, MatRef};
use super::{fused_cpu, Float};

struct Bmm;

fn bmm_cpu<T: Float + 'static>(
    a: &[T],
    la: &Layout,
    b: &[T],
    lb: &Layout,
) -> Result<(Vec<T>, Shape)> {
    let (bs, m, k) = la.shape().dims3()?;
    let (bs2, k2, n) = lb.shape().dims3()?;
    if bs != bs2 || k != k2 {
        candle_core::bail!(
            "bmm: shapes {:?} and {:?} do not multiply",
            la.dims(),
            lb.dims()
        );
    }
    let (sa, sb) = (la.stride(), lb.stride());
    let a = &a[la.start_offset()..];
    let b = &b[lb.start_offset()..];
    let mut out = vec![T::zero(); bs * m * n];
    out.par_chunks_mut((m * n).max(1))
        .enumerate()
        .for_each(|(i, dst)| {
            // Any strides: the operands are read where the layouts put them (a transpose is a view).
            let lhs = MatRef::new(
                a.get(i * sa[0]..).unwrap_or_default(),
                (m, k),
                (sa[1], sa[2]),
            );
            let rhs = MatRef::new(
                b.get(i * sb[0]..).unwrap_or_default(),
                (k, n),
                (sb[1], sb[2]),
            );
            gemm(
                MatMut::rows(dst, m, n),
                lhs,
                rhs,
                T::one(),
                false,
                ::gemm::Parallelism::None,
            );
        });
    Ok((out, Shape::from((bs, m, n))))
}

impl CustomOp2 for Bmm {
    fn name(&self) -> &'static str {
        "ditkd-bmm"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                bmm_cpu(a, l1, b, l2).map(|(v, s)| (CpuStorage::F32(v), s))
            }
            (CpuStorage::F64(a), CpuStorage::F64(b)) => {
                bmm_cpu(a, l1, b, l2).map(|(v, s)| (CpuStorage::F64(v), s))
            }
            _ => candle_core::bail!("bmm: f32 or f64 only"),
        }
    }
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // C = A B  =>  dA = dC B^T, dB = A^T dC (transposes are stride views, no copies).
        Ok((Some(bmm(g, &b.t()?)?), Some(bmm(&a.t()?, g)?)))
    }
}

/// `[B, M, K] x [B, K, N] -> [B, M, N]`, any strides, with a gradient.
pub fn bmm(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fused_cpu(a) {
        a.apply_op2(b, Bmm)
    } else {
        a.matmul(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{max_diff, passes_finite_differences, rand};
    use candle_core::Var;

    #[test]
    fn bmm_matches_matmul_with_strided_inputs() {
        let a = Var::from_tensor(&rand(&[6, 5, 4], 3)).unwrap();
        let b = Var::from_tensor(&rand(&[6, 7, 4], 4)).unwrap(); // used transposed: a stride view
        let w = rand(&[6, 5, 7], 5);
        let bt = b.as_tensor().t().unwrap();
        let (yf, yr) = (
            bmm(a.as_tensor(), &bt).unwrap(),
            a.as_tensor().matmul(&bt).unwrap(),
        );
        assert!(max_diff(&yf, &yr) < 1e-12);
        let gf = (yf * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (yr * &w).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&a, &b] {
            assert!(
                max_diff(
                    gf.get(v.as_tensor()).unwrap(),
                    gr.get(v.as_tensor()).unwrap()
                ) < 1e-12
            );
        }
    }

    #[test]
    fn bmm_passes_finite_differences() {
        passes_finite_differences("bmm", |x: &Tensor| bmm(x, &x.t()?));
    }
}
