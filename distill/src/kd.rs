//! Distillation objectives: multi-step output (and feature) KD, one-step distillation from a bank
//! of teacher samples, and the scratch baseline they are compared against.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Tensor, Var};
use dit::rng::HostRng;
use dit::{DiT, NoiseSchedule, SamplerConfig, Tape};
use serde::{Deserialize, Serialize};

use crate::objective::{noise_batch, Batch, Objective};

/// Which way a student learns. `Mode::ALL` is derived and `FromStr` searches it by the
/// `Display` names, so a new variant only needs its arms in the `match`es the compiler names.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Multi-step KD: match the teacher's epsilon (and optionally its block features) on the same x_t.
    Kd,
    /// One-step: map noise to the teacher's DDIM sample in a single forward pass.
    Onestep,
    /// No teacher: the plain diffusion loss (the baseline).
    Scratch,
}

/// How a trained student turns noise into an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// The diffusion sampler (DDIM/DDPM over respaced steps, with guidance).
    Sampler,
    /// One forward pass at `ONESTEP_T`.
    OneForward,
}

impl Mode {
    /// Every mode, in declaration order (derived).
    pub const ALL: &'static [Mode] = <Mode as strum::VariantArray>::VARIANTS;

    /// Does training read a teacher? (Scratch runs may still name one for the fidelity columns.)
    pub fn needs_teacher(self) -> bool {
        match self {
            Mode::Kd | Mode::Onestep => true,
            Mode::Scratch => false,
        }
    }

    /// Does it train on a bank of teacher samples (`bank:` in the config)?
    pub fn trains_on_bank(self) -> bool {
        match self {
            Mode::Onestep => true,
            Mode::Kd | Mode::Scratch => false,
        }
    }

    /// Can a teaching assistant teach it (a distilled student as its teacher, `ta_train_flops`)?
    pub fn takes_assistant(self) -> bool {
        match self {
            Mode::Kd => true,
            Mode::Onestep | Mode::Scratch => false,
        }
    }

    /// How its students generate.
    pub fn generation(self) -> Generation {
        match self {
            Mode::Kd | Mode::Scratch => Generation::Sampler,
            Mode::Onestep => Generation::OneForward,
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        crate::names::parse(Mode::ALL, s, "mode")
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Kd => "kd",
            Self::Onestep => "onestep",
            Self::Scratch => "scratch",
        })
    }
}

/// Which teacher blocks a student block's features are matched against (feature KD only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatMap {
    /// One-to-one: student block `i` matches teacher block `block_map(i)` (uniform spread).
    #[default]
    OneToOne,
    /// Multi-In-One (MI1): student block `i` matches every teacher block of the span it replaces
    /// (`block_map(i-1)+1 ..= block_map(i)`), through one learned projection of its features onto
    /// their concatenation. A student deeper than the teacher has empty spans: those blocks fall
    /// back to their one-to-one block.
    ManyToOne,
}

impl FeatMap {
    pub fn is_one_to_one(&self) -> bool {
        *self == FeatMap::OneToOne
    }
}

/// Loss weights of multi-step KD: `kd * MSE(eps_S, eps_T) + data * MSE(eps_S, eps) + feat * sum_l MSE(P_l f_S^l, cat_{j in span(l)} f_T^j)`,
/// with the spans of `map`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdWeights {
    #[serde(default = "d_kd")]
    pub kd: f64,
    #[serde(default = "d_data")]
    pub data: f64,
    #[serde(default)]
    pub feat: f64,
    /// Feature mapping (left out of the serialised config when one-to-one, so older runs keep
    /// their config hash).
    #[serde(default, skip_serializing_if = "FeatMap::is_one_to_one")]
    pub map: FeatMap,
}

fn d_kd() -> f64 {
    0.9
}
fn d_data() -> f64 {
    0.1
}

impl Default for KdWeights {
    fn default() -> Self {
        Self {
            kd: d_kd(),
            data: d_data(),
            feat: 0.0,
            map: FeatMap::OneToOne,
        }
    }
}

impl KdWeights {
    /// Finite, non-negative, not all zero; errors name the field.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("kd", self.kd), ("data", self.data), ("feat", self.feat)] {
            if !(v.is_finite() && v >= 0.0) {
                anyhow::bail!("{name}: loss weights must be finite and >= 0 (got {v})");
            }
        }
        if self.kd + self.data + self.feat == 0.0 {
            anyhow::bail!("kd, data, feat: at least one loss weight must be > 0");
        }
        if self.map == FeatMap::ManyToOne && self.feat == 0.0 {
            anyhow::bail!("map: `many_to_one` maps features, so it needs feat > 0");
        }
        Ok(())
    }
}

/// Teacher block matched by student block `i` when depths differ: blocks are spread uniformly
/// and the last student block always meets the last teacher block (`ceil((i+1) * Dt / Ds) - 1`).
pub fn block_map(student_depth: usize, teacher_depth: usize) -> Vec<usize> {
    (0..student_depth)
        .map(|i| ((i + 1) * teacher_depth).div_ceil(student_depth) - 1)
        .collect()
}

/// The teacher blocks each student block's features are matched against under `map`.
pub fn feature_spans(student_depth: usize, teacher_depth: usize, map: FeatMap) -> Vec<Vec<usize>> {
    let ends = block_map(student_depth, teacher_depth);
    ends.iter()
        .enumerate()
        .map(|(i, &end)| {
            let start = match (map, i) {
                (FeatMap::OneToOne, _) => end,
                (FeatMap::ManyToOne, 0) => 0,
                (FeatMap::ManyToOne, _) => ends[i - 1] + 1,
            };
            if start > end {
                vec![end]
            } else {
                (start..=end).collect()
            }
        })
        .collect()
}

fn mse(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    (a - b)?.sqr()?.mean_all()
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Multi-step output/feature KD. Teacher and student see the same x_t, t, labels (with the same
/// label-dropout mask) in each step.
pub struct KdObjective {
    pub teacher: DiT,
    pub schedule: NoiseSchedule,
    pub weights: KdWeights,
    /// Learned `[k * W_T, W_S]` projectors of student block `i` (k teacher blocks in its span),
    /// where `k * W_T != W_S` and feat > 0.
    projectors: Vec<Option<Var>>,
    spans: Vec<Vec<usize>>,
    /// Seconds spent in the teacher's forward passes (for the teacher-cost report).
    pub teacher_secs: f64,
    /// Shared store of teacher outputs (output KD only).
    cache: Option<TeacherCache>,
}

/// Teacher epsilon predictions shared by every student of a sweep that trains with the same seed
/// and batch size: their x_t, t and labels are identical step for step (all drawn from the same
/// seeded streams), so the teacher's forward pass is computed once and read back from disk by the
/// others. Stored in chunks of `CHUNK` steps as f16 under `results/cache/`.
pub struct TeacherCache {
    dir: PathBuf,
    chunk_index: usize,
    chunk: Vec<Tensor>,
    loaded: Option<(usize, Tensor)>,
}

const CACHE_CHUNK: usize = 50;

impl TeacherCache {
    /// The cache of `teacher_hash` for runs with this seed, batch size and label-dropout rate.
    pub fn new(
        cache_dir: &Path,
        teacher_hash: &str,
        seed: u64,
        batch: usize,
        label_dropout: f64,
    ) -> Self {
        let dir = cache_dir.join(format!(
            "kd-{teacher_hash}-s{seed}-b{batch}-p{label_dropout}"
        ));
        Self {
            dir,
            chunk_index: usize::MAX,
            chunk: Vec::new(),
            loaded: None,
        }
    }

    /// Whether any whole chunk of the first `steps` steps is not stored yet.
    pub fn incomplete(&self, steps: usize) -> bool {
        (0..steps / CACHE_CHUNK).any(|c| !self.path(c).is_file())
    }

    fn path(&self, chunk: usize) -> PathBuf {
        self.dir
            .join(format!("steps-{:06}.safetensors", chunk * CACHE_CHUNK))
    }

    /// The cached teacher output of `step`, if present.
    fn get(&mut self, step: usize) -> Option<Tensor> {
        let c = step / CACHE_CHUNK;
        if self.loaded.as_ref().map(|(i, _)| *i) != Some(c) {
            let t = candle_core::safetensors::load(self.path(c), &candle_core::Device::Cpu).ok()?;
            self.loaded = Some((c, t.get("eps")?.clone()));
        }
        let (_, all) = self.loaded.as_ref()?;
        all.get(step % CACHE_CHUNK).ok()?.to_dtype(DType::F32).ok()
    }

    /// Record a computed output; a full chunk is written atomically.
    fn put(&mut self, step: usize, eps: &Tensor) -> Result<()> {
        let c = step / CACHE_CHUNK;
        if c != self.chunk_index || step % CACHE_CHUNK != self.chunk.len() {
            // Only contiguous runs of steps from a chunk start are stored (a resumed run may begin mid-chunk).
            self.chunk_index = c;
            self.chunk.clear();
            if !step.is_multiple_of(CACHE_CHUNK) {
                return Ok(());
            }
        }
        self.chunk.push(eps.to_dtype(DType::F16)?);
        if self.chunk.len() == CACHE_CHUNK {
            let mut m = std::collections::HashMap::new();
            m.insert("eps".to_string(), Tensor::stack(&self.chunk, 0)?);
            dit::io::save_safetensors_atomic(&m, &self.path(c))?;
            self.chunk.clear();
            self.chunk_index = usize::MAX;
        }
        Ok(())
    }
}

impl KdObjective {
    pub fn new(
        teacher: DiT,
        student_cfg: &dit::DitConfig,
        weights: KdWeights,
        seed: u64,
    ) -> Result<Self> {
        let spans = feature_spans(student_cfg.depth, teacher.cfg.depth, weights.map);
        let (ws, wt) = (student_cfg.hidden_size, teacher.cfg.hidden_size);
        let mut projectors = Vec::new();
        if weights.feat > 0.0 {
            let mut p = dit::params::Params::new(seed ^ 0x9E0, DType::F32, teacher.device());
            for (i, span) in spans.iter().enumerate() {
                let out = span.len() * wt;
                if out == ws {
                    projectors.push(None);
                    continue;
                }
                let name = format!("proj.{i}");
                p.get(
                    &name,
                    &[out, ws],
                    dit::params::Init::XavierUniform {
                        fan_in: ws,
                        fan_out: out,
                    },
                )?;
                let var = dit::vars::lock(&p.varmap)
                    .get(&name)
                    .cloned()
                    .with_context(|| format!("projector `{name}` was not created"))?;
                projectors.push(Some(var));
            }
        }
        Ok(Self {
            teacher,
            schedule: NoiseSchedule::dit_default(),
            weights,
            projectors,
            spans,
            teacher_secs: 0.0,
            cache: None,
        })
    }

    /// Share teacher outputs through `cache` (used when no feature term needs the teacher's blocks).
    pub fn with_cache(mut self, cache: TeacherCache) -> Self {
        if self.weights.feat == 0.0 {
            self.cache = Some(cache);
        }
        self
    }
}

impl Objective for KdObjective {
    fn loss(
        &mut self,
        model: &DiT,
        tape: &mut Tape,
        batch: &Batch,
        rng: &mut HostRng,
    ) -> Result<(Tensor, Vec<(String, f64)>)> {
        let (t, eps, xt) = noise_batch(&self.schedule, &batch.x0, rng)?;
        let tf: Vec<f32> = t.iter().map(|&v| v as f32).collect();
        let c = model.cfg.in_channels;
        let want_feats = self.weights.feat > 0.0;

        let t0 = std::time::Instant::now();
        let cached = self
            .cache
            .as_mut()
            .and_then(|c| c.get(batch.step))
            .filter(|e| e.dims() == xt.dims());
        let (eps_t, feats_t) = match cached {
            Some(e) => (e.to_device(xt.device())?, Vec::new()),
            None => {
                let (out_t, feats_t) = self.teacher.forward_with_features(&xt, &tf, &batch.y)?;
                let mut eps_t = out_t.narrow(1, 0, c)?.detach();
                if let Some(cache) = self.cache.as_mut() {
                    // Targets are always the f16-rounded values, so a student reads the same numbers
                    // whether it computed them or found them cached (results never depend on run order).
                    eps_t = eps_t.to_dtype(DType::F16)?.to_dtype(DType::F32)?;
                    cache.put(batch.step, &eps_t)?;
                }
                let feats_t: Vec<Tensor> = if want_feats {
                    feats_t.iter().map(|f| f.detach()).collect()
                } else {
                    Vec::new()
                };
                (eps_t, feats_t)
            }
        };
        self.teacher_secs += t0.elapsed().as_secs_f64();

        let (out_s, feats_s) = model.forward_recorded(&xt, &tf, &batch.y, tape)?;
        let eps_s = out_s.narrow(1, 0, c)?;
        let l_kd = mse(&eps_s, &eps_t)?;
        let l_data = mse(&eps_s, &eps)?;
        let mut loss = ((&l_kd * self.weights.kd)? + (&l_data * self.weights.data)?)?;
        let mut parts = vec![
            ("loss_kd".to_string(), scalar(&l_kd)?),
            ("loss_data".to_string(), scalar(&l_data)?),
        ];
        if want_feats {
            let mut l_feat = Tensor::zeros((), DType::F32, model.device())?;
            for (i, fs) in feats_s.iter().enumerate() {
                let span: Vec<&Tensor> = self.spans[i].iter().map(|&j| &feats_t[j]).collect();
                let ft = &Tensor::cat(&span, 2)?; // (N, T, k * W_T)
                let fs = match self.projectors.get(i).and_then(|p| p.as_ref()) {
                    Some(p) => {
                        let (n, tk, w) = fs.dims3()?;
                        fs.reshape((n * tk, w))?
                            .matmul(&p.as_tensor().t()?)?
                            .reshape((n, tk, ft.dim(2)?))?
                    }
                    None => fs.clone(),
                };
                l_feat = (l_feat + mse(&fs, ft)?)?;
            }
            parts.push(("loss_feat".to_string(), scalar(&l_feat)?));
            loss = (loss + (l_feat * self.weights.feat)?)?;
        }
        Ok((loss, parts))
    }

    fn teacher_secs(&self) -> f64 {
        self.teacher_secs
    }

    fn extra_vars(&self) -> Vec<(String, Var)> {
        self.projectors
            .iter()
            .enumerate()
            .filter_map(|(i, v)| Some((format!("proj.{i}"), v.clone()?)))
            .collect()
    }
}

//--------------------------------------------------------------------------------
// One-step distillation
//--------------------------------------------------------------------------------

/// Timestep at which a one-step student is queried: it always sees pure noise.
pub const ONESTEP_T: f32 = 999.0;

/// A bank of (noise, label, teacher sample) triples, generated once per teacher and sampler
/// settings and cached on disk.
pub struct SampleBank {
    pub noise: Tensor,
    pub labels: Vec<u32>,
    pub samples: Tensor,
}

/// Settings that key a sample bank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankConfig {
    /// Triples in the bank.
    #[serde(default = "d_bank")]
    pub size: usize,
    /// Teacher sampler (DDIM with S steps).
    #[serde(default = "d_bank_sampler")]
    pub sampler: SamplerConfig,
    #[serde(default)]
    pub seed: u64,
}

fn d_bank() -> usize {
    2048
}
fn d_bank_sampler() -> SamplerConfig {
    SamplerConfig {
        steps: 25,
        cfg_scale: 2.0,
        ..Default::default()
    }
}

impl Default for BankConfig {
    fn default() -> Self {
        Self {
            size: d_bank(),
            sampler: d_bank_sampler(),
            seed: 0,
        }
    }
}

impl SampleBank {
    /// Path of the cached bank for `teacher_hash` and `cfg` under `cache_dir`.
    pub fn path(cache_dir: &Path, teacher_hash: &str, cfg: &BankConfig) -> PathBuf {
        use sha2::{Digest, Sha256};
        let key = format!(
            "{teacher_hash}|{}",
            serde_json::to_string(cfg).unwrap_or_default()
        );
        let h = hex::encode(&Sha256::digest(key.as_bytes())[..8]);
        cache_dir.join(format!(
            "bank-{}-{h}.safetensors",
            &teacher_hash[..teacher_hash.len().min(12)]
        ))
    }

    /// Load the cached bank, or generate it with the teacher (batches of 256) and cache it.
    pub fn load_or_generate(
        teacher: &DiT,
        teacher_hash: &str,
        cfg: &BankConfig,
        cache_dir: &Path,
        progress: bool,
    ) -> Result<Self> {
        let path = Self::path(cache_dir, teacher_hash, cfg);
        let dev = teacher.device();
        if path.exists() {
            let t = candle_core::safetensors::load(&path, dev).with_context(|| {
                format!(
                    "{}: corrupt sample bank (delete it to regenerate)",
                    path.display()
                )
            })?;
            let get = |k: &str| {
                t.get(k)
                    .cloned()
                    .with_context(|| format!("{}: `{k}` missing", path.display()))
            };
            let labels = get("labels")?.to_vec1::<u32>()?;
            return Ok(Self {
                noise: get("noise")?,
                labels,
                samples: get("samples")?,
            });
        }
        let c = &teacher.cfg;
        let mut rng = dit::rng::seeded(cfg.seed ^ 0xBA4C);
        let noise = dit::rng::randn(
            &mut rng,
            &[cfg.size, c.in_channels, c.input_size, c.input_size],
            dev,
        )?;
        let labels = dit::rng::uniform_ints(&mut rng, cfg.size, c.num_classes);
        let mut samples = Vec::new();
        let pb = crate::progress::bar(cfg.size as u64, "sample bank", progress);
        for start in (0..cfg.size).step_by(256) {
            let b = 256.min(cfg.size - start);
            let x = dit::sampler::sample(
                teacher,
                &NoiseSchedule::dit_default(),
                &noise.narrow(0, start, b)?,
                &labels[start..start + b],
                &cfg.sampler,
                &mut rng,
            )?;
            samples.push(x);
            pb.inc(b as u64);
        }
        pb.finish_and_clear();
        let samples = Tensor::cat(&samples, 0)?;
        let mut map = std::collections::HashMap::new();
        map.insert("noise".to_string(), noise.clone());
        map.insert(
            "labels".to_string(),
            Tensor::from_slice(&labels, labels.len(), dev)?,
        );
        map.insert("samples".to_string(), samples.clone());
        dit::io::save_safetensors_atomic(&map, &path)?;
        Ok(Self {
            noise,
            labels,
            samples,
        })
    }
}

/// One-step student forward: noise -> image, `[N, C, H, W]`.
pub fn onestep_generate(
    model: &DiT,
    noise: &Tensor,
    labels: &[u32],
) -> candle_core::Result<Tensor> {
    let t = vec![ONESTEP_T; labels.len()];
    model.forward_eps(noise, &t, labels)
}

/// L2 (or feature-space) regression of the student's one-step output onto the teacher's samples.
/// The batch's images are ignored: the bank is the data.
pub struct OnestepObjective {
    pub bank: SampleBank,
    /// Optional perceptual loss: MSE between feature-net features, added with this weight.
    pub perceptual: Option<(crate::featnet::FeatNet, f64)>,
}

impl OnestepObjective {
    pub fn new(bank: SampleBank, perceptual: Option<(crate::featnet::FeatNet, f64)>) -> Self {
        Self { bank, perceptual }
    }
}

impl Objective for OnestepObjective {
    fn loss(
        &mut self,
        model: &DiT,
        tape: &mut Tape,
        batch: &Batch,
        rng: &mut HostRng,
    ) -> Result<(Tensor, Vec<(String, f64)>)> {
        let n = batch.y.len();
        let size = self.bank.labels.len();
        let idx: Vec<u32> = (0..n)
            .map(|_| rand::Rng::random_range(rng, 0..size) as u32)
            .collect();
        let ids = Tensor::from_slice(&idx, n, model.device())?;
        let noise = self.bank.noise.index_select(&ids, 0)?;
        let target = self.bank.samples.index_select(&ids, 0)?;
        let labels: Vec<u32> = idx.iter().map(|&i| self.bank.labels[i as usize]).collect();
        let out = model.eps(
            &model
                .forward_recorded(&noise, &vec![ONESTEP_T; n], &labels, tape)?
                .0,
        )?; // onestep_generate, recorded
        let l2 = mse(&out, &target)?;
        let mut parts = vec![("loss_l2".to_string(), scalar(&l2)?)];
        let mut loss = l2;
        if let Some((net, w)) = &self.perceptual {
            let lp = mse(&net.features(&out)?, &net.features(&target)?.detach())?;
            parts.push(("loss_perceptual".to_string(), scalar(&lp)?));
            loss = (loss + (lp * *w)?)?;
        }
        Ok((loss, parts))
    }
}

/// Copy teacher blocks into a student of the same width: student block i <- teacher block map[i],
/// plus the embedders and the final layer. Errors when widths (or patch/channels) differ.
pub fn init_from_teacher(student: &DiT, teacher: &DiT) -> Result<()> {
    let (s, t) = (&student.cfg, &teacher.cfg);
    if s.hidden_size != t.hidden_size
        || s.patch_size != t.patch_size
        || s.in_channels != t.in_channels
        || s.mlp_ratio != t.mlp_ratio
    {
        anyhow::bail!(
            "student init `teacher` needs the teacher's width, patch, channels and mlp_ratio (student {}, teacher {})",
            s.shape_label(),
            t.shape_label()
        );
    }
    let map = block_map(s.depth, t.depth);
    let tt = teacher.named_tensors();
    let data = dit::vars::lock(&student.varmap);
    for (name, var) in data.iter() {
        let src = match name.strip_prefix("blocks.") {
            Some(rest) => {
                let (i, tail) = rest
                    .split_once('.')
                    .with_context(|| format!("`{name}`: not a block weight name"))?;
                format!("blocks.{}.{tail}", map[i.parse::<usize>()?])
            }
            None => name.clone(),
        };
        let v = tt
            .get(&src)
            .with_context(|| format!("teacher has no `{src}`"))?;
        if v.dims() == var.dims() {
            var.set(v)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teacher_cache_round_trips_whole_chunks_only() {
        let dir = tempfile::tempdir().unwrap();
        let dev = candle_core::Device::Cpu;
        let mut c = TeacherCache::new(dir.path(), "abc", 0, 2, 0.1);
        let val = |s: usize| Tensor::full(s as f32 * 0.5, (2, 1, 2, 2), &dev).unwrap();
        // A run resumed mid-chunk stores nothing for that chunk.
        for s in 3..CACHE_CHUNK {
            c.put(s, &val(s)).unwrap();
        }
        assert!(c.get(3).is_none());
        for s in CACHE_CHUNK..2 * CACHE_CHUNK {
            c.put(s, &val(s)).unwrap();
        }
        let mut fresh = TeacherCache::new(dir.path(), "abc", 0, 2, 0.1);
        let got = fresh.get(CACHE_CHUNK + 7).unwrap();
        assert_eq!(
            got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![(CACHE_CHUNK + 7) as f32 * 0.5; 8]
        );
        assert!(
            TeacherCache::new(dir.path(), "abc", 1, 2, 0.1)
                .get(CACHE_CHUNK)
                .is_none(),
            "another seed has its own cache"
        );
    }

    #[test]
    fn many_to_one_spans_cover_the_teacher_once() {
        use FeatMap::*;
        assert_eq!(feature_spans(1, 4, ManyToOne), vec![vec![0, 1, 2, 3]]);
        assert_eq!(feature_spans(2, 4, ManyToOne), vec![vec![0, 1], vec![2, 3]]);
        assert_eq!(
            feature_spans(3, 4, ManyToOne),
            vec![vec![0, 1], vec![2], vec![3]]
        );
        // Deeper than the teacher: empty spans fall back to the one-to-one block.
        assert_eq!(
            feature_spans(6, 4, ManyToOne),
            vec![vec![0], vec![1], vec![1], vec![2], vec![3], vec![3]]
        );
        assert_eq!(
            feature_spans(2, 4, OneToOne),
            vec![vec![1], vec![3]],
            "one-to-one is the block map"
        );
    }

    #[test]
    fn many_to_one_needs_a_feature_term() {
        let w = KdWeights {
            map: FeatMap::ManyToOne,
            ..Default::default()
        };
        let e = w.validate().unwrap_err().to_string();
        assert!(e.starts_with("map:") && e.contains("feat > 0"), "{e}");
        // A one-to-one config serialises as before (its run hash does not move).
        let json = serde_json::to_string(&KdWeights::default()).unwrap();
        assert_eq!(json, r#"{"kd":0.9,"data":0.1,"feat":0.0}"#);
    }

    /// The MI1 feature loss of a depth-1 student under a depth-2 teacher, recomputed by hand in
    /// f64 loops from the two models' block features and the learned projector:
    /// `mean_{n,t,o} ((P f_S)[n,t,o] - cat(f_T^0, f_T^1)[n,t,o])^2`.
    #[test]
    fn many_to_one_loss_matches_a_hand_computation() {
        let dev = candle_core::Device::Cpu;
        let tcfg = dit::DitConfig {
            hidden_size: 32,
            depth: 2,
            num_heads: 2,
            patch_size: 7,
            ..Default::default()
        };
        let scfg = dit::DitConfig {
            hidden_size: 16,
            depth: 1,
            ..tcfg.clone()
        };
        let teacher = DiT::new(&tcfg, 3, DType::F32, &dev).unwrap();
        let student = DiT::new(&scfg, 5, DType::F32, &dev).unwrap();
        // adaLN-Zero starts every block at the identity: perturb the weights so features differ.
        for (model, seed) in [(&teacher, 100), (&student, 200)] {
            for (i, (_, v)) in dit::vars::lock(&model.varmap).iter().enumerate() {
                let mut r = dit::rng::seeded(seed + i as u64);
                v.set(&(dit::rng::randn(&mut r, v.dims(), &dev).unwrap() * 0.05).unwrap())
                    .unwrap();
            }
        }
        let weights = KdWeights {
            kd: 0.0,
            data: 0.0,
            feat: 1.0,
            map: FeatMap::ManyToOne,
        };
        let mut obj = KdObjective::new(teacher, &scfg, weights, 0).unwrap();
        let vars = obj.extra_vars();
        assert_eq!(vars.len(), 1, "one projector for the one student block");
        assert_eq!(
            vars[0].1.dims(),
            &[64, 16],
            "onto both teacher blocks (2 x 32)"
        );

        let mut r = dit::rng::seeded(9);
        let x0 = dit::rng::randn(&mut r, &[3, 1, 28, 28], &dev).unwrap();
        let batch = Batch {
            x0: x0.clone(),
            y: vec![1, 4, 10],
            step: 0,
        };
        let mut tape = Tape::new();
        let (loss, parts) = obj
            .loss(&student, &mut tape, &batch, &mut dit::rng::seeded(42))
            .unwrap();
        let got = loss.to_scalar::<f32>().unwrap() as f64;

        // By hand: the same x_t, both models' block features, the projector.
        let (t, _, xt) = noise_batch(
            &NoiseSchedule::dit_default(),
            &x0,
            &mut dit::rng::seeded(42),
        )
        .unwrap();
        let tf: Vec<f32> = t.iter().map(|&v| v as f32).collect();
        let (_, ft) = obj
            .teacher
            .forward_with_features(&xt, &tf, &batch.y)
            .unwrap();
        let (_, fs) = student.forward_with_features(&xt, &tf, &batch.y).unwrap();
        let v3 = |x: &Tensor| x.to_vec3::<f32>().unwrap();
        let (t0, t1, s0) = (v3(&ft[0]), v3(&ft[1]), v3(&fs[0]));
        let p = vars[0].1.as_tensor().to_vec2::<f32>().unwrap();
        let (mut sum, mut count) = (0.0f64, 0usize);
        for n in 0..3 {
            for tok in 0..16 {
                for o in 0..64 {
                    let proj: f64 = (0..16).map(|w| p[o][w] as f64 * s0[n][tok][w] as f64).sum();
                    let target = if o < 32 {
                        t0[n][tok][o]
                    } else {
                        t1[n][tok][o - 32]
                    } as f64;
                    sum += (proj - target).powi(2);
                    count += 1;
                }
            }
        }
        let want = sum / count as f64;
        assert!(want > 1e-4, "features differ: {want}");
        assert!(
            (got - want).abs() <= 1e-5 * want,
            "MI1 loss {got} vs by hand {want}"
        );
        let feat = parts.iter().find(|(k, _)| k == "loss_feat").unwrap().1;
        assert!((feat - want).abs() <= 1e-5 * want, "{feat} vs {want}");
    }

    #[test]
    fn block_map_spreads_and_ends_together() {
        assert_eq!(block_map(4, 4), vec![0, 1, 2, 3]);
        assert_eq!(block_map(2, 4), vec![1, 3]);
        assert_eq!(block_map(3, 4), vec![1, 2, 3]);
        assert_eq!(block_map(6, 4), vec![0, 1, 1, 2, 3, 3]);
        assert_eq!(*block_map(5, 12).last().unwrap(), 11);
    }
}
