//! The metric columns of the tables, in one list: what the axes call each metric, where the
//! teacher's and the real data's values of it are, and whether `ditkd table` summarises it over
//! seeds. Every evaluation field is a column of `runs.parquet` and `curves.parquet` (summaries and
//! curve rows flatten [`EvalResult`]) and `ditkd fit --metric NAME` models any of them; this list
//! is what plots, the law's floor and the summary table know about a metric beyond its values.
//! Adding a metric: its field in [`EvalResult`] (`eval.rs`) and one entry in [`COLUMNS`].

use crate::eval::EvalResult;
use crate::reference::{Floor, MeanStd};

/// One metric column.
pub struct Column {
    /// The column's name in the tables (the `EvalResult` field).
    pub name: &'static str,
    /// What plot axes call it.
    pub label: &'static str,
    /// Its value in one evaluation (the teacher's row of `reference.json`), if measured there.
    pub value: fn(&EvalResult) -> Option<f64>,
    /// The real-data floor of it (`reference.json`), if the reference measures one.
    pub floor: fn(&Floor) -> Option<&MeanStd>,
    /// `ditkd table` gives its mean and std over seeds (when the table has the column).
    pub summarised: bool,
}

fn none(_: &Floor) -> Option<&MeanStd> {
    None
}

/// Every metric column the harness knows beyond its values, in the summary table's order.
pub const COLUMNS: &[Column] = &[
    Column {
        name: "fid_proxy",
        label: "FID-proxy",
        value: |m| Some(m.fid_proxy),
        floor: |f| Some(&f.fid_proxy),
        summarised: true,
    },
    Column {
        name: "fid",
        label: "FID",
        value: |m| m.fid,
        floor: |f| f.fid.as_ref(),
        summarised: true,
    },
    Column {
        name: "fid_inf",
        label: "fid_inf",
        value: |m| m.fid_inf,
        floor: none,
        summarised: true,
    },
    Column {
        name: "kid",
        label: "KID",
        value: |m| Some(m.kid),
        floor: |f| Some(&f.kid),
        summarised: true,
    },
    Column {
        name: "precision",
        label: "precision",
        value: |m| Some(m.precision),
        floor: none,
        summarised: true,
    },
    Column {
        name: "recall",
        label: "recall",
        value: |m| Some(m.recall),
        floor: none,
        summarised: true,
    },
    Column {
        name: "latency_ms",
        label: "latency_ms",
        value: |m| m.latency_ms,
        floor: none,
        summarised: true,
    },
    Column {
        name: "class_accuracy",
        label: "class_accuracy",
        value: |m| Some(m.class_accuracy),
        floor: none,
        summarised: false,
    },
];

/// The column called `name`, if the harness knows more of it than its values.
pub fn column(name: &str) -> Option<&'static Column> {
    COLUMNS.iter().find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_names_an_evaluation_field_once() {
        let fields = serde_json::to_value(EvalResult {
            fid: Some(1.0),
            fid_inf: Some(1.0),
            latency_ms: Some(1.0),
            ..EvalResult::default()
        })
        .unwrap();
        for (i, c) in COLUMNS.iter().enumerate() {
            assert!(
                fields.get(c.name).is_some(),
                "{} is not an EvalResult field",
                c.name
            );
            assert!(
                COLUMNS[..i].iter().all(|d| d.name != c.name),
                "{} listed twice",
                c.name
            );
        }
    }
}
