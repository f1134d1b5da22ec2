//! The order of training examples: a pure function of the seed and the step, so an exact resume
//! needs no state.

/// The deterministic order of training examples: epoch `e` is a permutation drawn from
/// `seed` and `e`, so batch `s` is a function of the step alone (exact resume needs no state).
pub struct DataOrder {
    seed: u64,
    n: usize,
    epoch: usize,
    perm: Vec<usize>,
}

impl DataOrder {
    pub fn new(seed: u64, n: usize) -> Self {
        let mut o = Self {
            seed,
            n,
            epoch: usize::MAX,
            perm: Vec::new(),
        };
        o.load_epoch(0);
        o
    }

    fn load_epoch(&mut self, e: usize) {
        use rand::seq::SliceRandom;
        let mut rng = dit::rng::seeded(
            self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (e as u64).wrapping_add(0xD1B5),
        );
        self.perm = (0..self.n).collect();
        self.perm.shuffle(&mut rng);
        self.epoch = e;
    }

    /// Indices of batch `step` of size `b`.
    pub fn batch(&mut self, step: usize, b: usize) -> Vec<usize> {
        (0..b)
            .map(|j| {
                let k = step * b + j;
                let e = k / self.n;
                if e != self.epoch {
                    self.load_epoch(e);
                }
                self.perm[k % self.n]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_epoch_is_a_permutation_and_batches_depend_only_on_the_step() {
        let n = 10;
        let mut a = DataOrder::new(3, n);
        let first: Vec<usize> = (0..5).flat_map(|s| a.batch(s, 2)).collect();
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..n).collect::<Vec<_>>(),
            "epoch 0 is a permutation"
        );
        // A fresh order asked for step 7 first (as after a resume) gives the same batch.
        let mut b = DataOrder::new(3, n);
        assert_eq!(b.batch(7, 2), a.batch(7, 2));
        assert_ne!(
            DataOrder::new(4, n).batch(0, n),
            DataOrder::new(3, n).batch(0, n)
        );
    }
}
