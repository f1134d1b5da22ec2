//! Fused CPU ops with hand-written backward passes, for the training step's hot spots.
//!
//! candle's own fused CPU softmax / layer-norm carry no gradient, its GELU backward is a chain of
//! about a dozen scalar tensor ops, and its batched matmul runs one multi-threaded GEMM per batch
//! item (thread hand-off dominates for attention's 49x32 tiles). Each op here computes in f32 or
//! f64, parallelises over rows or batch items with rayon, and defines `bwd` so autograd flows.
//! On other devices the model uses the equivalent candle primitives (each op's `*_reference`),
//! which the tests compare against; `tests/gradcheck.rs` checks every gradient by finite
//! differences.
//!
//! One op per file, each with its kernel, its candle custom op (forward and backward), its
//! reference from candle primitives and the tests that compare the two. Every matrix product goes
//! through the bounds-checked wrapper in `gemm.rs`.

mod attention;
mod bmm;
mod float;
mod gated_residual;
mod gelu;
pub(crate) mod gemm;
mod layer_norm;
mod linear;
mod ln_modulate;
mod mid;
mod softmax;
#[cfg(test)]
mod testutil;

pub use attention::{attention, attention_reference};
pub use bmm::bmm;
pub use gated_residual::{gated_residual, gated_residual_reference};
pub use gelu::gelu;
pub use layer_norm::{layer_norm, layer_norm_reference};
pub use linear::{linear, linear_reference};
pub use ln_modulate::{ln_modulate, ln_modulate_reference};
pub use mid::{add_mid, add_mid_reference, mul_mid, mul_mid_reference};
pub use softmax::{softmax_last, softmax_last_reference};

pub(crate) use attention::{attention_bwd, attention_keep_probs, attention_seq_into};
pub(crate) use float::{cast, sum8, Float};
pub(crate) use gelu::{gelu_grad_in_place, gelu_in_place};
pub(crate) use layer_norm::ln_stats;

use candle_core::{DType, Layout, Result, Tensor};
use rayon::prelude::*;

/// Elements handed to one rayon task (amortises scheduling for short rows).
const CHUNK: usize = 8192;

/// Contiguous data of a CPU storage, or an error for anything we do not handle.
fn slice<'a, T: candle_core::WithDType>(s: &'a [T], l: &Layout, op: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// The length of the last axis, the rows a row-wise op works on.
fn row_len(l: &Layout, op: &str) -> Result<usize> {
    match l.dims().last() {
        Some(&n) => Ok(n),
        None => candle_core::bail!("{op}: a scalar has no rows"),
    }
}

/// Elements per rayon task for rows of `n`: whole rows, about `CHUNK` in all.
fn rows_per_task(n: usize) -> usize {
    ((CHUNK / n.max(1)).max(1) * n).max(1)
}

/// `f(row of x, row of out)` for every row of length `n`, rows in parallel.
fn map_rows<T: Float>(n: usize, x: &[T], f: impl Fn(&[T], &mut [T]) + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    let per = rows_per_task(n);
    out.par_chunks_mut(per)
        .zip(x.par_chunks(per))
        .for_each(|(o, x)| {
            for (o, x) in o.chunks_mut(n).zip(x.chunks(n)) {
                f(x, o);
            }
        });
    out
}

/// `f(row of a, row of b, row of out)` for every row of length `n`, rows in parallel.
fn map_rows2<T: Float>(
    n: usize,
    a: &[T],
    b: &[T],
    f: impl Fn(&[T], &[T], &mut [T]) + Sync,
) -> Vec<T> {
    let mut out = vec![T::zero(); a.len()];
    let per = rows_per_task(n);
    out.par_chunks_mut(per)
        .zip(a.par_chunks(per).zip(b.par_chunks(per)))
        .for_each(|(o, (a, b))| {
            for ((o, a), b) in o.chunks_mut(n).zip(a.chunks(n)).zip(b.chunks(n)) {
                f(a, b, o);
            }
        });
    out
}

thread_local! {
    static FUSED: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Turn the fused CPU ops off (or back on) for the calling thread: with `false` every op here
/// takes its `*_reference` path of candle primitives (for tests comparing the two).
pub fn set_fused(on: bool) {
    FUSED.with(|f| f.set(on));
}

/// Whether the ops take their fused CPU kernels for `x` (CPU, f32 or f64, not switched off).
pub(crate) fn fused_cpu(x: &Tensor) -> bool {
    FUSED.with(|f| f.get()) && x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}
