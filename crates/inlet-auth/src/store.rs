//! The key-store abstraction.
//!
//! A store answers one question — what is known about the key with this
//! digest? — and one meta-question — is my answer worth anything right now?
//! The incident happened because a store's "I have nothing" was read as "this
//! key does not exist". Here the two are different values of [`Lookup`]:
//! [`Lookup::Absent`] means "I hold the complete key set and this key is not
//! in it", [`Lookup::NotLoaded`] means "my key set is incomplete; absence
//! proves nothing".

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use inlet_domain::{KeyDigest, KeyRecord};

/// What a store knows about one digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The store holds this record.
    Found(KeyRecord),
    /// The store holds a complete key set, and this key is not in it.
    Absent,
    /// The store's key set is not (yet) complete: it cannot say "absent".
    NotLoaded,
}

/// Whether a store's answers can be trusted now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// The store holds a complete key set.
    Populated {
        /// Which load produced it (increases with every full load; 0 for
        /// stores that are always complete, such as the source of truth).
        generation: u64,
        /// Keys in the set (may be an estimate).
        keys: u64,
        /// When the load completed, Unix ms (for always-complete stores:
        /// when this was checked).
        completed_at_ms: i64,
    },
    /// Reachable, but no complete key set is loaded.
    NotPopulated,
    /// The store cannot be reached or fails.
    Unreachable(StoreError),
}

impl Readiness {
    /// Whether lookups can decide.
    pub fn is_populated(&self) -> bool {
        matches!(self, Readiness::Populated { .. })
    }

    /// Short human description for readiness endpoints.
    pub fn describe(&self) -> String {
        match self {
            Readiness::Populated {
                generation, keys, ..
            } => format!("populated (generation {generation}, {keys} keys)"),
            Readiness::NotPopulated => "reachable but not populated".to_owned(),
            Readiness::Unreachable(e) => format!("unreachable: {e}"),
        }
    }
}

/// Why a store could not answer. None of these says anything about the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer in time.
    #[error("timed out")]
    Timeout,
    /// The store cannot be reached or refused the operation.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A stored record could not be decoded.
    #[error("corrupt record for {digest:?}: {reason}")]
    Corrupt {
        /// The digest whose record is broken.
        digest: KeyDigest,
        /// What is wrong with it.
        reason: String,
    },
}

impl StoreError {
    /// Label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Timeout => "timeout",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Corrupt { .. } => "corrupt",
        }
    }
}

/// A source of key records. Implement it to plug another store into the
/// [`crate::Authenticator`].
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Short stable name, used as a metrics label (`redis`, `mongo`, `file`).
    fn name(&self) -> &'static str;

    /// Looks a digest up.
    async fn lookup(&self, digest: &KeyDigest) -> Result<Lookup, StoreError>;

    /// Reports whether lookups can currently decide.
    async fn readiness(&self) -> Readiness;
}

/// A shared, type-erased store.
pub type SharedStore = Arc<dyn KeyStore>;

impl fmt::Debug for dyn KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyStore({})", self.name())
    }
}

/// An in-memory store: a fixed key set, always populated. Useful for tests
/// and for services that hold their keys in code.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: std::sync::RwLock<std::collections::HashMap<KeyDigest, KeyRecord>>,
    populated: std::sync::atomic::AtomicBool,
}

impl MemoryStore {
    /// A populated store with these records.
    pub fn new(records: impl IntoIterator<Item = (KeyDigest, KeyRecord)>) -> Self {
        let store = MemoryStore::default();
        store.replace(records);
        store
    }

    /// An empty store that is not populated (a cold cache).
    pub fn cold() -> Self {
        MemoryStore::default()
    }

    /// Replaces the whole key set and marks the store populated.
    pub fn replace(&self, records: impl IntoIterator<Item = (KeyDigest, KeyRecord)>) {
        let map = records.into_iter().collect();
        *self.records.write().unwrap_or_else(|p| p.into_inner()) = map;
        self.populated
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Inserts or replaces one record.
    pub fn upsert(&self, digest: KeyDigest, record: KeyRecord) {
        self.records
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest, record);
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn lookup(&self, digest: &KeyDigest) -> Result<Lookup, StoreError> {
        if !self.populated.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(Lookup::NotLoaded);
        }
        let map = self.records.read().unwrap_or_else(|p| p.into_inner());
        Ok(match map.get(digest) {
            Some(r) => Lookup::Found(r.clone()),
            None => Lookup::Absent,
        })
    }

    async fn readiness(&self) -> Readiness {
        if self.populated.load(std::sync::atomic::Ordering::SeqCst) {
            let keys = self.records.read().unwrap_or_else(|p| p.into_inner()).len() as u64;
            Readiness::Populated {
                generation: 0,
                keys,
                completed_at_ms: inlet_domain::now_ms(),
            }
        } else {
            Readiness::NotPopulated
        }
    }
}
