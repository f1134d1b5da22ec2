//! `ditkd`: find the best compact DiT for a parameter budget by distillation sweeps.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc; // ~1.5x faster candle training here

use clap::Parser;

fn main() {
    let cli = harness::cli::Cli::parse();
    if let Err(e) = harness::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
