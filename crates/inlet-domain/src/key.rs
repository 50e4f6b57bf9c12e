//! API keys: the self-checking, signed format Inlet issues, and opaque
//! legacy keys imported from older systems.
//!
//! # Format of an Inlet key
//!
//! ```text
//! inlet_<64 characters of base64url, no padding>   (70 characters in all)
//!
//! decoded payload, 48 bytes:
//!   [0]      format version (1)
//!   [1]      signing secret id: which server secret signed the key
//!   [2..10]  key id (u64, big endian): public, shown by `inlet keys list`
//!   [10..28] 144 random bits
//!   [28..44] tag: HMAC-SHA256(secret, bytes 0..28), first 16 bytes
//!   [44..48] CRC32 (big endian) of bytes 0..44
//! ```
//!
//! Three layers of checking, cheapest first, none of them needing a store:
//! the prefix and length, the alphabet, the CRC (catches typos and
//! truncation), then, when the signing secret is known to this process, the
//! HMAC tag (catches keys Inlet never issued). The HMAC is what lets an
//! instance with cold stores tell "issued by us" from "forged" and accept a
//! push *provisionally* instead of answering 401.
//!
//! Legacy keys (UUIDs, base64 tokens, JWT-like strings — whatever an older
//! system issued) are decided by a store lookup. The local grammar rejects
//! only what no store can hold: an empty key, one longer than
//! [`KEY_MAX_LEN`] bytes, one with control characters, or one that claims
//! the Inlet prefix without being a well-formed Inlet key. `inlet keys
//! import` applies the same grammar, so any raw key it accepts can be
//! presented.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of every key Inlet issues.
pub const KEY_PREFIX: &str = "inlet_";
/// Total length of an Inlet key in characters.
pub const KEY_LEN: usize = KEY_PREFIX.len() + 64;

const FORMAT_VERSION: u8 = 1;
const PAYLOAD_LEN: usize = 48;
const SIGNED_LEN: usize = 28;
const TAG_LEN: usize = 16;
const CRC_OFFSET: usize = 44;
const RANDOM_LEN: usize = 18;

/// Longest key of any kind accepted, in bytes (longer input is rejected
/// before hashing). Generous: tokens of older systems can be JWT-sized.
pub const KEY_MAX_LEN: usize = 4096;

/// Why a key was rejected without any store lookup.
///
/// Every variant means "this string cannot be a valid key", which is a
/// verdict (401), unlike a store failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No key was sent at all.
    #[error("no API key was sent")]
    Missing,
    /// The key has the Inlet prefix but the wrong length (e.g. truncated),
    /// or is longer than [`KEY_MAX_LEN`].
    #[error("API key has the wrong length")]
    Length,
    /// The key contains characters no key can hold: outside the Inlet
    /// alphabet for a key with the Inlet prefix, control characters for any
    /// other.
    #[error("API key contains characters outside its alphabet")]
    Alphabet,
    /// The key's format version is not one this build understands.
    #[error("API key has an unknown format version")]
    Version,
    /// The checksum does not match: a mistyped or corrupted key.
    #[error("API key checksum does not match")]
    Checksum,
    /// The checksum matches but the signature does not: not issued by Inlet.
    #[error("API key signature is not valid")]
    Signature,
}

impl KeyError {
    /// Stable machine-readable code, used in HTTP error bodies and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            KeyError::Missing => "missing_key",
            _ => "malformed_key",
        }
    }

    /// Finer-grained reason, for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            KeyError::Missing => "missing",
            KeyError::Length => "length",
            KeyError::Alphabet => "alphabet",
            KeyError::Version => "version",
            KeyError::Checksum => "checksum",
            KeyError::Signature => "signature",
        }
    }
}

/// The public identifier of a key: safe to log and display.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(u64);

impl KeyId {
    /// Wraps a raw id.
    pub const fn from_u64(id: u64) -> Self {
        KeyId(id)
    }

    /// A fresh random id (for issued and imported keys).
    pub fn random() -> Self {
        KeyId(rand::random())
    }

    /// The raw id.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Parses the 16-hex-digit form produced by `Display`.
    pub fn parse(s: &str) -> Result<Self, InvalidKeyId> {
        if s.len() != 16 {
            return Err(InvalidKeyId);
        }
        u64::from_str_radix(s, 16)
            .map(KeyId)
            .map_err(|_| InvalidKeyId)
    }
}

/// A key id string was not 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a key id is 16 hexadecimal digits")]
pub struct InvalidKeyId;

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl serde::Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        KeyId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Whether a key's origin has been proven by its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// An Inlet key whose HMAC tag was checked against a known secret: Inlet
    /// issued it. Eligible for provisional acceptance when stores are cold.
    Verified,
    /// An Inlet key signed with a secret this process does not hold (e.g. a
    /// secret added on another instance first). Decided by lookup only.
    Unverified,
    /// A legacy opaque key. Decided by lookup only.
    Legacy,
}

/// An API key that passed every local check.
///
/// `Debug` and `Display` never show the secret part: an Inlet key shows its
/// public key id, a legacy key its first four characters.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    text: Box<str>,
    kind: KeyKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Inlet {
        key_id: KeyId,
        secret_id: u8,
        verified: bool,
    },
    Legacy,
}

impl ApiKey {
    /// Parses a key with every local check, including the signature when
    /// `verifier` holds the secret that signed it.
    ///
    /// Costs no I/O. A key that fails here can never be valid.
    pub fn parse(raw: &str, verifier: &KeyVerifier) -> Result<ApiKey, KeyError> {
        let mut key = ApiKey::parse_format(raw)?;
        if let KeyKind::Inlet {
            secret_id,
            ref mut verified,
            ..
        } = key.kind
        {
            match verifier.check(&key.text, secret_id) {
                SignatureCheck::Valid => *verified = true,
                SignatureCheck::UnknownSecret => {}
                SignatureCheck::Forged => return Err(KeyError::Signature),
            }
        }
        Ok(key)
    }

    /// Checks only the format (prefix, length, alphabet, checksum); the
    /// signature stays unverified. For agents, which hold no server secret.
    pub fn parse_format(raw: &str) -> Result<ApiKey, KeyError> {
        if raw.is_empty() {
            return Err(KeyError::Missing);
        }
        if raw.len() > KEY_MAX_LEN {
            return Err(KeyError::Length);
        }
        match raw.strip_prefix(KEY_PREFIX) {
            Some(body) => parse_inlet_body(raw, body),
            None => parse_legacy(raw),
        }
    }

    /// The key exactly as the agent sends it. Handle with care: this is
    /// the secret.
    pub fn expose_secret(&self) -> &str {
        &self.text
    }

    /// The public key id, for Inlet keys (legacy keys carry none).
    pub fn key_id(&self) -> Option<KeyId> {
        match self.kind {
            KeyKind::Inlet { key_id, .. } => Some(key_id),
            KeyKind::Legacy => None,
        }
    }

    /// Whether Inlet's signature on this key was verified.
    pub fn provenance(&self) -> Provenance {
        match self.kind {
            KeyKind::Inlet { verified: true, .. } => Provenance::Verified,
            KeyKind::Inlet { .. } => Provenance::Unverified,
            KeyKind::Legacy => Provenance::Legacy,
        }
    }

    /// The SHA-256 digest stores index keys by.
    pub fn digest(&self) -> crate::KeyDigest {
        crate::KeyDigest::of_secret(&self.text)
    }
}

fn parse_inlet_body(raw: &str, body: &str) -> Result<ApiKey, KeyError> {
    if raw.len() != KEY_LEN {
        return Err(KeyError::Length);
    }
    if !body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(KeyError::Alphabet);
    }
    let mut payload = [0u8; PAYLOAD_LEN];
    // 64 base64 characters always decode to exactly 48 bytes.
    match URL_SAFE_NO_PAD.decode_slice(body, &mut payload) {
        Ok(PAYLOAD_LEN) => {}
        _ => return Err(KeyError::Alphabet),
    }
    let expected = u32::from_be_bytes([payload[44], payload[45], payload[46], payload[47]]);
    if crc32fast::hash(&payload[..CRC_OFFSET]) != expected {
        return Err(KeyError::Checksum);
    }
    if payload[0] != FORMAT_VERSION {
        return Err(KeyError::Version);
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&payload[2..10]);
    Ok(ApiKey {
        text: raw.into(),
        kind: KeyKind::Inlet {
            key_id: KeyId(u64::from_be_bytes(id)),
            secret_id: payload[1],
            verified: false,
        },
    })
}

/// Any token a store could hold: no control characters, and no leading or
/// trailing whitespace (agents' keys are trimmed before they get here, so
/// such a key could never be presented as stored).
fn parse_legacy(raw: &str) -> Result<ApiKey, KeyError> {
    if raw.chars().any(char::is_control) || raw.trim() != raw {
        return Err(KeyError::Alphabet);
    }
    Ok(ApiKey {
        text: raw.into(),
        kind: KeyKind::Legacy,
    })
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            KeyKind::Inlet { key_id, .. } => write!(f, "{KEY_PREFIX}…[{key_id}]"),
            // At most 4 characters, and never more than a quarter of a
            // short key.
            KeyKind::Legacy => {
                let shown = (self.text.chars().count() / 4).min(4);
                let prefix: String = self.text.chars().take(shown).collect();
                write!(f, "{prefix}…")
            }
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({self})")
    }
}

/// A server secret used to sign and verify Inlet keys.
///
/// Several can be configured at once (rotation): each key names the id of
/// the secret that signed it.
#[derive(Clone)]
pub struct SigningSecret {
    id: u8,
    mac: Hmac<Sha256>,
}

/// A signing secret was unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Shorter than 32 bytes: too weak to sign keys with.
    #[error("a signing secret must be at least 32 bytes long (got {0})")]
    TooShort(usize),
    /// Two secrets share one id.
    #[error("two signing secrets share id {0}")]
    DuplicateId(u8),
    /// The secret named as current is not among the configured ones.
    #[error("the current signing secret id {0} is not configured")]
    UnknownCurrent(u8),
}

impl SigningSecret {
    /// Builds a secret from raw bytes (at least 32).
    pub fn new(id: u8, secret: &[u8]) -> Result<Self, SecretError> {
        if secret.len() < 32 {
            return Err(SecretError::TooShort(secret.len()));
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SecretError::TooShort(0))?;
        Ok(SigningSecret { id, mac })
    }

    /// The id keys use to name this secret.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// A stable, non-reversible fingerprint of the secret, so instances can
    /// check that they hold the same secret without revealing it.
    pub fn fingerprint(&self) -> String {
        let mut mac = self.mac.clone();
        mac.update(b"inlet signing secret fingerprint v1");
        hex::encode(&mac.finalize().into_bytes()[..8])
    }

    fn tag(&self, signed: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac.clone();
        mac.update(signed);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    fn verify(&self, signed: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.mac.clone();
        mac.update(signed);
        mac.verify_truncated_left(tag).is_ok()
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningSecret")
            .field("id", &self.id)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

enum SignatureCheck {
    Valid,
    Forged,
    UnknownSecret,
}

/// Verifies key signatures. Holds the secrets an instance knows; may be
/// empty, in which case every Inlet key stays unverified (decided by lookup).
#[derive(Debug, Clone, Default)]
pub struct KeyVerifier {
    secrets: Vec<SigningSecret>,
}

impl KeyVerifier {
    /// A verifier that holds no secret: keys are decided by lookup only.
    pub fn none() -> Self {
        KeyVerifier::default()
    }

    /// A verifier over a set of secrets with distinct ids.
    pub fn new(secrets: Vec<SigningSecret>) -> Result<Self, SecretError> {
        for (i, s) in secrets.iter().enumerate() {
            if secrets[..i].iter().any(|o| o.id == s.id) {
                return Err(SecretError::DuplicateId(s.id));
            }
        }
        Ok(KeyVerifier { secrets })
    }

    /// The configured secrets.
    pub fn secrets(&self) -> &[SigningSecret] {
        &self.secrets
    }

    fn check(&self, text: &str, secret_id: u8) -> SignatureCheck {
        let Some(secret) = self.secrets.iter().find(|s| s.id == secret_id) else {
            return SignatureCheck::UnknownSecret;
        };
        let mut payload = [0u8; PAYLOAD_LEN];
        // Only called on text that already passed `parse_format`.
        if URL_SAFE_NO_PAD
            .decode_slice(&text[KEY_PREFIX.len()..], &mut payload)
            .is_err()
        {
            return SignatureCheck::Forged;
        }
        if secret.verify(&payload[..SIGNED_LEN], &payload[SIGNED_LEN..CRC_OFFSET]) {
            SignatureCheck::Valid
        } else {
            SignatureCheck::Forged
        }
    }
}

/// Issues new keys, signed with the current secret.
#[derive(Debug, Clone)]
pub struct KeyIssuer {
    secret: SigningSecret,
}

impl KeyIssuer {
    /// An issuer signing with `secret`.
    pub fn new(secret: SigningSecret) -> Self {
        KeyIssuer { secret }
    }

    /// Issues a key with a fresh random id and body.
    pub fn issue(&self) -> ApiKey {
        self.issue_with(KeyId::random(), rand::random())
    }

    /// Issues a key from given parts (deterministic; for tests and tools).
    pub fn issue_with(&self, key_id: KeyId, random: [u8; RANDOM_LEN]) -> ApiKey {
        let mut payload = [0u8; PAYLOAD_LEN];
        payload[0] = FORMAT_VERSION;
        payload[1] = self.secret.id;
        payload[2..10].copy_from_slice(&key_id.0.to_be_bytes());
        payload[10..SIGNED_LEN].copy_from_slice(&random);
        let tag = self.secret.tag(&payload[..SIGNED_LEN]);
        payload[SIGNED_LEN..CRC_OFFSET].copy_from_slice(&tag);
        let crc = crc32fast::hash(&payload[..CRC_OFFSET]);
        payload[CRC_OFFSET..].copy_from_slice(&crc.to_be_bytes());
        let mut text = String::with_capacity(KEY_LEN);
        text.push_str(KEY_PREFIX);
        URL_SAFE_NO_PAD.encode_string(payload, &mut text);
        ApiKey {
            text: text.into(),
            kind: KeyKind::Inlet {
                key_id,
                secret_id: self.secret.id,
                verified: true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secret(id: u8, byte: u8) -> SigningSecret {
        SigningSecret::new(id, &[byte; 32]).unwrap()
    }

    fn setup() -> (KeyIssuer, KeyVerifier) {
        let s = secret(1, 7);
        (
            KeyIssuer::new(s.clone()),
            KeyVerifier::new(vec![s]).unwrap(),
        )
    }

    #[test]
    fn issued_key_parses_and_verifies() {
        let (issuer, verifier) = setup();
        let key = issuer.issue();
        assert_eq!(key.expose_secret().len(), KEY_LEN);
        assert!(key.expose_secret().starts_with(KEY_PREFIX));
        let parsed = ApiKey::parse(key.expose_secret(), &verifier).unwrap();
        assert_eq!(parsed.provenance(), Provenance::Verified);
        assert_eq!(parsed.key_id(), key.key_id());
        assert_eq!(parsed.digest(), key.digest());
    }

    #[test]
    fn format_only_parse_leaves_signature_unverified() {
        let (issuer, _) = setup();
        let key = issuer.issue();
        let parsed = ApiKey::parse_format(key.expose_secret()).unwrap();
        assert_eq!(parsed.provenance(), Provenance::Unverified);
    }

    #[test]
    fn missing_key() {
        let (_, v) = setup();
        assert_eq!(ApiKey::parse("", &v), Err(KeyError::Missing));
        assert_eq!(KeyError::Missing.code(), "missing_key");
    }

    #[test]
    fn bad_prefix_is_treated_as_legacy_or_rejected() {
        let (issuer, v) = setup();
        let key = issuer.issue();
        // A different prefix of the same shape is not an Inlet key: it is
        // syntactically a legacy token, decided only by lookup.
        let other = key.expose_secret().replacen("inlet_", "inlex_", 1);
        assert_eq!(
            ApiKey::parse(&other, &v).unwrap().provenance(),
            Provenance::Legacy
        );
        // Nor is one with another separator: a legacy system could have
        // issued it.
        let other = key.expose_secret().replacen("inlet_", "inlet:", 1);
        assert_eq!(
            ApiKey::parse(&other, &v).unwrap().provenance(),
            Provenance::Legacy
        );
    }

    #[test]
    fn truncated_key_is_malformed() {
        let (issuer, v) = setup();
        let key = issuer.issue();
        let text = key.expose_secret();
        for cut in [1, 2, 10, 63] {
            let truncated = &text[..text.len() - cut];
            assert_eq!(ApiKey::parse(truncated, &v), Err(KeyError::Length));
        }
        let longer = format!("{text}A");
        assert_eq!(ApiKey::parse(&longer, &v), Err(KeyError::Length));
    }

    #[test]
    fn flipped_checksum_character_is_malformed() {
        let (issuer, v) = setup();
        let key = issuer.issue();
        let mut text: Vec<u8> = key.expose_secret().as_bytes().to_vec();
        let last = text.len() - 1;
        // The final characters encode the CRC; change one of them.
        text[last - 1] = if text[last - 1] == b'A' { b'B' } else { b'A' };
        let text = String::from_utf8(text).unwrap();
        assert_eq!(ApiKey::parse(&text, &v), Err(KeyError::Checksum));
    }

    #[test]
    fn wrong_alphabet_is_malformed() {
        let (issuer, v) = setup();
        let key = issuer.issue();
        let text = key.expose_secret().replacen('A', "+", 1);
        if text != key.expose_secret() {
            assert_eq!(ApiKey::parse(&text, &v), Err(KeyError::Alphabet));
        }
        let text = format!("{}=", &key.expose_secret()[..KEY_LEN - 1]);
        assert_eq!(ApiKey::parse(&text, &v), Err(KeyError::Alphabet));
    }

    #[test]
    fn non_ascii_is_malformed_only_under_the_inlet_prefix() {
        let (_, v) = setup();
        assert_eq!(
            ApiKey::parse("inlet_ünïcödé-key-0123456789", &v),
            Err(KeyError::Length)
        );
        let body = format!("ü{}", "A".repeat(62));
        assert_eq!(
            ApiKey::parse(&format!("{KEY_PREFIX}{body}"), &v),
            Err(KeyError::Alphabet)
        );
        // A legacy system may well have issued non-ASCII tokens.
        assert_eq!(
            ApiKey::parse("ключ-ключ-ключ-ключ", &v)
                .unwrap()
                .provenance(),
            Provenance::Legacy
        );
    }

    #[test]
    fn forged_signature_is_malformed() {
        let (_, v) = setup();
        // Same format, valid checksum, signed with a secret the server does
        // not have under that id.
        let forger = KeyIssuer::new(secret(1, 9));
        let forged = forger.issue();
        assert_eq!(
            ApiKey::parse(forged.expose_secret(), &v),
            Err(KeyError::Signature)
        );
        assert_eq!(KeyError::Signature.code(), "malformed_key");
    }

    #[test]
    fn key_signed_by_unknown_secret_is_unverified_not_malformed() {
        let (_, v) = setup();
        let other = KeyIssuer::new(secret(2, 9)).issue();
        let parsed = ApiKey::parse(other.expose_secret(), &v).unwrap();
        assert_eq!(parsed.provenance(), Provenance::Unverified);
    }

    #[test]
    fn rotation_verifies_with_either_secret() {
        let old = secret(1, 1);
        let new = secret(2, 2);
        let v = KeyVerifier::new(vec![old.clone(), new.clone()]).unwrap();
        for issuer in [KeyIssuer::new(old), KeyIssuer::new(new)] {
            let key = issuer.issue();
            let parsed = ApiKey::parse(key.expose_secret(), &v).unwrap();
            assert_eq!(parsed.provenance(), Provenance::Verified);
        }
    }

    #[test]
    fn unknown_version_is_malformed() {
        // Build a payload with version 2 and a correct CRC.
        let mut payload = [0u8; PAYLOAD_LEN];
        payload[0] = 2;
        let crc = crc32fast::hash(&payload[..CRC_OFFSET]);
        payload[CRC_OFFSET..].copy_from_slice(&crc.to_be_bytes());
        let text = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(payload));
        assert_eq!(ApiKey::parse_format(&text), Err(KeyError::Version));
    }

    #[test]
    fn legacy_keys_of_any_shape_are_accepted_for_lookup() {
        let (_, v) = setup();
        let key = ApiKey::parse("3f2504e0-4f89-11d3-9a0c-0305e82c3301", &v).unwrap();
        assert_eq!(key.provenance(), Provenance::Legacy);
        assert_eq!(key.key_id(), None);
        // Short, base64 with `+/=`, with inner spaces, JWT-sized: a store
        // may hold any of them.
        let jwt = format!(
            "eyJ{}.eyJ{}.{}",
            "a".repeat(300),
            "b".repeat(900),
            "c".repeat(342)
        );
        for ok in ["short1234", "x", "Zm9vYmFyYmF6cXV4+/==", "two words", &jwt] {
            assert_eq!(
                ApiKey::parse(ok, &v).map(|k| k.provenance()),
                Ok(Provenance::Legacy),
                "{ok:?}"
            );
        }
        // What no store can hold.
        assert_eq!(ApiKey::parse("tab\tinside", &v), Err(KeyError::Alphabet));
        assert_eq!(ApiKey::parse(" padded", &v), Err(KeyError::Alphabet));
        let long = "a".repeat(KEY_MAX_LEN + 1);
        assert_eq!(ApiKey::parse(&long, &v), Err(KeyError::Length));
        assert!(ApiKey::parse(&"a".repeat(KEY_MAX_LEN), &v).is_ok());
    }

    #[test]
    fn debug_and_display_hide_the_secret() {
        let (issuer, _) = setup();
        let key = issuer.issue();
        let secret_body = &key.expose_secret()[KEY_PREFIX.len()..];
        for shown in [format!("{key}"), format!("{key:?}")] {
            assert!(!shown.contains(secret_body), "{shown}");
            assert!(!shown.contains(&secret_body[..12]), "{shown}");
            assert!(shown.contains(&key.key_id().unwrap().to_string()));
        }
        let legacy = ApiKey::parse_format("3f2504e0-4f89-11d3-9a0c-0305e82c3301").unwrap();
        assert_eq!(format!("{legacy}"), "3f25…");
        assert!(!format!("{legacy:?}").contains("4f89"));
        let short = ApiKey::parse_format("short1234").unwrap();
        assert_eq!(format!("{short}"), "sh…");
        assert_eq!(format!("{}", ApiKey::parse_format("abc").unwrap()), "…");
        let s = secret(3, 3);
        assert!(!format!("{s:?}").contains("3, 3"));
    }

    #[test]
    fn secrets_are_validated() {
        assert_eq!(
            SigningSecret::new(1, &[0; 31]).unwrap_err(),
            SecretError::TooShort(31)
        );
        assert_eq!(
            KeyVerifier::new(vec![secret(1, 1), secret(1, 2)]).unwrap_err(),
            SecretError::DuplicateId(1)
        );
        assert_ne!(secret(1, 1).fingerprint(), secret(1, 2).fingerprint());
        assert_eq!(secret(1, 1).fingerprint(), secret(1, 1).fingerprint());
    }

    #[test]
    fn key_id_round_trips() {
        let id = KeyId::from_u64(0x0123_4567_89ab_cdef);
        assert_eq!(id.to_string(), "0123456789abcdef");
        assert_eq!(KeyId::parse("0123456789abcdef"), Ok(id));
        assert!(KeyId::parse("0123").is_err());
        assert!(KeyId::parse("0123456789abcdeg").is_err());
    }

    proptest! {
        #[test]
        fn issued_keys_always_verify(id in any::<u64>(), body in any::<[u8; 18]>()) {
            let (issuer, v) = setup();
            let key = issuer.issue_with(KeyId::from_u64(id), body);
            let parsed = ApiKey::parse(key.expose_secret(), &v).unwrap();
            prop_assert_eq!(parsed.key_id(), Some(KeyId::from_u64(id)));
            prop_assert_eq!(parsed.provenance(), Provenance::Verified);
        }

        #[test]
        fn any_single_character_change_is_detected(
            id in any::<u64>(),
            body in any::<[u8; 18]>(),
            pos in KEY_PREFIX.len()..KEY_LEN,
            replacement in proptest::sample::select(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".to_vec()
            ),
        ) {
            let (issuer, v) = setup();
            let key = issuer.issue_with(KeyId::from_u64(id), body);
            let mut bytes = key.expose_secret().as_bytes().to_vec();
            prop_assume!(bytes[pos] != replacement);
            bytes[pos] = replacement;
            let text = String::from_utf8(bytes).unwrap();
            // 64 characters carry exactly 48 bytes (no padding bits), so any
            // change alters the payload and CRC32 detects such short bursts.
            prop_assert!(ApiKey::parse(&text, &v).is_err());
        }

        #[test]
        fn arbitrary_input_never_panics(s in "\\PC{0,200}") {
            let (_, v) = setup();
            let _ = ApiKey::parse(&s, &v);
        }

        #[test]
        fn arbitrary_inlet_prefixed_input_is_rejected(s in "[A-Za-z0-9_-]{64}") {
            let (_, v) = setup();
            let text = format!("{KEY_PREFIX}{s}");
            // A random body has a 2^-32 chance of a matching CRC and then
            // fails the signature: it is never accepted as Verified.
            if let Ok(k) = ApiKey::parse(&text, &v) {
                prop_assert_ne!(k.provenance(), Provenance::Verified);
            }
        }
    }
}
