//! Data, the training loop, teacher and student training, distillation losses and metrics.

pub mod checkpoint;
pub mod column;
pub mod curve;
pub mod data;
pub mod ema;
pub mod eval;
pub mod featnet;
pub mod grid;
pub mod inception;
pub mod kd;
pub mod metrics;
pub mod names;
pub mod objective;
pub mod optim;
pub mod order;
pub mod paths;
pub mod progress;
pub mod reference;
pub mod run;
pub mod setup;
pub mod testkit;
pub mod train;
