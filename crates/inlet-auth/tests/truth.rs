//! Only the source of truth rejects, and the sync follows every writer of
//! it: scenarios against real Redis and a real MongoDB-wire server.
//!
//! - a cached or copied rejection is not a verdict (re-activation while
//!   Redis writes fail; another client re-activating in MongoDB);
//! - writes to Redis are revision-guarded (racing admins, a load built from
//!   an older snapshot);
//! - two syncs at once, and flushes, never leave the marker on a generation
//!   that was deleted or is incomplete;
//! - stale-if-error never outlives a revocation;
//! - inserts, updates and deletions made by another client are followed,
//!   by change stream and by polling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Fixture, LookupForTest as _, issuer};
use inlet_auth::key_admin::KeyAdmin;
use inlet_auth::sync::{FollowMode, KeySync, SyncSettings};
use inlet_auth::{
    AuthSettings, Authenticator, Commit, Lookup, Put, RedisStore, SharedStore, SyncMetrics,
};
use inlet_domain::{
    AccountId, AccountState, ApiKey, AuthMode, KeyDigest, KeyId, KeyRecord, KeyState, Verdict,
};
use inlet_testkit::{FaultProxy, wait_for, wait_until};
use mongodb::bson::{Document, doc};
use tokio_util::sync::CancellationToken;

fn accepted(v: &Verdict) -> bool {
    matches!(v, Verdict::Accepted(g) if g.mode == AuthMode::Confirmed)
}

/// An authenticator as `inlet api` builds it (Redis first, MongoDB as the
/// source of truth, default cache TTLs), with its invalidation listener.
async fn instance(f: &Fixture, redis: RedisStore, cancel: &CancellationToken) -> Authenticator {
    let auth = Authenticator::builder(AuthSettings {
        primary_timeout_ms: 500,
        truth_timeout_ms: 2_000,
        ..AuthSettings::default()
    })
    .primary(Arc::new(redis.clone()))
    .source_of_truth(Arc::new(f.mongo.clone()))
    .verifier(common::verifier())
    .build()
    .unwrap();
    let (a, c) = (auth.clone(), cancel.clone());
    tokio::spawn(async move { redis.run_invalidation_listener(&a, c).await });
    assert!(RedisStore::wait_listener_up(&auth, Duration::from_secs(5)).await);
    auth
}

/// A verdict of the source of truth against the key (401/403).
fn rejected(v: &Verdict) -> bool {
    matches!(
        v,
        Verdict::RevokedKey | Verdict::UnknownKey | Verdict::SuspendedAccount
    )
}

/// Polls every instance until each accepts `key` as confirmed (`accept`),
/// or rejects it with a verdict — not a 503, not a provisional 202;
/// returns how long the slowest took.
async fn all_reach(instances: &[Authenticator], key: &ApiKey, accept: bool) -> Duration {
    let started = Instant::now();
    wait_until(
        Duration::from_secs(10),
        "every instance to agree",
        || async {
            for auth in instances {
                let v = auth.decide(Some(key.expose_secret())).await.verdict;
                let reached = if accept { accepted(&v) } else { rejected(&v) };
                if !reached {
                    return false;
                }
            }
            true
        },
    )
    .await;
    started.elapsed()
}

#[tokio::test]
async fn a_reactivated_key_is_accepted_by_every_instance_within_two_seconds_while_redis_writes_fail()
 {
    let f = Fixture::new().await;
    let acme = f.account("acme").await;
    let key = f.key(&acme).await;
    f.sync(FollowMode::Poll).backfill().await.unwrap();
    let cancel = CancellationToken::new();
    let instances = [
        instance(&f, f.redis.clone(), &cancel).await,
        instance(&f, f.redis.clone(), &cancel).await,
    ];
    all_reach(&instances, &key, true).await;

    // Revoked through Inlet: every instance rejects within 2 s.
    f.admin.revoke_key(key.key_id().unwrap()).await.unwrap();
    let took = all_reach(&instances, &key, false).await;
    assert!(took < Duration::from_secs(2), "revocation took {took:?}");

    // Re-activated by an admin whose Redis writes (and invalidations)
    // fail, with no sync running: MongoDB holds it active, Redis still
    // says revoked, every instance holds a cached rejection.
    let proxy = FaultProxy::start(f.redis_addr()).await;
    proxy.cut();
    let blind_admin = KeyAdmin::new(f.mongo.clone()).with_redis(f.redis_via(&proxy));
    blind_admin
        .set_key_state(key.key_id().unwrap(), KeyState::Active)
        .await
        .unwrap();
    assert!(
        matches!(f.redis.lookup_for_test(&key).await, Lookup::Found(r) if r.key_state == KeyState::Revoked),
        "the Redis copy is stale"
    );
    let took = all_reach(&instances, &key, true).await;
    assert!(took < Duration::from_secs(2), "re-activation took {took:?}");
    cancel.cancel();
    f.cleanup().await;
}

#[tokio::test]
async fn a_key_reactivated_in_mongodb_by_another_client_is_accepted_without_a_sync() {
    let f = Fixture::new().await;
    let acme = f.account("acme").await;
    let key = f.key(&acme).await;
    f.admin.revoke_key(key.key_id().unwrap()).await.unwrap();
    f.sync(FollowMode::Poll).backfill().await.unwrap();
    let cancel = CancellationToken::new();
    let instances = [instance(&f, f.redis.clone(), &cancel).await];
    all_reach(&instances, &key, false).await;

    // Another application sets the key active again, straight in MongoDB.
    f.mongo_t
        .db()
        .collection::<Document>("api_keys")
        .update_one(
            doc! { "_id": key.key_id().unwrap().to_string() },
            doc! { "$set": { "state": "active", "updated_at": mongodb::bson::DateTime::now() },
            "$inc": { "revision": 1 } },
        )
        .await
        .unwrap();
    let took = all_reach(&instances, &key, true).await;
    assert!(took < Duration::from_secs(2), "took {took:?}");
    cancel.cancel();
    f.cleanup().await;
}

fn record(id: u64, state: KeyState, revision: u64, updated_at_ms: i64) -> KeyRecord {
    KeyRecord {
        key_id: KeyId::from_u64(id),
        account_id: AccountId::parse("acme").unwrap(),
        key_state: state,
        account_state: AccountState::Active,
        rate_limit: None,
        app: None,
        revision,
        updated_at_ms,
    }
}

async fn stored(redis: &RedisStore, digest: &KeyDigest) -> Option<KeyRecord> {
    match redis.lookup_for_digest(digest).await {
        Lookup::Found(r) => Some(r),
        _ => None,
    }
}

trait DigestLookup {
    async fn lookup_for_digest(&self, digest: &KeyDigest) -> Lookup;
}

impl DigestLookup for RedisStore {
    async fn lookup_for_digest(&self, digest: &KeyDigest) -> Lookup {
        inlet_auth::KeyStore::lookup(self, digest).await.unwrap()
    }
}

#[tokio::test]
async fn redis_record_writes_are_revision_guarded() {
    let f = Fixture::new().await;
    f.sync(FollowMode::Poll).backfill().await.unwrap();
    let digest = KeyDigest::of_secret("revision-guarded-key-0001");
    let newer = record(1, KeyState::Active, 4, 2_000);
    let older = record(1, KeyState::Revoked, 3, 3_000);
    assert_eq!(
        f.redis.put_current(&digest, &newer).await.unwrap(),
        Put::Written(1)
    );
    assert_eq!(
        f.redis.put_current(&digest, &older).await.unwrap(),
        Put::Older,
        "a lower revision never overwrites a higher one"
    );
    assert_eq!(stored(&f.redis, &digest).await, Some(newer.clone()));
    // Equal revision: the later change wins (writers that do not bump it).
    let same_later = record(1, KeyState::Revoked, 4, 2_500);
    assert_eq!(
        f.redis.put_current(&digest, &same_later).await.unwrap(),
        Put::Written(1)
    );
    assert_eq!(stored(&f.redis, &digest).await, Some(same_later));
    f.cleanup().await;
}

#[tokio::test]
async fn racing_admin_commands_never_leave_the_older_state_in_redis() {
    let f = Fixture::new().await;
    let acme = f.account("acme").await;
    let key = f.key(&acme).await;
    f.sync(FollowMode::Poll).backfill().await.unwrap();
    let id = key.key_id().unwrap();
    for round in 0..5 {
        let tasks: Vec<_> = (0..24)
            .map(|i| {
                let admin = f.admin.clone();
                let state = if i % 2 == 0 {
                    KeyState::Revoked
                } else {
                    KeyState::Active
                };
                tokio::spawn(async move { admin.set_key_state(id, state).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let truth = match f.mongo.lookup_for_test(&key).await {
            Lookup::Found(r) => r,
            other => panic!("{other:?}"),
        };
        let copy = stored(&f.redis, &key.digest()).await.unwrap();
        assert_eq!(
            (copy.key_state, copy.revision),
            (truth.key_state, truth.revision),
            "round {round}: Redis kept an older state than MongoDB"
        );
    }
    f.cleanup().await;
}

#[tokio::test]
async fn a_load_from_a_snapshot_older_than_a_change_never_brings_the_older_state_back() {
    let f = Fixture::new().await;
    let acme = f.account("acme").await;
    let key = f.key(&acme).await;
    f.sync(FollowMode::Poll).backfill().await.unwrap();
    // A load reads the key (active, as of now)…
    let snapshot = match f.mongo.lookup_for_test(&key).await {
        Lookup::Found(r) => r,
        other => panic!("{other:?}"),
    };
    let load = f.redis.begin_load().await.unwrap();
    // …the key is revoked while the load is still writing…
    f.admin.revoke_key(key.key_id().unwrap()).await.unwrap();
    // …and the load writes what it read, then commits.
    assert!(
        f.redis
            .write_load(&load, &[(key.digest(), snapshot)])
            .await
            .unwrap()
    );
    assert!(matches!(
        f.redis.commit_load(&load, 1).await.unwrap(),
        Commit::Committed(_)
    ));
    let copy = stored(&f.redis, &key.digest()).await.unwrap();
    assert_eq!(
        copy.key_state,
        KeyState::Revoked,
        "the older snapshot won: {copy:?}"
    );
    f.cleanup().await;
}

#[tokio::test]
async fn a_load_overtaken_by_a_newer_one_or_by_a_flush_never_commits() {
    let f = Fixture::new().await;
    let digest = KeyDigest::of_secret("lease-test-key-000000001");
    let r = record(1, KeyState::Active, 1, 1);

    // Two loads at once: the newer commits, the older is refused.
    let older = f.redis.begin_load().await.unwrap();
    let newer = f.redis.begin_load().await.unwrap();
    assert!(newer.generation > older.generation);
    assert!(
        f.redis
            .write_load(&newer, &[(digest, r.clone())])
            .await
            .unwrap()
    );
    assert!(matches!(
        f.redis.commit_load(&newer, 1).await.unwrap(),
        Commit::Committed(_)
    ));
    f.redis
        .delete_older_generations(newer.generation)
        .await
        .unwrap();
    assert!(
        !f.redis
            .write_load(&older, &[(digest, r.clone())])
            .await
            .unwrap(),
        "the newer commit ended the older load's lease"
    );
    assert_eq!(
        f.redis.commit_load(&older, 1).await.unwrap(),
        Commit::LeaseLost
    );
    assert_eq!(
        f.redis.marker().await.unwrap().unwrap().generation,
        newer.generation
    );

    // A load whose Redis is flushed midway is refused, and generation
    // numbers never go back after the flush.
    let doomed = f.redis.begin_load().await.unwrap();
    f.redis_t.cleanup().await;
    assert_eq!(
        f.redis.commit_load(&doomed, 1).await.unwrap(),
        Commit::LeaseLost
    );
    assert!(f.redis.marker().await.unwrap().is_none());
    let after = f.redis.begin_load().await.unwrap();
    assert!(after.generation > doomed.generation);

    // A load that committed and was then overtaken by a flush and a new
    // load must not delete the generation now in force — even when that
    // one's number is lower (its sync's clock is behind: the counter
    // restarted from it).
    assert!(
        f.redis
            .write_load(&after, &[(digest, r.clone())])
            .await
            .unwrap()
    );
    assert!(matches!(
        f.redis.commit_load(&after, 1).await.unwrap(),
        Commit::Committed(_)
    ));
    f.redis_t.cleanup().await;
    let mut conn = f.redis_t.pool.get().await.unwrap();
    let _: () = deadpool_redis::redis::cmd("SET")
        .arg(format!("{}generation:seq", f.redis_t.prefix))
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let fresh = f.redis.begin_load().await.unwrap();
    assert!(fresh.generation < after.generation);
    assert!(
        f.redis
            .write_load(&fresh, &[(digest, r.clone())])
            .await
            .unwrap()
    );
    assert!(matches!(
        f.redis.commit_load(&fresh, 1).await.unwrap(),
        Commit::Committed(_)
    ));
    f.redis
        .delete_older_generations(after.generation)
        .await
        .unwrap();
    assert_eq!(stored(&f.redis, &digest).await, Some(r));
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_syncs_and_three_flushes_answer_nothing_but_accepted() {
    // A private Redis: FLUSHALL empties it at once, as in production.
    let server = inlet_testkit::RedisServer::start();
    let f = Fixture::on_redis(inlet_testkit::TestRedis::at(&server.url()).await).await;
    let acme = f.account("acme").await;
    // Enough keys that a load takes a while, so flushes can land midway.
    let total = 3_000;
    common::insert_keys(&f, &acme, total).await;
    let keys: Vec<ApiKey> = (0..total)
        .step_by(total / 40)
        .map(|i| ApiKey::parse_format(&format!("bulk-legacy-key-{i:012}")).unwrap())
        .collect();
    let settings = SyncSettings {
        follow: FollowMode::Poll,
        batch_size: 50,
        poll_interval_ms: 100,
        marker_check_ms: 100,
        ..SyncSettings::default()
    };
    let cancel = CancellationToken::new();
    let syncs: Vec<KeySync> = (0..2)
        .map(|_| {
            KeySync::new(
                f.mongo.clone(),
                f.redis.clone(),
                settings.clone(),
                SyncMetrics::unregistered().unwrap(),
            )
        })
        .collect();
    for sync in &syncs {
        let (s, c) = (sync.clone(), cancel.clone());
        tokio::spawn(async move { s.run(c).await });
    }
    for sync in &syncs {
        let mut state = sync.watch_state();
        wait_for(Duration::from_secs(20), "both syncs to follow", || {
            let s = state.borrow_and_update().clone();
            async move { s.is_ready().then_some(()) }
        })
        .await;
    }
    // An API instance that trusts nothing it caches for long and may ask
    // MongoDB to confirm only one rejection a second: a marker left on a
    // deleted or incomplete generation shows as 503s.
    let auth = Authenticator::builder(AuthSettings {
        positive_ttl_s: 1,
        confirm_rate_per_s: 1,
        confirm_burst: 1,
        provisional: false,
        ..AuthSettings::default()
    })
    .primary(Arc::new(f.redis.clone()) as SharedStore)
    .source_of_truth(Arc::new(f.mongo.clone()))
    .verifier(common::verifier())
    .build()
    .unwrap();
    let answers = Arc::new(AtomicU64::new(0));
    let wrong = Arc::new(std::sync::Mutex::new(Vec::new()));
    let pusher = {
        let (auth, keys, answers, wrong, cancel) = (
            auth.clone(),
            keys.clone(),
            answers.clone(),
            wrong.clone(),
            cancel.clone(),
        );
        tokio::spawn(async move {
            while !cancel.is_cancelled() {
                for k in &keys {
                    let v = auth.decide(Some(k.expose_secret())).await.verdict;
                    answers.fetch_add(1, Ordering::Relaxed);
                    if !accepted(&v) {
                        wrong.lock().unwrap().push(v);
                    }
                }
                // Cached answers never yield: leave the syncs their turn.
                tokio::task::yield_now().await;
            }
        })
    };
    let loading = |s: &KeySync| {
        matches!(
            *s.watch_state().borrow(),
            inlet_auth::sync::SyncState::Loading { .. }
        )
    };
    // The first flush hits two followers; each of the others lands while
    // a load (started because of the previous flush) is writing its
    // generation.
    for flush in 0..3 {
        if flush > 0 {
            wait_until(Duration::from_secs(20), "a load in progress", || async {
                syncs.iter().any(loading)
            })
            .await;
        }
        f.redis_t.flush_all_private().await;
    }
    // Both syncs reload; keep deciding meanwhile.
    let before = answers.load(Ordering::Relaxed);
    wait_until(Duration::from_secs(30), "Redis reloaded", || async {
        f.redis.marker().await.ok().flatten().is_some()
            && answers.load(Ordering::Relaxed) > before + 200
    })
    .await;
    wait_until(
        Duration::from_secs(20),
        "both syncs following again",
        || async { syncs.iter().all(|s| s.watch_state().borrow().is_ready()) },
    )
    .await;
    // Every key is in the generation in force.
    wait_until(
        Duration::from_secs(10),
        "every key in the generation in force",
        || async {
            for k in &keys {
                match inlet_auth::KeyStore::lookup(&f.redis, &k.digest()).await {
                    Ok(Lookup::Found(_)) => {}
                    Ok(other) => {
                        panic!("a key is missing from the generation the marker names: {other:?}")
                    }
                    Err(_) => return false,
                }
            }
            true
        },
    )
    .await;
    cancel.cancel();
    pusher.await.unwrap();
    let wrong = wrong.lock().unwrap().clone();
    assert!(
        wrong.is_empty(),
        "{} of {} answers were not 'accepted': {:?}",
        wrong.len(),
        answers.load(Ordering::Relaxed),
        &wrong[..wrong.len().min(5)]
    );
    f.cleanup().await;
}

#[tokio::test]
async fn stale_if_error_never_outlives_a_revocation_made_during_a_redis_outage() {
    let f = Fixture::new().await;
    let acme = f.account("acme").await;
    let key = f.key(&acme).await;
    f.sync(FollowMode::Poll).backfill().await.unwrap();
    let redis_proxy = FaultProxy::start(f.redis_addr()).await;
    let mongo_proxy = FaultProxy::start(f.mongo_addr()).await;
    let redis = f.redis_via(&redis_proxy);
    let auth = Authenticator::builder(AuthSettings {
        primary_timeout_ms: 300,
        truth_timeout_ms: 600,
        ..AuthSettings::default()
    })
    .primary(Arc::new(redis.clone()))
    .source_of_truth(Arc::new(f.mongo_via(&mongo_proxy).await))
    .verifier(common::verifier())
    .build()
    .unwrap();
    // Accepted: remembered for stale-if-error; the readiness probe has seen
    // the generation in force.
    assert!(accepted(
        &auth.decide(Some(key.expose_secret())).await.verdict
    ));
    auth.check_readiness().await;

    // Redis outage; the key is revoked meanwhile (its Redis write fails).
    redis_proxy.cut();
    let blind_admin = KeyAdmin::new(f.mongo.clone()).with_redis(f.redis_via(&redis_proxy));
    blind_admin.revoke_key(key.key_id().unwrap()).await.unwrap();
    // Redis comes back and the sync reloads it: Redis now says revoked. No
    // invalidation message reaches this instance (it runs no listener): its
    // readiness probe sees the new generation. Then Redis and MongoDB fail
    // again, within the stale grace.
    redis_proxy.restore();
    f.sync(FollowMode::Poll).backfill().await.unwrap();
    auth.check_readiness().await;
    redis_proxy.cut();
    mongo_proxy.cut();
    let d = auth.decide(Some(key.expose_secret())).await;
    assert!(
        !accepted(&d.verdict),
        "a revoked key was accepted as confirmed from a stale entry: {d:?}"
    );
    f.cleanup().await;
}

// ------------------------------------------------------------ other writers

/// Another application's writes, with the driver and plain documents.
struct OtherWriter {
    db: mongodb::Database,
}

impl OtherWriter {
    async fn account(&self, id: &str) {
        let now = mongodb::bson::DateTime::now();
        self.db
            .collection::<Document>("accounts")
            .insert_one(doc! { "_id": id, "state": "active", "revision": 1_i64,
            "created_at": now, "updated_at": now })
            .await
            .unwrap();
    }

    /// Inserts a legacy key for `account`; returns the raw key.
    async fn key(&self, account: &str) -> ApiKey {
        let raw = format!("other-writer-{}", inlet_testkit::unique_id());
        let key = ApiKey::parse_format(&raw).unwrap();
        let now = mongodb::bson::DateTime::now();
        self.db
            .collection::<Document>("api_keys")
            .insert_one(doc! {
                "_id": KeyId::random().to_string(), "digest": key.digest().to_hex(),
                "account_id": account, "state": "active", "legacy": true,
                "revision": 1_i64, "created_at": now, "updated_at": now,
            })
            .await
            .unwrap();
        key
    }

    async fn delete_key(&self, key: &ApiKey) {
        let n = self
            .db
            .collection::<Document>("api_keys")
            .delete_one(doc! { "digest": key.digest().to_hex() })
            .await
            .unwrap();
        assert_eq!(n.deleted_count, 1);
    }

    async fn delete_account(&self, id: &str) {
        let n = self
            .db
            .collection::<Document>("accounts")
            .delete_one(doc! { "_id": id })
            .await
            .unwrap();
        assert_eq!(n.deleted_count, 1);
    }
}

async fn other_writers_are_followed(mode: FollowMode) {
    let f = Fixture::new().await;
    let poll_interval = Duration::from_millis(1_000);
    let sync = KeySync::new(
        f.mongo.clone(),
        f.redis.clone(),
        SyncSettings {
            follow: mode,
            poll_interval_ms: poll_interval.as_millis() as u64,
            ..SyncSettings::default()
        },
        SyncMetrics::unregistered().unwrap(),
    );
    let cancel = CancellationToken::new();
    let mut state = sync.watch_state();
    {
        let (s, c) = (sync.clone(), cancel.clone());
        tokio::spawn(async move { s.run(c).await });
    }
    wait_for(Duration::from_secs(20), "the sync to follow", || {
        let s = state.borrow_and_update().clone();
        async move { s.is_ready().then_some(()) }
    })
    .await;
    let instances = [instance(&f, f.redis.clone(), &cancel).await];
    let other = OtherWriter { db: f.mongo_t.db() };

    // A new account and key: accepted within 2 s, and carried to Redis.
    other.account("elsewhere").await;
    let key = other.key("elsewhere").await;
    let took = all_reach(&instances, &key, true).await;
    assert!(took < Duration::from_secs(2), "new key took {took:?}");
    wait_until(Duration::from_secs(5), "the new key in Redis", || async {
        matches!(f.redis.lookup_for_test(&key).await, Lookup::Found(_))
    })
    .await;
    let doomed = other.key("elsewhere").await;
    all_reach(&instances, &doomed, true).await;

    // Deleted key: rejected within 2 poll intervals.
    other.delete_key(&doomed).await;
    let started = Instant::now();
    wait_until(
        Duration::from_secs(10),
        "the deleted key rejected",
        || async {
            instances[0]
                .decide(Some(doomed.expose_secret()))
                .await
                .verdict
                == Verdict::UnknownKey
        },
    )
    .await;
    let took = started.elapsed();
    assert!(took < 2 * poll_interval, "deleted key took {took:?}");

    // Deleted account: its key is rejected within 2 poll intervals, as
    // unknown — and MongoDB, asked directly, agrees (the worker's re-check
    // uses that lookup).
    other.delete_account("elsewhere").await;
    let started = Instant::now();
    wait_until(
        Duration::from_secs(10),
        "the orphaned key rejected",
        || async {
            instances[0].decide(Some(key.expose_secret())).await.verdict == Verdict::UnknownKey
        },
    )
    .await;
    let took = started.elapsed();
    assert!(took < 2 * poll_interval, "deleted account took {took:?}");
    assert_eq!(f.mongo.lookup_for_test(&key).await, Lookup::Absent);
    assert_eq!(f.redis.lookup_for_test(&key).await, Lookup::Absent);
    cancel.cancel();
    f.cleanup().await;
}

#[tokio::test]
async fn other_writers_are_followed_by_change_stream() {
    other_writers_are_followed(FollowMode::Stream).await;
}

#[tokio::test]
async fn other_writers_are_followed_by_polling() {
    other_writers_are_followed(FollowMode::Poll).await;
}

#[tokio::test]
async fn a_key_created_by_inlet_and_revoked_by_another_writer_is_rejected() {
    // The issuer is Inlet's; the revocation comes from elsewhere.
    let f = Fixture::new().await;
    let acme = f.account("acme").await;
    let key = KeyAdmin::new(f.mongo.clone())
        .create_key(&issuer(), &acme, None)
        .await
        .unwrap()
        .0;
    let sync = f.sync(FollowMode::Stream);
    let cancel = CancellationToken::new();
    let mut state = sync.watch_state();
    {
        let (s, c) = (sync.clone(), cancel.clone());
        tokio::spawn(async move { s.run(c).await });
    }
    wait_for(Duration::from_secs(20), "the sync to follow", || {
        let s = state.borrow_and_update().clone();
        async move { s.is_ready().then_some(()) }
    })
    .await;
    let instances = [instance(&f, f.redis.clone(), &cancel).await];
    all_reach(&instances, &key, true).await;
    f.mongo_t
        .db()
        .collection::<Document>("api_keys")
        .update_one(
            doc! { "_id": key.key_id().unwrap().to_string() },
            doc! { "$set": { "state": "revoked", "updated_at": mongodb::bson::DateTime::now() },
            "$inc": { "revision": 1 } },
        )
        .await
        .unwrap();
    let took = all_reach(&instances, &key, false).await;
    assert!(took < Duration::from_secs(2), "took {took:?}");
    cancel.cancel();
    f.cleanup().await;
}
