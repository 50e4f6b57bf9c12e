//! Batch decoding and validation, and bounded decompression, on arbitrary
//! bytes: never panics, never exceeds the decompression limit, and a batch
//! that validates re-validates after a serde round trip of its wire form.
#![no_main]

use inlet_domain::{Batch, BatchLimits, ContentEncoding, WireBatch};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_790_000_000_000;
const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
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
});
