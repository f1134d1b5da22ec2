//! The DiT constructor arguments, their validation and the named presets.
//!
//! Field names are those of the reference `DiT(...)` constructor (facebookresearch/DiT `models.py`),
//! so a golden `*.config.json` written for the reference deserialises here unchanged.

use serde::{Deserialize, Serialize};

/// Everything that fixes a DiT's shape. Defaults are the small Fashion-MNIST teacher of this project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DitConfig {
    /// Side of the square input (pixels, or latent cells). Fashion-MNIST is 28.
    #[serde(default = "d_input_size")]
    pub input_size: usize,
    /// Side of a square patch; tokens = (input_size / patch_size)^2.
    #[serde(default = "d_patch_size")]
    pub patch_size: usize,
    /// Input channels (1 for grey images, 4 for SD latents).
    #[serde(default = "d_in_channels")]
    pub in_channels: usize,
    /// Transformer width D.
    #[serde(default = "d_hidden_size")]
    pub hidden_size: usize,
    /// Number of DiT blocks.
    #[serde(default = "d_depth")]
    pub depth: usize,
    /// Attention heads; must divide `hidden_size`.
    #[serde(default = "d_num_heads")]
    pub num_heads: usize,
    /// MLP hidden width = int(hidden_size * mlp_ratio), as the reference truncates it.
    #[serde(default = "d_mlp_ratio")]
    pub mlp_ratio: f64,
    /// Probability of replacing a label by the null class in training (classifier-free guidance).
    #[serde(default = "d_class_dropout_prob")]
    pub class_dropout_prob: f64,
    /// Number of real classes; the embedding table has one more row (the null class) when dropout > 0.
    #[serde(default = "d_num_classes")]
    pub num_classes: usize,
    /// Predict a per-pixel variance as well (doubles the output channels). This project trains the
    /// simple epsilon loss only, so the sigma half is ignored by the samplers.
    #[serde(default)]
    pub learn_sigma: bool,
}

fn d_input_size() -> usize {
    28
}
fn d_patch_size() -> usize {
    4
}
fn d_in_channels() -> usize {
    1
}
fn d_hidden_size() -> usize {
    128
}
fn d_depth() -> usize {
    4
}
fn d_num_heads() -> usize {
    4
}
fn d_mlp_ratio() -> f64 {
    4.0
}
fn d_class_dropout_prob() -> f64 {
    0.1
}
fn d_num_classes() -> usize {
    10
}

impl Default for DitConfig {
    fn default() -> Self {
        Self {
            input_size: d_input_size(),
            patch_size: d_patch_size(),
            in_channels: d_in_channels(),
            hidden_size: d_hidden_size(),
            depth: d_depth(),
            num_heads: d_num_heads(),
            mlp_ratio: d_mlp_ratio(),
            class_dropout_prob: d_class_dropout_prob(),
            num_classes: d_num_classes(),
            learn_sigma: false,
        }
    }
}

/// A shape that cannot be built, with the field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("field `{field}` must be positive (got {value})")]
    NotPositive { field: &'static str, value: String },
    #[error("field `num_heads`: {heads} heads do not divide hidden_size {width}")]
    HeadsDoNotDivide { heads: usize, width: usize },
    #[error("field `patch_size`: patch {patch} does not divide input_size {input}")]
    PatchDoesNotDivide { patch: usize, input: usize },
    #[error("field `hidden_size`: {width} must be even for the 2D sin-cos position embedding (and divisible by 4)")]
    WidthNotMultipleOf4 { width: usize },
    #[error("field `class_dropout_prob` must lie in [0, 1) (got {0})")]
    BadDropout(f64),
    #[error("field `{field}` must be at most {max} (got {value})")]
    TooLarge {
        field: &'static str,
        value: usize,
        max: usize,
    },
    #[error("unknown preset `{0}`: expected DiT-S/B/L/XL with patch 2, 4 or 8, e.g. `DiT-XL/2`")]
    UnknownPreset(String),
}

impl DitConfig {
    /// Check every constraint the model relies on; each failure names its field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("input_size", self.input_size),
            ("patch_size", self.patch_size),
            ("in_channels", self.in_channels),
            ("hidden_size", self.hidden_size),
            ("depth", self.depth),
            ("num_heads", self.num_heads),
            ("num_classes", self.num_classes),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(ConfigError::NotPositive {
                    field,
                    value: v.to_string(),
                });
            }
        }
        // Bounds far above any DiT (DiT-XL: depth 28, width 1152), so counts never overflow.
        let bounded = [
            ("input_size", self.input_size, 4096),
            ("in_channels", self.in_channels, 1024),
            ("hidden_size", self.hidden_size, 65_536),
            ("depth", self.depth, 1024),
            ("num_heads", self.num_heads, self.hidden_size),
            ("num_classes", self.num_classes, 1_000_000),
        ];
        for (field, value, max) in bounded {
            if value > max {
                return Err(ConfigError::TooLarge { field, value, max });
            }
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0 && self.mlp_ratio <= 64.0)
            || self.mlp_hidden() == 0
        {
            return Err(ConfigError::NotPositive {
                field: "mlp_ratio",
                value: self.mlp_ratio.to_string(),
            });
        }
        if !(0.0..1.0).contains(&self.class_dropout_prob) {
            return Err(ConfigError::BadDropout(self.class_dropout_prob));
        }
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return Err(ConfigError::HeadsDoNotDivide {
                heads: self.num_heads,
                width: self.hidden_size,
            });
        }
        if !self.input_size.is_multiple_of(self.patch_size) {
            return Err(ConfigError::PatchDoesNotDivide {
                patch: self.patch_size,
                input: self.input_size,
            });
        }
        if !self.hidden_size.is_multiple_of(4) {
            return Err(ConfigError::WidthNotMultipleOf4 {
                width: self.hidden_size,
            });
        }
        Ok(())
    }

    /// Tokens per image: (input_size / patch_size)^2.
    pub fn num_tokens(&self) -> usize {
        let g = self.grid_size();
        g * g
    }

    /// Patches per side.
    pub fn grid_size(&self) -> usize {
        self.input_size / self.patch_size
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// MLP hidden width, truncated like the reference's `int(hidden_size * mlp_ratio)`.
    pub fn mlp_hidden(&self) -> usize {
        (self.hidden_size as f64 * self.mlp_ratio) as usize
    }

    pub fn out_channels(&self) -> usize {
        if self.learn_sigma {
            2 * self.in_channels
        } else {
            self.in_channels
        }
    }

    /// Rows of the label table: the real classes plus the null class used by classifier-free guidance.
    pub fn label_rows(&self) -> usize {
        self.num_classes + usize::from(self.class_dropout_prob > 0.0)
    }

    /// Index of the null ("unconditional") class.
    pub fn null_class(&self) -> usize {
        self.num_classes
    }

    /// The reference presets `DiT-{S,B,L,XL}/{2,4,8}` on a 32x32x4 latent, 1000 classes, learn_sigma,
    /// as `models.py` builds them (DiT_models dict).
    pub fn preset(name: &str) -> Result<Self, ConfigError> {
        let unknown = || ConfigError::UnknownPreset(name.to_string());
        let rest = name.strip_prefix("DiT-").ok_or_else(unknown)?;
        let (size, patch) = rest.split_once('/').ok_or_else(unknown)?;
        let (depth, hidden_size, num_heads) = match size {
            "S" => (12, 384, 6),
            "B" => (12, 768, 12),
            "L" => (24, 1024, 16),
            "XL" => (28, 1152, 16),
            _ => return Err(unknown()),
        };
        let patch_size = match patch {
            "2" => 2,
            "4" => 4,
            "8" => 8,
            _ => return Err(unknown()),
        };
        Ok(Self {
            input_size: 32,
            patch_size,
            in_channels: 4,
            hidden_size,
            depth,
            num_heads,
            mlp_ratio: 4.0,
            class_dropout_prob: 0.1,
            num_classes: 1000,
            learn_sigma: true,
        })
    }

    /// All twelve preset names.
    pub fn preset_names() -> Vec<String> {
        let mut v = Vec::new();
        for s in ["S", "B", "L", "XL"] {
            for p in [2, 4, 8] {
                v.push(format!("DiT-{s}/{p}"));
            }
        }
        v
    }

    /// A short human label such as `d4-w128-h4-p4`.
    pub fn shape_label(&self) -> String {
        format!(
            "d{}-w{}-h{}-p{}",
            self.depth, self.hidden_size, self.num_heads, self.patch_size
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_validate() {
        for n in DitConfig::preset_names() {
            let c = DitConfig::preset(&n).unwrap();
            c.validate().unwrap();
        }
        assert_eq!(DitConfig::preset("DiT-XL/2").unwrap().num_tokens(), 256);
        assert!(DitConfig::preset("DiT-M/2").is_err());
        assert!(DitConfig::preset("DiT-S/3").is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let c = DitConfig {
            num_heads: 5,
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("num_heads") && e.contains("128"), "{e}");
        let c = DitConfig {
            patch_size: 3,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("patch_size"));
        let c = DitConfig {
            depth: 0,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("depth"));
        let c = DitConfig {
            class_dropout_prob: 1.5,
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("class_dropout_prob"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = serde_json::from_str::<DitConfig>(r#"{"depth": 2, "widht": 64}"#).unwrap_err();
        assert!(e.to_string().contains("widht"), "{e}");
    }
}
