//! The `ditkd` command line and everything behind it: sweep specs, the runner, tables, law
//! fitting, plots and queries.

// `!(x > 0.0)` is deliberate throughout: unlike `x <= 0.0` it is also true for NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]
// The plots' and the law's prepared data are plain nested tuples and maps, read once where built.
#![allow(clippy::type_complexity)]

pub mod alloc;
pub mod cli;
pub mod cmd;
pub mod device;
pub mod fmt;
pub mod law;
pub mod plot;
pub mod race;
pub mod results;
pub mod runner;
pub mod spec;
pub mod speed;
pub mod table;
