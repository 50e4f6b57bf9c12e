//! Key sync: MongoDB (source of truth) → Redis (fast primary).
//!
//! # Protocol
//!
//! 1. Open a change stream on `accounts` and `api_keys` *before* loading,
//!    so that changes made during the load are not missed (with polling:
//!    remember the time, minus an overlap, instead).
//! 2. **Load** ([`load`]): take a lease on a new generation, write every
//!    key's record into it in batches, then flip the populated marker to it
//!    — only while the lease survives (a flush ends it) and only forward
//!    (another sync's newer generation wins) — and delete older generations
//!    while the marker still names ours. A sync killed midway never flips
//!    the marker: the previous generation stays in force, and the next load
//!    removes the partial one. Two syncs may run at once (a rolling deploy).
//! 3. **Follow** ([`follow`]): apply each change — re-reading the key and
//!    its account from MongoDB, so the newest state wins, and writing with
//!    a revision guard, so an older state never overwrites a newer one — to
//!    the current generation (and any generation being loaded), and publish
//!    an invalidation, so running authenticators drop cached decisions at
//!    once. Inserts, updates **and deletions**, by any writer of MongoDB:
//!    change streams when the server supports them (replica sets);
//!    otherwise polling on `updated_at` with an overlap window, plus a
//!    comparison of collection sizes that triggers an id sweep when a
//!    document disappeared (polling cannot see deletions otherwise). The
//!    sync keeps an index of key id → digest ([`index`]) because a
//!    deletion names only the id.
//! 4. Every `full_resync_interval_s`, when the marker disappears (Redis
//!    flushed), or when following fails, start again at 1: a full load is
//!    the safety net for anything the follower could have missed.
//!
//! A key document that cannot be read, or whose account does not exist, is
//! not written to Redis (and removed if it was there): the authenticator
//! then asks MongoDB, which answers "unknown" for a missing account and
//! "unreadable" (503, never 401) for a broken document.

mod follow;
mod index;
mod load;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use inlet_domain::backoff::{Backoff, Jitter};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::SyncMetrics;
use crate::mongo_store::MongoStore;
use crate::redis_store::RedisStore;
use crate::settings::InvalidSetting;
use crate::store::StoreError;

use index::KeyIndex;

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
    /// How far before the start of the previous poll each poll looks,
    /// milliseconds: covers writers whose clocks lag the sync's and the
    /// time between a writer stamping `updated_at` and its commit. Default
    /// 5000.
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

impl SyncSettings {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.batch_size == 0 {
            return Err(InvalidSetting {
                key: "sync.batch_size".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(())
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
        /// Keys written into it so far (updated after every batch).
        written: u64,
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
            SyncState::Loading {
                generation,
                written,
            } => write!(
                f,
                "loading generation {generation} ({written} keys written so far)"
            ),
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
    /// The load's lease disappeared (Redis was flushed, or a newer load
    /// committed): its generation may be incomplete and was not committed.
    #[error("generation {0} lost its lease (Redis flushed or a newer load committed)")]
    LeaseLost(u64),
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
    /// Key id → digest written to Redis, for deletions (which name only the
    /// id). Built by each load, kept up to date by the follower.
    index: Arc<Mutex<KeyIndex>>,
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
            index: Arc::default(),
        }
    }

    /// Follows state changes (for readiness).
    pub fn watch_state(&self) -> watch::Receiver<SyncState> {
        self.state.subscribe()
    }

    fn set_state(&self, s: SyncState) {
        self.state.send_replace(s);
    }

    fn index(&self) -> std::sync::MutexGuard<'_, KeyIndex> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs until cancelled: load, follow, reload periodically; retries
    /// with backoff on failure (from 250 ms, doubling up to `retry_max_ms`,
    /// each pause drawn from the upper half).
    pub async fn run(&self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(
            Duration::from_millis(250),
            Duration::from_millis(self.settings.retry_max_ms),
        )
        .with_jitter(Jitter::Equal);
        while !cancel.is_cancelled() {
            let since_ms = inlet_domain::now_ms() - self.settings.poll_overlap_ms as i64;
            let stream = match self.settings.follow {
                FollowMode::Poll => None,
                mode => match self.mongo.watch().await {
                    Ok(s) => Some(s),
                    Err(e) if mode == FollowMode::Auto => {
                        tracing::info!(error = %e, "change streams unavailable; following by polling");
                        None
                    }
                    Err(e) => {
                        self.fail(&SyncError::NoChangeStream(e.to_string()).to_string());
                        sleep_or_cancel(&cancel, backoff.next_delay()).await;
                        continue;
                    }
                },
            };
            let marker = match self.backfill().await {
                Ok(m) => m,
                Err(e) => {
                    self.fail(&e.to_string());
                    sleep_or_cancel(&cancel, backoff.next_delay()).await;
                    continue;
                }
            };
            backoff.reset();
            let end = match stream {
                Some(s) => self.follow_stream(s, marker.generation, &cancel).await,
                None => self.follow_poll(since_ms, marker.generation, &cancel).await,
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

    fn resync_deadline(&self) -> Option<Instant> {
        (self.settings.full_resync_interval_s > 0)
            .then(|| Instant::now() + Duration::from_secs(self.settings.full_resync_interval_s))
    }
}

async fn sleep_or_cancel(cancel: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Why a store call during following failed, for the reload reason.
fn failed(what: &str, e: &StoreError) -> FollowEnd {
    FollowEnd::NeedsResync(format!("{what}: {e}"))
}
