//! The one place the compute device is chosen: `--device cpu` (the default) or `--device cuda:N`
//! (only in a build with `--features cuda`). Every command takes its device from here.

use std::sync::OnceLock;

use anyhow::{bail, Result};
use candle_core::Device;

static DEVICE: OnceLock<Device> = OnceLock::new();

/// Parse `cpu` or `cuda:N`.
pub fn parse(s: &str) -> Result<Device> {
    match s.trim() {
        "cpu" => Ok(Device::Cpu),
        other => match other
            .strip_prefix("cuda:")
            .or((other == "cuda").then_some("0"))
        {
            Some(n) => {
                let n: usize = n
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--device `{other}`: expected cpu or cuda:N"))?;
                cuda(n)
            }
            None => bail!(
                "--device `{}`: expected cpu or cuda:N",
                crate::fmt::clip(other, 40)
            ),
        },
    }
}

#[cfg(feature = "cuda")]
fn cuda(n: usize) -> Result<Device> {
    Ok(Device::new_cuda(n)?)
}

#[cfg(not(feature = "cuda"))]
fn cuda(n: usize) -> Result<Device> {
    bail!("--device cuda:{n}: this ditkd was built without CUDA (cargo build --release --features cuda)")
}

/// Set the process's device (once, before any command runs).
pub fn select(s: &str) -> Result<()> {
    let d = parse(s)?;
    let _ = DEVICE.set(d);
    Ok(())
}

/// The process's device (CPU unless `select` chose another).
pub fn get() -> Device {
    DEVICE.get().cloned().unwrap_or(Device::Cpu)
}
