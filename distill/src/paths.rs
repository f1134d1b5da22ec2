//! Resolving the repository's relative paths (`data/...`, `results/...`) from any working directory.

use std::path::{Path, PathBuf};

/// The workspace root: `$DITKD_ROOT` if set, else the directory this crate was built in, one up.
pub fn repo_root() -> PathBuf {
    if let Ok(r) = std::env::var("DITKD_ROOT") {
        return PathBuf::from(r);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `p` as given if absolute or present relative to the working directory, else under the repo root.
pub fn resolve(p: &Path) -> PathBuf {
    if p.is_absolute() || p.exists() {
        return p.to_path_buf();
    }
    let alt = repo_root().join(p);
    if alt.exists() {
        alt
    } else {
        p.to_path_buf()
    }
}
