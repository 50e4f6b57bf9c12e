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
    /// truth, per instance. Default 50.
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

/// A setting that cannot work, naming its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}` {message}")]
pub struct InvalidSetting {
    /// Dotted key, e.g. `auth.positive_ttl_s`.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

fn invalid(key: &'static str, message: impl Into<String>) -> Result<(), InvalidSetting> {
    Err(InvalidSetting {
        key,
        message: message.into(),
    })
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
/// In the environment: `INLET__SIGNING__SECRETS__1=…`.
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
            .finish()
    }
}

/// The development secret shipped in `config/local.toml`; refused in
/// production.
pub const DEV_SECRET_FINGERPRINT: &str = "d2fa7a45a470faac";

impl SigningSettings {
    /// Parses the configured secrets.
    pub fn secrets(&self) -> Result<Vec<SigningSecret>, InvalidSetting> {
        let mut out = Vec::new();
        for (id, text) in &self.secrets {
            let id: u8 = id.parse().map_err(|_| InvalidSetting {
                key: "signing.secrets",
                message: format!("secret id {id:?} is not a number from 0 to 255"),
            })?;
            let bytes = decode_secret(text).ok_or_else(|| InvalidSetting {
                key: "signing.secrets",
                message: format!("secret {id} is neither hex nor base64"),
            })?;
            let secret = SigningSecret::new(id, &bytes).map_err(|e| InvalidSetting {
                key: "signing.secrets",
                message: format!("secret {id}: {e}"),
            })?;
            out.push(secret);
        }
        Ok(out)
    }

    /// The verifier for all configured secrets.
    pub fn verifier(&self) -> Result<KeyVerifier, InvalidSetting> {
        KeyVerifier::new(self.secrets()?).map_err(|e| InvalidSetting {
            key: "signing.secrets",
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
                key: "signing.current",
                message: SecretError::UnknownCurrent(current).to_string(),
            })?;
        Ok(Some(KeyIssuer::new(secret)))
    }

    /// Checks the secrets parse; in production, also that the shipped
    /// development secret is not among them.
    pub fn validate(&self, production: bool) -> Result<(), InvalidSetting> {
        let secrets = self.secrets()?;
        self.verifier()?;
        self.issuer()?;
        if production
            && secrets
                .iter()
                .any(|s| s.fingerprint() == DEV_SECRET_FINGERPRINT)
        {
            return invalid(
                "signing.secrets",
                "contains the development secret from config/local.toml; set a real one",
            );
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
        };
        assert!(short.validate(false).is_err());
    }

    #[test]
    fn secrets_never_print() {
        let s = SigningSettings {
            current: Some(1),
            secrets: BTreeMap::from([("1".to_owned(), DEV_HEX.to_owned())]),
        };
        assert!(!format!("{s:?}").contains(DEV_HEX));
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains(DEV_HEX), "{json}");
        assert!(json.contains("<redacted>"));
    }
}
