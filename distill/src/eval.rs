//! Evaluating a trained generator: samples from seeded noise, FID-proxy / KID / PRDC against the
//! test set in the feature net's space, teacher fidelity on the same noise and labels, and speed.

use std::time::Instant;

use anyhow::Result;
use candle_core::Tensor;
use dit::{DiT, NoiseSchedule, SamplerConfig};
use serde::{Deserialize, Serialize};

use crate::featnet::{FeatNet, FEAT_DIM};
use crate::inception::stats::Stats;
use crate::inception::FidInception;
use crate::kd::{onestep_generate, Generation, Mode};
use crate::metrics;

/// A quality metric an evaluation can compute (`eval.metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// The FID-proxy (the feature net's space) with KID, PRDC and class accuracy: always
    /// computed, since the design law, its guards and the plots use it.
    FidProxy,
    /// The field's FID (TF-FID Inception-v3, 2048-d pool features) and FID∞ against the test
    /// set: hundreds of CPU-ms per image, so opt-in.
    Fid,
}

impl Metric {
    /// The name in specs and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FidProxy => "fid_proxy",
            Self::Fid => "fid",
        }
    }
}

impl std::str::FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fid_proxy" => Ok(Self::FidProxy),
            "fid" => Ok(Self::Fid),
            other => Err(format!(
                "unknown metric `{}` (fid_proxy, fid)",
                other.chars().take(40).collect::<String>()
            )),
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    /// Measure latency and throughput inside the run (a sweep measures them afterwards instead,
    /// in a quiet pass: `ditkd latency`).
    #[serde(default = "d_true")]
    pub speed: bool,
    /// Learning curve: steps at which the EMA weights are also evaluated (the last step always is).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub at_steps: Vec<usize>,
    /// Learning curve: this many points ending at the last step, each half the next (log-spaced),
    /// merged with `at_steps`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub curve_points: usize,
    /// Quality metrics: `[fid_proxy]` (the default) or `[fid_proxy, fid]`. `fid_proxy` must be
    /// listed (it is always computed). Left out of the serialised config when it is the default,
    /// so configs, run hashes and reference keys of sweeps without `fid` are unchanged.
    #[serde(default = "d_metrics", skip_serializing_if = "is_default_metrics")]
    pub metrics: Vec<Metric>,
    /// With `fid`: real images of the FID statistics, the first N of the test set (default: the
    /// whole test set, as the field reports FID). Fewer make the statistics cheaper and the FID
    /// biased upwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fid_real_images: Option<usize>,
}

fn d_metrics() -> Vec<Metric> {
    vec![Metric::FidProxy]
}
fn is_default_metrics(v: &[Metric]) -> bool {
    v == [Metric::FidProxy]
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

fn d_samples() -> usize {
    1000
}
fn d_sampler() -> SamplerConfig {
    SamplerConfig {
        steps: 25,
        cfg_scale: 2.0,
        ..Default::default()
    }
}
fn d_true() -> bool {
    true
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            samples: d_samples(),
            sampler: d_sampler(),
            seed: 0,
            speed: true,
            at_steps: Vec::new(),
            curve_points: 0,
            metrics: d_metrics(),
            fid_real_images: None,
        }
    }
}

/// Fewest generated images an evaluation accepts: PRDC needs more than k nearest neighbours.
pub const MIN_SAMPLES: usize = metrics::PRDC_K + 1;
/// Most generated images an evaluation accepts (their pixels and features are held in memory).
pub const MAX_SAMPLES: usize = 100_000;

impl EvalConfig {
    /// Checked before any training starts, so no error surfaces after a run has trained.
    /// Errors name the field below `eval.`.
    pub fn validate(&self) -> Result<()> {
        if !(MIN_SAMPLES..=MAX_SAMPLES).contains(&self.samples) {
            anyhow::bail!("samples: must lie in {MIN_SAMPLES}..={MAX_SAMPLES} (got {}; PRDC needs more than k = {} images)", self.samples, metrics::PRDC_K);
        }
        self.sampler
            .validate(NoiseSchedule::dit_default().num_steps())
            .map_err(|e| anyhow::anyhow!("sampler.{e}"))?;
        if self.at_steps.contains(&0) {
            anyhow::bail!("at_steps: steps must be >= 1");
        }
        if self.curve_points > 32 {
            anyhow::bail!("curve_points: at most 32 (got {})", self.curve_points);
        }
        if self.metrics.is_empty() {
            anyhow::bail!("metrics: at least `fid_proxy` (e.g. [fid_proxy] or [fid_proxy, fid])");
        }
        if let Some((i, m)) = self
            .metrics
            .iter()
            .enumerate()
            .find(|(i, m)| self.metrics[..*i].contains(m))
        {
            anyhow::bail!("metrics: `{m}` is listed twice (entry {i})");
        }
        if !self.metrics.contains(&Metric::FidProxy) {
            anyhow::bail!("metrics: must list `fid_proxy` (it is always computed: the design law, its guards and the plots use it), e.g. [fid_proxy, fid]");
        }
        if let Some(n) = self.fid_real_images {
            if !self.wants_fid() {
                anyhow::bail!("fid_real_images: only meaningful with `fid` in eval.metrics");
            }
            if !(2..=MAX_SAMPLES).contains(&n) {
                anyhow::bail!("fid_real_images: must lie in 2..={MAX_SAMPLES} (got {n})");
            }
        }
        Ok(())
    }

    /// `fid` is among the metrics.
    pub fn wants_fid(&self) -> bool {
        self.metrics.contains(&Metric::Fid)
    }

    /// The steps a run of `total` steps is evaluated at, ascending, ending with `total`.
    pub fn curve_steps(&self, total: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .at_steps
            .iter()
            .copied()
            .filter(|&s| s <= total)
            .collect();
        for k in 1..self.curve_points {
            let s = total >> k;
            if s >= 1 {
                v.push(s);
            }
        }
        v.push(total);
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// The measured quality and cost of one model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Fréchet distance in the feature net's space, generated images against the whole test set.
    pub fid_proxy: f64,
    /// FID∞ (Chong & Forsyth 2020): the FID-proxy at 40-100 % of the generated set, fitted linear
    /// in 1/N and extrapolated to N → ∞ (removes the bias of a finite sample count).
    #[serde(default)]
    pub fid_proxy_inf: Option<f64>,
    /// KID as stored: the raw unbiased MMD² (not ×10³), against a real subset of equal size.
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
    /// The field's FID (TF-FID Inception-v3) against the test set's statistics; only with `fid`
    /// in `eval.metrics` (absent, hence null in the tables, otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fid: Option<f64>,
    /// FID∞: the FID at 40-100 % of the generated set, linear in 1/N, extrapolated to N → ∞ (as
    /// `fid_proxy_inf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fid_inf: Option<f64>,
    /// SHA-256 of the Inception weights `fid` was computed with (values are comparable only
    /// under the same weights and real images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fid_weights_sha256: Option<String>,
}

/// The FID's side of an evaluation: the Inception network and the real images' statistics.
#[derive(Debug)]
pub struct FidScorer {
    pub net: FidInception,
    /// Statistics of the real images every evaluation compares with (the test set, or its first
    /// `eval.fid_real_images`).
    pub real: Stats,
    /// The statistics' cache file.
    pub cache: std::path::PathBuf,
    /// The `eval.fid_real_images` it was loaded for (None: the whole test set).
    pub real_images: Option<usize>,
}

impl FidScorer {
    /// The cached weights (an error naming the set-up command when absent) and the statistics of
    /// the first `real_images` images of `test` (all by default), cached in `cache_dir` by the
    /// weights' and the pixels' SHA-256.
    pub fn load(
        test: &crate::data::Dataset,
        real_images: Option<usize>,
        cache_dir: &std::path::Path,
    ) -> Result<Self> {
        let net = FidInception::load_default()?;
        let n = real_images.unwrap_or(test.len());
        let (real, cache, _) = crate::inception::stats::dataset_stats(cache_dir, &net, test, n)?;
        Ok(Self {
            net,
            real,
            cache,
            real_images,
        })
    }

    /// FID and FID∞ of generated images `x` (`[n, c, h, w]` in [-1, 1], flattened in `flat`).
    pub fn score(
        &self,
        flat: &[f32],
        dims: (usize, usize, usize, usize),
    ) -> Result<(f64, Option<f64>)> {
        let (n, c, h, w) = dims;
        let feats = self.net.features(flat, n, c, h, w, (-1.0, 1.0))?;
        self.score_features(&feats, n)
    }

    /// FID and FID∞ of `n` images' Inception features (`[n * 2048]`, row-major).
    pub fn score_features(&self, feats: &[f32], n: usize) -> Result<(f64, Option<f64>)> {
        let fid = self.real.frechet_distance_to(feats)?;
        let dim = crate::inception::FEATURES;
        let inf = extrapolate_inf(n, |k| {
            if k == n {
                Ok(fid)
            } else {
                self.real.frechet_distance_to(&feats[..k * dim])
            }
        })?;
        Ok((fid, inf))
    }
}

/// Seeded evaluation noise and labels (labels cycle through the classes).
pub fn eval_inputs(model: &DiT, n: usize, seed: u64) -> Result<(Tensor, Vec<u32>)> {
    let c = &model.cfg;
    let mut rng = dit::rng::seeded(seed ^ 0xE7A1);
    let noise = dit::rng::randn(
        &mut rng,
        &[n, c.in_channels, c.input_size, c.input_size],
        model.device(),
    )?;
    let labels = (0..n).map(|i| (i % c.num_classes) as u32).collect();
    Ok((noise, labels))
}

/// Generate images for `noise`/`labels` in batches.
pub fn generate(
    model: &DiT,
    mode: Mode,
    noise: &Tensor,
    labels: &[u32],
    sampler: &SamplerConfig,
    seed: u64,
) -> Result<Tensor> {
    generate_with_progress(model, mode, noise, labels, sampler, seed, |_| ())
}

/// [`generate`], calling `done(images)` after each batch.
pub fn generate_with_progress(
    model: &DiT,
    mode: Mode,
    noise: &Tensor,
    labels: &[u32],
    sampler: &SamplerConfig,
    seed: u64,
    mut done: impl FnMut(usize),
) -> Result<Tensor> {
    let mut rng = dit::rng::seeded(seed ^ 0x5A3);
    let schedule = NoiseSchedule::dit_default();
    let mut out = Vec::new();
    let n = labels.len();
    for start in (0..n).step_by(250) {
        let b = 250.min(n - start);
        let z = noise.narrow(0, start, b)?;
        let y = &labels[start..start + b];
        out.push(match mode.generation() {
            Generation::OneForward => onestep_generate(model, &z, y)?.clamp(-1f32, 1f32)?.detach(),
            Generation::Sampler => {
                dit::sampler::sample(model, &schedule, &z, y, sampler, &mut rng)?
            }
        });
        done(b);
    }
    Ok(Tensor::cat(&out, 0)?)
}

/// Forward passes per image of a generator.
pub fn forwards_per_image(mode: Mode, sampler: &SamplerConfig) -> usize {
    match mode.generation() {
        Generation::OneForward => 1,
        Generation::Sampler => {
            sampler.steps
                * if (sampler.cfg_scale - 1.0).abs() > 1e-12 {
                    2
                } else {
                    1
                }
        }
    }
}

/// The upper median of `v` (NaN for an empty `v`; NaNs sort last).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (latency ms at batch 1, images/s at batch 64): medians of 3 timed runs after one warm-up.
pub fn measure_speed(model: &DiT, mode: Mode, sampler: &SamplerConfig) -> Result<(f64, f64)> {
    let t = time_generation(model, mode, sampler, &[1, 64], 3)?;
    Ok((t[0].median_ms, 64.0 / (t[1].median_ms / 1e3)))
}

/// Wall times of generating one batch (all sampler steps), after one untimed warm-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub batch: usize,
    pub repeats: usize,
    pub min_ms: f64,
    pub median_ms: f64,
}

/// Time generating a batch of each size in `batches`, `repeats` times each (rounds alternate
/// between the sizes, so a disturbance hits all of them alike).
pub fn time_generation(
    model: &DiT,
    mode: Mode,
    sampler: &SamplerConfig,
    batches: &[usize],
    repeats: usize,
) -> Result<Vec<Timing>> {
    let inputs = batches
        .iter()
        .map(|&b| eval_inputs(model, b, 90 + b as u64))
        .collect::<Result<Vec<_>>>()?;
    let mut ms: Vec<Vec<f64>> = vec![Vec::new(); batches.len()];
    for round in 0..=repeats {
        for (i, (z, y)) in inputs.iter().enumerate() {
            let t = Instant::now();
            generate(model, mode, z, y, sampler, 0)?;
            if round > 0 {
                ms[i].push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    Ok(batches
        .iter()
        .zip(ms)
        .map(|(&batch, v)| Timing {
            batch,
            repeats,
            min_ms: v.iter().copied().fold(f64::INFINITY, f64::min),
            median_ms: median(v),
        })
        .collect())
}

/// Test-set features (computed once per call site and reused across models).
pub fn reference_features(net: &FeatNet, test: &crate::data::Dataset) -> Result<Vec<f32>> {
    net.features_of(&test.images, 500)
}

/// `n` rows of `feats` (dim `dim`) drawn without replacement by `seed`: the fixed real subset every
/// evaluation of a sweep compares with (same seed, same rows).
pub fn real_subset(feats: &[f32], dim: usize, n: usize, seed: u64) -> Vec<f32> {
    use rand::SeedableRng;
    let total = feats.len() / dim;
    let n = n.min(total);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5EA1_5B5E);
    let mut idx = rand::seq::index::sample(&mut rng, total, n).into_vec();
    idx.sort_unstable();
    idx.iter()
        .flat_map(|&i| feats[i * dim..(i + 1) * dim].iter().copied())
        .collect()
}

/// FID∞: FIDs of the first 40, 60, 80 and 100 % of the generated rows (labels cycle, so each
/// prefix keeps the classes balanced), least-squares line in 1/N, value at 1/N = 0. None when the
/// set is too small for four distinct sizes.
pub fn fid_infinity(real: &[f32], fake: &[f32], dim: usize) -> Result<Option<f64>> {
    extrapolate_inf(fake.len() / dim, |n| {
        metrics::frechet_distance(real, &fake[..n * dim], dim)
    })
}

/// The Chong & Forsyth extrapolation over the first 40, 60, 80 and 100 % of `m` generated rows:
/// `distance(n)` of each prefix size `n`, least-squares line in 1/n, value at 1/n = 0. None when
/// `m` is too small for four distinct sizes.
pub fn extrapolate_inf(
    m: usize,
    mut distance: impl FnMut(usize) -> Result<f64>,
) -> Result<Option<f64>> {
    let sizes: Vec<usize> = [0.4, 0.6, 0.8, 1.0]
        .iter()
        .map(|f| ((m as f64 * f).round() as usize).max(2))
        .collect();
    if sizes.windows(2).any(|w| w[0] >= w[1]) {
        return Ok(None);
    }
    let mut pts = Vec::new();
    for &n in &sizes {
        pts.push((1.0 / n as f64, distance(n)?));
    }
    let k = pts.len() as f64;
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / k,
        pts.iter().map(|p| p.1).sum::<f64>() / k,
    );
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = sxy / sxx;
    Ok(Some(my - slope * mx))
}

/// A model with a NaN or infinite weight samples clamped garbage (an all-black grid), which must
/// not be scored as a result.
pub fn check_finite_weights(model: &DiT) -> Result<()> {
    let mut named: Vec<_> = model.named_tensors().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in named {
        let v: Vec<f32> = t
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1()?;
        if let Some(x) = v.iter().find(|x| !x.is_finite()) {
            anyhow::bail!("weight `{name}` holds a non-finite value ({x}): nothing is scored");
        }
    }
    Ok(())
}

/// Evaluate `model` (`mode` decides how it generates) against `test_feats`; with a teacher, also
/// fidelity on the same noise and labels (`teacher_samples` can be passed in when cached); with
/// `fid`, also the field's FID.
pub fn evaluate(
    model: &DiT,
    mode: Mode,
    cfg: &EvalConfig,
    net: &FeatNet,
    test_feats: &[f32],
    teacher_samples: Option<&Tensor>,
    fid: Option<&FidScorer>,
) -> Result<(EvalResult, Tensor)> {
    check_finite_weights(model)?;
    let (noise, labels) = eval_inputs(model, cfg.samples, cfg.seed)?;
    let x = generate(model, mode, &noise, &labels, &cfg.sampler, cfg.seed)?;
    let mut m = score(&x, &labels, cfg.seed, net, test_feats, teacher_samples, fid)?;
    m.forwards_per_image = forwards_per_image(mode, &cfg.sampler);
    m.gflops_per_image = m.forwards_per_image as f64 * model.cfg.forward_gflops();
    if cfg.speed {
        let (l, t) = measure_speed(model, mode, &cfg.sampler)?;
        (m.latency_ms, m.images_per_s) = (Some(l), Some(t));
    }
    Ok((m, x))
}

/// The quality metrics of generated images `x` (in [-1, 1]) made for `labels`, under the
/// protocol every model of a sweep shares: FID-proxy and FID∞ against the whole test set; KID
/// and PRDC against the fixed real subset of `x`'s size drawn by `seed` (PRDC's k-NN radii depend
/// on the set sizes: 10,000 real against 500 generated caps coverage near 0.2 even for real
/// images); class accuracy by the feature net; fidelity to the teacher's samples of the same
/// noise when given; with `fid`, the field's FID and FID∞ against its real statistics. Speed
/// fields are left empty.
pub fn score(
    x: &Tensor,
    labels: &[u32],
    seed: u64,
    net: &FeatNet,
    test_feats: &[f32],
    teacher_samples: Option<&Tensor>,
    fid: Option<&FidScorer>,
) -> Result<EvalResult> {
    let flat: Vec<f32> = x.flatten_all()?.to_vec1()?;
    if let Some(i) = flat.iter().position(|v| !v.is_finite()) {
        anyhow::bail!(
            "generated image {} holds a non-finite pixel ({}): the model's weights or the sampler are broken, nothing is scored",
            i / (flat.len() / labels.len().max(1)).max(1),
            flat[i]
        );
    }
    let feats = net.features_of(&flat, 500)?;
    let fid_proxy = metrics::frechet_distance(test_feats, &feats, FEAT_DIM)?;
    let fid_proxy_inf = fid_infinity(test_feats, &feats, FEAT_DIM)?;
    let real = real_subset(test_feats, FEAT_DIM, labels.len(), seed);
    let kid = metrics::kid(&real, &feats, FEAT_DIM, None, 10, seed)?;
    let prdc = metrics::prdc(&real, &feats, FEAT_DIM, metrics::PRDC_K)?;
    let pred = net.predict(&flat, 500)?;
    let class_accuracy =
        pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len().max(1) as f64;
    let (mut fidelity_mse, mut fidelity_fd) = (None, None);
    if let Some(ts) = teacher_samples {
        fidelity_mse = Some((x - ts)?.sqr()?.mean_all()?.to_scalar::<f32>()? as f64);
        let tf = net.features_of_tensor(ts)?;
        fidelity_fd = Some(metrics::frechet_distance(&tf, &feats, FEAT_DIM)?);
    }
    let (fid, fid_inf, fid_weights_sha256) = match fid {
        Some(f) => {
            let (v, inf) = f.score(&flat, x.dims4()?)?;
            (Some(v), inf, Some(f.net.weights_sha256.clone()))
        }
        None => (None, None, None),
    };
    Ok(EvalResult {
        fid_proxy,
        fid_proxy_inf,
        kid: kid.mean,
        kid_std: kid.std,
        precision: prdc.precision,
        recall: prdc.recall,
        density: prdc.density,
        coverage: prdc.coverage,
        fidelity_mse,
        fidelity_fd,
        class_accuracy,
        latency_ms: None,
        images_per_s: None,
        forwards_per_image: 0,
        gflops_per_image: 0.0,
        fid,
        fid_inf,
        fid_weights_sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model with a NaN weight samples clamped garbage (an all-black grid): it is refused, not scored.
    #[test]
    fn nan_weights_are_refused() {
        let cfg = dit::DitConfig {
            depth: 1,
            hidden_size: 16,
            num_heads: 2,
            patch_size: 7,
            ..Default::default()
        };
        let model = DiT::new(&cfg, 0, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        check_finite_weights(&model).unwrap();
        let data = model.varmap.data().lock().unwrap();
        let (name, var) = data
            .iter()
            .next()
            .map(|(k, v)| (k.clone(), v.clone()))
            .unwrap();
        drop(data);
        let nan = (var.as_tensor().ones_like().unwrap() * f64::NAN).unwrap();
        var.set(&nan).unwrap();
        let e = check_finite_weights(&model).unwrap_err().to_string();
        assert!(e.contains(&name) && e.contains("non-finite"), "{e}");
    }

    #[test]
    fn curve_steps_are_log_spaced_and_end_at_the_last_step() {
        let e = EvalConfig {
            curve_points: 4,
            at_steps: vec![300, 9999],
            ..Default::default()
        };
        assert_eq!(e.curve_steps(2000), vec![250, 300, 500, 1000, 2000]);
        assert_eq!(EvalConfig::default().curve_steps(10), vec![10]);
    }

    /// `eval.metrics`: typed names, `[fid_proxy]` by default and then absent from the serialised
    /// config (run hashes of sweeps without `fid` do not change), `fid_proxy` required.
    #[test]
    fn metrics_parse_default_and_validate() {
        let e: EvalConfig = serde_yaml_ng::from_str("samples: 16").unwrap();
        assert_eq!(e.metrics, vec![Metric::FidProxy]);
        assert!(!e.wants_fid());
        assert!(!serde_json::to_string(&e).unwrap().contains("metrics"));
        let e: EvalConfig = serde_yaml_ng::from_str("metrics: [fid_proxy, fid]").unwrap();
        assert!(e.wants_fid());
        e.validate().unwrap();
        assert!(serde_json::to_string(&e)
            .unwrap()
            .contains(r#""metrics":["fid_proxy","fid"]"#));
        let err = serde_yaml_ng::from_str::<EvalConfig>("metrics: [fid_proxy, fdi]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("fdi") && err.contains("fid_proxy"), "{err}");
        for (metrics, want) in [
            (vec![], "at least"),
            (vec![Metric::Fid], "must list `fid_proxy`"),
            (
                vec![Metric::FidProxy, Metric::Fid, Metric::Fid],
                "listed twice",
            ),
        ] {
            let e = EvalConfig {
                metrics,
                ..Default::default()
            };
            let err = e.validate().unwrap_err().to_string();
            assert!(err.starts_with("metrics: ") && err.contains(want), "{err}");
        }
        let e = EvalConfig {
            fid_real_images: Some(100),
            ..Default::default()
        };
        assert!(e
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("fid_real_images: "));
    }

    /// FID∞ of a distance that is exactly a + b / n is a.
    #[test]
    fn extrapolation_recovers_the_intercept() {
        let v = extrapolate_inf(100, |n| Ok(3.0 + 50.0 / n as f64))
            .unwrap()
            .unwrap();
        assert!((v - 3.0).abs() < 1e-9, "{v}");
        assert_eq!(extrapolate_inf(3, |_| Ok(1.0)).unwrap(), None);
    }
}
