//! The float types the fused kernels run in (f32, f64) and the row primitives they share: a
//! vectorising `exp`, and sums and maxima in eight interleaved lanes.

/// f32 or f64, as the fused kernels compute in.
pub(crate) trait Float: candle_core::WithDType + num_traits::Float + Send + Sync {
    /// e^x for the hot loops (softmax, GELU): inlined and branch-free in f32, so the loops
    /// vectorise (libm's `expf` is a call per element and was ~5% of the training step).
    fn exp_fast(self) -> Self;
    /// `v` rounded to this type (an `as` cast: exact in f64, nearest in f32).
    fn of_f64(v: f64) -> Self;
}

impl Float for f32 {
    #[inline(always)]
    fn exp_fast(self) -> Self {
        exp_f32(self)
    }
    #[inline(always)]
    fn of_f64(v: f64) -> Self {
        v as f32
    }
}

impl Float for f64 {
    #[inline(always)]
    fn exp_fast(self) -> Self {
        self.exp()
    }
    #[inline(always)]
    fn of_f64(v: f64) -> Self {
        v
    }
}

/// `v` in the float type `T`.
#[inline(always)]
pub(crate) fn cast<T: Float>(v: f64) -> T {
    T::of_f64(v)
}

/// e^x in f32 to about 1 ulp (Cephes `expf`): x = k ln2 + r with |r| <= ln2 / 2, a degree-7
/// polynomial for e^r, and 2^k built in the exponent bits. Saturates to ~1e-38 and ~2e38 at the
/// ends; NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.clamp(-87.3, 88.3); // NaN stays NaN
    let t = x * LOG2E + MAGIC;
    let k = t - MAGIC; // round(x / ln 2)
    let ki = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = x - k * 0.693_359_4 - k * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    er * f32::from_bits(((ki + 127) as u32) << 23)
}

/// `f(0) + f(1) + ... + f(n - 1)` in eight interleaved partial sums: a plain fold over a row is
/// one long dependency chain of float adds (4 cycles each, no SIMD since the order is fixed), which
/// made softmax and layer-norm rows latency-bound. The order is still fixed, so results are
/// deterministic.
#[inline(always)]
pub(crate) fn sum8<T: Float>(n: usize, f: impl Fn(usize) -> T) -> T {
    let mut acc = [T::zero(); 8];
    let full = n / 8 * 8;
    let mut i = 0;
    while i < full {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(i + l);
        }
        i += 8;
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for j in full..n {
        s += f(j);
    }
    s
}

/// The largest element of a row, in eight interleaved lanes (see `sum8`).
#[inline(always)]
pub(crate) fn max8<T: Float>(x: &[T]) -> T {
    let mut acc = [T::neg_infinity(); 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = num_traits::Float::max(*a, v);
        }
    }
    let m = acc
        .iter()
        .fold(T::neg_infinity(), |a, &b| num_traits::Float::max(a, b));
    chunks
        .remainder()
        .iter()
        .fold(m, |a, &b| num_traits::Float::max(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_is_accurate_over_the_whole_range() {
        let mut worst: f64 = 0.0;
        for i in 0..=400_000 {
            let x = -87.0 + 175.0 * i as f64 / 400_000.0;
            let got = exp_f32(x as f32) as f64;
            let want = (x as f32 as f64).exp();
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 3e-7, "relative error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1000.0) < 1e-37 && exp_f32(-1000.0) >= 0.0);
        assert!(exp_f32(1000.0) > 1e38 && exp_f32(1000.0).is_finite());
        assert!(exp_f32(f32::NAN).is_nan());
    }
}
