//! Fuzzing findings as regression tests: every file under
//! `fuzz/regressions/<target>/` (and the seeds under `fuzz/seeds/<target>/`)
//! goes through the same checks as the cargo-fuzz target of that name
//! (`fuzz/fuzz_targets/`). To keep a finding, copy its artifact there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use inlet_domain::{
    ApiKey, Batch, BatchLimits, ContentEncoding, Envelope, KeyDigest, KeyVerifier, SigningSecret,
    WireBatch,
};

const NOW: i64 = 1_790_000_000_000;

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

fn key_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let verifier = KeyVerifier::new(vec![SigningSecret::new(1, &[7; 32]).unwrap()]).unwrap();
    if let Ok(key) = ApiKey::parse(text, &verifier) {
        assert!(ApiKey::parse_format(text).is_ok());
        assert_eq!(key.digest(), KeyDigest::of_secret(text));
    }
}

fn batch_decode(data: &[u8]) {
    let limits = BatchLimits::default();
    if let Ok(batch) = Batch::decode(data, &limits, NOW) {
        let wire: WireBatch = serde_json::from_slice(data).unwrap();
        let again = serde_json::to_vec(&wire).unwrap();
        assert_eq!(Batch::decode(&again, &limits, NOW).unwrap(), batch);
    }
    for enc in [
        ContentEncoding::Gzip,
        ContentEncoding::Deflate,
        ContentEncoding::Zstd,
        ContentEncoding::Identity,
    ] {
        if let Ok(out) = enc.decode(data, 64 * 1024) {
            assert!(out.len() <= 64 * 1024);
            let _ = Batch::decode(&out, &limits, NOW);
        }
    }
}

fn envelope_decode(data: &[u8]) {
    if let Ok(env) = Envelope::decode(data) {
        assert_eq!(env.encode(), data);
    }
}

#[test]
fn every_kept_input_passes_its_target_checks() {
    let mut seen = 0;
    for (target, check) in [
        ("key_parse", key_parse as fn(&[u8])),
        ("batch_decode", batch_decode),
        ("envelope_decode", envelope_decode),
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
