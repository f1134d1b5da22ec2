//! `ditkd plot`: the sweep's plots, PNG and SVG, into `<dir>/plots`.

use std::path::Path;

use anyhow::Result;

use crate::plot::{self, Sweep};

pub fn run(dir: &Path) -> Result<()> {
    let sweep = Sweep::load(dir)?;
    let (files, skipped) = plot::write_all(&sweep, &dir.join("plots"))?;
    for f in &files {
        println!("{}", f.display());
    }
    for s in &skipped {
        eprintln!("skipped {s}");
    }
    Ok(())
}
