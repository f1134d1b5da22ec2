//! Evaluating a trained generator: samples from seeded noise, FID-proxy / KID / PRDC against the
//! test set in the feature net's space, teacher fidelity on the same noise and labels, and speed.

use std::time::Instant;

use anyhow::Result;
use candle_core::Tensor;
use dit::{DiT, NoiseSchedule, SamplerConfig};
use serde::{Deserialize, Serialize};

use crate::featnet::{FeatNet, FEAT_DIM};
use crate::kd::{onestep_generate, Mode};
use crate::metrics;

/// How a model is evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Generated images compared with the test set.
    #[serde(default = "d_samples")]
    pub samples: usize,
    /// Sampler of multi-step models (one-step students use one forward pass).
    #[serde(default = "d_sampler")]
    pub sampler: SamplerConfig,
    /// Seed of the evaluation noise and labels (shared by student and teacher for fidelity).
    #[serde(default)]
    pub seed: u64,
    /// Measure latency and throughput.
    #[serde(default = "d_true")]
    pub speed: bool,
}

fn d_samples() -> usize {
    1000
}
fn d_sampler() -> SamplerConfig {
    SamplerConfig { steps: 25, cfg_scale: 2.0, ..Default::default() }
}
fn d_true() -> bool {
    true
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self { samples: d_samples(), sampler: d_sampler(), seed: 0, speed: true }
    }
}

/// The measured quality and cost of one model.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EvalResult {
    pub fid_proxy: f64,
    pub kid: f64,
    pub kid_std: f64,
    pub precision: f64,
    pub recall: f64,
    pub density: f64,
    pub coverage: f64,
    /// Per-pixel MSE between student and teacher samples from the same noise and labels.
    pub fidelity_mse: Option<f64>,
    /// Fréchet distance between student and teacher sample features.
    pub fidelity_fd: Option<f64>,
    /// Share of generated images the feature net classifies as the requested label.
    pub class_accuracy: f64,
    /// Milliseconds to generate one image (all sampler steps) at batch 1, median.
    pub latency_ms: Option<f64>,
    /// Images per second at batch 64, median.
    pub images_per_s: Option<f64>,
    /// Forward passes per generated image (steps, x2 with guidance).
    pub forwards_per_image: usize,
    /// GFLOPs per generated image.
    pub gflops_per_image: f64,
}

/// Seeded evaluation noise and labels (labels cycle through the classes).
pub fn eval_inputs(model: &DiT, n: usize, seed: u64) -> Result<(Tensor, Vec<u32>)> {
    let c = &model.cfg;
    let mut rng = dit::rng::seeded(seed ^ 0xE7A1);
    let noise = dit::rng::randn(&mut rng, &[n, c.in_channels, c.input_size, c.input_size], model.device())?;
    let labels = (0..n).map(|i| (i % c.num_classes) as u32).collect();
    Ok((noise, labels))
}

/// Generate images for `noise`/`labels` in batches.
pub fn generate(model: &DiT, mode: Mode, noise: &Tensor, labels: &[u32], sampler: &SamplerConfig, seed: u64) -> Result<Tensor> {
    let mut rng = dit::rng::seeded(seed ^ 0x5A3);
    let schedule = NoiseSchedule::dit_default();
    let mut out = Vec::new();
    let n = labels.len();
    for start in (0..n).step_by(250) {
        let b = 250.min(n - start);
        let z = noise.narrow(0, start, b)?;
        let y = &labels[start..start + b];
        out.push(match mode {
            Mode::Onestep => onestep_generate(model, &z, y)?.clamp(-1f32, 1f32)?.detach(),
            _ => dit::sampler::sample(model, &schedule, &z, y, sampler, &mut rng)?,
        });
    }
    Ok(Tensor::cat(&out, 0)?)
}

/// Forward passes per image of a generator.
pub fn forwards_per_image(mode: Mode, sampler: &SamplerConfig) -> usize {
    match mode {
        Mode::Onestep => 1,
        _ => sampler.steps * if (sampler.cfg_scale - 1.0).abs() > 1e-12 { 2 } else { 1 },
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// (latency ms at batch 1, images/s at batch 64): medians of 3 timed runs after one warm-up.
pub fn measure_speed(model: &DiT, mode: Mode, sampler: &SamplerConfig) -> Result<(f64, f64)> {
    let mut lat = Vec::new();
    let mut thr = Vec::new();
    let (z1, y1) = eval_inputs(model, 1, 99)?;
    let (z64, y64) = eval_inputs(model, 64, 98)?;
    for i in 0..4 {
        let t = Instant::now();
        generate(model, mode, &z1, &y1, sampler, 0)?;
        let a = t.elapsed().as_secs_f64();
        let t = Instant::now();
        generate(model, mode, &z64, &y64, sampler, 0)?;
        let b = t.elapsed().as_secs_f64();
        if i > 0 {
            lat.push(a * 1e3);
            thr.push(64.0 / b);
        }
    }
    Ok((median(lat), median(thr)))
}

/// Test-set features (computed once per call site and reused across models).
pub fn reference_features(net: &FeatNet, test: &crate::data::Dataset) -> Result<Vec<f32>> {
    net.features_of(&test.images, 500)
}

/// Evaluate `model` (`mode` decides how it generates) against `test_feats`; with a teacher, also
/// fidelity on the same noise and labels (`teacher_samples` can be passed in when cached).
pub fn evaluate(
    model: &DiT,
    mode: Mode,
    cfg: &EvalConfig,
    net: &FeatNet,
    test_feats: &[f32],
    teacher_samples: Option<&Tensor>,
) -> Result<(EvalResult, Tensor)> {
    let (noise, labels) = eval_inputs(model, cfg.samples, cfg.seed)?;
    let x = generate(model, mode, &noise, &labels, &cfg.sampler, cfg.seed)?;
    let flat: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let feats = net.features_of(&flat, 500)?;
    let fid = metrics::frechet_distance(test_feats, &feats, FEAT_DIM)?;
    let kid = metrics::kid(test_feats, &feats, FEAT_DIM, None, 10, cfg.seed);
    let prdc = metrics::prdc(test_feats, &feats, FEAT_DIM, metrics::PRDC_K);
    let pred = net.predict(&flat, 500)?;
    let class_accuracy = pred.iter().zip(&labels).filter(|(p, l)| p == l).count() as f64 / labels.len() as f64;
    let (mut fidelity_mse, mut fidelity_fd) = (None, None);
    if let Some(ts) = teacher_samples {
        fidelity_mse = Some((&x - ts)?.sqr()?.mean_all()?.to_scalar::<f32>()? as f64);
        let tf = net.features_of_tensor(ts)?;
        fidelity_fd = Some(metrics::frechet_distance(&tf, &feats, FEAT_DIM)?);
    }
    let fpi = forwards_per_image(mode, &cfg.sampler);
    let (latency_ms, images_per_s) = if cfg.speed {
        let (l, t) = measure_speed(model, mode, &cfg.sampler)?;
        (Some(l), Some(t))
    } else {
        (None, None)
    };
    Ok((
        EvalResult {
            fid_proxy: fid,
            kid: kid.mean,
            kid_std: kid.std,
            precision: prdc.precision,
            recall: prdc.recall,
            density: prdc.density,
            coverage: prdc.coverage,
            fidelity_mse,
            fidelity_fd,
            class_accuracy,
            latency_ms,
            images_per_s,
            forwards_per_image: fpi,
            gflops_per_image: fpi as f64 * model.cfg.forward_gflops(),
        },
        x,
    ))
}
