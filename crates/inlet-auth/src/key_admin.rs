//! Account and key administration against the source of truth.
//!
//! Every change bumps the document's `revision` and `updated_at` (the key
//! sync follows both), and is then propagated at once when Redis is
//! configured: the key's new record is written to Redis' current generation
//! and an invalidation is published, so running authenticators drop their
//! cached decision within milliseconds — a revoked key is rejected by every
//! instance well within the 2 s promise. If Redis is down, the change is
//! still recorded in MongoDB and reaches Redis through the key sync.

use inlet_domain::{
    AccountId, AccountState, ApiKey, AppName, KEY_PREFIX, KeyDigest, KeyId, KeyIssuer, KeyState,
    RateLimit,
};

use crate::mongo_store::{AccountDoc, Inserted, KeyDoc, MongoStore, record_of};
use crate::store::StoreError;

#[cfg(feature = "redis")]
use crate::redis_store::RedisStore;

/// Why an administrative operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyAdminError {
    /// The named account or key does not exist.
    #[error("{0} does not exist")]
    NotFound(String),
    /// The account or key already exists.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The input is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// A key as administration shows it: never the key, only its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key id (16 hex digits for Inlet keys; other writers' ids as
    /// they are).
    pub key_id: String,
    /// The owning account.
    pub account_id: String,
    /// Active or revoked.
    pub state: KeyState,
    /// The app the key is restricted to, if any.
    pub app: Option<String>,
    /// Imported from an older system.
    pub legacy: bool,
    /// Creation time, Unix ms.
    pub created_at_ms: i64,
    /// Last change, Unix ms.
    pub updated_at_ms: i64,
}

impl From<&KeyDoc> for KeyInfo {
    fn from(k: &KeyDoc) -> Self {
        KeyInfo {
            key_id: k.key_id.clone(),
            account_id: k.account_id.clone(),
            state: k.state,
            app: k.app.clone(),
            legacy: k.legacy,
            created_at_ms: k.created_at.timestamp_millis(),
            updated_at_ms: k.updated_at.timestamp_millis(),
        }
    }
}

/// An account as administration shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    /// The account id.
    pub id: String,
    /// Active or suspended.
    pub state: AccountState,
    /// Its rate limit; `None`: the server default.
    pub rate_limit: Option<RateLimit>,
    /// Creation time, Unix ms.
    pub created_at_ms: i64,
    /// Last change, Unix ms.
    pub updated_at_ms: i64,
}

impl From<&AccountDoc> for AccountInfo {
    fn from(a: &AccountDoc) -> Self {
        AccountInfo {
            id: a.id.clone(),
            state: a.state,
            rate_limit: a.rate_limit,
            created_at_ms: a.created_at.timestamp_millis(),
            updated_at_ms: a.updated_at.timestamp_millis(),
        }
    }
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Keys created.
    pub created: usize,
    /// Keys already present (same digest): left alone, so imports can be
    /// re-run.
    pub existing: usize,
}

/// One legacy key to import.
#[derive(Debug, Clone)]
pub struct LegacyKey {
    /// Owning account (must exist).
    pub account: AccountId,
    /// The key's digest (from the raw key, or given directly).
    pub digest: KeyDigest,
    /// Optional app restriction.
    pub app: Option<AppName>,
}

impl LegacyKey {
    /// Parses one import line: `account,key[,app]` or
    /// `account,sha256:<hex digest>[,app]`.
    pub fn parse_line(line: &str) -> Result<LegacyKey, String> {
        let mut parts = line.split(',').map(str::trim);
        let account = parts.next().unwrap_or_default();
        let key = parts.next().ok_or("expected `account,key[,app]`")?;
        let app = parts.next().filter(|a| !a.is_empty());
        if parts.next().is_some() {
            return Err("too many fields".into());
        }
        let account = AccountId::parse(account).map_err(|e| e.to_string())?;
        let digest = match key.strip_prefix("sha256:") {
            Some(hex) => KeyDigest::parse(hex).map_err(|e| e.to_string())?,
            // The API's own grammar: a raw key imported here can always be
            // presented. Inlet keys are issued by `inlet keys create`; one
            // here would be accepted by the import only to be refused by
            // the API if its signature does not verify.
            None if key.starts_with(KEY_PREFIX) => {
                return Err(format!(
                    "key: a key starting with {KEY_PREFIX:?} is an Inlet key; issue those with \
                     `inlet keys create`, or import its digest (`sha256:…`)"
                ));
            }
            None => ApiKey::parse_format(key)
                .map_err(|e| format!("key: {e}"))?
                .digest(),
        };
        let app = app
            .map(AppName::parse)
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(LegacyKey {
            account,
            digest,
            app,
        })
    }
}

/// Administers accounts and keys.
#[derive(Debug, Clone)]
pub struct KeyAdmin {
    mongo: MongoStore,
    #[cfg(feature = "redis")]
    redis: Option<RedisStore>,
}

fn now() -> mongodb::bson::DateTime {
    mongodb::bson::DateTime::now()
}

impl KeyAdmin {
    /// Administration against MongoDB only (changes reach Redis through
    /// the key sync).
    pub fn new(mongo: MongoStore) -> Self {
        KeyAdmin {
            mongo,
            #[cfg(feature = "redis")]
            redis: None,
        }
    }

    /// Also propagate every change to Redis at once.
    #[cfg(feature = "redis")]
    pub fn with_redis(mut self, redis: RedisStore) -> Self {
        self.redis = Some(redis);
        self
    }

    /// Creates an account.
    pub async fn create_account(
        &self,
        id: &AccountId,
        rate_limit: Option<RateLimit>,
    ) -> Result<AccountInfo, KeyAdminError> {
        let at = now();
        let account = AccountDoc {
            id: id.to_string(),
            state: AccountState::Active,
            rate_limit,
            revision: 1,
            created_at: at,
            updated_at: at,
        };
        match self.mongo.insert_account(&account).await? {
            Inserted::Created => Ok(AccountInfo::from(&account)),
            Inserted::Duplicate => Err(KeyAdminError::AlreadyExists(format!("account {id}"))),
        }
    }

    /// Suspends or re-activates an account; every key of the account is
    /// re-propagated.
    pub async fn set_account_state(
        &self,
        id: &AccountId,
        state: AccountState,
    ) -> Result<AccountInfo, KeyAdminError> {
        let updated = self
            .mongo
            .set_account_state(id.as_str(), state)
            .await?
            .ok_or_else(|| KeyAdminError::NotFound(format!("account {id}")))?;
        self.propagate_account(&updated).await?;
        Ok(AccountInfo::from(&updated))
    }

    /// Gives an account its own rate limit, or with `None` the server
    /// default again; every key of the account is re-propagated.
    pub async fn set_account_rate_limit(
        &self,
        id: &AccountId,
        limit: Option<RateLimit>,
    ) -> Result<AccountInfo, KeyAdminError> {
        let updated = self
            .mongo
            .set_account_rate_limit(id.as_str(), limit)
            .await?
            .ok_or_else(|| KeyAdminError::NotFound(format!("account {id}")))?;
        self.propagate_account(&updated).await?;
        Ok(AccountInfo::from(&updated))
    }

    /// Writes every key of `account` again, with the account's new state.
    async fn propagate_account(&self, account: &AccountDoc) -> Result<(), KeyAdminError> {
        for key in self.mongo.list_keys(Some(&account.id)).await? {
            self.propagate(&key, account).await;
        }
        Ok(())
    }

    /// Issues a key for an account. Returns the key — the only time it is
    /// ever available: only its digest is stored.
    pub async fn create_key(
        &self,
        issuer: &KeyIssuer,
        account: &AccountId,
        app: Option<AppName>,
    ) -> Result<(ApiKey, KeyInfo), KeyAdminError> {
        let account_doc = self.account(account).await?;
        loop {
            let key = issuer.issue();
            let Some(key_id) = key.key_id() else {
                return Err(KeyAdminError::Invalid("issued key has no id".into()));
            };
            let doc = new_key_doc(key_id, key.digest(), account, app.clone(), false);
            match self.mongo.insert_key(&doc).await? {
                Inserted::Created => {
                    self.propagate(&doc, &account_doc).await;
                    return Ok((key, KeyInfo::from(&doc)));
                }
                // A 64-bit id collision: issue another key.
                Inserted::Duplicate => continue,
            }
        }
    }

    /// Revokes a key by id.
    pub async fn revoke_key(&self, key_id: KeyId) -> Result<KeyInfo, KeyAdminError> {
        self.set_key_state(key_id, KeyState::Revoked).await
    }

    /// Sets a key's state (revoke, or undo a mistaken revocation).
    pub async fn set_key_state(
        &self,
        key_id: KeyId,
        state: KeyState,
    ) -> Result<KeyInfo, KeyAdminError> {
        let updated = self
            .mongo
            .set_key_state(&key_id.to_string(), state)
            .await?
            .ok_or_else(|| KeyAdminError::NotFound(format!("key {key_id}")))?;
        let account = AccountId::parse(&updated.account_id)
            .map_err(|e| KeyAdminError::Invalid(e.to_string()))?;
        let account_doc = self.account(&account).await?;
        self.propagate(&updated, &account_doc).await;
        Ok(KeyInfo::from(&updated))
    }

    /// Lists keys, optionally of one account, oldest first.
    pub async fn list_keys(
        &self,
        account: Option<&AccountId>,
    ) -> Result<Vec<KeyInfo>, KeyAdminError> {
        let keys = self.mongo.list_keys(account.map(AccountId::as_str)).await?;
        Ok(keys.iter().map(KeyInfo::from).collect())
    }

    /// Lists accounts.
    pub async fn list_accounts(&self) -> Result<Vec<AccountInfo>, KeyAdminError> {
        let accounts = self.mongo.list_accounts().await?;
        Ok(accounts.iter().map(AccountInfo::from).collect())
    }

    /// Imports legacy keys. Keys whose digest is already known are left
    /// alone, so an import can be repeated. Every account is checked
    /// before the first key is written.
    pub async fn import_legacy(&self, keys: &[LegacyKey]) -> Result<ImportReport, KeyAdminError> {
        self.import_legacy_reporting(keys, |_| {}).await
    }

    /// [`Self::import_legacy`], calling `progress` with the report so far
    /// after each key (a progress bar).
    pub async fn import_legacy_reporting(
        &self,
        keys: &[LegacyKey],
        mut progress: impl FnMut(&ImportReport),
    ) -> Result<ImportReport, KeyAdminError> {
        let mut report = ImportReport::default();
        let mut accounts = std::collections::HashMap::new();
        for k in keys {
            if !accounts.contains_key(&k.account) {
                accounts.insert(k.account.clone(), self.account(&k.account).await?);
            }
        }
        for k in keys {
            let doc = new_key_doc(KeyId::random(), k.digest, &k.account, k.app.clone(), true);
            match self.mongo.insert_key(&doc).await? {
                Inserted::Created => {
                    report.created += 1;
                    if let Some(account) = accounts.get(&k.account) {
                        self.propagate(&doc, account).await;
                    }
                }
                Inserted::Duplicate => report.existing += 1,
            }
            progress(&report);
        }
        Ok(report)
    }

    async fn account(&self, id: &AccountId) -> Result<AccountDoc, KeyAdminError> {
        self.mongo
            .account(id.as_str())
            .await?
            .ok_or_else(|| KeyAdminError::NotFound(format!("account {id}")))
    }

    /// Writes the key's record to Redis and tells every authenticator.
    /// Failures are logged: MongoDB already holds the truth, and the key
    /// sync will carry it to Redis.
    #[allow(clippy::unused_async)]
    async fn propagate(&self, key: &KeyDoc, account: &AccountDoc) {
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            match record_of(key, account) {
                Ok((digest, record)) => {
                    if let Err(e) = redis.put_current(&digest, &record).await {
                        tracing::warn!(key_id = %key.key_id, error = %e, "could not write key to Redis; the key sync will");
                    }
                    if let Err(e) = redis.publish_invalidation(&digest).await {
                        tracing::warn!(key_id = %key.key_id, error = %e, "could not publish invalidation");
                    }
                }
                Err(e) => tracing::warn!(key_id = %key.key_id, error = %e, "key record is invalid"),
            }
        }
        #[cfg(not(feature = "redis"))]
        let _ = (key, account, record_of);
    }
}

fn new_key_doc(
    key_id: KeyId,
    digest: KeyDigest,
    account: &AccountId,
    app: Option<AppName>,
    legacy: bool,
) -> KeyDoc {
    let at = now();
    KeyDoc {
        key_id: key_id.to_string(),
        digest: digest.to_hex(),
        account_id: account.to_string(),
        state: KeyState::Active,
        app: app.map(|a| a.to_string()),
        legacy,
        revision: 1,
        created_at: at,
        updated_at: at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_lines() {
        let k = LegacyKey::parse_line("acme, 3f2504e0-4f89-11d3-9a0c-0305e82c3301, shop").unwrap();
        assert_eq!(k.account.as_str(), "acme");
        assert_eq!(
            k.digest,
            KeyDigest::of_secret("3f2504e0-4f89-11d3-9a0c-0305e82c3301")
        );
        assert_eq!(k.app.unwrap().as_str(), "shop");
        let d = KeyDigest::of_secret("x");
        let k = LegacyKey::parse_line(&format!("acme,sha256:{d}")).unwrap();
        assert_eq!(k.digest, d);
        assert!(k.app.is_none());
        assert!(LegacyKey::parse_line("acme").is_err());
        // Any token an older system issued, short or with `+/=`.
        for token in ["short1234", "Zm9vYmFyYmF6cXV4+/=="] {
            let k = LegacyKey::parse_line(&format!("acme,{token}")).unwrap();
            assert_eq!(k.digest, KeyDigest::of_secret(token));
        }
        let inlet_key = format!("{KEY_PREFIX}{}", "A".repeat(64));
        assert!(LegacyKey::parse_line(&format!("acme,{inlet_key}")).is_err());
        assert!(LegacyKey::parse_line("acme,bell\u{7}").is_err());
        assert!(LegacyKey::parse_line("a b,3f2504e0-4f89-11d3-9a0c-0305e82c3301").is_err());
        assert!(LegacyKey::parse_line("a,3f2504e0-4f89-11d3-9a0c-0305e82c3301,app,extra").is_err());
    }

    proptest::proptest! {
        /// Whatever `inlet keys import` accepts as a raw key, the API
        /// accepts for lookup: it is never answered `malformed_key`.
        #[test]
        fn any_key_the_import_accepts_is_never_malformed(
            token in proptest::prop_oneof![
                "\\PC{0,300}",
                "[A-Za-z0-9+/=._~-]{1,200}",
                proptest::string::string_regex("[ -~]{1,5000}").unwrap(),
                "inlet_[A-Za-z0-9_-]{0,70}",
            ],
            secret in proptest::prelude::any::<[u8; 32]>(),
        ) {
            let line = format!("acme,{token}");
            if let Ok(imported) = LegacyKey::parse_line(&line) {
                // The API sees the key as agents send it: trimmed.
                let presented = line.split(',').nth(1).unwrap_or_default().trim();
                let verifier = inlet_domain::KeyVerifier::new(vec![
                    inlet_domain::SigningSecret::new(1, &secret).unwrap(),
                ])
                .unwrap();
                let parsed = ApiKey::parse(presented, &verifier);
                proptest::prop_assert!(parsed.is_ok(), "{presented:?}: {parsed:?}");
                proptest::prop_assert_eq!(parsed.unwrap().digest(), imported.digest);
            }
        }
    }
}
