//! Decision latency: cached, Redis-backed and MongoDB-backed.
//!
//! Needs Redis and a MongoDB-wire server (`INLET_TEST_REDIS_URL`,
//! `INLET_TEST_MONGO_URL`, defaults on localhost); run through
//! `scripts/bench` or `cargo bench -p inlet-auth --bench decide`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use inlet_auth::key_admin::KeyAdmin;
use inlet_auth::sync::{KeySync, SyncSettings};
use inlet_auth::{
    AuthSettings, Authenticator, MemoryStore, MongoStore, RedisSettings, RedisStore, SyncMetrics,
};
use inlet_domain::{
    AccountId, AccountState, KeyIssuer, KeyRecord, KeyState, KeyVerifier, SigningSecret, Verdict,
};
use inlet_migrate::{Migration, Migrator};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let secret = SigningSecret::new(1, &[3; 32]).unwrap();
    let issuer = KeyIssuer::new(secret.clone());
    let verifier = KeyVerifier::new(vec![secret]).unwrap();

    // Cached: an in-memory primary, decision served from the moka cache.
    let key = issuer.issue();
    let record = KeyRecord {
        key_id: key.key_id().unwrap(),
        account_id: AccountId::parse("bench").unwrap(),
        key_state: KeyState::Active,
        account_state: AccountState::Active,
        rate_limit: None,
        app: None,
        revision: 1,
        updated_at_ms: 0,
    };
    let memory = Arc::new(MemoryStore::new([(key.digest(), record)]));
    let cached = Authenticator::builder(AuthSettings::default())
        .primary(memory)
        .verifier(verifier.clone())
        .build()
        .unwrap();
    let raw = key.expose_secret().to_owned();
    rt.block_on(async {
        assert!(matches!(
            cached.decide(Some(&raw)).await.verdict,
            Verdict::Accepted(_)
        ))
    });
    c.bench_function("decide/cached", |b| {
        b.to_async(&rt).iter(|| cached.decide(Some(&raw)))
    });

    // Real stores under a throwaway prefix and database.
    let (redis_t, mongo_t) = rt.block_on(async {
        (
            inlet_testkit::TestRedis::new().await,
            inlet_testkit::TestMongo::new().await,
        )
    });
    let redis = RedisStore::new(&RedisSettings {
        url: redis_t.url.clone(),
        prefix: redis_t.prefix.clone(),
        ..RedisSettings::default()
    })
    .unwrap();
    let mongo = MongoStore::new(mongo_t.db());
    let stored = rt.block_on(async {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
        Migrator::new(mongo_t.db(), Migration::load_dir(&dir).unwrap())
            .unwrap()
            .run()
            .await
            .unwrap();
        let admin = KeyAdmin::new(mongo.clone());
        let acct = AccountId::parse("bench").unwrap();
        admin.create_account(&acct, None).await.unwrap();
        let key = admin.create_key(&issuer, &acct, None).await.unwrap().0;
        KeySync::new(
            mongo.clone(),
            redis.clone(),
            SyncSettings::default(),
            SyncMetrics::unregistered().unwrap(),
        )
        .backfill()
        .await
        .unwrap();
        key
    });
    let raw = stored.expose_secret().to_owned();
    let digest = stored.digest();

    let via_redis = Authenticator::builder(AuthSettings::default())
        .primary(Arc::new(redis))
        .source_of_truth(Arc::new(mongo.clone()))
        .verifier(verifier.clone())
        .build()
        .unwrap();
    c.bench_function("decide/redis (cache miss)", |b| {
        b.to_async(&rt).iter(|| async {
            via_redis.invalidate(&digest).await;
            let d = via_redis.decide(Some(&raw)).await;
            debug_assert!(matches!(d.verdict, Verdict::Accepted(_)));
            d
        })
    });

    let via_mongo = Authenticator::builder(AuthSettings {
        primary: inlet_auth::PrimaryStore::None,
        ..AuthSettings::default()
    })
    .source_of_truth(Arc::new(mongo))
    .verifier(verifier)
    .build()
    .unwrap();
    c.bench_function("decide/mongo (cache miss)", |b| {
        b.to_async(&rt).iter(|| async {
            via_mongo.invalidate(&digest).await;
            via_mongo.decide(Some(&raw)).await
        })
    });

    rt.block_on(async {
        redis_t.cleanup().await;
        mongo_t.cleanup().await;
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
