//! Key parsing on arbitrary input: never panics; anything accepted as an
//! Inlet key round-trips its id and digest; a verified key re-parses the same.
//! The checks live in `fuzz/checks.rs`, shared with the regression replay.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::key_parse(data));
