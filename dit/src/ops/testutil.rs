//! What the ops' tests share: seeded inputs, and the comparisons of a fused op with its reference
//! and with central differences.

use candle_core::{DType, Device, Result, Tensor, Var};

pub fn rand(shape: &[usize], seed: u64) -> Tensor {
    let mut r = crate::rng::seeded(seed);
    crate::rng::randn(&mut r, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
}

pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Forward and gradient of a fused op equal candle's primitive version.
pub fn same_as_reference(
    f: impl Fn(&Tensor) -> Result<Tensor>,
    r: impl Fn(&Tensor) -> Result<Tensor>,
    shape: &[usize],
    grad_tol: f64,
) {
    let x = Var::from_tensor(&(rand(shape, 1) * 2.0).unwrap()).unwrap();
    let w = rand(shape, 2);
    let (yf, yr) = (f(x.as_tensor()).unwrap(), r(x.as_tensor()).unwrap());
    assert!(max_diff(&yf, &yr) < 1e-12);
    let gf = (yf * &w).unwrap().sum_all().unwrap().backward().unwrap();
    let gr = (yr * &w).unwrap().sum_all().unwrap().backward().unwrap();
    let d = max_diff(
        gf.get(x.as_tensor()).unwrap(),
        gr.get(x.as_tensor()).unwrap(),
    );
    assert!(d < grad_tol, "gradient differs by {d}");
}

/// Forward and every input's gradient of a three-input fused op equal the reference's.
pub fn same_as_reference3(
    f: fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
    r: fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
    shapes: [&[usize]; 3],
) {
    let v: Vec<Var> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| Var::from_tensor(&rand(s, 10 + i as u64)).unwrap())
        .collect();
    let (yf, yr) = (
        f(&v[0], &v[1], &v[2]).unwrap(),
        r(&v[0], &v[1], &v[2]).unwrap(),
    );
    assert!(max_diff(&yf, &yr) < 1e-12);
    let w = rand(yf.dims(), 2);
    let gf = (yf * &w).unwrap().sum_all().unwrap().backward().unwrap();
    let gr = (yr * &w).unwrap().sum_all().unwrap().backward().unwrap();
    for v in &v {
        let d = max_diff(
            gf.get(v.as_tensor()).unwrap(),
            gr.get(v.as_tensor()).unwrap(),
        );
        assert!(d < 1e-10, "gradient differs by {d}");
    }
}

/// The op's gradient against central differences, element by element (f64), at `x: [2, 3, 3]`.
pub fn passes_finite_differences(name: &str, f: impl Fn(&Tensor) -> Result<Tensor>) {
    let x0 = rand(&[2, 3, 3], 7);
    let w = f(&x0).map(|y| rand(y.dims(), 8)).unwrap();
    let x = Var::from_tensor(&x0).unwrap();
    let g = (f(x.as_tensor()).unwrap() * &w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g: Vec<f64> = g
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let base: Vec<f64> = x0.flatten_all().unwrap().to_vec1().unwrap();
    for i in 0..base.len() {
        let at = |d: f64| {
            let mut v = base.clone();
            v[i] += d;
            let t = Tensor::from_vec(v, x0.dims(), &Device::Cpu).unwrap();
            (f(&t).unwrap() * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let num = (at(1e-6) - at(-1e-6)) / 2e-6;
        let err = (num - g[i]).abs() / num.abs().max(g[i].abs()).max(1e-6);
        assert!(err < 1e-5, "{name}[{i}]: analytic {} numeric {num}", g[i]);
    }
}
