//! `ditkd study SPEC`: the main job end to end — run the sweep, fit the design law, draw the
//! plots and write the report. Each stage is also its own command; this one chains them so a
//! fresh clone needs one line.

use std::path::Path;

use anyhow::{Context, Result};
use distill::setup::Setup;

use crate::runner::sweep_dir;

pub struct Args<'a> {
    pub spec: &'a Path,
    pub out: Option<&'a Path>,
    pub jobs: Option<usize>,
    pub threads_per_job: Option<usize>,
    pub bootstrap: usize,
    pub allow_mixed_code: bool,
}

pub fn run(a: &Args) -> Result<()> {
    let Args {
        spec: spec_path,
        out,
        jobs,
        threads_per_job,
        bootstrap,
        allow_mixed_code,
    } = *a;
    // Everything the sweep needs is validated before it starts (and again by the sweep itself).
    let spec = crate::runner::load(spec_path, jobs, threads_per_job)?.spec;
    let dir = sweep_dir(&spec, out);
    println!("== 1/4 sweep {} -> {}", spec_path.display(), dir.display());
    crate::cmd::sweep::run(&crate::cmd::sweep::Args {
        spec: spec_path,
        dry_run: false,
        shard: None,
        out,
        jobs,
        threads_per_job,
        allow_changed_spec: false,
        allow_mixed_code,
    })?;
    // The law is fitted on the distilled runs when there are any (the question the sweep answers).
    let mode = if spec.distill.modes.contains(&Setup::Kd) {
        Setup::Kd
    } else {
        spec.distill.modes[0]
    };
    println!("== 2/4 fit ({mode} runs)");
    let fitted = crate::cmd::fit::run(crate::cmd::fit::Args {
        dir: dir.clone(),
        metric: "fid_proxy".into(),
        mode,
        bootstrap,
        hold_out: None,
        out: None,
        seed: 0,
        law: None,
        floor: crate::law::FloorChoice::Data,
        min_head_dim: None,
        min_curve_step: None,
    });
    match fitted {
        Ok(()) => {}
        // Students at chance get a report that says so, not a law.
        Err(e) if e.downcast_ref::<crate::law::guard::NotLearned>().is_some() => {
            eprintln!("{e:#}");
            let stale = crate::law::setup_law_path(&dir, mode);
            if stale.exists() {
                std::fs::remove_file(&stale)
                    .with_context(|| format!("removing the stale {}", stale.display()))?;
            }
        }
        Err(e) => return Err(e.context(format!("fitting the law on {}", dir.display()))),
    }
    println!("== 3/4 plots");
    crate::cmd::plot::run(&dir)?;
    println!("== 4/4 report");
    crate::cmd::report::run(&dir)?;
    println!("done: {}", dir.join("report.md").display());
    Ok(())
}
