//! How a sweep spends its steps: the full grid, or a race (successive halving with replicates).

use serde::{Deserialize, Serialize};

/// `schedule:` in a sweep spec.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Schedule {
    /// Every planned run (shapes x seeds x modes) trains to `distill.steps`.
    #[default]
    Grid,
    /// A race per budget: every shape starts at `min_steps` with `initial_seeds` seeds; at each
    /// rung the shapes that are clearly worse stop, the rest continue from their checkpoints with
    /// `eta` times the steps, up to `distill.steps`; there, seeds are added to the contenders until
    /// one has P(best) >= `target`, the rest are tied within the evaluation noise, or the spec's
    /// `seeds` run out. Races the first of `distill.modes`; the other modes train at each budget's
    /// final contenders.
    Halving(Halving),
}

impl Schedule {
    pub fn halving(&self) -> Option<&Halving> {
        match self {
            Schedule::Grid => None,
            Schedule::Halving(h) => Some(h),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Halving {
    /// Steps of the first rung.
    pub min_steps: usize,
    /// Steps grow by this factor from rung to rung; each rung keeps the best 1/eta of the shapes
    /// (at least `min_contenders`) and every shape whose P(best) is at least `keep_p`.
    #[serde(default = "d_eta")]
    pub eta: usize,
    /// Seeds every shape starts with: the first this many of the spec's `seeds`.
    #[serde(default = "d_one")]
    pub initial_seeds: usize,
    /// Seeds the last rung's plausible shapes have at least before the race may end (so the final
    /// shapes' comparisons, KD vs scratch included, rest on replicates).
    #[serde(default = "d_one")]
    pub final_seeds: usize,
    /// Shapes per budget that reach the last rung at least (so the last two rungs' rankings can
    /// be compared).
    #[serde(default = "d_two")]
    pub min_contenders: usize,
    /// A shape stays in the race while its P(best) is at least this.
    #[serde(default = "d_keep")]
    pub keep_p: f64,
    /// The race is decided when one shape's P(best) reaches this.
    #[serde(default = "d_target")]
    pub target: f64,
    /// Seed-to-seed standard deviation of ln(metric) assumed before replicates measure it
    /// (0.084 in the first Fashion-MNIST study); replicates pull the estimate to the data.
    #[serde(default = "d_prior")]
    pub prior_seed_noise: f64,
}

fn d_eta() -> usize {
    2
}
fn d_one() -> usize {
    1
}
fn d_two() -> usize {
    2
}
fn d_keep() -> f64 {
    0.05
}
fn d_target() -> f64 {
    0.9
}
/// The seed noise in ln(FID-proxy) assumed before replicates: the first Fashion-MNIST study's.
pub const DEFAULT_PRIOR_SEED_NOISE: f64 = 0.084;

fn d_prior() -> f64 {
    DEFAULT_PRIOR_SEED_NOISE
}

impl Default for Halving {
    fn default() -> Self {
        Self {
            min_steps: 250,
            eta: d_eta(),
            initial_seeds: d_one(),
            final_seeds: d_one(),
            min_contenders: d_two(),
            keep_p: d_keep(),
            target: d_target(),
            prior_seed_noise: d_prior(),
        }
    }
}

impl Halving {
    /// Step count of every rung: `min_steps`, times `eta` each rung, the last one `max_steps`.
    pub fn rungs(&self, max_steps: usize) -> Vec<usize> {
        let mut r = vec![self.min_steps.min(max_steps)];
        while let Some(&s) = r.last().filter(|&&s| s < max_steps) {
            r.push((s * self.eta).min(max_steps));
        }
        r
    }

    /// Errors name the field below `schedule.`.
    pub fn validate(&self, max_steps: usize, seeds: usize) -> Result<(), (&'static str, String)> {
        if !(1..=max_steps).contains(&self.min_steps) {
            return Err((
                "min_steps",
                format!(
                    "must lie in 1..=distill.steps ({max_steps}) (got {})",
                    self.min_steps
                ),
            ));
        }
        if !(2..=16).contains(&self.eta) {
            return Err(("eta", format!("must lie in 2..=16 (got {})", self.eta)));
        }
        if !(1..=seeds).contains(&self.initial_seeds) {
            return Err((
                "initial_seeds",
                format!(
                    "must lie in 1..=the {seeds} seeds of `seeds` (got {})",
                    self.initial_seeds
                ),
            ));
        }
        if !(1..=seeds).contains(&self.final_seeds) {
            return Err((
                "final_seeds",
                format!(
                    "must lie in 1..=the {seeds} seeds of `seeds` (got {})",
                    self.final_seeds
                ),
            ));
        }
        if self.min_contenders < 1 {
            return Err(("min_contenders", "must be at least 1".into()));
        }
        let p = |v: f64| v.is_finite() && v > 0.0 && v < 1.0;
        if !p(self.keep_p) {
            return Err((
                "keep_p",
                format!("must lie in (0, 1) (got {})", self.keep_p),
            ));
        }
        if !p(self.target) || self.target <= self.keep_p {
            return Err((
                "target",
                format!(
                    "must lie in (keep_p, 1) (got {}, keep_p {})",
                    self.target, self.keep_p
                ),
            ));
        }
        if !(self.prior_seed_noise.is_finite() && self.prior_seed_noise > 0.0) {
            return Err((
                "prior_seed_noise",
                format!(
                    "must be a finite number > 0 (got {})",
                    self.prior_seed_noise
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rungs_grow_by_eta_and_end_at_the_step_cap() {
        let h = Halving {
            min_steps: 250,
            ..Default::default()
        };
        assert_eq!(h.rungs(4000), vec![250, 500, 1000, 2000, 4000]);
        assert_eq!(h.rungs(3000), vec![250, 500, 1000, 2000, 3000]);
        assert_eq!(h.rungs(250), vec![250]);
    }
}
