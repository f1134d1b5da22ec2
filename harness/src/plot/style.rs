//! Look of every plot: the embedded font, the palette, sizes and number formats.

use std::sync::Once;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::style::{register_font, FontStyle, RGBColor};

/// DejaVu Sans (Bitstream Vera licence, `assets/DejaVuSans.LICENSE`), embedded so the plots render
/// the same on a machine without any system font.
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

pub const FAMILY: &str = "sans-serif";
pub const SIZE: (u32, u32) = (1200, 800);
pub const TITLE: u32 = 28;
pub const LABEL: u32 = 20;
pub const TICK: u32 = 16;
pub const NOTE: u32 = 14;

/// Register the embedded font as "sans-serif" (plotters' ab_glyph backend has no system lookup).
pub fn init_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            panic!("the embedded DejaVuSans.ttf is not a valid font");
        }
    });
}

/// Tableau 10: distinguishable categorical colours, colour-blind friendlier than plotters' defaults.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// `(lo, hi)` of the positive values, widened by `pad` (a factor) so points do not sit on the frame.
pub fn log_bounds(values: impl IntoIterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.into_iter().filter(|v| v.is_finite() && *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.1, 10.0);
    }
    if hi / lo < 1.5 {
        // A nearly flat range would show a single tick: open it to at least a factor 1.5 each way.
        let mid = (lo * hi).sqrt();
        return (mid / 1.5 / pad, mid * 1.5 * pad);
    }
    (lo / pad, hi * pad)
}

/// `(lo, hi)` of the values, widened by `pad` (absolute).
pub fn lin_bounds(values: impl IntoIterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.into_iter().filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    (lo - pad, hi + pad)
}

/// Counts as 250k, 1.2M: what budgets are called in the specs.
pub fn si(v: f64) -> String {
    let (x, unit) = if v.abs() >= 1e6 {
        (v / 1e6, "M")
    } else if v.abs() >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    format!("{}{unit}", trim(&format!("{x:.2}")))
}

/// Significant-digit formatting for metric values and ticks (0.0123, 1.23, 123).
pub fn num(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    if !(1e-3..1e6).contains(&v.abs()) {
        // Bootstrap intervals can run to 1e-15 or 1e23: scientific, not a row of zeros.
        let s = format!("{v:.2e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        return format!("{}e{e}", trim(m));
    }
    let digits = (3 - v.abs().log10().floor() as i32 - 1).clamp(0, 6) as usize;
    trim(&format!("{v:.digits$}"))
}

/// Integers with thousands separators, as the README writes parameter counts (1,275,408).
pub fn grouped(v: i64) -> String {
    let digits = v.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0 { format!("-{out}") } else { out }
}

fn trim(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(si(250_000.0), "250k");
        assert_eq!(si(1_200_000.0), "1.2M");
        assert_eq!(si(12.0), "12");
        assert_eq!(num(0.01234), "0.0123");
        assert_eq!(num(1.5), "1.5");
        assert_eq!(num(123.4), "123");
        assert_eq!(num(3.2503e23), "3.25e23");
        assert_eq!(num(2.6338e-15), "2.63e-15");
        let (lo, hi) = log_bounds([1.0, 1.0], 1.1);
        assert!(lo < 1.0 && hi > 1.0);
        assert_eq!(grouped(1275408), "1,275,408");
        assert_eq!(grouped(-12), "-12");
    }

    #[test]
    fn log_ticks_label_every_range() {
        assert_eq!(LogAxis::new((0.5, 2000.0)).ticks(12), vec![1.0, 10.0, 100.0, 1000.0]);
        assert_eq!(LogAxis::new((3.5, 7.0)).ticks(12), vec![4.0, 5.0, 6.0, 7.0]);
        // Under a decade: 1..9 per decade, as long as that stays readable.
        let t = LogAxis::new((40e3, 250e3)).ticks(12);
        assert_eq!(t, vec![40e3, 50e3, 60e3, 70e3, 80e3, 90e3, 100e3, 200e3]);
        assert_eq!(LogAxis::new((40e3, 250e3)).ticks(5), vec![50e3, 100e3, 200e3]);
        let t = LogAxis::new((1.01, 1.09)).ticks(12);
        assert!(t.len() >= 2 && t.iter().all(|v| (1.01..=1.09).contains(v)), "{t:?}");
    }
}

/// A linear axis with ticks exactly at the given values (the depths or head counts a sweep ran).
/// plotters' own `with_key_points` over f64 loses the label formatter, hence this small type.
#[derive(Clone, Debug)]
pub struct Ticks {
    pub lo: f64,
    pub hi: f64,
    pub keys: Vec<f64>,
}

impl Ranged for Ticks {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (f * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, _hint: H) -> Vec<f64> {
        self.keys.iter().copied().filter(|k| (self.lo..=self.hi).contains(k)).collect()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// A logarithmic axis with readable ticks at every range: plotters' `log_scale()` labels only
/// powers of ten (and a handful of sub-ticks), which leaves a metric spanning less than a decade
/// with no labels at all.
#[derive(Clone, Debug)]
pub struct LogAxis {
    pub lo: f64,
    pub hi: f64,
}

impl LogAxis {
    pub fn new((lo, hi): (f64, f64)) -> Self {
        Self { lo, hi }
    }

    /// Ticks at m·10^k for the first mantissa set giving at least 4 ticks (a coarser one if that
    /// would crowd the axis); linear "nice" steps when even 1..9 gives fewer than 2.
    pub fn ticks(&self, max: usize) -> Vec<f64> {
        const SETS: [&[f64]; 4] = [&[1.0], &[1.0, 2.0, 5.0], &[1.0, 2.0, 3.0, 5.0], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]];
        let (k0, k1) = (self.lo.log10().floor() as i32, self.hi.log10().ceil() as i32);
        let at = |set: &[f64]| -> Vec<f64> {
            (k0..=k1)
                .flat_map(|k| set.iter().map(move |m| m * 10f64.powi(k)))
                .filter(|v| *v >= self.lo * (1.0 - 1e-9) && *v <= self.hi * (1.0 + 1e-9))
                .collect()
        };
        let mut prev: Vec<f64> = Vec::new();
        for set in SETS {
            let t = at(set);
            if t.len() > max.max(2) && prev.len() >= 2 {
                return prev;
            }
            if t.len() >= 4 {
                return t;
            }
            prev = t;
        }
        if prev.len() >= 2 {
            return prev;
        }
        // About five steps of 1, 2 or 5 × 10^k.
        let raw = (self.hi - self.lo) / 5.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw * (1.0 - 1e-9)).unwrap_or(raw);
        let first = (self.lo / step).ceil() as i64;
        let last = (self.hi / step).floor() as i64;
        (first..=last).map(|i| i as f64 * step).filter(|v| *v > 0.0).collect()
    }
}

impl Ranged for LogAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v.max(self.lo * 1e-6).ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln());
        limit.0 + (f * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        self.ticks(hint.max_num_points().min(12))
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}
