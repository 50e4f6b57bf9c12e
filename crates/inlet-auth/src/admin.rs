//! Account and key administration against the source of truth.
//!
//! Every change bumps the document's `revision` and `updated_at` (the key
//! sync follows both), and is then propagated at once when Redis is
//! configured: the key's new record is written to Redis' current generation
//! and an invalidation is published, so running authenticators drop their
//! cached decision within milliseconds — a revoked key is rejected by every
//! instance well within the 2 s promise. If Redis is down, the change is
//! still recorded in MongoDB and reaches Redis through the key sync.

use futures::TryStreamExt as _;
use inlet_domain::{
    AccountId, AccountState, ApiKey, AppName, KEY_PREFIX, KeyDigest, KeyId, KeyIssuer, KeyState,
    RateLimit,
};
use mongodb::bson::{self, doc};
use mongodb::options::ReturnDocument;

use crate::mongo_store::{AccountDoc, KeyDoc, MongoStore, mongo_error, record_of};
use crate::store::StoreError;

#[cfg(feature = "redis")]
use crate::redis_store::RedisStore;

/// Why an administrative operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
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

fn is_duplicate(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        _ => e.to_string().contains("E11000"),
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

fn now() -> bson::DateTime {
    bson::DateTime::now()
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
    ) -> Result<AccountDoc, AdminError> {
        let at = now();
        let account = AccountDoc {
            id: id.to_string(),
            state: AccountState::Active,
            rate_limit,
            revision: 1,
            created_at: at,
            updated_at: at,
        };
        match self.mongo.accounts().insert_one(&account).await {
            Ok(_) => Ok(account),
            Err(e) if is_duplicate(&e) => Err(AdminError::AlreadyExists(format!("account {id}"))),
            Err(e) => Err(mongo_error(&e).into()),
        }
    }

    /// Suspends or re-activates an account; every key of the account is
    /// re-propagated.
    pub async fn set_account_state(
        &self,
        id: &AccountId,
        state: AccountState,
    ) -> Result<AccountDoc, AdminError> {
        let updated = set_state(&self.mongo.accounts(), id.as_str(), &state)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("account {id}")))?;
        let mut keys = self
            .mongo
            .keys()
            .find(doc! { "account_id": id.as_str() })
            .await
            .map_err(|e| mongo_error(&e))?;
        while let Some(key) = keys.try_next().await.map_err(|e| mongo_error(&e))? {
            self.propagate(&key, &updated).await;
        }
        Ok(updated)
    }

    /// Issues a key for an account. Returns the key — the only time it is
    /// ever available: only its digest is stored.
    pub async fn create_key(
        &self,
        issuer: &KeyIssuer,
        account: &AccountId,
        app: Option<AppName>,
    ) -> Result<(ApiKey, KeyDoc), AdminError> {
        let account_doc = self.account(account).await?;
        loop {
            let key = issuer.issue();
            let Some(key_id) = key.key_id() else {
                return Err(AdminError::Invalid("issued key has no id".into()));
            };
            let doc = new_key_doc(key_id, key.digest(), account, app.clone(), false);
            match self.mongo.keys().insert_one(&doc).await {
                Ok(_) => {
                    self.propagate(&doc, &account_doc).await;
                    return Ok((key, doc));
                }
                // A 64-bit id collision: issue another key.
                Err(e) if is_duplicate(&e) => continue,
                Err(e) => return Err(mongo_error(&e).into()),
            }
        }
    }

    /// Revokes a key by id.
    pub async fn revoke_key(&self, key_id: KeyId) -> Result<KeyDoc, AdminError> {
        self.set_key_state(key_id, KeyState::Revoked).await
    }

    /// Sets a key's state (revoke, or undo a mistaken revocation).
    pub async fn set_key_state(
        &self,
        key_id: KeyId,
        state: KeyState,
    ) -> Result<KeyDoc, AdminError> {
        let updated = set_state(&self.mongo.keys(), &key_id.to_string(), &state)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("key {key_id}")))?;
        let account = AccountId::parse(&updated.account_id)
            .map_err(|e| AdminError::Invalid(e.to_string()))?;
        let account_doc = self.account(&account).await?;
        self.propagate(&updated, &account_doc).await;
        Ok(updated)
    }

    /// Lists keys, optionally of one account, oldest first.
    pub async fn list_keys(&self, account: Option<&AccountId>) -> Result<Vec<KeyDoc>, AdminError> {
        let filter = match account {
            Some(a) => doc! { "account_id": a.as_str() },
            None => doc! {},
        };
        self.mongo
            .keys()
            .find(filter)
            .sort(doc! { "created_at": 1, "_id": 1 })
            .await
            .map_err(|e| mongo_error(&e))?
            .try_collect()
            .await
            .map_err(|e| mongo_error(&e).into())
    }

    /// Lists accounts.
    pub async fn list_accounts(&self) -> Result<Vec<AccountDoc>, AdminError> {
        self.mongo
            .accounts()
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .map_err(|e| mongo_error(&e))?
            .try_collect()
            .await
            .map_err(|e| mongo_error(&e).into())
    }

    /// Imports legacy keys. Keys whose digest is already known are left
    /// alone, so an import can be repeated.
    pub async fn import_legacy(&self, keys: &[LegacyKey]) -> Result<ImportReport, AdminError> {
        let mut report = ImportReport::default();
        let mut accounts = std::collections::HashMap::new();
        for k in keys {
            if !accounts.contains_key(&k.account) {
                accounts.insert(k.account.clone(), self.account(&k.account).await?);
            }
        }
        for k in keys {
            let doc = new_key_doc(KeyId::random(), k.digest, &k.account, k.app.clone(), true);
            match self.mongo.keys().insert_one(&doc).await {
                Ok(_) => {
                    report.created += 1;
                    if let Some(account) = accounts.get(&k.account) {
                        self.propagate(&doc, account).await;
                    }
                }
                Err(e) if is_duplicate(&e) => report.existing += 1,
                Err(e) => return Err(mongo_error(&e).into()),
            }
        }
        Ok(report)
    }

    async fn account(&self, id: &AccountId) -> Result<AccountDoc, AdminError> {
        self.mongo
            .accounts()
            .find_one(doc! { "_id": id.as_str() })
            .await
            .map_err(|e| mongo_error(&e))?
            .ok_or_else(|| AdminError::NotFound(format!("account {id}")))
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

/// Sets a document's `state`, bumping its revision and `updated_at` (what
/// the key sync follows); returns the updated document, `None` if absent.
async fn set_state<T, S>(
    collection: &mongodb::Collection<T>,
    id: &str,
    state: &S,
) -> Result<Option<T>, AdminError>
where
    T: serde::de::DeserializeOwned + Send + Sync,
    S: serde::Serialize,
{
    let state = bson::to_bson(state).map_err(|e| AdminError::Invalid(e.to_string()))?;
    collection
        .find_one_and_update(
            doc! { "_id": id },
            doc! {
                "$set": { "state": state, "updated_at": now() },
                "$inc": { "revision": 1 },
            },
        )
        .return_document(ReturnDocument::After)
        .await
        .map_err(|e| mongo_error(&e).into())
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
