//! Progress bars (indicatif): one style for every long loop.
//!
//! A sweep running several runs at once attaches a `MultiProgress` once; every bar created after
//! that is drawn beneath the sweep's bar instead of fighting it for the terminal line.

use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

static MULTI: OnceLock<MultiProgress> = OnceLock::new();

/// Route every later bar of this process through `multi` (first call wins).
pub fn attach(multi: MultiProgress) -> &'static MultiProgress {
    MULTI.get_or_init(|| multi)
}

/// A bar of `len` steps labelled `prefix`; hidden when `enabled` is false.
pub fn bar(len: u64, prefix: &str, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} {per_sec} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix.to_string());
    match MULTI.get() {
        Some(m) => m.add(pb),
        None => pb,
    }
}
