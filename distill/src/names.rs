//! Enums a user names (on the command line, in specs and tables): each is parsed by searching its
//! derived variant list for the `Display` name, so the names live in one `match` per enum and a
//! new variant is parsed, listed and written the same way without a hand-kept list.

/// The variant of `all` whose `Display` name is `s`; otherwise an error naming `what` and listing
/// every name in `all`'s order (e.g. "unknown setup `magic` (kd, feat, mi1, ta, onestep, scratch)").
pub fn parse<T: Copy + std::fmt::Display>(
    all: &[T],
    s: &str,
    what: &str,
) -> std::result::Result<T, String> {
    all.iter()
        .copied()
        .find(|x| x.to_string() == s)
        .ok_or_else(|| {
            let names: Vec<String> = all.iter().map(|x| x.to_string()).collect();
            format!("unknown {what} `{s}` ({})", names.join(", "))
        })
}

#[cfg(test)]
mod tests {
    use crate::run::RunStatus;

    #[test]
    fn run_statuses_read_back_as_written() {
        for &s in RunStatus::ALL {
            let written = serde_json::to_string(&s).unwrap();
            assert_eq!(written, format!("\"{s}\""));
            assert_eq!(s.to_string().parse::<RunStatus>().unwrap(), s);
        }
        assert_eq!(
            "done".parse::<RunStatus>().unwrap_err(),
            "unknown run status `done` (ok, diverged, failed)"
        );
    }
}
