//! The sampler's forward: no autograd graph, no tape, no fresh activation per op.
//!
//! `DiT::forward` builds candle's graph even when nobody asks for a gradient (the weights are
//! variables), so every block's activations stay alive until the output is dropped, each op
//! allocates its output, and at the sampler's batch (500 = 250 images x guidance) every
//! `[N, T, 4D]` activation is tens of MB, far outside the caches. Every op of a block is per token
//! row or per item, so `DiT::forward_inference` runs all blocks over a chunk of items before the
//! next chunk (chunks in parallel across the pool's threads), in a few reused buffers of about
//! `CHUNK_ROWS` rows that stay in cache: LayerNorm + modulation into one buffer, the qkv GEMM onto
//! its bias, attention per (item, head), the projection, the gated residual added into the
//! residual stream in place, the MLP with the GELU in place. The arithmetic is the fused ops' of
//! `crate::ops`, so outputs agree with `forward` to float rounding (the GEMMs see other row
//! counts): `tests` below and `dit/tests/inference.rs`.

use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;

use crate::backward::{cpu_slice, linear_detached};
use crate::model::DiT;
use crate::ops::gemm::{gemm, MatMut, MatRef};
use crate::ops::{self, attention_seq_into, gelu_in_place, ln_modulate, ln_stats, Float};

thread_local! {
    static ENABLED: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Turn the inference path off (or back on) for the calling thread: with `false`,
/// `forward_inference` is `forward` (for benchmarks and tests comparing the two).
pub fn set_enabled(on: bool) {
    ENABLED.with(|f| f.set(on));
}

/// Token rows per chunk: the block's buffers (about 9 D floats a row) then fit in L2/L3.
pub const CHUNK_ROWS: usize = 512;

/// The reused buffers of one chunk.
struct Workspace<T> {
    /// LayerNorm + modulation output, then the attention output `[rows, D]`.
    a: Vec<T>,
    /// A branch's output before the gate `[rows, D]`.
    b: Vec<T>,
    qkv: Vec<T>,
    /// fc1 output, GELU in place `[rows, hidden]`.
    f: Vec<T>,
    /// Attention probabilities of one (item, head) `[T, T]`.
    p: Vec<T>,
}

impl<T: Float> Workspace<T> {
    fn new(rows: usize, d: usize, hid: usize, t: usize) -> Self {
        Self {
            a: vec![T::zero(); rows * d],
            b: vec![T::zero(); rows * d],
            qkv: vec![T::zero(); rows * 3 * d],
            f: vec![T::zero(); rows * hid],
            p: vec![T::zero(); t * t],
        }
    }
}

/// `out = x W^T + b` (`x: [r, k]`, `W: [o, k]`): the bias copied into every row, one GEMM onto it.
fn linear_into<T: Float + 'static>(
    x: &[T],
    w: &[T],
    b: &[T],
    out: &mut [T],
    (r, k, o): (usize, usize, usize),
) {
    for row in out.chunks_mut(o) {
        row.copy_from_slice(b);
    }
    gemm(
        MatMut::rows(out, r, o),
        MatRef::rows(x, r, k),
        MatRef::rows(w, o, k).t(),
        T::one(),
        true,
        ::gemm::Parallelism::None,
    );
}

/// `out = LayerNorm(x) (1 + scale) + shift` per row, with shift and scale at `slot`, `slot + 1` of
/// the row's item in the modulation `m: [items, 6D]`.
fn ln_modulate_rows<T: Float>(
    x: &[T],
    m: &[T],
    slot: usize,
    out: &mut [T],
    (t, d): (usize, usize),
) {
    for (row, (xr, or)) in x.chunks(d).zip(out.chunks_mut(d)).enumerate() {
        let mi = &m[row / t * 6 * d..];
        let (sh, sc) = (
            &mi[slot * d..(slot + 1) * d],
            &mi[(slot + 1) * d..(slot + 2) * d],
        );
        let (mean, inv) = ln_stats(xr);
        for j in 0..d {
            or[j] = (xr[j] - mean) * inv * (T::one() + sc[j]) + sh[j];
        }
    }
}

/// `x += branch * gate` per row, with the gate at `slot` of the row's item in `m`.
fn gate_add<T: Float>(x: &mut [T], branch: &[T], m: &[T], slot: usize, (t, d): (usize, usize)) {
    for (row, (xr, br)) in x.chunks_mut(d).zip(branch.chunks(d)).enumerate() {
        let g = &m[row / t * 6 * d + slot * d..row / t * 6 * d + (slot + 1) * d];
        for j in 0..d {
            xr[j] += br[j] * g[j];
        }
    }
}

/// One block over the `n` items of `x` (`[n, T, D]`, updated in place). `m`: their modulation
/// `[n, 6D]`; `w`: qkv, proj, fc1, fc2 weights and biases.
fn block_inference<T: Float + 'static>(
    x: &mut [T],
    m: &[T],
    w: &[&[T]; 8],
    (n, t, d, hid, heads): (usize, usize, usize, usize, usize),
    ws: &mut Workspace<T>,
) {
    let r = n * t;
    let (a, b) = (&mut ws.a[..r * d], &mut ws.b[..r * d]);
    let (qkv, f) = (&mut ws.qkv[..r * 3 * d], &mut ws.f[..r * hid]);
    // x2 = x + gate_msa * proj(attn(qkv(modulate(norm1(x)))))
    ln_modulate_rows(x, m, 0, a, (t, d));
    linear_into(a, w[0], w[1], qkv, (r, d, 3 * d));
    attention_seq_into(qkv, a, (n, t, d, heads), &mut ws.p);
    linear_into(a, w[2], w[3], b, (r, d, d));
    gate_add(x, b, m, 2, (t, d));
    // y = x2 + gate_mlp * fc2(gelu(fc1(modulate(norm2(x2)))))
    ln_modulate_rows(x, m, 3, a, (t, d));
    linear_into(a, w[4], w[5], f, (r, d, hid));
    gelu_in_place(f);
    linear_into(f, w[6], w[7], b, (r, hid, d));
    gate_add(x, b, m, 5, (t, d));
}

impl DiT {
    /// `forward(x, t, y)` for sampling: the same output (to float rounding), computed without
    /// autograd in cache-sized chunks of items. Off the fused CPU path (or after
    /// `set_enabled(false)`) this is `forward`.
    pub fn forward_inference(&self, x: &Tensor, t: &[f32], y: &[u32]) -> Result<Tensor> {
        if !ops::fused_cpu(x) || !ENABLED.with(|f| f.get()) {
            return self.forward(x, t, y);
        }
        Self::check_batch(x, t, y)?;
        let c = self.condition_silu(t, y)?.detach(); // (N, D)
        let patches = self.x_embedder.patchify(x)?; // (N, T, C*p*p)
        let h = linear_detached(&self.x_embedder.proj, &patches)?.broadcast_add(&self.pos_embed)?; // (N, T, D)
        let h = match self.dtype() {
            DType::F32 => self.blocks_inference::<f32>(&h, &c)?,
            DType::F64 => self.blocks_inference::<f64>(&h, &c)?,
            other => candle_core::bail!("forward_inference: {other:?} is not supported"),
        };
        let fl = &self.final_layer;
        let m = linear_detached(&fl.ada_ln_modulation, &c)?.chunk(2, 1)?; // shift, scale
        let out = linear_detached(&fl.linear, &ln_modulate(&h, &m[0], &m[1])?)?;
        self.unpatchify(&out)
    }

    /// The blocks over `h: [N, T, D]` in chunks of items, without autograd.
    fn blocks_inference<T: Float + 'static>(&self, h: &Tensor, c: &Tensor) -> Result<Tensor> {
        let (n, t, d) = h.dims3()?;
        let (heads, hid) = (self.cfg.num_heads, self.cfg.mlp_hidden());
        let mods = self
            .blocks
            .iter()
            .map(|b| linear_detached(&b.ada_ln_modulation, c)) // (N, 6D) each
            .collect::<Result<Vec<_>>>()?;
        let mut tensors: Vec<&Tensor> = Vec::with_capacity(9 * self.blocks.len());
        for (blk, m) in self.blocks.iter().zip(&mods) {
            tensors.extend([
                m,
                &blk.attn.qkv.weight,
                &blk.attn.qkv.bias,
                &blk.attn.proj.weight,
                &blk.attn.proj.bias,
                &blk.mlp.fc1.weight,
                &blk.mlp.fc1.bias,
                &blk.mlp.fc2.weight,
                &blk.mlp.fc2.bias,
            ]);
        }
        let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
        let data = guards
            .iter()
            .map(|(s, l)| cpu_slice::<T>(s, l))
            .collect::<Result<Vec<_>>>()?;
        let mut x: Vec<T> = h.flatten_all()?.to_vec1::<T>()?;
        let items = (CHUNK_ROWS / t.max(1)).max(1);
        x.par_chunks_mut((items * t * d).max(1))
            .enumerate()
            .for_each_init(
                || Workspace::new(items * t, d, hid, t),
                |ws, (ci, xc)| {
                    let nc = xc.len() / (t * d);
                    let i0 = ci * items;
                    for blk in data.chunks(9) {
                        let m = &blk[0][i0 * 6 * d..(i0 + nc) * 6 * d];
                        let w = std::array::from_fn(|j| blk[j + 1]);
                        block_inference(xc, m, &w, (nc, t, d, hid, heads), ws);
                    }
                },
            );
        drop(data);
        drop(guards);
        Tensor::from_vec(x, (n, t, d), h.device())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use crate::{DiT, DitConfig};

    /// Random weights everywhere (adaLN-Zero would zero the blocks), odd batch sizes so the last
    /// chunk is partial: the inference path gives `forward`'s output.
    #[test]
    fn inference_matches_forward() {
        for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 2e-4)] {
            let cfg = DitConfig {
                hidden_size: 24,
                depth: 2,
                num_heads: 2,
                ..Default::default()
            };
            let dev = Device::Cpu;
            let model = DiT::new(&cfg, 3, dtype, &dev).unwrap();
            let mut rng = crate::rng::seeded(5);
            for (_, v) in crate::params::lock_vars(&model.varmap).iter() {
                v.set(
                    &(crate::rng::randn(&mut rng, v.dims(), &dev).unwrap() * 0.2)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap(),
                )
                .unwrap();
            }
            for n in [1usize, 13, 23] {
                let x = crate::rng::randn(&mut rng, &[n, 1, 28, 28], &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let t: Vec<f32> = (0..n).map(|i| (i * 37 % 1000) as f32).collect();
                let y: Vec<u32> = (0..n).map(|i| (i % 11) as u32).collect();
                let want = model.forward(&x, &t, &y).unwrap();
                let got = model.forward_inference(&x, &t, &y).unwrap();
                assert_eq!(got.dims(), want.dims());
                let d = (&got - &want)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
                assert!(d < tol, "{dtype:?} batch {n}: differs by {d}");
            }
        }
    }
}
