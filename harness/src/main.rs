//! `ditkd`: find the best compact DiT for a parameter budget by distillation sweeps.

use clap::Parser;

fn main() {
    harness::alloc::keep_freed_memory();
    // A closed stdout (`ditkd race pool ... | head`) ends the process quietly, as for any Unix
    // tool, instead of a panic in `print!`.
    #[cfg(unix)]
    // SAFETY: restoring the default action of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = harness::cli::Cli::parse();
    // The process environment (candle's thread count, polars' table format) is set here, once,
    // before any thread starts: changing it later races with threads that read it.
    for (key, value) in cli.environment() {
        std::env::set_var(key, value);
    }
    if let Err(e) = harness::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
