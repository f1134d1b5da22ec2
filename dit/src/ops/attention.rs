//! Multi-head self-attention from the packed qkv projection (timm's `Attention` after `qkv`,
//! before `proj`): `[N, T, 3D] -> [N, T, D]`.
//!
//! Without the head split/merge: every (item, head) reads its q, k, v straight out of the packed
//! projection with strided GEMMs and writes its output columns in place. From primitives the same
//! attention costs three `contiguous` copies, a scale, a transpose copy and their backward nodes
//! (each a gradient accumulation). The backward recomputes the T x T probabilities (T = 49 for
//! 28x28 patch 4) instead of keeping them alive, unless the caller kept them
//! (`attention_keep_probs`, for the blocks' hand-written backward).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::float::cast;
use super::gemm::{gemm, head_blocks, MatMut, MatRef};
use super::softmax::{softmax_grad_in_place, softmax_in_place, softmax_last_reference};
use super::{fused_cpu, slice, Float};

/// `qkv -> out` of `heads` heads.
struct Attention {
    heads: usize,
}
/// `(qkv, dout) -> dqkv` of `Attention`.
struct AttentionGrad {
    heads: usize,
}

/// `(N, T, D)` of a packed `[N, T, 3D]` projection split into `heads` heads.
fn attention_dims(l: &Layout, heads: usize) -> Result<(usize, usize, usize)> {
    let (n, t, d3) = l.shape().dims3()?;
    if d3 % 3 != 0 || heads == 0 || (d3 / 3) % heads != 0 {
        candle_core::bail!("attention: qkv width {d3} is not 3 x a multiple of {heads} heads");
    }
    Ok((n, t, d3 / 3))
}

/// Q, K and V (`T x hd` each, row stride 3D) of item `b`, head `h` in the packed projection.
fn head_qkv<T>(
    qkv: &[T],
    (b, h): (usize, usize),
    (t, d, hd): (usize, usize, usize),
) -> [MatRef<'_, T>; 3] {
    let q0 = b * t * 3 * d + h * hd;
    std::array::from_fn(|j| MatRef::new(&qkv[q0 + j * d..], (t, hd), (3 * d, 1)))
}

/// P = softmax(scale Q K^T) of item `b`, head `h` into `p` (t x t).
fn attention_probs<T: Float + 'static>(
    qkv: &[T],
    (b, h): (usize, usize),
    (t, d, hd): (usize, usize, usize),
    p: &mut [T],
) {
    let [q, k, _] = head_qkv(qkv, (b, h), (t, d, hd));
    let scale = cast::<T>((hd as f64).powf(-0.5));
    gemm(
        MatMut::rows(p, t, t),
        q,
        k.t(),
        scale,
        false,
        ::gemm::Parallelism::None,
    );
    for row in p.chunks_mut(t) {
        softmax_in_place(row);
    }
}

/// O[:, h*hd..] = P V of item `i / heads`, head `i % heads`, written into its columns of the
/// merged-heads output (row stride D), with P computed into `p`.
fn head_fwd<T: Float + 'static>(
    qkv: &[T],
    i: usize,
    (t, d, heads): (usize, usize, usize),
    p: &mut [T],
    o: MatMut<'_, T>,
) {
    let (b, h, hd) = (i / heads, i % heads, d / heads);
    attention_probs(qkv, (b, h), (t, d, hd), p);
    let [_, _, v] = head_qkv(qkv, (b, h), (t, d, hd));
    gemm(
        o,
        MatRef::rows(p, t, t),
        v,
        T::one(),
        false,
        ::gemm::Parallelism::None,
    );
}

/// Attention of `n` items into `out` (`[n, T, D]`, heads merged), one (item, head) after another
/// on the calling thread, with `p` as the T x T scratch (the inference path's chunks are its tasks).
pub(crate) fn attention_seq_into<T: Float + 'static>(
    qkv: &[T],
    out: &mut [T],
    (n, t, d, heads): (usize, usize, usize, usize),
    p: &mut [T],
) {
    let hd = d / heads;
    assert_eq!(out.len(), n * t * d, "attention: output of the wrong size");
    for i in 0..n * heads {
        let (b, h) = (i / heads, i % heads);
        let o = MatMut::new(&mut out[b * t * d + h * hd..], (t, hd), d);
        head_fwd(qkv, i, (t, d, heads), &mut p[..t * t], o);
    }
}

/// Attention forward; with `keep`, also returns every (item, head)'s probabilities
/// `[N * heads, T, T]` for a backward that then need not recompute them.
fn attention_fwd<T: Float + 'static>(
    qkv: &[T],
    n: usize,
    t: usize,
    d: usize,
    heads: usize,
    keep: bool,
) -> (Vec<T>, Vec<T>) {
    let mut out = vec![T::zero(); n * t * d];
    let mut probs = if keep {
        vec![T::zero(); n * heads * t * t]
    } else {
        Vec::new()
    };
    let blocks = head_blocks::<T, 1>(&mut out, (n, t, heads, d / heads)).enumerate();
    if keep {
        blocks
            .zip(probs.par_chunks_mut((t * t).max(1)))
            .for_each(|((i, [o]), p)| head_fwd(qkv, i, (t, d, heads), p, o));
    } else {
        blocks.for_each_init(
            || vec![T::zero(); t * t],
            |scratch, (i, [o])| head_fwd(qkv, i, (t, d, heads), scratch, o),
        );
    }
    (out, probs)
}

/// Attention backward: the gradient of the packed qkv from `g = dO`. The probabilities come
/// from `probs` when the forward kept them, else are recomputed per (item, head).
pub(crate) fn attention_bwd<T: Float + 'static>(
    qkv: &[T],
    probs: Option<&[T]>,
    g: &[T],
    n: usize,
    t: usize,
    d: usize,
    heads: usize,
) -> Vec<T> {
    let hd = d / heads;
    let scale = cast::<T>((hd as f64).powf(-0.5));
    let mut dqkv = vec![T::zero(); n * t * 3 * d];
    head_blocks::<T, 3>(&mut dqkv, (n, t, heads, hd))
        .enumerate()
        .for_each_init(
            || {
                (
                    if probs.is_some() {
                        Vec::new()
                    } else {
                        vec![T::zero(); t * t]
                    },
                    vec![T::zero(); t * t],
                )
            },
            |(scratch, dp), (i, [dq, dk, dv])| {
                let (b, h) = (i / heads, i % heads);
                let p: &[T] = match probs {
                    Some(all) => &all[i * t * t..(i + 1) * t * t],
                    None => {
                        attention_probs(qkv, (b, h), (t, d, hd), scratch);
                        scratch
                    }
                };
                let [q, k, v] = head_qkv(qkv, (b, h), (t, d, hd));
                let go = MatRef::new(&g[b * t * d + h * hd..], (t, hd), (d, 1)); // dO of this head: row stride D
                                                                                 // dV = P^T dO
                gemm(
                    dv,
                    MatRef::rows(p, t, t).t(),
                    go,
                    T::one(),
                    false,
                    ::gemm::Parallelism::None,
                );
                // dP = dO V^T, then dS = P * (dP - rowsum(dP * P))
                gemm(
                    MatMut::rows(dp, t, t),
                    go,
                    v.t(),
                    T::one(),
                    false,
                    ::gemm::Parallelism::None,
                );
                for (pr, gr) in p.chunks(t).zip(dp.chunks_mut(t)) {
                    softmax_grad_in_place(pr, gr);
                }
                // dQ = scale dS K, dK = scale dS^T Q
                let ds = MatRef::rows(dp, t, t);
                gemm(dq, ds, k, scale, false, ::gemm::Parallelism::None);
                gemm(dk, ds.t(), q, scale, false, ::gemm::Parallelism::None);
            },
        );
    dqkv
}

/// Attention of the packed `qkv: [N, T, 3D]` without autograd, returning the output `[N, T, D]`
/// and the probabilities `[N * heads, T, T]` (for the blocks' recorded backward; CPU only).
pub(crate) fn attention_keep_probs(qkv: &Tensor, heads: usize) -> Result<(Tensor, Tensor)> {
    let qkv = qkv.contiguous()?;
    let (n, t, d) = attention_dims(qkv.layout(), heads)?;
    let dev = qkv.device();
    let (s, l) = qkv.storage_and_layout();
    match &*s {
        Storage::Cpu(CpuStorage::F32(v)) => {
            let (o, p) = attention_fwd(slice(v, l, "attention")?, n, t, d, heads, true);
            Ok((
                Tensor::from_vec(o, (n, t, d), dev)?,
                Tensor::from_vec(p, (n * heads, t, t), dev)?,
            ))
        }
        Storage::Cpu(CpuStorage::F64(v)) => {
            let (o, p) = attention_fwd(slice(v, l, "attention")?, n, t, d, heads, true);
            Ok((
                Tensor::from_vec(o, (n, t, d), dev)?,
                Tensor::from_vec(p, (n * heads, t, t), dev)?,
            ))
        }
        _ => candle_core::bail!("attention: f32 or f64 on the CPU only"),
    }
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "ditkd-attention"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, t, d) = attention_dims(l, self.heads)?;
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(
                attention_fwd(slice(v, l, "attention")?, n, t, d, self.heads, false).0,
            ),
            CpuStorage::F64(v) => CpuStorage::F64(
                attention_fwd(slice(v, l, "attention")?, n, t, d, self.heads, false).0,
            ),
            _ => candle_core::bail!("attention: f32 or f64 only"),
        };
        Ok((out, Shape::from((n, t, d))))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(
            &grad.contiguous()?,
            &AttentionGrad { heads: self.heads },
        )?))
    }
}

impl CustomOp2 for AttentionGrad {
    fn name(&self) -> &'static str {
        "ditkd-attention-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, t, d) = attention_dims(l1, self.heads)?;
        if l2.dims() != [n, t, d] {
            candle_core::bail!(
                "attention grad: gradient {:?} for qkv {:?}",
                l2.dims(),
                l1.dims()
            );
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => CpuStorage::F32(attention_bwd(
                slice(x, l1, "attention")?,
                None,
                slice(g, l2, "attention")?,
                n,
                t,
                d,
                self.heads,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(g)) => CpuStorage::F64(attention_bwd(
                slice(x, l1, "attention")?,
                None,
                slice(g, l2, "attention")?,
                n,
                t,
                d,
                self.heads,
            )),
            _ => candle_core::bail!("attention grad: f32 or f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// Attention from candle primitives: split heads, scaled `softmax(Q K^T) V`, merge heads.
pub fn attention_reference(qkv: &Tensor, heads: usize) -> Result<Tensor> {
    use candle_core::IndexOp;
    let (n, t, d3) = qkv.dims3()?;
    let (d, hd) = (d3 / 3, d3 / 3 / heads);
    let qkv = qkv
        .reshape((n, t, 3, heads, hd))?
        .permute((2, 0, 3, 1, 4))?; // (3, N, H, T, hd)
    let q = (qkv.i(0)?.contiguous()? * (hd as f64).powf(-0.5))?.reshape((n * heads, t, hd))?;
    let k = qkv.i(1)?.contiguous()?.reshape((n * heads, t, hd))?;
    let v = qkv.i(2)?.contiguous()?.reshape((n * heads, t, hd))?;
    let att = softmax_last_reference(&q.matmul(&k.t()?)?)?; // (N*H, T, T)
    let o = att.matmul(&v)?; // (N*H, T, hd)
    o.reshape((n, heads, t, hd))?
        .transpose(1, 2)?
        .reshape((n, t, d))
}

/// Multi-head self-attention of the packed `qkv: [N, T, 3D]` (q | k | v, each `heads` blocks of
/// `D / heads`) -> `[N, T, D]`, with a gradient.
pub fn attention(qkv: &Tensor, heads: usize) -> Result<Tensor> {
    if fused_cpu(qkv) {
        qkv.contiguous()?.apply_op1(Attention { heads })
    } else {
        attention_reference(qkv, heads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{max_diff, rand};
    use candle_core::{DType, Device, Var};

    #[test]
    fn attention_matches_primitives() {
        // Two heads of width 3, T = 5: the fused op reads q, k, v out of the packed projection.
        let x = Var::from_tensor(&(rand(&[3, 5, 18], 1) * 2.0).unwrap()).unwrap();
        let w = rand(&[3, 5, 6], 2);
        let (yf, yr) = (
            attention(x.as_tensor(), 2).unwrap(),
            attention_reference(x.as_tensor(), 2).unwrap(),
        );
        assert_eq!(yf.dims(), [3, 5, 6]);
        assert!(max_diff(&yf, &yr) < 1e-12);
        let gf = (yf * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (yr * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let d = max_diff(
            gf.get(x.as_tensor()).unwrap(),
            gr.get(x.as_tensor()).unwrap(),
        );
        assert!(d < 1e-10, "gradient differs by {d}");
        let bad = Tensor::zeros((2, 5, 18), DType::F32, &Device::Cpu).unwrap();
        assert!(attention(&bad, 4)
            .unwrap_err()
            .to_string()
            .contains("4 heads"));
    }

    #[test]
    fn kept_probabilities_give_the_same_output_and_gradient() {
        let x = rand(&[2, 4, 12], 3);
        let g = rand(&[2, 4, 4], 4);
        let (o, p) = attention_keep_probs(&x, 2).unwrap();
        assert_eq!(max_diff(&o, &attention(&x, 2).unwrap()), 0.0);
        let (xs, gs, ps): (Vec<f64>, Vec<f64>, Vec<f64>) = (
            x.flatten_all().unwrap().to_vec1().unwrap(),
            g.flatten_all().unwrap().to_vec1().unwrap(),
            p.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert_eq!(
            attention_bwd(&xs, Some(&ps), &gs, 2, 4, 4, 2),
            attention_bwd(&xs, None, &gs, 2, 4, 4, 2)
        );
    }
}
