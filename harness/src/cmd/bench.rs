//! `ditkd bench`: time the DiT training step (forward + backward + AdamW), sampling, and a GEMM.
//!
//! Cases: A (the 1.3M teacher, batch 128) and B (a 9.7M CIFAR-sized patch-2 model, batch 64), the
//! two configs of the first speed benchmark; and the study's students (patch 4, batch 64, Fashion-MNIST 28x28):
//! d1 w60, d3 w80, d8 w24 (the 100k and 400k budgets of `sweeps/fashion-mnist.yaml`) and d4 w100
//! (786k, the top of the 30k-800k range). Everything runs inside a rayon pool of `--threads`
//! threads, as a sweep worker runs its student (`runner::execute`). Each result is also printed
//! as one JSON line (for `bench/run_all.sh`).

use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use distill::eval::median;
use distill::optim::{AdamW, OptimConfig};
use dit::{DiT, DitConfig};

/// A benchmark configuration of the training step.
pub struct BenchCase {
    pub name: &'static str,
    pub model: DitConfig,
    pub batch: usize,
}

/// A student of the study: Fashion-MNIST 28x28, patch 4, 2 heads, batch 64.
fn student(name: &'static str, depth: usize, width: usize) -> BenchCase {
    BenchCase {
        name,
        model: DitConfig {
            hidden_size: width,
            depth,
            num_heads: 2,
            ..Default::default()
        },
        batch: 64,
    }
}

/// Every benchmark case: A, B and the study's student shapes.
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
        student("d1w60", 1, 60),
        student("d3w80", 3, 80),
        student("d8w24", 8, 24),
        student("d4w100", 4, 100),
    ]
}

/// Images the sampler case generates per timed run (the study's `eval.samples`).
pub const SAMPLE_IMAGES: usize = 500;

/// The sampler of the study's learning-curve evaluations: 25-step DDIM with guidance 2.
pub fn sampler_config() -> dit::SamplerConfig {
    dit::SamplerConfig {
        steps: 25,
        cfg_scale: 2.0,
        ..Default::default()
    }
}

/// Median and range of a set of timings (ms).
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    fn of(v: &[f64]) -> Self {
        Self {
            median: median(v.to_vec()),
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

pub struct StepTiming {
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optim_ms: f64,
    pub step: Stats,
    /// CPU time of the process per step (all threads): on a loaded machine, a figure that the
    /// other processes' share of the cores does not inflate.
    pub cpu: Stats,
}

/// CPU time this process has used so far (ms, all threads).
pub fn process_cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the struct it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

/// A model of `cfg` with every weight drawn from N(0, 0.02), so no adaLN-Zero path is zero.
fn random_model(cfg: &DitConfig) -> Result<DiT> {
    let dev = crate::device::get();
    let model = DiT::new(cfg, 0, DType::F32, &dev)?;
    let mut rng = dit::rng::seeded(1);
    for (_, v) in sorted_vars(&model) {
        v.set(&(dit::rng::randn(&mut rng, v.dims(), &dev)? * 0.02)?)?;
    }
    Ok(model)
}

fn sorted_vars(model: &DiT) -> Vec<(String, candle_core::Var)> {
    dit::vars::sorted(&model.varmap)
}

/// Median timings of `iters` training steps after `warmup` steps.
/// With `reference_optim`, AdamW takes its tensor-op path (`AdamW::step_reference`), the
/// step before the fused in-place update.
pub fn time_step(
    case: &BenchCase,
    warmup: usize,
    iters: usize,
    reference_optim: bool,
) -> Result<StepTiming> {
    let dev = crate::device::get();
    let m = &case.model;
    let model = random_model(m)?;
    let mut rng = dit::rng::seeded(1);
    let mut opt = AdamW::new(sorted_vars(&model), OptimConfig::default())?;
    let (mut f, mut b, mut o, mut s, mut cpu) = (vec![], vec![], vec![], vec![], vec![]);
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
        let c0 = process_cpu_ms();
        let t0 = Instant::now();
        let mut tape = dit::Tape::new();
        let loss = (model.eps(&model.forward_recorded(&x, &t, &y, &mut tape)?.0)? - eps)?
            .sqr()?
            .mean_all()?;
        let _ = loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let grads = model.backward(&loss, tape)?;
        let t2 = Instant::now();
        if reference_optim {
            opt.step_reference(&grads, 1e-4)?;
        } else {
            opt.step(&grads, 1e-4)?;
        }
        let t3 = Instant::now();
        let c3 = process_cpu_ms();
        drop(grads);
        if i >= warmup {
            f.push((t1 - t0).as_secs_f64() * 1e3);
            b.push((t2 - t1).as_secs_f64() * 1e3);
            o.push((t3 - t2).as_secs_f64() * 1e3);
            s.push((t3 - t0).as_secs_f64() * 1e3);
            cpu.push(c3 - c0);
        }
    }
    let _ = Tensor::zeros(1, DType::F32, &dev)?;
    Ok(StepTiming {
        forward_ms: median(f),
        backward_ms: median(b),
        optim_ms: median(o),
        step: Stats::of(&s),
        cpu: Stats::of(&cpu),
    })
}

/// Wall times (ms) of generating `SAMPLE_IMAGES` images with the study's sampler, `iters` times
/// after one untimed warm-up of a 2-step sampler over the same batch. With `reference`, the
/// sampler's forwards take `DiT::forward` (autograd graph, one activation per op) instead of
/// `DiT::forward_inference`.
pub fn time_sampling(case: &BenchCase, iters: usize, reference: bool) -> Result<(Stats, Stats)> {
    dit::inference::set_enabled(!reference);
    let model = random_model(&case.model)?;
    let (z, y) = distill::eval::eval_inputs(&model, SAMPLE_IMAGES, 7)?;
    let sc = sampler_config();
    let warm = dit::SamplerConfig {
        steps: 2,
        ..sc.clone()
    };
    distill::eval::generate(&model, distill::kd::Mode::Kd, &z, &y, &warm, 0)?;
    let (mut ms, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..iters.max(1) {
        let c = process_cpu_ms();
        let t = Instant::now();
        let out = distill::eval::generate(&model, distill::kd::Mode::Kd, &z, &y, &sc, 0)?;
        let _ = out.sum_all()?.to_scalar::<f32>()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        cpu.push(process_cpu_ms() - c);
    }
    Ok((Stats::of(&ms), Stats::of(&cpu)))
}

/// Achieved f32 GEMM rate (GFLOP/s) of an `n`^3 candle matmul at the current thread count,
/// the best of `reps` after one warm-up, by wall time and by the process's CPU time: the peak a
/// training step is judged against (on a loaded machine, the CPU-time rate is the one to trust).
pub fn matmul_peak(n: usize, reps: usize) -> Result<(f64, f64)> {
    let dev = crate::device::get();
    let mut rng = dit::rng::seeded(2);
    let a = dit::rng::randn(&mut rng, &[n, n], &dev)?;
    let b = dit::rng::randn(&mut rng, &[n, n], &dev)?;
    let _ = a.matmul(&b)?;
    let (mut best, mut best_cpu) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..reps.max(1) {
        let c = process_cpu_ms();
        let t = Instant::now();
        let _ = a.matmul(&b)?;
        best = best.min(t.elapsed().as_secs_f64());
        best_cpu = best_cpu.min((process_cpu_ms() - c) / 1e3);
    }
    let flops = 2.0 * (n as f64).powi(3);
    Ok((flops / best / 1e9, flops / best_cpu / 1e9))
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

/// What `ditkd bench` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    // (Plain comments: doc comments here would switch `ditkd bench --help` to clap's long form.)
    // The GEMM peak (512^3, current threads).
    Gemm,
    // The training step of each case.
    Step,
    // 25-step DDIM with guidance 2 over 500 images, for each student case.
    Sample,
}

pub struct BenchArgs {
    pub only: Vec<String>,
    pub kinds: Vec<Kind>,
    pub warmup: usize,
    pub iters: usize,
    pub sample_iters: usize,
    /// AdamW's tensor-op path instead of the fused one (to measure the lever).
    pub reference_optim: bool,
    /// The sampler through `DiT::forward` instead of `forward_inference` (to measure the lever).
    pub reference_sampler: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let all = cases();
    for o in &args.only {
        if !all.iter().any(|c| c.name == o) {
            let names: Vec<&str> = all.iter().map(|c| c.name).collect();
            bail!("--only `{o}`: expected one of {}", names.join(", "));
        }
    }
    let threads = candle_core::utils::get_num_threads();
    // The sweep's workers run each student inside a pool of `threads_per_job` threads.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    pool.install(|| run_in_pool(&args, &all, threads))
}

fn run_in_pool(args: &BenchArgs, all: &[BenchCase], threads: usize) -> Result<()> {
    let kinds = if args.kinds.is_empty() {
        vec![Kind::Gemm, Kind::Step, Kind::Sample]
    } else {
        args.kinds.clone()
    };
    println!("threads: {threads}");
    let selected: Vec<&BenchCase> = all
        .iter()
        .filter(|c| args.only.is_empty() || args.only.iter().any(|o| o == c.name))
        .collect();
    let peak = if kinds.contains(&Kind::Gemm) {
        let (p, p_cpu) = matmul_peak(512, 20)?;
        println!(
            "f32 matmul peak (512^3, {threads} threads): {p:.1} GFLOP/s ({p_cpu:.1} GFLOP/s of CPU time)"
        );
        println!(
            "{}",
            serde_json::json!({"framework": "candle", "kind": "gemm", "n": 512,
                "threads": threads, "gflops": round2(p), "gflops_cpu": round2(p_cpu)})
        );
        Some(p_cpu)
    } else {
        None
    };
    if kinds.contains(&Kind::Step) {
        for case in &selected {
            let m = &case.model;
            let t = time_step(case, args.warmup, args.iters, args.reference_optim)?;
            let flops = 3.0 * m.forward_flops() as f64 * case.batch as f64; // fwd + 2x for bwd
            let rate = flops / t.step.median / 1e6;
            let rate_cpu = flops / t.cpu.median / 1e6;
            let pct = peak.map(|p| {
                format!(
                    " ({rate_cpu:.1} of CPU time = {:.0}% of the matmul peak's)",
                    100.0 * rate_cpu / p
                )
            });
            println!(
                "config {} ({} params, batch {}): step {:.1} ms (range {:.1}-{:.1}, CPU {:.1} ms; fwd {:.1}, bwd {:.1}, adamw {:.1}), {:.1} GFLOP/s{}, peak RSS {:.0} MB",
                case.name,
                crate::fmt::grouped(m.num_params() as i64),
                case.batch,
                t.step.median,
                t.step.min,
                t.step.max,
                t.cpu.median,
                t.forward_ms,
                t.backward_ms,
                t.optim_ms,
                rate,
                pct.unwrap_or_default(),
                peak_rss_mb()
            );
            println!(
                "{}",
                serde_json::json!({"framework": "candle", "kind": "step", "config": case.name,
                    "params": m.num_params(), "batch": case.batch, "threads": threads,
                    "iters": args.iters, "median_ms": round2(t.step.median),
                    "min_ms": round2(t.step.min), "max_ms": round2(t.step.max),
                    "cpu_ms": round2(t.cpu.median),
                    "fwd_ms": round2(t.forward_ms), "bwd_ms": round2(t.backward_ms),
                    "optim_ms": round2(t.optim_ms), "gflops": round2(rate),
                    "gflops_cpu": round2(rate_cpu),
                    "peak_rss_mb": round2(peak_rss_mb())})
            );
        }
    }
    if kinds.contains(&Kind::Sample) {
        for case in selected.iter().filter(|c| c.model.patch_size == 4) {
            let (s, cpu) = time_sampling(case, args.sample_iters, args.reference_sampler)?;
            let ips = SAMPLE_IMAGES as f64 / (s.median / 1e3);
            println!(
                "sample {} ({} params): {:.1} images/s ({} images, DDIM 25 steps, cfg 2: {:.0} ms, range {:.0}-{:.0}, CPU {:.0} ms)",
                case.name,
                crate::fmt::grouped(case.model.num_params() as i64),
                ips,
                SAMPLE_IMAGES,
                s.median,
                s.min,
                s.max,
                cpu.median
            );
            println!(
                "{}",
                serde_json::json!({"framework": "candle", "kind": "sample", "config": case.name,
                    "params": case.model.num_params(), "images": SAMPLE_IMAGES, "threads": threads,
                    "median_ms": round2(s.median), "cpu_ms": round2(cpu.median),
                    "images_per_s": round2(ips)})
            );
        }
    }
    Ok(())
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn study_shapes_have_the_counts_of_the_study() {
        let by = |n: &str| cases().into_iter().find(|c| c.name == n).unwrap();
        assert_eq!(by("A").model.num_params(), 1_275_408);
        assert_eq!(by("d1w60").model.num_params(), 94_756);
        assert_eq!(by("d3w80").model.num_params(), 392_736);
        assert_eq!(by("d8w24").model.num_params(), 94_864);
        assert_eq!(by("d4w100").model.num_params(), 786_416);
        for c in cases() {
            c.model.validate().unwrap();
        }
    }
}
