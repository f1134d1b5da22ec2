//! Fused CPU ops with hand-written backward passes, for the training step's hot spots.
//!
//! candle's own fused CPU softmax / layer-norm carry no gradient, its GELU backward is a chain of
//! about a dozen scalar tensor ops, and its batched matmul runs one multi-threaded GEMM per batch
//! item (thread hand-off dominates for attention's 49x32 tiles). Each op here computes in f32 or
//! f64, parallelises over rows or batch items with rayon, and defines `bwd` so autograd flows.
//! On other devices the model uses the equivalent candle primitives (`*_reference` below), which
//! the tests compare against; `tests/gradcheck.rs` checks every gradient by finite differences.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// Rows handed to one rayon task (amortises scheduling for short rows).
const CHUNK: usize = 8192;

/// Contiguous data of a CPU storage, or an error for anything we do not handle.
fn slice<'a, T: candle_core::WithDType>(s: &'a [T], l: &Layout, op: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

pub(crate) trait Float: candle_core::WithDType + num_traits::Float + Send + Sync {
    /// e^x for the hot loops (softmax, GELU): inlined and branch-free in f32, so the loops
    /// vectorise (libm's `expf` is a call per element and was ~5% of the training step).
    fn exp_fast(self) -> Self;
}
impl Float for f32 {
    #[inline(always)]
    fn exp_fast(self) -> Self {
        exp_f32(self)
    }
}
impl Float for f64 {
    #[inline(always)]
    fn exp_fast(self) -> Self {
        self.exp()
    }
}

/// e^x in f32 to about 1 ulp (Cephes `expf`): x = k ln2 + r with |r| <= ln2 / 2, a degree-7
/// polynomial for e^r, and 2^k built in the exponent bits. Saturates to ~1e-38 and ~2e38 at the
/// ends; NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = if x < -87.3 {
        -87.3
    } else if x > 88.3 {
        88.3
    } else {
        x
    };
    let t = x * LOG2E + MAGIC;
    let k = t - MAGIC; // round(x / ln 2)
    let ki = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = x - k * 0.693_359_4 - k * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    er * f32::from_bits(((ki + 127) as u32) << 23)
}

pub(crate) fn cast<T: Float>(v: f64) -> T {
    T::from(v).unwrap()
}

/// `f(0) + f(1) + ... + f(n - 1)` in eight interleaved partial sums: a plain fold over a row is
/// one long dependency chain of float adds (4 cycles each, no SIMD since the order is fixed), which
/// made softmax and layer-norm rows latency-bound. The order is still fixed, so results are
/// deterministic.
#[inline(always)]
pub(crate) fn sum8<T: Float>(n: usize, f: impl Fn(usize) -> T) -> T {
    let mut acc = [T::zero(); 8];
    let full = n / 8 * 8;
    let mut i = 0;
    while i < full {
        for (l, a) in acc.iter_mut().enumerate() {
            *a = *a + f(i + l);
        }
        i += 8;
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for j in full..n {
        s = s + f(j);
    }
    s
}

/// The largest element of a row, in eight interleaved lanes (see `sum8`).
#[inline(always)]
pub(crate) fn max8<T: Float>(x: &[T]) -> T {
    let mut acc = [T::neg_infinity(); 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = num_traits::Float::max(*a, v);
        }
    }
    let m = acc.iter().fold(T::neg_infinity(), |a, &b| num_traits::Float::max(a, b));
    chunks.remainder().iter().fold(m, |a, &b| num_traits::Float::max(a, b))
}

/// Mean and 1 / sqrt(var + eps) of a row (affine-free LayerNorm's statistics).
#[inline(always)]
pub(crate) fn ln_stats<T: Float>(x: &[T]) -> (T, T) {
    let n = cast::<T>(x.len() as f64);
    let mean = sum8(x.len(), |i| x[i]) / n;
    let var = sum8(x.len(), |i| (x[i] - mean) * (x[i] - mean)) / n;
    (mean, T::one() / (var + cast(LN_EPS)).sqrt())
}

//--------------------------------------------------------------------------------
// GELU (tanh approximation)
//--------------------------------------------------------------------------------

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
    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, x)| {
        for (o, &x) in o.iter_mut().zip(x) {
            *o = half * x * (T::one() + tanh_fast(c * (x + a * x * x * x)));
        }
    });
    out
}

/// d GELU(x) / dx of the tanh approximation.
#[inline(always)]
fn gelu_deriv<T: Float>(x: T) -> T {
    let (c, a, half, three) = (cast::<T>(GELU_C), cast::<T>(GELU_A), cast::<T>(0.5), cast::<T>(3.0));
    let th = tanh_fast(c * (x + a * x * x * x));
    half * (T::one() + th) + half * x * (T::one() - th * th) * c * (T::one() + three * a * x * x)
}

/// `g *= GELU'(x)` elementwise: the gradient of the GELU input from that of its output, in place.
pub(crate) fn gelu_grad_in_place<T: Float>(x: &[T], g: &mut [T]) {
    g.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(g, x)| {
        for (g, &x) in g.iter_mut().zip(x) {
            *g = *g * gelu_deriv(x);
        }
    });
}

fn gelu_bwd<T: Float>(x: &[T], g: &[T]) -> Vec<T> {
    let mut out = g.to_vec();
    gelu_grad_in_place(x, &mut out);
    out
}

struct Gelu;
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
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => CpuStorage::F32(gelu_bwd(slice(x, l1, "gelu")?, slice(g, l2, "gelu")?)),
            (CpuStorage::F64(x), CpuStorage::F64(g)) => CpuStorage::F64(gelu_bwd(slice(x, l1, "gelu")?, slice(g, l2, "gelu")?)),
            _ => candle_core::bail!("gelu grad: f32 or f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// GELU, tanh approximation (as the reference's `nn.GELU(approximate="tanh")`).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if fused_cpu(x) {
        x.contiguous()?.apply_op1(Gelu)
    } else {
        x.gelu()
    }
}

//--------------------------------------------------------------------------------
// Row-wise ops: softmax and affine-free layer norm over the last axis
//--------------------------------------------------------------------------------

fn rows<T: Float>(n: usize, x: &[T], f: impl Fn(&[T], &mut [T]) + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    let per = (CHUNK / n.max(1)).max(1) * n;
    out.par_chunks_mut(per).zip(x.par_chunks(per)).for_each(|(o, x)| {
        for (o, x) in o.chunks_mut(n).zip(x.chunks(n)) {
            f(x, o);
        }
    });
    out
}

fn rows2<T: Float>(n: usize, a: &[T], b: &[T], f: impl Fn(&[T], &[T], &mut [T]) + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); a.len()];
    let per = (CHUNK / n.max(1)).max(1) * n;
    out.par_chunks_mut(per).zip(a.par_chunks(per).zip(b.par_chunks(per))).for_each(|(o, (a, b))| {
        for ((o, a), b) in o.chunks_mut(n).zip(a.chunks(n)).zip(b.chunks(n)) {
            f(a, b, o);
        }
    });
    out
}

fn softmax_row<T: Float>(x: &[T], o: &mut [T]) {
    let m = max8(x);
    // The exps in their own loop vectorise; the sum stays in order.
    o.iter_mut().zip(x).for_each(|(o, &x)| *o = (x - m).exp_fast());
    let inv = T::one() / sum8(o.len(), |i| o[i]);
    o.iter_mut().for_each(|o| *o = *o * inv);
}

/// dx = y * (dy - sum(dy * y)).
fn softmax_grad_row<T: Float>(y: &[T], g: &[T], o: &mut [T]) {
    let dot = sum8(y.len(), |i| y[i] * g[i]);
    for ((o, &y), &g) in o.iter_mut().zip(y).zip(g) {
        *o = y * (g - dot);
    }
}

const LN_EPS: f64 = 1e-6;

fn layer_norm_row<T: Float>(x: &[T], o: &mut [T]) {
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

macro_rules! row_op {
    ($fwd:ident, $grad:ident, $name:literal, $row:ident, $grad_row:ident, $grad_from_res:expr) => {
        struct $fwd;
        struct $grad;
        impl CustomOp1 for $fwd {
            fn name(&self) -> &'static str {
                $name
            }
            fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
                let n = *l.dims().last().unwrap();
                let out = match s {
                    CpuStorage::F32(v) => CpuStorage::F32(rows(n, slice(v, l, $name)?, $row)),
                    CpuStorage::F64(v) => CpuStorage::F64(rows(n, slice(v, l, $name)?, $row)),
                    _ => candle_core::bail!("{}: f32 or f64 only", $name),
                };
                Ok((out, l.shape().clone()))
            }
            fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
                let saved = if $grad_from_res { res } else { arg };
                Ok(Some(saved.apply_op2_no_bwd(&grad.contiguous()?, &$grad)?))
            }
        }
        impl CustomOp2 for $grad {
            fn name(&self) -> &'static str {
                $name
            }
            fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
                let n = *l1.dims().last().unwrap();
                let out = match (s1, s2) {
                    (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                        CpuStorage::F32(rows2(n, slice(a, l1, $name)?, slice(b, l2, $name)?, $grad_row))
                    }
                    (CpuStorage::F64(a), CpuStorage::F64(b)) => {
                        CpuStorage::F64(rows2(n, slice(a, l1, $name)?, slice(b, l2, $name)?, $grad_row))
                    }
                    _ => candle_core::bail!("{}: f32 or f64 only", $name),
                };
                Ok((out, l1.shape().clone()))
            }
        }
    };
}

row_op!(Softmax, SoftmaxGrad, "ditkd-softmax", softmax_row, softmax_grad_row, true);
row_op!(LayerNorm, LayerNormGrad, "ditkd-layer-norm", layer_norm_row, layer_norm_grad_row, false);

/// Softmax over the last axis from candle primitives (max detached: softmax is shift-invariant).
pub fn softmax_last_reference(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Affine-free LayerNorm (eps 1e-6) over the last axis from candle primitives.
pub fn layer_norm_reference(x: &Tensor) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    xc.broadcast_div(&(var + LN_EPS)?.sqrt()?)
}

thread_local! {
    static FUSED: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Turn the fused CPU ops off (or back on) for the calling thread: with `false` every op here
/// takes its `*_reference` path of candle primitives (for tests comparing the two).
pub fn set_fused(on: bool) {
    FUSED.with(|f| f.set(on));
}

pub(crate) fn fused_cpu(x: &Tensor) -> bool {
    FUSED.with(|f| f.get()) && x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// Softmax over the last axis, with a gradient.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    if fused_cpu(x) {
        x.contiguous()?.apply_op1(Softmax)
    } else {
        softmax_last_reference(x)
    }
}

/// LayerNorm over the last axis without affine weights (eps 1e-6), with a gradient.
pub fn layer_norm(x: &Tensor) -> Result<Tensor> {
    if fused_cpu(x) {
        x.contiguous()?.apply_op1(LayerNorm)
    } else {
        layer_norm_reference(x)
    }
}

//--------------------------------------------------------------------------------
// Batched matmul: one single-threaded GEMM per batch item, batch items in parallel
//--------------------------------------------------------------------------------

struct Bmm;

fn bmm_cpu<T: Float + 'static>(a: &[T], la: &Layout, b: &[T], lb: &Layout) -> Result<(Vec<T>, Shape)> {
    let (bs, m, k) = la.shape().dims3()?;
    let (bs2, k2, n) = lb.shape().dims3()?;
    if bs != bs2 || k != k2 {
        candle_core::bail!("bmm: shapes {:?} and {:?} do not multiply", la.dims(), lb.dims());
    }
    let (sa, sb) = (la.stride(), lb.stride());
    let a = &a[la.start_offset()..];
    let b = &b[lb.start_offset()..];
    let mut out = vec![T::zero(); bs * m * n];
    out.par_chunks_mut((m * n).max(1)).enumerate().for_each(|(i, dst)| unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr().add(i * sa[0]),
            sa[2] as isize,
            sa[1] as isize,
            b.as_ptr().add(i * sb[0]),
            sb[2] as isize,
            sb[1] as isize,
            T::zero(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    });
    Ok((out, Shape::from((bs, m, n))))
}

impl CustomOp2 for Bmm {
    fn name(&self) -> &'static str {
        "ditkd-bmm"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => bmm_cpu(a, l1, b, l2).map(|(v, s)| (CpuStorage::F32(v), s)),
            (CpuStorage::F64(a), CpuStorage::F64(b)) => bmm_cpu(a, l1, b, l2).map(|(v, s)| (CpuStorage::F64(v), s)),
            _ => candle_core::bail!("bmm: f32 or f64 only"),
        }
    }
    fn bwd(&self, a: &Tensor, b: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
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

//--------------------------------------------------------------------------------
// Per-row broadcasts over a middle axis, with a fast sum-reduction backward
//--------------------------------------------------------------------------------

/// `x: [A, B, C]` combined with `s: [A, C]` broadcast over `B`. candle's `broadcast_add/mul`
/// backward reduces with `sum_keepdim` over a non-trailing axis, which walks strided indices
/// element by element: from the bias adds and adaLN modulations it was ~15% of the training step.
/// These ops reduce in one contiguous pass instead.
struct AddMid;
struct MulMid;
struct SumMid;

fn bcast_mid<T: Float>(x: &[T], s: &[T], b: usize, c: usize, f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    let c = c.max(1);
    let per = (CHUNK / c).max(1) * c;
    out.par_chunks_mut(per).zip(x.par_chunks(per)).enumerate().for_each(|(k, (o, x))| {
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
                *o = *o + v;
            }
        }
    });
    out
}

/// `[A, B, C]` with `[A, C]`, or `[B, C]` with `[C]` (A = 1: a bias over rows).
fn mid_dims(l1: &Layout, l2: &Layout, op: &str) -> Result<(usize, usize, usize)> {
    let (a, b, c) = match l1.dims() {
        &[b, c] => (1, b, c),
        _ => l1.shape().dims3()?,
    };
    let s = match l2.dims() {
        &[c] => (1, c),
        _ => l2.shape().dims2()?,
    };
    if l1.dims().len() != l2.dims().len() + 1 || s != (a, c) {
        candle_core::bail!("{op}: shapes {:?} and {:?} do not broadcast", l1.dims(), l2.dims());
    }
    Ok((a, b, c))
}

macro_rules! mid_op {
    ($ty:ident, $name:literal, $f:expr) => {
        impl CustomOp2 for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
                let (_, b, c) = mid_dims(l1, l2, $name)?;
                let out = match (s1, s2) {
                    (CpuStorage::F32(x), CpuStorage::F32(s)) => {
                        CpuStorage::F32(bcast_mid(slice(x, l1, $name)?, slice(s, l2, $name)?, b, c, $f))
                    }
                    (CpuStorage::F64(x), CpuStorage::F64(s)) => {
                        CpuStorage::F64(bcast_mid(slice(x, l1, $name)?, slice(s, l2, $name)?, b, c, $f))
                    }
                    _ => candle_core::bail!("{}: f32 or f64 only", $name),
                };
                Ok((out, l1.shape().clone()))
            }
            fn bwd(&self, x: &Tensor, s: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
                let g = g.contiguous()?;
                if $name == "ditkd-add-mid" {
                    let ds = sum_mid(&g)?;
                    Ok((Some(g), Some(ds)))
                } else {
                    let ds = sum_mid(&(&g * x)?)?;
                    Ok((Some(g.apply_op2_no_bwd(s, &MulMid)?), Some(ds)))
                }
            }
        }
    };
}

mid_op!(AddMid, "ditkd-add-mid", |x, s| x + s);
mid_op!(MulMid, "ditkd-mul-mid", |x, s| x * s);

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
fn sum_mid(g: &Tensor) -> Result<Tensor> {
    if g.rank() == 2 {
        let (b, c) = g.dims2()?;
        return g.contiguous()?.reshape((1, b, c))?.apply_op1_no_bwd(&SumMid)?.reshape(c);
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

//--------------------------------------------------------------------------------
// Multi-head self-attention from the packed qkv projection
//--------------------------------------------------------------------------------

/// `[N, T, 3D] -> [N, T, D]` without the head split/merge: every (item, head) reads its q, k, v
/// straight out of the packed projection with strided GEMMs and writes its output columns in place.
/// From primitives the same attention costs three `contiguous` copies, a scale, a transpose copy
/// and their backward nodes (each a gradient accumulation). The backward recomputes the T x T
/// probabilities (T = 49 for 28x28 patch 4) instead of keeping them alive.
struct Attention {
    heads: usize,
}
struct AttentionGrad {
    heads: usize,
}

/// A raw pointer the rayon tasks may share: each task writes a disjoint set of elements.
#[derive(Clone, Copy)]
struct SharedMut<T>(*mut T);
unsafe impl<T: Send + Sync> Send for SharedMut<T> {}
unsafe impl<T: Send + Sync> Sync for SharedMut<T> {}
impl<T> SharedMut<T> {
    /// # Safety
    /// `offset` must lie inside the buffer, and no two tasks may write the same elements.
    unsafe fn at(self, offset: usize) -> *mut T {
        self.0.add(offset)
    }
}

/// `dst[m x n] = alpha * lhs[m x k] . rhs[k x n]`, every operand given as (pointer, row stride,
/// column stride), single-threaded (the caller parallelises over heads).
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_strided<T: Float + 'static>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    dst_rs: usize,
    (lhs, lhs_rs, lhs_cs): (*const T, usize, usize),
    (rhs, rhs_rs, rhs_cs): (*const T, usize, usize),
    alpha: T,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        false,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        T::zero(),
        alpha,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

fn attention_dims(l: &Layout, heads: usize) -> Result<(usize, usize, usize)> {
    let (n, t, d3) = l.shape().dims3()?;
    if d3 % 3 != 0 || heads == 0 || (d3 / 3) % heads != 0 {
        candle_core::bail!("attention: qkv width {d3} is not 3 x a multiple of {heads} heads");
    }
    Ok((n, t, d3 / 3))
}

/// P = softmax(scale Q K^T) of item `b`, head `h` into `p` (t x t).
unsafe fn attention_probs<T: Float + 'static>(qkv: &[T], (b, h): (usize, usize), (t, d, hd): (usize, usize, usize), p: &mut [T]) {
    let q = qkv.as_ptr().add(b * t * 3 * d + h * hd);
    let k = q.add(d);
    let scale = cast::<T>((hd as f64).powf(-0.5));
    // K^T's (row j, column i) is K[i][j]: row stride 1, column stride 3D.
    gemm_strided((t, t, hd), p.as_mut_ptr(), t, (q, 3 * d, 1), (k, 1, 3 * d), scale);
    for row in p.chunks_mut(t) {
        let m = max8(row);
        // The exps in their own loop vectorise; the sum stays in order.
        row.iter_mut().for_each(|v| *v = (*v - m).exp_fast());
        let inv = T::one() / sum8(row.len(), |i| row[i]);
        row.iter_mut().for_each(|v| *v = *v * inv);
    }
}

/// Attention forward; with `keep`, also returns every (item, head)'s probabilities
/// `[N * heads, T, T]` for a backward that then need not recompute them.
fn attention_fwd<T: Float + 'static>(qkv: &[T], n: usize, t: usize, d: usize, heads: usize, keep: bool) -> (Vec<T>, Vec<T>) {
    let hd = d / heads;
    let mut out = vec![T::zero(); n * t * d];
    let mut probs = if keep { vec![T::zero(); n * heads * t * t] } else { Vec::new() };
    let o = SharedMut(out.as_mut_ptr());
    let kept = SharedMut(probs.as_mut_ptr());
    (0..n * heads).into_par_iter().for_each_init(
        || if keep { Vec::new() } else { vec![T::zero(); t * t] },
        |scratch, i| unsafe {
            let (b, h) = (i / heads, i % heads);
            let p: &mut [T] = if keep { std::slice::from_raw_parts_mut(kept.at(i * t * t), t * t) } else { scratch };
            attention_probs(qkv, (b, h), (t, d, hd), p);
            let v = qkv.as_ptr().add(b * t * 3 * d + 2 * d + h * hd);
            // O[:, h*hd..] = P V, written into the merged-heads layout (row stride D).
            gemm_strided((t, hd, t), o.at(b * t * d + h * hd), d, (p.as_ptr(), t, 1), (v, 3 * d, 1), T::one());
        },
    );
    (out, probs)
}

/// Attention backward: the gradient of the packed qkv from `g = dO`. The probabilities come
/// from `probs` when the forward kept them, else are recomputed per (item, head).
pub(crate) fn attention_bwd<T: Float + 'static>(qkv: &[T], probs: Option<&[T]>, g: &[T], n: usize, t: usize, d: usize, heads: usize) -> Vec<T> {
    let hd = d / heads;
    let scale = cast::<T>((hd as f64).powf(-0.5));
    let mut dqkv = vec![T::zero(); n * t * 3 * d];
    let dst = SharedMut(dqkv.as_mut_ptr());
    (0..n * heads).into_par_iter().for_each_init(
        || (if probs.is_some() { Vec::new() } else { vec![T::zero(); t * t] }, vec![T::zero(); t * t]),
        |(scratch, dp), i| unsafe {
            let (b, h) = (i / heads, i % heads);
            let p: &[T] = match probs {
                Some(all) => &all[i * t * t..(i + 1) * t * t],
                None => {
                    attention_probs(qkv, (b, h), (t, d, hd), scratch);
                    scratch
                }
            };
            let q = qkv.as_ptr().add(b * t * 3 * d + h * hd);
            let (k, v) = (q.add(d), q.add(2 * d));
            let go = g.as_ptr().add(b * t * d + h * hd); // dO of this head: row stride D
            let dq = b * t * 3 * d + h * hd;
            // dV = P^T dO
            gemm_strided((t, hd, t), dst.at(dq + 2 * d), 3 * d, (p.as_ptr(), 1, t), (go, d, 1), T::one());
            // dP = dO V^T, then dS = P * (dP - rowsum(dP * P))
            gemm_strided((t, t, hd), dp.as_mut_ptr(), t, (go, d, 1), (v, 1, 3 * d), T::one());
            for (pr, gr) in p.chunks(t).zip(dp.chunks_mut(t)) {
                let dot = sum8(pr.len(), |i| pr[i] * gr[i]);
                for (g, &x) in gr.iter_mut().zip(pr) {
                    *g = x * (*g - dot);
                }
            }
            // dQ = scale dS K, dK = scale dS^T Q
            gemm_strided((t, hd, t), dst.at(dq), 3 * d, (dp.as_ptr(), t, 1), (k, 3 * d, 1), scale);
            gemm_strided((t, hd, t), dst.at(dq + d), 3 * d, (dp.as_ptr(), 1, t), (q, 3 * d, 1), scale);
        },
    );
    dqkv
}

/// Attention of the packed `qkv: [N, T, 3D]` without autograd, returning the output `[N, T, D]`
/// and the probabilities `[N * heads, T, T]` (for the blocks' recorded backward; CPU only).
pub(crate) fn attention_keep_probs(qkv: &Tensor, heads: usize) -> Result<(Tensor, Tensor)> {
    let qkv = qkv.contiguous()?;
    let (n, t, d) = attention_dims(qkv.layout(), heads)?;
    let (out, probs) = {
        let (s, l) = qkv.storage_and_layout();
        match &*s {
            candle_core::Storage::Cpu(CpuStorage::F32(v)) => {
                let (o, p) = attention_fwd(slice(v, l, "attention")?, n, t, d, heads, true);
                (CpuStorage::F32(o), CpuStorage::F32(p))
            }
            candle_core::Storage::Cpu(CpuStorage::F64(v)) => {
                let (o, p) = attention_fwd(slice(v, l, "attention")?, n, t, d, heads, true);
                (CpuStorage::F64(o), CpuStorage::F64(p))
            }
            _ => candle_core::bail!("attention: f32 or f64 on the CPU only"),
        }
    };
    let dev = qkv.device();
    let to_tensor = |c: CpuStorage, shape: (usize, usize, usize)| -> Result<Tensor> {
        match c {
            CpuStorage::F32(v) => Tensor::from_vec(v, shape, dev),
            CpuStorage::F64(v) => Tensor::from_vec(v, shape, dev),
            _ => unreachable!(),
        }
    };
    Ok((to_tensor(out, (n, t, d))?, to_tensor(probs, (n * heads, t, t))?))
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "ditkd-attention"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, t, d) = attention_dims(l, self.heads)?;
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(attention_fwd(slice(v, l, "attention")?, n, t, d, self.heads, false).0),
            CpuStorage::F64(v) => CpuStorage::F64(attention_fwd(slice(v, l, "attention")?, n, t, d, self.heads, false).0),
            _ => candle_core::bail!("attention: f32 or f64 only"),
        };
        Ok((out, Shape::from((n, t, d))))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &AttentionGrad { heads: self.heads })?))
    }
}

impl CustomOp2 for AttentionGrad {
    fn name(&self) -> &'static str {
        "ditkd-attention-grad"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, t, d) = attention_dims(l1, self.heads)?;
        if l2.dims() != [n, t, d] {
            candle_core::bail!("attention grad: gradient {:?} for qkv {:?}", l2.dims(), l1.dims());
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => {
                CpuStorage::F32(attention_bwd(slice(x, l1, "attention")?, None, slice(g, l2, "attention")?, n, t, d, self.heads))
            }
            (CpuStorage::F64(x), CpuStorage::F64(g)) => {
                CpuStorage::F64(attention_bwd(slice(x, l1, "attention")?, None, slice(g, l2, "attention")?, n, t, d, self.heads))
            }
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
    let qkv = qkv.reshape((n, t, 3, heads, hd))?.permute((2, 0, 3, 1, 4))?; // (3, N, H, T, hd)
    let q = (qkv.i(0)?.contiguous()? * (hd as f64).powf(-0.5))?.reshape((n * heads, t, hd))?;
    let k = qkv.i(1)?.contiguous()?.reshape((n * heads, t, hd))?;
    let v = qkv.i(2)?.contiguous()?.reshape((n * heads, t, hd))?;
    let att = softmax_last_reference(&q.matmul(&k.t()?)?)?; // (N*H, T, T)
    let o = att.matmul(&v)?; // (N*H, T, hd)
    o.reshape((n, heads, t, hd))?.transpose(1, 2)?.reshape((n, t, d))
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

//--------------------------------------------------------------------------------
// Linear layer, LayerNorm + modulation, gated residual: one graph node each
//--------------------------------------------------------------------------------
//
// candle's backward gives every graph node a zero-filled gradient buffer and adds each incoming
// gradient into it, so a chain of small ops on [N, T, D] activations (reshape, matmul, transpose,
// bias add, reshape; or layer-norm, 1 + scale, multiply, add) pays a full-size allocation and add
// per link. These ops are each one node whose backward hands every input its gradient directly.

/// `y = x W^T + b`: the bias is copied into every output row and one GEMM accumulates onto it.
struct Linear;

/// The current rayon pool's size: a sweep worker's own pool, or the global one.
pub(crate) fn gemm_threads() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

fn linear_fwd<T: Float + 'static>(x: &[T], w: &[T], b: &[T], rows: usize, k: usize, o: usize) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(rows * o);
    for _ in 0..rows {
        out.extend_from_slice(b);
    }
    // W^T's (row j, column i) is W[i][j]: row stride 1, column stride K.
    unsafe {
        gemm::gemm(
            rows,
            o,
            k,
            out.as_mut_ptr(),
            1,
            o as isize,
            true,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            T::one(),
            T::one(),
            false,
            false,
            false,
            gemm_threads(),
        )
    };
    out
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "ditkd-linear"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (o, k2) = l2.shape().dims2()?;
        let Some((&k, lead)) = l1.dims().split_last() else { candle_core::bail!("linear: input must have at least one axis") };
        if k != k2 || l3.dims() != [o] {
            candle_core::bail!("linear: input {:?}, weight {:?}, bias {:?} do not match", l1.dims(), l2.dims(), l3.dims());
        }
        let rows: usize = lead.iter().product();
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => {
                CpuStorage::F32(linear_fwd(slice(x, l1, "linear")?, slice(w, l2, "linear")?, slice(b, l3, "linear")?, rows, k, o))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => {
                CpuStorage::F64(linear_fwd(slice(x, l1, "linear")?, slice(w, l2, "linear")?, slice(b, l3, "linear")?, rows, k, o))
            }
            _ => candle_core::bail!("linear: f32 or f64 only"),
        };
        let mut dims = l1.dims().to_vec();
        *dims.last_mut().unwrap() = o;
        Ok((out, Shape::from(dims)))
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (o, k) = w.dims2()?;
        let rows = x.dims()[..x.rank() - 1].iter().product::<usize>();
        let g = g.contiguous()?.reshape((rows, o))?;
        let x2 = x.reshape((rows, k))?;
        // dY W, skipped for inputs nothing upstream learns from (the patchified images, timestep features).
        let dx = if x.track_op() { Some(g.matmul(w)?.reshape(x.dims())?) } else { None };
        let dw = g.t()?.matmul(&x2)?; // dY^T X
        let db = sum_mid(&g)?; // column sums of dY
        Ok((dx, Some(dw), Some(db)))
    }
}

/// `x W^T + b` from candle primitives.
pub fn linear_reference(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let last = *dims.last().unwrap();
    let rows = x.elem_count() / last;
    let y = x.reshape((rows, last))?.matmul(&w.t()?)?.broadcast_add(b)?;
    let mut out_dims = dims;
    *out_dims.last_mut().unwrap() = w.dim(0)?;
    y.reshape(out_dims)
}

/// `x W^T + b` over the last axis of `x` (`w: [O, K]`, `b: [O]`), with a gradient.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fused_cpu(x) {
        x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, Linear)
    } else {
        linear_reference(x, w, b)
    }
}

/// `LayerNorm(x) * (1 + scale) + shift`, `x: [N, T, D]`, `shift, scale: [N, D]` (adaLN).
struct LnModulate;

impl CustomOp3 for LnModulate {
    fn name(&self) -> &'static str {
        "ditkd-ln-modulate"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, t, d) = mid_dims(l1, l2, "ln_modulate")?;
        mid_dims(l1, l3, "ln_modulate")?;
        fn run<T: Float>(x: &[T], shift: &[T], scale: &[T], t: usize, d: usize) -> Vec<T> {
            let mut out = rows(d, x, layer_norm_row);
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
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(sh), CpuStorage::F32(sc)) => {
                CpuStorage::F32(run(slice(x, l1, "ln_modulate")?, slice(sh, l2, "ln_modulate")?, slice(sc, l3, "ln_modulate")?, t, d))
            }
            (CpuStorage::F64(x), CpuStorage::F64(sh), CpuStorage::F64(sc)) => {
                CpuStorage::F64(run(slice(x, l1, "ln_modulate")?, slice(sh, l2, "ln_modulate")?, slice(sc, l3, "ln_modulate")?, t, d))
            }
            _ => candle_core::bail!("ln_modulate: f32 or f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _shift: &Tensor, scale: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
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
    add_mid_reference(&mul_mid_reference(&layer_norm_reference(x)?, &(scale + 1.0)?)?, shift)
}

/// adaLN: affine-free LayerNorm (eps 1e-6) of `x: [N, T, D]`, then `* (1 + scale) + shift` with
/// `shift, scale: [N, D]` broadcast over the tokens, with a gradient.
pub fn ln_modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    if fused_cpu(x) {
        x.contiguous()?.apply_op3(&shift.contiguous()?, &scale.contiguous()?, LnModulate)
    } else {
        ln_modulate_reference(x, shift, scale)
    }
}

/// `x + a * gate`, `x, a: [N, T, D]`, `gate: [N, D]` (adaLN-Zero's gated residual).
struct GatedResidual;

impl CustomOp3 for GatedResidual {
    fn name(&self) -> &'static str {
        "ditkd-gated-residual"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, t, d) = mid_dims(l2, l3, "gated_residual")?;
        if l1.dims() != l2.dims() {
            candle_core::bail!("gated_residual: x {:?} and branch {:?} differ", l1.dims(), l2.dims());
        }
        fn run<T: Float>(x: &[T], a: &[T], g: &[T], t: usize, d: usize) -> Vec<T> {
            let mut out = bcast_mid(a, g, t, d, |a, g| a * g);
            out.par_iter_mut().zip(x.par_iter()).for_each(|(o, &x)| *o = *o + x);
            out
        }
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(a), CpuStorage::F32(g)) => {
                CpuStorage::F32(run(slice(x, l1, "gated_residual")?, slice(a, l2, "gated_residual")?, slice(g, l3, "gated_residual")?, t, d))
            }
            (CpuStorage::F64(x), CpuStorage::F64(a), CpuStorage::F64(g)) => {
                CpuStorage::F64(run(slice(x, l1, "gated_residual")?, slice(a, l2, "gated_residual")?, slice(g, l3, "gated_residual")?, t, d))
            }
            _ => candle_core::bail!("gated_residual: f32 or f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }
    fn bwd(&self, _x: &Tensor, a: &Tensor, gate: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
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
        x.contiguous()?.apply_op3(&a.contiguous()?, &gate.contiguous()?, GatedResidual)
    } else {
        gated_residual_reference(x, a, gate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp, Var};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let mut r = crate::rng::seeded(seed);
        crate::rng::randn(&mut r, shape, &Device::Cpu).unwrap().to_dtype(DType::F64).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap()
    }

    /// Forward and gradient of each fused op equal candle's primitive version.
    fn same_as_reference(f: impl Fn(&Tensor) -> Result<Tensor>, r: impl Fn(&Tensor) -> Result<Tensor>, shape: &[usize], grad_tol: f64) {
        let x = Var::from_tensor(&(rand(shape, 1) * 2.0).unwrap()).unwrap();
        let w = rand(shape, 2);
        let (yf, yr) = (f(x.as_tensor()).unwrap(), r(x.as_tensor()).unwrap());
        assert!(max_diff(&yf, &yr) < 1e-12);
        let gf = (yf * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (yr * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let d = max_diff(gf.get(x.as_tensor()).unwrap(), gr.get(x.as_tensor()).unwrap());
        assert!(d < grad_tol, "gradient differs by {d}");
    }

    #[test]
    fn exp_f32_is_accurate_over_the_whole_range() {
        let mut worst: f64 = 0.0;
        for i in 0..=400_000 {
            let x = -87.0 + 175.0 * i as f64 / 400_000.0;
            let got = exp_f32(x as f32) as f64;
            let want = (x as f32 as f64).exp();
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 3e-7, "relative error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1000.0) < 1e-37 && exp_f32(-1000.0) >= 0.0);
        assert!(exp_f32(1000.0) > 1e38 && exp_f32(1000.0).is_finite());
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn gelu_matches_candle() {
        // candle's GELU backward uses 6-digit constants; ours is exact (see the finite-difference test).
        same_as_reference(gelu, |x| x.gelu(), &[3, 5, 7], 1e-5);
    }

    #[test]
    fn softmax_matches_primitives() {
        same_as_reference(softmax_last, softmax_last_reference, &[4, 3, 9], 1e-10);
    }

    #[test]
    fn layer_norm_matches_primitives() {
        same_as_reference(layer_norm, layer_norm_reference, &[4, 3, 16], 1e-10);
    }

    #[test]
    fn bmm_matches_matmul_with_strided_inputs() {
        let a = Var::from_tensor(&rand(&[6, 5, 4], 3)).unwrap();
        let b = Var::from_tensor(&rand(&[6, 7, 4], 4)).unwrap(); // used transposed: a stride view
        let w = rand(&[6, 5, 7], 5);
        let bt = b.as_tensor().t().unwrap();
        let (yf, yr) = (bmm(a.as_tensor(), &bt).unwrap(), a.as_tensor().matmul(&bt).unwrap());
        assert!(max_diff(&yf, &yr) < 1e-12);
        let gf = (yf * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (yr * &w).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&a, &b] {
            assert!(max_diff(gf.get(v.as_tensor()).unwrap(), gr.get(v.as_tensor()).unwrap()) < 1e-12);
        }
    }

    /// Forward and every input's gradient of a three-input fused op equal the reference's.
    fn same_as_reference3(f: fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>, r: fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>, shapes: [&[usize]; 3]) {
        let v: Vec<Var> = shapes.iter().enumerate().map(|(i, s)| Var::from_tensor(&rand(s, 10 + i as u64)).unwrap()).collect();
        let (yf, yr) = (f(&v[0], &v[1], &v[2]).unwrap(), r(&v[0], &v[1], &v[2]).unwrap());
        assert!(max_diff(&yf, &yr) < 1e-12);
        let w = rand(yf.dims(), 2);
        let gf = (yf * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (yr * &w).unwrap().sum_all().unwrap().backward().unwrap();
        for v in &v {
            let d = max_diff(gf.get(v.as_tensor()).unwrap(), gr.get(v.as_tensor()).unwrap());
            assert!(d < 1e-10, "gradient differs by {d}");
        }
    }

    #[test]
    fn linear_matches_primitives() {
        same_as_reference3(linear, linear_reference, [&[3, 5, 7], &[4, 7], &[4]]);
        same_as_reference3(linear, linear_reference, [&[6, 7], &[4, 7], &[4]]);
    }

    #[test]
    fn ln_modulate_matches_primitives() {
        same_as_reference3(ln_modulate, ln_modulate_reference, [&[3, 5, 8], &[3, 8], &[3, 8]]);
    }

    #[test]
    fn gated_residual_matches_primitives() {
        same_as_reference3(gated_residual, gated_residual_reference, [&[3, 5, 8], &[3, 5, 8], &[3, 8]]);
    }

    #[test]
    fn attention_matches_primitives() {
        // Two heads of width 3, T = 5: the fused op reads q, k, v out of the packed projection.
        let x = Var::from_tensor(&(rand(&[3, 5, 18], 1) * 2.0).unwrap()).unwrap();
        let w = rand(&[3, 5, 6], 2);
        let (yf, yr) = (attention(x.as_tensor(), 2).unwrap(), attention_reference(x.as_tensor(), 2).unwrap());
        assert_eq!(yf.dims(), [3, 5, 6]);
        assert!(max_diff(&yf, &yr) < 1e-12);
        let gf = (yf * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (yr * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let d = max_diff(gf.get(x.as_tensor()).unwrap(), gr.get(x.as_tensor()).unwrap());
        assert!(d < 1e-10, "gradient differs by {d}");
        let bad = Tensor::zeros((2, 5, 18), DType::F32, &Device::Cpu).unwrap();
        assert!(attention(&bad, 4).unwrap_err().to_string().contains("4 heads"));
    }

    #[test]
    fn add_mul_mid_match_primitives() {
        type Op = fn(&Tensor, &Tensor) -> Result<Tensor>;
        let pairs: [(Op, Op); 2] = [(add_mid, add_mid_reference), (mul_mid, mul_mid_reference)];
        for (f, r) in pairs {
            for (a, b, c) in [(4, 5, 6), (1, 9, 7), (3, 1000, 11)] {
                let x = Var::from_tensor(&rand(&[a, b, c], 1)).unwrap();
                let s = Var::from_tensor(&rand(&[a, c], 2)).unwrap();
                let w = rand(&[a, b, c], 3);
                let (yf, yr) = (f(x.as_tensor(), s.as_tensor()).unwrap(), r(x.as_tensor(), s.as_tensor()).unwrap());
                assert!(max_diff(&yf, &yr) < 1e-12);
                let gf = (yf * &w).unwrap().sum_all().unwrap().backward().unwrap();
                let gr = (yr * &w).unwrap().sum_all().unwrap().backward().unwrap();
                for v in [&x, &s] {
                    let d = max_diff(gf.get(v.as_tensor()).unwrap(), gr.get(v.as_tensor()).unwrap());
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
        let (yf, yr) = (add_mid(x.as_tensor(), s.as_tensor()).unwrap(), x.as_tensor().broadcast_add(s.as_tensor()).unwrap());
        assert!(max_diff(&yf, &yr) < 1e-12);
        let gf = (yf * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (yr * &w).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &s] {
            let (a, b) = (gf.get(v.as_tensor()).unwrap(), gr.get(v.as_tensor()).unwrap());
            assert_eq!(a.dims(), b.dims());
            assert!(max_diff(a, b) < 1e-10);
        }
    }

    /// Each op's gradient against central differences, element by element (f64).
    #[test]
    fn fused_ops_pass_finite_differences() {
        let ops: Vec<(&str, Box<dyn Fn(&Tensor) -> Result<Tensor>>)> = vec![
            ("gelu", Box::new(gelu)),
            ("softmax", Box::new(softmax_last)),
            ("layer_norm", Box::new(layer_norm)),
            ("bmm", Box::new(|x: &Tensor| bmm(x, &x.t()?))),
            // x: [2, 3, 3] against s = a slice of x itself, so both arguments' gradients are exercised.
            ("add_mid", Box::new(|x: &Tensor| add_mid(x, &x.i((.., 0, ..))?.sqr()?))),
            ("mul_mid", Box::new(|x: &Tensor| mul_mid(x, &x.i((.., 1, ..))?))),
            ("bias", Box::new(|x: &Tensor| add_mid(&x.reshape((6, 3))?, &x.i((0, 0, ..))?.sqr()?))),
        ];
        for (name, f) in ops {
            let x0 = rand(&[2, 3, 3], 7);
            let w = f(&x0).map(|y| rand(y.dims(), 8)).unwrap();
            let x = Var::from_tensor(&x0).unwrap();
            let g = (f(x.as_tensor()).unwrap() * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let g: Vec<f64> = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let base: Vec<f64> = x0.flatten_all().unwrap().to_vec1().unwrap();
            for i in 0..base.len() {
                let at = |d: f64| {
                    let mut v = base.clone();
                    v[i] += d;
                    let t = Tensor::from_vec(v, x0.dims(), &Device::Cpu).unwrap();
                    (f(&t).unwrap() * &w).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
                };
                let num = (at(1e-6) - at(-1e-6)) / 2e-6;
                let err = (num - g[i]).abs() / num.abs().max(g[i].abs()).max(1e-6);
                assert!(err < 1e-5, "{name}[{i}]: analytic {} numeric {num}", g[i]);
            }
        }
    }
}
