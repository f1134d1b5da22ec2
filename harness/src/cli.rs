//! Command-line definitions (clap) and dispatch.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "ditkd", version, about = "What is the best compact Diffusion Transformer for my parameter budget?")]
pub struct Cli {
    /// Threads for candle's CPU kernels (0 = all cores).
    #[arg(long, global = true, default_value_t = 0)]
    pub threads: usize,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print a DiT's parameter count, GFLOPs per forward, tokens and head dim.
    Info {
        /// A preset (`DiT-XL/2`), a `dit.json`/YAML config, a run directory, or `depth=4,width=96,heads=4[,patch=4]`.
        model: String,
    },
    /// Train (or resume) a teacher DiT from a YAML config.
    Teacher {
        /// Training config (see sweeps/teachers/fashion-mnist.yaml).
        #[arg(long)]
        config: PathBuf,
        /// Parent directory of the run (the run is `<out>/<name>`).
        #[arg(long, default_value = "results/teachers")]
        out: PathBuf,
        /// Stop after this many total steps (a sitting of a longer run); resume later with the same command.
        #[arg(long)]
        stop_at: Option<usize>,
        /// Images in the sample grid written at the end.
        #[arg(long, default_value_t = 60)]
        grid: usize,
    },
    /// Time the training step (forward + backward + AdamW) on benchmark configs A and B.
    Bench {
        /// Only this config (A or B).
        #[arg(long)]
        only: Option<String>,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long, default_value_t = 5)]
        iters: usize,
    },
    /// Train the FID-proxy feature network (a small CNN classifier) and ship it.
    Featnet {
        #[arg(long, default_value = "results/featnet")]
        out: PathBuf,
        #[arg(long, default_value_t = 6)]
        epochs: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Distill one student from a teacher (or train it from scratch) and evaluate it.
    Distill {
        /// Teacher run directory or weights file.
        #[arg(long)]
        teacher: Option<PathBuf>,
        /// Student shape, e.g. `depth=4,width=96,heads=4[,patch=4]`.
        #[arg(long, default_value = "depth=4,width=64,heads=4")]
        student: String,
        /// kd, onestep or scratch.
        #[arg(long, default_value = "kd")]
        mode: String,
        #[arg(long, default_value_t = 1000)]
        steps: usize,
        #[arg(long, default_value_t = 128)]
        batch: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Generated images for the metrics.
        #[arg(long, default_value_t = 1000)]
        samples: usize,
        /// random, or teacher (copy teacher blocks; same width only).
        #[arg(long, default_value = "random")]
        init: String,
        /// Parent of the run directory.
        #[arg(long, default_value = "results/distill")]
        out: PathBuf,
        /// A full YAML DistillConfig instead of the flags.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run (or plan with --dry-run) a sweep: budgets -> shapes -> distilled runs -> table.
    Sweep {
        spec: PathBuf,
        /// Print the planned runs without training.
        #[arg(long)]
        dry_run: bool,
        /// Run only shard K of N (`K/N`), for Slurm job arrays.
        #[arg(long)]
        shard: Option<String>,
        /// Output directory (default results/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override the spec's concurrent runs (`parallel.jobs`).
        #[arg(long)]
        jobs: Option<usize>,
        /// Override the spec's candle threads per run (`parallel.threads_per_job`).
        #[arg(long)]
        threads_per_job: Option<usize>,
    },
    /// The main job: run a sweep, fit the design law, draw the plots and write the report.
    Study {
        spec: PathBuf,
        /// Output directory (default results/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        jobs: Option<usize>,
        #[arg(long)]
        threads_per_job: Option<usize>,
        /// Bootstrap resamples for the law's intervals.
        #[arg(long, default_value_t = 200)]
        bootstrap: usize,
    },
    /// Print a sweep's table, aggregated over seeds (mean, std), or raw with --raw.
    Table {
        dir: PathBuf,
        #[arg(long)]
        raw: bool,
    },
    /// Merge shard outputs into one results directory and table.
    Merge {
        #[arg(long)]
        out: PathBuf,
        inputs: Vec<PathBuf>,
    },
    /// Print (or write with -o) a Slurm submission script: a job array of shards plus a merge job.
    Slurm {
        spec: PathBuf,
        /// Array tasks (default: one per run).
        #[arg(long)]
        shards: Option<usize>,
        /// Sweep output directory (default results/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write the script here instead of stdout.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// Time limit per array task.
        #[arg(long, default_value = "04:00:00")]
        time: String,
        #[arg(long)]
        partition: Option<String>,
        /// The ditkd binary the jobs run (default: this one).
        #[arg(long)]
        binary: Option<PathBuf>,
    },
    /// Fit candidate design laws (log FID-proxy vs shape) to a sweep's table; writes law.json.
    Fit {
        /// Sweep results directory (holds runs.parquet).
        dir: PathBuf,
        /// The metric column to model.
        #[arg(long, default_value = "fid_proxy")]
        metric: String,
        /// Distillation mode whose runs are fitted (kd, onestep, scratch).
        #[arg(long, default_value = "kd")]
        mode: String,
        /// Bootstrap resamples for the coefficient intervals.
        #[arg(long, default_value_t = 200)]
        bootstrap: usize,
        /// Leave this budget out of the fit (held-out validation), e.g. `320k`.
        #[arg(long)]
        hold_out: Option<String>,
        /// Write the law here instead of <dir>/law.json (with --hold-out B: <dir>/law-holdout-B.json,
        /// which `ditkd report` shows as the held-out check).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// The best DiT shape for a parameter budget, predicted by a fitted law.
    Best {
        /// Parameter budget, e.g. `750k`, `1.2M`, `250000`.
        #[arg(long)]
        budget: String,
        /// Sweep results directory holding law.json and runs.parquet.
        #[arg(long, default_value = "results/fashion-mnist")]
        results: PathBuf,
        /// Only shapes whose predicted batch-1 latency (ms per image) is at most this.
        #[arg(long)]
        max_latency_ms: Option<f64>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Draw the sweep's plots (PNG and SVG) into <dir>/plots.
    Plot {
        dir: PathBuf,
    },
    /// Write <dir>/report.md: best shape per budget, the law, the design formula, KD vs scratch, plots.
    Report {
        dir: PathBuf,
    },
    /// Sample an image grid from a trained model.
    Sample {
        /// Run directory, checkpoint directory or weights file.
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long, default_value_t = 64)]
        n: usize,
        /// Respaced sampler steps.
        #[arg(long, default_value_t = 50)]
        steps: usize,
        /// Classifier-free guidance scale.
        #[arg(long, default_value_t = 1.0)]
        cfg: f64,
        /// ddim or ddpm.
        #[arg(long, default_value = "ddim")]
        sampler: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value = "grid.png")]
        out: PathBuf,
    },
}

pub fn run(cli: Cli) -> Result<()> {
    if cli.threads > 0 {
        // candle's CPU kernels read RAYON_NUM_THREADS; set it before any tensor work.
        std::env::set_var("RAYON_NUM_THREADS", cli.threads.to_string());
    }
    match cli.command {
        Command::Info { model } => crate::cmd::info::run(&model),
        Command::Teacher { config, out, stop_at, grid } => crate::cmd::teacher::run(&config, &out, stop_at, grid),
        Command::Bench { only, warmup, iters } => crate::cmd::bench::run(only, warmup, iters),
        Command::Featnet { out, epochs, seed } => crate::cmd::featnet::run(&out, epochs, seed),
        Command::Distill { teacher, student, mode, steps, batch, seed, samples, init, out, config } => {
            crate::cmd::distill::run(crate::cmd::distill::Args { teacher, student, mode, steps, batch, seed, samples, init, out, config })
        }
        Command::Sweep { spec, dry_run, shard, out, jobs, threads_per_job } => {
            crate::cmd::sweep::run(&spec, dry_run, shard.as_deref(), out.as_deref(), jobs, threads_per_job)
        }
        Command::Study { spec, out, jobs, threads_per_job, bootstrap } => {
            crate::cmd::study::run(&spec, out.as_deref(), jobs, threads_per_job, bootstrap)
        }
        Command::Table { dir, raw } => crate::cmd::sweep::table(&dir, raw),
        Command::Merge { out, inputs } => crate::cmd::sweep::merge(&out, &inputs),
        Command::Slurm { spec, shards, out, output, time, partition, binary } => {
            crate::cmd::slurm::run(crate::cmd::slurm::Args { spec, shards, out, output, time, partition, binary })
        }
        Command::Fit { dir, metric, mode, bootstrap, hold_out, out, seed } => crate::cmd::fit::run(crate::cmd::fit::Args {
            dir,
            metric,
            mode,
            bootstrap,
            hold_out,
            out,
            seed,
        }),
        Command::Best { budget, results, max_latency_ms, json } => crate::cmd::best::run(&budget, &results, max_latency_ms, json),
        Command::Plot { dir } => crate::cmd::plot::run(&dir),
        Command::Report { dir } => crate::cmd::report::run(&dir),
        Command::Sample { checkpoint, n, steps, cfg, sampler, seed, out } => {
            crate::cmd::sample::run(&checkpoint, n, steps, cfg, &sampler, seed, &out)
        }
    }
}
