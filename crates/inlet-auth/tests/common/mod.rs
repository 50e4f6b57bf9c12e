//! Shared helpers for the auth integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::path::Path;

use async_trait::async_trait;
use inlet_auth::key_admin::KeyAdmin;
use inlet_auth::sync::{FollowMode, KeySync, SyncSettings};
use inlet_auth::{
    AuthSettings, Authenticator, KeyStore, Lookup, MongoSettings, MongoStore, Readiness,
    RedisSettings, RedisStore, SharedStore, StoreError, SyncMetrics,
};
use inlet_domain::{
    AccountId, AccountState, ApiKey, KeyDigest, KeyId, KeyIssuer, KeyRecord, KeyState, KeyVerifier,
    SigningSecret,
};
use inlet_migrate::{Migration, Migrator};
use inlet_testkit::{FaultProxy, TestMongo, TestRedis};

/// How a [`Scripted`] store behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answer from the inner store.
    Normal,
    /// Answer "not loaded" (cold).
    Cold,
    /// Fail as unavailable.
    Down,
    /// Fail with a timeout.
    Timeout,
    /// Never answer (the authenticator's timeout must fire).
    Hang,
    /// Answer that the stored record cannot be read.
    Corrupt,
}

/// Wraps a store: counts lookups and can be switched into failure modes.
pub struct Scripted {
    inner: SharedStore,
    name: &'static str,
    mode: Mutex<Mode>,
    pub lookups: AtomicU64,
    delay: Mutex<Duration>,
}

impl Scripted {
    pub fn new(name: &'static str, inner: SharedStore) -> Arc<Scripted> {
        Arc::new(Scripted {
            inner,
            name,
            mode: Mutex::new(Mode::Normal),
            lookups: AtomicU64::new(0),
            delay: Mutex::new(Duration::ZERO),
        })
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }

    pub fn calls(&self) -> u64 {
        self.lookups.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl KeyStore for Scripted {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn lookup(&self, digest: &KeyDigest) -> Result<Lookup, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Normal => self.inner.lookup(digest).await,
            Mode::Cold => Ok(Lookup::NotLoaded),
            Mode::Down => Err(StoreError::Unavailable("scripted outage".into())),
            Mode::Timeout => Err(StoreError::Timeout),
            Mode::Hang => std::future::pending().await,
            Mode::Corrupt => Err(StoreError::Corrupt {
                digest: *digest,
                reason: "scripted unreadable record".into(),
            }),
        }
    }

    async fn readiness(&self) -> Readiness {
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Normal | Mode::Corrupt => self.inner.readiness().await,
            Mode::Cold => Readiness::NotPopulated,
            Mode::Down | Mode::Hang => {
                Readiness::Unreachable(StoreError::Unavailable("scripted".into()))
            }
            Mode::Timeout => Readiness::Unreachable(StoreError::Timeout),
        }
    }
}

pub fn secret() -> SigningSecret {
    SigningSecret::new(1, &[7; 32]).unwrap()
}

pub fn issuer() -> KeyIssuer {
    KeyIssuer::new(secret())
}

pub fn verifier() -> KeyVerifier {
    KeyVerifier::new(vec![secret()]).unwrap()
}

pub fn record(key_id: KeyId, account: &str, key: KeyState, acct: AccountState) -> KeyRecord {
    KeyRecord {
        key_id,
        account_id: AccountId::parse(account).unwrap(),
        key_state: key,
        account_state: acct,
        rate_limit: None,
        app: None,
        revision: 1,
        updated_at_ms: 0,
    }
}

pub struct Fixture {
    pub redis_t: TestRedis,
    pub mongo_t: TestMongo,
    pub redis: RedisStore,
    pub mongo: MongoStore,
    pub admin: KeyAdmin,
}

pub fn redis_settings(url: &str, prefix: &str) -> RedisSettings {
    RedisSettings {
        url: url.to_owned(),
        prefix: prefix.to_owned(),
        command_timeout_ms: 300,
        connect_timeout_ms: 300,
        pool_wait_ms: 300,
        ..RedisSettings::default()
    }
}

pub fn migrations() -> Vec<Migration> {
    Migration::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations")).unwrap()
}

impl Fixture {
    pub async fn new() -> Fixture {
        Fixture::on_redis(TestRedis::new().await).await
    }

    /// A fixture on a given Redis (e.g. a private server a test may flush).
    pub async fn on_redis(redis_t: TestRedis) -> Fixture {
        let mongo_t = TestMongo::new().await;
        let redis = RedisStore::new(&redis_settings(&redis_t.url, &redis_t.prefix)).unwrap();
        let mongo = MongoStore::new(mongo_t.db());
        Migrator::new(mongo_t.db(), migrations())
            .unwrap()
            .run()
            .await
            .unwrap();
        let admin = KeyAdmin::new(mongo.clone()).with_redis(redis.clone());
        Fixture {
            redis_t,
            mongo_t,
            redis,
            mongo,
            admin,
        }
    }

    pub fn sync(&self, follow: FollowMode) -> KeySync {
        KeySync::new(
            self.mongo.clone(),
            self.redis.clone(),
            SyncSettings {
                follow,
                poll_interval_ms: 100,
                ..SyncSettings::default()
            },
            SyncMetrics::unregistered().unwrap(),
        )
    }

    pub fn auth(&self, primary: SharedStore, truth: Option<SharedStore>) -> Authenticator {
        let mut b = Authenticator::builder(AuthSettings {
            primary_timeout_ms: 500,
            truth_timeout_ms: 2_000,
            ..AuthSettings::default()
        })
        .primary(primary)
        .verifier(verifier());
        if let Some(t) = truth {
            b = b.source_of_truth(t);
        }
        b.build().unwrap()
    }

    pub async fn account(&self, id: &str) -> AccountId {
        let id = AccountId::parse(id).unwrap();
        self.admin.create_account(&id, None).await.unwrap();
        id
    }

    pub async fn key(&self, account: &AccountId) -> ApiKey {
        self.admin
            .create_key(&issuer(), account, None)
            .await
            .unwrap()
            .0
    }

    pub async fn cleanup(&self) {
        self.redis_t.cleanup().await;
        self.mongo_t.cleanup().await;
    }
}

/// Test-only shorthand.
pub trait LookupForTest {
    async fn lookup_for_test(&self, key: &ApiKey) -> Lookup;
}

impl<S: inlet_auth::KeyStore> LookupForTest for S {
    async fn lookup_for_test(&self, key: &ApiKey) -> Lookup {
        self.lookup(&key.digest()).await.unwrap()
    }
}

impl Fixture {
    /// The shared Redis server's address (for a [`FaultProxy`] in front).
    pub fn redis_addr(&self) -> std::net::SocketAddr {
        self.redis_t
            .url
            .trim_start_matches("redis://")
            .parse()
            .unwrap()
    }

    /// The MongoDB-wire server's address (for a [`FaultProxy`] in front).
    pub fn mongo_addr(&self) -> std::net::SocketAddr {
        self.mongo_t
            .url
            .trim_start_matches("mongodb://")
            .split(['/', '?'])
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// This test's Redis store, reached through `proxy`.
    pub fn redis_via(&self, proxy: &FaultProxy) -> RedisStore {
        RedisStore::new(&redis_settings(
            &format!("redis://{}", proxy.addr()),
            self.redis.prefix(),
        ))
        .unwrap()
    }

    /// This test's MongoDB store, reached through `proxy`.
    pub async fn mongo_via(&self, proxy: &FaultProxy) -> MongoStore {
        MongoStore::connect(&MongoSettings {
            url: format!(
                "mongodb://{}/?directConnection=true&retryWrites=false",
                proxy.addr()
            ),
            database: self.mongo_t.db_name.clone(),
            server_selection_timeout_ms: 500,
            connect_timeout_ms: 500,
            ..MongoSettings::default()
        })
        .await
        .unwrap()
    }
}

/// Inserts `n` legacy keys `bulk-legacy-key-{i:012}` for `account`, in bulk.
pub async fn insert_keys(f: &Fixture, account: &AccountId, n: usize) {
    let now = mongodb::bson::DateTime::now();
    let docs: Vec<inlet_auth::mongo_store::KeyDoc> = (0..n)
        .map(|i| inlet_auth::mongo_store::KeyDoc {
            key_id: format!("{:016x}", i as u64 + 1_000_000),
            digest: inlet_domain::KeyDigest::of_secret(&format!("bulk-legacy-key-{i:012}"))
                .to_hex(),
            account_id: account.to_string(),
            state: inlet_domain::KeyState::Active,
            app: None,
            legacy: true,
            revision: 1,
            created_at: now,
            updated_at: now,
        })
        .collect();
    for chunk in docs.chunks(5_000) {
        f.mongo.keys().insert_many(chunk.to_vec()).await.unwrap();
    }
}
