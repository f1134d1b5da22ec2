//! End to end on tiny models: a teacher, a feature net, and students in every mode, each leaving a
//! run directory with a summary a sweep can read; finished runs are skipped; a student can teach.

use candle_core::Device;
use distill::data::DataConfig;
use distill::featnet::FeatNet;
use distill::kd::Mode;
use distill::run::{run_distill, DistillConfig, RunStatus, Shared};
use distill::setup::Setup;
use distill::testkit;
use dit::{DitConfig, SamplerConfig};

#[test]
fn students_in_every_mode_leave_complete_run_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dev = Device::Cpu;
    let data = DataConfig::default();

    // The tiny feature net and teacher every end-to-end test shares, trained once per build (real
    // ones are trained by `ditkd featnet` / `ditkd teacher`); the test set's features are read from
    // their shared cache. The runs below keep a cache of their own: it counts the sample banks.
    let fx = testkit::shared_fixtures(std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))).unwrap();
    let (featnet, teacher_dir) = (fx.featnet(), fx.teacher());

    let shared = Shared::load(&data, &featnet, Some(&fx.cache()), &dev).unwrap();
    assert_eq!(shared.test_feats.len(), 10_000 * distill::featnet::FEAT_DIM);
    let student = DitConfig {
        hidden_size: 16,
        depth: 1,
        num_heads: 2,
        patch_size: 7,
        ..Default::default()
    };
    let mk = |mode: Mode, teacher: &std::path::Path| {
        let mut c = DistillConfig::new(Some(teacher.to_path_buf()), mode, student.clone(), 6);
        c.batch_size = 16;
        c.eval.samples = 40;
        c.eval.sampler = SamplerConfig {
            steps: 4,
            cfg_scale: 2.0,
            ..Default::default()
        };
        c.eval.speed = mode == Mode::Kd;
        c.bank.size = 24;
        c.bank.sampler.steps = 4;
        c.featnet = featnet.clone();
        c.cache_dir = root.join("cache");
        c
    };
    for mode in [Mode::Kd, Mode::Scratch, Mode::Onestep] {
        let cfg = mk(mode, &teacher_dir);
        let dir = root.join("runs").join(cfg.run_label());
        let s = run_distill(&cfg, &dir, &shared, false).unwrap();
        assert_eq!(s.status, RunStatus::Ok, "{mode}: {:?}", s.reason);
        assert_eq!(s.params, student.num_params());
        let m = s.metrics.as_ref().expect("an ok run is evaluated");
        assert!(m.fid_proxy.is_finite() && m.fid_proxy >= 0.0);
        assert!((0.0..=1.0).contains(&m.precision) && (0.0..=1.0).contains(&m.coverage));
        assert!(
            m.fidelity_mse.is_some(),
            "{mode}: teacher fidelity is measured whenever a teacher is given"
        );
        assert!(s.teacher_hash.is_some());
        assert_eq!(s.featnet_hash, FeatNet::hash(&featnet).unwrap());
        for f in [
            "config.yaml",
            "metrics.jsonl",
            "summary.json",
            "grid.png",
            "ema.safetensors",
            "checkpoint/state.json",
        ] {
            assert!(dir.join(f).exists(), "{mode}: {f} missing");
        }
        match mode {
            Mode::Kd => {
                assert!(
                    s.teacher_fraction > 0.0 && s.teacher_fraction < 1.0,
                    "{}",
                    s.teacher_fraction
                );
                assert!(m.latency_ms.unwrap() > 0.0 && m.images_per_s.unwrap() > 0.0);
                assert_eq!(m.forwards_per_image, 8);
            }
            Mode::Onestep => {
                assert_eq!(m.forwards_per_image, 1);
                let banks = std::fs::read_dir(root.join("cache"))
                    .unwrap()
                    .filter(|e| {
                        e.as_ref()
                            .unwrap()
                            .file_name()
                            .to_string_lossy()
                            .starts_with("bank-")
                    })
                    .count();
                assert_eq!(
                    banks, 1,
                    "the sample bank is cached once per teacher and sampler"
                );
            }
            Mode::Scratch => assert_eq!(s.teacher_fraction, 0.0),
        }
        // A finished run is not trained again.
        let again = run_distill(&cfg, &dir, &shared, false).unwrap();
        assert_eq!(again.train_wall_s, s.train_wall_s);
    }

    // Teacher -> teaching assistant -> student.
    let ta = root
        .join("runs")
        .join(mk(Mode::Kd, &teacher_dir).run_label());
    let mut cfg = DistillConfig {
        student: DitConfig {
            hidden_size: 8,
            num_heads: 1,
            ..student.clone()
        },
        ..mk(Mode::Kd, &ta)
    };
    // Plain KD from an assistant would drop the assistant's cost: refused.
    let e = Setup::Kd.apply(&mut cfg.clone()).unwrap_err().to_string();
    assert!(e.contains("use setup `ta`"), "{e}");
    Setup::Ta.apply(&mut cfg).unwrap();
    assert!(cfg.run_label().ends_with("-ta-s0"), "{}", cfg.run_label());
    let ta_summary = distill::run::completed(&ta, &mk(Mode::Kd, &teacher_dir)).unwrap();
    assert_eq!(cfg.ta_train_flops, Some(ta_summary.train_flops));
    let s = run_distill(&cfg, &root.join("runs/from-ta"), &shared, false).unwrap();
    assert_eq!(s.status, RunStatus::Ok, "{:?}", s.reason);
    assert_ne!(s.teacher_hash, Some(String::new()));
    // The student's compute: its own steps, the assistant's forwards, and the assistant's training.
    let own = DistillConfig {
        ta_train_flops: None,
        ..cfg.clone()
    }
    .train_flops(Some(&ta_summary_cfg(&ta)), cfg.steps);
    assert!(
        (s.train_flops - (own + ta_summary.train_flops)).abs() <= 1e-9 * s.train_flops,
        "{} vs {own} + {}",
        s.train_flops,
        ta_summary.train_flops
    );
}

fn ta_summary_cfg(dir: &std::path::Path) -> DitConfig {
    distill::checkpoint::read_dit_config(&dir.join("dit.json")).unwrap()
}

#[test]
fn kd_needs_a_teacher() {
    let cfg = DistillConfig::new(None, Mode::Kd, DitConfig::default(), 10);
    assert!(cfg.validate().unwrap_err().to_string().contains("teacher"));
}
