//! Embeds `DITKD_SOURCE_HASH`: a SHA-256 (first 12 hex digits) over the sources of the three crates
//! (`dit/src`, `distill/src`, `harness/src`, their manifests and build scripts) and `Cargo.lock`.
//! It is the `code_version` of every row a run writes, so a table records the code that computed
//! it, and committing results (or anything outside the crates' sources) leaves it unchanged.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("..");
    let mut all = vec![root.join("Cargo.lock"), root.join("Cargo.toml")];
    for krate in ["dit", "distill", "harness"] {
        let k = root.join(krate);
        all.push(k.join("Cargo.toml"));
        all.push(k.join("build.rs"));
        files(&k.join("src"), &mut all);
        println!("cargo:rerun-if-changed={}", k.join("src").display());
        println!("cargo:rerun-if-changed={}", k.join("Cargo.toml").display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
    // Paths relative to the root, in a fixed order, so the hash does not depend on the checkout's location.
    let mut rel: Vec<(String, PathBuf)> = all
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.strip_prefix(&root)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .replace('\\', "/"),
                p,
            )
        })
        .collect();
    rel.sort();
    let mut h = Sha256::new();
    for (name, p) in &rel {
        let bytes = std::fs::read(p).unwrap_or_default();
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    let digest = h.finalize();
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    println!("cargo:rustc-env=DITKD_SOURCE_HASH=src-{hex}");
}
