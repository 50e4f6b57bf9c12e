//! The checks of every fuzz target, written once: each cargo-fuzz target
//! (`fuzz_targets/*.rs`) calls its function here on every input, and
//! `crates/inlet-domain/tests/fuzz_regressions.rs` replays the seeds and
//! kept findings through the same functions in the normal test run. Both
//! include this file with `#[path]`, so a check added here holds in both.
//!
//! A check fails by panicking: that is what the fuzzer reports as a crash.

use inlet_domain::{
    ApiKey, Batch, BatchLimits, ContentEncoding, Envelope, KeyDigest, KeyVerifier, Provenance,
    SigningSecret, WireBatch,
};

/// The clock every batch is validated against (fixed, so a finding
/// replays the same way later).
pub const NOW: i64 = 1_790_000_000_000;

/// The decompression limit the batch target decodes with.
pub const LIMIT: usize = 64 * 1024;

/// Key parsing on arbitrary input: never panics; anything accepted as an
/// Inlet key round-trips its id and digest; a verified key re-parses the
/// same.
pub fn key_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let verifier = KeyVerifier::new(vec![SigningSecret::new(1, &[7; 32]).unwrap()]).unwrap();
    let format_only = ApiKey::parse_format(text);
    if let Ok(key) = ApiKey::parse(text, &verifier) {
        // Full parsing accepts nothing the format check rejects.
        assert!(format_only.is_ok());
        assert_eq!(key.digest(), KeyDigest::of_secret(text));
        assert_eq!(key.expose_secret(), text);
        // Display never reveals more than a short prefix.
        let shown = key.to_string();
        assert!(shown.len() < 40 || !shown.contains(&text[8..]));
        if key.provenance() == Provenance::Verified {
            assert!(key.key_id().is_some());
        }
    }
}

/// Batch decoding and validation, and bounded decompression, on arbitrary
/// bytes: never panics, never exceeds the decompression limit, a batch
/// that validates holds at least one item and re-validates after a serde
/// round trip of its wire form.
pub fn batch_decode(data: &[u8]) {
    let limits = BatchLimits::default();
    if let Ok(batch) = Batch::decode(data, &limits, NOW) {
        assert!(batch.item_count() > 0);
        // The wire form re-parses to the same validated batch.
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
        if let Ok(out) = enc.decode(data, LIMIT) {
            assert!(out.len() <= LIMIT);
            let _ = Batch::decode(&out, &limits, NOW);
        }
    }
}

/// Envelope decoding on arbitrary bytes: never panics, and whatever
/// decodes encodes back to the same bytes (the format has one encoding per
/// value).
pub fn envelope_decode(data: &[u8]) {
    if let Ok(env) = Envelope::decode(data) {
        assert_eq!(env.encode(), data);
        let _ = env.dedup_key();
    }
}
