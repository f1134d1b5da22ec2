//! Where relative paths point. Inputs (`data/...`, a shipped teacher or feature net) are found from
//! any working directory; outputs are written where the user points, never silently into the
//! source checkout.

use std::path::{Path, PathBuf};

/// The workspace root: `$DITKD_ROOT` if set, else the directory this crate was built in, one up.
pub fn repo_root() -> PathBuf {
    if let Ok(r) = std::env::var("DITKD_ROOT") {
        return PathBuf::from(r);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// An input path (read, never written): `p` as given if absolute or present relative to the
/// working directory, else under the repository root (so `data/fashion-mnist` and the shipped
/// teacher are found from anywhere).
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

/// An output path (results, caches): `p` as given, relative to the working directory, or to
/// `$DITKD_ROOT` when that is set (Slurm jobs set it). Never falls back to the source checkout.
pub fn output(p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    match std::env::var("DITKD_ROOT") {
        Ok(r) => PathBuf::from(r).join(p),
        Err(_) => p.to_path_buf(),
    }
}

/// A name used as one directory level (a sweep's or a teacher's): letters, digits, `.`, `_`, `-`,
/// not starting with a dot, at most 100 characters. `..`, `/` and hidden names would write
/// somewhere else than under the results directory.
pub fn check_dir_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 100 || name.starts_with('.') || !name.chars().all(ok_char) {
        let shown: String = name.chars().take(40).collect();
        return Err(format!(
            "`{shown}` is not a directory name (1-100 letters, digits, `.`, `_`, `-`; not starting with `.`)"
        ));
    }
    Ok(())
}

/// Paths of a run directory.
pub struct RunPaths {
    pub dir: PathBuf,
}

impl RunPaths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn metrics(&self) -> PathBuf {
        self.dir.join("metrics.jsonl")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_stay_in_the_working_directory() {
        // `results/` exists in the checkout; an output path must not be redirected there.
        let p = Path::new("results/definitely-not-here-xyz");
        if std::env::var("DITKD_ROOT").is_err() {
            assert_eq!(output(p), p.to_path_buf());
        }
        assert_eq!(output(Path::new("/abs/x")), PathBuf::from("/abs/x"));
    }

    #[test]
    fn directory_names_stay_one_level() {
        for bad in ["", "..", ".", ".hidden", "a/b", "a b", "../x"] {
            assert!(check_dir_name(bad).is_err(), "{bad:?}");
        }
        for good in ["quick", "fashion-mnist", "ci_2.v1"] {
            assert!(check_dir_name(good).is_ok(), "{good:?}");
        }
    }
}
