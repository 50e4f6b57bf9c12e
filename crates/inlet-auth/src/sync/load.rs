//! The full load: every key of the source of truth into a new generation.

use std::time::Instant;

use inlet_domain::{KeyDigest, KeyRecord};

use super::index::KeyIndex;
use super::{KeySync, SyncError, SyncState};
use crate::mongo_store::KeyEntry;
use crate::redis_store::{Commit, Marker};

impl KeySync {
    /// Loads every key into a new generation and flips the marker to it.
    pub async fn backfill(&self) -> Result<Marker, SyncError> {
        let started = Instant::now();
        let result = self.backfill_inner().await;
        let outcome = match &result {
            Ok(_) => "completed",
            Err(SyncError::Superseded { .. }) => "superseded",
            Err(SyncError::LeaseLost(_)) => "lease_lost",
            Err(_) => "failed",
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
        let load = self.redis.begin_load().await?;
        let result = self.load_into(&load).await;
        if let Err(e) = &result
            && !matches!(e, SyncError::Superseded { .. } | SyncError::LeaseLost(_))
        {
            // A load that will not commit stops receiving changes and leaves
            // nothing behind (best effort; the next load cleans up anyway).
            if let Err(e) = self.redis.abandon_load(&load).await {
                tracing::debug!(error = %e, "could not abandon a failed load");
            }
        }
        result
    }

    async fn load_into(&self, load: &crate::redis_store::Load) -> Result<Marker, SyncError> {
        let generation = load.generation;
        self.set_state(SyncState::Loading {
            generation,
            written: 0,
        });
        let mut scan = self.mongo.scan_keys(self.settings.batch_size).await?;
        let batch_size = self.settings.batch_size.max(1) as usize;
        let mut batch: Vec<(KeyDigest, KeyRecord)> = Vec::with_capacity(batch_size);
        let mut index = KeyIndex::default();
        let (mut count, mut orphans, mut unreadable) = (0u64, 0i64, 0i64);
        while let Some(entry) = scan.next().await? {
            match entry {
                KeyEntry::Usable {
                    key_id,
                    digest,
                    record,
                } => {
                    index.set(&key_id.to_string(), Some(digest));
                    batch.push((digest, record));
                }
                KeyEntry::Orphan {
                    key_id, account_id, ..
                } => {
                    orphans += 1;
                    index.set(&key_id.to_string(), None);
                    tracing::debug!(%key_id, account = %account_id, "key of a missing account left out");
                }
                KeyEntry::Unreadable { id, reason, .. } => {
                    unreadable += 1;
                    index.set(&id, None);
                    tracing::warn!(key = %id, %reason, "unreadable key document left out");
                }
            }
            if batch.len() >= batch_size {
                count += self.write_batch(load, &mut batch).await?;
                self.set_state(SyncState::Loading {
                    generation,
                    written: count,
                });
            }
        }
        count += self.write_batch(load, &mut batch).await?;
        for account in scan.account_ids() {
            index.add_account(account);
        }
        let marker = match self.redis.commit_load(load, count).await? {
            Commit::Committed(marker) => marker,
            Commit::Superseded { current } => {
                return Err(SyncError::Superseded {
                    ours: generation,
                    current,
                });
            }
            Commit::LeaseLost => return Err(SyncError::LeaseLost(generation)),
        };
        *self.index() = index;
        self.metrics
            .unusable_keys
            .with_label_values(&["no_account"])
            .set(orphans);
        self.metrics
            .unusable_keys
            .with_label_values(&["unreadable"])
            .set(unreadable);
        // Committed: what follows is housekeeping, and its failure does not
        // undo the load (the next load removes what is left).
        let removed = match self.redis.delete_older_generations(generation).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "could not delete older generations; the next load will");
                0
            }
        };
        // Decisions cached from the previous generation, and stale-if-error
        // entries, may predate changes this load picked up.
        if let Err(e) = self.redis.publish_reload().await {
            tracing::warn!(error = %e, "could not publish the reload invalidation");
        }
        tracing::debug!(
            generation,
            count,
            orphans,
            unreadable,
            removed,
            "generation committed"
        );
        Ok(marker)
    }

    /// Writes and clears `batch`; returns how many records it held.
    async fn write_batch(
        &self,
        load: &crate::redis_store::Load,
        batch: &mut Vec<(KeyDigest, KeyRecord)>,
    ) -> Result<u64, SyncError> {
        if !self.redis.write_load(load, batch).await? {
            return Err(SyncError::LeaseLost(load.generation));
        }
        let n = batch.len() as u64;
        batch.clear();
        Ok(n)
    }
}
