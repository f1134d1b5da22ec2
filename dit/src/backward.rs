//! The CPU training step's fast path: a forward that records the blocks' activations on a
//! `Tape`, and the blocks' hand-written backward that reads them.
//!
//! candle's autograd gives every graph node a zero-filled gradient buffer and adds each incoming
//! gradient into it. Over a block's dozen `[N, T, D..4D]` activations that is a memset, an add and
//! fresh pages per link, and it was the largest cost left in the backward after the fused ops of
//! `crate::ops`. `DiT::forward_recorded` runs the blocks detached and keeps their activations on
//! the tape; `DiT::backward` then runs candle's autograd over the loss and the final layer only,
//! walks the blocks in reverse here (GEMMs straight into their outputs, adaLN and gate gradients
//! in one pass per item, the residual gradient accumulated in place), and hands the patch and
//! condition embedders their gradients. The maths is the per-op backward of `crate::ops`, so
//! gradients agree with candle's autograd to float rounding (`tests/manual_backward.rs`).
//!
//! ```text
//! let mut tape = Tape::new();
//! let (out, features) = model.forward_recorded(&x, &t, &y, &mut tape)?; // as forward_with_features
//! let loss = ...; // any loss on the outputs of any number of recorded forwards
//! let grads = model.backward(&loss, tape)?; // what loss.backward() gives every variable
//! ```

use candle_core::backprop::GradStore;
use candle_core::{DType, Layout, Result, Storage, Tensor, TensorId, Var};
use rayon::prelude::*;

use crate::layers::Linear;
use crate::model::{DiT, DiTBlock};
use crate::ops::gemm::{gemm, gemm_threads, MatMut, MatRef};
use crate::ops::{
    self, attention_bwd, cast, gated_residual, gelu_grad_in_place, ln_modulate, ln_stats, sum8,
    Float,
};

//--------------------------------------------------------------------------------
// The tape and the recorded forward
//--------------------------------------------------------------------------------

/// What one block's forward keeps for its backward (all detached, contiguous).
struct BlockTape {
    /// Block input [N, T, D].
    x: Tensor,
    /// adaLN modulation [N, 6D]: shift, scale, gate (attention), shift, scale, gate (MLP).
    m: Tensor,
    /// Modulated LayerNorm before attention [N, T, D].
    h1: Tensor,
    /// The qkv projection [N, T, 3D].
    qkv: Tensor,
    /// Attention probabilities [N * heads, T, T].
    probs: Tensor,
    /// Attention output, heads merged [N, T, D].
    o: Tensor,
    /// After the projection [N, T, D].
    a: Tensor,
    /// After the attention residual [N, T, D].
    x2: Tensor,
    /// Modulated LayerNorm before the MLP [N, T, D].
    h2: Tensor,
    /// fc1 output [N, T, 4D].
    f1: Tensor,
    /// GELU(f1) [N, T, 4D].
    g1: Tensor,
    /// fc2 output [N, T, D].
    f: Tensor,
}

/// One recorded forward pass.
struct Recorded {
    /// The recording model's patch-embedding weight: a tape is for its model only.
    model: TensorId,
    /// Patchified input [N, T, C*p*p].
    patches: Tensor,
    /// SiLU(conditioning) [N, D], tracked: its embedders stay on autograd.
    c: Tensor,
    /// What each block keeps, in order.
    blocks: Vec<BlockTape>,
    /// Each block's output as a leaf: the features; the last feeds the final layer.
    outs: Vec<Var>,
}

/// The activations of the recorded forwards of one training step, for `DiT::backward`.
#[derive(Default)]
pub struct Tape {
    forwards: Vec<Recorded>,
}

impl Tape {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no forward was recorded (off the fused CPU path, forwards record nothing).
    pub fn is_empty(&self) -> bool {
        self.forwards.is_empty()
    }
}

/// `x W^T + b` with the weights detached: the recorded forward keeps autograd off the blocks.
pub(crate) fn linear_detached(l: &Linear, x: &Tensor) -> Result<Tensor> {
    ops::linear(x, &l.weight.detach(), &l.bias.detach())
}

impl DiTBlock {
    /// `DiTBlock::forward` detached from autograd, keeping its activations.
    fn forward_recorded(&self, x: &Tensor, c_silu: &Tensor) -> Result<(Tensor, BlockTape)> {
        let m = linear_detached(&self.ada_ln_modulation, c_silu)?; // (N, 6D)
        let ms = m.chunk(6, 1)?;
        let (shift_msa, scale_msa, gate_msa) = (&ms[0], &ms[1], &ms[2]);
        let (shift_mlp, scale_mlp, gate_mlp) = (&ms[3], &ms[4], &ms[5]);
        // Attention branch.
        let h1 = ln_modulate(x, shift_msa, scale_msa)?; // (N, T, D)
        let qkv = linear_detached(&self.attn.qkv, &h1)?; // (N, T, 3D)
        let (o, probs) = ops::attention_keep_probs(&qkv, self.attn.num_heads)?; // (N, T, D), (N*H, T, T)
        let a = linear_detached(&self.attn.proj, &o)?; // (N, T, D)
        let x2 = gated_residual(x, &a, gate_msa)?;
        // MLP branch.
        let h2 = ln_modulate(&x2, shift_mlp, scale_mlp)?; // (N, T, D)
        let f1 = linear_detached(&self.mlp.fc1, &h2)?; // (N, T, 4D)
        let g1 = ops::gelu(&f1)?;
        let f = linear_detached(&self.mlp.fc2, &g1)?; // (N, T, D)
        let y = gated_residual(&x2, &f, gate_mlp)?;
        Ok((
            y,
            BlockTape {
                x: x.clone(),
                m,
                h1,
                qkv,
                probs,
                o,
                a,
                x2,
                h2,
                f1,
                g1,
                f,
            },
        ))
    }
}

impl DiT {
    /// `forward_with_features` for training: the same output and features, with the patch
    /// embedding and the blocks run detached and their activations recorded on `tape`. The block
    /// outputs come back as leaf variables, so the loss's autograd stops there and
    /// `backward(loss, tape)` takes over. Off the fused CPU path (other devices, dtypes, or
    /// `ops::set_fused(false)`) this is `forward_with_features` and records nothing.
    pub fn forward_recorded(
        &self,
        x: &Tensor,
        t: &[f32],
        y: &[u32],
        tape: &mut Tape,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        if !ops::fused_cpu(x) {
            return self.forward_with_features(x, t, y);
        }
        Self::check_batch(x, t, y)?;
        let c = self.condition_silu(t, y)?; // (N, D)
        let patches = self.x_embedder.patchify(x)?; // (N, T, C*p*p)
        let mut h =
            linear_detached(&self.x_embedder.proj, &patches)?.broadcast_add(&self.pos_embed)?; // (N, T, D)
        let c_det = c.detach();
        let mut blocks = Vec::with_capacity(self.blocks.len());
        let mut outs = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let (y, block_tape) = block.forward_recorded(&h, &c_det)?; // (N, T, D)
            blocks.push(block_tape);
            outs.push(Var::from_tensor(&y)?);
            h = y;
        }
        let features: Vec<Tensor> = outs.iter().map(|v| v.as_tensor().clone()).collect();
        let out = self.head(features.last().unwrap_or(&h), &c)?; // (N, C_out, H, W)
        tape.forwards.push(Recorded {
            model: self.x_embedder.proj_weight.id(),
            patches,
            c,
            blocks,
            outs,
        });
        Ok((out, features))
    }
}

//--------------------------------------------------------------------------------
// The hand-written backward
//--------------------------------------------------------------------------------

/// The contiguous CPU data behind a tensor.
pub(crate) fn cpu_slice<'a, T: candle_core::WithDType>(
    s: &'a Storage,
    l: &Layout,
) -> Result<&'a [T]> {
    let Storage::Cpu(cs) = s else {
        candle_core::bail!("hand-written backward: CPU tensors only")
    };
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
fn linear_bwd<T: Float + 'static>(
    dy: &[T],
    x: &[T],
    w: &[T],
    (r, k, o): (usize, usize, usize),
    dx: Option<&mut [T]>,
) -> (Vec<T>, Vec<T>) {
    let dy_mat = MatRef::rows(dy, r, o);
    if let Some(dx) = dx {
        gemm(
            MatMut::rows(dx, r, k),
            dy_mat,
            MatRef::rows(w, o, k),
            T::one(),
            false,
            gemm_threads(),
        ); // dY W
    }
    let mut dw = vec![T::zero(); o * k];
    gemm(
        MatMut::rows(&mut dw, o, k),
        dy_mat.t(),
        MatRef::rows(x, r, k),
        T::one(),
        false,
        gemm_threads(),
    ); // dY^T X
    (dw, col_sums(dy, o))
}

/// One row of adaLN's backward. With `xh = LayerNorm(x)` and `y = xh (1 + scale) + shift`:
/// `dshift += g`, `dscale += g xh`, and `dx += LayerNorm'(x)^T (g (1 + scale))`.
#[inline]
fn ln_modulate_bwd_row<T: Float>(
    x: &[T],
    g: &[T],
    scale: &[T],
    dshift: &mut [T],
    dscale: &mut [T],
    dx: &mut [T],
) {
    let nf = cast::<T>(x.len() as f64);
    let (mean, inv) = ln_stats(x);
    for j in 0..x.len() {
        dshift[j] += g[j];
        dscale[j] += g[j] * (x[j] - mean) * inv;
    }
    let mg = sum8(x.len(), |j| g[j] * (T::one() + scale[j])) / nf;
    let mgy = sum8(x.len(), |j| {
        g[j] * (T::one() + scale[j]) * (x[j] - mean) * inv
    }) / nf;
    for j in 0..x.len() {
        let xh = (x[j] - mean) * inv;
        let gh = g[j] * (T::one() + scale[j]);
        dx[j] += (gh - mg - xh * mgy) * inv;
    }
}

/// `dgate += sum_t dy * branch` and `dbranch = dy * gate` for each item (gate = `[N, D]` broadcast
/// over the tokens), where `y = x + branch * gate`.
fn gate_bwd<T: Float>(
    dy: &[T],
    branch: &[T],
    m: &[T],
    dm: &mut [T],
    dbranch: &mut [T],
    (t, d): (usize, usize),
    slot: usize,
) {
    dm.par_chunks_mut(6 * d)
        .zip(dbranch.par_chunks_mut(t * d))
        .enumerate()
        .for_each(|(i, (dmi, db))| {
            let gate = &m[i * 6 * d + slot * d..i * 6 * d + (slot + 1) * d];
            let dgate = &mut dmi[slot * d..(slot + 1) * d];
            let off = i * t * d;
            for (row, dbr) in db.chunks_mut(d).enumerate() {
                let (g, b) = (
                    &dy[off + row * d..off + (row + 1) * d],
                    &branch[off + row * d..off + (row + 1) * d],
                );
                for j in 0..d {
                    dgate[j] += g[j] * b[j];
                    dbr[j] = g[j] * gate[j];
                }
            }
        });
}

/// adaLN backward for every item: shift/scale gradients into `dm` at `slot`, `slot + 1`, and the
/// input gradient added into `dx` (which holds the residual stream's gradient).
fn ln_modulate_bwd<T: Float>(
    x: &[T],
    g: &[T],
    m: &[T],
    dm: &mut [T],
    dx: &mut [T],
    (t, d): (usize, usize),
    slot: usize,
) {
    dm.par_chunks_mut(6 * d)
        .zip(dx.par_chunks_mut(t * d))
        .enumerate()
        .for_each(|(i, (dmi, dxi))| {
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
    fn backward<T: Float + 'static>(
        &self,
        tp: &BlockTape,
        c: &[T],
        dy: &mut [T],
        grads: &mut Vec<ParamGrad<T>>,
    ) -> Result<Vec<T>> {
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
        data!(self.mlp.fc1.weight => fc1_w);
        data!(self.mlp.fc2.weight => fc2_w);
        data!(self.attn.proj.weight => proj_w);
        data!(self.attn.qkv.weight => qkv_w);
        data!(self.ada_ln_modulation.weight => ada_w);

        let mut dm = vec![T::zero(); n * 6 * d]; // gradient of the modulation
        let mut buf_d = vec![T::zero(); r * d]; // gradient of a [N, T, D] branch, reused

        // ---- MLP branch: y = x2 + fc2(gelu(fc1(h2))) * gate_mlp
        gate_bwd(dy, f, m, &mut dm, &mut buf_d, (t, d), 5);
        let mut dg1 = vec![T::zero(); r * hid];
        let (dw, db) = linear_bwd(&buf_d, g1, fc2_w, (r, hid, d), Some(&mut dg1));
        grads.push((self.mlp.fc2.weight.clone(), dw));
        grads.push((self.mlp.fc2.bias.clone(), db));
        gelu_grad_in_place(f1, &mut dg1);
        let (dw, db) = linear_bwd(&dg1, h2, fc1_w, (r, d, hid), Some(&mut buf_d));
        drop(dg1);
        grads.push((self.mlp.fc1.weight.clone(), dw));
        grads.push((self.mlp.fc1.bias.clone(), db));
        ln_modulate_bwd(x2, &buf_d, m, &mut dm, dy, (t, d), 3); // dy is now d x2

        // ---- attention branch: x2 = x + proj(attn(qkv(h1))) * gate_msa
        let mut da = vec![T::zero(); r * d];
        gate_bwd(dy, a, m, &mut dm, &mut da, (t, d), 2);
        let (dw, db) = linear_bwd(&da, o, proj_w, (r, d, d), Some(&mut buf_d));
        grads.push((self.attn.proj.weight.clone(), dw));
        grads.push((self.attn.proj.bias.clone(), db));
        let dqkv = attention_bwd(qkv, Some(probs), &buf_d, n, t, d, self.attn.num_heads);
        let (dw, db) = linear_bwd(&dqkv, h1, qkv_w, (r, d, 3 * d), Some(&mut da));
        drop(dqkv);
        grads.push((self.attn.qkv.weight.clone(), dw));
        grads.push((self.attn.qkv.bias.clone(), db));
        ln_modulate_bwd(x, &da, m, &mut dm, dy, (t, d), 0); // dy is now d x

        // ---- adaLN modulation: m = c W^T + b
        let mut dc = vec![T::zero(); n * d];
        let (dw, db) = linear_bwd(&dm, c, ada_w, (n, d, 6 * d), Some(&mut dc));
        grads.push((self.ada_ln_modulation.weight.clone(), dw));
        grads.push((self.ada_ln_modulation.bias.clone(), db));
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
    /// and the final layer (including the leaves `rec.outs`).
    fn backward_recorded<T: Float + 'static>(
        &self,
        rec: &Recorded,
        grads: &mut GradStore,
    ) -> Result<()> {
        let dev = self.device().clone();
        let Some(first) = rec.blocks.first() else {
            candle_core::bail!("hand-written backward: a model without blocks")
        }; // `DitConfig::validate` rules it out
        let (n, t, d) = first.x.dims3()?;
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
            data!(rec.c => c);
            for (i, (blk, tp)) in self.blocks.iter().zip(&rec.blocks).enumerate().rev() {
                if let Some(g) = leaf_grad(&rec.outs[i], grads)? {
                    dh.par_iter_mut()
                        .zip(g.par_iter())
                        .for_each(|(a, &b)| *a += b);
                }
                let dci = blk.backward(tp, c, &mut dh, &mut pgrads)?;
                dc.iter_mut().zip(dci).for_each(|(a, b)| *a += b);
            }
            // Patch embedding: h0 = patches W^T + b + pos_embed (fixed).
            data!(rec.patches => patches);
            let cpp = rec.patches.dim(2)?;
            let (dw, db) = linear_bwd(&dh, patches, &[], (n * t, cpp, d), None);
            pgrads.push((self.x_embedder.proj_weight.clone(), dw));
            pgrads.push((self.x_embedder.proj.bias.clone(), db));
        }
        for (var, g) in pgrads {
            let g = Tensor::from_vec(g, var.dims(), &dev)?;
            accumulate(grads, &var, g)?;
        }
        // The conditioning path (timestep MLP, label table) is small: candle's autograd on
        // sum(c * dc) gives its parameters the blocks' share of the gradient.
        let dc = Tensor::from_vec(dc, (n, d), &dev)?;
        let g2 = (&rec.c * dc)?.sum_all()?.backward()?;
        let (te, ye) = (&self.t_embedder, &self.y_embedder);
        for var in [
            &te.mlp0.weight,
            &te.mlp0.bias,
            &te.mlp2.weight,
            &te.mlp2.bias,
            &ye.embedding_table,
        ] {
            if let Some(g) = g2.get(var) {
                accumulate(grads, var, g.clone())?;
            }
        }
        Ok(())
    }

    /// The gradient of `loss` for every variable, as `loss.backward()` gives it, where the blocks
    /// of the forwards recorded on `tape` (by this model) take the hand-written backward.
    pub fn backward(&self, loss: &Tensor, tape: Tape) -> Result<GradStore> {
        let me = self.x_embedder.proj_weight.id();
        if tape.forwards.iter().any(|rec| rec.model != me) {
            candle_core::bail!("backward: the tape holds a forward recorded by another model");
        }
        let mut grads = loss.backward()?;
        for rec in &tape.forwards {
            match self.dtype() {
                DType::F32 => self.backward_recorded::<f32>(rec, &mut grads)?,
                DType::F64 => self.backward_recorded::<f64>(rec, &mut grads)?,
                other => candle_core::bail!("hand-written backward: {other:?} is not supported"),
            }
        }
        Ok(grads)
    }
}
