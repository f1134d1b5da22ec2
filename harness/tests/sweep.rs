//! A tiny sweep end to end through the binary: dry run, run, table; the same sweep as two shards
//! merged gives the same table; a rerun skips finished runs; malformed specs fail clearly.

use std::path::Path;
use std::process::Command;

use candle_core::{DType, Device};
use dit::{DiT, DitConfig};
use distill::data::{DataConfig, Split};
use distill::train::{train, EpsilonObjective, RunPaths, TrainConfig, TrainOptions};

fn ditkd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ditkd")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// A tiny teacher and feature net under `root`.
fn fixtures(root: &Path) {
    let dev = Device::Cpu;
    let data = DataConfig::default().load(Split::Train).unwrap().take(512);
    let mut net = distill::featnet::FeatNet::new(1, 28, 10, 0, &dev).unwrap();
    net.train(&data, 1, 0, false).unwrap();
    net.save(&root.join("featnet")).unwrap();
    let tcfg = TrainConfig {
        name: "t".into(),
        model: DitConfig { hidden_size: 32, depth: 2, num_heads: 2, patch_size: 7, ..Default::default() },
        data: DataConfig::default(),
        optim: Default::default(),
        steps: 6,
        batch_size: 16,
        seed: 0,
        ema_decay: 0.9,
        ema_warmup: true,
        checkpoint_every: 6,
        log_every: 3,
        sampler: Default::default(),
    };
    let mut t = DiT::new(&tcfg.model, 0, DType::F32, &dev).unwrap();
    train(&tcfg, &mut t, &data, &mut EpsilonObjective::new(), &RunPaths::new(root.join("teacher")), &TrainOptions::default()).unwrap();
}

fn spec_text(root: &Path) -> String {
    format!(
        "name: tiny
teacher: {r}/teacher
featnet: {r}/featnet
cache_dir: {r}/cache
budgets:
  - {{params: 12k, tol: 0.3}}
  - {{params: 20k, tol: 0.3}}
axes:
  depth: [1, 2]
  width: [16, 24]
  heads: [2]
  patch: [7]
constraints: {{min_head_dim: 8}}
distill: {{modes: [kd, scratch], steps: 3, batch_size: 8, warmup_steps: 1}}
seeds: [0]
eval: {{samples: 16, sampler: {{kind: ddim, steps: 2, cfg_scale: 2.0}}, speed: false}}
parallel: {{jobs: 2, threads_per_job: 1}}
",
        r = root.display()
    )
}

fn table_rows(dir: &Path) -> Vec<String> {
    // Metrics and identity columns, not timings.
    let text = std::fs::read_to_string(dir.join("runs.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().trim_start_matches('\u{feff}').split(',').collect();
    let keep: Vec<usize> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| !h.contains("wall") && !h.contains("fraction") && !h.contains("latency") && !h.contains("images_per_s"))
        .map(|(i, _)| i)
        .collect();
    let mut rows: Vec<String> = lines.map(|l| {
        let f: Vec<&str> = l.split(',').collect();
        keep.iter().map(|&i| f.get(i).copied().unwrap_or("")).collect::<Vec<_>>().join(",")
    }).collect();
    rows.sort();
    rows
}

#[test]
fn tiny_sweep_runs_shards_merge_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fixtures(root);
    let spec = root.join("tiny.yaml");
    std::fs::write(&spec, spec_text(root)).unwrap();
    let spec = spec.to_str().unwrap();

    let (rc, out, err) = ditkd(&["sweep", spec, "--dry-run"]);
    assert_eq!(rc, 0, "{err}");
    let planned = out.lines().filter(|l| l.contains(" kd ") || l.contains(" scratch ")).count();
    assert!(planned >= 4, "{out}");

    let full = root.join("full");
    let (rc, _, err) = ditkd(&["sweep", spec, "--out", full.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    let rows = table_rows(&full);
    assert_eq!(rows.len(), planned);
    assert!(full.join("runs.parquet").exists());
    let (rc, out, err) = ditkd(&["table", full.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("fid_proxy_mean"), "{out}");

    // Two shards into their own directories, merged.
    let (a, b, m) = (root.join("a"), root.join("b"), root.join("merged"));
    for (s, d) in [("1/2", &a), ("2/2", &b)] {
        let (rc, _, err) = ditkd(&["sweep", spec, "--shard", s, "--out", d.to_str().unwrap()]);
        assert_eq!(rc, 0, "{err}");
    }
    let (rc, _, err) = ditkd(&["merge", "--out", m.to_str().unwrap(), a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(table_rows(&m), rows, "merged shards equal the local sweep");

    // Rerunning skips finished runs (their summaries, training times included, stay as they were).
    let before = std::fs::read_to_string(full.join("runs.csv")).unwrap();
    let (rc, _, err) = ditkd(&["sweep", spec, "--out", full.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(std::fs::read_to_string(full.join("runs.csv")).unwrap(), before);
}

#[test]
fn malformed_specs_fail_with_their_own_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let base = "name: s\nteacher: t\nbudgets: [{params: 100k}]\naxes: {depth: [2], width: [64], heads: [2]}\ndistill: {modes: [kd], steps: 5}\nseeds: [0]\n";
    let cases: Vec<(String, &str)> = vec![
        (base.replace("name: s", "name: s\ncolour: red"), "colour"),
        (base.replace("steps: 5", "steps: five"), "steps"),
        (base.replace("[{params: 100k}]", "[{params: lots}]"), "lots"),
        (base.replace("[{params: 100k}]", "[{params: 100k, tol: 2}]"), "tol"),
        (base.replace("[{params: 100k}]", "[]"), "budgets"),
        (base.replace("modes: [kd]", "modes: [magic]"), "magic"),
        (base.replace("modes: [kd]", "modes: []"), "modes"),
        (base.replace("seeds: [0]", "seeds: []"), "seeds"),
        (base.replace("depth: [2]", "depth: [0]"), "depth"),
        (base.replace("width: [64]", "width: {from: 64, to: 32, step: 8}"), "width"),
        (base.replace("heads: [2]", "heeds: [2]"), "heeds"),
        ("name: [unclosed\n".to_string(), "line"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let p = tmp.path().join(format!("bad{i}.yaml"));
        std::fs::write(&p, text).unwrap();
        let (rc, _, err) = ditkd(&["sweep", p.to_str().unwrap(), "--dry-run"]);
        assert_eq!(rc, 1, "case {i} should fail");
        assert!(err.contains(&format!("bad{i}.yaml")) && err.contains(needle), "case {i}: {err}");
    }
}
