//! One file per subcommand.

pub mod info;
pub mod sample;
pub mod teacher;
