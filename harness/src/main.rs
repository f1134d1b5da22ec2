//! `ditkd`: find the best compact DiT for a parameter budget by distillation sweeps.

use clap::Parser;

fn main() {
    harness::alloc::keep_freed_memory();
    let cli = harness::cli::Cli::parse();
    if let Err(e) = harness::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
