//! `ditkd bench`: time the DiT training step (forward + backward + AdamW) and sampling.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Tensor};
use distill::optim::{AdamW, OptimConfig};
use dit::{DiT, DitConfig};

/// A benchmark configuration of the training step.
pub struct BenchCase {
    pub name: &'static str,
    pub model: DitConfig,
    pub batch: usize,
}

/// Benchmark configs A and B: the teacher shape, and a CIFAR-sized patch-2 model.
pub fn cases() -> Vec<BenchCase> {
    vec![
        BenchCase {
            name: "A",
            model: DitConfig::default(),
            batch: 128,
        },
        BenchCase {
            name: "B",
            model: DitConfig {
                input_size: 32,
                patch_size: 2,
                in_channels: 3,
                hidden_size: 256,
                depth: 8,
                num_heads: 4,
                ..Default::default()
            },
            batch: 64,
        },
    ]
}

use distill::eval::median;

pub struct StepTiming {
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optim_ms: f64,
    pub step_ms: f64,
}

/// Median timings of `iters` training steps after `warmup` steps.
pub fn time_step(case: &BenchCase, warmup: usize, iters: usize) -> Result<StepTiming> {
    let dev = crate::device::get();
    let m = &case.model;
    let model = DiT::new(m, 0, DType::F32, &dev)?;
    // Random weights so no path is trivially zero (adaLN-Zero init would skip work in no kernel, but be safe).
    let mut rng = dit::rng::seeded(1);
    let vars: Vec<(String, candle_core::Var)> = dit::vars::sorted(&model.varmap);
    for (_, v) in &vars {
        v.set(&(dit::rng::randn(&mut rng, v.dims(), &dev)? * 0.02)?)?;
    }
    let mut opt = AdamW::new(vars, OptimConfig::default())?;
    let (mut f, mut b, mut o, mut s) = (vec![], vec![], vec![], vec![]);
    for i in 0..warmup + iters {
        let x = dit::rng::randn(
            &mut rng,
            &[case.batch, m.in_channels, m.input_size, m.input_size],
            &dev,
        )?;
        let eps = dit::rng::randn(&mut rng, x.dims(), &dev)?;
        let t: Vec<f32> = dit::rng::uniform_ints(&mut rng, case.batch, 1000)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let y = dit::rng::uniform_ints(&mut rng, case.batch, m.num_classes);
        let t0 = Instant::now();
        let mut tape = dit::Tape::new();
        let loss = (model.eps(&model.forward_recorded(&x, &t, &y, &mut tape)?.0)? - eps)?
            .sqr()?
            .mean_all()?;
        let _ = loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let grads = model.backward(&loss, tape)?;
        let t2 = Instant::now();
        opt.step(&grads, 1e-4)?;
        let t3 = Instant::now();
        drop(grads);
        if i >= warmup {
            f.push((t1 - t0).as_secs_f64() * 1e3);
            b.push((t2 - t1).as_secs_f64() * 1e3);
            o.push((t3 - t2).as_secs_f64() * 1e3);
            s.push((t3 - t0).as_secs_f64() * 1e3);
        }
    }
    let _ = Tensor::zeros(1, DType::F32, &dev)?;
    Ok(StepTiming {
        forward_ms: median(f),
        backward_ms: median(b),
        optim_ms: median(o),
        step_ms: median(s),
    })
}

/// Achieved f32 GEMM rate (GFLOP/s) of a 1024^3 candle matmul: the peak a training step is judged against.
pub fn matmul_peak() -> Result<f64> {
    let dev = crate::device::get();
    let mut rng = dit::rng::seeded(2);
    let a = dit::rng::randn(&mut rng, &[1024, 1024], &dev)?;
    let b = dit::rng::randn(&mut rng, &[1024, 1024], &dev)?;
    let mut times = Vec::new();
    for _ in 0..6 {
        let t = Instant::now();
        let _ = a.matmul(&b)?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(2.0 * 1024f64.powi(3) / median(times[1..].to_vec()) / 1e9)
}

/// Peak resident memory of this process so far (MB).
pub fn peak_rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Images per second of 25-step DDIM sampling with guidance at batch 64, for a 4x64 student.
pub fn sampling_throughput() -> Result<f64> {
    let dev = crate::device::get();
    let cfg = DitConfig {
        hidden_size: 64,
        depth: 4,
        num_heads: 4,
        ..Default::default()
    };
    let model = DiT::new(&cfg, 0, DType::F32, &dev)?;
    let sc = dit::SamplerConfig {
        steps: 25,
        cfg_scale: 2.0,
        ..Default::default()
    };
    let (_, ips) = distill::eval::measure_speed(&model, distill::kd::Mode::Kd, &sc)?;
    Ok(ips)
}

pub fn run(only: Option<String>, warmup: usize, iters: usize) -> Result<()> {
    println!("threads: {}", candle_core::utils::get_num_threads());
    let peak = matmul_peak()?;
    println!("f32 matmul peak (1024^3): {peak:.1} GFLOP/s");
    for case in cases() {
        if only.as_deref().is_some_and(|o| o != case.name) {
            continue;
        }
        let m = &case.model;
        let t = time_step(&case, warmup, iters)?;
        let flops = 3.0 * m.forward_flops() as f64 * case.batch as f64; // fwd + 2x for bwd
        let rate = flops / t.step_ms / 1e6;
        println!(
            "config {} ({} params, batch {}): step {:.0} ms (fwd {:.0}, bwd {:.0}, adamw {:.0}), {:.1} GFLOP/s = {:.0}% of matmul peak, peak RSS {:.0} MB",
            case.name,
            crate::fmt::grouped(m.num_params() as i64),
            case.batch,
            t.step_ms,
            t.forward_ms,
            t.backward_ms,
            t.optim_ms,
            rate,
            100.0 * rate / peak,
            peak_rss_mb()
        );
    }
    if only.is_none() {
        println!(
            "sampling: {:.1} images/s (4x64 student, DDIM 25 steps, cfg 2, batch 64)",
            sampling_throughput()?
        );
    }
    Ok(())
}
