//! The FID-proxy feature network. No Inception weights can be fetched here, so the harness trains
//! its own small CNN classifier on the training split and uses its penultimate layer (the 128-d
//! post-ReLU activations the classifier head reads, like Inception's pool features) as the feature
//! space. The metric built on it is called `fid_proxy`, never FID: numbers are comparable only
//! under the same feature net, whose SHA-256 every metrics row records.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Conv2d, Conv2dConfig, Linear, Module};
use dit::params::{Init, Params};
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::optim::{AdamW, OptimConfig};

/// Feature dimension (width of the penultimate layer).
pub const FEAT_DIM: usize = 128;

/// conv(32) -> pool -> conv(64) -> pool -> fc(128) -> fc(classes).
pub struct FeatNet {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
    pub varmap: candle_nn::VarMap,
    pub meta: FeatNetMeta,
    device: Device,
}

/// What the shipped feature net is: recorded beside its weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeatNetMeta {
    pub channels: usize,
    pub size: usize,
    pub num_classes: usize,
    pub test_accuracy: f64,
    pub epochs: usize,
    pub seed: u64,
    pub dataset: String,
    /// FID-proxy of 5,000 held-out-from-the-metric real training images against the test set:
    /// the floor any generator can reach with this sample size.
    pub fid_proxy_floor: Option<f64>,
    pub wall_time_s: f64,
}

impl FeatNet {
    pub fn new(
        channels: usize,
        size: usize,
        num_classes: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let mut p = Params::new(seed, DType::F32, device);
        let xavier = |fan_in, fan_out| Init::XavierUniform { fan_in, fan_out };
        let flat = 64 * (size / 4) * (size / 4);
        let conv = |c: Tensor, b: Tensor| {
            Conv2d::new(
                c,
                Some(b),
                Conv2dConfig {
                    padding: 1,
                    ..Default::default()
                },
            )
        };
        let conv1 = conv(
            p.get(
                "conv1.weight",
                &[32, channels, 3, 3],
                xavier(channels * 9, 32 * 9),
            )?,
            p.get("conv1.bias", &[32], Init::Zeros)?,
        );
        let conv2 = conv(
            p.get("conv2.weight", &[64, 32, 3, 3], xavier(32 * 9, 64 * 9))?,
            p.get("conv2.bias", &[64], Init::Zeros)?,
        );
        let fc1 = Linear::new(
            p.get("fc1.weight", &[FEAT_DIM, flat], xavier(flat, FEAT_DIM))?,
            Some(p.get("fc1.bias", &[FEAT_DIM], Init::Zeros)?),
        );
        let fc2 = Linear::new(
            p.get(
                "fc2.weight",
                &[num_classes, FEAT_DIM],
                xavier(FEAT_DIM, num_classes),
            )?,
            Some(p.get("fc2.bias", &[num_classes], Init::Zeros)?),
        );
        let meta = FeatNetMeta {
            channels,
            size,
            num_classes,
            test_accuracy: 0.0,
            epochs: 0,
            seed,
            dataset: String::new(),
            fid_proxy_floor: None,
            wall_time_s: 0.0,
        };
        Ok(Self {
            conv1,
            conv2,
            fc1,
            fc2,
            varmap: p.varmap,
            meta,
            device: device.clone(),
        })
    }

    /// `[N, C, H, W]` in [-1, 1] -> `[N, 128]` features.
    pub fn features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.conv1.forward(x)?.relu()?.max_pool2d(2)?; // (N, 32, H/2, W/2)
        let h = self.conv2.forward(&h)?.relu()?.max_pool2d(2)?; // (N, 64, H/4, W/4)
        self.fc1.forward(&h.flatten_from(1)?)?.relu() // (N, 128)
    }

    pub fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2.forward(&self.features(x)?)
    }

    /// Features of flat `[N * C * H * W]` images, in batches, without gradients.
    pub fn features_of(&self, images: &[f32], batch: usize) -> Result<Vec<f32>> {
        let per = self.meta.channels * self.meta.size * self.meta.size;
        let n = images.len() / per;
        let mut out = Vec::with_capacity(n * FEAT_DIM);
        for start in (0..n).step_by(batch.max(1)) {
            let b = batch.min(n - start);
            let x = Tensor::from_slice(
                &images[start * per..(start + b) * per],
                (b, self.meta.channels, self.meta.size, self.meta.size),
                &self.device,
            )?;
            out.extend(
                self.features(&x)?
                    .detach()
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            );
        }
        Ok(out)
    }

    /// Features of a tensor of images `[N, C, H, W]`.
    pub fn features_of_tensor(&self, x: &Tensor) -> Result<Vec<f32>> {
        self.features_of(
            &x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
            250,
        )
    }

    /// Predicted class of each image.
    pub fn predict(&self, images: &[f32], batch: usize) -> Result<Vec<u32>> {
        let per = self.meta.channels * self.meta.size * self.meta.size;
        let n = images.len() / per;
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(batch.max(1)) {
            let b = batch.min(n - start);
            let x = Tensor::from_slice(
                &images[start * per..(start + b) * per],
                (b, self.meta.channels, self.meta.size, self.meta.size),
                &self.device,
            )?;
            out.extend(self.logits(&x)?.detach().argmax(1)?.to_vec1::<u32>()?);
        }
        Ok(out)
    }

    /// Fraction of `data` classified correctly.
    pub fn accuracy(&self, data: &Dataset) -> Result<f64> {
        let pred = self.predict(&data.images, 500)?;
        let ok = pred
            .iter()
            .zip(&data.labels)
            .filter(|(p, l)| **p == **l as u32)
            .count();
        Ok(ok as f64 / data.len() as f64)
    }

    /// Train with AdamW (lr 1e-3, cosine), batch 128, seeded order.
    pub fn train(
        &mut self,
        train: &Dataset,
        epochs: usize,
        seed: u64,
        progress: bool,
    ) -> Result<()> {
        let vars: Vec<(String, Var)> = dit::vars::sorted(&self.varmap);
        let cfg = OptimConfig {
            lr: 1e-3,
            warmup_steps: 100,
            min_lr_ratio: 0.05,
            grad_clip: 0.0,
            ..Default::default()
        };
        let mut opt = AdamW::new(vars, cfg.clone())?;
        let batch = 128;
        let steps = epochs * train.len() / batch;
        let mut order = crate::order::DataOrder::new(seed, train.len());
        let pb = crate::progress::bar(steps as u64, "featnet", progress);
        for step in 0..steps {
            let idx = order.batch(step, batch);
            let (x, y) = train.gather(&idx);
            let x = Tensor::from_vec(
                x,
                (batch, train.channels, train.height, train.width),
                &self.device,
            )?;
            let y = Tensor::from_vec(y, batch, &self.device)?;
            let loss = candle_nn::loss::cross_entropy(&self.logits(&x)?, &y)?;
            let grads = loss.backward()?;
            opt.step(&grads, cfg.lr_at(step, steps))?;
            if step % 20 == 0 {
                pb.set_message(format!("loss {:.3}", loss.to_scalar::<f32>()?));
            }
            pb.inc(1);
        }
        pb.finish_and_clear();
        self.meta.epochs = epochs;
        self.meta.seed = seed;
        Ok(())
    }

    /// Save `featnet.safetensors` + `featnet.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let map = dit::vars::lock(&self.varmap)
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        dit::io::save_safetensors_atomic(&map, &dir.join("featnet.safetensors"))?;
        dit::io::write_json_atomic(&dir.join("featnet.json"), &self.meta)
    }

    /// Load a shipped feature net directory.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let dir = crate::paths::resolve(dir);
        let meta_path = dir.join("featnet.json");
        let meta: FeatNetMeta =
            serde_json::from_str(&std::fs::read_to_string(&meta_path).with_context(|| {
                format!(
                    "{}: missing feature net (run `ditkd featnet`)",
                    meta_path.display()
                )
            })?)
            .with_context(|| format!("{}: corrupt", meta_path.display()))?;
        let mut net = Self::new(meta.channels, meta.size, meta.num_classes, 0, device)?;
        let w = dir.join("featnet.safetensors");
        let t = candle_core::safetensors::load(&w, device)
            .with_context(|| format!("{}: corrupt or missing weights", w.display()))?;
        for (name, var) in dit::vars::lock(&net.varmap).iter() {
            let v = t
                .get(name)
                .with_context(|| format!("{}: tensor `{name}` missing", w.display()))?;
            var.set(v)?;
        }
        net.meta = meta;
        Ok(net)
    }

    /// SHA-256 (first 16 hex digits) of the weights file: identifies the feature space.
    pub fn hash(dir: &Path) -> Result<String> {
        Ok(
            crate::checkpoint::file_hash(&crate::paths::resolve(dir).join("featnet.safetensors"))?
                [..16]
                .to_string(),
        )
    }
}

/// Where the shipped feature net lives.
pub fn default_dir() -> PathBuf {
    PathBuf::from("results/featnet")
}
