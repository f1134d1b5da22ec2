//! Guards against answers fitted to noise: no law for students that have not learned, and no
//! confident statement from a law whose coefficients the data do not pin down.

use distill::run::RunStatus;
use distill::setup::Setup;

use super::data::Table;
use super::LawFit;

/// Students at (or near) chance: fitting a design law to them describes the evaluation noise.
#[derive(Debug, thiserror::Error)]
#[error("students have not learned: no law. {reason}. Remedy: train longer (distill.steps), or with a larger batch or learning rate, until the best students clearly leave chance")]
pub struct NotLearned {
    pub reason: String,
}

/// Class accuracy below this multiple of chance is "not learned".
pub const MIN_ACCURACY_X_CHANCE: f64 = 2.0;
/// A best FID-proxy above the untrained student's divided by this is "not learned".
pub const MIN_FID_GAIN: f64 = 2.0;

/// Check the `mode` runs of `table` (ok rows): the best class accuracy must reach 2x chance, and
/// the best FID-proxy must be below half the untrained student's (when it is known).
pub fn check_learned(
    table: &Table,
    mode: Setup,
    num_classes: usize,
    untrained_fid: Option<f64>,
) -> Result<(), NotLearned> {
    let (Ok(status), Ok(modes)) = (
        table.parsed::<RunStatus>("status"),
        table.parsed::<Setup>("mode"),
    ) else {
        return Ok(());
    };
    let acc = table.f64s_opt("class_accuracy").unwrap_or_default();
    let fid = table.f64s_opt("fid_proxy").unwrap_or_default();
    let rows: Vec<usize> = (0..status.len())
        .filter(|&i| status[i] == Some(RunStatus::Ok) && modes[i] == Some(mode))
        .collect();
    let best_acc = rows
        .iter()
        .filter_map(|&i| acc.get(i).copied().flatten())
        .filter(|v| v.is_finite())
        .fold(f64::NAN, f64::max);
    let chance = 1.0 / num_classes.max(1) as f64;
    if best_acc.is_finite() && best_acc < MIN_ACCURACY_X_CHANCE * chance {
        return Err(NotLearned {
            reason: format!(
                "the best `{mode}` student classifies {:.1} % of its samples as the requested class, below {MIN_ACCURACY_X_CHANCE}x chance ({:.0} % of {num_classes} classes)",
                100.0 * best_acc,
                100.0 * MIN_ACCURACY_X_CHANCE * chance
            ),
        });
    }
    let best_fid = rows
        .iter()
        .filter_map(|&i| fid.get(i).copied().flatten())
        .filter(|v| v.is_finite())
        .fold(f64::NAN, f64::min);
    if let Some(u) = untrained_fid {
        if best_fid.is_finite() && best_fid > u / MIN_FID_GAIN {
            return Err(NotLearned {
                reason: format!("the best `{mode}` student's FID-proxy {best_fid:.1} is within {MIN_FID_GAIN}x of an untrained student's ({u:.1})"),
            });
        }
    }
    Ok(())
}

/// The coefficients of `law` its bootstrap does not pin down: a 90 % interval that changes sign
/// or spans more than 100x. An additive floor `E` whose whole interval lies below 1 % of the
/// smallest measured value is reported as negligible instead (it sits at its bound, 0). The
/// additive coefficients of the log-linear laws are exempt (see `Form::linear`).
pub fn unidentified(law: &LawFit, min_measured: f64) -> Vec<String> {
    let mut out = Vec::new();
    for (name, &[lo, hi]) in &law.intervals {
        if name == "E" && hi.abs() < 0.01 * min_measured {
            continue;
        }
        if law.form().linear(name) {
            continue;
        }
        let why = if lo < 0.0 && hi > 0.0 {
            Some("changes sign")
        } else if lo == 0.0 && hi == 0.0 {
            None
        } else if lo.abs().min(hi.abs()) == 0.0
            || hi.abs().max(lo.abs()) / lo.abs().min(hi.abs()) > 100.0
        {
            Some("spans more than 100x")
        } else {
            None
        };
        if let Some(w) = why {
            out.push(format!(
                "{name}: 90 % interval [{}, {}] {w}",
                crate::fmt::num(lo),
                crate::fmt::num(hi)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn law(intervals: &[(&str, [f64; 2])]) -> LawFit {
        LawFit {
            name: super::super::Form::B,
            formula: String::new(),
            coef: BTreeMap::new(),
            intervals: intervals.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            rss: 0.0,
            aic: 0.0,
            cv_lobo_rmse: None,
            cv_kfold_rmse: 0.0,
            k: 5,
            n: 10,
            fixed: BTreeMap::new(),
            cells: 10,
            lack_of_fit: None,
            compute: None,
        }
    }

    #[test]
    fn wide_or_sign_changing_intervals_are_not_identified() {
        let l = law(&[
            ("A", [17.4, 27.9]),
            ("B", [0.32, 1.3e96]),
            ("alpha", [-0.1, 0.2]),
            ("E", [0.0, 86.0]),
        ]);
        let u = unidentified(&l, 100.0);
        assert_eq!(u.len(), 3, "{u:?}");
        assert!(
            u.iter().any(|s| s.starts_with("B:"))
                && u.iter()
                    .any(|s| s.starts_with("alpha:") && s.contains("sign"))
        );
        // A floor pinned at its bound, far below every measurement, is negligible, not unidentified.
        let pinned = law(&[("A", [17.4, 27.9]), ("E", [0.0, 1.3e-7])]);
        assert!(unidentified(&pinned, 20.0).is_empty());
    }
}
