//! Progress bars (indicatif): one style for every long loop.

use indicatif::{ProgressBar, ProgressStyle};

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
    pb
}
