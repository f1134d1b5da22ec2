//! `ditkd distill`: train one student from a teacher (or from scratch) and evaluate it.

use std::path::PathBuf;

use anyhow::Result;
use distill::run::{run_distill, DistillConfig, Shared, StudentInit};
use distill::setup::Setup;

pub struct Args {
    pub teacher: Option<PathBuf>,
    pub student: String,
    pub setup: Setup,
    pub steps: usize,
    pub batch: usize,
    pub seed: u64,
    pub samples: usize,
    pub metrics: Vec<distill::eval::Metric>,
    pub init: String,
    pub out: PathBuf,
    pub config: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let cfg = match &a.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            let mut c = serde_yaml_ng::from_str::<DistillConfig>(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            // A KD teacher that is itself a distilled student makes this the `ta` setup: its
            // training is charged to the student whatever the file says.
            if let (Some(t), true) = (&c.teacher, c.mode.takes_assistant()) {
                c.ta_train_flops = distill::setup::assistant_train_flops(t)
                    .map_err(|e| anyhow::anyhow!("{}: teacher: {e:#}", p.display()))?;
            }
            c
        }
        None => {
            let teacher_cfg = match &a.teacher {
                Some(t) => {
                    distill::checkpoint::read_dit_config(&distill::checkpoint::locate_model(t)?.0)?
                }
                None => dit::DitConfig::default(),
            };
            // The student inherits the teacher's input, classes and patch unless the shape string says otherwise.
            let student = crate::cmd::info::parse_shape(&a.student, &teacher_cfg)?;
            let mut c = DistillConfig::new(a.teacher.clone(), a.setup.mode(), student, a.steps);
            c.batch_size = a.batch;
            c.seed = a.seed;
            c.eval.samples = a.samples;
            c.eval.metrics = a.metrics.clone();
            c.init = match a.init.as_str() {
                "random" => StudentInit::Random,
                "teacher" => StudentInit::Teacher,
                other => anyhow::bail!("--init: `{other}` (random or teacher)"),
            };
            a.setup
                .apply(&mut c)
                .map_err(|e| anyhow::anyhow!("--{e:#}"))?;
            c
        }
    };
    // Every setting is checked before the data, the feature net or the teacher load.
    cfg.validate().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    if cfg.eval.wants_fid() {
        distill::inception::weights::check_available()
            .map_err(|e| anyhow::anyhow!("eval.metrics: `fid`: {e:#}"))?;
    }
    let device = crate::device::get();
    let mut shared = Shared::load(&cfg.data, &cfg.featnet, Some(&cfg.cache_dir), &device)?;
    shared.load_fid(&cfg.data, &cfg.eval, &cfg.cache_dir)?;
    let dir = distill::paths::output(&a.out).join(cfg.run_label());
    eprintln!(
        "student {} ({} params, {:.4} GFLOPs/forward), setup {}, {} steps -> {}",
        cfg.student.shape_label(),
        crate::fmt::grouped(cfg.student.num_params() as i64),
        cfg.student.forward_gflops(),
        Setup::of(&cfg),
        cfg.steps,
        dir.display()
    );
    let s = run_distill(&cfg, &dir, &shared, true)?;
    println!("{}", serde_json::to_string_pretty(&s)?);
    if s.status != distill::run::RunStatus::Ok {
        anyhow::bail!("run failed: {}", s.reason.unwrap_or_default());
    }
    Ok(())
}
