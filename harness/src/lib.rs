//! The `ditkd` command line and everything behind it: sweep specs, the runner, tables, law
//! fitting, plots and queries.

pub mod alloc;
pub mod cli;
pub mod cmd;
pub mod device;
pub mod fmt;
pub mod law;
pub mod plot;
pub mod results;
pub mod runner;
pub mod spec;
pub mod speed;
pub mod table;
