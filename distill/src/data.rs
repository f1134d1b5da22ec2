//! Image datasets: IDX files (MNIST, Fashion-MNIST, KMNIST; gzipped or raw) and the CIFAR-10
//! binary format, with checksum verification. Pixels are scaled to [-1, 1].

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// A labelled image set held on the host, `[-1, 1]` floats in NCHW order.
#[derive(Clone)]
pub struct Dataset {
    pub images: Vec<f32>,
    pub labels: Vec<u8>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub num_classes: usize,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Dataset({} x {}x{}x{}, {} classes)",
            self.len(),
            self.channels,
            self.height,
            self.width,
            self.num_classes
        )
    }
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// Gather images and labels at `idx` into flat buffers.
    pub fn gather(&self, idx: &[usize]) -> (Vec<f32>, Vec<u32>) {
        let mut x = Vec::with_capacity(idx.len() * self.image_len());
        let mut y = Vec::with_capacity(idx.len());
        for &i in idx {
            x.extend_from_slice(self.image(i));
            y.push(self.labels[i] as u32);
        }
        (x, y)
    }

    /// The first `n` items (or all).
    pub fn take(&self, n: usize) -> Self {
        let n = n.min(self.len());
        Self {
            images: self.images[..n * self.image_len()].to_vec(),
            labels: self.labels[..n].to_vec(),
            ..self.clone()
        }
    }
}

/// Which split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// Read a whole file, transparently gunzipping it (gzip magic 1f 8b).
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path)
        .with_context(|| format!("{}: cannot read data file", path.display()))?;
    if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("{}: corrupt gzip stream", path.display()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// IDX3 (images, magic 0x00000803): returns (count, rows, cols, pixels).
pub fn parse_idx_images(bytes: &[u8], path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    if bytes.len() < 16 {
        bail!(
            "{}: truncated IDX header ({} bytes)",
            path.display(),
            bytes.len()
        );
    }
    let magic = be_u32(bytes, 0);
    if magic != 0x0803 {
        bail!(
            "{}: bad IDX magic number {magic:#010x} (images need 0x00000803)",
            path.display()
        );
    }
    let (n, r, c) = (
        be_u32(bytes, 4) as usize,
        be_u32(bytes, 8) as usize,
        be_u32(bytes, 12) as usize,
    );
    let need = 16 + n * r * c;
    if bytes.len() < need {
        bail!(
            "{}: truncated IDX image file: {} bytes, header promises {need}",
            path.display(),
            bytes.len()
        );
    }
    Ok((n, r, c, bytes[16..need].to_vec()))
}

/// IDX1 (labels, magic 0x00000801).
pub fn parse_idx_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    if bytes.len() < 8 {
        bail!(
            "{}: truncated IDX header ({} bytes)",
            path.display(),
            bytes.len()
        );
    }
    let magic = be_u32(bytes, 0);
    if magic != 0x0801 {
        bail!(
            "{}: bad IDX magic number {magic:#010x} (labels need 0x00000801)",
            path.display()
        );
    }
    let n = be_u32(bytes, 4) as usize;
    if bytes.len() < 8 + n {
        bail!(
            "{}: truncated IDX label file: {} bytes, header promises {}",
            path.display(),
            bytes.len(),
            8 + n
        );
    }
    Ok(bytes[8..8 + n].to_vec())
}

/// Verify `file` against a `SHA256SUMS` file beside it (sha256sum format), if that file exists.
pub fn verify_checksum(file: &Path) -> Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let sums = dir.join("SHA256SUMS");
    let Ok(text) = std::fs::read_to_string(&sums) else {
        return Ok(());
    };
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let Some(expected) = text.lines().find_map(|l| {
        let (h, f) = l.split_once(char::is_whitespace)?;
        (f.trim().trim_start_matches('*') == name).then(|| h.to_string())
    }) else {
        return Ok(());
    };
    let got = crate::checkpoint::file_hash(file)?;
    if got != expected {
        bail!(
            "{}: checksum mismatch (sha256 {got}, SHA256SUMS says {expected})",
            file.display()
        );
    }
    Ok(())
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for cand in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&cand);
        if p.exists() {
            return Ok(p);
        }
    }
    bail!(
        "{}: missing data file `{stem}` (or `{stem}.gz`)",
        dir.display()
    )
}

/// An IDX dataset directory in the MNIST layout (`train-images-idx3-ubyte[.gz]`, ...).
/// Works for MNIST, Fashion-MNIST and KMNIST.
pub fn load_idx_dir(dir: &Path, split: Split, num_classes: usize) -> Result<Dataset> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let img_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let lbl_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    verify_checksum(&img_path)?;
    verify_checksum(&lbl_path)?;
    let (n, r, c, px) = parse_idx_images(&read_maybe_gz(&img_path)?, &img_path)?;
    let labels = parse_idx_labels(&read_maybe_gz(&lbl_path)?, &lbl_path)?;
    if labels.len() != n {
        bail!(
            "{}: {} labels for {n} images in {}",
            lbl_path.display(),
            labels.len(),
            img_path.display()
        );
    }
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= num_classes) {
        bail!(
            "{}: label {bad} out of range 0..{num_classes}",
            lbl_path.display()
        );
    }
    Ok(Dataset {
        images: px.iter().map(|&p| p as f32 / 127.5 - 1.0).collect(),
        labels,
        channels: 1,
        height: r,
        width: c,
        num_classes,
    })
}

/// CIFAR-10 binary version: `data_batch_1..5.bin` (train) or `test_batch.bin`, records of
/// 1 label byte + 3072 pixel bytes (R, G, B planes of 32x32).
pub fn load_cifar10_dir(dir: &Path, split: Split) -> Result<Dataset> {
    let files: Vec<String> = match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".into()],
    };
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        let p = dir.join(&f);
        if !p.exists() {
            bail!("{}: missing CIFAR-10 file `{f}`", dir.display());
        }
        verify_checksum(&p)?;
        let bytes = read_maybe_gz(&p)?;
        if bytes.is_empty() || bytes.len() % 3073 != 0 {
            bail!(
                "{}: truncated CIFAR-10 batch ({} bytes is not a multiple of 3073)",
                p.display(),
                bytes.len()
            );
        }
        for rec in bytes.chunks_exact(3073) {
            if rec[0] >= 10 {
                bail!("{}: label {} out of range 0..10", p.display(), rec[0]);
            }
            labels.push(rec[0]);
            images.extend(rec[1..].iter().map(|&v| v as f32 / 127.5 - 1.0));
        }
    }
    Ok(Dataset {
        images,
        labels,
        channels: 3,
        height: 32,
        width: 32,
        num_classes: 10,
    })
}

/// Names a dataset in configs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `fashion-mnist`, `mnist`, `kmnist` (IDX layout) or `cifar10` (binary layout).
    #[serde(default = "d_name")]
    pub name: String,
    /// Directory holding the files; relative paths resolve against the repository root.
    #[serde(default = "d_dir")]
    pub dir: PathBuf,
}

fn d_name() -> String {
    "fashion-mnist".into()
}
fn d_dir() -> PathBuf {
    PathBuf::from("data/fashion-mnist")
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            name: d_name(),
            dir: d_dir(),
        }
    }
}

impl DataConfig {
    /// The dataset is known and its directory exists (cheap: run before any training starts;
    /// `load` then verifies every file's checksum).
    pub fn check(&self) -> Result<()> {
        if !matches!(
            self.name.as_str(),
            "fashion-mnist" | "mnist" | "kmnist" | "cifar10"
        ) {
            bail!(
                "name: unknown dataset `{}` (fashion-mnist, mnist, kmnist, cifar10)",
                self.name.chars().take(40).collect::<String>()
            );
        }
        let dir = crate::paths::resolve(&self.dir);
        if !dir.is_dir() {
            bail!("dir: {}: no such data directory", dir.display());
        }
        Ok(())
    }

    pub fn load(&self, split: Split) -> Result<Dataset> {
        let dir = crate::paths::resolve(&self.dir);
        match self.name.as_str() {
            "fashion-mnist" | "mnist" | "kmnist" => load_idx_dir(&dir, split, 10),
            "cifar10" => load_cifar10_dir(&dir, split),
            other => bail!(
                "data.name: unknown dataset `{other}` (fashion-mnist, mnist, kmnist, cifar10)"
            ),
        }
    }
}

/// Fashion-MNIST class names, index = label.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn idx_images(n: u32, r: u32, c: u32, px: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, 3];
        for x in [n, r, c] {
            v.extend(x.to_be_bytes());
        }
        v.extend_from_slice(px);
        v
    }

    #[test]
    fn idx_parse_and_errors() {
        let p = Path::new("x.idx");
        let b = idx_images(2, 2, 2, &[0, 255, 1, 2, 3, 4, 5, 6]);
        let (n, r, c, px) = parse_idx_images(&b, p).unwrap();
        assert_eq!((n, r, c, px.len()), (2, 2, 2, 8));
        let e = parse_idx_images(&b[..20], p).unwrap_err().to_string();
        assert!(e.contains("truncated") && e.contains("x.idx"), "{e}");
        let mut bad = b.clone();
        bad[3] = 1;
        assert!(parse_idx_images(&bad, p)
            .unwrap_err()
            .to_string()
            .contains("magic"));
        assert!(parse_idx_labels(&b, p)
            .unwrap_err()
            .to_string()
            .contains("magic"));
    }

    #[test]
    fn raw_and_gz_files_and_checksums() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let img = idx_images(1, 2, 2, &[0, 255, 0, 255]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&img).unwrap();
        std::fs::write(
            dir.path().join("train-images-idx3-ubyte.gz"),
            gz.finish().unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("train-labels-idx1-ubyte"),
            [0, 0, 8, 1, 0, 0, 0, 1, 7],
        )
        .unwrap();
        let ds = load_idx_dir(dir.path(), Split::Train, 10).unwrap();
        assert_eq!(ds.images, vec![-1.0, 1.0, -1.0, 1.0]);
        assert_eq!(ds.labels, vec![7]);
        // Missing split.
        let e = load_idx_dir(dir.path(), Split::Test, 10)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing") && e.contains("t10k-images"), "{e}");
        // Checksum mismatch.
        std::fs::write(
            dir.path().join("SHA256SUMS"),
            format!("{}  train-labels-idx1-ubyte\n", "0".repeat(64)),
        )
        .unwrap();
        let e = load_idx_dir(dir.path(), Split::Train, 10)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("checksum mismatch") && e.contains("train-labels"),
            "{e}"
        );
    }

    #[test]
    fn cifar_binary_layout() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = vec![3u8];
        rec.extend(std::iter::repeat_n(255u8, 3072));
        std::fs::write(dir.path().join("test_batch.bin"), &rec).unwrap();
        let ds = load_cifar10_dir(dir.path(), Split::Test).unwrap();
        assert_eq!((ds.len(), ds.channels, ds.height), (1, 3, 32));
        assert_eq!(ds.labels[0], 3);
        std::fs::write(dir.path().join("test_batch.bin"), &rec[..100]).unwrap();
        assert!(load_cifar10_dir(dir.path(), Split::Test)
            .unwrap_err()
            .to_string()
            .contains("truncated"));
    }
}
