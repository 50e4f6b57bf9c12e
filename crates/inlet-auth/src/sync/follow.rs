//! Following changes after a load, by change stream or by polling, and
//! applying each one to Redis: inserts and updates (re-read, written with
//! a revision guard) and deletions (removed by digest, from the index).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{FollowEnd, KeySync, SyncState, failed, sleep_until};
use crate::mongo_store::KeyEntry;
use crate::mongo_store::changes::{Changes, Collection};
use crate::store::StoreError;

/// Follower mode, for metrics labels.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Stream,
    Poll,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Stream => "stream",
            Mode::Poll => "poll",
        }
    }
}

impl KeySync {
    pub(super) async fn follow_stream(
        &self,
        mut stream: Changes,
        generation: u64,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> FollowEnd {
        let (deadline, mut marker_check) = self.begin_following(generation, Mode::Stream);
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
                n = stream.next() => n,
            };
            let change = match next {
                Ok(Some(c)) => c,
                Ok(None) => return FollowEnd::NeedsResync("change stream ended".into()),
                Err(e) => return failed("change stream failed", &e),
            };
            let result = match (change.collection, change.deleted) {
                (Collection::Keys, true) => self.delete_keys(&[&change.id], Mode::Stream).await,
                (Collection::Keys, false) => self.apply_key(&change.id, Mode::Stream).await,
                (Collection::Accounts, deleted) => {
                    self.apply_account(&change.id, deleted, Mode::Stream).await
                }
            };
            if let Err(e) = result {
                return failed("applying a change failed", &e);
            }
            self.count_lag(change.at_ms);
        }
    }

    pub(super) async fn follow_poll(
        &self,
        mut since_ms: i64,
        generation: u64,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> FollowEnd {
        let (deadline, mut marker_check) = self.begin_following(generation, Mode::Poll);
        let overlap = self.settings.poll_overlap_ms as i64;
        // Revisions applied recently, so the overlap window does not
        // re-publish unchanged documents on every poll.
        let mut seen_keys: HashMap<String, (i64, i64)> = HashMap::new();
        let mut seen_accounts: HashMap<String, (i64, i64)> = HashMap::new();
        let mut poll = tokio::time::interval(Duration::from_millis(
            self.settings.poll_interval_ms.max(10),
        ));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return FollowEnd::Cancelled,
                _ = sleep_until(deadline) => return FollowEnd::ResyncDue,
                _ = marker_check.tick() => {
                    if let Some(end) = self.marker_lost().await {
                        return end;
                    }
                    continue;
                }
                _ = poll.tick() => {}
            }
            if let Err(e) = self
                .poll_once(&mut since_ms, overlap, &mut seen_keys, &mut seen_accounts)
                .await
            {
                return failed("polling failed", &e);
            }
            if seen_keys.len() > 100_000 || seen_accounts.len() > 100_000 {
                // Bounded memory: forgetting only costs a re-apply.
                seen_keys.clear();
                seen_accounts.clear();
            }
        }
    }

    /// One poll: documents changed since `since_ms` (accounts first, then
    /// keys), then the deletion check.
    async fn poll_once(
        &self,
        since_ms: &mut i64,
        overlap: i64,
        seen_keys: &mut HashMap<String, (i64, i64)>,
        seen_accounts: &mut HashMap<String, (i64, i64)>,
    ) -> Result<(), StoreError> {
        // The next poll covers everything written after this one began, by
        // the sync's own clock, less the overlap (writers whose clocks lag).
        // Not "since the newest change seen": on a quiet system that
        // re-reads the last burst of changes on every poll, and one document
        // with a future `updated_at` would blind the follower.
        let started_ms = inlet_domain::now_ms();
        let accounts = self.mongo.accounts_changed_since(*since_ms).await?;
        let keys = self.mongo.keys_changed_since(*since_ms).await?;
        for a in accounts {
            let version = (a.revision, a.updated_at_ms);
            if seen_accounts.get(&a.id) == Some(&version) {
                continue;
            }
            self.apply_account(&a.id, false, Mode::Poll).await?;
            self.count_lag(Some(a.updated_at_ms));
            seen_accounts.insert(a.id, version);
        }
        let mut fresh = Vec::new();
        for (k, entry) in keys {
            let version = (k.revision, k.updated_at_ms);
            if seen_keys.get(&k.id) == Some(&version) {
                continue;
            }
            self.count_lag(Some(k.updated_at_ms));
            seen_keys.insert(k.id.clone(), version);
            fresh.push((k.id, entry));
        }
        let n = fresh.len() as u64;
        self.apply_entries(fresh).await?;
        self.count_n(Mode::Poll, "key", n);
        *since_ms = started_ms - overlap;
        self.sweep_if_shrunk().await
    }

    /// Polling sees inserts and updates through `updated_at`, but a deleted
    /// document is simply gone: when a collection holds a different number
    /// of documents than the sync knows of, its ids are swept and the
    /// difference applied (gone → removed from Redis; unseen → applied).
    async fn sweep_if_shrunk(&self) -> Result<(), StoreError> {
        let counts = self.mongo.counts().await?;
        let (known_keys, known_accounts) = {
            let index = self.index();
            (index.len() as u64, index.accounts().len() as u64)
        };
        if counts.accounts != known_accounts {
            let now: std::collections::HashSet<String> = self
                .mongo
                .ids(Collection::Accounts)
                .await?
                .into_iter()
                .collect();
            let known: Vec<String> = self.index().accounts().iter().cloned().collect();
            for gone in known.iter().filter(|a| !now.contains(*a)) {
                self.apply_account(gone, true, Mode::Poll).await?;
            }
            for new in now.iter().filter(|a| !known.contains(a)) {
                self.apply_account(new, false, Mode::Poll).await?;
            }
        }
        if counts.keys != known_keys {
            let now: std::collections::HashSet<String> = self
                .mongo
                .ids(Collection::Keys)
                .await?
                .into_iter()
                .collect();
            let known = self.index().ids();
            let known_set: std::collections::HashSet<&String> = known.iter().collect();
            let gone: Vec<&String> = known.iter().filter(|k| !now.contains(*k)).collect();
            self.delete_keys(&gone, Mode::Poll).await?;
            for new in now.iter().filter(|k| !known_set.contains(k)) {
                self.apply_key(new, Mode::Poll).await?;
            }
        }
        Ok(())
    }

    /// Enters the following state: the time of the next full resync and
    /// the marker check's timer.
    fn begin_following(
        &self,
        generation: u64,
        mode: Mode,
    ) -> (Option<Instant>, tokio::time::Interval) {
        self.set_state(SyncState::Following {
            generation,
            mode: mode.as_str(),
        });
        self.metrics.following.set(1);
        (self.resync_deadline(), self.marker_interval())
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

    /// Re-reads one key from MongoDB and brings Redis in line with it.
    async fn apply_key(&self, id: &str, mode: Mode) -> Result<(), StoreError> {
        match self.mongo.key_entry(id).await? {
            Some(entry) => self.apply_entries(vec![(id.to_owned(), entry)]).await?,
            None => return self.delete_keys(&[id], mode).await,
        }
        self.count_n(mode, "key", 1);
        Ok(())
    }

    /// Re-writes every key of an account (its state is on each record);
    /// when the account was deleted, its keys leave Redis.
    async fn apply_account(&self, id: &str, deleted: bool, mode: Mode) -> Result<(), StoreError> {
        let entries = self
            .mongo
            .keys_of_account(id)
            .await?
            .into_iter()
            .map(|entry| (entry.id(), entry))
            .collect();
        self.apply_entries(entries).await?;
        if deleted {
            self.index().remove_account(id);
            self.count_n(mode, "account_deleted", 1);
        } else {
            self.index().add_account(id);
            self.count_n(mode, "account", 1);
        }
        Ok(())
    }

    /// Brings Redis in line with key documents as just read: usable records
    /// are written (revision-guarded); whatever Redis held for a key that
    /// is no longer usable (no account, unreadable), or under a digest that
    /// changed, is removed. Every digest touched is invalidated. Three round
    /// trips whatever the number of entries.
    async fn apply_entries(&self, entries: Vec<(String, KeyEntry)>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut puts = Vec::new();
        let mut removals = Vec::new();
        {
            let mut index = self.index();
            for (id, entry) in entries {
                let new_digest = match &entry {
                    KeyEntry::Usable { digest, .. } => Some(*digest),
                    _ => None,
                };
                if let Some(old) = index
                    .set(&id, new_digest)
                    .filter(|old| Some(*old) != new_digest)
                {
                    removals.push(old);
                }
                match entry {
                    KeyEntry::Usable { digest, record, .. } => puts.push((digest, record)),
                    KeyEntry::Orphan {
                        digest, account_id, ..
                    } => {
                        tracing::info!(key = id, account = %account_id, "key of a missing account leaves Redis");
                        removals.push(digest);
                    }
                    KeyEntry::Unreadable { digest, reason, .. } => {
                        tracing::warn!(key = id, %reason, "unreadable key document leaves Redis");
                        removals.extend(digest);
                    }
                }
            }
        }
        self.redis.remove_records(&removals).await?;
        self.redis.put_records(&puts).await?;
        let touched: Vec<_> = removals
            .into_iter()
            .chain(puts.into_iter().map(|(d, _)| d))
            .collect();
        self.redis.publish_invalidations(&touched).await
    }

    /// Key documents were deleted: their records leave Redis.
    async fn delete_keys(&self, ids: &[impl AsRef<str>], mode: Mode) -> Result<(), StoreError> {
        let digests: Vec<_> = {
            let mut index = self.index();
            ids.iter()
                .filter_map(|id| index.remove(id.as_ref()))
                .collect()
        };
        self.redis.remove_records(&digests).await?;
        self.redis.publish_invalidations(&digests).await?;
        self.count_n(mode, "key_deleted", ids.len() as u64);
        Ok(())
    }

    fn count_n(&self, mode: Mode, kind: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.metrics
            .changes
            .with_label_values(&[mode.as_str(), kind])
            .inc_by(n);
        self.metrics
            .last_change
            .set(inlet_domain::now_ms() as f64 / 1000.0);
    }

    fn count_lag(&self, changed_at_ms: Option<i64>) {
        if let Some(at) = changed_at_ms {
            let now = inlet_domain::now_ms();
            self.metrics
                .lag_seconds
                .set(((now - at).max(0) as f64) / 1000.0);
        }
    }
}
