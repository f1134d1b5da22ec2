//! Analytic parameter and FLOP counts, so a sweep can size shapes without building them.

use crate::config::DitConfig;

/// Frequencies fed to the timestep MLP (the reference's `frequency_embedding_size`).
pub const TIME_FREQ_DIM: usize = 256;

impl DitConfig {
    /// Trainable parameters (the fixed sin-cos `pos_embed` excluded). Equals the summed sizes of
    /// the model's variables; a unit test holds the two together.
    pub fn num_params(&self) -> usize {
        let d = self.hidden_size;
        let p2 = self.patch_size * self.patch_size;
        let h = self.mlp_hidden();
        let x_embed = d * self.in_channels * p2 + d;
        let t_embed = TIME_FREQ_DIM * d + d + d * d + d;
        let y_embed = self.label_rows() * d;
        let block =
            (d * 3 * d + 3 * d) + (d * d + d) + (d * h + h) + (h * d + d) + (d * 6 * d + 6 * d);
        let final_layer =
            (d * 2 * d + 2 * d) + (d * p2 * self.out_channels() + p2 * self.out_channels());
        x_embed + t_embed + y_embed + self.depth * block + final_layer
    }

    /// Parameters as the reference's `parameters()` counts them: the frozen `pos_embed` included
    /// (DiT-XL/2: 675,129,632).
    pub fn num_params_with_pos_embed(&self) -> usize {
        self.num_params() + self.num_tokens() * self.hidden_size
    }

    /// Multiply-accumulates of one forward pass for one image. The DiT paper's "Gflops" column
    /// is this number (DiT-XL/2: 118.6 G).
    pub fn forward_macs(&self) -> u64 {
        let d = self.hidden_size as u64;
        let t = self.num_tokens() as u64;
        let h = self.mlp_hidden() as u64;
        let p2c = (self.patch_size * self.patch_size) as u64;
        let x_embed = t * (self.in_channels as u64 * p2c) * d;
        let t_embed = TIME_FREQ_DIM as u64 * d + d * d;
        let per_block_tokens = t * d * 3 * d // qkv
            + 2 * t * t * d // q k^T and attn v
            + t * d * d // proj
            + 2 * t * d * h; // fc1 + fc2
        let per_block_cond = d * 6 * d; // adaLN modulation, once per image
        let final_layer = d * 2 * d + t * d * p2c * self.out_channels() as u64;
        x_embed + t_embed + self.depth as u64 * (per_block_tokens + per_block_cond) + final_layer
    }

    /// Floating-point operations of one forward pass for one image (2 per multiply-accumulate).
    pub fn forward_flops(&self) -> u64 {
        2 * self.forward_macs()
    }

    /// GFLOPs (2 x MACs, 1e9) of one forward pass for one image.
    pub fn forward_gflops(&self) -> f64 {
        self.forward_flops() as f64 / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xl2_matches_the_paper() {
        let c = DitConfig::preset("DiT-XL/2").unwrap();
        assert_eq!(c.num_params_with_pos_embed(), 675_129_632);
        // The paper reports 118.6 "Gflops" (multiply-accumulates) for DiT-XL/2.
        let g = c.forward_macs() as f64 / 1e9;
        assert!((g - 118.6).abs() / 118.6 < 0.005, "{g}");
    }
}
