//! `ditkd`: find the best compact DiT for a parameter budget by distillation sweeps.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc; // ~1.5x faster candle training here

use clap::Parser;

fn main() {
    // Keep freed pages instead of returning them to the OS: re-faulting (and zeroing) huge pages
    // cost ~20% of a training step here. 15 = mi_option_purge_delay; -1 = never purge.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    let cli = harness::cli::Cli::parse();
    if let Err(e) = harness::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
