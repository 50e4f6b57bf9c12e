//! Writing: full loads under a lease, the populated marker, and
//! revision-guarded record writes. Each step that must be atomic is one Lua
//! script (`lua/`), so no interleaving of two syncs, a flush, an admin
//! command and a follower can leave Redis in a state none of them meant.

use std::sync::LazyLock;

use deadpool_redis::redis::{self, Script};
use inlet_domain::{KeyDigest, KeyRecord};

use super::{Marker, RedisStore, store_error};
use crate::store::StoreError;

/// Revision comparison shared by the write scripts.
const NEWER: &str = include_str!("lua/newer.lua");

fn with_newer(body: &str) -> Script {
    Script::new(&format!("{NEWER}\n{body}"))
}

static BEGIN_LOAD: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/begin_load.lua")));
static WRITE_LOAD: LazyLock<Script> =
    LazyLock::new(|| with_newer(include_str!("lua/write_load.lua")));
static COMMIT_LOAD: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/commit_load.lua")));
static UNLINK_IF_CURRENT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/unlink_if_current.lua")));
static PUT: LazyLock<Script> = LazyLock::new(|| with_newer(include_str!("lua/put.lua")));
static REMOVE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/remove.lua")));

/// A full load in progress: the generation it writes and the lease that
/// proves Redis still knows about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    /// The generation being written.
    pub generation: u64,
    token: String,
}

/// How a load ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// The marker now names the load's generation.
    Committed(Marker),
    /// A newer generation was in force already; the marker was left alone.
    Superseded {
        /// The generation in force.
        current: u64,
    },
    /// The lease is gone (Redis was flushed, or a newer load committed and
    /// ended it): the generation may be incomplete and was not committed.
    LeaseLost,
}

/// What a single-record write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Written into this many generations (current and loading).
    Written(u32),
    /// Every generation held a newer record: nothing was written.
    Older,
    /// No generation exists (nothing loaded yet): the next load includes
    /// the record.
    NoGeneration,
}

impl RedisStore {
    /// Starts a full load: a new generation number and its lease.
    pub async fn begin_load(&self) -> Result<Load, StoreError> {
        let token = format!("{:032x}", rand::random::<u128>());
        let mut conn = self.conn().await?;
        let generation: u64 = BEGIN_LOAD
            .key(self.sequence_key())
            .key(self.loading_key())
            .arg(inlet_domain::now_ms())
            .arg(&token)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| store_error(&e))?;
        Ok(Load { generation, token })
    }

    /// Writes records into a load's generation (one round trip). A record
    /// already there with a higher revision (a change written during the
    /// load) is kept. Returns `false` when the lease is gone: stop loading.
    pub async fn write_load(
        &self,
        load: &Load,
        records: &[(KeyDigest, KeyRecord)],
    ) -> Result<bool, StoreError> {
        if records.is_empty() {
            return Ok(true);
        }
        let mut invocation = WRITE_LOAD.key(self.loading_key());
        invocation
            .arg(load.generation)
            .arg(&load.token)
            .arg(format!("{}{}:", self.generations_prefix(), load.generation));
        for (digest, record) in records {
            invocation
                .arg(digest.to_hex())
                .arg(encode(digest, record)?)
                .arg(record.revision)
                .arg(record.updated_at_ms);
        }
        let mut conn = self.conn().await?;
        let kept: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| store_error(&e))?;
        Ok(kept >= 0)
    }

    /// Flips the marker to a fully written load (see [`Commit`]).
    pub async fn commit_load(&self, load: &Load, count: u64) -> Result<Commit, StoreError> {
        let completed_at_ms = inlet_domain::now_ms();
        let mut conn = self.conn().await?;
        let answer: i64 = COMMIT_LOAD
            .key(self.marker_key())
            .key(self.loading_key())
            .arg(load.generation)
            .arg(&load.token)
            .arg(count)
            .arg(completed_at_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| store_error(&e))?;
        Ok(match answer {
            0 => Commit::Committed(Marker {
                generation: load.generation,
                count,
                completed_at_ms,
            }),
            current if current > 0 => Commit::Superseded {
                current: current as u64,
            },
            _ => Commit::LeaseLost,
        })
    }

    /// Deletes every generation older than `keep` (previous loads, and
    /// partial loads that were killed), but only while the marker names
    /// `keep`: once another load has moved it, nothing more is deleted.
    /// Newer generations are left alone. Returns how many keys were
    /// removed.
    pub async fn delete_older_generations(&self, keep: u64) -> Result<u64, StoreError> {
        let generations_prefix = self.generations_prefix();
        let mut removed = 0;
        let mut stale = Vec::new();
        self.scan_generations(|key, generation| {
            if generation < keep {
                stale.push(key);
            }
        })
        .await?;
        let mut conn = self.conn().await?;
        for batch in stale.chunks(2_000) {
            let n: i64 = UNLINK_IF_CURRENT
                .key(self.marker_key())
                .arg(keep)
                .arg(batch)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| store_error(&e))?;
            if n < 0 {
                tracing::info!(
                    keep,
                    prefix = generations_prefix,
                    "the marker moved on; leaving older generations to the load now in force"
                );
                break;
            }
            removed += n as u64;
        }
        Ok(removed)
    }

    /// Calls `f(key, generation)` for every record key of every generation.
    async fn scan_generations(&self, mut f: impl FnMut(String, u64)) -> Result<(), StoreError> {
        let generations_prefix = self.generations_prefix();
        let pattern = format!("{generations_prefix}*");
        let mut conn = self.conn().await?;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(2_000)
                .query_async(&mut conn)
                .await
                .map_err(|e| store_error(&e))?;
            for key in keys {
                let generation = key
                    .strip_prefix(&generations_prefix)
                    .and_then(|rest| rest.split(':').next())
                    .and_then(|g| g.parse::<u64>().ok());
                if let Some(g) = generation {
                    f(key, g);
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Writes one record (follow mode, key administration) into the current
    /// generation and every generation being loaded, in each only if it is
    /// not older than the record there.
    pub async fn put_current(
        &self,
        digest: &KeyDigest,
        record: &KeyRecord,
    ) -> Result<Put, StoreError> {
        self.put_records(&[(*digest, record.clone())]).await
    }

    /// [`Self::put_current`] for many records in one round trip.
    pub async fn put_records(&self, records: &[(KeyDigest, KeyRecord)]) -> Result<Put, StoreError> {
        if records.is_empty() {
            return Ok(Put::Older);
        }
        let mut invocation = PUT.key(self.marker_key());
        invocation
            .key(self.loading_key())
            .arg(self.generations_prefix());
        for (digest, record) in records {
            invocation
                .arg(digest.to_hex())
                .arg(encode(digest, record)?)
                .arg(record.revision)
                .arg(record.updated_at_ms);
        }
        let mut conn = self.conn().await?;
        let (generations, written): (u32, u32) = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| store_error(&e))?;
        Ok(match (generations, written) {
            (0, _) => Put::NoGeneration,
            (_, 0) => Put::Older,
            (_, n) => Put::Written(n),
        })
    }

    /// Removes digests from the current generation and every generation
    /// being loaded (keys, or their accounts, deleted from the source of
    /// truth, or no longer usable), in one round trip. The marker's count
    /// is not adjusted: it describes the load.
    pub async fn remove_records(&self, digests: &[KeyDigest]) -> Result<(), StoreError> {
        if digests.is_empty() {
            return Ok(());
        }
        let mut invocation = REMOVE.key(self.marker_key());
        invocation
            .key(self.loading_key())
            .arg(self.generations_prefix());
        for digest in digests {
            invocation.arg(digest.to_hex());
        }
        let mut conn = self.conn().await?;
        invocation
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| store_error(&e))
    }

    /// Deletes everything this store holds under its prefix: every
    /// generation, the marker, the leases and the counter. For tools and
    /// benchmarks cleaning up after themselves; lookups answer "not loaded"
    /// afterwards.
    pub async fn clear(&self) -> Result<u64, StoreError> {
        let mut keys = vec![self.marker_key(), self.loading_key(), self.sequence_key()];
        self.scan_generations(|key, _| keys.push(key)).await?;
        let mut conn = self.conn().await?;
        let mut removed = 0;
        for batch in keys.chunks(2_000) {
            let n: u64 = redis::cmd("UNLINK")
                .arg(batch)
                .query_async(&mut conn)
                .await
                .map_err(|e| store_error(&e))?;
            removed += n;
        }
        Ok(removed)
    }
}

fn encode(digest: &KeyDigest, record: &KeyRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record).map_err(|e| StoreError::Corrupt {
        digest: *digest,
        reason: e.to_string(),
    })
}
