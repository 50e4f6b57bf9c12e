//! Settings owned by this crate: `[auth]`, `[signing]`, `[redis]`,
//! `[mongo]`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use inlet_domain::{KeyIssuer, KeyVerifier, SecretError, SigningSecret};
use serde::{Deserialize, Serialize};

/// Which store answers first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrimaryStore {
    /// Redis, loaded by `inlet sync` (production).
    Redis,
    /// A static key file (local runs, small deployments).
    File,
    /// No fast store: every cache miss asks the source of truth.
    None,
}

/// `[auth]`: how keys are decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// The fast store asked first. Default `redis`.
    pub primary: PrimaryStore,
    /// Whether MongoDB, the source of truth, is used as fallback and to
    /// confirm absences. Default `true`. Without it, an empty or failing
    /// primary makes keys undecidable (503), never unknown.
    pub source_of_truth: bool,
    /// The key file, when `primary = "file"`. Default `config/keys.toml`.
    pub key_file: PathBuf,
    /// How often the key file is checked for changes, milliseconds.
    /// Default 2000.
    pub key_file_poll_ms: u64,
    /// Confirm a primary's rejection — "absent" from a populated primary,
    /// or a record saying revoked or suspended — with the source of truth
    /// before answering 401/403 (the primary may lag behind any writer of
    /// the source of truth). Default `true`. (Formerly `confirm_absent`.)
    #[serde(alias = "confirm_absent")]
    pub confirm_rejections: bool,
    /// Sustained confirmations per second allowed against the source of
    /// truth, per instance, in each of two budgets: one for a primary's
    /// "absent", one for its revoked/suspended records (so revoked agents
    /// that keep pushing never starve new keys). Default 50.
    pub confirm_rate_per_s: u32,
    /// Confirmation burst size. Default 100.
    pub confirm_burst: u32,
    /// When confirmations are throttled, answer "unknown" on the primary's
    /// word alone (`true`), or "undecidable" / 503 (`false`, default: only
    /// the source of truth may say unknown).
    pub trust_primary_when_throttled: bool,
    /// Most entries in the in-process decision cache. Default 100000.
    pub cache_max_entries: u64,
    /// How long a found key record is cached, seconds. Default 30.
    /// Revocations evict entries at once through the invalidation channel.
    pub positive_ttl_s: u64,
    /// How long a rejection (unknown, revoked, suspended) is cached,
    /// milliseconds. Default 1000, at most 1500. Also the longest a key
    /// re-activated by a writer whose invalidation did not arrive is still
    /// rejected (the promise is 2 s). Key creation and re-activation through
    /// Inlet evict entries at once. (Replaces `negative_ttl_s`.)
    pub negative_ttl_ms: u64,
    /// Stale-if-error: a key accepted within this many seconds stays
    /// accepted while every store fails. Default 600. 0 disables.
    pub stale_grace_s: u64,
    /// Accept a push provisionally when no store can decide but the key's
    /// signature proves Inlet issued it (the worker re-checks before
    /// writing). Default `true`.
    pub provisional: bool,
    /// Timeout for one lookup in the primary store, milliseconds.
    /// Default 250.
    pub primary_timeout_ms: u64,
    /// Timeout for one lookup in the source of truth, milliseconds.
    /// Default 1000.
    pub truth_timeout_ms: u64,
    /// How often store readiness is re-checked, milliseconds. Default 1000.
    pub readiness_interval_ms: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            primary: PrimaryStore::Redis,
            source_of_truth: true,
            key_file: PathBuf::from("config/keys.toml"),
            key_file_poll_ms: 2_000,
            confirm_rejections: true,
            confirm_rate_per_s: 50,
            confirm_burst: 100,
            trust_primary_when_throttled: false,
            cache_max_entries: 100_000,
            positive_ttl_s: 30,
            negative_ttl_ms: 1_000,
            stale_grace_s: 600,
            provisional: true,
            primary_timeout_ms: 250,
            truth_timeout_ms: 1_000,
            readiness_interval_ms: 1_000,
        }
    }
}

/// A setting that cannot work, naming its key (one type for every crate).
pub use inlet_domain::InvalidSetting;

fn invalid(key: &'static str, message: impl Into<String>) -> Result<(), InvalidSetting> {
    InvalidSetting::err(key, message)
}

impl AuthSettings {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.primary == PrimaryStore::None && !self.source_of_truth {
            return invalid(
                "auth.primary",
                "is \"none\" and auth.source_of_truth is false: no store could ever decide",
            );
        }
        if self.cache_max_entries == 0 {
            return invalid("auth.cache_max_entries", "must be at least 1");
        }
        if !(1..=1_500).contains(&self.negative_ttl_ms) {
            return invalid(
                "auth.negative_ttl_ms",
                "must be from 1 to 1500: a re-activated key must be accepted again within 2 s",
            );
        }
        if self.positive_ttl_s == 0 {
            return invalid("auth.positive_ttl_s", "must be at least 1");
        }
        if self.primary_timeout_ms == 0 || self.truth_timeout_ms == 0 {
            return invalid("auth.primary_timeout_ms", "timeouts must be at least 1 ms");
        }
        if self.confirm_rejections && self.confirm_burst == 0 {
            return invalid("auth.confirm_burst", "must be at least 1");
        }
        if self.readiness_interval_ms < 50 {
            return invalid("auth.readiness_interval_ms", "must be at least 50");
        }
        Ok(())
    }
}

/// `[signing]`: the secrets keys are signed with.
///
/// ```toml
/// [signing]
/// current = 1
/// [signing.secrets]
/// 1 = "hex or base64, at least 32 bytes"
/// ```
///
/// In the environment: `INLET__SIGNING__SECRETS__1=…`, or
/// `INLET__SIGNING__SECRET_FILES__1=/run/secrets/inlet-signing-1`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SigningSettings {
    /// Id of the secret new keys are signed with (`inlet keys create`).
    /// Default: none (then keys cannot be issued, only verified).
    pub current: Option<u8>,
    /// Secrets by id, as hex (64+ digits) or base64 (44+ characters). An
    /// instance verifies keys signed with any of them. Default: none (then
    /// Inlet keys are decided by lookup only, and never provisionally).
    #[serde(serialize_with = "redact_secrets")]
    pub secrets: BTreeMap<String, String>,
    /// Secrets by id, each read from a file holding it (hex or base64;
    /// surrounding whitespace ignored) when settings are loaded: Docker or
    /// Kubernetes secrets, or the volume docker-compose's `secrets-init`
    /// fills, so the secret is in no environment variable. An id is given
    /// here or in `secrets`, not both. Default: none.
    pub secret_files: BTreeMap<String, PathBuf>,
}

fn redact_secrets<S: serde::Serializer>(
    secrets: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let redacted: BTreeMap<&String, &str> = secrets.keys().map(|k| (k, "<redacted>")).collect();
    redacted.serialize(s)
}

impl std::fmt::Debug for SigningSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningSettings")
            .field("current", &self.current)
            .field("secret_ids", &self.secrets.keys().collect::<Vec<_>>())
            .field("secret_files", &self.secret_files)
            .finish()
    }
}

/// The development secret shipped in `config/local.toml`; refused in
/// production.
pub const DEV_SECRET_FINGERPRINT: &str = "d2fa7a45a470faac";

/// Every secret published in this repository (or in its history), by
/// [`SigningSecret::fingerprint`], with where it was published: refused in
/// production, since anyone can sign keys with it. The one list;
/// `crates/inlet/tests/repository.rs` scans the repository's text files for
/// secret-looking values and fails on any that production would accept, so
/// a newly published secret has to be added here.
pub const PUBLISHED_SECRETS: &[(&str, &str)] = &[
    (
        DEV_SECRET_FINGERPRINT,
        "the development secret of config/local.toml and the tests",
    ),
    (
        "798ab32d842f782a",
        "the former default of docker-compose.yml (c0ffee…)",
    ),
    (
        "09f58f336ea27d17",
        "a SHA-256 test vector in crates/inlet-domain (the digest of \"abc\")",
    ),
    (
        "0996450f9a368829",
        "a key digest in crates/inlet-auth/tests/decisions.rs (of \"legacy-0123456789abcdef\")",
    ),
];

/// Fewest distinct byte values a production secret must have. 32 random
/// bytes have about 30 (fewer than 16 has a probability below 10^-20); the
/// test fixtures' `[7; 32]`, `"ab".repeat(32)` or `c0ffee…` have 1 to 3.
pub const MIN_DISTINCT_BYTES: usize = 16;

impl SigningSettings {
    /// The configured secrets' ids and bytes, from `secrets` and
    /// `secret_files`.
    fn decoded(&self) -> Result<Vec<(u8, Vec<u8>)>, InvalidSetting> {
        const INLINE: &str = "signing.secrets";
        const FILES: &str = "signing.secret_files";
        let parse_id = |key: &'static str, id: &str| {
            id.parse::<u8>().map_err(|_| InvalidSetting {
                key: key.into(),
                message: format!("secret id {id:?} is not a number from 0 to 255"),
            })
        };
        let decode = |key: &'static str, id: u8, text: &str| {
            decode_secret(text).ok_or_else(|| InvalidSetting {
                key: key.into(),
                message: format!("secret {id} is neither hex nor base64"),
            })
        };
        let mut out = Vec::new();
        for (id, text) in &self.secrets {
            let id = parse_id(INLINE, id)?;
            out.push((id, decode(INLINE, id, text)?));
        }
        for (id, path) in &self.secret_files {
            let id = parse_id(FILES, id)?;
            if out.iter().any(|(i, _)| *i == id) {
                return Err(InvalidSetting {
                    key: FILES.into(),
                    message: format!(
                        "secret {id} is also set in signing.secrets; set each secret once"
                    ),
                });
            }
            let text = std::fs::read_to_string(path).map_err(|e| InvalidSetting {
                key: FILES.into(),
                message: format!("secret {id}: cannot read {}: {e}", path.display()),
            })?;
            out.push((id, decode(FILES, id, &text)?));
        }
        Ok(out)
    }

    /// Parses the configured secrets.
    pub fn secrets(&self) -> Result<Vec<SigningSecret>, InvalidSetting> {
        self.decoded()?
            .into_iter()
            .map(|(id, bytes)| {
                SigningSecret::new(id, &bytes).map_err(|e| InvalidSetting {
                    key: "signing.secrets".into(),
                    message: format!("secret {id}: {e}"),
                })
            })
            .collect()
    }

    /// The verifier for all configured secrets.
    pub fn verifier(&self) -> Result<KeyVerifier, InvalidSetting> {
        KeyVerifier::new(self.secrets()?).map_err(|e| InvalidSetting {
            key: "signing.secrets".into(),
            message: e.to_string(),
        })
    }

    /// The issuer for the current secret, if one is configured.
    pub fn issuer(&self) -> Result<Option<KeyIssuer>, InvalidSetting> {
        let Some(current) = self.current else {
            return Ok(None);
        };
        let secret = self
            .secrets()?
            .into_iter()
            .find(|s| s.id() == current)
            .ok_or_else(|| InvalidSetting {
                key: "signing.current".into(),
                message: SecretError::UnknownCurrent(current).to_string(),
            })?;
        Ok(Some(KeyIssuer::new(secret)))
    }

    /// Checks the secrets parse (each at least 32 bytes, in every
    /// environment); in production, also that none is published
    /// ([`PUBLISHED_SECRETS`]) or a pattern rather than random bytes
    /// ([`MIN_DISTINCT_BYTES`]).
    pub fn validate(&self, production: bool) -> Result<(), InvalidSetting> {
        let secrets = self.secrets()?;
        self.verifier()?;
        self.issuer()?;
        if !production {
            return Ok(());
        }
        const GENERATE: &str = "generate one with `openssl rand -hex 32`";
        for secret in &secrets {
            let fingerprint = secret.fingerprint();
            if let Some((_, origin)) = PUBLISHED_SECRETS.iter().find(|(f, _)| *f == fingerprint) {
                return invalid(
                    "signing.secrets",
                    format!(
                        "secret {} is published in the Inlet repository ({origin}); {GENERATE}",
                        secret.id()
                    ),
                );
            }
        }
        for (id, bytes) in self.decoded()? {
            let mut seen = [false; 256];
            bytes.iter().for_each(|b| seen[usize::from(*b)] = true);
            let distinct = seen.iter().filter(|s| **s).count();
            if distinct < MIN_DISTINCT_BYTES {
                return invalid(
                    "signing.secrets",
                    format!(
                        "secret {id} has only {distinct} distinct byte values: a pattern, not \
                         random bytes; {GENERATE}"
                    ),
                );
            }
        }
        Ok(())
    }
}

fn decode_secret(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let t = text.trim();
    if t.len().is_multiple_of(2)
        && t.bytes().all(|b| b.is_ascii_hexdigit())
        && let Ok(b) = hex::decode(t)
    {
        return Some(b);
    }
    base64::engine::general_purpose::STANDARD
        .decode(t)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
        .ok()
}

/// `[redis]`: the fast key store, the sync target and the invalidation bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// Server URL. Default `redis://127.0.0.1:6379`.
    pub url: String,
    /// Prefix of every key Inlet writes (see the key layout in
    /// `redis_store`). Default `inlet:`.
    pub prefix: String,
    /// Most pooled connections. Default 16.
    pub pool_size: usize,
    /// Timeout to establish a connection, milliseconds. Default 500.
    pub connect_timeout_ms: u64,
    /// Timeout for one command's reply, milliseconds. Default 250.
    pub command_timeout_ms: u64,
    /// Longest wait for a free pooled connection, milliseconds. Default 250.
    pub pool_wait_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: "redis://127.0.0.1:6379".to_owned(),
            prefix: "inlet:".to_owned(),
            pool_size: 16,
            connect_timeout_ms: 500,
            command_timeout_ms: 250,
            pool_wait_ms: 250,
        }
    }
}

impl RedisSettings {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !(self.url.starts_with("redis://") || self.url.starts_with("rediss://")) {
            return invalid("redis.url", "must start with redis:// or rediss://");
        }
        if self.pool_size == 0 {
            return invalid("redis.pool_size", "must be at least 1");
        }
        if self.command_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return invalid("redis.command_timeout_ms", "timeouts must be at least 1 ms");
        }
        Ok(())
    }
}

/// `[mongo]`: the source of truth (keys, accounts) and the aggregates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MongoSettings {
    /// Connection string. Default `mongodb://127.0.0.1:27017`.
    pub url: String,
    /// Database name. Default `inlet`.
    pub database: String,
    /// How long the driver looks for a usable server before an operation
    /// fails, milliseconds. Default 2000.
    pub server_selection_timeout_ms: u64,
    /// Timeout to establish a connection, milliseconds. Default 2000.
    pub connect_timeout_ms: u64,
    /// Most pooled connections per server. Default 32.
    pub max_pool_size: u32,
    /// Application name reported to the server. Default `inlet`.
    pub app_name: String,
}

impl Default for MongoSettings {
    fn default() -> Self {
        MongoSettings {
            url: "mongodb://127.0.0.1:27017".to_owned(),
            database: "inlet".to_owned(),
            server_selection_timeout_ms: 2_000,
            connect_timeout_ms: 2_000,
            max_pool_size: 32,
            app_name: "inlet".to_owned(),
        }
    }
}

impl MongoSettings {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !(self.url.starts_with("mongodb://") || self.url.starts_with("mongodb+srv://")) {
            return invalid("mongo.url", "must start with mongodb:// or mongodb+srv://");
        }
        if self.database.is_empty() || self.database.contains(['/', '\\', '.', ' ', '"', '$']) {
            return invalid("mongo.database", "is not a valid database name");
        }
        if self.max_pool_size == 0 {
            return invalid("mongo.max_pool_size", "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV_HEX: &str = "696e6c65742d6c6f63616c2d646576656c6f706d656e742d736563726574212121";

    #[test]
    fn defaults_are_valid() {
        AuthSettings::default().validate().unwrap();
        RedisSettings::default().validate().unwrap();
        MongoSettings::default().validate().unwrap();
        SigningSettings::default().validate(true).unwrap();
    }

    #[test]
    fn no_store_at_all_is_rejected() {
        let s = AuthSettings {
            primary: PrimaryStore::None,
            source_of_truth: false,
            ..AuthSettings::default()
        };
        assert_eq!(s.validate().unwrap_err().key, "auth.primary");
    }

    #[test]
    fn signing_secrets_parse_and_dev_secret_is_refused_in_production() {
        let mut s = SigningSettings {
            current: Some(1),
            secrets: BTreeMap::from([("1".to_owned(), DEV_HEX.to_owned())]),
            ..SigningSettings::default()
        };
        s.validate(false).unwrap();
        assert_eq!(
            s.secrets().unwrap()[0].fingerprint(),
            DEV_SECRET_FINGERPRINT,
            "the constant matches the secret in config/local.toml"
        );
        assert_eq!(s.validate(true).unwrap_err().key, "signing.secrets");
        assert!(s.issuer().unwrap().is_some());
        s.current = Some(2);
        assert_eq!(s.issuer().unwrap_err().key, "signing.current");
        s.secrets.insert("x".into(), DEV_HEX.into());
        assert!(s.secrets().is_err());
        let short = SigningSettings {
            current: None,
            secrets: BTreeMap::from([("1".to_owned(), "abcd".to_owned())]),
            ..SigningSettings::default()
        };
        assert!(short.validate(false).is_err());
    }

    fn one_secret(text: &str) -> SigningSettings {
        SigningSettings {
            current: Some(1),
            secrets: BTreeMap::from([("1".to_owned(), text.to_owned())]),
            ..SigningSettings::default()
        }
    }

    #[test]
    fn production_refuses_short_published_and_patterned_secrets() {
        let refused = [
            ("ab".repeat(31), "at least 32 bytes"),
            (DEV_HEX.to_owned(), "published"),
            ("c0ffee".repeat(10) + "c0ff", "published"),
            (
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".to_owned(),
                "published",
            ),
            ("07".repeat(32), "1 distinct byte values"),
            ("0123456789abcdef".repeat(4), "8 distinct byte values"),
        ];
        for (text, why) in refused {
            let err = one_secret(&text).validate(true).unwrap_err();
            assert_eq!(err.key, "signing.secrets");
            assert!(err.message.contains(why), "{text}: {err}");
        }
        let random = hex::encode(rand::random::<[u8; 32]>());
        one_secret(&random).validate(true).unwrap();
        // Outside production only the length counts.
        one_secret(&"07".repeat(32)).validate(false).unwrap();
        one_secret(DEV_HEX).validate(false).unwrap();
    }

    #[test]
    fn secrets_can_be_read_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing-2");
        let random = hex::encode(rand::random::<[u8; 32]>());
        std::fs::write(&path, format!("{random}\n")).unwrap();
        let mut s = SigningSettings {
            current: Some(2),
            secret_files: BTreeMap::from([("2".to_owned(), path.clone())]),
            ..one_secret(DEV_HEX)
        };
        s.validate(false).unwrap();
        assert_eq!(
            s.secrets()
                .unwrap()
                .iter()
                .map(|s| s.id())
                .collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(s.issuer().unwrap().is_some());
        // The production checks apply to file secrets too.
        assert!(s.validate(true).unwrap_err().message.contains("published"));
        s.secrets.clear();
        s.validate(true).unwrap();

        s.secrets.insert("2".into(), random);
        let err = s.validate(false).unwrap_err();
        assert_eq!(err.key, "signing.secret_files");
        assert!(err.message.contains("set each secret once"), "{err}");
        s.secrets.clear();

        std::fs::write(&path, "07".repeat(32)).unwrap();
        assert!(s.validate(true).unwrap_err().message.contains("distinct"));
        std::fs::write(&path, "abcd").unwrap();
        assert!(s.validate(false).unwrap_err().message.contains("32 bytes"));
        std::fs::remove_file(&path).unwrap();
        let err = s.validate(false).unwrap_err();
        assert_eq!(err.key, "signing.secret_files");
        assert!(err.message.contains("signing-2"), "{err}");
    }

    #[test]
    fn published_fingerprints_are_distinct_fingerprints() {
        for (i, (f, origin)) in PUBLISHED_SECRETS.iter().enumerate() {
            assert!(
                f.len() == 16 && f.bytes().all(|b| b.is_ascii_hexdigit()),
                "{origin}: {f}"
            );
            assert!(
                PUBLISHED_SECRETS[..i].iter().all(|(g, _)| g != f),
                "{origin}: listed twice"
            );
        }
    }

    #[test]
    fn secrets_never_print() {
        let s = SigningSettings {
            current: Some(1),
            secrets: BTreeMap::from([("1".to_owned(), DEV_HEX.to_owned())]),
            ..SigningSettings::default()
        };
        assert!(!format!("{s:?}").contains(DEV_HEX));
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains(DEV_HEX), "{json}");
        assert!(json.contains("<redacted>"));
    }
}
