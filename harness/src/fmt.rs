//! Number formatting shared by the commands, the plots and the report (below all of them).

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
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn trim(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

/// At most `n` characters of `s`, with an ellipsis: error messages never echo a whole input.
pub fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!(
            "{}... ({} characters)",
            s.chars().take(n).collect::<String>(),
            s.chars().count()
        )
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
        assert_eq!(grouped(1275408), "1,275,408");
        assert_eq!(grouped(-12), "-12");
    }
}
