//! Where a law's floor `E` comes from (`ditkd fit --floor`): the value no shape can go below.
//!
//! * `data` (the default): the real-data floor of `reference.json` (real images scored as if
//!   generated), when the sweep measured one; otherwise laws (a)–(c) fit E and (d)–(f) hold it at 0.
//! * `teacher`: the teacher's value in `reference.json`. A distilled student learns the teacher's
//!   distribution, so the teacher, not the data, is what it approaches as it grows; fixing E there
//!   says "the gap to the teacher shrinks as a power of the shape".
//! * `free`: every law fits E (dropped to 0 when the fit puts it at its bound).
//! * `zero`: no floor (E = 0), a pure power law in the shape;
//! * `auto`: each of `data`, `teacher` and `free` in turn (those the sweep can give), keeping the
//!   fit whose chosen law has the lowest leave-one-budget-out error (errors within 2 % of the
//!   lowest are a tie, won in that order). With `--hold-out B` the choice never sees budget B.
//!
//! The choice is one setting of the fit, recorded in `law.json` (`floor.kind`); a study picks it
//! by the laws' leave-one-budget-out errors, never by the held-out budget.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{FloorRef, Form};

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
pub enum FloorChoice {
    #[default]
    Data,
    Teacher,
    Free,
    Zero,
    Auto,
}

impl FloorChoice {
    /// What `auto` tries, in its tie-break order.
    pub const AUTO: [FloorChoice; 3] = [FloorChoice::Data, FloorChoice::Teacher, FloorChoice::Free];

    pub const ALL: &'static [FloorChoice] = <FloorChoice as strum::VariantArray>::VARIANTS;

    pub fn name(self) -> &'static str {
        match self {
            FloorChoice::Data => "data",
            FloorChoice::Teacher => "teacher",
            FloorChoice::Free => "free",
            FloorChoice::Zero => "zero",
            FloorChoice::Auto => "auto",
        }
    }
}

impl std::fmt::Display for FloorChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `--floor teacher`; "unknown floor `x` (data, teacher, free, zero)" otherwise.
impl std::str::FromStr for FloorChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        distill::names::parse(FloorChoice::ALL, s, "floor")
    }
}

/// Why the floor E was held fixed (or not) for one law.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fixed {
    /// The floor E at the measured real-data floor (`reference.json`).
    MeasuredFloor,
    /// The floor E at the teacher's measured value (`reference.json`, `--floor teacher`).
    TeacherFloor,
    /// The floor E dropped (0): fitted freely it sat at its bound, so the data cannot identify it.
    NotIdentified,
    /// The floor E at 0: no measured floor, and this law does not fit one (see `Form::floor_free`).
    NoFloor,
    /// The floor E at 0 because the fit was asked for none (`--floor zero`).
    ZeroChosen,
}

impl Fixed {
    pub fn describe(self) -> &'static str {
        match self {
            Fixed::MeasuredFloor => "fixed at the measured real-data floor (reference.json)",
            Fixed::TeacherFloor => "fixed at the teacher's measured value (reference.json)",
            Fixed::NotIdentified => {
                "dropped (fixed at 0): fitted freely it sat at its bound 0, not identified"
            }
            Fixed::NoFloor => {
                "fixed at 0: no measured floor (reference.json), and this law does not fit one"
            }
            Fixed::ZeroChosen => "fixed at 0 (--floor zero)",
        }
    }
}

/// The measured value E is pinned at for `choice`, if any: the real-data floor or the teacher's
/// value of `metric` in `dir/reference.json`. `Err` when `--floor teacher` was asked for and
/// the reference has no teacher value of the metric (the user asked for something not there).
pub fn measured(dir: &Path, metric: &str, choice: FloorChoice) -> Result<Option<FloorRef>, String> {
    let file = dir.join(distill::reference::FILE);
    let r = distill::reference::Reference::load(dir);
    let col = distill::column::column(metric);
    match choice {
        FloorChoice::Free | FloorChoice::Zero | FloorChoice::Auto => Ok(None),
        FloorChoice::Data => Ok((|| {
            let r = r?;
            let m = (col?.floor)(&r.floor)?;
            (m.mean.is_finite() && m.mean > 0.0).then(|| FloorRef {
                value: m.mean,
                std: if m.std.is_finite() { m.std } else { 0.0 },
                source: format!(
                    "{} (real-data floor, {} draws of {} samples)",
                    file.display(),
                    r.floor.draws,
                    r.samples
                ),
                kind: FloorChoice::Data,
            })
        })()),
        FloorChoice::Teacher => {
            let r = r.ok_or_else(|| {
                format!(
                    "--floor teacher: {} is missing or unreadable (the sweep's reference holds the teacher's value)",
                    file.display()
                )
            })?;
            let t = r.teacher.as_ref().ok_or_else(|| {
                format!(
                    "--floor teacher: {} has no teacher row (a sweep without a teacher)",
                    file.display()
                )
            })?;
            let v = col
                .and_then(|c| (c.value)(&t.metrics))
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| {
                    format!(
                        "--floor teacher: {} has no teacher value of `{metric}`",
                        file.display()
                    )
                })?;
            // The evaluation noise (the teacher at two evaluation seeds) is known for the FID-proxy.
            let std = if metric == "fid_proxy" {
                t.eval_noise_fid_proxy.std
            } else {
                0.0
            };
            Ok(Some(FloorRef {
                value: v,
                std: if std.is_finite() { std } else { 0.0 },
                source: format!(
                    "{} (the teacher, d{}-w{}, at the evaluation seed)",
                    file.display(),
                    t.depth,
                    t.width
                ),
                kind: FloorChoice::Teacher,
            }))
        }
    }
}

/// How `form`'s floor starts the fit: pinned (with why) or free.
pub fn pin_for(
    form: Form,
    choice: FloorChoice,
    measured: Option<&FloorRef>,
) -> (Option<f64>, Option<Fixed>) {
    match (measured, choice) {
        (Some(f), _) => (
            Some(f.value),
            Some(match f.kind {
                FloorChoice::Teacher => Fixed::TeacherFloor,
                _ => Fixed::MeasuredFloor,
            }),
        ),
        (None, FloorChoice::Zero) => (Some(0.0), Some(Fixed::ZeroChosen)),
        (None, FloorChoice::Free) => (None, None),
        (None, _) if form.floor_free() => (None, None),
        (None, _) => (Some(0.0), Some(Fixed::NoFloor)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_named() {
        for &c in FloorChoice::ALL {
            assert_eq!(c.name().parse::<FloorChoice>(), Ok(c));
        }
        let e = "floorless".parse::<FloorChoice>().unwrap_err();
        assert!(e.contains("floorless") && e.contains("teacher"), "{e}");
    }

    #[test]
    fn a_measured_floor_pins_every_law_and_free_frees_every_law() {
        let f = FloorRef {
            value: 7.9,
            std: 0.1,
            source: "x".into(),
            kind: FloorChoice::Teacher,
        };
        for &form in Form::ALL {
            assert_eq!(
                pin_for(form, FloorChoice::Teacher, Some(&f)),
                (Some(7.9), Some(Fixed::TeacherFloor))
            );
            assert_eq!(pin_for(form, FloorChoice::Free, None), (None, None));
            assert_eq!(
                pin_for(form, FloorChoice::Zero, None),
                (Some(0.0), Some(Fixed::ZeroChosen))
            );
        }
        // Without a measured floor the default keeps each law's own rule.
        assert_eq!(pin_for(Form::A, FloorChoice::Data, None), (None, None));
        assert_eq!(
            pin_for(Form::D, FloorChoice::Data, None),
            (Some(0.0), Some(Fixed::NoFloor))
        );
    }
}
