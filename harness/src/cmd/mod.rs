//! One file per subcommand.

pub mod bench;
pub mod distill;
pub mod featnet;
pub mod info;
pub mod sample;
pub mod slurm;
pub mod sweep;
pub mod teacher;
