//! The `ditkd` binary as a user runs it: answers, and clear non-zero exits on bad input.

mod common;
use common::ditkd;

#[test]
fn info_prints_size_and_cost() {
    let (rc, out, _) = ditkd(&["info", "DiT-XL/2"]);
    assert_eq!(rc, 0);
    assert!(
        out.contains("674,834,720") && out.contains("675,129,632"),
        "{out}"
    );
    assert!(
        out.contains("tokens       256") && out.contains("head dim     72"),
        "{out}"
    );
    let (rc, out, _) = ditkd(&["info", "depth=4,width=96,heads=4"]);
    assert_eq!(rc, 0);
    assert!(out.contains("head dim     24"), "{out}");
    // A training config names its model.
    let teacher = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../sweeps/teachers/fashion-mnist.yaml"
    );
    let (rc, out, _) = ditkd(&["info", teacher]);
    assert_eq!(rc, 0);
    assert!(out.contains("1,275,408"), "{out}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let (rc, _, err) = ditkd(&["info", "depth=4,width=100,heads=3"]);
    assert_eq!(rc, 1);
    assert!(err.contains("num_heads") && err.contains("100"), "{err}");
    let (rc, _, err) = ditkd(&["info", "DiT-M/2"]);
    assert_eq!(rc, 1);
    assert!(err.contains("unknown preset"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("t.yaml");
    std::fs::write(&bad, "name: x\nsteps: 5\nmodle: {}\n").unwrap();
    let (rc, _, err) = ditkd(&["teacher", "--config", bad.to_str().unwrap()]);
    assert_eq!(rc, 1);
    assert!(err.contains("t.yaml") && err.contains("modle"), "{err}");
    let (rc, _, err) = ditkd(&[
        "sample",
        "--checkpoint",
        dir.path().join("nope").to_str().unwrap(),
    ]);
    assert_eq!(rc, 1);
    assert!(err.contains("nope"), "{err}");
}

/// The shipped specs pass the same validation a run does (`--dry-run`); the quick study's full run
/// is not a test (it takes minutes), its plan is.
#[test]
fn shipped_specs_validate() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    for spec in ["quick", "ci", "fashion-mnist", "heads", "kd-vs-scratch"] {
        let p = format!("{root}/sweeps/{spec}.yaml");
        let out = tempfile::tempdir().unwrap();
        let (rc, stdout, err) = ditkd(&[
            "sweep",
            &p,
            "--dry-run",
            "--out",
            out.path().to_str().unwrap(),
        ]);
        assert_eq!(rc, 0, "{spec}: {err}");
        assert!(stdout.contains("runs ("), "{spec}: {stdout}");
    }
}
