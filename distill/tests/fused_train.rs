//! The training fast path (the fused CPU ops of `dit::ops` and the blocks' hand-written backward
//! of `dit::backward`) and the candle-primitive reference path with candle's autograd train the
//! same model: a few AdamW steps of a small DiT from the same weights and batches give the same
//! losses and weights up to float noise.

use candle_core::{DType, Device, Var};
use distill::optim::{AdamW, OptimConfig};
use dit::{DiT, DitConfig};

/// Losses of `steps` training steps, and the final weights, with the fused ops on or off.
fn train(fused: bool, steps: usize) -> (Vec<f32>, Vec<(String, Vec<f32>)>) {
    dit::ops::set_fused(fused);
    let dev = Device::Cpu;
    let cfg = DitConfig {
        input_size: 8,
        patch_size: 2,
        in_channels: 2,
        hidden_size: 32,
        depth: 2,
        num_heads: 4,
        ..Default::default()
    };
    let model = DiT::new(&cfg, 0, DType::F32, &dev).unwrap();
    let mut rng = dit::rng::seeded(3);
    let mut vars: Vec<(String, Var)> = model
        .varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    // Random weights, so the adaLN-Zero gates and the zeroed final layer carry signal from step 0.
    for (_, v) in &vars {
        v.set(&(dit::rng::randn(&mut rng, v.dims(), &dev).unwrap() * 0.1).unwrap())
            .unwrap();
    }
    let mut opt = AdamW::new(vars.clone(), OptimConfig::default()).unwrap();
    let batch = 8;
    let mut losses = vec![];
    for _ in 0..steps {
        let x = dit::rng::randn(
            &mut rng,
            &[batch, cfg.in_channels, cfg.input_size, cfg.input_size],
            &dev,
        )
        .unwrap();
        let eps = dit::rng::randn(&mut rng, x.dims(), &dev).unwrap();
        let t: Vec<f32> = dit::rng::uniform_ints(&mut rng, batch, 1000)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let y = dit::rng::uniform_ints(&mut rng, batch, cfg.num_classes);
        let mut tape = dit::Tape::new(); // as the training loop does; records nothing off the fused path
        let loss = (model
            .eps(&model.forward_recorded(&x, &t, &y, &mut tape).unwrap().0)
            .unwrap()
            - eps)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap();
        losses.push(loss.to_scalar::<f32>().unwrap());
        let grads = model.backward(&loss, tape).unwrap();
        opt.step(&grads, 1e-3).unwrap();
    }
    dit::ops::set_fused(true);
    let weights = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    (losses, weights)
}

#[test]
fn fused_and_primitive_paths_train_alike() {
    let (lf, wf) = train(true, 6);
    let (lr, wr) = train(false, 6);
    for (i, (a, b)) in lf.iter().zip(&lr).enumerate() {
        let rel = (a - b).abs() / a.abs().max(b.abs());
        assert!(
            rel < 1e-4,
            "step {i}: loss {a} (fused) vs {b} (primitives), rel {rel:e}"
        );
    }
    assert!(
        lf.last().unwrap() < lf.first().unwrap(),
        "the loss went down: {lf:?}"
    );
    for ((k, a), (_, b)) in wf.iter().zip(&wr) {
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        // AdamW steps are ~lr in size whatever the gradient's scale; float noise stays far below.
        assert!(d < 1e-4, "`{k}` differs by {d} after training");
    }
}
