//! One file per subcommand.

pub mod bench;
pub mod info;
pub mod sample;
pub mod teacher;
