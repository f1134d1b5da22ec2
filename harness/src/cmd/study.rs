//! `ditkd study SPEC`: the main job end to end — run the sweep, fit the design law, draw the
//! plots and write the report. Each stage is also its own command; this one chains them so a
//! fresh clone needs one line.

use std::path::Path;

use anyhow::{Context, Result};
use distill::kd::Mode;

use crate::runner::sweep_dir;
use crate::spec::SweepSpec;

pub fn run(spec_path: &Path, out: Option<&Path>, jobs: Option<usize>, threads_per_job: Option<usize>, bootstrap: usize) -> Result<()> {
    let spec = SweepSpec::from_file(spec_path)?;
    let dir = sweep_dir(&spec, out);
    println!("== 1/4 sweep {} -> {}", spec_path.display(), dir.display());
    crate::cmd::sweep::run(spec_path, false, None, out, jobs, threads_per_job)?;
    // The law is fitted on the distilled runs when there are any (the question the sweep answers).
    let mode = if spec.distill.modes.contains(&Mode::Kd) { Mode::Kd } else { spec.distill.modes[0] };
    println!("== 2/4 fit ({mode} runs)");
    crate::cmd::fit::run(crate::cmd::fit::Args {
        dir: dir.clone(),
        metric: "fid_proxy".into(),
        mode: mode.to_string(),
        bootstrap,
        hold_out: None,
        out: None,
        seed: 0,
    })
    .with_context(|| format!("fitting the law on {}", dir.display()))?;
    println!("== 3/4 plots");
    crate::cmd::plot::run(&dir)?;
    println!("== 4/4 report");
    crate::cmd::report::run(&dir)?;
    println!("done: {}", dir.join("report.md").display());
    Ok(())
}
