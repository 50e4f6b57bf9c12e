//! The processing loop: pull a batch of deliveries, check them, fold them,
//! write them exactly once, then ack.
//!
//! Nothing is acked before its effect is durable. Failures split three
//! ways:
//! - the message can never succeed (undecodable, invalid) → dead letter at
//!   once, with the reason;
//! - MongoDB is unreachable → nothing is settled; the pipeline stops
//!   pulling and re-checks MongoDB with backoff, then retries the same
//!   messages (no attempt is counted: an outage is not the message's fault,
//!   and requeues would count against the broker's delivery limit);
//! - anything else → the message is retried through the delay queue with
//!   a growing delay, and dead-lettered after the last attempt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use inlet_auth::{KeyStore, Lookup, MongoStore, StoreError};
use inlet_domain::backoff::{Backoff, Jitter};
use inlet_domain::{AccountId, AuthMode, Batch, BatchLimits, Envelope, Verdict, now_ms};
use inlet_queue::{Consumer, Incoming, QueueMetrics, QueueSettings, RetryOutcome};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::aggregate::Aggregates;
use crate::metrics::WorkerMetrics;
use crate::settings::WorkerSettings;
use crate::store::{AggregateStore, WriteError};

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written (this many samples) and acked.
    Processed {
        /// Samples written.
        items: u64,
    },
    /// Applied before (a redelivery, or an agent's retry): acked, not
    /// written again.
    Duplicate,
    /// A provisional push whose key the source of truth rejected: acked,
    /// dropped, counted.
    DroppedProvisional {
        /// `unknown_key`, `revoked_key`, `account_suspended`, `app_forbidden`.
        reason: &'static str,
    },
    /// Sent to the dead-letter queue.
    DeadLettered {
        /// Why.
        reason: String,
    },
    /// Scheduled for another attempt through the delay queue.
    Retried {
        /// The attempt number it will be.
        attempt: u32,
    },
    /// Could not be settled (e.g. its connection died); the broker will
    /// redeliver it.
    Unsettled,
    /// No message arrived in time (step function only).
    Idle,
}

/// Everything a pipeline needs besides its consumer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Processor {
    store: AggregateStore,
    truth: MongoStore,
    limits: BatchLimits,
    settings: WorkerSettings,
    metrics: WorkerMetrics,
    mongo_up: Arc<watch::Sender<bool>>,
}

/// A message that passed every check, ready to be folded.
struct Ready {
    incoming: Incoming,
    key: String,
    /// When the API received it (for `inlet_worker_freshness_seconds`).
    received_at_ms: i64,
    account: AccountId,
    batch: Batch,
}

impl Processor {
    /// A processor writing through `store`, re-checking provisional keys
    /// against `truth`.
    pub fn new(
        store: AggregateStore,
        truth: MongoStore,
        limits: BatchLimits,
        settings: WorkerSettings,
        metrics: WorkerMetrics,
    ) -> Self {
        let (mongo_up, _) = watch::channel(true);
        Processor {
            store: store.counting_conflicts_in(metrics.transaction_retries.clone()),
            truth,
            limits,
            settings,
            metrics,
            mongo_up: Arc::new(mongo_up),
        }
    }

    /// Follows whether MongoDB is reachable (for readiness).
    pub fn watch_mongo(&self) -> watch::Receiver<bool> {
        self.mongo_up.subscribe()
    }

    /// The metrics.
    pub fn metrics(&self) -> &WorkerMetrics {
        &self.metrics
    }

    /// Processes a batch of deliveries to the end: every message is
    /// settled (or left for redelivery if its connection died) before this
    /// returns — unless `cancel` fires while MongoDB is unreachable, in
    /// which case the unsettled messages are left to the broker.
    pub async fn process(&self, batch: Vec<Incoming>, cancel: &CancellationToken) -> Vec<Outcome> {
        let started = Instant::now();
        self.metrics.batch_messages.observe(batch.len() as f64);
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut pending = batch;
        let mut backoff = Backoff::new(
            Duration::from_millis(self.settings.mongo_retry_initial_ms.max(10)),
            Duration::from_millis(self.settings.mongo_retry_max_ms.max(10)),
        )
        .with_jitter(Jitter::Equal);
        let mut rounds = 0;
        loop {
            rounds += 1;
            match self.attempt(pending, &mut outcomes).await {
                Attempt::Done => break,
                Attempt::Unavailable(left, why) => {
                    // Stop pulling; wait for MongoDB; retry the same messages.
                    self.set_mongo(false, &why);
                    self.metrics.paused.inc();
                    let back = self.wait_for_mongo(&mut backoff, cancel).await;
                    self.metrics.paused.dec();
                    if !back {
                        // Shutting down: leave them unsettled; the broker
                        // redelivers them to whoever consumes next.
                        outcomes.extend(left.iter().map(|_| Outcome::Unsettled));
                        drop(left);
                        break;
                    }
                    pending = left;
                }
                Attempt::Again(left) if rounds < 10 => pending = left,
                Attempt::Again(left) => {
                    // Keeps racing with a concurrent writer: let the delay
                    // queue space it out.
                    for m in left {
                        outcomes.push(self.retry(m, "concurrent duplicate applies").await);
                    }
                    break;
                }
            }
        }
        self.metrics
            .batch_duration
            .observe(started.elapsed().as_secs_f64());
        outcomes
    }

    async fn attempt(&self, batch: Vec<Incoming>, outcomes: &mut Vec<Outcome>) -> Attempt {
        // 1. Check each message on its own.
        let checking = Instant::now();
        let mut ready = Vec::with_capacity(batch.len());
        let mut iter = batch.into_iter();
        while let Some(incoming) = iter.next() {
            match self.check(incoming).await {
                Checked::Ready(r) => ready.push(*r),
                Checked::Settled(o) => outcomes.push(o),
                Checked::Unavailable(incoming, why) => {
                    let mut left: Vec<Incoming> = ready.into_iter().map(|r| r.incoming).collect();
                    left.push(*incoming);
                    left.extend(iter);
                    return Attempt::Unavailable(left, why);
                }
            }
        }
        self.stage("check", checking);
        if ready.is_empty() {
            return Attempt::Done;
        }
        self.set_mongo(true, "");

        // 2. Skip what was applied already (redeliveries, agent retries).
        let keys: Vec<String> = ready.iter().map(|r| r.key.clone()).collect();
        let looking = Instant::now();
        let applied = self.store.already_applied(&keys).await;
        self.stage("dedup", looking);
        let applied = match applied {
            Ok(a) => a,
            Err(WriteError::Unavailable(why)) => {
                return Attempt::Unavailable(ready.into_iter().map(|r| r.incoming).collect(), why);
            }
            Err(e) => {
                tracing::warn!(error = %e, "checking applied markers failed");
                Vec::new()
            }
        };
        let mut fresh = Vec::with_capacity(ready.len());
        // Same key twice in this batch (an agent's quick retry): the copy
        // is settled only once the original's write is durable.
        let mut shadows = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut duplicates = Vec::new();
        for r in ready {
            if applied.contains(&r.key) {
                duplicates.push(r.incoming);
            } else if !seen.insert(r.key.clone()) {
                shadows.push(r.incoming);
            } else {
                fresh.push(r);
            }
        }
        if !duplicates.is_empty() {
            // A redelivered batch (after a worker was killed) is all
            // duplicates: acked together, as written batches are.
            let acks = duplicates.into_iter().map(|d| (d, Outcome::Duplicate));
            outcomes.extend(self.ack_all(acks).await);
        }
        if fresh.is_empty() {
            return Attempt::Done;
        }

        // 3. Fold and write them in one transaction.
        let mut aggregates = Aggregates::default();
        for r in &fresh {
            aggregates.add(&r.account, &r.batch);
        }
        let keys: Vec<String> = fresh.iter().map(|r| r.key.clone()).collect();
        let written = self.write(&keys, &aggregates).await;
        let unsettled = |fresh: Vec<Ready>, shadows: Vec<Incoming>| {
            fresh
                .into_iter()
                .map(|r| r.incoming)
                .chain(shadows)
                .collect::<Vec<_>>()
        };
        match written {
            Ok(_) => {
                for r in &fresh {
                    self.committed(r);
                }
                let (t, m, e) = aggregates.items;
                self.metrics
                    .items
                    .with_label_values(&["transaction"])
                    .inc_by(t);
                self.metrics.items.with_label_values(&["metric"]).inc_by(m);
                self.metrics.items.with_label_values(&["error"]).inc_by(e);
                let acks = fresh
                    .into_iter()
                    .map(|r| {
                        let items = r.batch.item_count() as u64;
                        (r.incoming, Outcome::Processed { items })
                    })
                    .chain(shadows.into_iter().map(|c| (c, Outcome::Duplicate)));
                outcomes.extend(self.ack_all(acks).await);
                Attempt::Done
            }
            Err(WriteError::AlreadyApplied) => Attempt::Again(unsettled(fresh, shadows)),
            Err(WriteError::Unavailable(why)) => {
                Attempt::Unavailable(unsettled(fresh, shadows), why)
            }
            Err(WriteError::Failed(why)) if fresh.len() > 1 => {
                // Find the culprit: write each message on its own. Copies
                // go round again and are recognised as duplicates then.
                tracing::warn!(error = %why, messages = fresh.len(), "batch write failed; writing messages one by one");
                let mut left = shadows;
                let mut fresh = fresh.into_iter();
                while let Some(r) = fresh.next() {
                    let mut one = Aggregates::default();
                    one.add(&r.account, &r.batch);
                    match self.write(std::slice::from_ref(&r.key), &one).await {
                        Ok(_) => {
                            self.committed(&r);
                            let items = r.batch.item_count() as u64;
                            outcomes.push(
                                self.settle_ack(r.incoming, Outcome::Processed { items })
                                    .await,
                            );
                        }
                        Err(WriteError::AlreadyApplied) => {
                            outcomes.push(self.settle_ack(r.incoming, Outcome::Duplicate).await);
                        }
                        // MongoDB went away: pause with the rest, as for a
                        // batch (not a round of its own, which would count
                        // towards the conflict rounds and the delay queue).
                        Err(WriteError::Unavailable(why)) => {
                            left.push(r.incoming);
                            left.extend(fresh.map(|r| r.incoming));
                            return Attempt::Unavailable(left, why);
                        }
                        Err(WriteError::Failed(why)) => {
                            outcomes.push(self.retry(r.incoming, &why).await);
                        }
                    }
                }
                if left.is_empty() {
                    Attempt::Done
                } else {
                    Attempt::Again(left)
                }
            }
            Err(WriteError::Failed(why)) => {
                for r in fresh {
                    outcomes.push(self.retry(r.incoming, &why).await);
                }
                if shadows.is_empty() {
                    Attempt::Done
                } else {
                    Attempt::Again(shadows)
                }
            }
        }
    }

    /// Decodes, validates and (for provisional pushes) re-checks one message.
    async fn check(&self, incoming: Incoming) -> Checked {
        let envelope: Envelope = match &incoming.envelope {
            Ok(e) => e.clone(),
            Err(e) => {
                let reason = format!("undecodable: {e}");
                return Checked::Settled(self.dead_letter(incoming, "undecodable", &reason).await);
            }
        };
        self.metrics
            .lag_seconds
            .set(((now_ms() - envelope.received_at_ms).max(0) as f64) / 1000.0);
        let body = match envelope
            .content_encoding
            .decode(&envelope.body, self.settings.max_decoded_bytes)
        {
            Ok(b) => b,
            Err(e) => {
                let reason = format!("invalid body: {e}");
                return Checked::Settled(self.dead_letter(incoming, "invalid_body", &reason).await);
            }
        };
        // The window is measured from when the API received it, so data
        // queued through an outage stays valid.
        let batch = match Batch::decode(&body, &self.limits, envelope.received_at_ms) {
            Ok(b) => b,
            Err(e) => {
                let reason = format!("invalid batch: {e}");
                return Checked::Settled(
                    self.dead_letter(incoming, "invalid_batch", &reason).await,
                );
            }
        };
        let account = match envelope.auth_mode {
            AuthMode::Confirmed => match envelope.account_id.clone() {
                Some(a) => a,
                None => {
                    return Checked::Settled(
                        self.dead_letter(
                            incoming,
                            "no_account",
                            "confirmed push without an account",
                        )
                        .await,
                    );
                }
            },
            // Accepted while no store could decide: ask the source of truth
            // now, before a single sample is written.
            AuthMode::Provisional => match self.truth.lookup(&envelope.key_digest).await {
                Ok(Lookup::Found(record)) => match record.verdict(AuthMode::Confirmed) {
                    Verdict::Accepted(grant) => {
                        if let Some(app) = &grant.app
                            && app != batch.app()
                        {
                            return Checked::Settled(
                                self.drop_provisional(incoming, "app_forbidden").await,
                            );
                        }
                        record.account_id
                    }
                    Verdict::RevokedKey => {
                        return Checked::Settled(
                            self.drop_provisional(incoming, "revoked_key").await,
                        );
                    }
                    Verdict::SuspendedAccount => {
                        return Checked::Settled(
                            self.drop_provisional(incoming, "account_suspended").await,
                        );
                    }
                    _ => {
                        return Checked::Settled(
                            self.drop_provisional(incoming, "unknown_key").await,
                        );
                    }
                },
                Ok(Lookup::Absent) => {
                    return Checked::Settled(self.drop_provisional(incoming, "unknown_key").await);
                }
                Ok(Lookup::NotLoaded) => {
                    return Checked::Unavailable(
                        Box::new(incoming),
                        "source of truth not loaded".into(),
                    );
                }
                // MongoDB answered, with a record nobody can read: not an
                // outage to wait out (that would stall the pipeline behind
                // one key), and no verdict to drop the data on. Kept in the
                // dead-letter queue, counted and alerted, for replay once
                // the document is repaired.
                Err(StoreError::Corrupt { reason, .. }) => {
                    let reason = format!("key record unreadable: {reason}");
                    return Checked::Settled(
                        self.dead_letter(incoming, "key_record_unreadable", &reason)
                            .await,
                    );
                }
                Err(e) => {
                    return Checked::Unavailable(
                        Box::new(incoming),
                        format!("re-checking a provisional key: {e}"),
                    );
                }
            },
        };
        Checked::Ready(Box::new(Ready {
            key: envelope.dedup_key(),
            received_at_ms: envelope.received_at_ms,
            incoming,
            account,
            batch,
        }))
    }

    /// Writes through the store (whose writes take turns, see
    /// [`AggregateStore`]), timing MongoDB's part.
    async fn write(
        &self,
        keys: &[String],
        aggregates: &Aggregates,
    ) -> Result<crate::store::WriteReport, WriteError> {
        let started = Instant::now();
        let written = self.store.write(keys, aggregates).await;
        let waited = written.as_ref().map_or(Duration::ZERO, |r| r.turn_wait);
        self.metrics
            .write_duration
            .observe(started.elapsed().saturating_sub(waited).as_secs_f64());
        written
    }

    /// Records that `r`'s effect is committed.
    fn committed(&self, r: &Ready) {
        let age_ms = (now_ms() - r.received_at_ms).max(0);
        self.metrics.freshness.observe(age_ms as f64 / 1000.0);
    }

    /// Acks these messages together (one wait for the connection, not one
    /// per message), timed as the `settle` stage; outcomes in their order.
    async fn ack_all(&self, acks: impl Iterator<Item = (Incoming, Outcome)>) -> Vec<Outcome> {
        let settling = Instant::now();
        let outcomes =
            futures::future::join_all(acks.map(|(incoming, o)| self.settle_ack(incoming, o))).await;
        self.stage("settle", settling);
        outcomes
    }

    /// Records the time a batch spent in `stage` since `since`.
    fn stage(&self, stage: &str, since: Instant) {
        self.metrics
            .stage_duration
            .with_label_values(&[stage])
            .observe(since.elapsed().as_secs_f64());
    }

    async fn settle_ack(&self, incoming: Incoming, outcome: Outcome) -> Outcome {
        match incoming.ack().await {
            Ok(()) => {
                let label = match outcome {
                    Outcome::Duplicate => "duplicate",
                    _ => "processed",
                };
                self.metrics.messages.with_label_values(&[label]).inc();
                outcome
            }
            Err(e) => {
                // The effect is durable and marked; the redelivery will be
                // recognised as a duplicate.
                tracing::warn!(error = %e, "ack failed after a durable write; the redelivery will be skipped");
                Outcome::Unsettled
            }
        }
    }

    async fn drop_provisional(&self, incoming: Incoming, reason: &'static str) -> Outcome {
        tracing::info!(reason, message_id = ?incoming.message_id, "provisional push dropped: the source of truth rejects its key");
        match incoming.ack().await {
            Ok(()) => {
                self.metrics
                    .messages
                    .with_label_values(&["dropped_provisional"])
                    .inc();
                self.metrics
                    .dropped_provisional
                    .with_label_values(&[reason])
                    .inc();
                Outcome::DroppedProvisional { reason }
            }
            Err(_) => Outcome::Unsettled,
        }
    }

    async fn dead_letter(&self, incoming: Incoming, label: &'static str, reason: &str) -> Outcome {
        tracing::warn!(reason, message_id = ?incoming.message_id, "dead-lettering a message");
        match incoming.dead_letter(reason).await {
            Ok(()) => {
                self.metrics
                    .messages
                    .with_label_values(&["dead_lettered"])
                    .inc();
                self.metrics.dead_letters.with_label_values(&[label]).inc();
                Outcome::DeadLettered {
                    reason: reason.to_owned(),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "dead-lettering failed; the message stays queued");
                Outcome::Unsettled
            }
        }
    }

    async fn retry(&self, incoming: Incoming, reason: &str) -> Outcome {
        match incoming.retry(reason).await {
            Ok(RetryOutcome::Scheduled { attempt, .. }) => {
                self.metrics.messages.with_label_values(&["retried"]).inc();
                Outcome::Retried { attempt }
            }
            Ok(RetryOutcome::DeadLettered) => {
                self.metrics
                    .messages
                    .with_label_values(&["dead_lettered"])
                    .inc();
                self.metrics
                    .dead_letters
                    .with_label_values(&["max_attempts"])
                    .inc();
                Outcome::DeadLettered {
                    reason: reason.to_owned(),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "scheduling a retry failed; the message stays queued");
                Outcome::Unsettled
            }
        }
    }

    fn set_mongo(&self, up: bool, why: &str) {
        let was = *self.mongo_up.borrow();
        if was != up {
            if up {
                tracing::info!("MongoDB is reachable again; resuming");
            } else {
                tracing::warn!(
                    reason = why,
                    "MongoDB unreachable; pausing (pulling nothing until it is back)"
                );
            }
            self.mongo_up.send_replace(up);
        }
    }

    /// Pings MongoDB with backoff until it answers (true) or `cancel`
    /// fires (false).
    async fn wait_for_mongo(&self, backoff: &mut Backoff, cancel: &CancellationToken) -> bool {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
            if self.store.ping().await.is_ok() {
                self.set_mongo(true, "");
                return true;
            }
        }
    }
}

enum Checked {
    Ready(Box<Ready>),
    Settled(Outcome),
    Unavailable(Box<Incoming>, String),
}

enum Attempt {
    Done,
    Unavailable(Vec<Incoming>, String),
    Again(Vec<Incoming>),
}

/// One consumer and its processor.
#[derive(Debug)]
pub struct Pipeline {
    consumer: Consumer,
    processor: Processor,
    settings: WorkerSettings,
    /// `[queue] prefetch`: most deliveries the broker sends unsettled.
    prefetch: usize,
    cancel: CancellationToken,
}

impl Pipeline {
    /// A pipeline consuming with `queue` settings.
    pub fn start(
        queue: QueueSettings,
        queue_metrics: QueueMetrics,
        processor: Processor,
        settings: WorkerSettings,
        cancel: CancellationToken,
    ) -> Result<Pipeline, inlet_queue::QueueError> {
        let prefetch = usize::from(queue.prefetch);
        let consumer = Consumer::start(queue, queue_metrics, cancel.clone())?;
        Ok(Pipeline {
            consumer,
            processor,
            settings,
            prefetch,
            cancel,
        })
    }

    /// The consumer (for readiness and tests).
    pub fn consumer(&self) -> &Consumer {
        &self.consumer
    }

    /// The step function: waits up to `timeout` for one message and
    /// processes it alone. For tests: no sleeps, one outcome per call.
    pub async fn process_one(&mut self, timeout: Duration) -> Outcome {
        match tokio::time::timeout(timeout, self.consumer.next()).await {
            Ok(Some(incoming)) => self
                .processor
                .process(vec![incoming], &self.cancel)
                .await
                .pop()
                .unwrap_or(Outcome::Idle),
            Ok(None) | Err(_) => Outcome::Idle,
        }
    }

    /// Pulls and processes batches until cancelled, then drains: what was
    /// handed out is finished and acked, and the consumer closes.
    pub async fn run(mut self) {
        let linger = Duration::from_millis(self.settings.batch_linger_ms);
        while let Some(first) = self.consumer.next().await {
            let mut deliveries = usize::from(first.starts_delivery());
            let mut batch = vec![first];
            while batch.len() < self.settings.batch_max_messages {
                // Holding every delivery the prefetch lets the broker send,
                // the batch gets no more until it is settled: it takes what
                // is buffered (a bundle's other pushes) and does not linger
                // (a zero timeout still yields once, to the next timer tick).
                let wait = if deliveries >= self.prefetch {
                    Duration::ZERO
                } else {
                    linger
                };
                match tokio::time::timeout(wait, self.consumer.next()).await {
                    Ok(Some(m)) => {
                        deliveries += usize::from(m.starts_delivery());
                        batch.push(m);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            self.processor.process(batch, &self.cancel).await;
        }
        self.consumer.shutdown().await;
    }
}
