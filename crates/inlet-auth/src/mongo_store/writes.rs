//! What key administration reads and writes: accounts and keys by id,
//! inserts that report a duplicate instead of failing, and state changes
//! that bump `revision` and `updated_at` (what the key sync follows).

use futures::TryStreamExt as _;
use inlet_domain::{AccountState, KeyState, RateLimit};
use mongodb::bson::{self, Document, doc};
use mongodb::options::ReturnDocument;

use super::{AccountDoc, KeyDoc, MongoStore, mongo_error};
use crate::store::StoreError;

/// Whether an insert created the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// It was created.
    Created,
    /// A document with the same unique value (`_id`, or a key's digest)
    /// already exists; nothing was written.
    Duplicate,
}

fn is_duplicate(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        _ => e.to_string().contains("E11000"),
    }
}

fn inserted(
    result: mongodb::error::Result<mongodb::results::InsertOneResult>,
) -> Result<Inserted, StoreError> {
    match result {
        Ok(_) => Ok(Inserted::Created),
        Err(e) if is_duplicate(&e) => Ok(Inserted::Duplicate),
        Err(e) => Err(mongo_error(&e)),
    }
}

impl MongoStore {
    /// Inserts an account document.
    pub async fn insert_account(&self, account: &AccountDoc) -> Result<Inserted, StoreError> {
        inserted(self.accounts().insert_one(account).await)
    }

    /// Inserts a key document.
    pub async fn insert_key(&self, key: &KeyDoc) -> Result<Inserted, StoreError> {
        inserted(self.keys().insert_one(key).await)
    }

    /// One account by id; `None` when it does not exist.
    pub async fn account(&self, id: &str) -> Result<Option<AccountDoc>, StoreError> {
        self.accounts()
            .find_one(doc! { "_id": id })
            .await
            .map_err(|e| mongo_error(&e))
    }

    /// Sets an account's state (bumping its revision and `updated_at`);
    /// returns the updated document, `None` when it does not exist.
    pub async fn set_account_state(
        &self,
        id: &str,
        state: AccountState,
    ) -> Result<Option<AccountDoc>, StoreError> {
        set_state(&self.accounts(), id, &state).await
    }

    /// Sets an account's own rate limit, or with `None` removes it (the
    /// server default applies), bumping its revision and `updated_at`;
    /// returns the updated document, `None` when it does not exist.
    pub async fn set_account_rate_limit(
        &self,
        id: &str,
        limit: Option<RateLimit>,
    ) -> Result<Option<AccountDoc>, StoreError> {
        let change = match limit {
            Some(limit) => {
                let limit = bson::to_bson(&limit)
                    .map_err(|e| StoreError::Unavailable(format!("encoding a rate limit: {e}")))?;
                Change::Set(doc! { "rate_limit": limit })
            }
            None => Change::Unset("rate_limit"),
        };
        update(&self.accounts(), id, change).await
    }

    /// Sets a key's state (bumping its revision and `updated_at`); returns
    /// the updated document, `None` when it does not exist.
    pub async fn set_key_state(
        &self,
        id: &str,
        state: KeyState,
    ) -> Result<Option<KeyDoc>, StoreError> {
        set_state(&self.keys(), id, &state).await
    }

    /// Key documents, of one account or all, oldest first.
    pub async fn list_keys(&self, account_id: Option<&str>) -> Result<Vec<KeyDoc>, StoreError> {
        let filter = match account_id {
            Some(a) => doc! { "account_id": a },
            None => doc! {},
        };
        self.keys()
            .find(filter)
            .sort(doc! { "created_at": 1, "_id": 1 })
            .await
            .map_err(|e| mongo_error(&e))?
            .try_collect()
            .await
            .map_err(|e| mongo_error(&e))
    }

    /// Every account document, by id.
    pub async fn list_accounts(&self) -> Result<Vec<AccountDoc>, StoreError> {
        self.accounts()
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .map_err(|e| mongo_error(&e))?
            .try_collect()
            .await
            .map_err(|e| mongo_error(&e))
    }
}

/// Sets a document's `state`, bumping its revision and `updated_at`;
/// returns the updated document, `None` if absent.
async fn set_state<T, S>(
    collection: &mongodb::Collection<T>,
    id: &str,
    state: &S,
) -> Result<Option<T>, StoreError>
where
    T: serde::de::DeserializeOwned + Send + Sync,
    S: serde::Serialize,
{
    let state = bson::to_bson(state)
        .map_err(|e| StoreError::Unavailable(format!("encoding a state: {e}")))?;
    update(collection, id, Change::Set(doc! { "state": state })).await
}

/// What [`update`] changes besides the revision and `updated_at`.
enum Change {
    /// These fields get these values.
    Set(Document),
    /// This field goes.
    Unset(&'static str),
}

/// Applies `change` to the document `id`, bumping its revision and
/// `updated_at` (so the sync and every cache see a newer record); returns
/// the updated document, `None` if absent.
async fn update<T>(
    collection: &mongodb::Collection<T>,
    id: &str,
    change: Change,
) -> Result<Option<T>, StoreError>
where
    T: serde::de::DeserializeOwned + Send + Sync,
{
    let mut update = doc! { "$inc": { "revision": 1 } };
    let mut set = doc! { "updated_at": bson::DateTime::now() };
    match change {
        Change::Set(fields) => set.extend(fields),
        Change::Unset(field) => {
            update.insert("$unset", doc! { field: "" });
        }
    }
    update.insert("$set", set);
    collection
        .find_one_and_update(doc! { "_id": id }, update)
        .return_document(ReturnDocument::After)
        .await
        .map_err(|e| mongo_error(&e))
}
