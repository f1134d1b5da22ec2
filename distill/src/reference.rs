//! What every student of a sweep is measured against, under the students' own protocol (same
//! sample count, sampler, guidance and evaluation seed): real data (the floor a perfect generator
//! reaches at that sample count) and the teacher (the ceiling KD students chase), plus the
//! evaluation noise (the same teacher weights scored with a second evaluation seed).

use std::path::Path;

use anyhow::Result;
use candle_core::Tensor;
use dit::DiT;
use serde::{Deserialize, Serialize};

use crate::eval::{score, EvalConfig, EvalResult};
use crate::kd::Mode;
use crate::run::Shared;

/// Mean and sample standard deviation of a few draws.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
    pub values: Vec<f64>,
}

impl MeanStd {
    pub fn of(values: Vec<f64>) -> Self {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n.max(1.0);
        let var = if values.len() > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            f64::NAN
        };
        Self {
            mean,
            std: var.sqrt(),
            values,
        }
    }
}

/// Real images scored as if generated: `samples` training images (labels as drawn) per draw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Floor {
    pub draws: usize,
    pub fid_proxy: MeanStd,
    pub kid: MeanStd,
    pub precision: MeanStd,
    pub recall: MeanStd,
    pub coverage: MeanStd,
    pub class_accuracy: MeanStd,
    /// With `fid` on: the field's FID of the first [`FID_FLOOR_DRAWS`] draws (the same training
    /// images) against the same real statistics as the students.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fid: Option<MeanStd>,
}

/// The teacher under the students' protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherRow {
    pub teacher_hash: String,
    pub depth: usize,
    pub width: usize,
    pub heads: usize,
    pub params: usize,
    pub gflops: f64,
    /// At the sweep's evaluation seed (the noise every student sees).
    pub metrics: EvalResult,
    /// FID-proxy of the same weights at the evaluation seed and at one more: their spread is the
    /// evaluation noise at this sample count.
    pub eval_noise_fid_proxy: MeanStd,
}

/// `reference.json` of a sweep directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// Hash of everything it was computed from (feature net, data, teacher, evaluation settings).
    pub key: String,
    pub samples: usize,
    pub floor: Floor,
    pub teacher: Option<TeacherRow>,
    /// An untrained student (adaLN-Zero: it predicts zero noise, so every shape samples the same
    /// images): the value a student that learned nothing gets.
    #[serde(default)]
    pub untrained: Option<EvalResult>,
    /// With `fid` on: SHA-256 of the Inception weights and the number of real (test) images
    /// behind the FID values of this reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fid_weights_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fid_real_images: Option<usize>,
}

pub const FILE: &str = "reference.json";

/// Draws of the real-data floor.
const FLOOR_DRAWS: usize = 5;
/// Draws of the floor that are also scored by the FID (each costs as many Inception forwards as
/// one student evaluation).
pub const FID_FLOOR_DRAWS: usize = 2;

impl Reference {
    pub fn load(dir: &Path) -> Option<Reference> {
        serde_json::from_str(&std::fs::read_to_string(dir.join(FILE)).ok()?).ok()
    }

    /// `dir/reference.json` if it was computed from these inputs, else measured now and written.
    pub fn ensure(
        dir: &Path,
        eval: &EvalConfig,
        teacher: Option<&Path>,
        shared: &Shared,
        cache_dir: &Path,
    ) -> Result<Reference> {
        let teacher_hash = match teacher {
            Some(p) => Some(
                crate::checkpoint::file_hash(&crate::checkpoint::locate_model(p)?.1)?[..16]
                    .to_string(),
            ),
            None => None,
        };
        let key = {
            use sha2::{Digest, Sha256};
            let mut k = serde_json::json!({"eval": eval, "teacher": teacher_hash, "featnet": shared.featnet_hash, "data": shared.data_hash, "v": 1});
            // Only with `fid` on, so the keys of references without it do not change.
            if let Some(f) = shared.fid_for(eval)? {
                k["fid"] = serde_json::json!({"weights": f.net.weights_sha256, "real": f.real.n});
            }
            hex::encode(&Sha256::digest(k.to_string().as_bytes())[..8])
        };
        if let Some(r) = Self::load(dir).filter(|r| r.key == key) {
            return Ok(r);
        }
        let floor = floor(eval, shared)?;
        let untrained = untrained(teacher, eval, shared)?;
        let teacher = match (teacher, teacher_hash) {
            (Some(p), Some(h)) => Some(teacher_row(p, &h, eval, shared, cache_dir)?),
            _ => None,
        };
        let fid = shared.fid_for(eval)?;
        let r = Reference {
            key,
            samples: eval.samples,
            floor,
            teacher,
            untrained,
            fid_weights_sha256: fid.map(|f| f.net.weights_sha256.clone()),
            fid_real_images: fid.map(|f| f.real.n),
        };
        dit::io::write_json_atomic(&dir.join(FILE), &r)?;
        Ok(r)
    }
}

fn floor(eval: &EvalConfig, shared: &Shared) -> Result<Floor> {
    let n = eval.samples.min(shared.train.len());
    let fid = shared.fid_for(eval)?;
    let mut rows = Vec::new();
    for d in 0..FLOOR_DRAWS {
        let mut order = crate::order::DataOrder::new(
            eval.seed ^ 0xF100_u64.wrapping_add(d as u64),
            shared.train.len(),
        );
        let (x, y) = shared.train.gather(&order.batch(0, n));
        let t = &shared.train;
        let x = Tensor::from_vec(x, (n, t.channels, t.height, t.width), &shared.device)?;
        let labels: Vec<u32> = y.to_vec();
        rows.push(score(
            &x,
            &labels,
            eval.seed,
            &shared.featnet,
            &shared.test_feats,
            None,
            fid.filter(|_| d < FID_FLOOR_DRAWS),
        )?);
    }
    let col = |f: fn(&EvalResult) -> f64| MeanStd::of(rows.iter().map(f).collect());
    let fids: Vec<f64> = rows.iter().filter_map(|m| m.fid).collect();
    Ok(Floor {
        draws: FLOOR_DRAWS,
        fid_proxy: col(|m| m.fid_proxy),
        kid: col(|m| m.kid),
        precision: col(|m| m.precision),
        recall: col(|m| m.recall),
        coverage: col(|m| m.coverage),
        class_accuracy: col(|m| m.class_accuracy),
        fid: (!fids.is_empty()).then(|| MeanStd::of(fids)),
    })
}

fn untrained(
    teacher: Option<&Path>,
    eval: &EvalConfig,
    shared: &Shared,
) -> Result<Option<EvalResult>> {
    let Some(p) = teacher else { return Ok(None) };
    let base = crate::checkpoint::read_dit_config(&crate::checkpoint::locate_model(p)?.0)?;
    // The smallest shape: zero-initialised outputs make every untrained shape sample alike.
    let cfg = dit::DitConfig {
        depth: 1,
        hidden_size: 32,
        num_heads: 2,
        ..base
    };
    let model = DiT::new(&cfg, 0, candle_core::DType::F32, &shared.device)?;
    let e = EvalConfig {
        speed: false,
        ..eval.clone()
    };
    Ok(Some(
        crate::eval::evaluate(
            &model,
            Mode::Scratch,
            &e,
            &shared.featnet,
            &shared.test_feats,
            None,
            // The guards compare with the untrained student's FID-proxy only.
            None,
        )?
        .0,
    ))
}

fn teacher_row(
    path: &Path,
    hash: &str,
    eval: &EvalConfig,
    shared: &Shared,
    cache_dir: &Path,
) -> Result<TeacherRow> {
    let teacher = crate::checkpoint::load_model(path, &shared.device)?;
    crate::eval::check_finite_weights(&teacher)?;
    // The field's FID at the evaluation seed only (the second seed measures the FID-proxy's noise).
    let fid = shared.fid_for(eval)?;
    let at = |seed: u64| -> Result<EvalResult> {
        let e = EvalConfig {
            seed,
            ..eval.clone()
        };
        let x = teacher_samples(&teacher, hash, &e, cache_dir)?;
        let (_, labels) = crate::eval::eval_inputs(&teacher, e.samples, e.seed)?;
        let mut m = score(
            &x,
            &labels,
            e.seed,
            &shared.featnet,
            &shared.test_feats,
            None,
            fid.filter(|_| seed == eval.seed),
        )?;
        m.forwards_per_image = crate::eval::forwards_per_image(Mode::Kd, &e.sampler);
        m.gflops_per_image = m.forwards_per_image as f64 * teacher.cfg.forward_gflops();
        Ok(m)
    };
    let metrics = at(eval.seed)?;
    let other = at(eval.seed.wrapping_add(1))?;
    let c = &teacher.cfg;
    Ok(TeacherRow {
        teacher_hash: hash.to_string(),
        depth: c.depth,
        width: c.hidden_size,
        heads: c.num_heads,
        params: c.num_params(),
        gflops: c.forward_gflops(),
        eval_noise_fid_proxy: MeanStd::of(vec![metrics.fid_proxy, other.fid_proxy]),
        metrics,
    })
}

/// The teacher's samples on the evaluation noise of `eval`, cached by teacher hash and settings
/// (every student's fidelity columns compare with them).
pub fn teacher_samples(
    teacher: &DiT,
    hash: &str,
    eval: &EvalConfig,
    cache_dir: &Path,
) -> Result<Tensor> {
    use sha2::{Digest, Sha256};
    let key = format!(
        "{hash}|{}|{}|{}",
        eval.samples,
        eval.seed,
        serde_json::to_string(&eval.sampler)?
    );
    let h = hex::encode(&Sha256::digest(key.as_bytes())[..8]);
    let path = crate::paths::output(cache_dir).join(format!("teacher-eval-{h}.safetensors"));
    if let Ok(t) = candle_core::safetensors::load(&path, teacher.device()) {
        if let Some(x) = t.get("samples") {
            return Ok(x.clone());
        }
    }
    let (noise, labels) = crate::eval::eval_inputs(teacher, eval.samples, eval.seed)?;
    let x = crate::eval::generate(teacher, Mode::Kd, &noise, &labels, &eval.sampler, eval.seed)?;
    dit::io::save_safetensors_atomic(
        &std::collections::HashMap::from([("samples".to_string(), x.clone())]),
        &path,
    )?;
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_std_is_the_sample_std() {
        let m = MeanStd::of(vec![1.0, 3.0]);
        assert_eq!(m.mean, 2.0);
        assert!((m.std - 2f64.sqrt()).abs() < 1e-12);
        assert!(MeanStd::of(vec![5.0]).std.is_nan());
    }
}
