//! Finite-difference gradient check of the whole DiT in f64: every parameter tensor must receive
//! the gradient that central differences measure. candle's fused CPU softmax / layer-norm /
//! flash-attention silently pass no gradient; a model built on them fails here.

use candle_core::{DType, Device, Tensor, Var};
use dit::rng::{normal_vec, seeded};
use dit::{DiT, DitConfig, Tape};

fn loss(model: &DiT, x: &Tensor, t: &[f32], y: &[u32], r: &Tensor) -> Tensor {
    projected(&model.forward(x, t, y).unwrap(), r)
}

/// A random projection of the output, so every output element matters.
fn projected(out: &Tensor, r: &Tensor) -> Tensor {
    (out * r).unwrap().sum_all().unwrap()
}

#[test]
fn every_parameter_gets_the_finite_difference_gradient() {
    check(false);
}

/// The same with the training path: a recorded forward and the blocks' hand-written backward
/// (`DiT::forward_recorded` + `DiT::backward`, see `dit/src/backward.rs`).
#[test]
fn the_hand_written_backward_gets_the_finite_difference_gradient() {
    check(true);
}

fn check(recorded: bool) {
    let dev = Device::Cpu;
    let cfg = DitConfig {
        input_size: 4,
        patch_size: 2,
        in_channels: 2,
        hidden_size: 8,
        depth: 2,
        num_heads: 2,
        mlp_ratio: 2.0,
        class_dropout_prob: 0.1,
        num_classes: 3,
        learn_sigma: true,
    };
    let model = DiT::new(&cfg, 1, DType::F64, &dev).unwrap();
    // Random weights everywhere (the adaLN-Zero init would zero many gradients).
    let mut rng = seeded(11);
    let vars: Vec<(String, Var)> = {
        let data = model.varmap.data().lock().unwrap();
        let mut v: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    for (_, v) in &vars {
        let vals: Vec<f64> = normal_vec(&mut rng, v.elem_count())
            .iter()
            .map(|&z| 0.3 * z as f64)
            .collect();
        v.set(&Tensor::from_vec(vals, v.dims(), &dev).unwrap())
            .unwrap();
    }
    let x = Tensor::from_vec(
        normal_vec(&mut rng, 2 * 2 * 16)
            .iter()
            .map(|&z| z as f64)
            .collect::<Vec<_>>(),
        (2, 2, 4, 4),
        &dev,
    )
    .unwrap();
    let r = Tensor::from_vec(
        normal_vec(&mut rng, 2 * 4 * 16)
            .iter()
            .map(|&z| z as f64)
            .collect::<Vec<_>>(),
        (2, 4, 4, 4),
        &dev,
    )
    .unwrap();
    let t = [37.0f32, 801.0];
    let y = [2u32, 3]; // a real class and the null class

    let grads = if recorded {
        let mut tape = Tape::new();
        let l = projected(
            &model.forward_recorded(&x, &t, &y, &mut tape).unwrap().0,
            &r,
        );
        model.backward(&l, tape).unwrap()
    } else {
        loss(&model, &x, &t, &y, &r).backward().unwrap()
    };
    let h = 1e-5;
    let mut checked = 0;
    for (name, v) in &vars {
        let g = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("`{name}` received no gradient"));
        let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
        let base: Vec<f64> = v.flatten_all().unwrap().to_vec1().unwrap();
        // A few elements per tensor, spread over it.
        let picks: Vec<usize> = (0..4)
            .map(|k| (k * 7919 + name.len()) % base.len())
            .collect();
        let mut any_nonzero = false;
        for &i in &picks {
            let eval = |delta: f64| {
                let mut w = base.clone();
                w[i] += delta;
                v.set(&Tensor::from_vec(w, v.dims(), &dev).unwrap())
                    .unwrap();
                loss(&model, &x, &t, &y, &r).to_scalar::<f64>().unwrap()
            };
            let num = (eval(h) - eval(-h)) / (2.0 * h);
            v.set(&Tensor::from_vec(base.clone(), v.dims(), &dev).unwrap())
                .unwrap();
            let ana = g[i];
            let err = (ana - num).abs() / ana.abs().max(num.abs()).max(1e-3);
            assert!(
                err < 1e-2,
                "`{name}`[{i}]: analytic {ana:e}, numeric {num:e}, rel err {err:e}"
            );
            any_nonzero |= ana.abs() > 1e-8;
            checked += 1;
        }
        // The null-class row only sees the one null label; every tensor must carry signal somewhere.
        let total: f64 = g.iter().map(|v| v.abs()).sum();
        assert!(total > 0.0, "`{name}`: gradient is identically zero");
        let _ = any_nonzero;
    }
    assert_eq!(
        vars.len(),
        2 + 4 + 1 + 2 * 10 + 4,
        "every named tensor was checked"
    );
    assert!(checked >= 4 * vars.len());
}
