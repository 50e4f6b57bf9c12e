//! Batch decoding and validation, and bounded decompression, on arbitrary
//! bytes: never panics, never exceeds the decompression limit, and a batch
//! that validates holds an item and re-validates after a serde round trip
//! of its wire form.
//! The checks live in `fuzz/checks.rs`, shared with the regression replay.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::batch_decode(data));
