//! Exact resume: N steps in one go and N/2 + resume + N/2 give bit-identical weights, EMA and
//! optimiser state; a checkpoint of another config is refused; a diverging run stops with an error
//! and keeps its last checkpoint.

use candle_core::{DType, Device, Tensor};
use distill::data::{DataConfig, Split};
use distill::objective::EpsilonObjective;
use distill::optim::OptimConfig;
use distill::paths::RunPaths;
use distill::train::{train, TrainConfig, TrainOptions};
use dit::{DiT, DitConfig};

/// The tiny teacher with a warm-up, a seed of its own, and checkpoints and logs mid-run.
fn tiny_config() -> TrainConfig {
    TrainConfig {
        name: "resume-test".into(),
        optim: OptimConfig {
            lr: 1e-3,
            warmup_steps: 2,
            ..Default::default()
        },
        seed: 5,
        ema_decay: 0.99,
        checkpoint_every: 3,
        log_every: 2,
        ..distill::testkit::tiny_teacher_config(8)
    }
}

fn tensors(path: &std::path::Path) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn assert_same(a: &std::path::Path, b: &std::path::Path) {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(ta.len(), tb.len());
    for (k, va) in &ta {
        let va: Vec<f32> = va.flatten_all().unwrap().to_vec1().unwrap();
        let vb: Vec<f32> = tb[k].flatten_all().unwrap().to_vec1().unwrap();
        assert!(va == vb, "{}: `{k}` differs after resume", a.display());
    }
}

#[test]
fn split_run_equals_straight_run() {
    let data = DataConfig::default().load(Split::Train).unwrap().take(512);
    let cfg = tiny_config();
    let dev = Device::Cpu;
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));

    let mut m = DiT::new(&cfg.model, cfg.seed, DType::F32, &dev).unwrap();
    let out = train(
        &cfg,
        &mut m,
        &data,
        &mut EpsilonObjective::new(),
        &RunPaths::new(&a),
        &TrainOptions::default(),
    )
    .unwrap();
    assert_eq!(out.steps_done, 8);
    assert!(out.final_loss.is_finite());

    let mut m = DiT::new(&cfg.model, cfg.seed, DType::F32, &dev).unwrap();
    let opts = TrainOptions {
        stop_at: Some(4),
        ..Default::default()
    };
    let half = train(
        &cfg,
        &mut m,
        &data,
        &mut EpsilonObjective::new(),
        &RunPaths::new(&b),
        &opts,
    )
    .unwrap();
    assert_eq!(half.steps_done, 4);
    // A new process would start from a fresh model: do the same.
    let mut m = DiT::new(&cfg.model, cfg.seed, DType::F32, &dev).unwrap();
    let rest = train(
        &cfg,
        &mut m,
        &data,
        &mut EpsilonObjective::new(),
        &RunPaths::new(&b),
        &TrainOptions::default(),
    )
    .unwrap();
    assert_eq!(rest.resumed_from, Some(4));
    assert_eq!(rest.steps_done, 8);

    for f in ["model.safetensors", "ema.safetensors", "optim.safetensors"] {
        assert_same(&a.join("checkpoint").join(f), &b.join("checkpoint").join(f));
    }
    // The metrics logs agree on the losses, line for line.
    let losses = |d: &std::path::Path| -> Vec<(u64, f64)> {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
            })
            .collect()
    };
    assert_eq!(losses(&a), losses(&b));
    assert_eq!(losses(&a).len(), 4);

    // A different config must not silently resume this checkpoint.
    let other = TrainConfig {
        seed: 6,
        ..cfg.clone()
    };
    let mut m = DiT::new(&other.model, other.seed, DType::F32, &dev).unwrap();
    let e = train(
        &other,
        &mut m,
        &data,
        &mut EpsilonObjective::new(),
        &RunPaths::new(&b),
        &TrainOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("another config"), "{e}");
}

/// Feature KD trains projectors beside the student. The optimiser orders all variables by name,
/// and `proj.*` sorts between the model's `final_layer.*` and `t_embedder.*`: a resume that
/// found the projectors by position restored embedder weights into them. Split and straight runs
/// must agree bit for bit, projectors and their optimiser moments included.
#[test]
fn feature_kd_resumes_its_projectors_exactly() {
    for map in [
        distill::kd::FeatMap::OneToOne,
        distill::kd::FeatMap::ManyToOne,
    ] {
        feature_kd_resumes_exactly(map);
    }
}

/// One feature mapping: one-to-one, or Multi-In-One (a depth-2 student of a depth-3 teacher: spans
/// of 2 and 1 blocks, projectors of two output widths).
fn feature_kd_resumes_exactly(map: distill::kd::FeatMap) {
    let data = DataConfig::default().load(Split::Train).unwrap().take(512);
    let mut cfg = tiny_config();
    cfg.steps = 6;
    cfg.checkpoint_every = 2;
    let dev = Device::Cpu;
    let teacher_cfg = DitConfig {
        hidden_size: 48,
        depth: 3,
        num_heads: 2,
        patch_size: 7,
        ..Default::default()
    };
    let weights = distill::kd::KdWeights {
        kd: 0.5,
        data: 0.1,
        feat: 0.4,
        map,
    };
    let objective = || {
        let teacher = DiT::new(&teacher_cfg, 11, DType::F32, &dev).unwrap();
        distill::kd::KdObjective::new(teacher, &cfg.model, weights.clone(), cfg.seed).unwrap()
    };
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut m = DiT::new(&cfg.model, cfg.seed, DType::F32, &dev).unwrap();
    train(
        &cfg,
        &mut m,
        &data,
        &mut objective(),
        &RunPaths::new(&a),
        &TrainOptions::default(),
    )
    .unwrap();
    let mut m = DiT::new(&cfg.model, cfg.seed, DType::F32, &dev).unwrap();
    let opts = TrainOptions {
        stop_at: Some(3),
        ..Default::default()
    };
    train(
        &cfg,
        &mut m,
        &data,
        &mut objective(),
        &RunPaths::new(&b),
        &opts,
    )
    .unwrap();
    let mut m = DiT::new(&cfg.model, cfg.seed, DType::F32, &dev).unwrap();
    let rest = train(
        &cfg,
        &mut m,
        &data,
        &mut objective(),
        &RunPaths::new(&b),
        &TrainOptions::default(),
    )
    .unwrap();
    assert_eq!(rest.resumed_from, Some(3));
    assert!(
        a.join("checkpoint/extra.safetensors").exists(),
        "feature KD saves its projectors"
    );
    for f in [
        "model.safetensors",
        "ema.safetensors",
        "optim.safetensors",
        "extra.safetensors",
    ] {
        assert_same(&a.join("checkpoint").join(f), &b.join("checkpoint").join(f));
    }
}

#[test]
fn diverging_run_is_an_error_and_keeps_its_checkpoint() {
    let data = DataConfig::default().load(Split::Train).unwrap().take(256);
    let mut cfg = tiny_config();
    cfg.optim = OptimConfig {
        lr: 1e6,
        warmup_steps: 1,
        grad_clip: 0.0,
        ..Default::default()
    };
    cfg.steps = 60;
    cfg.checkpoint_every = 1;
    let tmp = tempfile::tempdir().unwrap();
    let mut m = DiT::new(&cfg.model, cfg.seed, DType::F32, &Device::Cpu).unwrap();
    let e = train(
        &cfg,
        &mut m,
        &data,
        &mut EpsilonObjective::new(),
        &RunPaths::new(tmp.path()),
        &TrainOptions::default(),
    )
    .unwrap_err();
    assert!(
        e.downcast_ref::<distill::train::Diverged>().is_some(),
        "a typed divergence: {e:#}"
    );
    assert!(e.to_string().contains("diverged"), "{e}");
    assert!(tmp.path().join("checkpoint/state.json").exists());
}

#[test]
fn yaml_config_errors_name_file_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("t.yaml");
    std::fs::write(&p, "name: x\nsteps: 10\nmodel:\n  depht: 3\n").unwrap();
    let e = TrainConfig::from_yaml_file(&p).unwrap_err().to_string();
    assert!(e.contains("t.yaml") && e.contains("depht"), "{e}");
    std::fs::write(&p, "name: x\nsteps: 10\nmodel:\n  num_heads: 5\n").unwrap();
    let e = TrainConfig::from_yaml_file(&p).unwrap_err().to_string();
    assert!(e.contains("t.yaml") && e.contains("num_heads"), "{e}");
    std::fs::write(&p, "name: x\nsteps: ten\n").unwrap();
    let e = TrainConfig::from_yaml_file(&p).unwrap_err().to_string();
    assert!(e.contains("t.yaml") && e.contains("steps"), "{e}");
}

/// A run killed after its final checkpoint but before its EMA weights reached the run directory
/// (the window a SIGKILL hit in CI) finishes them on the rerun instead of failing the evaluation.
#[test]
fn rerun_after_the_final_checkpoint_restores_the_ema_weights() {
    let data = DataConfig::default().load(Split::Train).unwrap().take(512);
    let cfg = tiny_config();
    let dev = Device::Cpu;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut m = DiT::new(&cfg.model, cfg.seed, DType::F32, &dev).unwrap();
    train(
        &cfg,
        &mut m,
        &data,
        &mut EpsilonObjective::new(),
        &RunPaths::new(&dir),
        &TrainOptions::default(),
    )
    .unwrap();
    let ema = dir.join("ema.safetensors");
    let kept = tmp.path().join("ema-straight.safetensors");
    std::fs::rename(&ema, &kept).unwrap();

    let mut m = DiT::new(&cfg.model, cfg.seed, DType::F32, &dev).unwrap();
    let out = train(
        &cfg,
        &mut m,
        &data,
        &mut EpsilonObjective::new(),
        &RunPaths::new(&dir),
        &TrainOptions::default(),
    )
    .unwrap();
    assert_eq!(out.steps_done, 8);
    assert!(ema.exists(), "the rerun wrote no ema.safetensors");
    assert_same(&ema, &kept);
}

/// A racing sweep extends finished runs: with a constant rate after warm-up, a run trained to 4
/// steps and then given 8 equals a run given 8 from the start, bit for bit. A cosine schedule
/// depends on the end step, so its checkpoint is refused by a config with more steps.
#[test]
fn a_constant_rate_run_extends_to_more_steps_exactly_and_a_cosine_one_is_refused() {
    let data = DataConfig::default().load(Split::Train).unwrap().take(512);
    let dev = Device::Cpu;
    let tmp = tempfile::tempdir().unwrap();
    let constant = TrainConfig {
        optim: OptimConfig {
            min_lr_ratio: 1.0,
            ..tiny_config().optim
        },
        ..tiny_config()
    };
    let go = |cfg: &TrainConfig, dir: &std::path::Path| {
        let mut m = DiT::new(&cfg.model, cfg.seed, DType::F32, &dev).unwrap();
        train(
            cfg,
            &mut m,
            &data,
            &mut EpsilonObjective::new(),
            &RunPaths::new(dir),
            &TrainOptions::default(),
        )
    };
    let (a, b) = (tmp.path().join("straight"), tmp.path().join("extended"));
    go(&constant, &a).unwrap();
    let short = TrainConfig {
        steps: 4,
        checkpoint_every: 4,
        ..constant.clone()
    };
    assert_eq!(go(&short, &b).unwrap().steps_done, 4);
    let rest = go(&constant, &b).unwrap();
    assert_eq!(rest.resumed_from, Some(4));
    assert_eq!(rest.steps_done, 8);
    for f in ["model.safetensors", "ema.safetensors", "optim.safetensors"] {
        assert_same(&a.join("checkpoint").join(f), &b.join("checkpoint").join(f));
    }

    let cosine = tiny_config();
    assert_ne!(cosine.optim.min_lr_ratio, 1.0);
    let c = tmp.path().join("cosine");
    go(
        &TrainConfig {
            steps: 4,
            ..cosine.clone()
        },
        &c,
    )
    .unwrap();
    let e = go(&cosine, &c).unwrap_err().to_string();
    assert!(e.contains("another config"), "{e}");
}
