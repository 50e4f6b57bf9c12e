//! Envelope decoding on arbitrary bytes: never panics, and whatever decodes
//! encodes back to the same bytes (the format has one encoding per value).
//! The checks live in `fuzz/checks.rs`, shared with the regression replay.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::envelope_decode(data));
