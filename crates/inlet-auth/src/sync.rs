//! Key sync: MongoDB (source of truth) → Redis (fast primary).
//!
//! # Protocol
//!
//! 1. Open a change stream on `accounts` and `api_keys` *before* loading,
//!    so that changes made during the load are not missed (with polling:
//!    remember the time, minus an overlap, instead).
//! 2. **Backfill**: take a new generation number, write every key's record
//!    into it in pipelined batches, then flip the populated marker to it in
//!    one atomic `HSET` — only if it is newer than the marker's generation —
//!    and delete older generations. A sync killed midway never flips the
//!    marker: the previous generation stays in force, and the next run
//!    removes the partial one. Re-running is idempotent.
//! 3. **Follow**: apply each change (re-reading the key and its account from
//!    MongoDB, so the newest state always wins) to the current generation
//!    and publish an invalidation, so running authenticators drop cached
//!    decisions at once. Change streams when the server supports them
//!    (replica sets); otherwise polling on `updated_at` with an overlap
//!    window.
//! 4. Every `full_resync_interval_s`, or when a key document is deleted, or
//!    when following fails, start again at 1: a full load is the safety net
//!    for anything the follower could have missed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use inlet_domain::{KeyDigest, KeyRecord};
use mongodb::bson::{self, Document, doc};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType};
use mongodb::options::FullDocumentType;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::SyncMetrics;
use crate::mongo_store::{
    ACCOUNTS, API_KEYS, AccountDoc, KeyDoc, MongoStore, mongo_error, record_of,
};
use crate::redis_store::{Marker, RedisStore};
use crate::store::StoreError;

/// How changes are followed after a load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FollowMode {
    /// Change streams when available, polling otherwise.
    Auto,
    /// Change streams only (fails without a replica set).
    Stream,
    /// Polling on `updated_at` only.
    Poll,
}

/// `[sync]`: the key sync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncSettings {
    /// Keys written per Redis round trip during a load. Default 1000.
    pub batch_size: u32,
    /// How changes are followed. Default `auto`.
    pub follow: FollowMode,
    /// Polling period, milliseconds. Default 1000.
    pub poll_interval_ms: u64,
    /// How far back each poll looks beyond the last change seen,
    /// milliseconds (covers clock skew between writers). Default 5000.
    pub poll_overlap_ms: u64,
    /// A full reload every this many seconds, as a safety net. Default
    /// 3600. 0 disables.
    pub full_resync_interval_s: u64,
    /// Longest pause between attempts after a failure, milliseconds.
    /// Default 10000.
    pub retry_max_ms: u64,
    /// How often the follower checks that Redis still holds the populated
    /// marker, milliseconds; a flushed or restarted Redis is reloaded at
    /// once. Default 2000.
    pub marker_check_ms: u64,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            batch_size: 1_000,
            follow: FollowMode::Auto,
            poll_interval_ms: 1_000,
            poll_overlap_ms: 5_000,
            full_resync_interval_s: 3_600,
            retry_max_ms: 10_000,
            marker_check_ms: 2_000,
        }
    }
}

/// What the sync is doing (for readiness).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncState {
    /// Not started a load yet.
    Starting,
    /// Loading a new generation (the previous one, if any, is in force).
    Loading {
        /// The generation being written.
        generation: u64,
    },
    /// The marker is set and changes are being followed.
    Following {
        /// The current generation.
        generation: u64,
        /// `stream` or `poll`.
        mode: &'static str,
    },
    /// The last attempt failed; retrying.
    Retrying {
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for SyncState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncState::Starting => f.write_str("starting"),
            SyncState::Loading { generation } => write!(f, "loading generation {generation}"),
            SyncState::Following { generation, mode } => {
                write!(f, "following changes ({mode}) on generation {generation}")
            }
            SyncState::Retrying { reason } => write!(f, "retrying: {reason}"),
        }
    }
}

impl SyncState {
    /// Ready means: a complete generation is in force and being followed.
    pub fn is_ready(&self) -> bool {
        matches!(self, SyncState::Following { .. })
    }
}

/// Why a sync step failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A newer generation was committed by another sync while this one was
    /// loading; this load was abandoned.
    #[error("generation {ours} superseded by {current}")]
    Superseded {
        /// Ours.
        ours: u64,
        /// The marker's.
        current: u64,
    },
    /// Change streams are not available (e.g. a standalone server).
    #[error("change streams unavailable: {0}")]
    NoChangeStream(String),
}

enum FollowEnd {
    Cancelled,
    ResyncDue,
    NeedsResync(String),
}

/// The key sync.
#[derive(Debug, Clone)]
pub struct KeySync {
    mongo: MongoStore,
    redis: RedisStore,
    settings: SyncSettings,
    metrics: SyncMetrics,
    state: watch::Sender<SyncState>,
}

impl KeySync {
    /// A sync from `mongo` to `redis`.
    pub fn new(
        mongo: MongoStore,
        redis: RedisStore,
        settings: SyncSettings,
        metrics: SyncMetrics,
    ) -> Self {
        let (state, _) = watch::channel(SyncState::Starting);
        KeySync {
            mongo,
            redis,
            settings,
            metrics,
            state,
        }
    }

    /// Follows state changes (for readiness).
    pub fn watch_state(&self) -> watch::Receiver<SyncState> {
        self.state.subscribe()
    }

    fn set_state(&self, s: SyncState) {
        self.state.send_replace(s);
    }

    /// Loads every key into a new generation and flips the marker to it.
    pub async fn backfill(&self) -> Result<Marker, SyncError> {
        let started = Instant::now();
        let result = self.backfill_inner().await;
        let outcome = if result.is_ok() {
            "completed"
        } else {
            "failed"
        };
        self.metrics.backfills.with_label_values(&[outcome]).inc();
        if let Ok(marker) = &result {
            self.metrics
                .backfill_duration
                .observe(started.elapsed().as_secs_f64());
            self.metrics.generation.set(marker.generation as i64);
            self.metrics.keys.set(marker.count as i64);
            tracing::info!(
                generation = marker.generation,
                keys = marker.count,
                seconds = started.elapsed().as_secs_f64(),
                "key load complete; marker flipped"
            );
        }
        result
    }

    async fn backfill_inner(&self) -> Result<Marker, SyncError> {
        let generation = self.redis.next_generation().await?;
        self.set_state(SyncState::Loading { generation });
        let accounts = self.mongo.all_accounts().await?;
        let mut cursor = self.mongo.all_keys(self.settings.batch_size).await?;
        let batch_size = self.settings.batch_size.max(1) as usize;
        let mut batch: Vec<(KeyDigest, KeyRecord)> = Vec::with_capacity(batch_size);
        let mut count = 0u64;
        let mut skipped = 0u64;
        while let Some(key) = cursor.try_next().await.map_err(|e| mongo_error(&e))? {
            let Some(account) = accounts.get(&key.account_id) else {
                skipped += 1;
                tracing::warn!(key_id = %key.key_id, account = %key.account_id, "key of a missing account skipped");
                continue;
            };
            match record_of(&key, account) {
                Ok(entry) => batch.push(entry),
                Err(e) => {
                    skipped += 1;
                    tracing::warn!(key_id = %key.key_id, error = %e, "invalid key document skipped");
                    continue;
                }
            }
            if batch.len() >= batch_size {
                self.redis.write_records(generation, &batch).await?;
                count += batch.len() as u64;
                batch.clear();
            }
        }
        self.redis.write_records(generation, &batch).await?;
        count += batch.len() as u64;
        if let Some(current) = self.redis.marker().await?
            && current.generation > generation
        {
            return Err(SyncError::Superseded {
                ours: generation,
                current: current.generation,
            });
        }
        let marker = Marker {
            generation,
            count,
            completed_at_ms: inlet_domain::now_ms(),
        };
        self.redis.commit_generation(marker).await?;
        let removed = self.redis.delete_older_generations(generation).await?;
        // Decisions cached from the previous generation may predate changes
        // this load picked up.
        if let Err(e) = self.redis.publish_invalidate_all().await {
            tracing::warn!(error = %e, "could not publish invalidation after load");
        }
        tracing::debug!(generation, count, skipped, removed, "generation committed");
        Ok(marker)
    }

    /// Runs until cancelled: load, follow, reload periodically; retries
    /// with backoff on failure.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut backoff = Duration::from_millis(250);
        let max = Duration::from_millis(self.settings.retry_max_ms.max(250));
        while !cancel.is_cancelled() {
            let since = bson::DateTime::from_millis(
                inlet_domain::now_ms() - self.settings.poll_overlap_ms as i64,
            );
            let stream = match self.settings.follow {
                FollowMode::Poll => None,
                mode => match self.open_stream().await {
                    Ok(s) => Some(s),
                    Err(e) if mode == FollowMode::Auto => {
                        tracing::info!(error = %e, "change streams unavailable; following by polling");
                        None
                    }
                    Err(e) => {
                        self.fail(&e.to_string());
                        sleep_or_cancel(&cancel, backoff).await;
                        backoff = (backoff * 2).min(max);
                        continue;
                    }
                },
            };
            let marker = match self.backfill().await {
                Ok(m) => m,
                Err(e) => {
                    self.fail(&e.to_string());
                    sleep_or_cancel(&cancel, backoff).await;
                    backoff = (backoff * 2).min(max);
                    continue;
                }
            };
            backoff = Duration::from_millis(250);
            let end = match stream {
                Some(s) => self.follow_stream(s, marker.generation, &cancel).await,
                None => self.follow_poll(since, marker.generation, &cancel).await,
            };
            self.metrics.following.set(0);
            match end {
                FollowEnd::Cancelled => return,
                FollowEnd::ResyncDue => tracing::info!("periodic full reload"),
                FollowEnd::NeedsResync(why) => tracing::warn!(reason = %why, "reloading all keys"),
            }
        }
    }

    fn fail(&self, reason: &str) {
        tracing::warn!(reason, "key sync attempt failed; retrying");
        self.set_state(SyncState::Retrying {
            reason: reason.to_owned(),
        });
    }

    async fn open_stream(&self) -> Result<ChangeStream<ChangeStreamEvent<Document>>, SyncError> {
        self.mongo
            .database()
            .watch()
            .pipeline([doc! { "$match": {
                "ns.coll": { "$in": [API_KEYS, ACCOUNTS] },
                "operationType": { "$in": ["insert", "update", "replace", "delete"] },
            }}])
            .full_document(FullDocumentType::UpdateLookup)
            .await
            .map_err(|e| SyncError::NoChangeStream(e.to_string()))
    }

    fn resync_deadline(&self) -> Option<Instant> {
        (self.settings.full_resync_interval_s > 0)
            .then(|| Instant::now() + Duration::from_secs(self.settings.full_resync_interval_s))
    }

    async fn follow_stream(
        &self,
        mut stream: ChangeStream<ChangeStreamEvent<Document>>,
        generation: u64,
        cancel: &CancellationToken,
    ) -> FollowEnd {
        self.set_state(SyncState::Following {
            generation,
            mode: "stream",
        });
        self.metrics.following.set(1);
        let deadline = self.resync_deadline();
        let mut marker_check = self.marker_interval();
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return FollowEnd::Cancelled,
                _ = sleep_until(deadline) => return FollowEnd::ResyncDue,
                _ = marker_check.tick() => {
                    if let Some(end) = self.marker_lost().await {
                        return end;
                    }
                    continue;
                }
                n = stream.try_next() => n,
            };
            let event = match next {
                Ok(Some(e)) => e,
                Ok(None) => return FollowEnd::NeedsResync("change stream ended".into()),
                Err(e) => return FollowEnd::NeedsResync(format!("change stream failed: {e}")),
            };
            let coll = event
                .ns
                .as_ref()
                .and_then(|n| n.coll.clone())
                .unwrap_or_default();
            let id = event
                .document_key
                .as_ref()
                .and_then(|k| k.get_str("_id").ok())
                .map(str::to_owned);
            let Some(id) = id else { continue };
            let wall = event.wall_time.map(|t| t.timestamp_millis());
            let result = match (coll.as_str(), event.operation_type) {
                (API_KEYS, OperationType::Delete) => {
                    return FollowEnd::NeedsResync(format!("key {id} was deleted"));
                }
                (API_KEYS, _) => self.apply_key(&id, "stream", wall).await,
                (ACCOUNTS, OperationType::Delete) => {
                    return FollowEnd::NeedsResync(format!("account {id} was deleted"));
                }
                (ACCOUNTS, _) => self.apply_account(&id, "stream", wall).await,
                _ => Ok(()),
            };
            if let Err(e) = result {
                return FollowEnd::NeedsResync(format!("applying a change failed: {e}"));
            }
        }
    }

    async fn follow_poll(
        &self,
        mut since: bson::DateTime,
        generation: u64,
        cancel: &CancellationToken,
    ) -> FollowEnd {
        self.set_state(SyncState::Following {
            generation,
            mode: "poll",
        });
        self.metrics.following.set(1);
        let deadline = self.resync_deadline();
        let overlap = self.settings.poll_overlap_ms as i64;
        // Revisions applied recently, so the overlap window does not
        // re-publish unchanged keys on every poll.
        let mut seen_keys: HashMap<String, i64> = HashMap::new();
        let mut seen_accounts: HashMap<String, i64> = HashMap::new();
        loop {
            let filter = doc! { "updated_at": { "$gte": since } };
            let mut newest = since.timestamp_millis();
            let keys: Result<Vec<KeyDoc>, _> = async {
                self.mongo
                    .keys()
                    .find(filter.clone())
                    .await?
                    .try_collect()
                    .await
            }
            .await;
            let accounts: Result<Vec<AccountDoc>, _> = async {
                self.mongo
                    .accounts()
                    .find(filter)
                    .await?
                    .try_collect()
                    .await
            }
            .await;
            match (keys, accounts) {
                (Ok(keys), Ok(accounts)) => {
                    for a in accounts {
                        newest = newest.max(a.updated_at.timestamp_millis());
                        if seen_accounts.get(&a.id) == Some(&a.revision) {
                            continue;
                        }
                        if let Err(e) = self
                            .apply_account(&a.id, "poll", Some(a.updated_at.timestamp_millis()))
                            .await
                        {
                            return FollowEnd::NeedsResync(format!(
                                "applying a change failed: {e}"
                            ));
                        }
                        seen_accounts.insert(a.id.clone(), a.revision);
                    }
                    for k in keys {
                        newest = newest.max(k.updated_at.timestamp_millis());
                        if seen_keys.get(&k.key_id) == Some(&k.revision) {
                            continue;
                        }
                        if let Err(e) = self
                            .apply_key(&k.key_id, "poll", Some(k.updated_at.timestamp_millis()))
                            .await
                        {
                            return FollowEnd::NeedsResync(format!(
                                "applying a change failed: {e}"
                            ));
                        }
                        seen_keys.insert(k.key_id.clone(), k.revision);
                    }
                    since = bson::DateTime::from_millis(newest - overlap);
                    if seen_keys.len() > 100_000 || seen_accounts.len() > 100_000 {
                        // Bounded memory: forgetting only costs a re-apply.
                        seen_keys.clear();
                        seen_accounts.clear();
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    return FollowEnd::NeedsResync(format!("polling failed: {}", mongo_error(&e)));
                }
            }
            if let Some(end) = self.marker_lost().await {
                return end;
            }
            tokio::select! {
                _ = cancel.cancelled() => return FollowEnd::Cancelled,
                _ = sleep_until(deadline) => return FollowEnd::ResyncDue,
                _ = tokio::time::sleep(Duration::from_millis(self.settings.poll_interval_ms)) => {}
            }
        }
    }

    fn marker_interval(&self) -> tokio::time::Interval {
        let period = Duration::from_millis(self.settings.marker_check_ms.max(100));
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    }

    /// A follower whose marker vanished (Redis flushed or restarted)
    /// reloads at once: the authenticators meanwhile fall back to MongoDB.
    /// An unreachable Redis is not "lost": writes will fail and say so.
    async fn marker_lost(&self) -> Option<FollowEnd> {
        match self.redis.marker().await {
            Ok(None) => Some(FollowEnd::NeedsResync(
                "the populated marker is gone (Redis flushed or restarted)".into(),
            )),
            _ => None,
        }
    }

    /// Re-reads one key from MongoDB and writes it to Redis.
    async fn apply_key(
        &self,
        key_id: &str,
        mode: &str,
        changed_at_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        match self.mongo.record_by_key_id(key_id).await {
            Ok(Some((digest, record))) => {
                self.write(&digest, &record).await?;
                self.count(mode, "key", changed_at_ms);
                Ok(())
            }
            Ok(None) => Ok(()),
            // A key whose account is missing or whose document is invalid
            // cannot be authorised: leave it out (it was skipped by loads too).
            Err(StoreError::Corrupt { reason, .. }) => {
                tracing::warn!(key_id, reason, "key change skipped");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Re-writes every key of an account (its state is on each record).
    async fn apply_account(
        &self,
        account_id: &str,
        mode: &str,
        changed_at_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let Some(account) = self
            .mongo
            .accounts()
            .find_one(doc! { "_id": account_id })
            .await
            .map_err(|e| mongo_error(&e))?
        else {
            return Ok(());
        };
        let mut keys = self
            .mongo
            .keys()
            .find(doc! { "account_id": account_id })
            .await
            .map_err(|e| mongo_error(&e))?;
        while let Some(key) = keys.try_next().await.map_err(|e| mongo_error(&e))? {
            if let Ok((digest, record)) = record_of(&key, &account) {
                self.write(&digest, &record).await?;
            }
        }
        self.count(mode, "account", changed_at_ms);
        Ok(())
    }

    async fn write(&self, digest: &KeyDigest, record: &KeyRecord) -> Result<(), StoreError> {
        self.redis.put_current(digest, record).await?;
        self.redis.publish_invalidation(digest).await
    }

    fn count(&self, mode: &str, kind: &str, changed_at_ms: Option<i64>) {
        self.metrics.changes.with_label_values(&[mode, kind]).inc();
        let now = inlet_domain::now_ms();
        if let Some(at) = changed_at_ms {
            self.metrics
                .lag_seconds
                .set(((now - at).max(0) as f64) / 1000.0);
        }
        self.metrics.last_change.set(now as f64 / 1000.0);
    }
}

async fn sleep_or_cancel(cancel: &CancellationToken, d: Duration) {
    let jittered = d.mul_f64(0.5 + rand::random::<f64>() * 0.5);
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(jittered) => {}
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
