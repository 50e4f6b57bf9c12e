//! The shared test services, and each test's isolated corner of them.
//!
//! `scripts/test` exports the URLs after making sure the services run (it
//! starts private instances when nothing listens on the defaults).

use std::time::Duration;

use deadpool_redis::redis;

use crate::unique_id;

/// How long a test waits for its database to be dropped.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Redis for tests: `INLET_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`.
pub fn redis_url() -> String {
    std::env::var("INLET_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// RabbitMQ for tests: `INLET_TEST_AMQP_URL`, default guest on localhost.
pub fn amqp_url() -> String {
    std::env::var("INLET_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The MongoDB-wire server for tests: `INLET_TEST_MONGO_URL`, default
/// `mongodb://127.0.0.1:27017`. `scripts/test` starts SecantusDB and sets it.
///
/// SecantusDB slows down sharply as retryable-write records pile up, so
/// tests run with `retryWrites=false` (added when the URL has no such
/// option); production keeps the driver's default.
pub fn mongo_url() -> String {
    let url = std::env::var("INLET_TEST_MONGO_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into());
    with_test_options(&url)
}

/// Adds `retryWrites=false` to a MongoDB URL that does not set it.
pub fn with_test_options(url: &str) -> String {
    if url.contains("retryWrites") {
        return url.to_owned();
    }
    let base = if url.contains('?') {
        format!("{url}&")
    } else if url.trim_start_matches("mongodb://").contains('/') {
        format!("{url}?")
    } else {
        format!("{url}/?")
    };
    format!("{base}retryWrites=false")
}

/// One test's slice of Redis: every key it writes starts with [`Self::prefix`].
#[derive(Debug)]
pub struct TestRedis {
    /// Server URL.
    pub url: String,
    /// Unique key prefix, e.g. `inlet-test:3fa2c1d0b9e8:` (ends with `:`).
    pub prefix: String,
    /// A small connection pool to the server.
    pub pool: deadpool_redis::Pool,
}

impl TestRedis {
    /// A fresh prefix on the shared test Redis; panics with a hint if the
    /// server does not answer PING.
    pub async fn new() -> TestRedis {
        TestRedis::at(&redis_url()).await
    }

    /// A fresh prefix on the Redis at `url`.
    pub async fn at(url: &str) -> TestRedis {
        let pool = deadpool_redis::Config::from_url(url)
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .expect("redis pool");
        let mut conn = pool.get().await.unwrap_or_else(|e| {
            panic!("Redis at {url} is not reachable ({e}); run scripts/test or set INLET_TEST_REDIS_URL")
        });
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .expect("redis PING");
        TestRedis {
            url: url.to_owned(),
            prefix: format!("inlet-test:{}:", unique_id()),
            pool,
        }
    }

    /// How many keys exist under this test's prefix.
    pub async fn count_keys(&self) -> usize {
        self.keys().await.len()
    }

    /// Every key under this test's prefix.
    pub async fn keys(&self) -> Vec<String> {
        let mut conn = self.pool.get().await.expect("redis connection");
        let mut cursor: u64 = 0;
        let mut all = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .expect("SCAN");
            all.extend(keys);
            if next == 0 {
                return all;
            }
            cursor = next;
        }
    }

    /// The fields of the hash `{prefix}{suffix}` (empty when it does not
    /// exist), or the error when the server does not answer.
    pub async fn hash(
        &self,
        suffix: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, String> {
        let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
        redis::cmd("HGETALL")
            .arg(format!("{}{suffix}", self.prefix))
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())
    }

    /// `FLUSHALL`: empties the whole server. Only ever for a private
    /// server ([`crate::RedisServer`]), never the shared one.
    pub async fn flush_all_private(&self) {
        assert_ne!(
            self.url,
            redis_url(),
            "FLUSHALL on the shared test Redis is forbidden"
        );
        let mut conn = self.pool.get().await.expect("redis connection");
        let _: String = redis::cmd("FLUSHALL")
            .query_async(&mut conn)
            .await
            .expect("FLUSHALL");
    }

    /// Deletes every key under this test's prefix.
    pub async fn cleanup(&self) {
        let mut conn = self.pool.get().await.expect("redis connection");
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .expect("SCAN");
            if !keys.is_empty() {
                let _: i64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .expect("UNLINK");
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
}

/// One test's slice of RabbitMQ: exchanges and queues named under
/// [`Self::prefix`].
#[derive(Debug, Clone)]
pub struct TestAmqp {
    /// Broker URL.
    pub url: String,
    /// Unique name prefix, e.g. `inlet-test.3fa2c1d0b9e8`.
    pub prefix: String,
}

impl TestAmqp {
    /// A fresh prefix on the shared test broker.
    pub fn new() -> TestAmqp {
        TestAmqp {
            url: amqp_url(),
            prefix: format!("inlet-test.{}", unique_id()),
        }
    }

    /// A fresh prefix on the broker at `url` (e.g. a private node).
    pub fn at(url: &str) -> TestAmqp {
        TestAmqp {
            url: url.to_owned(),
            prefix: format!("inlet-test.{}", unique_id()),
        }
    }

    /// Messages ready in the queue named `queue` (a full name), or `None`
    /// when it does not exist or the broker does not answer.
    pub async fn message_count(&self, queue: &str) -> Option<u32> {
        self.queue_counts(queue).await.map(|(messages, _)| messages)
    }

    /// Messages ready in the queue named `queue` and its consumers, or
    /// `None` when it does not exist or the broker does not answer.
    pub async fn queue_counts(&self, queue: &str) -> Option<(u32, u32)> {
        let conn = lapin::Connection::connect(&self.url, lapin::ConnectionProperties::default())
            .await
            .ok()?;
        let ch = conn.create_channel().await.ok()?;
        let q = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .ok();
        let _ = conn.close(200, "message count".into()).await;
        q.map(|q| (q.message_count(), q.consumer_count()))
    }

    /// Deletes queues and exchanges by their full names (ignoring those
    /// that do not exist).
    pub async fn delete_named(&self, queues: &[&str], exchanges: &[&str]) {
        let Ok(conn) =
            lapin::Connection::connect(&self.url, lapin::ConnectionProperties::default()).await
        else {
            return;
        };
        for q in queues {
            // A failed delete closes the channel: one channel each.
            if let Ok(ch) = conn.create_channel().await {
                let _ = ch.queue_delete((*q).into(), Default::default()).await;
            }
        }
        for e in exchanges {
            if let Ok(ch) = conn.create_channel().await {
                let _ = ch.exchange_delete((*e).into(), Default::default()).await;
            }
        }
        let _ = conn.close(200, "test cleanup".into()).await;
    }

    /// A name under this test's prefix.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }

    /// Opens a connection to the broker, panicking with a hint on failure.
    pub async fn connect(&self) -> lapin::Connection {
        lapin::Connection::connect(&self.url, lapin::ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "RabbitMQ at {} is not reachable ({e}); run scripts/test or set INLET_TEST_AMQP_URL",
                    self.url
                )
            })
    }

    /// Deletes the given queues and exchanges (names without the prefix).
    pub async fn cleanup(&self, queues: &[&str], exchanges: &[&str]) {
        let conn = self.connect().await;
        let ch = conn.create_channel().await.expect("channel");
        for q in queues {
            let _ = ch
                .queue_delete(self.name(q).as_str().into(), Default::default())
                .await;
        }
        for e in exchanges {
            let _ = ch
                .exchange_delete(self.name(e).as_str().into(), Default::default())
                .await;
        }
        let _ = conn.close(200, "test cleanup".into()).await;
    }
}

impl Default for TestAmqp {
    fn default() -> Self {
        TestAmqp::new()
    }
}

/// One test's MongoDB database.
#[derive(Debug)]
pub struct TestMongo {
    /// Server URL.
    pub url: String,
    /// Unique database name, e.g. `inlet_test_3fa2c1d0b9e8`.
    pub db_name: String,
    /// A connected client.
    pub client: mongodb::Client,
}

impl TestMongo {
    /// A fresh database on the shared test server.
    pub async fn new() -> TestMongo {
        TestMongo::at(&mongo_url()).await
    }

    /// A fresh database on the server at `url`.
    pub async fn at(url: &str) -> TestMongo {
        let url = &with_test_options(url);
        let mut opts = mongodb::options::ClientOptions::parse(url)
            .await
            .expect("mongo url");
        opts.server_selection_timeout = Some(Duration::from_secs(5));
        opts.app_name = Some("inlet-testkit".into());
        let client = mongodb::Client::with_options(opts).expect("mongo client");
        client
            .database("admin")
            .run_command(mongodb::bson::doc! { "ping": 1 })
            .await
            .unwrap_or_else(|e| {
                panic!("MongoDB at {url} is not reachable ({e}); run scripts/test or set INLET_TEST_MONGO_URL")
            });
        TestMongo {
            url: url.to_owned(),
            db_name: format!("inlet_test_{}", unique_id()),
            client,
        }
    }

    /// The test's database.
    pub fn db(&self) -> mongodb::Database {
        self.client.database(&self.db_name)
    }

    /// Drops the test's database.
    ///
    /// Bounded: a test server that has become slow (SecantusDB can stall
    /// for minutes after transactions were cut mid-flight) must not hold a
    /// test whose checks are done.
    pub async fn cleanup(&self) {
        // Best effort, as before: a database left behind is only litter.
        let _ = tokio::time::timeout(CLEANUP_TIMEOUT, self.db().drop()).await;
    }
}
