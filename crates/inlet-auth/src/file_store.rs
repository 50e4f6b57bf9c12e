//! A static key file (feature `file`): the embedded default for local runs
//! and small deployments.
//!
//! ```toml
//! [[accounts]]
//! id = "acme"
//! state = "active"                                  # or "suspended"; default active
//! rate_limit = { per_second = 100, burst = 200 }    # optional
//!
//! [[keys]]
//! account = "acme"
//! key = "inlet_…"        # the raw key (convenient locally), or
//! # digest = "…"         # its SHA-256 in hex (keeps the secret out of the file)
//! # key_id = "…"         # 16 hex digits; derived when absent
//! state = "active"        # or "revoked"; default active
//! app = "shop"            # optional app restriction
//! ```
//!
//! The same structure is accepted as JSON (by the `.json` extension). The
//! file is re-read when its modification time or size changes; a file that
//! no longer parses keeps the last good key set in force and the reason is
//! logged (and shown by readiness).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use inlet_domain::{
    AccountId, AccountState, AppName, KeyDigest, KeyId, KeyRecord, KeyState, RateLimit,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::store::{KeyStore, Lookup, Readiness};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    accounts: Vec<FileAccount>,
    #[serde(default)]
    keys: Vec<FileKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAccount {
    id: AccountId,
    #[serde(default = "active_account")]
    state: AccountState,
    #[serde(default)]
    rate_limit: Option<RateLimit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKey {
    account: AccountId,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    digest: Option<KeyDigest>,
    #[serde(default)]
    key_id: Option<KeyId>,
    #[serde(default = "active_key")]
    state: KeyState,
    #[serde(default)]
    app: Option<AppName>,
}

fn active_account() -> AccountState {
    AccountState::Active
}

fn active_key() -> KeyState {
    KeyState::Active
}

/// Why a key file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    /// The file cannot be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The file does not parse or breaks a rule.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Parses key-file text (TOML, or JSON when `json` is true).
fn parse(text: &str, json: bool) -> Result<HashMap<KeyDigest, KeyRecord>, String> {
    let doc: FileDoc = if json {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    } else {
        toml::from_str(text).map_err(|e| e.to_string())?
    };
    let accounts: HashMap<&AccountId, &FileAccount> =
        doc.accounts.iter().map(|a| (&a.id, a)).collect();
    let mut out = HashMap::with_capacity(doc.keys.len());
    for (i, k) in doc.keys.iter().enumerate() {
        let at = |m: &str| format!("keys[{i}]: {m}");
        let account = accounts.get(&k.account).ok_or_else(|| {
            at(&format!(
                "account {} is not listed under [[accounts]]",
                k.account
            ))
        })?;
        let (digest, derived_id) = match (&k.key, &k.digest) {
            (Some(raw), None) => {
                let parsed = inlet_domain::ApiKey::parse_format(raw)
                    .map_err(|e| at(&format!("key: {e}")))?;
                (parsed.digest(), parsed.key_id())
            }
            (None, Some(d)) => (*d, None),
            _ => return Err(at("give exactly one of `key` and `digest`")),
        };
        let key_id = k
            .key_id
            .or(derived_id)
            .unwrap_or_else(|| id_from_digest(&digest));
        let record = KeyRecord {
            key_id,
            account_id: k.account.clone(),
            key_state: k.state,
            account_state: account.state,
            rate_limit: account.rate_limit,
            app: k.app.clone(),
            revision: 0,
            updated_at_ms: 0,
        };
        if out.insert(digest, record).is_some() {
            return Err(at("the same key is listed twice"));
        }
    }
    Ok(out)
}

/// A stable key id for entries that name none: the digest's first 8 bytes.
fn id_from_digest(d: &KeyDigest) -> KeyId {
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_bytes()[..8]);
    KeyId::from_u64(u64::from_be_bytes(b))
}

#[derive(Debug)]
struct Loaded {
    records: HashMap<KeyDigest, KeyRecord>,
    generation: u64,
    loaded_at_ms: i64,
    stamp: Option<(SystemTime, u64)>,
    last_error: Option<String>,
}

/// The static-file key store. Always populated (with the last good file).
#[derive(Debug, Clone)]
pub struct StaticFileStore {
    path: PathBuf,
    state: Arc<RwLock<Loaded>>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read(path: &Path) -> Result<HashMap<KeyDigest, KeyRecord>, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| KeyFileError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    parse(&text, json).map_err(|reason| KeyFileError::Invalid {
        path: path.to_owned(),
        reason,
    })
}

impl StaticFileStore {
    /// Loads the file. A missing or broken file at start-up is an error:
    /// there is no previous good set to keep.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, KeyFileError> {
        let path = path.into();
        let before = stamp(&path);
        let records = read(&path)?;
        Ok(StaticFileStore {
            state: Arc::new(RwLock::new(Loaded {
                records,
                generation: 1,
                loaded_at_ms: inlet_domain::now_ms(),
                stamp: before,
                last_error: None,
            })),
            path,
        })
    }

    /// Re-reads the file if it changed. Returns `Ok(true)` when a new set
    /// was loaded; on error the previous set stays in force.
    pub fn reload_if_changed(&self) -> Result<bool, KeyFileError> {
        let now = stamp(&self.path);
        {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            if now == state.stamp {
                return Ok(false);
            }
        }
        let result = read(&self.path);
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state.stamp = now;
        match result {
            Ok(records) => {
                state.records = records;
                state.generation += 1;
                state.loaded_at_ms = inlet_domain::now_ms();
                state.last_error = None;
                tracing::info!(path = %self.path.display(), keys = state.records.len(), "key file reloaded");
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(error = %e, keys = state.records.len(), "key file is broken; keeping the last good key set");
                state.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// The error of the last reload attempt, if it failed.
    pub fn last_error(&self) -> Option<String> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .last_error
            .clone()
    }

    /// Polls the file every `interval` until cancelled.
    pub async fn run_reloader(self, interval: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let _ = self.reload_if_changed();
        }
    }
}

#[async_trait]
impl KeyStore for StaticFileStore {
    fn name(&self) -> &'static str {
        "file"
    }

    async fn lookup(&self, digest: &KeyDigest) -> Result<Lookup, crate::StoreError> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        Ok(match state.records.get(digest) {
            Some(r) => Lookup::Found(r.clone()),
            None => Lookup::Absent,
        })
    }

    async fn readiness(&self) -> Readiness {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        Readiness::Populated {
            generation: state.generation,
            keys: state.records.len() as u64,
            completed_at_ms: state.loaded_at_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inlet_domain::{KeyIssuer, SigningSecret};

    fn issued() -> String {
        KeyIssuer::new(SigningSecret::new(1, &[1; 32]).unwrap())
            .issue()
            .expose_secret()
            .to_owned()
    }

    /// A directory holding `keys.toml` with one account and one issued
    /// key: (the directory, the key, the file's text).
    fn one_key_file() -> (tempfile::TempDir, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let key = issued();
        let good =
            format!("[[accounts]]\nid = \"a\"\n[[keys]]\naccount = \"a\"\nkey = \"{key}\"\n");
        write(dir.path(), "keys.toml", &good);
        (dir, key, good)
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[tokio::test]
    async fn loads_keys_and_digests() {
        let dir = tempfile::tempdir().unwrap();
        let key = issued();
        let legacy_digest = KeyDigest::of_secret("3f2504e0-4f89-11d3-9a0c-0305e82c3301");
        let text = format!(
            r#"
[[accounts]]
id = "acme"
rate_limit = {{ per_second = 5, burst = 10 }}
[[accounts]]
id = "bad-payer"
state = "suspended"

[[keys]]
account = "acme"
key = "{key}"
app = "shop"
[[keys]]
account = "bad-payer"
digest = "{legacy_digest}"
state = "revoked"
"#
        );
        let store = StaticFileStore::load(write(dir.path(), "keys.toml", &text)).unwrap();
        let Lookup::Found(r) = store.lookup(&KeyDigest::of_secret(&key)).await.unwrap() else {
            panic!()
        };
        assert_eq!(r.account_id.as_str(), "acme");
        assert_eq!(r.rate_limit.unwrap().burst, 10);
        assert_eq!(r.app.unwrap().as_str(), "shop");
        let Lookup::Found(r) = store.lookup(&legacy_digest).await.unwrap() else {
            panic!()
        };
        assert_eq!(r.key_state, KeyState::Revoked);
        assert_eq!(r.account_state, AccountState::Suspended);
        assert_eq!(
            store.lookup(&KeyDigest::of_secret("nope")).await.unwrap(),
            Lookup::Absent
        );
        assert!(store.readiness().await.is_populated());
    }

    #[test]
    fn the_shipped_example_file_loads() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/keys.example.toml");
        let store = StaticFileStore::load(&path).expect("config/keys.example.toml loads");
        assert!(store.last_error().is_none());
    }

    #[test]
    fn json_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"{{"accounts":[{{"id":"a"}}],"keys":[{{"account":"a","key":"{}"}}]}}"#,
            issued()
        );
        let store = StaticFileStore::load(write(dir.path(), "keys.json", &text)).unwrap();
        assert_eq!(store.state.read().unwrap().records.len(), 1);
    }

    #[test]
    fn broken_files_are_rejected_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "[[keys]]\naccount = \"x\"\nkey = \"inlet_short\"\n[[accounts]]\nid = \"x\"\n",
                "keys[0]: key",
            ),
            (
                "[[keys]]\naccount = \"nobody\"\ndigest = \"00\"\n",
                "digest",
            ),
            (
                "[[accounts]]\nid = \"a\"\n[[keys]]\naccount = \"a\"\n",
                "exactly one",
            ),
            (
                "[[keys]]\naccount = \"ghost\"\nkey = \"3f2504e0-4f89-11d3-9a0c-0305e82c3301\"\n",
                "not listed",
            ),
            ("not toml at all [", ""),
            ("[[acounts]]\n", "acounts"),
        ];
        for (text, needle) in cases {
            let err = StaticFileStore::load(write(dir.path(), "k.toml", text))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{text:?} → {err}");
        }
        assert!(matches!(
            StaticFileStore::load(dir.path().join("missing.toml")),
            Err(KeyFileError::Read { .. })
        ));
    }

    #[tokio::test]
    async fn reload_keeps_last_good_set_on_error() {
        let (dir, key, good) = one_key_file();
        let path = dir.path().join("keys.toml");
        let store = StaticFileStore::load(&path).unwrap();
        let digest = KeyDigest::of_secret(&key);

        std::fs::write(&path, "broken [[[ file that is longer").unwrap();
        assert!(store.reload_if_changed().is_err());
        assert!(store.last_error().is_some());
        assert!(matches!(
            store.lookup(&digest).await.unwrap(),
            Lookup::Found(_)
        ));

        let revoked = format!("{good}state = \"revoked\"\n");
        std::fs::write(&path, revoked).unwrap();
        assert!(store.reload_if_changed().unwrap());
        assert!(store.last_error().is_none());
        let Lookup::Found(r) = store.lookup(&digest).await.unwrap() else {
            panic!()
        };
        assert_eq!(r.key_state, KeyState::Revoked);
        assert!(
            !store.reload_if_changed().unwrap(),
            "unchanged file is not re-read"
        );
    }

    #[tokio::test]
    async fn the_reloader_picks_up_a_changed_file_by_itself() {
        let (dir, key, good) = one_key_file();
        let path = dir.path().join("keys.toml");
        let store = StaticFileStore::load(&path).unwrap();
        let cancel = CancellationToken::new();
        let reloader = tokio::spawn(
            store
                .clone()
                .run_reloader(Duration::from_millis(20), cancel.clone()),
        );
        let digest = KeyDigest::of_secret(&key);
        // A different length, so the change shows even within one mtime tick.
        std::fs::write(&path, format!("{good}state = \"revoked\"\n")).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Lookup::Found(r) = store.lookup(&digest).await.unwrap()
                && r.key_state == KeyState::Revoked
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the reloader never picked up the change"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
        reloader.await.unwrap();
    }
}
