//! Time the FID Inception's forward pass (ms per image) on the threads candle is given:
//!
//!     RAYON_NUM_THREADS=1 cargo run --release -p distill --example fid_bench [-- IMAGES [BATCH [REPEATS]]]
//!
//! Prints one line per repeat (after one warm-up) and the median and range, in wall-clock ms and
//! in CPU ms of this process (all its threads; from /proc/self/stat on Linux), which is less
//! sensitive to other load on the machine. Inputs are the first IMAGES Fashion-MNIST test images;
//! the resize is timed separately from the network.
//!
//! With `FD_SAMPLES=N` (e.g. 1000, `eval.samples`' default) it also times what an evaluation with
//! `eval.metrics: [fid_proxy, fid]` pays beyond the forwards: the FID and FID∞ (four Fréchet
//! distances of 40-100 % of N feature rows against 2048-d real statistics).

use std::time::Instant;

use anyhow::Context;
use distill::inception::stats::Stats;
use distill::inception::{pipeline, FidInception, FEATURES};

/// CPU time (user + system) of this process in ms, where /proc/self/stat is readable.
fn cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses): utime and stime are 12 and 13.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 10.0) // USER_HZ = 100 on Linux
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let n = args.next().transpose().context("IMAGES")?.unwrap_or(32);
    let batch = args.next().transpose().context("BATCH")?.unwrap_or(16);
    let repeats = args
        .next()
        .transpose()
        .context("REPEATS")?
        .unwrap_or(3)
        .max(1);
    let p = distill::paths::repo_root().join("data/fashion-mnist/t10k-images-idx3-ubyte.gz");
    let bytes = distill::data::read_maybe_gz(&p)?;
    let (count, r, c, px) = distill::data::parse_idx_images(&bytes, &p)?;
    anyhow::ensure!(count >= n, "{}: only {count} images", p.display());
    let px = &px[..n * r * c];
    let mut net = FidInception::load_default()?;
    net.batch = batch;
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    let t = Instant::now();
    let _ = pipeline::prepare_u8(px, n, 1, r, c)?;
    let prep_ms = t.elapsed().as_secs_f64() * 1e3 / n as f64;
    net.features_u8(&px[..batch.min(n) * r * c], batch.min(n), 1, r, c)?; // warm-up
    let (mut ms, mut cpus) = (Vec::new(), Vec::new());
    for i in 0..repeats {
        let (t, cpu0) = (Instant::now(), cpu_ms());
        net.features_u8(px, n, 1, r, c)?;
        let v = t.elapsed().as_secs_f64() * 1e3 / n as f64;
        let cpu = cpu_ms().zip(cpu0).map(|(b, a)| (b - a) / n as f64);
        let cpu_text = cpu
            .map(|c| format!(", {c:.0} CPU ms/image"))
            .unwrap_or_default();
        println!(
            "run {i}: {v:.1} ms/image{cpu_text} ({n} images, batch {batch}, threads {threads})"
        );
        ms.push(v);
        cpus.extend(cpu);
    }
    ms.sort_by(f64::total_cmp);
    cpus.sort_by(f64::total_cmp);
    if !cpus.is_empty() {
        println!(
            "CPU ms/image: median {:.0}, range {:.0}-{:.0}",
            cpus[cpus.len() / 2],
            cpus[0],
            cpus[cpus.len() - 1]
        );
    }
    println!(
        "threads {threads}, batch {batch}: median {:.1} ms/image, range {:.1}-{:.1} (resize alone {prep_ms:.2} ms/image)",
        ms[ms.len() / 2],
        ms[0],
        ms[ms.len() - 1]
    );
    if let Some(m) = std::env::var("FD_SAMPLES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        time_fd(m)?;
    }
    Ok(())
}

/// The FID and FID∞ of `m` feature rows against real statistics of 2 m rows (seeded values: the
/// cost does not depend on them).
fn time_fd(m: usize) -> anyhow::Result<()> {
    let rows = |n: usize, salt: u64| -> Vec<f32> {
        let mut state = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n * FEATURES)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect()
    };
    let real = Stats::from_features(&rows(2 * m, 1))?;
    let fake = rows(m, 2);
    let (t, cpu0) = (Instant::now(), cpu_ms());
    let fid = real.frechet_distance_to(&fake)?;
    let inf = distill::eval::extrapolate_inf(m, |k| {
        if k == m {
            Ok(fid)
        } else {
            real.frechet_distance_to(&fake[..k * FEATURES])
        }
    })?;
    let cpu = cpu_ms()
        .zip(cpu0)
        .map(|(b, a)| format!(", {:.0} CPU ms", b - a))
        .unwrap_or_default();
    println!(
        "FID + FID∞ of {m} feature rows: {:.0} ms{cpu} (values {fid:.2}, {:?})",
        t.elapsed().as_secs_f64() * 1e3,
        inf.map(|v| (v * 100.0).round() / 100.0)
    );
    Ok(())
}
