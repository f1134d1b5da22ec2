//! One file per subcommand.

pub mod bench;
pub mod best;
pub mod distill;
pub mod featnet;
pub mod fid;
pub mod fit;
pub mod info;
pub mod plot;
pub mod race;
pub mod report;
pub mod sample;
pub mod slurm;
pub mod study;
pub mod sweep;
pub mod teacher;
