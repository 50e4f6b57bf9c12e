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
//! unknown. A key whose account does not exist (deleted by another writer)
//! is absent too: it has no owner that could push. A document that cannot
//! be read is neither: it is [`StoreError::Corrupt`], never a verdict.
//!
//! Other applications write these collections directly (the vendor's main
//! app creates, changes and deletes accounts and keys): everything here,
//! and the key sync, reads documents one by one, so one unreadable document
//! never hides the others.
//!
//! # Layout
//!
//! - this module: document types, the store and its lookups;
//! - [`changes`]: what the key sync reads — full scans, change streams,
//!   polling, and the id sweep that finds deletions when polling;
//! - [`writes`]: what key administration reads and writes — accounts and
//!   keys by id, inserts, state changes, listings.
//!
//! Other crates use these methods, not the collections: the names and
//! document shapes stay in this module.

pub mod changes;
pub mod writes;

pub use writes::Inserted;

use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt as _;
use inlet_domain::{
    AccountId, AccountState, AppName, KeyDigest, KeyId, KeyRecord, KeyState, RateLimit,
};
use mongodb::bson::{self, Bson, Document, doc};
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

    /// Shuts the client down cleanly (call before the runtime goes away,
    /// so no background cleanup, such as killing a cursor, runs against a
    /// dropped connection pool). Every clone of this store shares the
    /// client: use none of them afterwards.
    pub async fn shutdown(&self) {
        self.db.client().clone().shutdown().await;
    }

    /// The accounts collection.
    pub fn accounts(&self) -> Collection<AccountDoc> {
        self.db.collection(ACCOUNTS)
    }

    /// The keys collection.
    pub fn keys(&self) -> Collection<KeyDoc> {
        self.db.collection(API_KEYS)
    }

    /// One key (the first matching `filter`) joined with its account.
    pub(crate) async fn joined_entry(
        &self,
        filter: Document,
    ) -> Result<Option<KeyEntry>, StoreError> {
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
        let Some(mut raw) = cursor.try_next().await.map_err(|e| mongo_error(&e))? else {
            return Ok(None);
        };
        let account = take_joined_account(&mut raw);
        Ok(Some(KeyEntry::read(raw, account.as_ref())))
    }
}

/// A document's `_id` as text (strings as they are, other types in their
/// extended-JSON form).
pub(crate) fn id_text(d: &Document) -> Option<String> {
    match d.get("_id")? {
        Bson::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// An account document, read (or why it could not be).
pub type AccountRead = Result<AccountDoc, String>;

/// Takes the `account` array a `$lookup` added to a key document: `None`
/// when the account does not exist, `Some(Err(..))` when it cannot be read.
pub(crate) fn take_joined_account(key: &mut Document) -> Option<AccountRead> {
    let account = match key.remove("account") {
        Some(Bson::Array(mut accounts)) if !accounts.is_empty() => accounts.swap_remove(0),
        _ => return None,
    };
    Some(match account {
        Bson::Document(d) => bson::from_document::<AccountDoc>(d).map_err(|e| e.to_string()),
        other => Err(format!("not a document: {other}")),
    })
}

/// A key document as read from the source of truth.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyEntry {
    /// A key with a usable record.
    Usable {
        /// The key id.
        key_id: KeyId,
        /// Its digest.
        digest: KeyDigest,
        /// Its record, account state included.
        record: KeyRecord,
    },
    /// A readable key whose account does not exist: it cannot push (the
    /// source of truth's verdict is "unknown").
    Orphan {
        /// The key id.
        key_id: KeyId,
        /// Its digest.
        digest: KeyDigest,
        /// The missing account.
        account_id: String,
    },
    /// A document that cannot be read: no verdict either way.
    Unreadable {
        /// The document's `_id`, as text.
        id: String,
        /// Its digest, when that field at least could be read.
        digest: Option<KeyDigest>,
        /// What is wrong.
        reason: String,
    },
}

impl KeyEntry {
    /// Reads a key document given what is known of its account: `None`
    /// when the account does not exist, `Some(Err(reason))` when its
    /// document cannot be read.
    pub fn read(key: Document, account: Option<&AccountRead>) -> KeyEntry {
        let id = id_text(&key).unwrap_or_default();
        let digest = key
            .get_str("digest")
            .ok()
            .and_then(|d| KeyDigest::parse(d).ok());
        let unreadable = |reason: String| KeyEntry::Unreadable {
            id: id.clone(),
            digest,
            reason,
        };
        let key: KeyDoc = match bson::from_document(key) {
            Ok(k) => k,
            Err(e) => return unreadable(format!("key document: {e}")),
        };
        let account = match account {
            None => {
                return match (KeyId::parse(&key.key_id), digest) {
                    (Ok(key_id), Some(digest)) => KeyEntry::Orphan {
                        key_id,
                        digest,
                        account_id: key.account_id,
                    },
                    _ => unreadable("key document: invalid id or digest".into()),
                };
            }
            Some(Err(reason)) => return unreadable(format!("account document: {reason}")),
            Some(Ok(account)) => account,
        };
        match record_of(&key, account) {
            Ok((digest, record)) => KeyEntry::Usable {
                key_id: record.key_id,
                digest,
                record,
            },
            Err(reason) => unreadable(reason),
        }
    }

    /// The document's `_id`, as text.
    pub fn id(&self) -> String {
        match self {
            KeyEntry::Usable { key_id, .. } | KeyEntry::Orphan { key_id, .. } => key_id.to_string(),
            KeyEntry::Unreadable { id, .. } => id.clone(),
        }
    }

    /// The digest, when known.
    pub fn digest(&self) -> Option<KeyDigest> {
        match self {
            KeyEntry::Usable { digest, .. } | KeyEntry::Orphan { digest, .. } => Some(*digest),
            KeyEntry::Unreadable { digest, .. } => *digest,
        }
    }
}

#[async_trait]
impl KeyStore for MongoStore {
    fn name(&self) -> &'static str {
        "mongo"
    }

    async fn lookup(&self, digest: &KeyDigest) -> Result<Lookup, StoreError> {
        match self
            .joined_entry(doc! { "digest": digest.to_hex() })
            .await?
        {
            Some(KeyEntry::Usable { record, .. }) => Ok(Lookup::Found(record)),
            // No key, or a key whose account does not exist: unknown.
            None | Some(KeyEntry::Orphan { .. }) => Ok(Lookup::Absent),
            Some(KeyEntry::Unreadable { id, reason, .. }) => Err(StoreError::Corrupt {
                digest: *digest,
                reason: format!("key {id}: {reason}"),
            }),
        }
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
