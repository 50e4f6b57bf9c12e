//! Redis as the fast primary key store (feature `redis`).
//!
//! # Key layout (under the configurable prefix `P`, default `inlet:`)
//!
//! | key | type | content |
//! |---|---|---|
//! | `P` `marker` | hash | `generation`, `count`, `completed_at_ms`: the **populated marker**, written only after a full load finished; it names the generation lookups read |
//! | `P` `generation:seq` | string | counter handing out generation numbers (starts at the current Unix ms, so numbers never go back after a flush) |
//! | `P` `loading` | hash | generation → token: the leases of loads in progress |
//! | `P` `g:{gen}:{digest}` | string | JSON [`KeyRecord`] of the key whose SHA-256 is `digest` (64 hex digits) in generation `gen` |
//! | `P` `invalidate` | pub/sub channel | a digest (hex) whose cached decisions must be dropped, `*` for all, `reload` after a full load |
//!
//! Raw keys are never stored, only digests. A load takes a lease on a new
//! generation, writes the whole key set into it, then flips the marker to it
//! in one script — only while its lease survives (no flush meanwhile) and
//! only forward (a newer generation in force wins) — then deletes older
//! generations while the marker still names its own. Readers see either
//! the old complete set or the new complete set, never a partial one, and
//! two loads running at once (a rolling deploy of the sync) can never leave
//! the marker on a generation the other one deleted. No marker at all means
//! **not populated**: lookups answer [`Lookup::NotLoaded`], never "absent".
//!
//! Every record write is **revision-guarded** (a Lua compare-and-set): a
//! record with a lower `revision` never overwrites a higher one, so racing
//! writers, and a load built from a snapshot older than a change, never
//! leave the older state behind (a record of another account is not an
//! older version: a key that moved accounts is always written). Changes
//! made during a load are written into the loading generation too.
//! Deletions leave no tombstone: a load whose snapshot predates a deletion
//! can write the key back, and the follower, which applies changes made
//! during the load after the commit, removes it again.
//!
//! # Layout
//!
//! - this module: the store, its key names, lookups and readiness;
//! - [`generations`]: loads, the marker, revision-guarded writes (the Lua
//!   scripts are in `lua/`);
//! - [`invalidation`]: the invalidation channel and its listener.

mod generations;
mod invalidation;

pub use generations::{Commit, Load, Put};
pub use invalidation::Invalidation;

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::{self, AsyncConnectionConfig};
use deadpool_redis::{Manager, Pool, PoolError, Runtime, Timeouts};
use inlet_domain::{KeyDigest, KeyRecord};

use crate::settings::RedisSettings;
use crate::store::{KeyStore, Lookup, Readiness, StoreError};

/// The populated marker: which generation is complete and current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// The current generation.
    pub generation: u64,
    /// Keys it holds.
    pub count: u64,
    /// When its load completed, Unix ms.
    pub completed_at_ms: i64,
}

/// Reads the marker and the key of its generation in one atomic step.
static LOOKUP: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("lua/lookup.lua")));

/// The Redis key store. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    pool: Pool,
    prefix: String,
    url: String,
    command_timeout: Duration,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn store_error(e: &redis::RedisError) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout
    } else {
        StoreError::Unavailable(e.to_string())
    }
}

fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Timeout(_) => StoreError::Timeout,
        PoolError::Backend(e) => store_error(&e),
        other => StoreError::Unavailable(other.to_string()),
    }
}

impl RedisStore {
    /// Builds the store and its connection pool. Does not connect yet: a
    /// Redis that is down at start-up is a store that is unreachable, not a
    /// start-up failure.
    pub fn new(settings: &RedisSettings) -> Result<Self, StoreError> {
        let connect = Duration::from_millis(settings.connect_timeout_ms);
        let command = Duration::from_millis(settings.command_timeout_ms);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect))
            .set_response_timeout(Some(command));
        let manager = Manager::new_with_config(settings.url.as_str(), config)
            .map_err(|e| StoreError::Unavailable(format!("redis url: {e}")))?;
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .timeouts(Timeouts {
                wait: Some(Duration::from_millis(settings.pool_wait_ms)),
                create: Some(connect),
                recycle: Some(command),
            })
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Unavailable(format!("redis pool: {e}")))?;
        Ok(RedisStore {
            pool,
            prefix: settings.prefix.clone(),
            url: settings.url.clone(),
            command_timeout: command,
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn marker_key(&self) -> String {
        format!("{}marker", self.prefix)
    }

    fn loading_key(&self) -> String {
        format!("{}loading", self.prefix)
    }

    fn sequence_key(&self) -> String {
        format!("{}generation:seq", self.prefix)
    }

    /// The prefix of every generation's keys: `P` `g:`.
    fn generations_prefix(&self) -> String {
        format!("{}g:", self.prefix)
    }

    /// The pub/sub channel for cache invalidations.
    pub fn invalidation_channel(&self) -> String {
        format!("{}invalidate", self.prefix)
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// The populated marker, if a full load has completed.
    pub async fn marker(&self) -> Result<Option<Marker>, StoreError> {
        let mut conn = self.conn().await?;
        let fields: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.marker_key())
            .arg("generation")
            .arg("count")
            .arg("completed_at_ms")
            .query_async(&mut conn)
            .await
            .map_err(|e| store_error(&e))?;
        Ok(parse_marker(&fields))
    }

    fn decode(&self, digest: &KeyDigest, raw: Option<Vec<u8>>) -> Result<Lookup, StoreError> {
        match raw {
            None => Ok(Lookup::Absent),
            Some(bytes) => serde_json::from_slice::<KeyRecord>(&bytes)
                .map(Lookup::Found)
                .map_err(|e| StoreError::Corrupt {
                    digest: *digest,
                    reason: e.to_string(),
                }),
        }
    }
}

fn parse_marker(fields: &[Option<String>]) -> Option<Marker> {
    let get = |i: usize| fields.get(i).and_then(|v| v.as_deref());
    Some(Marker {
        generation: get(0)?.parse().ok()?,
        count: get(1).and_then(|c| c.parse().ok()).unwrap_or(0),
        completed_at_ms: get(2).and_then(|c| c.parse().ok()).unwrap_or(0),
    })
}

#[async_trait]
impl KeyStore for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn lookup(&self, digest: &KeyDigest) -> Result<Lookup, StoreError> {
        let mut conn = self.conn().await?;
        let (generation, raw): (Option<String>, Option<Vec<u8>>) = LOOKUP
            .key(self.marker_key())
            .arg(self.generations_prefix())
            .arg(digest.to_hex())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| store_error(&e))?;
        if generation.is_none() {
            return Ok(Lookup::NotLoaded);
        }
        self.decode(digest, raw)
    }

    async fn readiness(&self) -> Readiness {
        match self.marker().await {
            Ok(Some(m)) => Readiness::Populated {
                generation: m.generation,
                keys: m.count,
                completed_at_ms: m.completed_at_ms,
            },
            Ok(None) => Readiness::NotPopulated,
            Err(e) => Readiness::Unreachable(e),
        }
    }
}
