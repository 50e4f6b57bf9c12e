//! Key parsing on arbitrary input: never panics; anything accepted as an
//! Inlet key round-trips its id and digest; a verified key re-parses the same.
#![no_main]

use inlet_domain::{ApiKey, KeyDigest, KeyVerifier, Provenance, SigningSecret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let verifier = KeyVerifier::new(vec![SigningSecret::new(1, &[7; 32]).unwrap()]).unwrap();
    let format_only = ApiKey::parse_format(text);
    match ApiKey::parse(text, &verifier) {
        Ok(key) => {
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
        Err(_) => {}
    }
});
