//! `ditkd info`: size and cost of a DiT shape.

use std::path::Path;

use anyhow::{bail, Context, Result};
use dit::DitConfig;

/// Parse `depth=4,width=96,heads=4[,patch=4][,mlp_ratio=4]` on top of the default config.
pub fn parse_shape(spec: &str, base: &DitConfig) -> Result<DitConfig> {
    let mut c = base.clone();
    for kv in spec.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("`{kv}`: expected key=value"))?;
        let parse = |v: &str| {
            v.trim()
                .parse::<usize>()
                .with_context(|| format!("`{k}`: `{v}` is not a positive integer"))
        };
        match k.trim() {
            "depth" | "d" => c.depth = parse(v)?,
            "width" | "w" | "hidden_size" => c.hidden_size = parse(v)?,
            "heads" | "h" | "num_heads" => c.num_heads = parse(v)?,
            "patch" | "p" | "patch_size" => c.patch_size = parse(v)?,
            "mlp_ratio" => {
                c.mlp_ratio = v
                    .trim()
                    .parse()
                    .with_context(|| format!("mlp_ratio: `{v}` is not a number"))?
            }
            other => bail!("unknown shape key `{other}` (depth, width, heads, patch, mlp_ratio)"),
        }
    }
    c.validate()?;
    Ok(c)
}

/// A preset name, a config file, a run directory or a shape string.
pub fn resolve_model(spec: &str) -> Result<DitConfig> {
    if spec.starts_with("DiT-") {
        return Ok(DitConfig::preset(spec)?);
    }
    let p = distill::paths::resolve(Path::new(spec));
    if p.is_dir() {
        let (cfg, _) = distill::checkpoint::locate_model(&p)?;
        return distill::checkpoint::read_dit_config(&cfg);
    }
    if p.is_file() {
        let text = std::fs::read_to_string(&p)?;
        // A bare DiT config (JSON or YAML), or a training config whose `model` is one.
        let cfg = match serde_yaml_ng::from_str::<DitConfig>(&text) {
            Ok(c) => c,
            Err(bare) => match serde_yaml_ng::from_str::<distill::train::TrainConfig>(&text) {
                Ok(t) => t.model,
                Err(_) => bail!("{}: {bare}", p.display()),
            },
        };
        cfg.validate().with_context(|| format!("{}", p.display()))?;
        return Ok(cfg);
    }
    if spec.contains('=') {
        return parse_shape(spec, &DitConfig::default());
    }
    bail!("`{spec}`: not a preset (DiT-XL/2), a config file, a run directory or a shape (depth=4,width=96,heads=4)")
}

pub fn run(spec: &str) -> Result<()> {
    let c = resolve_model(spec)?;
    println!("shape        {}", c.shape_label());
    println!(
        "input        {}x{}x{}  patch {}  classes {}",
        c.in_channels, c.input_size, c.input_size, c.patch_size, c.num_classes
    );
    println!(
        "params       {} trainable ({} with the fixed pos_embed)",
        crate::fmt::grouped(c.num_params() as i64),
        crate::fmt::grouped(c.num_params_with_pos_embed() as i64)
    );
    println!(
        "GFLOPs       {:.4} per forward per image (2 x {:.4} G multiply-accumulates)",
        c.forward_gflops(),
        c.forward_macs() as f64 / 1e9
    );
    println!("tokens       {}", c.num_tokens());
    println!(
        "head dim     {} ({} heads x {})",
        c.head_dim(),
        c.num_heads,
        c.head_dim()
    );
    println!("mlp hidden   {}", c.mlp_hidden());
    Ok(())
}
