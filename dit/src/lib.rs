//! The DiT of ditkd: an adaLN-Zero Diffusion Transformer in candle whose weight names match
//! facebookresearch/DiT, its presets, analytic parameter and FLOP counts, the noise schedule and
//! the DDPM/DDIM samplers.

pub mod backward;
pub mod config;
pub mod counts;
pub mod inference;
pub mod io;
pub mod layers;
pub mod model;
pub mod ops;
pub mod params;
pub mod rng;
pub mod sampler;
pub mod schedule;
pub mod vars;

pub use backward::Tape;
pub use config::{ConfigError, DitConfig};
pub use model::DiT;
pub use sampler::{SamplerConfig, SamplerKind};
pub use schedule::NoiseSchedule;
