//! What the key sync reads from the source of truth: full scans, change
//! streams, polling on `updated_at`, and the id sweep that finds
//! deletions when polling. Documents are read one by one ([`KeyEntry`]):
//! another writer's unreadable document is reported, never fatal.

use std::collections::HashMap;

use futures::TryStreamExt as _;
use mongodb::Cursor;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType};

use super::{
    ACCOUNTS, API_KEYS, AccountDoc, AccountRead, KeyEntry, MongoStore, id_text, mongo_error,
};
use crate::store::StoreError;

/// Accounts by id, each parsed once (or why it could not be).
type Accounts = HashMap<String, AccountRead>;

/// A full scan of every key, in `_id` order.
pub struct KeyScan {
    accounts: Accounts,
    cursor: Cursor<Document>,
}

impl std::fmt::Debug for KeyScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyScan")
            .field("accounts", &self.accounts.len())
            .finish()
    }
}

impl KeyScan {
    /// The ids of every account read at the start of the scan.
    pub fn account_ids(&self) -> impl Iterator<Item = &str> {
        self.accounts.keys().map(String::as_str)
    }

    /// The next key, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<KeyEntry>, StoreError> {
        let Some(key) = self.cursor.try_next().await.map_err(|e| mongo_error(&e))? else {
            return Ok(None);
        };
        let account = key
            .get_str("account_id")
            .ok()
            .and_then(|id| self.accounts.get(id));
        Ok(Some(KeyEntry::read(key, account)))
    }
}

/// Which collection a change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    /// `api_keys`.
    Keys,
    /// `accounts`.
    Accounts,
}

/// One change to the source of truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Keys or accounts.
    pub collection: Collection,
    /// The document's `_id`.
    pub id: String,
    /// Whether the document was deleted (else inserted, updated or
    /// replaced: re-read it).
    pub deleted: bool,
    /// When the server applied it, Unix ms, when known.
    pub at_ms: Option<i64>,
}

/// A change stream over keys and accounts.
pub struct Changes {
    stream: ChangeStream<ChangeStreamEvent<Document>>,
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Changes")
    }
}

impl Changes {
    /// The next change; `None` when the stream ended.
    pub async fn next(&mut self) -> Result<Option<Change>, StoreError> {
        loop {
            let Some(event) = self.stream.try_next().await.map_err(|e| mongo_error(&e))? else {
                return Ok(None);
            };
            let collection = match event.ns.as_ref().and_then(|n| n.coll.as_deref()) {
                Some(API_KEYS) => Collection::Keys,
                Some(ACCOUNTS) => Collection::Accounts,
                _ => continue,
            };
            let Some(id) = event.document_key.as_ref().and_then(id_text) else {
                continue;
            };
            return Ok(Some(Change {
                collection,
                id,
                deleted: event.operation_type == OperationType::Delete,
                at_ms: event.wall_time.map(|t| t.timestamp_millis()),
            }));
        }
    }
}

/// A document changed since a poll's starting point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// The document's `_id`.
    pub id: String,
    /// Its `revision` (0 when missing).
    pub revision: i64,
    /// Its `updated_at`, Unix ms.
    pub updated_at_ms: i64,
}

/// Collection sizes, as the server estimates them (cheap: metadata only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Key documents.
    pub keys: u64,
    /// Account documents.
    pub accounts: u64,
}

fn changed(d: &Document, since_ms: i64) -> Option<Changed> {
    Some(Changed {
        id: id_text(d)?,
        revision: match d.get("revision") {
            Some(Bson::Int64(r)) => *r,
            Some(Bson::Int32(r)) => i64::from(*r),
            _ => 0,
        },
        updated_at_ms: d
            .get_datetime("updated_at")
            .map_or(since_ms, |t| t.timestamp_millis()),
    })
}

impl MongoStore {
    /// Starts a full scan of every key, `batch` documents per round trip.
    pub async fn scan_keys(&self, batch: u32) -> Result<KeyScan, StoreError> {
        let mut accounts = HashMap::new();
        let mut cursor = self
            .accounts()
            .clone_with_type::<Document>()
            .find(doc! {})
            .await
            .map_err(|e| mongo_error(&e))?;
        while let Some(raw) = cursor.try_next().await.map_err(|e| mongo_error(&e))? {
            if let Some(id) = id_text(&raw) {
                accounts.insert(id, bson::from_document(raw).map_err(|e| e.to_string()));
            }
        }
        let cursor = self
            .keys()
            .clone_with_type::<Document>()
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .batch_size(batch)
            .await
            .map_err(|e| mongo_error(&e))?;
        Ok(KeyScan { accounts, cursor })
    }

    /// Opens a change stream over keys and accounts (fails without a
    /// replica set). Events carry ids only: every change is re-read, so the
    /// newest state wins.
    pub async fn watch(&self) -> Result<Changes, StoreError> {
        let stream = self
            .database()
            .watch()
            .pipeline([doc! { "$match": {
                "ns.coll": { "$in": [API_KEYS, ACCOUNTS] },
                "operationType": { "$in": ["insert", "update", "replace", "delete"] },
            }}])
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Changes { stream })
    }

    /// Accounts whose `updated_at` is at or after `since_ms`.
    pub async fn accounts_changed_since(&self, since_ms: i64) -> Result<Vec<Changed>, StoreError> {
        let docs: Vec<Document> = self
            .accounts()
            .clone_with_type::<Document>()
            .find(doc! { "updated_at": { "$gte": bson::DateTime::from_millis(since_ms) } })
            .projection(doc! { "_id": 1, "revision": 1, "updated_at": 1 })
            .await
            .map_err(|e| mongo_error(&e))?
            .try_collect()
            .await
            .map_err(|e| mongo_error(&e))?;
        Ok(docs.iter().filter_map(|d| changed(d, since_ms)).collect())
    }

    /// Keys whose `updated_at` is at or after `since_ms`, each read with its
    /// account (one round trip for all).
    pub async fn keys_changed_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(Changed, KeyEntry)>, StoreError> {
        let pipeline = [
            doc! { "$match": { "updated_at": { "$gte": bson::DateTime::from_millis(since_ms) } } },
            doc! { "$lookup": {
                "from": ACCOUNTS,
                "localField": "account_id",
                "foreignField": "_id",
                "as": "account",
            }},
        ];
        let docs: Vec<Document> = self
            .keys()
            .clone_with_type::<Document>()
            .aggregate(pipeline)
            .await
            .map_err(|e| mongo_error(&e))?
            .try_collect()
            .await
            .map_err(|e| mongo_error(&e))?;
        Ok(docs
            .into_iter()
            .filter_map(|mut d| {
                let c = changed(&d, since_ms)?;
                let account = super::take_joined_account(&mut d);
                let entry = KeyEntry::read(d, account.as_ref());
                Some((c, entry))
            })
            .collect())
    }

    /// One key by `_id`, joined with its account; `None` when it does not
    /// exist (deleted).
    pub async fn key_entry(&self, id: &str) -> Result<Option<KeyEntry>, StoreError> {
        self.joined_entry(doc! { "_id": id }).await
    }

    /// Every key of one account, read against the account's current
    /// document (or its absence).
    pub async fn keys_of_account(&self, account_id: &str) -> Result<Vec<KeyEntry>, StoreError> {
        let account = self
            .accounts()
            .clone_with_type::<Document>()
            .find_one(doc! { "_id": account_id })
            .await
            .map_err(|e| mongo_error(&e))?
            .map(|d| bson::from_document::<AccountDoc>(d).map_err(|e| e.to_string()));
        let keys: Vec<Document> = self
            .keys()
            .clone_with_type::<Document>()
            .find(doc! { "account_id": account_id })
            .await
            .map_err(|e| mongo_error(&e))?
            .try_collect()
            .await
            .map_err(|e| mongo_error(&e))?;
        Ok(keys
            .into_iter()
            .map(|k| KeyEntry::read(k, account.as_ref()))
            .collect())
    }

    /// How many keys and accounts the server holds (an estimate from
    /// collection metadata: no scan).
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        let keys = self
            .keys()
            .estimated_document_count()
            .await
            .map_err(|e| mongo_error(&e))?;
        let accounts = self
            .accounts()
            .estimated_document_count()
            .await
            .map_err(|e| mongo_error(&e))?;
        Ok(Counts { keys, accounts })
    }

    /// Every `_id` of `collection` (the deletion sweep of polling mode).
    pub async fn ids(&self, collection: Collection) -> Result<Vec<String>, StoreError> {
        let name = match collection {
            Collection::Keys => API_KEYS,
            Collection::Accounts => ACCOUNTS,
        };
        let docs: Vec<Document> = self
            .database()
            .collection::<Document>(name)
            .find(doc! {})
            .projection(doc! { "_id": 1 })
            .batch_size(10_000)
            .await
            .map_err(|e| mongo_error(&e))?
            .try_collect()
            .await
            .map_err(|e| mongo_error(&e))?;
        Ok(docs.iter().filter_map(id_text).collect())
    }
}
