//! Image grids as PNG, and a model's seeded sample grid.

use std::path::Path;

use anyhow::Result;
use candle_core::Tensor;
use dit::{DiT, SamplerConfig};

/// Write `[N, C, H, W]` images in [-1, 1] as a grid with `cols` columns, each pixel upscaled by
/// `scale`, 2-pixel gutters. One channel is grey, three are RGB.
pub fn save_grid(images: &Tensor, cols: usize, scale: usize, path: &Path) -> Result<()> {
    let (n, c, h, w) = images.dims4()?;
    let data: Vec<f32> = images
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let rows = n.div_ceil(cols);
    let pad = 2;
    let (cw, ch) = (w * scale + pad, h * scale + pad);
    let (gw, gh) = (cols * cw + pad, rows * ch + pad);
    let mut img = image::RgbImage::from_pixel(gw as u32, gh as u32, image::Rgb([40, 40, 40]));
    for k in 0..n {
        let (gx, gy) = ((k % cols) * cw + pad, (k / cols) * ch + pad);
        for y in 0..h * scale {
            for x in 0..w * scale {
                let px = |ch: usize| {
                    let v = data[((k * c + ch) * h + y / scale) * w + x / scale];
                    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
                };
                let rgb = if c >= 3 {
                    [px(0), px(1), px(2)]
                } else {
                    [px(0); 3]
                };
                img.put_pixel((gx + x) as u32, (gy + y) as u32, image::Rgb(rgb));
            }
        }
    }
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png)?;
    dit::io::write_atomic(path, buf.get_ref())
}

/// Draw `n` samples (labels cycling 0..num_classes) from `model` with a seeded RNG and save a grid.
pub fn sample_grid(
    model: &DiT,
    sampler: &SamplerConfig,
    n: usize,
    seed: u64,
    path: &Path,
) -> Result<Tensor> {
    let mut rng = dit::rng::seeded(seed);
    let c = &model.cfg;
    let labels: Vec<u32> = (0..n).map(|i| (i % c.num_classes) as u32).collect();
    let noise = dit::rng::randn(
        &mut rng,
        &[n, c.in_channels, c.input_size, c.input_size],
        model.device(),
    )?;
    let x = dit::sampler::sample(
        model,
        &dit::NoiseSchedule::dit_default(),
        &noise,
        &labels,
        sampler,
        &mut rng,
    )?;
    let cols = if n.is_multiple_of(c.num_classes) && n >= c.num_classes {
        c.num_classes
    } else {
        (n as f64).sqrt().ceil() as usize
    };
    crate::grid::save_grid(&x, cols, 2, path)?;
    Ok(x)
}
