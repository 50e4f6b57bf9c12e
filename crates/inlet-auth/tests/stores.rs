//! The auth stack against real Redis and a real MongoDB-wire server
//! (SecantusDB in tests): stores, verdict paths, coalescing, revocation,
//! key sync and migrations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    Fixture, LookupForTest as _, Scripted, insert_keys, issuer, migrations, redis_settings,
};
use futures::TryStreamExt as _;
use inlet_auth::key_admin::{KeyAdmin, LegacyKey};
use inlet_auth::sync::{FollowMode, KeySync, SyncSettings};
use inlet_auth::{Lookup, MongoStore, RedisStore, Source, SyncMetrics};
use inlet_domain::{AccountState, ApiKey, AuthMode, KeyError, UndecidableReason, Verdict};
use inlet_migrate::Migrator;
use inlet_testkit::{FaultProxy, TestMongo, wait_for, wait_until};
use mongodb::bson::doc;
use tokio_util::sync::CancellationToken;

fn accepted(v: &Verdict) -> bool {
    matches!(v, Verdict::Accepted(_))
}

#[tokio::test]
async fn migrations_run_once() {
    let m = TestMongo::new().await;
    let migrator = Migrator::new(m.db(), migrations()).unwrap();
    let first = migrator.run().await.unwrap();
    assert!(!first.is_empty());
    let names: Vec<String> = m.db().list_collection_names().await.unwrap();
    assert!(names.contains(&"api_keys".to_owned()) && names.contains(&"accounts".to_owned()));
    let indexes: Vec<String> = m
        .db()
        .collection::<mongodb::bson::Document>("api_keys")
        .list_index_names()
        .await
        .unwrap();
    assert!(indexes.contains(&"digest_unique".to_owned()), "{indexes:?}");
    let second = migrator.run().await.unwrap();
    assert!(second.is_empty(), "second run changes nothing: {second:?}");
    assert!(
        migrator
            .status()
            .await
            .unwrap()
            .iter()
            .all(|s| s.applied_at_ms.is_some() && s.unchanged)
    );
    m.cleanup().await;
}

#[tokio::test]
async fn unique_digest_is_enforced() {
    let f = Fixture::new().await;
    let acme = f.account("acme").await;
    let line = LegacyKey::parse_line("acme,3f2504e0-4f89-11d3-9a0c-0305e82c3301").unwrap();
    let r = f
        .admin
        .import_legacy(std::slice::from_ref(&line))
        .await
        .unwrap();
    assert_eq!((r.created, r.existing), (1, 0));
    let r = f.admin.import_legacy(&[line]).await.unwrap();
    assert_eq!((r.created, r.existing), (0, 1), "re-import is a no-op");
    assert_eq!(f.admin.list_keys(Some(&acme)).await.unwrap().len(), 1);
    f.cleanup().await;
}

#[tokio::test]
async fn every_verdict_path_with_real_stores() {
    let f = Fixture::new().await;
    let acme = f.account("acme").await;
    let key = f.key(&acme).await;
    let revoked = f.key(&acme).await;
    f.admin.revoke_key(revoked.key_id().unwrap()).await.unwrap();
    let lazy = f.account("lazy").await;
    let suspended_key = f.key(&lazy).await;
    f.admin
        .set_account_state(&lazy, AccountState::Suspended)
        .await
        .unwrap();
    f.sync(FollowMode::Poll).backfill().await.unwrap();

    let redis = Scripted::new("redis", Arc::new(f.redis.clone()));
    let mongo = Scripted::new("mongo", Arc::new(f.mongo.clone()));
    let auth = f.auth(redis.clone(), Some(mongo.clone()));

    // Redis accept, then cached accept.
    let d = auth.decide(Some(key.expose_secret())).await;
    assert!(
        accepted(&d.verdict) && d.source == Source::Store("redis"),
        "{d:?}"
    );
    let d = auth.decide(Some(key.expose_secret())).await;
    assert!(accepted(&d.verdict) && d.source == Source::Cache);
    assert_eq!(mongo.calls(), 0, "acceptances are decided by Redis");
    // Revoked and suspended: Redis says so, MongoDB decides.
    let d = auth.decide(Some(revoked.expose_secret())).await;
    assert_eq!(
        (d.verdict, d.source),
        (Verdict::RevokedKey, Source::Store("mongo"))
    );
    let d = auth.decide(Some(suspended_key.expose_secret())).await;
    assert_eq!(
        (d.verdict, d.source),
        (Verdict::SuspendedAccount, Source::Store("mongo"))
    );
    assert_eq!(mongo.calls(), 2, "each rejection confirmed once");

    // Sync lag: a key only MongoDB has yet (written without Redis).
    let fresh = KeyAdmin::new(f.mongo.clone())
        .create_key(&issuer(), &acme, None)
        .await
        .unwrap()
        .0;
    let d = auth.decide(Some(fresh.expose_secret())).await;
    assert!(
        accepted(&d.verdict) && d.source == Source::Store("mongo"),
        "{d:?}"
    );

    // Unknown: Redis absent and MongoDB confirms.
    let d = auth.decide(Some(issuer().issue().expose_secret())).await;
    assert_eq!(
        (d.verdict, d.source),
        (Verdict::UnknownKey, Source::Store("mongo"))
    );

    // Malformed: no store call at all.
    let (r0, m0) = (redis.calls(), mongo.calls());
    let d = auth.decide(Some("inlet_AAAA")).await;
    assert_eq!(d.verdict, Verdict::Malformed(KeyError::Length));
    assert_eq!((redis.calls(), mongo.calls()), (r0, m0));
    f.cleanup().await;
}

#[tokio::test]
async fn empty_redis_is_not_populated_and_mongo_decides() {
    let f = Fixture::new().await;
    let acme = f.account("acme").await;
    let key = f.key(&acme).await;
    assert_eq!(f.redis.lookup_for_test(&key).await, Lookup::NotLoaded);
    let auth = f.auth(Arc::new(f.redis.clone()), Some(Arc::new(f.mongo.clone())));
    let d = auth.decide(Some(key.expose_secret())).await;
    assert!(
        accepted(&d.verdict) && d.source == Source::Store("mongo"),
        "{d:?}"
    );
    let d = auth.decide(Some(issuer().issue().expose_secret())).await;
    assert_eq!(
        d.verdict,
        Verdict::UnknownKey,
        "unknown only on MongoDB's word"
    );
    assert_eq!(d.source, Source::Store("mongo"));
    let r = auth.check_readiness().await;
    assert!(r.can_decide, "fallback can decide: {}", r.describe());

    // Without the fallback: never unknown, and not ready.
    let alone = f.auth(Arc::new(f.redis.clone()), None);
    let legacy = ApiKey::parse_format("3f2504e0-4f89-11d3-9a0c-0305e82c3301").unwrap();
    assert_eq!(
        alone.decide(Some(legacy.expose_secret())).await.verdict,
        Verdict::Undecidable(UndecidableReason::NotPopulated)
    );
    let d = alone.decide(Some(key.expose_secret())).await;
    assert!(
        matches!(d.verdict, Verdict::Accepted(ref g) if g.mode == AuthMode::Provisional),
        "{d:?}"
    );
    assert!(!alone.check_readiness().await.can_decide);
    f.cleanup().await;
}

#[tokio::test]
async fn unreachable_redis_falls_back_and_both_down_is_undecidable() {
    let f = Fixture::new().await;
    let acme = f.account("acme").await;
    let key = f.key(&acme).await;
    let seen = f.key(&acme).await;
    f.sync(FollowMode::Poll).backfill().await.unwrap();

    let redis_addr = f
        .redis_t
        .url
        .trim_start_matches("redis://")
        .parse()
        .unwrap();
    let redis_proxy = FaultProxy::start(redis_addr).await;
    let mongo_addr = f
        .mongo_t
        .url
        .trim_start_matches("mongodb://")
        .split(['/', '?'])
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mongo_proxy = FaultProxy::start(mongo_addr).await;
    let redis = RedisStore::new(&redis_settings(
        &format!("redis://{}", redis_proxy.addr()),
        f.redis.prefix(),
    ))
    .unwrap();
    let mongo = MongoStore::connect(&inlet_auth::MongoSettings {
        url: format!(
            "mongodb://{}/?directConnection=true&retryWrites=false",
            mongo_proxy.addr()
        ),
        database: f.mongo_t.db_name.clone(),
        server_selection_timeout_ms: 500,
        connect_timeout_ms: 500,
        ..inlet_auth::MongoSettings::default()
    })
    .await
    .unwrap();
    let auth = f.auth(Arc::new(redis), Some(Arc::new(mongo)));
    assert!(accepted(
        &auth.decide(Some(seen.expose_secret())).await.verdict
    ));

    redis_proxy.cut();
    auth.invalidate_all();
    let d = auth.decide(Some(key.expose_secret())).await;
    assert!(
        accepted(&d.verdict) && d.source == Source::Store("mongo"),
        "{d:?}"
    );
    let d = auth.decide(Some(issuer().issue().expose_secret())).await;
    assert_eq!(d.verdict, Verdict::UnknownKey);

    mongo_proxy.cut();
    auth.invalidate_all();
    let legacy = ApiKey::parse_format("3f2504e0-4f89-11d3-9a0c-0305e82c3301").unwrap();
    let d = auth.decide(Some(legacy.expose_secret())).await;
    assert!(matches!(d.verdict, Verdict::Undecidable(_)), "{d:?}");
    let d = auth.decide(Some(issuer().issue().expose_secret())).await;
    assert!(
        matches!(d.verdict, Verdict::Accepted(ref g) if g.mode == AuthMode::Provisional),
        "{d:?}"
    );
    let d = auth.decide(Some(seen.expose_secret())).await;
    assert_eq!(d.source, Source::Stale, "accepted within the grace: {d:?}");
    assert!(accepted(&d.verdict));
    assert!(!auth.check_readiness().await.can_decide);

    redis_proxy.restore();
    wait_until(Duration::from_secs(10), "Redis decides again", || async {
        auth.invalidate_all();
        auth.decide(Some(key.expose_secret())).await.source == Source::Store("redis")
    })
    .await;
    f.cleanup().await;
}

#[tokio::test]
async fn concurrent_lookups_of_one_digest_make_one_redis_call() {
    let f = Fixture::new().await;
    let acme = f.account("acme").await;
    let key = f.key(&acme).await;
    f.sync(FollowMode::Poll).backfill().await.unwrap();
    let redis = Scripted::new("redis", Arc::new(f.redis.clone()));
    redis.set_delay(Duration::from_millis(50));
    let auth = f.auth(redis.clone(), Some(Arc::new(f.mongo.clone())));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let auth = auth.clone();
            let raw = key.expose_secret().to_owned();
            tokio::spawn(async move { auth.decide(Some(&raw)).await.verdict })
        })
        .collect();
    for t in tasks {
        assert!(accepted(&t.await.unwrap()));
    }
    assert_eq!(redis.calls(), 1);
    f.cleanup().await;
}

#[tokio::test]
async fn revocation_reaches_a_running_authenticator_within_two_seconds() {
    let f = Fixture::new().await;
    let acme = f.account("acme").await;
    let key = f.key(&acme).await;
    f.sync(FollowMode::Poll).backfill().await.unwrap();
    let auth = f.auth(Arc::new(f.redis.clone()), Some(Arc::new(f.mongo.clone())));
    let cancel = CancellationToken::new();
    {
        let auth = auth.clone();
        let redis = f.redis.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move { redis.run_invalidation_listener(&auth, cancel).await });
    }
    assert!(RedisStore::wait_listener_up(&auth, Duration::from_secs(5)).await);
    assert!(accepted(
        &auth.decide(Some(key.expose_secret())).await.verdict
    ));
    assert_eq!(
        auth.decide(Some(key.expose_secret())).await.source,
        Source::Cache
    );

    let revoked_at = Instant::now();
    f.admin.revoke_key(key.key_id().unwrap()).await.unwrap();
    wait_until(Duration::from_secs(2), "revoked key rejected", || async {
        auth.decide(Some(key.expose_secret())).await.verdict == Verdict::RevokedKey
    })
    .await;
    let took = revoked_at.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?}");
    cancel.cancel();
    f.cleanup().await;
}

#[tokio::test]
/// A load of many keys (30k by default: inserting them into SecantusDB is
/// what takes the time; `INLET_TEST_SYNC_KEYS` sets another count, and
/// `scripts/bench` times a million) flips the marker once, at the end.
async fn sync_loads_many_keys_and_flips_the_marker_only_at_the_end() {
    let f = Fixture::new().await;
    let acme = f.account("acme").await;
    let keys: usize = std::env::var("INLET_TEST_SYNC_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let t = Instant::now();
    insert_keys(&f, &acme, keys).await;
    let inserted = t.elapsed();
    let t = Instant::now();
    let first = f.sync(FollowMode::Poll).backfill().await.unwrap();
    assert_eq!(first.count, keys as u64);
    eprintln!(
        "{keys} keys: inserted into MongoDB in {inserted:?}, loaded into Redis in {:?}",
        t.elapsed()
    );

    // A second load: while it runs, the marker stays on the first
    // generation; it flips once, at the end.
    let sync = f.sync(FollowMode::Poll);
    let load = tokio::spawn(async move { sync.backfill().await });
    let samples: Vec<ApiKey> = [0, keys / 3, keys / 2, 2 * keys / 3, keys - 1]
        .iter()
        .map(|i| ApiKey::parse_format(&format!("bulk-legacy-key-{i:012}")).unwrap())
        .collect();
    let mut observed = Vec::new();
    // Keys missing right after the marker moved: a flip before the load
    // finished would show here.
    let mut missing_at_flip = None;
    while !load.is_finished() {
        let g = f.redis.marker().await.unwrap().unwrap().generation;
        observed.push(g);
        if g != first.generation && missing_at_flip.is_none() {
            let mut missing = 0;
            for k in &samples {
                if !matches!(f.redis.lookup_for_test(k).await, Lookup::Found(_)) {
                    missing += 1;
                }
            }
            missing_at_flip = Some(missing);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        matches!(missing_at_flip, None | Some(0)),
        "the marker moved before every key was written: {missing_at_flip:?} of {} samples missing",
        samples.len()
    );
    let second = load.await.unwrap().unwrap();
    // The marker shows the first generation, then (once) the second:
    // never anything in between, never back.
    let flip = observed
        .iter()
        .position(|&g| g != first.generation)
        .unwrap_or(observed.len());
    assert!(flip > 0, "the load took more than one observation");
    assert!(
        observed[flip..].iter().all(|&g| g == second.generation),
        "marker moved to something other than the new generation: {observed:?}"
    );
    assert_eq!(
        f.redis.marker().await.unwrap().unwrap().generation,
        second.generation
    );
    assert_eq!(second.count, keys as u64);
    let sample = ApiKey::parse_format(&format!("bulk-legacy-key-{:012}", keys - 1)).unwrap();
    assert!(matches!(
        f.redis.lookup_for_test(&sample).await,
        Lookup::Found(_)
    ));
    f.cleanup().await;
}

#[tokio::test]
async fn a_sync_killed_midway_leaves_the_previous_generation_in_force() {
    let f = Fixture::new().await;
    let acme = f.account("acme").await;
    insert_keys(&f, &acme, 20_000).await;
    let first = f.sync(FollowMode::Poll).backfill().await.unwrap();

    let sync = KeySync::new(
        f.mongo.clone(),
        f.redis.clone(),
        SyncSettings {
            batch_size: 100,
            ..SyncSettings::default()
        },
        SyncMetrics::unregistered().unwrap(),
    );
    let mut state = sync.watch_state();
    let load = tokio::spawn(async move { sync.backfill().await });
    // Kill it once it is writing the new generation.
    wait_for(Duration::from_secs(20), "the second load to start", || {
        let s = state.borrow_and_update().clone();
        async move { matches!(s, inlet_auth::sync::SyncState::Loading { .. }).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    load.abort();
    let _ = load.await;

    let marker = f.redis.marker().await.unwrap().unwrap();
    assert_eq!(
        marker.generation, first.generation,
        "previous generation still in force"
    );
    let sample = ApiKey::parse_format(&format!("bulk-legacy-key-{:012}", 19_999)).unwrap();
    assert!(matches!(
        f.redis.lookup_for_test(&sample).await,
        Lookup::Found(_)
    ));

    // The next load completes and cleans up the partial generation.
    let third = f.sync(FollowMode::Poll).backfill().await.unwrap();
    assert!(third.generation > first.generation + 1);
    f.cleanup().await;
}

async fn follow_mode_picks_up_new_keys(mode: FollowMode) {
    let f = Fixture::new().await;
    let acme = f.account("acme").await;
    let sync = f.sync(mode);
    let mut state = sync.watch_state();
    let cancel = CancellationToken::new();
    let runner = {
        let cancel = cancel.clone();
        tokio::spawn(async move { sync.run(cancel).await })
    };
    wait_for(Duration::from_secs(20), "the sync to follow", || {
        let s = state.borrow_and_update().clone();
        async move { s.is_ready().then_some(()) }
    })
    .await;
    // Created in MongoDB only: the sync must carry it to Redis.
    let key = KeyAdmin::new(f.mongo.clone())
        .create_key(&issuer(), &acme, None)
        .await
        .unwrap()
        .0;
    wait_until(Duration::from_secs(10), "the new key in Redis", || async {
        matches!(f.redis.lookup_for_test(&key).await, Lookup::Found(_))
    })
    .await;
    // A revocation made in MongoDB only also arrives.
    KeyAdmin::new(f.mongo.clone())
        .revoke_key(key.key_id().unwrap())
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), "the revocation in Redis", || async {
        matches!(f.redis.lookup_for_test(&key).await, Lookup::Found(r) if r.key_state == inlet_domain::KeyState::Revoked)
    })
    .await;
    cancel.cancel();
    runner.await.unwrap();
    f.cleanup().await;
}

#[tokio::test]
async fn follow_by_change_stream_picks_up_new_keys() {
    follow_mode_picks_up_new_keys(FollowMode::Stream).await;
}

#[tokio::test]
async fn follow_by_polling_picks_up_new_keys() {
    follow_mode_picks_up_new_keys(FollowMode::Poll).await;
}

#[tokio::test]
async fn mongo_store_joins_account_state() {
    let f = Fixture::new().await;
    let acme = f.account("acme").await;
    let key = f.key(&acme).await;
    let Lookup::Found(r) = f.mongo.lookup_for_test(&key).await else {
        panic!()
    };
    assert_eq!(r.account_state, AccountState::Active);
    f.admin
        .set_account_state(&acme, AccountState::Suspended)
        .await
        .unwrap();
    let Lookup::Found(r) = f.mongo.lookup_for_test(&key).await else {
        panic!()
    };
    assert_eq!(r.account_state, AccountState::Suspended);
    let n = f
        .mongo
        .keys()
        .find(doc! {})
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .len();
    assert_eq!(n, 1);
    assert!(f.mongo.lookup_for_test(&issuer().issue()).await == Lookup::Absent);
    f.cleanup().await;
}

#[tokio::test]
async fn a_flushed_redis_is_reloaded_by_the_follower() {
    let f = Fixture::new().await;
    let acme = f.account("acme").await;
    let key = f.key(&acme).await;
    let metrics = SyncMetrics::unregistered().unwrap();
    let completed = metrics.backfills.with_label_values(&["completed"]);
    let sync = KeySync::new(
        f.mongo.clone(),
        f.redis.clone(),
        SyncSettings {
            follow: FollowMode::Poll,
            poll_interval_ms: 100,
            marker_check_ms: 100,
            ..SyncSettings::default()
        },
        metrics.clone(),
    );
    let mut state = sync.watch_state();
    let cancel = CancellationToken::new();
    let runner = {
        let cancel = cancel.clone();
        tokio::spawn(async move { sync.run(cancel).await })
    };
    wait_for(Duration::from_secs(20), "the sync to follow", || {
        let s = state.borrow_and_update().clone();
        async move { s.is_ready().then_some(()) }
    })
    .await;
    let loads_before = completed.get();
    assert_eq!(loads_before, 1, "one backfill before the flush");
    // FLUSH of this test's keys, marker included. The follower notices the
    // missing marker within `marker_check_ms`, so the key may already be back
    // by the time we look: what proves the reload is a second completed
    // backfill, followed by the key being found again.
    f.redis_t.cleanup().await;
    wait_until(
        Duration::from_secs(10),
        "the sync to reload Redis",
        || async {
            completed.get() > loads_before
                && matches!(f.redis.lookup_for_test(&key).await, Lookup::Found(_))
        },
    )
    .await;
    cancel.cancel();
    runner.await.unwrap();
    f.cleanup().await;
}
