//! The building blocks the DiT takes from timm (`PatchEmbed`, `Attention`, `Mlp`) and the linear
//! layer they are made of, with the reference's parameter names. Their forwards run the fused
//! ops of `crate::ops`, which carry gradients (candle's fused CPU softmax and layer norm do not).

use candle_core::{Result, Tensor};

use crate::ops;
use crate::params::{Init, Params};

/// `y = x W^T + b` (`nn.Linear`): `weight: [out, in]`, `bias: [out]` (zero-initialised).
pub struct Linear {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
}

impl Linear {
    /// `{prefix}.weight` of shape `[out, in]` drawn from `init`, and `{prefix}.bias`.
    pub(crate) fn new(
        p: &mut Params,
        prefix: &str,
        (out, inp): (usize, usize),
        init: Init,
    ) -> Result<Self> {
        let weight = p.get(&format!("{prefix}.weight"), &[out, inp], init)?;
        let bias = p.get(&format!("{prefix}.bias"), &[out], Init::Zeros)?;
        Ok(Self { weight, bias })
    }

    /// Xavier-uniform weights, as the reference's `initialize_weights` gives every `nn.Linear`.
    pub(crate) fn xavier(p: &mut Params, prefix: &str, (out, inp): (usize, usize)) -> Result<Self> {
        Self::new(
            p,
            prefix,
            (out, inp),
            Init::XavierUniform {
                fan_in: inp,
                fan_out: out,
            },
        )
    }

    /// `x: [.., in] -> [.., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(x, &self.weight, &self.bias)
    }
}

/// 2D image to patch embedding: a `p x p` convolution with stride `p`, run as a linear layer on
/// the flattened patches.
pub struct PatchEmbed {
    /// `proj.weight` viewed as `[D, C*p*p]`, and `proj.bias`.
    pub(crate) proj: Linear,
    /// The variable `proj.weight` itself, `[D, C, p, p]` (what its gradient is for).
    pub(crate) proj_weight: Tensor,
    patch_size: usize,
    grid_size: usize,
}

impl PatchEmbed {
    pub(crate) fn new(
        p: &mut Params,
        prefix: &str,
        (in_channels, hidden): (usize, usize),
        patch_size: usize,
        grid_size: usize,
    ) -> Result<Self> {
        let cpp = in_channels * patch_size * patch_size;
        let init = Init::XavierUniform {
            fan_in: cpp,
            fan_out: hidden,
        }; // on the weight viewed as 2D
        let proj_weight = p.get(
            &format!("{prefix}.proj.weight"),
            &[hidden, in_channels, patch_size, patch_size],
            init,
        )?;
        let bias = p.get(&format!("{prefix}.proj.bias"), &[hidden], Init::Zeros)?;
        let proj = Linear {
            weight: proj_weight.reshape((hidden, cpp))?,
            bias,
        };
        Ok(Self {
            proj,
            proj_weight,
            patch_size,
            grid_size,
        })
    }

    /// `[N, C, H, W] -> [N, T, C*p*p]`, flattening each patch in the conv weight's (c, i, j) order.
    pub(crate) fn patchify(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, _, _) = x.dims4()?;
        let (p, g) = (self.patch_size, self.grid_size);
        x.reshape((n, c, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))? // (N, h, w, C, p, q)
            .reshape((n, g * g, c * p * p))?
            .contiguous()
    }

    /// `[N, C, H, W] -> [N, T, D]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.proj.forward(&self.patchify(x)?)
    }
}

/// Multi-head self-attention with a packed qkv projection (timm's `Attention`, `qkv_bias=True`).
pub struct Attention {
    pub(crate) qkv: Linear,
    pub(crate) proj: Linear,
    pub(crate) num_heads: usize,
}

impl Attention {
    pub(crate) fn new(p: &mut Params, prefix: &str, dim: usize, num_heads: usize) -> Result<Self> {
        let qkv = Linear::xavier(p, &format!("{prefix}.qkv"), (3 * dim, dim))?;
        let proj = Linear::xavier(p, &format!("{prefix}.proj"), (dim, dim))?;
        Ok(Self {
            qkv,
            proj,
            num_heads,
        })
    }

    /// `[N, T, D] -> [N, T, D]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let qkv = self.qkv.forward(x)?; // (N, T, 3D)
        let o = ops::attention(&qkv, self.num_heads)?; // (N, T, D), heads merged
        self.proj.forward(&o)
    }
}

/// The transformer MLP with the tanh GELU (timm's `Mlp`, `act_layer=GELU(approximate="tanh")`).
pub struct Mlp {
    pub(crate) fc1: Linear,
    pub(crate) fc2: Linear,
}

impl Mlp {
    pub(crate) fn new(p: &mut Params, prefix: &str, dim: usize, hidden: usize) -> Result<Self> {
        let fc1 = Linear::xavier(p, &format!("{prefix}.fc1"), (hidden, dim))?;
        let fc2 = Linear::xavier(p, &format!("{prefix}.fc2"), (dim, hidden))?;
        Ok(Self { fc1, fc2 })
    }

    /// `[N, T, D] -> [N, T, D]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = ops::gelu(&self.fc1.forward(x)?)?; // (N, T, hidden)
        self.fc2.forward(&h)
    }
}
