//! Writing aggregates to MongoDB with exactly-once effect.
//!
//! # Why transactions
//!
//! A message is applied once if and only if two things commit together:
//! its effect on every bucket it touches, and its *applied marker*
//! (`applied._id` = the envelope's dedup key). Writing them in one
//! multi-document transaction makes that literal: a crash before the commit
//! leaves neither (the redelivered message is applied normally), a crash
//! after the commit but before the ack leaves both (the redelivered message
//! finds its marker and is skipped). The alternatives were weighed:
//!
//! - *marker first, effect second* (no transaction): a crash in between
//!   loses the message's data — "acknowledged then lost";
//! - *effect first, marker second*: a crash in between double counts;
//! - *per-bucket applied-id lists* (`$ne` filter + capped `$push`): exact
//!   only while fewer than N later messages touched the bucket; a busy
//!   bucket sees hundreds per second, so the bound does not hold.
//!
//! Transactions need a replica set (production runs a single-node one at
//! least; SecantusDB, used in tests, supports them). Conflicting concurrent
//! transactions are retried (`TransientTransactionError`) for a bounded
//! time with jittered exponential backoff. A transaction a lost connection
//! cut off stays open on the server, holding its buckets, until its
//! lifetime ends (60 s): its session is kept, and the next write ends it
//! with `killSessions`. On a standalone
//! server the worker refuses to start unless `worker.exactly_once = false`,
//! which selects an at-least-once path (effect, then marker) and says so.
//!
//! All buckets of a delivery batch are written with one client-level
//! `bulkWrite` inside the transaction: one round trip per batch.
//!
//! # Cumulative series
//!
//! A cumulative sample (`start_ms`) adds what it holds over the series'
//! last point, which `metric_cumulative` keeps (one document per account,
//! app, environment and series id: start, timestamp, sum, count, min, max,
//! buckets; see [`crate::cumulative`] for the rule). The read of those
//! points (one `find` with `$in` over every series of the batch) and the
//! write of the new ones (in the same `bulkWrite` as the buckets) are
//! statements of the same transaction as the buckets and the markers, so:
//! a redelivery finds its marker and is skipped; a retried transaction
//! reads the points again; and two workers on one series cannot both apply
//! the same increase, because the second one's write of the point
//! conflicts (`WriteConflict`, `TransientTransactionError`) and its
//! transaction is retried, reading the first one's point. Without
//! transactions (`worker.exactly_once = false`) the same read and write
//! happen without that guarantee: best effort. Two workers racing on a
//! series can then both apply one increase, and a crash between the
//! buckets and the markers is safe for cumulative series only as far as
//! the points were written (a redelivered point the stored one covers is
//! stale).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::collections::HashMap;

use futures::TryStreamExt as _;
use inlet_domain::backoff::{Backoff, Jitter};
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::error::{
    Error as MongoError, ErrorKind, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT,
};
use mongodb::options::{ReplaceOneModel, UpdateModifications, UpdateOneModel, WriteModel};
use mongodb::{Client, ClientSession, Collection, Database};

use crate::aggregate::{
    Aggregates, CumulativeSeries, MetricKey, MetricStats, Resolved, SeriesKey, bucket_id,
};
use crate::cumulative::Point;

/// Transactions per minute.
pub const TX_MINUTES: &str = "tx_minutes";
/// Metrics per minute.
pub const METRIC_MINUTES: &str = "metric_minutes";
/// Error occurrences per minute.
pub const ERROR_MINUTES: &str = "error_minutes";
/// Error groups (first/last seen, latest sample).
pub const ERROR_GROUPS: &str = "error_groups";
/// Applied-message markers (dedup keys).
pub const APPLIED: &str = "applied";
/// The last point of every cumulative series.
pub const METRIC_CUMULATIVE: &str = "metric_cumulative";

/// Why a write failed, by what the worker should do about it.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// MongoDB cannot be reached (or is not primary): stop pulling, wait,
    /// then retry the same messages. Not the messages' fault.
    #[error("MongoDB unavailable: {0}")]
    Unavailable(String),
    /// One of the keys was applied meanwhile (a concurrent redelivery):
    /// nothing was written; filter again and retry.
    #[error("a message was applied concurrently")]
    AlreadyApplied,
    /// Anything else (e.g. a document the server refuses): retry these
    /// messages through the delay queue, then dead-letter.
    #[error("write failed: {0}")]
    Failed(String),
}

/// Classifies a driver error.
pub fn classify(e: &MongoError) -> WriteError {
    if is_unavailable(e) {
        WriteError::Unavailable(e.to_string())
    } else {
        WriteError::Failed(e.to_string())
    }
}

/// Cut-off sessions kept for `killSessions` at most.
const MAX_CUT_OFF: usize = 64;

/// How long a batch write keeps retrying transient transaction conflicts
/// before the batch is split (and its messages retried on their own).
const CONFLICT_RETRY_BUDGET: Duration = Duration::from_secs(10);
/// The first conflict retry waits up to this long (full jitter)…
const CONFLICT_BACKOFF_INITIAL: Duration = Duration::from_millis(10);
/// …doubling to at most this.
const CONFLICT_BACKOFF_MAX: Duration = Duration::from_millis(250);

/// Whether an error means "the server is not there", not "this write is bad".
pub fn is_unavailable(e: &MongoError) -> bool {
    // Codes of a server that is shutting down, stepping down, or not
    // reachable; see the server's error_codes.yml.
    const UNAVAILABLE_CODES: &[i32] = &[
        6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
    ];
    match e.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. } => true,
        ErrorKind::Command(c) => UNAVAILABLE_CODES.contains(&c.code),
        _ => false,
    }
}

/// The worker's MongoDB side.
#[derive(Debug, Clone)]
pub struct AggregateStore {
    client: Client,
    db: Database,
    exactly_once: bool,
    /// Sessions whose transaction a lost connection cut off. The server
    /// keeps such a transaction open (holding its buckets, so every write
    /// to them conflicts) until its transaction lifetime ends, 60 s by
    /// default; the next write ends them with `killSessions`.
    cut_off: Arc<Mutex<Vec<ClientSession>>>,
    /// Held for one write attempt: writes through this store and its
    /// clones (the pipelines of a worker) take turns, since they fold the
    /// same hot buckets and concurrent transactions on them conflict.
    /// Released between conflict retries, so a bucket another process
    /// holds does not stall the other pipelines' writes.
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Counts every conflict retried, as it happens: also those of writes
    /// that run out of their retry budget and never commit.
    conflicts: Option<prometheus::IntCounter>,
}

/// What one write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteReport {
    /// Bucket documents written.
    pub buckets: usize,
    /// Transaction attempts beyond the first (conflicts).
    pub retries: u32,
    /// Time spent waiting for the turn to write (other pipelines'
    /// writes), not MongoDB's.
    pub turn_wait: Duration,
}

impl AggregateStore {
    /// A store over `db`. `exactly_once` selects transactions (see the
    /// module docs).
    pub fn new(db: Database, exactly_once: bool) -> Self {
        AggregateStore {
            client: db.client().clone(),
            db,
            exactly_once,
            cut_off: Arc::default(),
            turn: Arc::default(),
            conflicts: None,
        }
    }

    /// The same store, counting each write conflict it retries in
    /// `counter` (`inlet_worker_transaction_retries_total`).
    pub fn counting_conflicts_in(mut self, counter: prometheus::IntCounter) -> Self {
        self.conflicts = Some(counter);
        self
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Whether the server supports multi-document transactions (a replica
    /// set member or mongos).
    pub async fn supports_transactions(&self) -> Result<bool, WriteError> {
        let hello = self
            .db
            .run_command(doc! { "hello": 1 })
            .await
            .map_err(|e| classify(&e))?;
        Ok(hello.get_str("setName").is_ok() || hello.get_str("msg") == Ok("isdbgrid"))
    }

    /// Pings the server.
    pub async fn ping(&self) -> Result<(), WriteError> {
        self.db
            .run_command(doc! { "ping": 1 })
            .await
            .map(|_| ())
            .map_err(|e| classify(&e))
    }

    fn applied(&self) -> Collection<Document> {
        self.db.collection(APPLIED)
    }

    /// Which of these dedup keys were applied already (outside any
    /// transaction: a hint for skipping work; the transaction re-checks).
    pub async fn already_applied(&self, keys: &[String]) -> Result<Vec<String>, WriteError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let found: Vec<Document> = self
            .applied()
            .find(doc! { "_id": { "$in": keys } })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(|e| classify(&e))?
            .try_collect()
            .await
            .map_err(|e| classify(&e))?;
        Ok(found
            .iter()
            .filter_map(|d| d.get_str("_id").ok().map(str::to_owned))
            .collect())
    }

    /// Applies `aggregates` (the fold of the messages whose dedup keys are
    /// `keys`) and records `keys` as applied, atomically. The caller filters
    /// out keys [`Self::already_applied`] reports first; if one is applied
    /// concurrently anyway, nothing is written and the answer is
    /// [`WriteError::AlreadyApplied`].
    pub async fn write(
        &self,
        keys: &[String],
        aggregates: &Aggregates,
    ) -> Result<WriteReport, WriteError> {
        if !self.exactly_once {
            // At least once: effect, then markers. Cumulative series are
            // resolved without a transaction: best effort (module docs).
            let waiting = Instant::now();
            let _turn = self.turn.lock().await;
            let turn_wait = waiting.elapsed();
            let models = self
                .plan(aggregates, None)
                .await
                .map_err(|e| classify(&e))?;
            self.bulk(&models, None).await?;
            self.insert_markers(keys, None).await?;
            return Ok(WriteReport {
                buckets: models.len(),
                retries: 0,
                turn_wait,
            });
        }
        let mut conflicts =
            Backoff::new(CONFLICT_BACKOFF_INITIAL, CONFLICT_BACKOFF_MAX).with_jitter(Jitter::Full);
        let started = std::time::Instant::now();
        self.end_cut_off().await;
        let mut session = self
            .client
            .start_session()
            .await
            .map_err(|e| classify(&e))?;
        let mut turn_wait = Duration::ZERO;
        loop {
            let attempt = {
                let waiting = Instant::now();
                let _turn = self.turn.lock().await;
                turn_wait += waiting.elapsed();
                self.transaction(&mut session, keys, aggregates).await
            };
            match attempt {
                Ok(buckets) => {
                    return Ok(WriteReport {
                        buckets,
                        retries: conflicts.failures(),
                        turn_wait,
                    });
                }
                // A server that is gone is not a conflict to retry here:
                // the caller pauses, waits for MongoDB and comes back.
                Err(e) if is_unavailable(&e) => {
                    self.keep_cut_off(session);
                    return Err(classify(&e));
                }
                // Another pipeline or worker wrote a bucket (or a cumulative
                // series' point) of this batch first; the next attempt reads
                // the points again. A conflict passes by definition, but two pipelines
                // folding the same accounts can keep colliding: back off
                // exponentially with full jitter, for a bounded time rather
                // than a number of tries (a busy server makes each try slow).
                Err(e)
                    if e.contains_label(TRANSIENT_TRANSACTION_ERROR)
                        && started.elapsed() < CONFLICT_RETRY_BUDGET =>
                {
                    if let Some(c) = &self.conflicts {
                        c.inc();
                    }
                    // At least a millisecond, as before: never a hot retry.
                    let pause = conflicts.next_delay().max(Duration::from_millis(1));
                    tokio::time::sleep(pause).await;
                }
                Err(e) if is_duplicate(&e) => return Err(WriteError::AlreadyApplied),
                Err(e) => return Err(classify(&e)),
            }
        }
    }

    fn cut_off(&self) -> std::sync::MutexGuard<'_, Vec<ClientSession>> {
        self.cut_off
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn keep_cut_off(&self, session: ClientSession) {
        let mut kept = self.cut_off();
        if kept.len() >= MAX_CUT_OFF {
            // A long outage: the oldest end with their lifetime instead.
            kept.remove(0);
        }
        kept.push(session);
    }

    /// Makes the server abort the transactions of the cut-off sessions
    /// now, not when their lifetime ends. Kept for the next write while
    /// the server does not answer.
    async fn end_cut_off(&self) {
        let sessions = std::mem::take(&mut *self.cut_off());
        if sessions.is_empty() {
            return;
        }
        let ids: Vec<Document> = sessions.iter().map(|s| s.id().clone()).collect();
        let killed = self
            .client
            .database("admin")
            .run_command(doc! { "killSessions": ids })
            .await;
        match killed {
            Ok(_) => tracing::debug!(sessions = sessions.len(), "ended cut-off transactions"),
            Err(_) => {
                for s in sessions {
                    self.keep_cut_off(s);
                }
            }
        }
    }

    /// One attempt: markers, the cumulative points read, every bucket and
    /// point written, commit. The number of documents written.
    async fn transaction(
        &self,
        session: &mut ClientSession,
        keys: &[String],
        aggregates: &Aggregates,
    ) -> Result<usize, MongoError> {
        session.start_transaction().await?;
        let result = async {
            // The markers first: a duplicate key aborts the transaction
            // before any effect is written (the caller filters duplicates
            // beforehand; this is the guarantee under races).
            self.insert_markers_raw(keys, Some(&mut *session)).await?;
            let models = self.plan(aggregates, Some(&mut *session)).await?;
            if !models.is_empty() {
                self.client
                    .bulk_write(models.clone())
                    .ordered(false)
                    .session(&mut *session)
                    .await?;
            }
            Ok::<usize, MongoError>(models.len())
        }
        .await;
        let written = match result {
            Ok(n) => n,
            Err(e) => {
                let _ = session.abort_transaction().await;
                return Err(e);
            }
        };
        // Retry the commit itself while its outcome is unknown.
        let started = Instant::now();
        loop {
            match session.commit_transaction().await {
                Ok(()) => return Ok(written),
                // Retry the commit while its outcome is unknown and the
                // server is there; a server that is gone ends it (the
                // redelivery finds the marker if the commit did land).
                Err(e)
                    if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
                        && !is_unavailable(&e)
                        && started.elapsed() < Duration::from_secs(10) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn insert_markers(
        &self,
        keys: &[String],
        session: Option<&mut ClientSession>,
    ) -> Result<(), WriteError> {
        match self.insert_markers_raw(keys, session).await {
            Ok(()) => Ok(()),
            // At-least-once path: a marker that exists already is fine.
            Err(e) if is_duplicate(&e) => Ok(()),
            Err(e) => Err(classify(&e)),
        }
    }

    async fn insert_markers_raw(
        &self,
        keys: &[String],
        session: Option<&mut ClientSession>,
    ) -> Result<(), MongoError> {
        if keys.is_empty() {
            return Ok(());
        }
        let now = bson::DateTime::now();
        let docs: Vec<Document> = keys.iter().map(|k| doc! { "_id": k, "at": now }).collect();
        let applied = self.applied();
        let action = applied.insert_many(docs).ordered(false);
        match session {
            Some(s) => action.session(s).await.map(|_| ()),
            None => action.await.map(|_| ()),
        }
    }

    async fn bulk(
        &self,
        models: &[WriteModel],
        session: Option<&mut ClientSession>,
    ) -> Result<(), WriteError> {
        if models.is_empty() {
            return Ok(());
        }
        let action = self.client.bulk_write(models.to_vec()).ordered(false);
        match session {
            Some(s) => action.session(s).await,
            None => action.await,
        }
        .map(|_| ())
        .map_err(|e| classify(&e))
    }

    /// Every write of `a`: its cumulative series resolved against their
    /// stored points, read in `session` (the transaction) if given.
    async fn plan(
        &self,
        a: &Aggregates,
        session: Option<&mut ClientSession>,
    ) -> Result<Vec<WriteModel>, MongoError> {
        let stored = self.stored_points(a, session).await?;
        Ok(self.resolved_models(a, &a.resolve(&stored)))
    }

    /// One upsert per bucket, deltas and increases, and one replacement
    /// per cumulative series that moved.
    pub fn resolved_models(&self, a: &Aggregates, resolved: &Resolved<'_>) -> Vec<WriteModel> {
        let mut out = self.models_of(a, &resolved.metrics);
        let ns = self
            .db
            .collection::<Document>(METRIC_CUMULATIVE)
            .namespace();
        for (key, series, point) in &resolved.points {
            out.push(WriteModel::ReplaceOne(
                ReplaceOneModel::builder()
                    .namespace(ns.clone())
                    .filter(doc! { "_id": key.state_id() })
                    .replacement(point_document(key, series, point))
                    .upsert(true)
                    .build(),
            ));
        }
        out
    }

    /// The stored last points of the batch's cumulative series, by `_id`:
    /// one `find`, in one round trip (the first batch holds them all).
    async fn stored_points(
        &self,
        a: &Aggregates,
        session: Option<&mut ClientSession>,
    ) -> Result<HashMap<String, Point>, MongoError> {
        if a.cumulative.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<String> = a.cumulative.keys().map(SeriesKey::state_id).collect();
        let points = self.db.collection::<Document>(METRIC_CUMULATIVE);
        let find = points
            .find(doc! { "_id": { "$in": &ids } })
            .batch_size(u32::try_from(ids.len()).unwrap_or(u32::MAX));
        let docs: Vec<Document> = match session {
            Some(s) => find.session(&mut *s).await?.stream(s).try_collect().await?,
            None => find.await?.try_collect().await?,
        };
        Ok(docs
            .iter()
            .filter_map(|d| {
                let id = d.get_str("_id").ok()?.to_owned();
                match stored_point(d) {
                    Some(p) => Some((id, p)),
                    None => {
                        // Only the worker writes these; should one be
                        // unreadable, the series starts over (its next
                        // point counts whole) rather than stalling.
                        tracing::warn!(id, "unreadable cumulative point; the series starts over");
                        None
                    }
                }
            })
            .collect())
    }

    /// One upsert per bucket (cumulative series left out: they need their
    /// stored points, see [`Self::write`]).
    pub fn models(&self, a: &Aggregates) -> Vec<WriteModel> {
        self.models_of(a, &a.metrics)
    }

    fn models_of(
        &self,
        a: &Aggregates,
        metrics: &HashMap<MetricKey, MetricStats>,
    ) -> Vec<WriteModel> {
        let mut out = Vec::with_capacity(
            a.transactions.len() + metrics.len() + 2 * a.errors.len() + a.cumulative.len(),
        );
        let tx = self.db.collection::<Document>(TX_MINUTES).namespace();
        for (k, s) in &a.transactions {
            let minute = k.minute.index();
            let id = bucket_id(&[
                &k.account,
                &k.app,
                &k.environment,
                &k.namespace,
                &k.action,
                &minute.to_string(),
            ]);
            let mut inc = doc! {
                "count": s.count as i64,
                "errors": s.errors as i64,
                "duration_sum": s.duration_sum,
            };
            for (b, n) in &s.histogram {
                inc.insert(format!("hist.{b}"), *n as i64);
            }
            for (c, n) in &s.status {
                inc.insert(format!("status.{c}"), *n as i64);
            }
            let update = doc! {
                "$setOnInsert": {
                    "account": &k.account, "app": &k.app, "environment": &k.environment,
                    "namespace": &k.namespace, "action": &k.action,
                    "minute": minute, "at": bson::DateTime::from_millis(k.minute.start_ms()),
                },
                "$inc": inc,
                "$min": { "duration_min": s.duration_min },
                "$max": { "duration_max": s.duration_max },
            };
            out.push(upsert(&tx, id, UpdateModifications::Document(update)));
        }

        let mc = self.db.collection::<Document>(METRIC_MINUTES).namespace();
        for (k, s) in metrics {
            let minute = k.minute.index();
            let id = bucket_id(&[
                &k.account,
                &k.app,
                &k.environment,
                &k.series,
                &minute.to_string(),
            ]);
            let tags = tag_pairs(&s.tags);
            let identity = doc! {
                "account": &k.account, "app": &k.app, "environment": &k.environment,
                "series": &k.series, "kind": s.kind.as_str(), "name": &s.name, "tags": tags,
                "minute": minute, "at": bson::DateTime::from_millis(k.minute.start_ms()),
            };
            let update = match s.last {
                // Gauges: a pipeline update, so "latest timestamp wins" is
                // decided by the server against what is stored.
                Some((ts, value)) => UpdateModifications::Pipeline(vec![doc! { "$set": {
                    // $literal: user strings must never be read as field paths.
                    "account": { "$ifNull": ["$account", { "$literal": &k.account }] },
                    "app": { "$ifNull": ["$app", { "$literal": &k.app }] },
                    "environment": { "$ifNull": ["$environment", { "$literal": &k.environment }] },
                    "series": { "$ifNull": ["$series", { "$literal": &k.series }] },
                    "kind": "gauge",
                    "name": { "$ifNull": ["$name", { "$literal": &s.name }] },
                    "tags": { "$ifNull": ["$tags", { "$literal": tag_pairs(&s.tags) }] },
                    "minute": minute,
                    "at": bson::DateTime::from_millis(k.minute.start_ms()),
                    "count": { "$add": [{ "$ifNull": ["$count", 0_i64] }, s.count as i64] },
                    "last": { "$cond": [
                        { "$gte": [ts, { "$ifNull": ["$last_ts", i64::MIN] }] },
                        value,
                        "$last",
                    ]},
                    "last_ts": { "$max": [{ "$ifNull": ["$last_ts", ts] }, ts] },
                }}]),
                None => {
                    let mut inc = doc! { "count": s.count as i64, "sum": s.sum };
                    for (b, n) in &s.histogram {
                        inc.insert(format!("hist.{b}"), *n as i64);
                    }
                    let mut update = doc! { "$setOnInsert": identity, "$inc": inc };
                    if !s.histogram.is_empty() {
                        update.insert("$min", doc! { "min": s.min });
                        update.insert("$max", doc! { "max": s.max });
                    }
                    UpdateModifications::Document(update)
                }
            };
            out.push(upsert(&mc, id, update));
        }

        let em = self.db.collection::<Document>(ERROR_MINUTES).namespace();
        let eg = self.db.collection::<Document>(ERROR_GROUPS).namespace();
        for (k, s) in &a.errors {
            for (minute, n) in &s.per_minute {
                let m = minute.index();
                let id = bucket_id(&[
                    &k.account,
                    &k.app,
                    &k.environment,
                    &k.fingerprint,
                    &m.to_string(),
                ]);
                let update = doc! {
                    "$setOnInsert": {
                        "account": &k.account, "app": &k.app, "environment": &k.environment,
                        "fingerprint": &k.fingerprint, "class": &s.class,
                        "minute": m, "at": bson::DateTime::from_millis(minute.start_ms()),
                    },
                    "$inc": { "count": *n as i64 },
                };
                out.push(upsert(&em, id, UpdateModifications::Document(update)));
            }
            let total: u64 = s.per_minute.values().sum();
            let sample = bson::to_bson(&s.latest).unwrap_or(Bson::Null);
            let id = bucket_id(&[&k.account, &k.app, &k.environment, &k.fingerprint]);
            let first = bson::DateTime::from_millis(s.first_seen_ms);
            let last = bson::DateTime::from_millis(s.last_seen_ms);
            let update = vec![doc! { "$set": {
                "account": { "$ifNull": ["$account", { "$literal": &k.account }] },
                "app": { "$ifNull": ["$app", { "$literal": &k.app }] },
                "environment": { "$ifNull": ["$environment", { "$literal": &k.environment }] },
                "fingerprint": { "$ifNull": ["$fingerprint", { "$literal": &k.fingerprint }] },
                "class": { "$ifNull": ["$class", { "$literal": &s.class }] },
                "action": { "$ifNull": ["$action", { "$literal": s.action.clone().map_or(Bson::Null, Bson::String) }] },
                "count": { "$add": [{ "$ifNull": ["$count", 0_i64] }, total as i64] },
                "first_seen": { "$min": [{ "$ifNull": ["$first_seen", first] }, first] },
                "last_seen": { "$max": [{ "$ifNull": ["$last_seen", last] }, last] },
                "latest": { "$cond": [
                    { "$gte": [last, { "$ifNull": ["$last_seen", bson::DateTime::from_millis(0)] }] },
                    { "$literal": sample },
                    "$latest",
                ]},
                // Retention runs from the last occurrence.
                "at": { "$max": [{ "$ifNull": ["$last_seen", last] }, last] },
            }}];
            out.push(upsert(&eg, id, UpdateModifications::Pipeline(update)));
        }
        out
    }
}

/// Tags as stored: `[{k, v}, …]`, sorted by key. Tag keys are user text,
/// and user text is only ever a value: as field names, `$`-prefixed keys
/// are refused by some MongoDB updates (the rules differ between inserts,
/// updates of existing documents and pipelines), and dotted ones cannot
/// be addressed by path. Pairs are queried with
/// `{tags: {$elemMatch: {k, v}}}`.
fn tag_pairs(tags: &BTreeMap<String, String>) -> Bson {
    Bson::Array(
        tags.iter()
            .map(|(k, v)| Bson::Document(doc! { "k": k, "v": v }))
            .collect(),
    )
}

/// A series' last point as stored. Bucket indexes are field names (digits,
/// never user text), as in the `hist` of the buckets.
fn point_document(key: &SeriesKey, series: &CumulativeSeries, p: &Point) -> Document {
    let buckets: Document = p
        .buckets
        .iter()
        .map(|(b, n)| (b.to_string(), Bson::Int64(*n as i64)))
        .collect();
    let mut d = doc! {
        "account": &key.account, "app": &key.app, "environment": &key.environment,
        "series": &key.series, "kind": series.kind.as_str(), "name": &series.name,
        "start_ms": p.start_ms, "timestamp_ms": p.timestamp_ms,
        "sum": p.sum, "count": p.count as i64, "buckets": buckets,
        // Retention runs from the last point.
        "at": bson::DateTime::from_millis(p.timestamp_ms),
    };
    if let Some(min) = p.min {
        d.insert("min", min);
    }
    if let Some(max) = p.max {
        d.insert("max", max);
    }
    d
}

/// The point [`point_document`] wrote, if it reads as one.
fn stored_point(d: &Document) -> Option<Point> {
    let int = |v: &Bson| v.as_i64().or_else(|| v.as_i32().map(i64::from));
    let float = |v: &Bson| v.as_f64().or_else(|| int(v).map(|i| i as f64));
    let mut buckets = BTreeMap::new();
    for (b, n) in d.get_document("buckets").ok()? {
        buckets.insert(b.parse().ok()?, u64::try_from(int(n)?).ok()?);
    }
    Some(Point {
        start_ms: int(d.get("start_ms")?)?,
        timestamp_ms: int(d.get("timestamp_ms")?)?,
        sum: float(d.get("sum")?)?,
        count: u64::try_from(int(d.get("count")?)?).ok()?,
        min: d.get("min").and_then(float),
        max: d.get("max").and_then(float),
        buckets,
    })
}

fn upsert(ns: &mongodb::Namespace, id: String, update: UpdateModifications) -> WriteModel {
    WriteModel::UpdateOne(
        UpdateOneModel::builder()
            .namespace(ns.clone())
            .filter(doc! { "_id": id })
            .update(update)
            .upsert(true)
            .build(),
    )
}

/// Whether an error is a duplicate-key error.
pub fn is_duplicate(e: &MongoError) -> bool {
    use mongodb::error::WriteFailure;
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .is_some_and(|errs| !errs.is_empty() && errs.iter().all(|w| w.code == 11000)),
        _ => e.to_string().contains("E11000"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inlet_domain::{AccountId, Batch, BatchLimits, now_ms};
    use mongodb::options::ClientOptions;

    /// Every user-controlled string of the batch below carries this.
    const USER: &str = "USER";

    /// A store whose models can be built without a server.
    async fn offline_store() -> AggregateStore {
        let client = Client::with_options(ClientOptions::default()).unwrap();
        AggregateStore::new(client.database("offline"), true)
    }

    fn awkward_batch() -> Batch {
        let now = now_ms();
        let body = serde_json::json!({
            "agent": {"name": "a", "version": "1"},
            "app": "$USER.app", "environment": "production",
            "transactions": [{"action": "$USER.a=b", "namespace": "$USER.ns", "start_ms": now, "duration_ms": 1.0}],
            "metrics": [
                {"kind": "counter", "name": "$USER.c", "value": 1, "timestamp_ms": now,
                 "tags": {"$USER": "$USER", "USER.a.b": "x"}},
                {"kind": "distribution", "name": "$USER.d", "value": 1, "timestamp_ms": now,
                 "tags": {"$USER.k": "$USER.v"}},
                {"kind": "gauge", "name": "$USER.g", "value": 1, "timestamp_ms": now,
                 "tags": {"$USER.k": "$USER.v", "USER=": "=USER"}},
                {"kind": "counter", "name": "$USER.cc", "value": 3, "timestamp_ms": now,
                 "start_ms": now - 1, "tags": {"$USER.k": "$USER.v"}},
                {"kind": "distribution", "name": "$USER.h", "value": 3, "timestamp_ms": now,
                 "start_ms": now - 1, "tags": {"$USER.k": "$USER.v"},
                 "histogram": {"count": 2, "buckets": {"3": 2}}}
            ],
            "errors": [{"class": "$USER.E", "message": "$USER", "action": "$USER.act", "timestamp_ms": now,
                        "backtrace": [{"file": "$USER.rb", "function": "$USER.f", "line": 1}]}]
        });
        Batch::decode(
            &serde_json::to_vec(&body).unwrap(),
            &BatchLimits::default(),
            now,
        )
        .unwrap()
    }

    /// Field names that carry user text, and user strings a pipeline would
    /// read as expressions (outside `$literal`), anywhere in `v`.
    fn misuses(v: &Bson, pipeline: bool, path: &str, out: &mut Vec<String>) {
        match v {
            Bson::Document(d) => {
                for (k, v) in d {
                    let at = format!("{path}/{k}");
                    if k.contains(USER) {
                        out.push(format!("user text as a field name: {at}"));
                    }
                    // Inside `$literal` nothing is an expression.
                    misuses(v, pipeline && k != "$literal", &at, out);
                }
            }
            Bson::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    misuses(v, pipeline, &format!("{path}[{i}]"), out);
                }
            }
            Bson::String(s) if pipeline && s.contains(USER) => {
                out.push(format!(
                    "user text as a pipeline expression: {path} = {s:?}"
                ));
            }
            _ => {}
        }
    }

    /// MongoDB refuses `$`-prefixed field names in updates that match an
    /// existing document, cannot address dotted ones by path, and reads
    /// `$`-prefixed strings in a pipeline as field paths: user text must
    /// only ever be a value, and in a pipeline a `$literal` one.
    #[tokio::test]
    async fn user_strings_are_only_ever_values() {
        let store = offline_store().await;
        let mut aggregates = Aggregates::default();
        aggregates.add(&AccountId::parse("acme").unwrap(), &awkward_batch());
        let models = store.resolved_models(&aggregates, &aggregates.resolve(&HashMap::new()));
        assert_eq!(
            models.len(),
            1 + 5 + 2 + 2,
            "tx, five metrics, error minute and group, two cumulative points"
        );
        let mut found = Vec::new();
        let replacements: Vec<&ReplaceOneModel> = models
            .iter()
            .filter_map(|m| match m {
                WriteModel::ReplaceOne(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(replacements.len(), 2);
        for m in &models {
            let m = match m {
                WriteModel::UpdateOne(m) => m,
                WriteModel::ReplaceOne(_) => continue,
                other => panic!("{other:?}"),
            };
            match &m.update {
                UpdateModifications::Document(d) => {
                    misuses(&Bson::Document(d.clone()), false, "", &mut found);
                }
                UpdateModifications::Pipeline(stages) => {
                    for s in stages {
                        misuses(&Bson::Document(s.clone()), true, "", &mut found);
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        for m in &replacements {
            misuses(
                &Bson::Document(m.replacement.clone()),
                false,
                "",
                &mut found,
            );
        }
        assert!(found.is_empty(), "{}", found.join("\n"));
    }
}
