//! MongoDB, the source of truth for keys and accounts (feature `mongo`).
//!
//! # Collections
//!
//! `accounts`:
//! `{ _id: account id, state: "active"|"suspended", rate_limit?: {per_second, burst},
//!    revision, created_at, updated_at }`
//!
//! `api_keys`:
//! `{ _id: key id (16 hex), digest: SHA-256 hex (unique index), account_id,
//!    state: "active"|"revoked", app?, legacy, revision, created_at, updated_at }`
//!
//! A lookup joins the key with its account in one round trip (`$lookup`).
//! The source of truth is always complete: when it answers, "absent" means
//! unknown.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt as _;
use inlet_domain::{
    AccountId, AccountState, AppName, KeyDigest, KeyId, KeyRecord, KeyState, RateLimit,
};
use mongodb::bson::{self, Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database};
use serde::{Deserialize, Serialize};

use crate::settings::MongoSettings;
use crate::store::{KeyStore, Lookup, Readiness, StoreError};

/// Name of the accounts collection.
pub const ACCOUNTS: &str = "accounts";
/// Name of the keys collection.
pub const API_KEYS: &str = "api_keys";

/// An account document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountDoc {
    /// The account id.
    #[serde(rename = "_id")]
    pub id: String,
    /// Active or suspended.
    pub state: AccountState,
    /// Per-account rate limit; `None`: the server default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Increases with every change.
    pub revision: i64,
    /// Creation time.
    pub created_at: bson::DateTime,
    /// Last change.
    pub updated_at: bson::DateTime,
}

/// A key document. Holds the digest, never the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyDoc {
    /// The key id, 16 hex digits.
    #[serde(rename = "_id")]
    pub key_id: String,
    /// SHA-256 of the key, 64 hex digits.
    pub digest: String,
    /// Owning account.
    pub account_id: String,
    /// Active or revoked.
    pub state: KeyState,
    /// App restriction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Imported from an older system (opaque format).
    #[serde(default)]
    pub legacy: bool,
    /// Increases with every change.
    pub revision: i64,
    /// Creation time.
    pub created_at: bson::DateTime,
    /// Last change.
    pub updated_at: bson::DateTime,
}

#[derive(Debug, Deserialize)]
struct JoinedKey {
    #[serde(flatten)]
    key: KeyDoc,
    #[serde(default)]
    account: Vec<AccountDoc>,
}

/// Builds a [`KeyRecord`] from a key and its account.
pub fn record_of(key: &KeyDoc, account: &AccountDoc) -> Result<(KeyDigest, KeyRecord), String> {
    let digest = KeyDigest::parse(&key.digest).map_err(|e| e.to_string())?;
    let record = KeyRecord {
        key_id: KeyId::parse(&key.key_id).map_err(|e| e.to_string())?,
        account_id: AccountId::parse(&key.account_id).map_err(|e| e.to_string())?,
        key_state: key.state,
        account_state: account.state,
        rate_limit: account.rate_limit,
        app: match &key.app {
            Some(a) => Some(AppName::parse(a).map_err(|e| e.to_string())?),
            None => None,
        },
        // Both revisions only grow, so their sum grows whenever either
        // document changes.
        revision: (key.revision.max(0) + account.revision.max(0)) as u64,
        updated_at_ms: key
            .updated_at
            .timestamp_millis()
            .max(account.updated_at.timestamp_millis()),
    };
    Ok((digest, record))
}

/// Maps a driver error onto a store error.
pub fn mongo_error(e: &mongodb::error::Error) -> StoreError {
    use mongodb::error::ErrorKind;
    match e.kind.as_ref() {
        ErrorKind::ServerSelection { .. } => StoreError::Unavailable(format!("no server: {e}")),
        ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => StoreError::Timeout,
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// Connects a client (lazily: no I/O until the first operation).
pub async fn connect(settings: &MongoSettings) -> Result<Client, StoreError> {
    let mut opts = ClientOptions::parse(&settings.url)
        .await
        .map_err(|e| StoreError::Unavailable(format!("mongo url: {e}")))?;
    opts.server_selection_timeout =
        Some(Duration::from_millis(settings.server_selection_timeout_ms));
    opts.connect_timeout = Some(Duration::from_millis(settings.connect_timeout_ms));
    opts.max_pool_size = Some(settings.max_pool_size);
    opts.app_name = Some(settings.app_name.clone());
    Client::with_options(opts).map_err(|e| StoreError::Unavailable(format!("mongo client: {e}")))
}

/// The MongoDB key store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MongoStore {
    db: Database,
}

impl MongoStore {
    /// A store over `db`.
    pub fn new(db: Database) -> Self {
        MongoStore { db }
    }

    /// Connects to the configured database.
    pub async fn connect(settings: &MongoSettings) -> Result<Self, StoreError> {
        Ok(MongoStore::new(
            connect(settings).await?.database(&settings.database),
        ))
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The accounts collection.
    pub fn accounts(&self) -> Collection<AccountDoc> {
        self.db.collection(ACCOUNTS)
    }

    /// The keys collection.
    pub fn keys(&self) -> Collection<KeyDoc> {
        self.db.collection(API_KEYS)
    }

    /// Every account, by id (accounts are few next to keys).
    pub async fn all_accounts(&self) -> Result<HashMap<String, AccountDoc>, StoreError> {
        let mut cursor = self
            .accounts()
            .find(doc! {})
            .await
            .map_err(|e| mongo_error(&e))?;
        let mut out = HashMap::new();
        while let Some(a) = cursor.try_next().await.map_err(|e| mongo_error(&e))? {
            out.insert(a.id.clone(), a);
        }
        Ok(out)
    }

    /// A cursor over every key, in `_id` order, `batch` documents per round trip.
    pub async fn all_keys(&self, batch: u32) -> Result<mongodb::Cursor<KeyDoc>, StoreError> {
        self.keys()
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .batch_size(batch)
            .await
            .map_err(|e| mongo_error(&e))
    }

    /// The record of one key (by id), joined with its account.
    pub async fn record_by_key_id(
        &self,
        key_id: &str,
    ) -> Result<Option<(KeyDigest, KeyRecord)>, StoreError> {
        self.joined(doc! { "_id": key_id }).await
    }

    async fn joined(&self, filter: Document) -> Result<Option<(KeyDigest, KeyRecord)>, StoreError> {
        let pipeline = [
            doc! { "$match": filter },
            doc! { "$limit": 1 },
            doc! { "$lookup": {
                "from": ACCOUNTS,
                "localField": "account_id",
                "foreignField": "_id",
                "as": "account",
            }},
        ];
        let mut cursor = self
            .keys()
            .clone_with_type::<Document>()
            .aggregate(pipeline)
            .await
            .map_err(|e| mongo_error(&e))?;
        let Some(raw) = cursor.try_next().await.map_err(|e| mongo_error(&e))? else {
            return Ok(None);
        };
        let joined: JoinedKey = bson::from_document(raw).map_err(|e| StoreError::Corrupt {
            digest: KeyDigest::from_bytes([0; 32]),
            reason: format!("key document: {e}"),
        })?;
        let digest = KeyDigest::parse(&joined.key.digest).unwrap_or(KeyDigest::from_bytes([0; 32]));
        let Some(account) = joined.account.first() else {
            return Err(StoreError::Corrupt {
                digest,
                reason: format!(
                    "account {:?} of key {} does not exist",
                    joined.key.account_id, joined.key.key_id
                ),
            });
        };
        record_of(&joined.key, account)
            .map(Some)
            .map_err(|reason| StoreError::Corrupt { digest, reason })
    }
}

#[async_trait]
impl KeyStore for MongoStore {
    fn name(&self) -> &'static str {
        "mongo"
    }

    async fn lookup(&self, digest: &KeyDigest) -> Result<Lookup, StoreError> {
        Ok(
            match self.joined(doc! { "digest": digest.to_hex() }).await? {
                Some((_, record)) => Lookup::Found(record),
                None => Lookup::Absent,
            },
        )
    }

    async fn readiness(&self) -> Readiness {
        if let Err(e) = self.db.run_command(doc! { "ping": 1 }).await {
            return Readiness::Unreachable(mongo_error(&e));
        }
        let keys = self.keys().estimated_document_count().await.unwrap_or(0);
        Readiness::Populated {
            generation: 0,
            keys,
            completed_at_ms: inlet_domain::now_ms(),
        }
    }
}
