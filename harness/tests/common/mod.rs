//! Shared fixtures of the harness's end-to-end tests: a tiny teacher, a tiny feature net, a tiny spec.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use candle_core::{DType, Device};
use distill::data::{DataConfig, Split};
use distill::train::{train, EpsilonObjective, RunPaths, TrainConfig, TrainOptions};
use dit::{DiT, DitConfig};

pub fn ditkd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ditkd"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A tiny teacher and feature net under `root`.
pub fn fixtures(root: &Path) {
    let dev = Device::Cpu;
    let data = DataConfig::default().load(Split::Train).unwrap().take(512);
    let mut net = distill::featnet::FeatNet::new(1, 28, 10, 0, &dev).unwrap();
    net.train(&data, 1, 0, false).unwrap();
    net.save(&root.join("featnet")).unwrap();
    let tcfg = TrainConfig {
        name: "t".into(),
        model: DitConfig {
            hidden_size: 32,
            depth: 2,
            num_heads: 2,
            patch_size: 7,
            ..Default::default()
        },
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
    train(
        &tcfg,
        &mut t,
        &data,
        &mut EpsilonObjective::new(),
        &RunPaths::new(root.join("teacher")),
        &TrainOptions::default(),
    )
    .unwrap();
}

pub fn spec_text(root: &Path) -> String {
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

pub fn table_rows(dir: &Path) -> Vec<String> {
    // Metrics and identity columns, not timings or the commit the binary was built from.
    let text = std::fs::read_to_string(dir.join("runs.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .trim_start_matches('\u{feff}')
        .split(',')
        .collect();
    let keep: Vec<usize> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| {
            !h.contains("wall")
                && !h.contains("fraction")
                && !h.contains("latency")
                && !h.contains("images_per_s")
                && **h != "code_version"
        })
        .map(|(i, _)| i)
        .collect();
    let mut rows: Vec<String> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            keep.iter()
                .map(|&i| f.get(i).copied().unwrap_or(""))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    rows.sort();
    rows
}
