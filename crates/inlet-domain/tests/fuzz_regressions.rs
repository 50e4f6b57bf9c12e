//! Fuzzing findings as regression tests: every file under
//! `fuzz/regressions/<target>/` (and the seeds under `fuzz/seeds/<target>/`)
//! goes through the checks of the cargo-fuzz target of that name: the same
//! functions (`fuzz/checks.rs`), which the targets in `fuzz/fuzz_targets/`
//! call. To keep a finding, copy its artifact there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../fuzz/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

use checks::NOW;
use inlet_domain::{ApiKey, Batch, BatchLimits, Envelope};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut out = Vec::new();
    for dir in ["regressions", "seeds"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            out.push((e.path(), std::fs::read(e.path()).unwrap()));
        }
    }
    out
}

#[test]
fn every_kept_input_passes_its_target_checks() {
    let mut seen = 0;
    for (target, check) in [
        ("key_parse", checks::key_parse as fn(&[u8])),
        ("batch_decode", checks::batch_decode),
        ("envelope_decode", checks::envelope_decode),
    ] {
        for (path, data) in inputs(target) {
            let result = std::panic::catch_unwind(|| check(&data));
            assert!(
                result.is_ok(),
                "{} fails the {target} checks",
                path.display()
            );
            seen += 1;
        }
    }
    assert!(seen >= 5, "the seeds at least");
}

#[test]
fn seeds_are_meaningful() {
    // The seeds start the fuzzers from valid inputs.
    let batch = inputs("batch_decode");
    assert!(
        batch
            .iter()
            .any(|(_, d)| Batch::decode(d, &BatchLimits::default(), NOW).is_ok())
    );
    let env = inputs("envelope_decode");
    assert!(env.iter().any(|(_, d)| Envelope::decode(d).is_ok()));
    let keys = inputs("key_parse");
    assert!(
        keys.iter()
            .any(|(_, d)| ApiKey::parse_format(std::str::from_utf8(d).unwrap()).is_ok())
    );
}
