//! The adaLN-Zero Diffusion Transformer (Peebles & Xie 2023), following facebookresearch/DiT
//! `models.py` layer for layer and name for name, so its checkpoints load here unchanged.
//!
//! Every op in the forward carries a gradient: candle's fused CPU `softmax_last_dim`,
//! `layer_norm` and flash-attention do not, so softmax, layer norm, GELU and the attention
//! matmuls come from `crate::ops` (fused, with hand-written backward; see `tests/gradcheck.rs`).
//! Training takes the recorded forward and the blocks' hand-written backward of
//! `crate::backward` (`DiT::forward_recorded`, `DiT::backward`), which read the layers below.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarMap;

use crate::config::DitConfig;
use crate::counts::TIME_FREQ_DIM;
use crate::layers::{Attention, Linear, Mlp, PatchEmbed};
use crate::ops::{gated_residual, ln_modulate};
use crate::params::{lock_vars, Init, Params};

//################################################################################
//               Embedding Layers for Timesteps and Class Labels                  #
//################################################################################

/// Embeds scalar timesteps into vector representations.
pub struct TimestepEmbedder {
    /// `mlp.0`: `[D, 256]`; `mlp.1` is the SiLU; `mlp.2`: `[D, D]`.
    pub(crate) mlp0: Linear,
    pub(crate) mlp2: Linear,
}

impl TimestepEmbedder {
    fn new(p: &mut Params, prefix: &str, hidden: usize) -> Result<Self> {
        // Initialize timestep embedding MLP: normal(std=0.02).
        let mlp0 = Linear::new(
            p,
            &format!("{prefix}.mlp.0"),
            (hidden, TIME_FREQ_DIM),
            Init::Normal(0.02),
        )?;
        let mlp2 = Linear::new(
            p,
            &format!("{prefix}.mlp.2"),
            (hidden, hidden),
            Init::Normal(0.02),
        )?;
        Ok(Self { mlp0, mlp2 })
    }

    /// `t: [N]` -> `[N, D]`.
    fn forward(&self, t: &[f32], device: &Device, dtype: DType) -> Result<Tensor> {
        let t_freq = timestep_embedding(t, TIME_FREQ_DIM, device, dtype)?; // (N, 256)
        self.mlp2.forward(&self.mlp0.forward(&t_freq)?.silu()?)
    }
}

/// Sinusoidal timestep features, `[cos, sin]` over `dim / 2` frequencies (max period 10000),
/// computed on the host: they need no gradient.
pub fn timestep_embedding(t: &[f32], dim: usize, device: &Device, dtype: DType) -> Result<Tensor> {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10000f32).ln() * i as f32 / half as f32).exp())
        .collect();
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

/// Embeds class labels into vector representations. The table has a row for the null class
/// (label `num_classes`) when classifier-free guidance is trained; the label dropout itself is
/// the training loop's.
pub struct LabelEmbedder {
    pub(crate) embedding_table: Tensor,
}

impl LabelEmbedder {
    fn new(p: &mut Params, prefix: &str, rows: usize, hidden: usize) -> Result<Self> {
        // Initialize label embedding table: normal(std=0.02).
        let embedding_table = p.get(
            &format!("{prefix}.embedding_table.weight"),
            &[rows, hidden],
            Init::Normal(0.02),
        )?;
        Ok(Self { embedding_table })
    }

    /// `y: [N]` -> `[N, D]`.
    fn forward(&self, y: &[u32]) -> Result<Tensor> {
        let ids = Tensor::from_slice(y, y.len(), self.embedding_table.device())?;
        self.embedding_table.embedding(&ids)
    }
}

//################################################################################
//                                 Core DiT Model                                 #
//################################################################################

/// A DiT block with adaptive layer norm zero (adaLN-Zero) conditioning.
pub struct DiTBlock {
    pub(crate) attn: Attention,
    pub(crate) mlp: Mlp,
    /// `adaLN_modulation.1` (`.0` is the SiLU, applied once to the conditioning by the caller):
    /// `c -> shift, scale, gate` for the attention and for the MLP, `[N, 6D]`.
    pub(crate) ada_ln_modulation: Linear,
}

impl DiTBlock {
    fn new(p: &mut Params, prefix: &str, cfg: &DitConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        let attn = Attention::new(p, &format!("{prefix}.attn"), d, cfg.num_heads)?;
        let mlp = Mlp::new(p, &format!("{prefix}.mlp"), d, cfg.mlp_hidden())?;
        // Zero-out adaLN modulation layers: the block starts as the identity.
        let ada_ln_modulation = Linear::new(
            p,
            &format!("{prefix}.adaLN_modulation.1"),
            (6 * d, d),
            Init::Zeros,
        )?;
        Ok(Self {
            attn,
            mlp,
            ada_ln_modulation,
        })
    }

    /// `x: [N, T, D]`, `c_silu: [N, D]` (the SiLU of the conditioning) -> `[N, T, D]`.
    pub fn forward(&self, x: &Tensor, c_silu: &Tensor) -> Result<Tensor> {
        let m = self.ada_ln_modulation.forward(c_silu)?.chunk(6, 1)?; // 6 x (N, D)
        let (shift_msa, scale_msa, gate_msa) = (&m[0], &m[1], &m[2]);
        let (shift_mlp, scale_mlp, gate_mlp) = (&m[3], &m[4], &m[5]);
        let h = ln_modulate(x, shift_msa, scale_msa)?; // modulate(norm1(x), ..), (N, T, D)
        let x = gated_residual(x, &self.attn.forward(&h)?, gate_msa)?; // x + gate_msa * attn(h)
        let h = ln_modulate(&x, shift_mlp, scale_mlp)?; // modulate(norm2(x), ..), (N, T, D)
        gated_residual(&x, &self.mlp.forward(&h)?, gate_mlp) // x + gate_mlp * mlp(h)
    }
}

/// The final layer of DiT: adaLN, then a linear map to each patch's pixels.
pub struct FinalLayer {
    pub(crate) linear: Linear,
    /// `adaLN_modulation.1`: `c -> shift, scale`, `[N, 2D]`.
    pub(crate) ada_ln_modulation: Linear,
}

impl FinalLayer {
    fn new(
        p: &mut Params,
        prefix: &str,
        hidden: usize,
        patch_size: usize,
        out_channels: usize,
    ) -> Result<Self> {
        // Zero-out output layers: the initial model predicts 0.
        let out = patch_size * patch_size * out_channels;
        let linear = Linear::new(p, &format!("{prefix}.linear"), (out, hidden), Init::Zeros)?;
        let ada_ln_modulation = Linear::new(
            p,
            &format!("{prefix}.adaLN_modulation.1"),
            (2 * hidden, hidden),
            Init::Zeros,
        )?;
        Ok(Self {
            linear,
            ada_ln_modulation,
        })
    }

    /// `x: [N, T, D]`, `c_silu: [N, D]` -> `[N, T, p*p*C_out]`.
    pub fn forward(&self, x: &Tensor, c_silu: &Tensor) -> Result<Tensor> {
        let m = self.ada_ln_modulation.forward(c_silu)?.chunk(2, 1)?; // shift, scale: 2 x (N, D)
        self.linear.forward(&ln_modulate(x, &m[0], &m[1])?)
    }
}

/// Diffusion model with a Transformer backbone.
pub struct DiT {
    pub cfg: DitConfig,
    pub varmap: VarMap,
    pub(crate) x_embedder: PatchEmbed,
    pub(crate) t_embedder: TimestepEmbedder,
    pub(crate) y_embedder: LabelEmbedder,
    /// `[1, T, D]`, fixed sin-cos embedding (not a variable, as in the reference).
    pub(crate) pos_embed: Tensor,
    pub blocks: Vec<DiTBlock>,
    pub(crate) final_layer: FinalLayer,
    device: Device,
    dtype: DType,
}

impl DiT {
    /// A freshly initialised DiT (the reference's `initialize_weights`), every draw from `seed`
    /// in the order the layers are built.
    pub fn new(cfg: &DitConfig, seed: u64, dtype: DType, device: &Device) -> anyhow::Result<Self> {
        cfg.validate()?;
        let mut p = Params::new(seed, dtype, device);
        let d = cfg.hidden_size;
        let x_embedder = PatchEmbed::new(
            &mut p,
            "x_embedder",
            (cfg.in_channels, d),
            cfg.patch_size,
            cfg.grid_size(),
        )?;
        let t_embedder = TimestepEmbedder::new(&mut p, "t_embedder", d)?;
        let y_embedder = LabelEmbedder::new(&mut p, "y_embedder", cfg.label_rows(), d)?;
        let blocks = (0..cfg.depth)
            .map(|i| DiTBlock::new(&mut p, &format!("blocks.{i}"), cfg))
            .collect::<Result<Vec<_>>>()?;
        let final_layer =
            FinalLayer::new(&mut p, "final_layer", d, cfg.patch_size, cfg.out_channels())?;
        let pos = pos_embed_2d(d, cfg.grid_size());
        let pos_embed = Tensor::from_vec(pos, (1, cfg.num_tokens(), d), device)?.to_dtype(dtype)?;
        Ok(Self {
            cfg: cfg.clone(),
            varmap: p.varmap,
            x_embedder,
            t_embedder,
            y_embedder,
            pos_embed,
            blocks,
            final_layer,
            device: device.clone(),
            dtype,
        })
    }

    /// Build the shape of `cfg` and load its weights from a safetensors file with the reference names.
    pub fn load(
        cfg: &DitConfig,
        path: &std::path::Path,
        dtype: DType,
        device: &Device,
    ) -> anyhow::Result<Self> {
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
        for (name, var) in lock_vars(&self.varmap).iter() {
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

    /// Name → current value of every trainable variable.
    pub fn named_tensors(&self) -> std::collections::HashMap<String, Tensor> {
        lock_vars(&self.varmap)
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
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

    /// `[N, T, p*p*C] -> [N, C, H, W]` ('nhwpqc->nchpwq').
    pub(crate) fn unpatchify(&self, x: &Tensor) -> Result<Tensor> {
        let n = x.dim(0)?;
        let p = self.cfg.patch_size;
        let g = self.cfg.grid_size();
        let c = self.cfg.out_channels();
        x.reshape((n, g, g, p, p, c))?
            .permute((0, 5, 1, 3, 2, 4))?
            .reshape((n, c, g * p, g * p))
    }

    /// One timestep and one label per input.
    pub(crate) fn check_batch(x: &Tensor, t: &[f32], y: &[u32]) -> Result<()> {
        if t.len() != x.dim(0)? || y.len() != x.dim(0)? {
            candle_core::bail!(
                "forward: batch {} with {} timesteps and {} labels",
                x.dim(0)?,
                t.len(),
                y.len()
            );
        }
        Ok(())
    }

    /// The SiLU of the conditioning `c = t_emb + y_emb`, `[N, D]`, which every adaLN starts with.
    /// Labels equal to `num_classes` are the null class.
    pub(crate) fn condition_silu(&self, t: &[f32], y: &[u32]) -> Result<Tensor> {
        let c = (self.t_embedder.forward(t, &self.device, self.dtype)?
            + self.y_embedder.forward(y)?)?; // (N, D)
        c.silu()
    }

    /// The final layer and unpatchify: `[N, T, D] -> [N, C_out, H, W]`.
    pub(crate) fn head(&self, x: &Tensor, c_silu: &Tensor) -> Result<Tensor> {
        self.unpatchify(&self.final_layer.forward(x, c_silu)?)
    }

    /// Forward pass returning the output `[N, C_out, H, W]` and the hidden states after each block
    /// (`[N, T, D]`), which feature distillation matches.
    ///
    /// `x: [N, C, H, W]` images or latents, `t: [N]` timesteps, `y: [N]` labels (null class =
    /// `num_classes`). Training calls `forward_recorded` instead, for the hand-written backward.
    pub fn forward_with_features(
        &self,
        x: &Tensor,
        t: &[f32],
        y: &[u32],
    ) -> Result<(Tensor, Vec<Tensor>)> {
        Self::check_batch(x, t, y)?;
        let c = self.condition_silu(t, y)?; // (N, D)
        let mut x = self.x_embedder.forward(x)?.broadcast_add(&self.pos_embed)?; // (N, T, D)
        let mut features = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            x = block.forward(&x, &c)?; // (N, T, D)
            features.push(x.clone());
        }
        Ok((self.head(&x, &c)?, features)) // (N, C_out, H, W)
    }

    /// `forward(x, t, y) -> [N, C_out, H, W]`.
    pub fn forward(&self, x: &Tensor, t: &[f32], y: &[u32]) -> Result<Tensor> {
        Ok(self.forward_with_features(x, t, y)?.0)
    }

    /// The predicted noise of a model output: its first `in_channels` channels (the rest, with
    /// `learn_sigma`, are the variance).
    pub fn eps(&self, out: &Tensor) -> Result<Tensor> {
        if self.cfg.learn_sigma {
            out.narrow(1, 0, self.cfg.in_channels)
        } else {
            Ok(out.clone())
        }
    }

    /// The predicted noise: `eps(forward(x, t, y))`.
    pub fn forward_eps(&self, x: &Tensor, t: &[f32], y: &[u32]) -> Result<Tensor> {
        self.eps(&self.forward(x, t, y)?)
    }

    /// Classifier-free guidance: `eps_u + scale * (eps_c - eps_u)` from one batched pass over the
    /// conditional and null-class inputs. Scale 1 is the plain conditional model (one pass).
    /// For sampling: no gradient flows (`forward_inference`).
    pub fn forward_cfg(&self, x: &Tensor, t: &[f32], y: &[u32], scale: f64) -> Result<Tensor> {
        if (scale - 1.0).abs() < 1e-12 || self.cfg.label_rows() == self.cfg.num_classes {
            return self.eps(&self.forward_inference(x, t, y)?);
        }
        let n = x.dim(0)?;
        let xx = Tensor::cat(&[x, x], 0)?;
        let tt: Vec<f32> = t.iter().chain(t.iter()).copied().collect();
        let null = self.cfg.null_class() as u32;
        let yy: Vec<u32> = y
            .iter()
            .copied()
            .chain(std::iter::repeat_n(null, n))
            .collect();
        let eps = self.eps(&self.forward_inference(&xx, &tt, &yy)?)?;
        let cond = eps.narrow(0, 0, n)?;
        let uncond = eps.narrow(0, n, n)?;
        &uncond + ((&cond - &uncond)? * scale)?
    }
}

//################################################################################
//                   Sine/Cosine Positional Embedding Functions                   #
//################################################################################

/// The fixed 2D sin-cos position embedding `[T, D]` of MAE/DiT: the first half of each row encodes
/// the grid column (what the reference calls `emb_h`, built from `meshgrid(w, h)[0]`), the second
/// half the row; each half is `[sin, cos]`.
pub fn pos_embed_2d(dim: usize, grid: usize) -> Vec<f32> {
    let quarter = dim / 4;
    let omega: Vec<f64> = (0..quarter)
        .map(|i| 1.0 / 10000f64.powf(i as f64 / quarter as f64))
        .collect();
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
