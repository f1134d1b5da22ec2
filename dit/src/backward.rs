//! The DiT blocks' hand-written backward: the CPU training step's fast path.
//!
//! candle's autograd gives every graph node a zero-filled gradient buffer and adds each incoming
//! gradient into it. Over a block's dozen `[N, T, D..4D]` activations that is a memset, an add and
//! fresh pages per link, and it was the largest cost left in the backward after the fused ops of
//! `crate::ops`. While a tape is recording (`DiT::record_tape`), the blocks run detached and keep
//! their activations; `DiT::backward` then runs candle's autograd over the loss and the final
//! layer only, walks the blocks in reverse here (GEMMs straight into their outputs, adaLN and
//! gate gradients in one pass per item, the residual gradient accumulated in place), and hands
//! the patch and condition embedders their gradients. The maths is the per-op backward of
//! `crate::ops`, so gradients agree with candle's autograd to float rounding
//! (`tests/manual_backward.rs`).

use candle_core::backprop::GradStore;
use candle_core::{DType, Layout, Result, Storage, Tensor, Var};
use rayon::prelude::*;

use crate::model::{DiT, DiTBlock};
use crate::ops::{attention_bwd, cast, gelu_grad_in_place, gemm_threads, ln_stats, sum8, Float};

/// What one block's forward keeps for its backward (all detached, contiguous).
pub(crate) struct BlockTape {
    pub x: Tensor,   // block input [N, T, D]
    pub m: Tensor,   // adaLN modulation [N, 6D]: shift, scale, gate (attention), shift, scale, gate (MLP)
    pub h1: Tensor,  // modulated LayerNorm before attention [N, T, D]
    pub qkv: Tensor, // [N, T, 3D]
    pub probs: Tensor, // attention probabilities [N * heads, T, T]
    pub o: Tensor,   // attention output, heads merged [N, T, D]
    pub a: Tensor,   // after the projection [N, T, D]
    pub x2: Tensor,  // after the attention residual [N, T, D]
    pub h2: Tensor,  // modulated LayerNorm before the MLP [N, T, D]
    pub f1: Tensor,  // fc1 output [N, T, 4D]
    pub g1: Tensor,  // GELU(f1) [N, T, 4D]
    pub f: Tensor,   // fc2 output [N, T, D]
}

/// One forward pass recorded for the hand-written backward.
pub(crate) struct Tape {
    pub patches: Tensor,    // patchified input [N, T, C*p*p]
    pub c: Tensor,          // SiLU(conditioning) [N, D], tracked: its embedders stay on autograd
    pub blocks: Vec<BlockTape>,
    pub outs: Vec<Var>,     // each block's output as a leaf: the features; the last feeds the final layer
}

/// The contiguous CPU data behind a tensor.
fn cpu_slice<'a, T: candle_core::WithDType>(s: &'a Storage, l: &Layout) -> Result<&'a [T]> {
    let Storage::Cpu(cs) = s else { candle_core::bail!("hand-written backward: CPU tensors only") };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&cs.as_slice::<T>()?[a..b]),
        None => candle_core::bail!("hand-written backward: a saved tensor is not contiguous"),
    }
}

/// `let name: &[T]` borrowing the data of a tensor for the rest of the scope.
macro_rules! data {
    ($t:expr => $name:ident) => {
        let guard = $t.storage_and_layout();
        let $name: &[T] = cpu_slice(&guard.0, guard.1)?;
    };
}

/// `dst[m x n] = lhs[m x k] . rhs[k x n]`, operands as (data, row stride, column stride).
fn mm<T: Float + 'static>((m, n, k): (usize, usize, usize), dst: &mut [T], lhs: (&[T], usize, usize), rhs: (&[T], usize, usize)) {
    assert!(dst.len() >= m * n);
    assert!(m == 0 || k == 0 || lhs.0.len() > (m - 1) * lhs.1 + (k - 1) * lhs.2);
    assert!(n == 0 || k == 0 || rhs.0.len() > (k - 1) * rhs.1 + (n - 1) * rhs.2);
    // SAFETY: the asserts keep every index inside the slices; dst does not alias lhs or rhs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.0.as_ptr(),
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0.as_ptr(),
            rhs.2 as isize,
            rhs.1 as isize,
            T::zero(),
            T::one(),
            false,
            false,
            false,
            gemm_threads(),
        )
    }
}

/// Column sums of `g: [R, C]`, in a fixed order (partial sums per chunk of rows, then in sequence),
/// so results do not depend on thread scheduling.
fn col_sums<T: Float>(g: &[T], cols: usize) -> Vec<T> {
    let rows = g.len() / cols.max(1);
    let per = rows.div_ceil(16).max(64) * cols;
    let parts: Vec<Vec<T>> = g
        .par_chunks(per.max(1))
        .map(|ch| {
            let mut acc = vec![T::zero(); cols];
            for row in ch.chunks(cols) {
                acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
            }
            acc
        })
        .collect();
    let mut out = vec![T::zero(); cols];
    for p in parts {
        out.iter_mut().zip(p).for_each(|(a, v)| *a += v);
    }
    out
}

/// Backward of `y = x W^T + b` (`x: [R, K]`, `W: [O, K]`) given `dy: [R, O]`: `dx` into `dx`
/// (when given), and `(dW, db)`.
fn linear_bwd<T: Float + 'static>(dy: &[T], x: &[T], w: &[T], (r, k, o): (usize, usize, usize), dx: Option<&mut [T]>) -> (Vec<T>, Vec<T>) {
    if let Some(dx) = dx {
        mm((r, k, o), dx, (dy, o, 1), (w, k, 1)); // dY W
    }
    let mut dw = vec![T::zero(); o * k];
    mm((o, k, r), &mut dw, (dy, 1, o), (x, k, 1)); // dY^T X
    (dw, col_sums(dy, o))
}

/// One row of adaLN's backward. With `xh = LayerNorm(x)` and `y = xh (1 + scale) + shift`:
/// `dshift += g`, `dscale += g xh`, and `dx += LayerNorm'(x)^T (g (1 + scale))`.
#[inline]
fn ln_modulate_bwd_row<T: Float>(x: &[T], g: &[T], scale: &[T], dshift: &mut [T], dscale: &mut [T], dx: &mut [T]) {
    let nf = cast::<T>(x.len() as f64);
    let (mean, inv) = ln_stats(x);
    for j in 0..x.len() {
        dshift[j] += g[j];
        dscale[j] += g[j] * (x[j] - mean) * inv;
    }
    let mg = sum8(x.len(), |j| g[j] * (T::one() + scale[j])) / nf;
    let mgy = sum8(x.len(), |j| g[j] * (T::one() + scale[j]) * (x[j] - mean) * inv) / nf;
    for j in 0..x.len() {
        let xh = (x[j] - mean) * inv;
        let gh = g[j] * (T::one() + scale[j]);
        dx[j] += (gh - mg - xh * mgy) * inv;
    }
}

/// `dgate += sum_t dy * branch` and `dbranch = dy * gate` for each item (gate = `[N, D]` broadcast
/// over the tokens), where `y = x + branch * gate`.
fn gate_bwd<T: Float>(dy: &[T], branch: &[T], m: &[T], dm: &mut [T], dbranch: &mut [T], (t, d): (usize, usize), slot: usize) {
    dm.par_chunks_mut(6 * d)
        .zip(dbranch.par_chunks_mut(t * d))
        .enumerate()
        .for_each(|(i, (dmi, db))| {
            let gate = &m[i * 6 * d + slot * d..i * 6 * d + (slot + 1) * d];
            let dgate = &mut dmi[slot * d..(slot + 1) * d];
            let off = i * t * d;
            for (row, dbr) in db.chunks_mut(d).enumerate() {
                let (g, b) = (&dy[off + row * d..off + (row + 1) * d], &branch[off + row * d..off + (row + 1) * d]);
                for j in 0..d {
                    dgate[j] += g[j] * b[j];
                    dbr[j] = g[j] * gate[j];
                }
            }
        });
}

/// adaLN backward for every item: shift/scale gradients into `dm` at `slot`, `slot + 1`, and the
/// input gradient added into `dx` (which holds the residual stream's gradient).
fn ln_modulate_bwd<T: Float>(x: &[T], g: &[T], m: &[T], dm: &mut [T], dx: &mut [T], (t, d): (usize, usize), slot: usize) {
    dm.par_chunks_mut(6 * d).zip(dx.par_chunks_mut(t * d)).enumerate().for_each(|(i, (dmi, dxi))| {
        let scale = &m[i * 6 * d + (slot + 1) * d..i * 6 * d + (slot + 2) * d];
        let (dshift, rest) = dmi[slot * d..(slot + 2) * d].split_at_mut(d);
        let off = i * t * d;
        for (row, dxr) in dxi.chunks_mut(d).enumerate() {
            let s = off + row * d..off + (row + 1) * d;
            ln_modulate_bwd_row(&x[s.clone()], &g[s], scale, dshift, rest, dxr);
        }
    });
}

/// A parameter's gradient waiting to go into the gradient store.
type ParamGrad<T> = (Tensor, Vec<T>);

impl DiTBlock {
    /// Backward of one block: `dy` (the gradient of its output) becomes the gradient of its
    /// input in place; returns the gradient of the conditioning `c: [N, D]` and pushes every
    /// parameter's gradient.
    fn backward<T: Float + 'static>(&self, tp: &BlockTape, c: &[T], dy: &mut [T], grads: &mut Vec<ParamGrad<T>>) -> Result<Vec<T>> {
        let (n, t, d) = tp.x.dims3()?;
        let hid = tp.f1.dim(2)?;
        let r = n * t;
        data!(tp.x => x);
        data!(tp.m => m);
        data!(tp.h1 => h1);
        data!(tp.qkv => qkv);
        data!(tp.probs => probs);
        data!(tp.o => o);
        data!(tp.a => a);
        data!(tp.x2 => x2);
        data!(tp.h2 => h2);
        data!(tp.f1 => f1);
        data!(tp.g1 => g1);
        data!(tp.f => f);
        data!(self.fc1_w => fc1_w);
        data!(self.fc2_w => fc2_w);
        data!(self.proj_w => proj_w);
        data!(self.qkv_w => qkv_w);
        data!(self.ada_w => ada_w);

        let mut dm = vec![T::zero(); n * 6 * d]; // gradient of the modulation
        let mut buf_d = vec![T::zero(); r * d]; // gradient of a [N, T, D] branch, reused

        // ---- MLP branch: y = x2 + fc2(gelu(fc1(h2))) * gate_mlp
        gate_bwd(dy, f, m, &mut dm, &mut buf_d, (t, d), 5);
        let mut dg1 = vec![T::zero(); r * hid];
        let (dw, db) = linear_bwd(&buf_d, g1, fc2_w, (r, hid, d), Some(&mut dg1));
        grads.push((self.fc2_w.clone(), dw));
        grads.push((self.fc2_b.clone(), db));
        gelu_grad_in_place(f1, &mut dg1);
        let (dw, db) = linear_bwd(&dg1, h2, fc1_w, (r, d, hid), Some(&mut buf_d));
        drop(dg1);
        grads.push((self.fc1_w.clone(), dw));
        grads.push((self.fc1_b.clone(), db));
        ln_modulate_bwd(x2, &buf_d, m, &mut dm, dy, (t, d), 3); // dy is now d x2

        // ---- attention branch: x2 = x + proj(attn(qkv(h1))) * gate_msa
        let mut da = vec![T::zero(); r * d];
        gate_bwd(dy, a, m, &mut dm, &mut da, (t, d), 2);
        let (dw, db) = linear_bwd(&da, o, proj_w, (r, d, d), Some(&mut buf_d));
        grads.push((self.proj_w.clone(), dw));
        grads.push((self.proj_b.clone(), db));
        let dqkv = attention_bwd(qkv, Some(probs), &buf_d, n, t, d, self.num_heads);
        let (dw, db) = linear_bwd(&dqkv, h1, qkv_w, (r, d, 3 * d), Some(&mut da));
        drop(dqkv);
        grads.push((self.qkv_w.clone(), dw));
        grads.push((self.qkv_b.clone(), db));
        ln_modulate_bwd(x, &da, m, &mut dm, dy, (t, d), 0); // dy is now d x

        // ---- adaLN modulation: m = c W^T + b
        let mut dc = vec![T::zero(); n * d];
        let (dw, db) = linear_bwd(&dm, c, ada_w, (n, d, 6 * d), Some(&mut dc));
        grads.push((self.ada_w.clone(), dw));
        grads.push((self.ada_b.clone(), db));
        Ok(dc)
    }
}

/// Add `g` to the gradient the store holds for `var` (or store it).
fn accumulate(grads: &mut GradStore, var: &Tensor, g: Tensor) -> Result<()> {
    let g = match grads.remove(var) {
        Some(old) => (old + g)?,
        None => g,
    };
    grads.insert(var, g);
    Ok(())
}

impl DiT {
    /// Backward of one recorded forward, after candle's autograd has filled `grads` for the loss
    /// and the final layer (including the leaves `tape.outs`).
    fn backward_tape<T: Float + 'static>(&self, tape: &Tape, grads: &mut GradStore) -> Result<()> {
        let dev = self.device().clone();
        let (n, t, d) = tape.blocks[0].x.dims3()?;
        let leaf_grad = |v: &Var, grads: &GradStore| -> Result<Option<Vec<T>>> {
            match grads.get(v.as_tensor()) {
                Some(g) => Ok(Some(g.contiguous()?.flatten_all()?.to_vec1::<T>()?)),
                None => Ok(None),
            }
        };
        let mut dh = vec![T::zero(); n * t * d];
        let mut dc = vec![T::zero(); n * d];
        let mut pgrads: Vec<ParamGrad<T>> = Vec::new();
        {
            data!(tape.c => c);
            for (i, (blk, tp)) in self.blocks.iter().zip(&tape.blocks).enumerate().rev() {
                if let Some(g) = leaf_grad(&tape.outs[i], grads)? {
                    dh.par_iter_mut().zip(g.par_iter()).for_each(|(a, &b)| *a += b);
                }
                let dci = blk.backward(tp, c, &mut dh, &mut pgrads)?;
                dc.iter_mut().zip(dci).for_each(|(a, b)| *a += b);
            }
            // Patch embedding: h0 = patches W^T + b + pos_embed (fixed).
            data!(tape.patches => patches);
            let cpp = tape.patches.dim(2)?;
            let (dw, db) = linear_bwd(&dh, patches, &[], (n * t, cpp, d), None);
            pgrads.push((self.x_w_var.clone(), dw));
            pgrads.push((self.x_b.clone(), db));
        }
        for (var, g) in pgrads {
            let g = Tensor::from_vec(g, var.dims(), &dev)?;
            accumulate(grads, &var, g)?;
        }
        // The conditioning path (timestep MLP, label table) is small: candle's autograd on
        // sum(c * dc) gives its parameters the blocks' share of the gradient.
        let dc = Tensor::from_vec(dc, (n, d), &dev)?;
        let g2 = (&tape.c * dc)?.sum_all()?.backward()?;
        for var in [&self.t_w0, &self.t_b0, &self.t_w2, &self.t_b2, &self.y_table] {
            if let Some(g) = g2.get(var) {
                accumulate(grads, var, g.clone())?;
            }
        }
        Ok(())
    }

    /// The loss's gradient for every parameter. After `record_tape`, the blocks of every forward
    /// since then take the hand-written backward; otherwise this is `loss.backward()`.
    pub fn backward(&self, loss: &Tensor) -> Result<GradStore> {
        let tapes = self.take_tapes();
        let mut grads = loss.backward()?;
        for tape in &tapes {
            match self.dtype() {
                DType::F32 => self.backward_tape::<f32>(tape, &mut grads)?,
                DType::F64 => self.backward_tape::<f64>(tape, &mut grads)?,
                other => candle_core::bail!("hand-written backward: {other:?} is not supported"),
            }
        }
        Ok(grads)
    }
}
