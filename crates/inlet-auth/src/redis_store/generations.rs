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
/// The current and loading generations, shared by put and remove.
const GENERATIONS: &str = include_str!("lua/generations.lua");

fn with_newer(body: &str) -> Script {
    Script::new(&format!("{NEWER}\n{GENERATIONS}\n{body}"))
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
static ABANDON_LOAD: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/abandon_load.lua")));
static REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{GENERATIONS}\n{}",
        include_str!("lua/remove.lua")
    ))
});

/// The wall clock in microseconds: where the generation counter restarts
/// when Redis lost it. Loads begin one Redis round trip apart at the very
/// least, far more than a microsecond, so a counter restarted from it is
/// past every number handed out before (milliseconds were not: three loads
/// and a flush fit in one).
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Records per write script: bounds how long one script holds Redis.
pub const SCRIPT_CHUNK: usize = 500;

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
            .arg(now_us())
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
                .arg(record.updated_at_ms)
                .arg(record.account_id.as_str());
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
    /// Newer generations are left alone. Deletes page by page as the scan
    /// finds them. Returns how many keys were removed.
    pub async fn delete_older_generations(&self, keep: u64) -> Result<u64, StoreError> {
        let mut removed = 0;
        let mut conn = self.conn().await?;
        let mut pages = self.generation_pages();
        while let Some(page) = pages.next(&mut conn).await? {
            let stale: Vec<&String> = page
                .iter()
                .filter(|(_, g)| *g < keep)
                .map(|(k, _)| k)
                .collect();
            if stale.is_empty() {
                continue;
            }
            let n: i64 = UNLINK_IF_CURRENT
                .key(self.marker_key())
                .arg(keep)
                .arg(stale)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| store_error(&e))?;
            if n < 0 {
                tracing::info!(
                    keep,
                    "the marker moved on; leaving older generations to the load now in force"
                );
                break;
            }
            removed += n as u64;
        }
        Ok(removed)
    }

    /// Gives up a load that will not commit (it failed midway): ends its
    /// lease, so changes stop being written into it, and deletes what it
    /// wrote. Best effort: what is left is removed by the next load.
    pub async fn abandon_load(&self, load: &Load) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        ABANDON_LOAD
            .key(self.loading_key())
            .arg(load.generation)
            .arg(&load.token)
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(|e| store_error(&e))?;
        let mut pages = self.generation_pages();
        while let Some(page) = pages.next(&mut conn).await? {
            let ours: Vec<&String> = page
                .iter()
                .filter(|(_, g)| *g == load.generation)
                .map(|(k, _)| k)
                .collect();
            if !ours.is_empty() {
                redis::cmd("UNLINK")
                    .arg(ours)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| store_error(&e))?;
            }
        }
        Ok(())
    }

    /// The record keys of every generation, a SCAN page at a time, each
    /// with its generation.
    fn generation_pages(&self) -> GenerationPages {
        GenerationPages {
            prefix: self.generations_prefix(),
            cursor: Some(0),
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

    /// [`Self::put_current`] for many records: one round trip per
    /// [`SCRIPT_CHUNK`] records, so no script holds Redis for long (a
    /// suspended account with 100k keys must not stall every lookup).
    pub async fn put_records(&self, records: &[(KeyDigest, KeyRecord)]) -> Result<Put, StoreError> {
        let mut outcome = Put::Older;
        for chunk in records.chunks(SCRIPT_CHUNK) {
            let mut invocation = PUT.key(self.marker_key());
            invocation
                .key(self.loading_key())
                .arg(self.generations_prefix());
            for (digest, record) in chunk {
                invocation
                    .arg(digest.to_hex())
                    .arg(encode(digest, record)?)
                    .arg(record.revision)
                    .arg(record.updated_at_ms)
                    .arg(record.account_id.as_str());
            }
            let mut conn = self.conn().await?;
            let (generations, written): (u32, u32) = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(|e| store_error(&e))?;
            outcome = match (outcome, generations, written) {
                (Put::Written(n), _, w) => Put::Written(n + w),
                (_, 0, _) => Put::NoGeneration,
                (_, _, 0) => Put::Older,
                (_, _, w) => Put::Written(w),
            };
        }
        Ok(outcome)
    }

    /// Removes digests from the current generation and every generation
    /// being loaded (keys, or their accounts, deleted from the source of
    /// truth, or no longer usable), a [`SCRIPT_CHUNK`] per round trip. The
    /// marker's count is not adjusted: it describes the load.
    pub async fn remove_records(&self, digests: &[KeyDigest]) -> Result<(), StoreError> {
        for chunk in digests.chunks(SCRIPT_CHUNK) {
            let mut invocation = REMOVE.key(self.marker_key());
            invocation
                .key(self.loading_key())
                .arg(self.generations_prefix());
            for digest in chunk {
                invocation.arg(digest.to_hex());
            }
            let mut conn = self.conn().await?;
            invocation
                .invoke_async::<i64>(&mut conn)
                .await
                .map_err(|e| store_error(&e))?;
        }
        Ok(())
    }

    /// Deletes everything this store holds under its prefix: every
    /// generation, the marker, the leases and the counter. For tools and
    /// benchmarks cleaning up after themselves; lookups answer "not loaded"
    /// afterwards.
    pub async fn clear(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        let mut removed: u64 = redis::cmd("UNLINK")
            .arg(self.marker_key())
            .arg(self.loading_key())
            .arg(self.sequence_key())
            .query_async(&mut conn)
            .await
            .map_err(|e| store_error(&e))?;
        let mut pages = self.generation_pages();
        while let Some(page) = pages.next(&mut conn).await? {
            if page.is_empty() {
                continue;
            }
            let keys: Vec<&String> = page.iter().map(|(k, _)| k).collect();
            let n: u64 = redis::cmd("UNLINK")
                .arg(keys)
                .query_async(&mut conn)
                .await
                .map_err(|e| store_error(&e))?;
            removed += n;
        }
        Ok(removed)
    }
}

/// A SCAN over the record keys of every generation.
struct GenerationPages {
    prefix: String,
    /// `None` once the scan is complete.
    cursor: Option<u64>,
}

impl GenerationPages {
    async fn next(
        &mut self,
        conn: &mut deadpool_redis::Connection,
    ) -> Result<Option<Vec<(String, u64)>>, StoreError> {
        let Some(cursor) = self.cursor else {
            return Ok(None);
        };
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", self.prefix))
            .arg("COUNT")
            .arg(2_000)
            .query_async(conn)
            .await
            .map_err(|e| store_error(&e))?;
        self.cursor = (next != 0).then_some(next);
        Ok(Some(
            keys.into_iter()
                .filter_map(|key| {
                    let generation = key
                        .strip_prefix(&self.prefix)?
                        .split(':')
                        .next()?
                        .parse::<u64>()
                        .ok()?;
                    Some((key, generation))
                })
                .collect(),
        ))
    }
}

fn encode(digest: &KeyDigest, record: &KeyRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record).map_err(|e| StoreError::Corrupt {
        digest: *digest,
        reason: e.to_string(),
    })
}
