//! Redis as the fast primary key store (feature `redis`).
//!
//! # Key layout (under the configurable prefix `P`, default `inlet:`)
//!
//! | key | type | content |
//! |---|---|---|
//! | `P` `marker` | hash | `generation`, `count`, `completed_at_ms`: the **populated marker**, written only after a full load finished; it names the generation lookups read |
//! | `P` `generation:seq` | string | counter handing out generation numbers |
//! | `P` `g:{gen}:{digest}` | string | JSON [`KeyRecord`] of the key whose SHA-256 is `digest` (64 hex digits) in generation `gen` |
//! | `P` `invalidate` | pub/sub channel | a digest (hex) whose cached decisions must be dropped, or `*` for all |
//!
//! Raw keys are never stored, only digests. A load writes a whole new
//! generation, then flips the marker with one `HSET` (atomic), then deletes
//! the previous generation: readers see either the old complete set or the
//! new complete set, never a partial one. A load killed midway leaves the
//! marker on the previous generation; its partial keys are removed by the
//! next load. No marker at all means **not populated**: lookups answer
//! [`Lookup::NotLoaded`], never "absent".

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::{self, AsyncConnectionConfig};
use deadpool_redis::{Manager, Pool, PoolError, Runtime, Timeouts};
use futures::StreamExt as _;
use inlet_domain::{KeyDigest, KeyRecord};
use tokio_util::sync::CancellationToken;

use crate::authenticator::Authenticator;
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

/// The Redis key store. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    pool: Pool,
    prefix: String,
    /// The generation the last lookup found in the marker; lookups read the
    /// marker and this generation's key in one round trip.
    generation_guess: std::sync::Arc<AtomicU64>,
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
            generation_guess: std::sync::Arc::new(AtomicU64::new(0)),
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

    fn record_key(&self, generation: u64, digest: &KeyDigest) -> String {
        format!("{}g:{generation}:{}", self.prefix, digest.to_hex())
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

    // ------------------------------------------------------------ writing

    /// Hands out a new generation number for a full load.
    pub async fn next_generation(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        redis::cmd("INCR")
            .arg(format!("{}generation:seq", self.prefix))
            .query_async(&mut conn)
            .await
            .map_err(|e| store_error(&e))
    }

    /// Writes records into a generation (one pipelined round trip).
    pub async fn write_records(
        &self,
        generation: u64,
        records: &[(KeyDigest, KeyRecord)],
    ) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (digest, record) in records {
            let json = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt {
                digest: *digest,
                reason: e.to_string(),
            })?;
            pipe.cmd("SET")
                .arg(self.record_key(generation, digest))
                .arg(json)
                .ignore();
        }
        let mut conn = self.conn().await?;
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| store_error(&e))
    }

    /// Flips the marker to a fully written generation (one atomic `HSET`).
    pub async fn commit_generation(&self, marker: Marker) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        redis::cmd("HSET")
            .arg(self.marker_key())
            .arg("generation")
            .arg(marker.generation)
            .arg("count")
            .arg(marker.count)
            .arg("completed_at_ms")
            .arg(marker.completed_at_ms)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| store_error(&e))?;
        self.generation_guess
            .store(marker.generation, Ordering::Relaxed);
        Ok(())
    }

    /// Deletes every generation older than `keep` (previous loads, and
    /// partial loads that were killed). Newer generations are left alone: a
    /// concurrent load may be writing one. Returns how many keys were
    /// removed.
    pub async fn delete_older_generations(&self, keep: u64) -> Result<u64, StoreError> {
        let generations_prefix = format!("{}g:", self.prefix);
        let pattern = format!("{generations_prefix}*");
        let mut conn = self.conn().await?;
        let mut cursor: u64 = 0;
        let mut removed = 0;
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
            let doomed: Vec<&String> = keys
                .iter()
                .filter(|k| {
                    k.strip_prefix(&generations_prefix)
                        .and_then(|rest| rest.split(':').next())
                        .and_then(|g| g.parse::<u64>().ok())
                        .is_some_and(|g| g < keep)
                })
                .collect();
            if !doomed.is_empty() {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&doomed)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| store_error(&e))?;
                removed += n;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// Writes one record into the current generation (follow mode, key
    /// administration). Returns `false` when there is no current generation
    /// (nothing loaded yet: the next full load will include the record).
    pub async fn put_current(
        &self,
        digest: &KeyDigest,
        record: &KeyRecord,
    ) -> Result<bool, StoreError> {
        let Some(marker) = self.marker().await? else {
            return Ok(false);
        };
        self.write_records(marker.generation, &[(*digest, record.clone())])
            .await?;
        Ok(true)
    }

    /// Removes one digest from the current generation (a key deleted from
    /// the source of truth). The marker's count is not adjusted: it
    /// describes the load.
    pub async fn remove_current(&self, digest: &KeyDigest) -> Result<(), StoreError> {
        let Some(marker) = self.marker().await? else {
            return Ok(());
        };
        let mut conn = self.conn().await?;
        redis::cmd("UNLINK")
            .arg(self.record_key(marker.generation, digest))
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| store_error(&e))
    }

    /// Tells every running authenticator to forget a key's cached decision.
    pub async fn publish_invalidation(&self, digest: &KeyDigest) -> Result<(), StoreError> {
        self.publish(&digest.to_hex()).await
    }

    /// Tells every running authenticator to forget all cached decisions.
    pub async fn publish_invalidate_all(&self) -> Result<(), StoreError> {
        self.publish("*").await
    }

    async fn publish(&self, payload: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        redis::cmd("PUBLISH")
            .arg(self.invalidation_channel())
            .arg(payload)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| store_error(&e))
    }

    /// Runs until cancelled: subscribes to the invalidation channel and
    /// applies each invalidation to `auth`. Reconnects by itself; after
    /// every (re)subscription it drops every cached decision, because
    /// messages published while disconnected are lost. A heartbeat PING
    /// detects hung connections. `inlet_auth_invalidation_listener_up`
    /// reports whether the subscription is live.
    pub async fn run_invalidation_listener(&self, auth: &Authenticator, cancel: CancellationToken) {
        let channel = self.invalidation_channel();
        let up = &auth.metrics().invalidation_listener_up;
        let mut backoff = Duration::from_millis(100);
        let step = Duration::from_secs(1).max(self.command_timeout * 4);
        while !cancel.is_cancelled() {
            let subscribed = async {
                let client = redis::Client::open(self.url.as_str()).ok()?;
                let pubsub = tokio::time::timeout(step, client.get_async_pubsub())
                    .await
                    .ok()?
                    .ok()?;
                let (mut sink, stream) = pubsub.split();
                tokio::time::timeout(step, sink.subscribe(channel.as_str()))
                    .await
                    .ok()?
                    .ok()?;
                Some((sink, stream))
            }
            .await;
            let Some((mut sink, mut stream)) = subscribed else {
                up.set(0);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(jitter(backoff)) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            };
            backoff = Duration::from_millis(100);
            up.set(1);
            auth.invalidate_all();
            let mut heartbeat = tokio::time::interval(Duration::from_secs(5));
            heartbeat.tick().await;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => { up.set(0); return; }
                    msg = stream.next() => match msg {
                        Some(m) => match Invalidation::parse(m.get_payload_bytes()) {
                            Invalidation::Key(digest) => auth.invalidate(&digest).await,
                            Invalidation::All => auth.invalidate_all(),
                        },
                        None => break,
                    },
                    _ = heartbeat.tick() => {
                        let ping = tokio::time::timeout(step, sink.ping::<redis::Value>()).await;
                        if !matches!(ping, Ok(Ok(_))) {
                            break;
                        }
                    }
                }
            }
            up.set(0);
            tracing::warn!("invalidation channel lost; resubscribing");
        }
    }

    /// Subscribes to the invalidation channel once and waits until the
    /// subscription is live (for start-up code and tests); returns whether
    /// it became live within `timeout`.
    pub async fn wait_listener_up(auth: &Authenticator, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if auth.metrics().invalidation_listener_up.get() == 1 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

/// One message on the invalidation channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    /// Forget this key.
    Key(KeyDigest),
    /// Forget everything (also sent after every resubscription).
    All,
}

impl Invalidation {
    fn parse(payload: &[u8]) -> Invalidation {
        std::str::from_utf8(payload)
            .ok()
            .and_then(|s| KeyDigest::parse(s).ok())
            .map_or(Invalidation::All, Invalidation::Key)
    }
}

fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + rand::random::<f64>() * 0.5)
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
        let guess = self.generation_guess.load(Ordering::Relaxed);
        let mut conn = self.conn().await?;
        // One round trip: the marker's generation and the key in the
        // generation we expect it to be.
        let (generation, raw): (Option<String>, Option<Vec<u8>>) = redis::pipe()
            .cmd("HGET")
            .arg(self.marker_key())
            .arg("generation")
            .cmd("GET")
            .arg(self.record_key(guess, digest))
            .query_async(&mut conn)
            .await
            .map_err(|e| store_error(&e))?;
        let Some(generation) = generation.and_then(|g| g.parse::<u64>().ok()) else {
            return Ok(Lookup::NotLoaded);
        };
        if generation == guess {
            return self.decode(digest, raw);
        }
        self.generation_guess.store(generation, Ordering::Relaxed);
        let raw: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.record_key(generation, digest))
            .query_async(&mut conn)
            .await
            .map_err(|e| store_error(&e))?;
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
