//! The distillation setup: how a student is taught, the design knob beside depth, width and heads.
//! A setup is a training mode plus what the KD loss matches and who teaches: output KD, output +
//! one-to-one feature KD, Multi-In-One feature KD, output KD from a teaching assistant, one-step
//! distillation, or no teacher at all.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::kd::{FeatMap, KdWeights, Mode};
use crate::run::DistillConfig;

/// How a student is taught. `Setup::ALL` is derived and `FromStr` searches it by the `Display`
/// names (serde writes the same lowercase names), so a new variant is parsed and listed without
/// being registered; the compiler names every `match` it needs an arm in.
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
pub enum Setup {
    /// Output KD: match the teacher's epsilon on the same x_t.
    Kd,
    /// Output KD plus one-to-one feature KD (student block i matches teacher block `block_map(i)`).
    Feat,
    /// Output KD plus Multi-In-One feature KD: each student block matches the whole teacher span
    /// it replaces, through one learned projection onto their concatenation.
    Mi1,
    /// Teaching assistant (Mirzadeh et al. 2020): output KD from a model of intermediate size that
    /// was itself distilled from the teacher; the assistant's training is charged to the student.
    Ta,
    /// One step: noise to the teacher's DDIM sample in one forward pass.
    Onestep,
    /// No teacher: the plain diffusion loss.
    Scratch,
}

/// The feature-loss weight `feat` and `mi1` use when a config leaves `kd.feat` at 0 (untuned; a
/// setup study should sweep it).
pub const DEFAULT_FEAT_WEIGHT: f64 = 1.0;

impl Setup {
    /// Every setup, in declaration order (derived).
    pub const ALL: &'static [Setup] = <Setup as strum::VariantArray>::VARIANTS;

    /// The training mode underneath.
    pub fn mode(self) -> Mode {
        match self {
            Setup::Kd | Setup::Feat | Setup::Mi1 | Setup::Ta => Mode::Kd,
            Setup::Onestep => Mode::Onestep,
            Setup::Scratch => Mode::Scratch,
        }
    }

    /// The setup a resolved config trains with.
    pub fn of(cfg: &DistillConfig) -> Setup {
        match cfg.mode {
            Mode::Onestep => Setup::Onestep,
            Mode::Scratch => Setup::Scratch,
            Mode::Kd if cfg.ta_train_flops.is_some() => Setup::Ta,
            Mode::Kd if cfg.kd.feat == 0.0 => Setup::Kd,
            Mode::Kd => match cfg.kd.map {
                FeatMap::OneToOne => Setup::Feat,
                FeatMap::ManyToOne => Setup::Mi1,
            },
        }
    }

    /// Whether a run of this setup reads its teacher's outputs from the shared precomputed
    /// teacher-target cache (`kd::TeacherCache`, keyed by teacher, seed and batch), so runs that
    /// share a stream compute it once: output KD only. A feature loss needs the teacher's blocks
    /// live on every step, one-step distillation reads its sample bank, scratch has no teacher.
    /// `KdObjective::with_cache` applies the same rule to a config (`kd` mode, `kd.feat == 0`).
    pub fn reads_teacher_cache(self) -> bool {
        match self {
            Setup::Kd | Setup::Ta => true,
            Setup::Feat | Setup::Mi1 | Setup::Onestep | Setup::Scratch => false,
        }
    }

    /// Whether the setup has a feature-KD term, the one that reads `kd.feat` (`apply` sets it
    /// to 0 for every other setup).
    pub fn feature_kd(self) -> bool {
        match self {
            Setup::Feat | Setup::Mi1 => true,
            Setup::Kd | Setup::Ta | Setup::Onestep | Setup::Scratch => false,
        }
    }

    /// Set `cfg`'s mode and KD loss for this setup. `ta` needs the teacher to be a distilled
    /// student (see [`assistant_train_flops`]); every other setup needs it not to be one, so an
    /// assistant's cost is never dropped silently.
    pub fn apply(self, cfg: &mut DistillConfig) -> Result<()> {
        self.configure(cfg);
        let assistant = match (self.mode(), &cfg.teacher) {
            (Mode::Kd | Mode::Onestep, Some(t)) => assistant_train_flops(t)?,
            (Mode::Kd | Mode::Onestep, None) | (Mode::Scratch, _) => None,
        };
        cfg.ta_train_flops = match (self, assistant) {
            (Setup::Ta, Some(f)) => Some(f),
            (Setup::Ta, None) => bail!(
                "teacher: setup `ta` needs a teaching assistant: a distilled student's run directory (its config.yaml has a `mode`), not {}",
                cfg.teacher
                    .as_ref()
                    .map_or("none".into(), |t| t.display().to_string())
            ),
            (
                Setup::Kd | Setup::Feat | Setup::Mi1 | Setup::Onestep | Setup::Scratch,
                Some(_),
            ) => bail!(
                "teacher: {} is itself a distilled student (a teaching assistant): use setup `ta` so its training is counted in this student's compute",
                cfg.teacher.as_ref().map_or(String::new(), |t| t.display().to_string())
            ),
            (Setup::Kd | Setup::Feat | Setup::Mi1 | Setup::Onestep | Setup::Scratch, None) => None,
        };
        Ok(())
    }

    /// `ta` from an assistant that is planned but not trained yet (a sweep's `distill.ta`, trained
    /// before its students): `teacher` is where it will be, `assistant_flops` its training FLOPs
    /// as planned. The sweep checks the finished assistant's summary against them before any
    /// student reads it.
    pub fn apply_planned_assistant(
        cfg: &mut DistillConfig,
        teacher: PathBuf,
        assistant_flops: f64,
    ) {
        Setup::Ta.configure(cfg);
        cfg.teacher = Some(teacher);
        cfg.ta_train_flops = Some(assistant_flops);
    }

    /// The setup's mode and KD loss terms.
    fn configure(self, cfg: &mut DistillConfig) {
        cfg.mode = self.mode();
        let feat = |w: &KdWeights| {
            if w.feat > 0.0 {
                w.feat
            } else {
                DEFAULT_FEAT_WEIGHT
            }
        };
        match self {
            Setup::Kd | Setup::Ta => {
                cfg.kd.feat = 0.0;
                cfg.kd.map = FeatMap::OneToOne;
            }
            Setup::Feat => {
                cfg.kd.feat = feat(&cfg.kd);
                cfg.kd.map = FeatMap::OneToOne;
            }
            Setup::Mi1 => {
                cfg.kd.feat = feat(&cfg.kd);
                cfg.kd.map = FeatMap::ManyToOne;
            }
            Setup::Onestep | Setup::Scratch => {}
        }
    }
}

impl std::str::FromStr for Setup {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        crate::names::parse(Setup::ALL, s, "setup")
    }
}

impl std::fmt::Display for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Setup::Kd => "kd",
            Setup::Feat => "feat",
            Setup::Mi1 => "mi1",
            Setup::Ta => "ta",
            Setup::Onestep => "onestep",
            Setup::Scratch => "scratch",
        })
    }
}

/// Training FLOPs it took to make the teacher at `path` when it is a distilled student (a teaching
/// assistant): its own training at its step count, its teacher's forwards (and that teacher's own
/// assistant cost, for a longer chain) included. `None` for a teacher trained on data (its
/// `config.yaml` is a teacher's training config) or a bare weights file. Errors when the assistant
/// has not finished: a student must never learn from a half-trained assistant.
pub fn assistant_train_flops(path: &Path) -> Result<Option<f64>> {
    let path = &crate::paths::resolve(path);
    let file = path.join("config.yaml");
    if !path.is_dir() || !file.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?;
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("{}", file.display()))?;
    if value.get("mode").is_none() {
        return Ok(None);
    }
    let cfg: DistillConfig =
        serde_yaml_ng::from_value(value).with_context(|| format!("{}", file.display()))?;
    let done = crate::run::completed(path, &cfg)
        .filter(|s| s.status == crate::run::RunStatus::Ok)
        .with_context(|| {
        format!(
            "teacher: the teaching assistant in {} has not finished (no successful summary.json for its config)",
            path.display()
        )
    })?;
    if done.train_flops.is_finite() && done.train_flops > 0.0 {
        // Its own train_flops already includes its teacher's forwards and any assistant above it.
        Ok(Some(done.train_flops))
    } else {
        bail!(
            "{}: the teaching assistant's summary has no training FLOPs",
            path.join("summary.json").display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_modes_keep_their_names() {
        for &s in Setup::ALL {
            assert_eq!(s.to_string().parse::<Setup>().unwrap(), s);
            // serde (law.json, summary.json, specs) writes the same name.
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        for &m in Mode::ALL {
            assert_eq!(m.to_string().parse::<Mode>().unwrap(), m);
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{m}\""));
            // `--setup kd|onestep|scratch` means what `--mode` did.
            let s: Setup = m.to_string().parse().unwrap();
            assert_eq!(s.mode(), m);
        }
        assert!("magic".parse::<Setup>().unwrap_err().contains("magic"));
        // The lists in the errors are the variants', in order (the CLI and the bad-input cases
        // show them).
        assert_eq!(
            "magic".parse::<Setup>().unwrap_err(),
            "unknown setup `magic` (kd, feat, mi1, ta, onestep, scratch)"
        );
        assert_eq!(
            "magic".parse::<Mode>().unwrap_err(),
            "unknown mode `magic` (kd, onestep, scratch)"
        );
    }

    #[test]
    fn the_teacher_cache_rule_matches_the_objective() {
        // `KdObjective::with_cache` shares teacher outputs for kd-mode configs without a feature
        // term; `reads_teacher_cache` must say the same of every setup's resolved config.
        let student = dit::DitConfig::default();
        for &s in Setup::ALL.iter().filter(|&&s| s != Setup::Ta) {
            let mut c =
                DistillConfig::new(Some("no-such-dir".into()), Mode::Kd, student.clone(), 10);
            s.apply(&mut c).unwrap();
            assert_eq!(
                s.reads_teacher_cache(),
                c.mode == Mode::Kd && c.kd.feat == 0.0,
                "{s}"
            );
        }
        // `ta` (its teacher must be a finished assistant): output KD, no feature term.
        assert!(Setup::Ta.reads_teacher_cache());
        assert_eq!(Setup::Ta.mode(), Mode::Kd);
    }

    #[test]
    fn apply_then_of_is_the_identity() {
        let student = dit::DitConfig::default();
        // Every setup but `ta` (its teacher must be a finished assistant: below).
        for &s in Setup::ALL.iter().filter(|&&s| s != Setup::Ta) {
            let mut c =
                DistillConfig::new(Some("no-such-dir".into()), Mode::Kd, student.clone(), 10);
            s.apply(&mut c).unwrap();
            assert_eq!(Setup::of(&c), s);
            assert_eq!(s.feature_kd(), c.kd.feat > 0.0, "{s}");
            c.validate().unwrap();
        }
        let mut c = DistillConfig::new(Some("no-such-dir".into()), Mode::Kd, student, 10);
        let e = Setup::Ta.apply(&mut c).unwrap_err().to_string();
        assert!(
            e.starts_with("teacher:") && e.contains("teaching assistant"),
            "{e}"
        );
    }
}
