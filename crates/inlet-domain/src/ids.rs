//! Identifiers and names: key digests, accounts, apps, environments.
//!
//! Each is a newtype with a private field and a `parse` constructor, so a
//! value of the type is valid by construction.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// SHA-256 of an API key. Stores hold digests, never raw keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    /// The digest of a raw key string.
    ///
    /// Prefer [`crate::ApiKey::digest`]; this exists for importing keys
    /// from files and for stores that receive raw digests.
    pub fn of_secret(raw_key: &str) -> Self {
        KeyDigest(Sha256::digest(raw_key.as_bytes()).into())
    }

    /// Wraps 32 raw digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        KeyDigest(bytes)
    }

    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses the 64-hex-digit form produced by `Display` (either case).
    pub fn parse(hex_digest: &str) -> Result<Self, InvalidDigest> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_digest, &mut out).map_err(|_| InvalidDigest)?;
        Ok(KeyDigest(out))
    }

    /// The lower-case hex form (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl serde::Serialize for KeyDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for KeyDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        KeyDigest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A digest string was not 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a key digest is 64 hexadecimal digits")]
pub struct InvalidDigest;

impl fmt::Display for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A digest is not secret, but 64 digits drown a log line.
        write!(f, "KeyDigest({}…)", &self.to_hex()[..12])
    }
}

/// A name that failed its syntax rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {rule}")]
pub struct InvalidName {
    /// Which kind of name (e.g. "an account id").
    pub what: &'static str,
    /// The rule it broke, phrased to follow `what`.
    pub rule: &'static str,
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Box<str>);

        impl $name {
            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::parse(s)
            }
        }
    };
}

string_newtype!(
    /// An account: who pays, who owns keys. 1–64 characters of
    /// `[A-Za-z0-9._-]`, starting with a letter or digit.
    AccountId
);

impl AccountId {
    /// Longest account id accepted.
    pub const MAX_LEN: usize = 64;

    /// Parses an account id.
    pub fn parse(s: &str) -> Result<Self, InvalidName> {
        let what = "an account id";
        check_identifier(s, Self::MAX_LEN, what)?;
        Ok(AccountId(s.into()))
    }
}

string_newtype!(
    /// The monitored application's name: 1–64 characters, no control
    /// characters, no leading or trailing whitespace.
    AppName
);

impl AppName {
    /// Longest app name accepted, in characters.
    pub const MAX_LEN: usize = 64;

    /// Parses an app name.
    pub fn parse(s: &str) -> Result<Self, InvalidName> {
        check_label(s, Self::MAX_LEN, "an app name")?;
        Ok(AppName(s.into()))
    }
}

string_newtype!(
    /// The deployment environment (`production`, `staging`, …): 1–32
    /// characters of `[a-z0-9._-]`; upper case is folded to lower case.
    Environment
);

impl Environment {
    /// Longest environment name accepted.
    pub const MAX_LEN: usize = 32;

    /// Parses an environment name, folding it to lower case.
    pub fn parse(s: &str) -> Result<Self, InvalidName> {
        let what = "an environment";
        check_identifier(s, Self::MAX_LEN, what)?;
        Ok(Environment(s.to_ascii_lowercase().into()))
    }
}

/// `[A-Za-z0-9._-]`, starting alphanumeric, 1..=max bytes.
fn check_identifier(s: &str, max: usize, what: &'static str) -> Result<(), InvalidName> {
    let err = |rule| Err(InvalidName { what, rule });
    if s.is_empty() {
        return err("must not be empty");
    }
    if s.len() > max {
        return err("is too long");
    }
    if !s.as_bytes()[0].is_ascii_alphanumeric() {
        return err("must start with a letter or digit");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return err("may contain only letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// Any printable text, 1..=max characters, trimmed.
fn check_label(s: &str, max: usize, what: &'static str) -> Result<(), InvalidName> {
    let err = |rule| Err(InvalidName { what, rule });
    if s.is_empty() {
        return err("must not be empty");
    }
    if s.chars().count() > max {
        return err("is too long");
    }
    if s.chars().any(char::is_control) {
        return err("must not contain control characters");
    }
    if s.trim() != s {
        return err("must not start or end with whitespace");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn digest_is_sha256_hex() {
        let d = KeyDigest::of_secret("abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(KeyDigest::parse(&d.to_hex()), Ok(d));
        assert_eq!(KeyDigest::parse(&d.to_hex().to_uppercase()), Ok(d));
        assert!(KeyDigest::parse("abc").is_err());
        assert!(format!("{d:?}").len() < 30);
    }

    #[test]
    fn account_ids() {
        assert!(AccountId::parse("acme-42").is_ok());
        assert!(AccountId::parse("a.b_c-d").is_ok());
        assert!(AccountId::parse("").is_err());
        assert!(AccountId::parse("-x").is_err());
        assert!(AccountId::parse("a b").is_err());
        assert!(AccountId::parse("ä").is_err());
        assert!(AccountId::parse(&"a".repeat(64)).is_ok());
        assert!(AccountId::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn app_names() {
        assert!(AppName::parse("Shop Frontend").is_ok());
        assert!(AppName::parse("Café").is_ok());
        assert!(AppName::parse("").is_err());
        assert!(AppName::parse(" shop").is_err());
        assert!(AppName::parse("shop\n").is_err());
        assert!(AppName::parse(&"é".repeat(64)).is_ok());
        assert!(AppName::parse(&"é".repeat(65)).is_err());
    }

    #[test]
    fn environments_fold_case() {
        assert_eq!(
            Environment::parse("Production").unwrap().as_str(),
            "production"
        );
        assert!(Environment::parse("staging-2").is_ok());
        assert!(Environment::parse("pro duction").is_err());
        assert!(Environment::parse(&"e".repeat(33)).is_err());
    }

    #[test]
    fn serde_round_trip_validates() {
        let a: AccountId = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"acme\"");
        assert!(serde_json::from_str::<AccountId>("\"a b\"").is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,100}") {
            let _ = AccountId::parse(&s);
            let _ = AppName::parse(&s);
            let _ = Environment::parse(&s);
            let _ = KeyDigest::parse(&s);
        }
    }
}
