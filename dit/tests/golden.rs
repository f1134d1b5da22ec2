//! The DiT forward pass and parameter counts against golden vectors computed outside the project
//! with the reference implementation's semantics (see tests/fixtures/README.md for what each file holds and how it was made).

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use dit::{DiT, DitConfig};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn check_case(name: &str) {
    let cfg: DitConfig = serde_json::from_str(
        &std::fs::read_to_string(fixture(&format!("{name}.config.json"))).unwrap(),
    )
    .unwrap();
    let dev = Device::Cpu;
    let weights = fixture(&format!("{name}.weights.safetensors"));
    let model = DiT::load(&cfg, &weights, DType::F32, &dev).unwrap();
    let io =
        candle_core::safetensors::load(fixture(&format!("{name}.io.safetensors")), &dev).unwrap();
    let x = io["x"].to_dtype(DType::F32).unwrap();
    let t: Vec<f32> = io["t"]
        .to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&v| v as f32)
        .collect();
    let y: Vec<u32> = io["y"]
        .to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&v| v as u32)
        .collect();
    assert_eq!(
        y[2] as usize, cfg.num_classes,
        "third label is the null class"
    );
    let out = model.forward(&x, &t, &y).unwrap();
    assert_eq!(out.dims(), io["out"].dims());
    let d = max_abs_diff(&out, &io["out"].to_dtype(DType::F32).unwrap());
    assert!(d < 1e-4, "{name}: max |out - golden| = {d}");

    // The fixed 2D sin-cos position embedding equals the reference's buffer.
    let w = candle_core::safetensors::load(&weights, &dev).unwrap();
    let pos = dit::model::pos_embed_2d(cfg.hidden_size, cfg.grid_size());
    let pos = Tensor::from_vec(pos, (1, cfg.num_tokens(), cfg.hidden_size), &dev).unwrap();
    let d = max_abs_diff(&pos, &w["pos_embed"].to_dtype(DType::F32).unwrap());
    assert!(d < 1e-6, "{name}: pos_embed differs by {d}");

    // Every variable of the model exists in the reference checkpoint under the same name.
    assert_eq!(
        model.named_tensors().len() + 1,
        w.len(),
        "{name}: tensor count"
    );
    assert_eq!(model.num_vars_params(), cfg.num_params());
}

#[test]
fn tiny_mnist_forward_matches_golden() {
    check_case("tiny_mnist");
}

#[test]
fn latent_sigma_forward_matches_golden() {
    check_case("latent_sigma");
}

#[test]
fn preset_parameter_counts_match_reference() {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("param_counts.json")).unwrap())
            .unwrap();
    let counts = v["counts"].as_object().unwrap();
    assert_eq!(counts.len(), 12);
    for (name, c) in counts {
        let cfg = DitConfig::preset(name).unwrap();
        assert_eq!(
            cfg.num_params() as u64,
            c["trainable"].as_u64().unwrap(),
            "{name} trainable"
        );
        assert_eq!(
            cfg.num_params_with_pos_embed() as u64,
            c["with_frozen_pos_embed"].as_u64().unwrap(),
            "{name} with pos_embed"
        );
    }
}

#[test]
fn analytic_count_equals_built_variables() {
    let dev = Device::Cpu;
    for cfg in [
        DitConfig::default(),
        DitConfig {
            depth: 3,
            hidden_size: 96,
            num_heads: 6,
            patch_size: 2,
            learn_sigma: true,
            ..Default::default()
        },
        DitConfig {
            class_dropout_prob: 0.0,
            mlp_ratio: 2.5,
            ..Default::default()
        },
        DitConfig::preset("DiT-S/8").unwrap(),
    ] {
        let m = DiT::new(&cfg, 0, DType::F32, &dev).unwrap();
        assert_eq!(m.num_vars_params(), cfg.num_params(), "{cfg:?}");
    }
}

#[test]
fn fresh_model_predicts_zero_and_is_seeded() {
    // adaLN-Zero: the final layer starts at zero, so the untrained model outputs 0.
    let dev = Device::Cpu;
    let cfg = DitConfig {
        depth: 2,
        hidden_size: 32,
        num_heads: 2,
        ..Default::default()
    };
    let m = DiT::new(&cfg, 7, DType::F32, &dev).unwrap();
    let x = Tensor::ones((2, 1, 28, 28), DType::F32, &dev).unwrap();
    let out = m.forward(&x, &[10.0, 500.0], &[1, 10]).unwrap();
    assert_eq!(out.dims(), &[2, 1, 28, 28]);
    assert_eq!(
        out.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
    // Same seed, same weights; another seed, other weights.
    let a = m.named_tensors()["blocks.0.attn.qkv.weight"].clone();
    let b = DiT::new(&cfg, 7, DType::F32, &dev).unwrap().named_tensors()
        ["blocks.0.attn.qkv.weight"]
        .clone();
    let c = DiT::new(&cfg, 8, DType::F32, &dev).unwrap().named_tensors()
        ["blocks.0.attn.qkv.weight"]
        .clone();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    assert!(max_abs_diff(&a, &c) > 0.0);
}

#[test]
fn corrupt_or_mismatched_checkpoints_are_clear_errors() {
    let dev = Device::Cpu;
    let dir = std::env::temp_dir().join(format!("dit-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.safetensors");
    std::fs::write(&bad, b"not a safetensors file").unwrap();
    let cfg: DitConfig =
        serde_json::from_str(&std::fs::read_to_string(fixture("tiny_mnist.config.json")).unwrap())
            .unwrap();
    let e = DiT::load(&cfg, &bad, DType::F32, &dev)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("bad.safetensors"), "{e}");
    // Right file, wrong shape.
    let wider = DitConfig {
        hidden_size: 128,
        ..cfg.clone()
    };
    let e = format!(
        "{:#}",
        DiT::load(
            &wider,
            &fixture("tiny_mnist.weights.safetensors"),
            DType::F32,
            &dev
        )
        .err()
        .unwrap()
    );
    assert!(
        e.contains("shape") && e.contains("tiny_mnist.weights"),
        "{e}"
    );
}
