//! Envelope decoding on arbitrary bytes: never panics, and whatever decodes
//! encodes back to the same bytes (the format has one encoding per value).
#![no_main]

use inlet_domain::Envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::decode(data) {
        assert_eq!(env.encode(), data);
        let _ = env.dedup_key();
    }
});
