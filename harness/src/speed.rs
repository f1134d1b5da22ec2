//! The quiet speed pass: every distinct (shape, mode, sampler) of a sweep — and its teacher —
//! timed once more after the sweep, with nothing else running, at batch 1 (latency) and a larger
//! batch (throughput); min and median of several repeats. Written to `latency.parquet` / `.csv`;
//! the latency model and `ditkd best --max-latency-ms` use it instead of the in-training figures
//! (measured while other runs trained, so they mix in the machine's load).

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::DType;
use distill::kd::Mode;
use distill::run::DistillConfig;
use distill::setup::Setup;
use dit::{DiT, DitConfig, SamplerConfig};
use serde_json::Value;

/// How the pass times each model.
#[derive(Debug, Clone)]
pub struct Options {
    pub repeats: usize,
    pub batches: Vec<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            repeats: 5,
            batches: vec![1, 64],
        }
    }
}

/// Whose model a row times: the `mode` column holds the student's setup, or `teacher`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Student(Setup),
    Teacher,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Student(s) => s.fmt(f),
            Role::Teacher => f.write_str("teacher"),
        }
    }
}

/// One timed model.
struct Item {
    label: String,
    mode: Role,
    cfg: DitConfig,
    sampler: SamplerConfig,
    gen_mode: Mode,
    weights: Option<std::path::PathBuf>,
}

/// Time every distinct model of the sweep in `dir`; returns the rows written.
pub fn measure(dir: &Path, opts: &Options, progress: bool) -> Result<usize> {
    anyhow::ensure!(opts.repeats >= 1, "--repeats: at least 1");
    anyhow::ensure!(
        !opts.batches.is_empty() && opts.batches.iter().all(|&b| (1..=4096).contains(&b)),
        "--batches: sizes in 1..=4096"
    );
    let mut items: Vec<Item> = Vec::new();
    let runs = dir.join("runs");
    let mut entries: Vec<_> = std::fs::read_dir(&runs)
        .with_context(|| format!("{}: not a sweep results directory", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    let mut teacher = None;
    for run in entries {
        let Ok(text) = std::fs::read_to_string(run.join("config.yaml")) else {
            continue;
        };
        let cfg: DistillConfig = serde_yaml_ng::from_str(&text).with_context(|| {
            format!(
                "{}: unreadable run config",
                run.join("config.yaml").display()
            )
        })?;
        let mode = Role::Student(Setup::of(&cfg));
        let same =
            |i: &Item| i.cfg == cfg.student && i.mode == mode && i.sampler == cfg.eval.sampler;
        if teacher.is_none() {
            teacher = cfg.teacher.clone().map(|t| (t, cfg.eval.sampler.clone()));
        }
        if !items.iter().any(same) {
            let w = run.join("ema.safetensors");
            items.push(Item {
                label: cfg.student.shape_label(),
                mode,
                cfg: cfg.student.clone(),
                sampler: cfg.eval.sampler.clone(),
                gen_mode: cfg.mode,
                weights: w.exists().then_some(w),
            });
        }
    }
    if let Some((t, sampler)) = teacher {
        let (c, w) = distill::checkpoint::locate_model(&t)?;
        let cfg = distill::checkpoint::read_dit_config(&c)?;
        items.push(Item {
            label: format!("teacher {}", cfg.shape_label()),
            mode: Role::Teacher,
            cfg,
            sampler,
            gen_mode: Mode::Kd,
            weights: Some(w),
        });
    }
    let device = crate::device::get();
    let pb = distill::progress::bar(items.len() as u64, "latency (quiet pass)", progress);
    let mut rows = Vec::new();
    for it in &items {
        pb.set_message(it.label.clone());
        // Timing does not depend on the weights' values; the trained ones are used when present.
        let model = match &it.weights {
            Some(w) => DiT::load(&it.cfg, w, DType::F32, &device)?,
            None => DiT::new(&it.cfg, 0, DType::F32, &device)?,
        };
        let t = distill::eval::time_generation(
            &model,
            it.gen_mode,
            &it.sampler,
            &opts.batches,
            opts.repeats,
        )?;
        let fpi = distill::eval::forwards_per_image(it.gen_mode, &it.sampler);
        let mut row = serde_json::Map::new();
        row.insert("mode".into(), Value::String(it.mode.to_string()));
        for (k, v) in [
            ("depth", it.cfg.depth),
            ("width", it.cfg.hidden_size),
            ("heads", it.cfg.num_heads),
            ("patch", it.cfg.patch_size),
            ("params", it.cfg.num_params()),
            ("forwards_per_image", fpi),
            ("sampler_steps", it.sampler.steps),
            ("repeats", opts.repeats),
        ] {
            row.insert(k.into(), Value::from(v));
        }
        row.insert(
            "gflops_per_image".into(),
            Value::from(fpi as f64 * it.cfg.forward_gflops()),
        );
        row.insert(
            "threads".into(),
            Value::from(candle_core::utils::get_num_threads()),
        );
        for x in &t {
            // Per image: latency at batch 1, throughput at the larger batches.
            row.insert(format!("b{}_min_ms", x.batch), Value::from(x.min_ms));
            row.insert(format!("b{}_median_ms", x.batch), Value::from(x.median_ms));
            row.insert(
                format!("b{}_images_per_s", x.batch),
                Value::from(x.batch as f64 / (x.median_ms / 1e3)),
            );
        }
        if let Some(b1) = t.iter().find(|x| x.batch == 1) {
            row.insert("latency_ms".into(), Value::from(b1.median_ms));
            row.insert("latency_min_ms".into(), Value::from(b1.min_ms));
        }
        rows.push(row);
        pb.inc(1);
    }
    pb.finish_and_clear();
    crate::table::write_rows(
        &rows,
        &dir.join("latency.parquet"),
        &dir.join("latency.csv"),
    )?;
    Ok(rows.len())
}
