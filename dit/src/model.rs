//! The adaLN-Zero Diffusion Transformer (Peebles & Xie 2023), following facebookresearch/DiT
//! `models.py` layer for layer and name for name, so its checkpoints load here unchanged.
//!
//! Every op in the training path carries a gradient: candle's fused CPU `softmax_last_dim`,
//! `layer_norm` and flash-attention do not, so softmax, layer norm, GELU and the attention matmuls
//! come from `crate::ops` (fused, with hand-written backward; see `tests/gradcheck.rs`).

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarMap;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::backward::{BlockTape, Tape};
use crate::config::DitConfig;
use crate::counts::TIME_FREQ_DIM;
use crate::ops::{self, linear, ln_modulate};
use crate::params::{Init, Params};

//################################################################################
//                 Embedding Layers for Timesteps and Class Labels                #
//################################################################################

/// Sinusoidal timestep features, `[cos, sin]` over `dim / 2` frequencies (max period 10000),
/// computed on the host: they need no gradient.
pub fn timestep_embedding(t: &[f32], dim: usize, device: &Device, dtype: DType) -> Result<Tensor> {
    let half = dim / 2;
    let freqs: Vec<f32> =
        (0..half).map(|i| (-(10000f32).ln() * i as f32 / half as f32).exp()).collect();
    let mut out = Vec::with_capacity(t.len() * dim);
    for &ti in t {
        let args: Vec<f32> = freqs.iter().map(|f| ti * f).collect();
        out.extend(args.iter().map(|a| a.cos()));
        out.extend(args.iter().map(|a| a.sin()));
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    Tensor::from_vec(out, (t.len(), dim), device)?.to_dtype(dtype)
}

/// The fixed 2D sin-cos position embedding `[T, D]` of MAE/DiT: the first half of each row encodes
/// the grid column (what the reference calls `emb_h`, built from `meshgrid(w, h)[0]`), the second
/// half the row; each half is `[sin, cos]`.
pub fn pos_embed_2d(dim: usize, grid: usize) -> Vec<f32> {
    let quarter = dim / 4;
    let omega: Vec<f64> =
        (0..quarter).map(|i| 1.0 / 10000f64.powf(i as f64 / quarter as f64)).collect();
    let mut out = Vec::with_capacity(grid * grid * dim);
    for row in 0..grid {
        for col in 0..grid {
            for pos in [col as f64, row as f64] {
                out.extend(omega.iter().map(|w| (pos * w).sin() as f32));
                out.extend(omega.iter().map(|w| (pos * w).cos() as f32));
            }
        }
    }
    out
}

//################################################################################
//                                 Core DiT Model                                 #
//################################################################################

/// One DiT block with adaptive layer norm zero (adaLN-Zero) conditioning.
pub struct DiTBlock {
    pub(crate) qkv_w: Tensor,
    pub(crate) qkv_b: Tensor,
    pub(crate) proj_w: Tensor,
    pub(crate) proj_b: Tensor,
    pub(crate) fc1_w: Tensor,
    pub(crate) fc1_b: Tensor,
    pub(crate) fc2_w: Tensor,
    pub(crate) fc2_b: Tensor,
    pub(crate) ada_w: Tensor,
    pub(crate) ada_b: Tensor,
    pub(crate) num_heads: usize,
}

impl DiTBlock {
    fn new(p: &mut Params, prefix: &str, cfg: &DitConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        let h = cfg.mlp_hidden();
        let xavier = |fan_in, fan_out| Init::XavierUniform { fan_in, fan_out };
        Ok(Self {
            qkv_w: p.get(&format!("{prefix}.attn.qkv.weight"), &[3 * d, d], xavier(d, 3 * d))?,
            qkv_b: p.get(&format!("{prefix}.attn.qkv.bias"), &[3 * d], Init::Zeros)?,
            proj_w: p.get(&format!("{prefix}.attn.proj.weight"), &[d, d], xavier(d, d))?,
            proj_b: p.get(&format!("{prefix}.attn.proj.bias"), &[d], Init::Zeros)?,
            fc1_w: p.get(&format!("{prefix}.mlp.fc1.weight"), &[h, d], xavier(d, h))?,
            fc1_b: p.get(&format!("{prefix}.mlp.fc1.bias"), &[h], Init::Zeros)?,
            fc2_w: p.get(&format!("{prefix}.mlp.fc2.weight"), &[d, h], xavier(h, d))?,
            fc2_b: p.get(&format!("{prefix}.mlp.fc2.bias"), &[d], Init::Zeros)?,
            // adaLN-Zero: the block starts as the identity.
            ada_w: p.get(&format!("{prefix}.adaLN_modulation.1.weight"), &[6 * d, d], Init::Zeros)?,
            ada_b: p.get(&format!("{prefix}.adaLN_modulation.1.bias"), &[6 * d], Init::Zeros)?,
            num_heads: cfg.num_heads,
        })
    }

    /// `x: [N, T, D]`, `c: [N, D]` (the SiLU of the conditioning is applied by the caller once).
    pub fn forward(&self, x: &Tensor, c_silu: &Tensor) -> Result<Tensor> {
        Ok(self.run(x, c_silu, false)?.0)
    }

    /// The block, optionally detached from autograd with its activations kept for
    /// `crate::backward` (`record`).
    pub(crate) fn run(&self, x: &Tensor, c_silu: &Tensor, record: bool) -> Result<(Tensor, Option<BlockTape>)> {
        let p = |w: &Tensor| if record { w.detach() } else { w.clone() };
        let m = linear(c_silu, &p(&self.ada_w), &p(&self.ada_b))?; // (N, 6D)
        let ms = m.chunk(6, 1)?;
        let (shift_msa, scale_msa, gate_msa) = (&ms[0], &ms[1], &ms[2]);
        let (shift_mlp, scale_mlp, gate_mlp) = (&ms[3], &ms[4], &ms[5]);
        // Multi-head self-attention (timm `Attention` with qkv bias).
        let h1 = ln_modulate(x, shift_msa, scale_msa)?; // (N, T, D)
        let qkv = linear(&h1, &p(&self.qkv_w), &p(&self.qkv_b))?; // (N, T, 3D)
        let (o, probs) = if record {
            let (o, p) = ops::attention_keep_probs(&qkv, self.num_heads)?; // (N, T, D), (N*H, T, T)
            (o, Some(p))
        } else {
            (ops::attention(&qkv, self.num_heads)?, None) // (N, T, D), heads merged
        };
        let a = linear(&o, &p(&self.proj_w), &p(&self.proj_b))?; // (N, T, D)
        let x2 = ops::gated_residual(x, &a, gate_msa)?;
        // MLP with the tanh GELU.
        let h2 = ln_modulate(&x2, shift_mlp, scale_mlp)?; // (N, T, D)
        let f1 = linear(&h2, &p(&self.fc1_w), &p(&self.fc1_b))?; // (N, T, 4D)
        let g1 = ops::gelu(&f1)?;
        let f = linear(&g1, &p(&self.fc2_w), &p(&self.fc2_b))?; // (N, T, D)
        let y = ops::gated_residual(&x2, &f, gate_mlp)?;
        let tape = probs.map(|probs| BlockTape { x: x.clone(), m, h1, qkv, probs, o, a, x2, h2, f1, g1, f });
        Ok((y, tape))
    }
}

/// Diffusion model with a Transformer backbone.
pub struct DiT {
    pub cfg: DitConfig,
    pub varmap: VarMap,
    x_w: Tensor, // x_embedder.proj.weight viewed as [D, C*p*p]
    pub(crate) x_w_var: Tensor, // the variable itself, [D, C, p, p]
    pub(crate) x_b: Tensor,
    pos_embed: Tensor, // [1, T, D], fixed
    pub(crate) t_w0: Tensor,
    pub(crate) t_b0: Tensor,
    pub(crate) t_w2: Tensor,
    pub(crate) t_b2: Tensor,
    pub(crate) y_table: Tensor,
    pub blocks: Vec<DiTBlock>,
    f_ada_w: Tensor,
    f_ada_b: Tensor,
    f_w: Tensor,
    f_b: Tensor,
    device: Device,
    dtype: DType,
    /// Forwards record a `Tape` for the hand-written backward (see `record_tape`).
    recording: AtomicBool,
    tapes: Mutex<Vec<Tape>>,
}

impl DiT {
    /// A freshly initialised DiT (the reference's `initialize_weights`), every draw from `seed`.
    pub fn new(cfg: &DitConfig, seed: u64, dtype: DType, device: &Device) -> anyhow::Result<Self> {
        cfg.validate()?;
        let mut p = Params::new(seed, dtype, device);
        let d = cfg.hidden_size;
        let c = cfg.in_channels;
        let ps = cfg.patch_size;
        let cpp = c * ps * ps;
        let out = ps * ps * cfg.out_channels();
        let x_w = p.get("x_embedder.proj.weight", &[d, c, ps, ps], Init::XavierUniform { fan_in: cpp, fan_out: d })?;
        let x_b = p.get("x_embedder.proj.bias", &[d], Init::Zeros)?;
        let t_w0 = p.get("t_embedder.mlp.0.weight", &[d, TIME_FREQ_DIM], Init::Normal(0.02))?;
        let t_b0 = p.get("t_embedder.mlp.0.bias", &[d], Init::Zeros)?;
        let t_w2 = p.get("t_embedder.mlp.2.weight", &[d, d], Init::Normal(0.02))?;
        let t_b2 = p.get("t_embedder.mlp.2.bias", &[d], Init::Zeros)?;
        let y_table = p.get("y_embedder.embedding_table.weight", &[cfg.label_rows(), d], Init::Normal(0.02))?;
        let mut blocks = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            blocks.push(DiTBlock::new(&mut p, &format!("blocks.{i}"), cfg)?);
        }
        // Zero-out the output layers: the initial model predicts 0.
        let f_ada_w = p.get("final_layer.adaLN_modulation.1.weight", &[2 * d, d], Init::Zeros)?;
        let f_ada_b = p.get("final_layer.adaLN_modulation.1.bias", &[2 * d], Init::Zeros)?;
        let f_w = p.get("final_layer.linear.weight", &[out, d], Init::Zeros)?;
        let f_b = p.get("final_layer.linear.bias", &[out], Init::Zeros)?;
        let pos = pos_embed_2d(d, cfg.grid_size());
        let pos_embed = Tensor::from_vec(pos, (1, cfg.num_tokens(), d), device)?.to_dtype(dtype)?;
        Ok(Self {
            cfg: cfg.clone(),
            varmap: p.varmap,
            x_w: x_w.reshape((d, cpp))?,
            x_w_var: x_w,
            x_b,
            pos_embed,
            t_w0,
            t_b0,
            t_w2,
            t_b2,
            y_table,
            blocks,
            f_ada_w,
            f_ada_b,
            f_w,
            f_b,
            device: device.clone(),
            dtype,
            recording: AtomicBool::new(false),
            tapes: Mutex::new(Vec::new()),
        })
    }

    /// Build the shape of `cfg` and load its weights from a safetensors file with the reference names.
    pub fn load(cfg: &DitConfig, path: &std::path::Path, dtype: DType, device: &Device) -> anyhow::Result<Self> {
        let mut m = Self::new(cfg, 0, dtype, device)?;
        m.load_weights(path)?;
        Ok(m)
    }

    /// Overwrite every variable from a safetensors file; a missing tensor or a shape mismatch is an
    /// error naming the tensor and the file.
    pub fn load_weights(&mut self, path: &std::path::Path) -> anyhow::Result<()> {
        use anyhow::Context;
        let tensors = candle_core::safetensors::load(path, &self.device)
            .with_context(|| format!("{}: not a readable safetensors file", path.display()))?;
        let data = self.varmap.data().lock().unwrap();
        for (name, var) in data.iter() {
            let t = tensors
                .get(name)
                .with_context(|| format!("{}: tensor `{name}` is missing", path.display()))?;
            if t.dims() != var.dims() {
                anyhow::bail!(
                    "{}: tensor `{name}` has shape {:?}, the config expects {:?}",
                    path.display(),
                    t.dims(),
                    var.dims()
                );
            }
            var.set(&t.to_dtype(self.dtype)?)?;
        }
        Ok(())
    }

    /// Save every variable (plus the fixed `pos_embed`, as the reference's state_dict has it).
    pub fn save_weights(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let mut map = self.named_tensors();
        map.insert("pos_embed".to_string(), self.pos_embed.clone());
        crate::io::save_safetensors_atomic(&map, path)
    }

    /// Name → current value of every trainable variable.
    pub fn named_tensors(&self) -> std::collections::HashMap<String, Tensor> {
        let data = self.varmap.data().lock().unwrap();
        data.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Summed sizes of the variables (equals `cfg.num_params()`).
    pub fn num_vars_params(&self) -> usize {
        crate::params::count_vars(&self.varmap)
    }

    /// `[N, C, H, W] -> [N, T, C*p*p]`, flattening each patch in the conv weight's (c, i, j) order.
    fn patchify(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, _, _) = x.dims4()?;
        let p = self.cfg.patch_size;
        let g = self.cfg.grid_size();
        x.reshape((n, c, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))? // (N, h, w, C, p, q)
            .reshape((n, g * g, c * p * p))
    }

    /// `[N, T, p*p*C] -> [N, C, H, W]` ('nhwpqc->nchpwq').
    fn unpatchify(&self, x: &Tensor) -> Result<Tensor> {
        let n = x.dim(0)?;
        let p = self.cfg.patch_size;
        let g = self.cfg.grid_size();
        let c = self.cfg.out_channels();
        x.reshape((n, g, g, p, p, c))?.permute((0, 5, 1, 3, 2, 4))?.reshape((n, c, g * p, g * p))
    }

    /// Conditioning vector `c = t_emb + y_emb`, `[N, D]`. Labels equal to `num_classes` are the null class.
    fn condition(&self, t: &[f32], y: &[u32]) -> Result<Tensor> {
        let tf = timestep_embedding(t, TIME_FREQ_DIM, &self.device, self.dtype)?;
        let te = linear(&linear(&tf, &self.t_w0, &self.t_b0)?.silu()?, &self.t_w2, &self.t_b2)?;
        let ids = Tensor::from_slice(y, y.len(), &self.device)?;
        let ye = self.y_table.embedding(&ids)?;
        te + ye
    }

    /// Forward pass returning the output `[N, C_out, H, W]` and the hidden states after each block
    /// (`[N, T, D]`), which feature distillation matches.
    ///
    /// `x: [N, C, H, W]` images or latents, `t: [N]` timesteps, `y: [N]` labels (null class = `num_classes`).
    pub fn forward_with_features(&self, x: &Tensor, t: &[f32], y: &[u32]) -> Result<(Tensor, Vec<Tensor>)> {
        if t.len() != x.dim(0)? || y.len() != x.dim(0)? {
            candle_core::bail!("forward: batch {} with {} timesteps and {} labels", x.dim(0)?, t.len(), y.len());
        }
        let c = self.condition(t, y)?.silu()?; // (N, D); every adaLN starts with SiLU
        let patches = self.patchify(x)?.contiguous()?; // (N, T, C*p*p)
        if self.recording.load(Ordering::Relaxed) && ops::fused_cpu(x) {
            return self.forward_recorded(patches, c);
        }
        let mut h = linear(&patches, &self.x_w, &self.x_b)?.broadcast_add(&self.pos_embed)?; // (N, T, D)
        let mut feats = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            h = b.forward(&h, &c)?; // (N, T, D)
            feats.push(h.clone());
        }
        Ok((self.final_layer(&h, &c)?, feats)) // (N, C_out, H, W)
    }

    /// The final adaLN layer and unpatchify: `[N, T, D] -> [N, C_out, H, W]`.
    fn final_layer(&self, h: &Tensor, c: &Tensor) -> Result<Tensor> {
        let m = linear(c, &self.f_ada_w, &self.f_ada_b)?.chunk(2, 1)?;
        let h = ln_modulate(h, &m[0], &m[1])?;
        let out = linear(&h, &self.f_w, &self.f_b)?; // (N, T, p*p*C_out)
        self.unpatchify(&out)
    }

    /// `forward_with_features` while recording: the patch embedding and the blocks run detached
    /// and keep their activations; the block outputs come back as leaf variables, so the loss's
    /// autograd stops there and `backward` takes over.
    fn forward_recorded(&self, patches: Tensor, c: Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let mut h = linear(&patches, &self.x_w.detach(), &self.x_b.detach())?.broadcast_add(&self.pos_embed)?; // (N, T, D)
        let c_det = c.detach();
        let mut blocks = Vec::with_capacity(self.blocks.len());
        let mut outs = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            let (y, tape) = b.run(&h, &c_det, true)?; // (N, T, D)
            blocks.push(tape.expect("a recording run keeps its tape"));
            outs.push(Var::from_tensor(&y)?);
            h = y;
        }
        let feats: Vec<Tensor> = outs.iter().map(|v| v.as_tensor().clone()).collect();
        let out = self.final_layer(feats.last().unwrap_or(&h), &c)?;
        self.tapes.lock().unwrap().push(Tape { patches, c, blocks, outs });
        Ok((out, feats))
    }

    /// From now until the next `backward`, forwards record their activations so `backward` can
    /// run the blocks' hand-written backward (CPU, f32/f64; elsewhere autograd as usual).
    pub fn record_tape(&self) {
        self.tapes.lock().unwrap().clear();
        self.recording.store(true, Ordering::Relaxed);
    }

    /// Stop recording and hand over what was recorded.
    pub(crate) fn take_tapes(&self) -> Vec<Tape> {
        self.recording.store(false, Ordering::Relaxed);
        std::mem::take(&mut *self.tapes.lock().unwrap())
    }

    /// `forward(x, t, y) -> [N, C_out, H, W]`.
    pub fn forward(&self, x: &Tensor, t: &[f32], y: &[u32]) -> Result<Tensor> {
        Ok(self.forward_with_features(x, t, y)?.0)
    }

    /// The predicted noise: the first `in_channels` output channels.
    pub fn forward_eps(&self, x: &Tensor, t: &[f32], y: &[u32]) -> Result<Tensor> {
        let out = self.forward(x, t, y)?;
        if self.cfg.learn_sigma {
            out.narrow(1, 0, self.cfg.in_channels)
        } else {
            Ok(out)
        }
    }

    /// Classifier-free guidance: `eps_u + scale * (eps_c - eps_u)` from one batched pass over the
    /// conditional and null-class inputs. Scale 1 is the plain conditional model (one pass).
    pub fn forward_cfg(&self, x: &Tensor, t: &[f32], y: &[u32], scale: f64) -> Result<Tensor> {
        if (scale - 1.0).abs() < 1e-12 || self.cfg.label_rows() == self.cfg.num_classes {
            return self.forward_eps(x, t, y);
        }
        let n = x.dim(0)?;
        let xx = Tensor::cat(&[x, x], 0)?;
        let tt: Vec<f32> = t.iter().chain(t.iter()).copied().collect();
        let null = self.cfg.null_class() as u32;
        let yy: Vec<u32> = y.iter().copied().chain(std::iter::repeat_n(null, n)).collect();
        let eps = self.forward_eps(&xx, &tt, &yy)?;
        let cond = eps.narrow(0, 0, n)?;
        let uncond = eps.narrow(0, n, n)?;
        &uncond + ((&cond - &uncond)? * scale)?
    }
}
