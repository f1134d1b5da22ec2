//! Look of every plot: the embedded font, the palette, sizes and number formats.

use std::sync::Once;

use plotters::chart::{ChartContext, SeriesLabelPosition};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::{Cartesian2d, DrawingBackend, IntoFont, TextStyle};
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

/// A log axis never spans less than this ratio: a flatter range is opened around its geometric
/// centre, so at least three ticks fit on it with three-significant-digit labels.
pub const MIN_LOG_RATIO: f64 = 1.1;

/// `(lo, hi)` of the finite positive values, or None.
pub fn positive_range(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.into_iter().filter(|v| v.is_finite() && *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    lo.is_finite().then_some((lo, hi))
}

/// `(lo, hi)` opened, if needed, to a ratio of at least [`MIN_LOG_RATIO`] around its geometric centre.
fn at_least_min_ratio((lo, hi): (f64, f64)) -> (f64, f64) {
    if hi / lo >= MIN_LOG_RATIO {
        return (lo, hi);
    }
    let mid = (lo * hi).sqrt();
    let half = MIN_LOG_RATIO.sqrt();
    (mid / half, mid * half)
}

/// `(lo, hi)` of the positive values, widened on each side by `pad` times the range's own log
/// span (0.05: 5 %), so the axis hugs the data while points stay off the frame.
pub fn log_bounds(values: impl IntoIterator<Item = f64>, pad: f64) -> (f64, f64) {
    let a = LogAxis::fit(values, pad, pad);
    (a.lo, a.hi)
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

/// A linear axis with ticks exactly at the given values (the depths or head counts a sweep ran).
/// plotters' own `with_key_points` over f64 loses the label formatter, hence this small type.
/// With fewer than three of them in range, the integers inside the range are labelled as well.
#[derive(Clone, Debug)]
pub struct Ticks {
    pub lo: f64,
    pub hi: f64,
    pub keys: Vec<f64>,
}

impl Ticks {
    /// The labelled values: the keys in range, plus the integers inside the range when the keys
    /// alone would label fewer than three values.
    pub fn ticks(&self) -> Vec<f64> {
        let mut t: Vec<f64> = self
            .keys
            .iter()
            .copied()
            .filter(|k| (self.lo..=self.hi).contains(k))
            .collect();
        if t.len() < 3 && self.hi - self.lo <= 24.0 {
            let (a, b) = (
                (self.lo + 1e-9).ceil() as i64,
                (self.hi - 1e-9).floor() as i64,
            );
            t.extend((a..=b).map(|i| i as f64));
            t.sort_by(f64::total_cmp);
            t.dedup();
        }
        t
    }
}

impl Ranged for Ticks {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (f * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, _hint: H) -> Vec<f64> {
        self.ticks()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// A logarithmic axis with readable ticks at every range: plotters' `log_scale()` labels only
/// powers of ten (and a handful of sub-ticks), which leaves a metric spanning less than a decade
/// with no labels at all.
///
/// `data` is the range the values actually cover (inside `lo..hi`, which adds the padding): the
/// ticks are chosen so that at least three fall inside it.
#[derive(Clone, Debug)]
pub struct LogAxis {
    pub lo: f64,
    pub hi: f64,
    pub data: (f64, f64),
}

/// Smallest distance between two ticks, as a fraction of the axis length (labels must not touch).
const MIN_GAP: f64 = 0.05;
/// A decade covering at least this fraction of the axis must carry a tick of its own.
const DECADE_SHARE: f64 = 0.2;

/// `m · 10^k`, exact for the integer mantissas and exponents used here (0.05, not 0.0500…01).
fn scaled(m: f64, k: i32) -> f64 {
    if k >= 0 {
        m * 10f64.powi(k)
    } else {
        m / 10f64.powi(-k)
    }
}

impl LogAxis {
    /// An axis over exactly `lo..hi`, all of it counted as data.
    pub fn new((lo, hi): (f64, f64)) -> Self {
        Self {
            lo,
            hi,
            data: (lo, hi),
        }
    }

    /// The axis for `values` (their positive part): their range, opened to at least
    /// [`MIN_LOG_RATIO`], plus `pad_lo` and `pad_hi` times its log span below and above.
    pub fn fit(values: impl IntoIterator<Item = f64>, pad_lo: f64, pad_hi: f64) -> Self {
        let Some(r) = positive_range(values) else {
            return Self::new((0.1, 10.0));
        };
        let (lo, hi) = at_least_min_ratio(r);
        let span = (hi / lo).ln();
        Self {
            lo: lo * (-pad_lo * span).exp(),
            hi: hi * (pad_hi * span).exp(),
            data: (lo, hi),
        }
    }

    /// Position of `v` along the axis, 0 at `lo` and 1 at `hi`.
    fn frac(&self, v: f64) -> f64 {
        (v / self.lo).ln() / (self.hi / self.lo).ln()
    }

    /// The decade segments that need a tick of their own: `[a, b)` (`[a, b]` for the topmost,
    /// flagged true) for each decade `[10^k, 10^(k+1))` covering at least [`DECADE_SHARE`] of the
    /// axis. A power of ten labels the decade it opens, not the one it closes.
    fn decades(&self) -> Vec<(f64, f64, bool)> {
        let (k0, k1) = (
            self.lo.log10().floor() as i32,
            self.hi.log10().floor() as i32,
        );
        (k0..=k1)
            .filter_map(|k| {
                let (a, b) = (self.lo.max(scaled(1.0, k)), self.hi.min(scaled(1.0, k + 1)));
                (b > a && self.frac(b) - self.frac(a) >= DECADE_SHARE).then_some((
                    a,
                    b,
                    b >= self.hi,
                ))
            })
            .collect()
    }

    /// Every candidate tick set, coarsest kinds first: m·10^k for growing mantissa sets (1; 1-2-5;
    /// 1-2-3-5; 1..9), then linear "nice" steps (5, 2, 1 × 10^k, from the range's own magnitude
    /// down), which give the 100-105-110 or 1.1-1.2-1.3 ticks of a range under a decade.
    fn candidates(&self, max: usize) -> Vec<Vec<f64>> {
        const SETS: [&[f64]; 4] = [
            &[1.0],
            &[1.0, 2.0, 5.0],
            &[1.0, 2.0, 3.0, 5.0],
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
        ];
        let inside = |v: &f64| *v >= self.lo * (1.0 - 1e-9) && *v <= self.hi * (1.0 + 1e-9);
        let (k0, k1) = (
            self.lo.log10().floor() as i32,
            self.hi.log10().ceil() as i32,
        );
        let mut out: Vec<Vec<f64>> = SETS
            .iter()
            .map(|set| {
                (k0..=k1)
                    .flat_map(|k| set.iter().map(move |m| scaled(*m, k)))
                    .filter(inside)
                    .collect()
            })
            .collect();
        // Powers of ten, plus 1-2-5 (or 1..9) ticks in the partial decades at either end only: a
        // range of several decades whose ends would otherwise go unlabelled.
        if let (Some(first), Some(last)) = (out[0].first().copied(), out[0].last().copied()) {
            for fine in [out[1].clone(), out[3].clone()] {
                let mut t: Vec<f64> = out[0]
                    .iter()
                    .copied()
                    .chain(
                        fine.into_iter()
                            .filter(|v| *v < first * (1.0 - 1e-9) || *v > last * (1.0 + 1e-9)),
                    )
                    .collect();
                t.sort_by(f64::total_cmp);
                out.push(t);
            }
        }
        let top = (self.hi - self.lo).log10().floor() as i32;
        'steps: for k in (top - 3..=top).rev() {
            for m in [5i64, 2, 1] {
                let step = scaled(m as f64, k);
                let (a, b) = (
                    (self.lo / step - 1e-9).ceil() as i64,
                    (self.hi / step + 1e-9).floor() as i64,
                );
                if b - a + 1 > max as i64 {
                    break 'steps;
                }
                let t: Vec<f64> = (a..=b)
                    .map(|i| scaled((i * m) as f64, k))
                    .filter(|v| *v > 0.0 && inside(v))
                    .collect();
                out.push(t);
            }
        }
        out
    }

    /// Ticks for an axis showing at most `max` labels: the coarsest candidate set that is readable
    /// (no two ticks closer than 5 % of the axis), puts at least 3 ticks inside the data range and
    /// one in every decade covering a quarter of the axis, preferring 4 or more ticks on the axis;
    /// requirements are dropped in reverse order when no set meets them all.
    pub fn ticks(&self, max: usize) -> Vec<f64> {
        let max = max.max(3);
        let mut cands = self.candidates(max);
        cands.retain(|t| !t.is_empty() && t.len() <= max);
        // Stable: among sets of equal size the m·10^k ones (listed first) win.
        cands.sort_by_key(|t| t.len());
        let (dlo, dhi) = self.data;
        let in_data = |t: &[f64]| {
            t.iter()
                .filter(|v| **v >= dlo * (1.0 - 1e-9) && **v <= dhi * (1.0 + 1e-9))
                .count()
        };
        let readable = |t: &[f64]| {
            t.windows(2)
                .all(|w| self.frac(w[1]) - self.frac(w[0]) >= MIN_GAP - 1e-12)
        };
        let decades = |t: &[f64]| {
            self.decades().into_iter().all(|(a, b, top)| {
                t.iter().any(|v| {
                    *v >= a * (1.0 - 1e-9)
                        && if top {
                            *v <= b * (1.0 + 1e-9)
                        } else {
                            *v < b * (1.0 - 1e-9)
                        }
                })
            })
        };
        let passes: [&dyn Fn(&[f64]) -> bool; 3] = [
            &|t| readable(t) && in_data(t) >= 3 && decades(t) && t.len() >= 4,
            &|t| readable(t) && in_data(t) >= 3 && decades(t),
            &|t| readable(t) && in_data(t) >= 3,
        ];
        for pass in passes {
            if let Some(t) = cands.iter().find(|t| pass(t)) {
                return t.clone();
            }
        }
        // Nothing puts 3 readable ticks in the data: the readable set with the most of them.
        let pool: Vec<&Vec<f64>> = cands.iter().filter(|t| readable(t)).collect();
        let pool = if pool.is_empty() {
            cands.iter().collect()
        } else {
            pool
        };
        pool.into_iter()
            .rev()
            .max_by_key(|t| in_data(t))
            .cloned()
            .unwrap_or_default()
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

/// Draw the series labels at `spot` in the one legend style every plot uses.
pub fn draw_legend<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    spot: SeriesLabelPosition,
) -> Result<(), plotters::drawing::DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(spot)
        .background_style(plotters::style::Color::mix(
            &plotters::style::colors::WHITE,
            0.85,
        ))
        .border_style(plotters::style::colors::BLACK)
        .label_font((FAMILY, TICK))
        .draw()
}

/// Where to put the legend (series labels `labels`) so it covers the fewest of the plotted
/// `points` (markers), `lines` (polylines and error bars; both in data coordinates) and `boxes`
/// (text already drawn, in backend pixels): the corners first, then the edge middles; ties keep
/// the earlier (upper right first).
pub fn legend_position<DB, X, Y>(
    chart: &ChartContext<'_, DB, Cartesian2d<X, Y>>,
    labels: &[String],
    points: &[(f64, f64)],
    lines: &[Vec<(f64, f64)>],
    boxes: &[((i32, i32), (i32, i32))],
) -> SeriesLabelPosition
where
    DB: DrawingBackend,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    use SeriesLabelPosition::*;
    let area = chart.plotting_area();
    let (xr, yr) = area.get_pixel_range();
    // The box plotters draws: widest label + 30 px of legend glyph + 2 × 10 px margin, and lines
    // 1.25 font heights apart.
    let font: TextStyle = (FAMILY, TICK).into_font().into();
    let text_w = labels
        .iter()
        .map(|l| {
            area.estimate_text_size(l, &font)
                .map(|s| s.0 as i32)
                .unwrap_or(9 * l.len() as i32)
        })
        .max()
        .unwrap_or(0);
    let (w, h) = (
        text_w + 30 + 20,
        (labels.len().max(1) as f64 * 1.25 * TICK as f64).ceil() as i32 + 20,
    );
    let pix = |p: &(f64, f64)| chart.backend_coord(p);
    let mut marks: Vec<((i32, i32), i64)> = points
        .iter()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .map(|p| (pix(p), 10))
        .collect();
    for line in lines {
        for seg in line.windows(2) {
            let (a, b) = (pix(&seg[0]), pix(&seg[1]));
            let n = ((b.0 - a.0).abs().max((b.1 - a.1).abs()) / 4).clamp(1, 2000);
            for i in 0..=n {
                let t = i as f64 / n as f64;
                marks.push((
                    (
                        a.0 + ((b.0 - a.0) as f64 * t) as i32,
                        a.1 + ((b.1 - a.1) as f64 * t) as i32,
                    ),
                    1,
                ));
            }
        }
    }
    let (x0, x1, y0, y1) = (xr.start, xr.end, yr.start, yr.end);
    let spots = [
        (UpperRight, x1 - 5 - w, y0 + 5),
        (UpperLeft, x0 + 5, y0 + 5),
        (LowerRight, x1 - 5 - w, y1 - 5 - h),
        (LowerLeft, x0 + 5, y1 - 5 - h),
        (MiddleRight, x1 - 5 - w, (y0 + y1 - h) / 2),
        (MiddleLeft, x0 + 5, (y0 + y1 - h) / 2),
        (UpperMiddle, (x0 + x1 - w) / 2, y0 + 5),
        (LowerMiddle, (x0 + x1 - w) / 2, y1 - 5 - h),
    ];
    // A marker counts when it would touch the box (8 px: the largest marker radius).
    let cost = |bx: i32, by: i32| -> i64 {
        let hits: i64 = marks
            .iter()
            .filter(|((x, y), _)| {
                *x >= bx - 8 && *x <= bx + w + 8 && *y >= by - 8 && *y <= by + h + 8
            })
            .map(|(_, c)| c)
            .sum();
        let covered: i64 = boxes
            .iter()
            .filter(|(a, b)| a.0 < bx + w && b.0 > bx && a.1 < by + h && b.1 > by)
            .count() as i64;
        hits + 10 * covered
    };
    spots
        .into_iter()
        .min_by_key(|(_, bx, by)| cost(*bx, *by))
        .map(|s| s.0)
        .unwrap_or(UpperRight)
}

/// The references every student is measured against, drawn under the data: real data as a grey
/// band (the floor at the sample count, mean ± std) and the teacher as a dashed line. `x_at(k)`
/// maps k in [0, 1] across the x axis (linear or log, as the chart's axis is).
pub fn draw_references<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    x_at: impl Fn(f64) -> f64,
    teacher: Option<f64>,
    floor: Option<(f64, f64)>,
) -> Result<(), plotters::drawing::DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    use plotters::prelude::{Color, PathElement, Rectangle, BLACK};
    if let Some((m, sd)) = floor {
        chart.draw_series([Rectangle::new(
            [(x_at(0.0), (m - sd).max(m * 0.5)), (x_at(1.0), m + sd)],
            RGBColor(190, 190, 190).mix(0.5).filled(),
        )])?;
    }
    if let Some(t) = teacher {
        const DASHES: usize = 60;
        chart.draw_series((0..DASHES).map(|i| {
            let k = |j: f64| x_at(j / DASHES as f64);
            PathElement::new(
                vec![(k(i as f64), t), (k(i as f64 + 0.5), t)],
                BLACK.stroke_width(2),
            )
        }))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_value_gets_a_range() {
        let (lo, hi) = log_bounds([1.0, 1.0], 0.05);
        assert!(lo < 1.0 && hi > 1.0);
    }

    /// The properties every log axis must have: at least 3 ticks inside the data, none closer
    /// than `MIN_GAP`, all inside the axis, and a tick in every decade covering a quarter of it.
    fn check(a: &LogAxis, t: &[f64]) {
        let (dlo, dhi) = a.data;
        let inside = t
            .iter()
            .filter(|v| **v >= dlo * (1.0 - 1e-9) && **v <= dhi * (1.0 + 1e-9))
            .count();
        assert!(inside >= 3, "{a:?}: {t:?}");
        assert!(
            t.iter()
                .all(|v| *v >= a.lo * (1.0 - 1e-9) && *v <= a.hi * (1.0 + 1e-9)),
            "{a:?}: {t:?}"
        );
        assert!(
            t.windows(2)
                .all(|w| a.frac(w[1]) - a.frac(w[0]) >= MIN_GAP - 1e-9),
            "{a:?}: {t:?}"
        );
        for (lo, hi, top) in a.decades() {
            let hit = t.iter().any(|v| {
                *v >= lo * (1.0 - 1e-9)
                    && if top {
                        *v <= hi * (1.0 + 1e-9)
                    } else {
                        *v < hi * (1.0 - 1e-9)
                    }
            });
            assert!(hit, "{a:?}: decade {lo}..{hi} unlabelled in {t:?}");
        }
    }

    #[test]
    fn log_ticks_label_every_range() {
        assert_eq!(
            LogAxis::new((0.5, 2000.0)).ticks(12),
            vec![1.0, 10.0, 100.0, 1000.0]
        );
        assert_eq!(LogAxis::new((3.5, 7.0)).ticks(12), vec![4.0, 5.0, 6.0, 7.0]);
        // Under a decade: a 1-2-5 set only where it gives 4 ticks, else linear steps.
        assert_eq!(
            LogAxis::new((40e3, 250e3)).ticks(12),
            vec![50e3, 100e3, 150e3, 200e3, 250e3]
        );
        assert_eq!(
            LogAxis::new((0.028, 1.1)).ticks(12),
            vec![0.05, 0.1, 0.2, 0.5, 1.0]
        );
        let t = LogAxis::new((1.01, 1.09)).ticks(12);
        assert!(
            t.len() >= 3 && t.iter().all(|v| (1.01..=1.09).contains(v)),
            "{t:?}"
        );
        // The FID-proxy of a short sweep: 100..125 must not read 70, 80, 90, 100.
        let a = LogAxis::fit([100.9, 112.0, 124.6], 0.05, 0.05);
        assert!(a.lo > 95.0 && a.hi < 130.0, "{a:?}");
        let t = a.ticks(11);
        assert_eq!(t, vec![100.0, 105.0, 110.0, 115.0, 120.0, 125.0]);
        check(&a, &t);
    }

    #[test]
    fn log_ticks_hold_on_any_range() {
        // Synthetic ranges from 1.02× to seven decades, at every magnitude.
        for lo in [1.3e-4, 0.021, 0.9, 3.3, 97.0, 1234.0, 7.7e4, 2.5e6] {
            for ratio in [
                1.02, 1.1, 1.25, 1.6, 2.2, 3.0, 4.5, 7.0, 12.0, 40.0, 300.0, 5e3, 1e7,
            ] {
                for pad in [0.0, 0.05] {
                    let a = LogAxis::fit([lo, lo * ratio], pad, pad);
                    check(&a, &a.ticks(11));
                }
            }
        }
        // A single value opens to MIN_LOG_RATIO.
        let a = LogAxis::fit([42.0], 0.05, 0.05);
        assert!(a.data.1 / a.data.0 >= MIN_LOG_RATIO * (1.0 - 1e-9));
        check(&a, &a.ticks(11));
    }

    #[test]
    fn explicit_ticks_fill_in_integers() {
        assert_eq!(
            Ticks {
                lo: 1.0,
                hi: 5.0,
                keys: vec![2.0, 4.0]
            }
            .ticks(),
            vec![2.0, 3.0, 4.0]
        );
        assert_eq!(
            Ticks {
                lo: 1.0,
                hi: 9.0,
                keys: vec![2.0, 3.0, 8.0]
            }
            .ticks(),
            vec![2.0, 3.0, 8.0]
        );
    }
}
