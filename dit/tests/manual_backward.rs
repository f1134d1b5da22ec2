//! The blocks' hand-written backward (`DiT::forward_recorded` + `DiT::backward`) gives every
//! parameter the gradient candle's autograd gives it, for losses on the output and on the block
//! features, and for a loss that runs the model twice; the recorded forward returns what the plain
//! forward does.

use candle_core::{DType, Device, Tensor, Var};
use dit::rng::{normal_vec, seeded};
use dit::{DiT, DitConfig, Tape};

fn randn(rng: &mut dit::rng::HostRng, dims: &[usize], dtype: DType) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_vec(normal_vec(rng, n), dims, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn model(dtype: DType, learn_sigma: bool) -> DiT {
    let cfg = DitConfig {
        input_size: 8,
        patch_size: 2,
        in_channels: 2,
        hidden_size: 12,
        depth: 3,
        num_heads: 3,
        mlp_ratio: 4.0,
        class_dropout_prob: 0.1,
        num_classes: 3,
        learn_sigma,
    };
    let m = DiT::new(&cfg, 1, dtype, &Device::Cpu).unwrap();
    // Random weights everywhere (adaLN-Zero's zero init would zero most gradients).
    let mut rng = seeded(5);
    let data = m.varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let v = &data[name];
        v.set(&(randn(&mut rng, v.dims(), dtype) * 0.3).unwrap())
            .unwrap();
    }
    drop(data);
    m
}

fn vars(m: &DiT) -> Vec<(String, Var)> {
    let mut v: Vec<_> = m
        .varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A forward pass `(x, t, y) -> (output, features)`: the plain one or the recorded one.
type Forward<'a> = dyn FnMut(&Tensor, &[f32], &[u32]) -> (Tensor, Vec<Tensor>) + 'a;

/// Largest |a - b| relative to the largest |b| of any parameter's gradient, recorded vs autograd.
/// `loss` runs the model through the forward it is given.
fn compare(m: &DiT, loss: impl Fn(&DiT, &mut Forward) -> Tensor) -> f64 {
    let reference = loss(m, &mut |x, t, y| m.forward_with_features(x, t, y).unwrap())
        .backward()
        .unwrap();
    let mut tape = Tape::new();
    let l = loss(m, &mut |x, t, y| {
        m.forward_recorded(x, t, y, &mut tape).unwrap()
    });
    assert!(!tape.is_empty(), "the CPU forwards were recorded");
    let manual = m.backward(&l, tape).unwrap();
    let mut worst: f64 = 0.0;
    for (name, v) in vars(m) {
        let r = reference
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("autograd gave `{name}` no gradient"));
        let g = manual
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("the hand-written backward gave `{name}` no gradient"));
        assert_eq!(r.dims(), g.dims(), "{name}");
        let r: Vec<f64> = r
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let g: Vec<f64> = g
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let scale = r.iter().fold(0f64, |a, &b| a.max(b.abs())).max(1e-30);
        let diff = r
            .iter()
            .zip(&g)
            .fold(0f64, |a, (x, y)| a.max((x - y).abs()));
        assert!(
            scale > 1e-12,
            "`{name}` has a zero gradient: the test would not see a bug"
        );
        worst = worst.max(diff / scale);
    }
    worst
}

fn inputs(dtype: DType) -> (Tensor, Vec<f32>, Vec<u32>, Tensor) {
    let mut rng = seeded(9);
    let x = randn(&mut rng, &[4, 2, 8, 8], dtype);
    let r = randn(&mut rng, &[4, 4, 8, 8], dtype);
    (x, vec![3.0, 250.0, 640.0, 999.0], vec![0, 2, 3, 1], r) // label 3 is the null class
}

#[test]
fn output_loss_gradients_match_autograd_f64() {
    let m = model(DType::F64, true);
    let (x, t, y, r) = inputs(DType::F64);
    let err = compare(&m, |_, fwd| {
        (fwd(&x, &t, &y).0 * &r).unwrap().sum_all().unwrap()
    });
    assert!(err < 1e-10, "relative gradient error {err}");
}

#[test]
fn feature_and_repeated_forward_gradients_match_autograd_f64() {
    let m = model(DType::F64, false);
    let (x, t, y, r) = inputs(DType::F64);
    let r = r.narrow(1, 0, 2).unwrap();
    let mut rng = seeded(13);
    let w = randn(&mut rng, &[4, 16, 12], DType::F64);
    let err = compare(&m, |m, fwd| {
        let (out, feats) = fwd(&x, &t, &y);
        // Features of the first two blocks (the last block's output also feeds the output).
        let lf = ((&feats[0] * &w).unwrap().sum_all().unwrap()
            + (&feats[1] * &w).unwrap().sqr().unwrap().sum_all().unwrap())
        .unwrap();
        let second = m.eps(&fwd(&(&x * 0.5).unwrap(), &t, &y).0).unwrap(); // a second pass, as CFG-style losses do
        let lo = ((out * &r).unwrap().sum_all().unwrap()
            + second.sqr().unwrap().sum_all().unwrap())
        .unwrap();
        (lf + lo).unwrap()
    });
    assert!(err < 1e-10, "relative gradient error {err}");
}

#[test]
fn f32_training_step_gradients_match_autograd() {
    let m = model(DType::F32, true);
    let (x, t, y, r) = inputs(DType::F32);
    let err = compare(&m, |m, fwd| {
        (m.eps(&fwd(&x, &t, &y).0).unwrap() - r.narrow(1, 0, 2).unwrap())
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
    });
    assert!(err < 1e-4, "relative gradient error {err}");
}

#[test]
fn recorded_forward_returns_the_plain_outputs() {
    for dtype in [DType::F32, DType::F64] {
        let m = model(dtype, true);
        let (x, t, y, _) = inputs(dtype);
        let (out, feats) = m.forward_with_features(&x, &t, &y).unwrap();
        let mut tape = Tape::new();
        let (out_r, feats_r) = m.forward_recorded(&x, &t, &y, &mut tape).unwrap();
        let bits = |a: &Tensor| {
            a.to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        assert_eq!(bits(&out), bits(&out_r), "{dtype:?} output");
        assert_eq!(feats.len(), feats_r.len());
        for (a, b) in feats.iter().zip(&feats_r) {
            assert_eq!(bits(a), bits(b), "{dtype:?} features");
        }
    }
}

#[test]
fn a_tape_belongs_to_its_model() {
    let (a, b) = (model(DType::F64, false), model(DType::F64, false));
    let (x, t, y, _) = inputs(DType::F64);
    let mut tape = Tape::new();
    let out = a.forward_recorded(&x, &t, &y, &mut tape).unwrap().0;
    let e = b
        .backward(&out.sum_all().unwrap(), tape)
        .unwrap_err()
        .to_string();
    assert!(e.contains("another model"), "{e}");
}
