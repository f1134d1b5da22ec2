//! Metrics against independent float64 reference values (fixtures/*.expected.json, computed outside the project).

use std::path::PathBuf;

use distill::metrics::{frechet_distance, kid_first_rows, prdc};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// (real rows, fake rows, dim) from `NAME.features.safetensors`.
fn load(name: &str) -> (Vec<f32>, Vec<f32>, usize) {
    let path = fixture(&format!("{name}.features.safetensors"));
    let t = candle_core::safetensors::load(&path, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dim = t["real"].dims()[1];
    assert_eq!(
        t["fake"].dims()[1],
        dim,
        "{name}: real and fake feature dims differ"
    );
    let rows = |k: &str| t[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    (rows("real"), rows("fake"), dim)
}

fn check(name: &str) {
    let (real, fake, dim) = load(name);
    let path = fixture(&format!("{name}.expected.json"));
    let exp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(exp["dim"].as_u64(), Some(dim as u64));
    let k = exp["prdc_k"].as_u64().unwrap() as usize;
    let p = prdc(&real, &fake, dim, k).unwrap();
    let got = [
        (
            "frechet_distance",
            frechet_distance(&real, &fake, dim).unwrap(),
        ),
        ("kid", kid_first_rows(&real, &fake, dim).unwrap()),
        ("precision", p.precision),
        ("recall", p.recall),
        ("density", p.density),
        ("coverage", p.coverage),
    ];
    let mut bad = Vec::new();
    for (key, v) in got {
        let want = exp[key].as_f64().unwrap();
        let rel = (v - want).abs() / want.abs().max(1e-12);
        println!("{name} {key}: got {v:.10} expected {want:.10} (rel {rel:.2e})");
        if rel > 1e-4 {
            bad.push(key);
        }
    }
    assert!(bad.is_empty(), "{name}: beyond 1e-4 relative: {bad:?}");
}

#[test]
fn gauss16() {
    check("gauss16");
}

#[test]
fn correlated64() {
    check("correlated64");
}
