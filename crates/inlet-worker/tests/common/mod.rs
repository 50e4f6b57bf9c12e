//! Worker test harness: real RabbitMQ and a MongoDB-wire server.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use futures::TryStreamExt as _;
use inlet_auth::MongoStore;
use inlet_auth::key_admin::KeyAdmin;
use inlet_domain::{
    AccountId, ApiKey, AuthMode, BatchId, BatchLimits, ContentEncoding, Envelope, KeyIssuer,
    SigningSecret, now_ms,
};
use inlet_migrate::{Migration, Migrator};
use inlet_queue::{Names, Publisher, QueueMetrics, QueueSettings};
use inlet_testkit::{TestAmqp, TestMongo};
use inlet_worker::{AggregateStore, Pipeline, Processor, WorkerMetrics, WorkerSettings};
use mongodb::Database;
use mongodb::bson::{Document, doc};
use tokio_util::sync::CancellationToken;

pub struct Harness {
    pub amqp: TestAmqp,
    pub queue: QueueSettings,
    pub db: Database,
    pub mongo_url: String,
    pub publisher: Publisher,
    /// The publisher's metrics (how many broker messages carried pushes).
    pub publisher_metrics: QueueMetrics,
    pub admin: KeyAdmin,
    pub account: AccountId,
    pub key: ApiKey,
    pub issuer: KeyIssuer,
    pub settings: WorkerSettings,
    mongo_t: Option<TestMongo>,
}

pub fn migrations() -> Vec<Migration> {
    Migration::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations")).unwrap()
}

impl Harness {
    pub async fn new() -> Harness {
        let mongo_t = TestMongo::new().await;
        let db = mongo_t.db();
        let url = mongo_t.url.clone();
        let mut h = Harness::with_db(db, url).await;
        h.mongo_t = Some(mongo_t);
        h
    }

    /// A harness on a given database (e.g. of a private server).
    pub async fn with_db(db: Database, mongo_url: String) -> Harness {
        Migrator::new(db.clone(), migrations())
            .unwrap()
            .run()
            .await
            .unwrap();
        let amqp = TestAmqp::new();
        let queue = QueueSettings {
            url: amqp.url.clone(),
            prefix: amqp.prefix.clone(),
            connection_name: amqp.prefix.clone(),
            retry_delays_ms: vec![200, 400],
            max_attempts: 3,
            prefetch: 128,
            ..QueueSettings::default()
        };
        let publisher_metrics = QueueMetrics::unregistered().unwrap();
        let publisher = Publisher::start(queue.clone(), publisher_metrics.clone()).unwrap();
        assert!(publisher.wait_connected(Duration::from_secs(10)).await);
        let admin = KeyAdmin::new(MongoStore::new(db.clone()));
        let account = AccountId::parse("acme").unwrap();
        admin.create_account(&account, None).await.unwrap();
        let issuer = KeyIssuer::new(SigningSecret::new(1, &[5; 32]).unwrap());
        let key = admin.create_key(&issuer, &account, None).await.unwrap().0;
        Harness {
            amqp,
            queue,
            db,
            mongo_url,
            publisher,
            publisher_metrics,
            admin,
            account,
            key,
            issuer,
            settings: WorkerSettings {
                concurrency: 1,
                mongo_retry_initial_ms: 50,
                mongo_retry_max_ms: 500,
                ..WorkerSettings::default()
            },
            mongo_t: None,
        }
    }

    pub fn processor(&self) -> Processor {
        self.processor_on(self.db.clone())
    }

    pub fn processor_on(&self, db: Database) -> Processor {
        self.processor_with(db, true)
    }

    /// A processor with the given `exactly_once` mode.
    pub fn processor_with(&self, db: Database, exactly_once: bool) -> Processor {
        Processor::new(
            AggregateStore::new(db.clone(), exactly_once),
            MongoStore::new(db),
            BatchLimits::default(),
            self.settings.clone(),
            WorkerMetrics::unregistered().unwrap(),
        )
    }

    pub fn pipeline(&self, processor: Processor, cancel: &CancellationToken) -> Pipeline {
        self.pipeline_with(processor, cancel, QueueMetrics::unregistered().unwrap())
    }

    /// A pipeline whose consumer metrics the test can read.
    pub fn pipeline_with(
        &self,
        processor: Processor,
        cancel: &CancellationToken,
        queue_metrics: QueueMetrics,
    ) -> Pipeline {
        Pipeline::start(
            self.queue.clone(),
            queue_metrics,
            processor,
            self.settings.clone(),
            cancel.clone(),
        )
        .unwrap()
    }

    /// An envelope as the API would publish it.
    pub fn envelope(&self, body: &serde_json::Value, mode: AuthMode, key: &ApiKey) -> Envelope {
        let raw = serde_json::to_vec(body).unwrap();
        Envelope {
            message_id: Envelope::new_message_id(),
            account_id: match mode {
                AuthMode::Confirmed => Some(self.account.clone()),
                AuthMode::Provisional => None,
            },
            key_id: key.key_id().unwrap(),
            key_digest: key.digest(),
            auth_mode: mode,
            received_at_ms: now_ms(),
            content_encoding: ContentEncoding::Gzip,
            batch_id: body["batch_id"].as_str().and_then(BatchId::parse),
            body: ContentEncoding::Gzip.encode(&raw).into(),
        }
    }

    pub async fn publish(&self, env: &Envelope) {
        self.publisher.publish(env).await.unwrap();
    }

    pub async fn publish_json(&self, body: &serde_json::Value) {
        let env = self.envelope(body, AuthMode::Confirmed, &self.key);
        self.publish(&env).await;
    }

    /// Publishes every envelope at once, as concurrent pushes arrive: with
    /// combining on (the default) they travel in bundles. Returns how many
    /// broker messages carried them.
    pub async fn publish_together(&self, envs: &[Envelope]) -> u64 {
        let parts = &self.publisher_metrics.publish_parts;
        let before = parts.get_sample_count();
        for r in futures::future::join_all(envs.iter().map(|e| self.publisher.publish(e))).await {
            r.unwrap();
        }
        parts.get_sample_count() - before
    }

    /// [`Self::publish_together`] of confirmed pushes of these bodies.
    pub async fn publish_json_together(&self, bodies: &[serde_json::Value]) -> u64 {
        let envs: Vec<Envelope> = bodies
            .iter()
            .map(|b| self.envelope(b, AuthMode::Confirmed, &self.key))
            .collect();
        self.publish_together(&envs).await
    }

    pub fn names(&self) -> Names {
        Names::from_settings(&self.queue)
    }

    /// Sum of `count` over the transaction buckets.
    pub async fn tx_total(&self) -> i64 {
        self.tx_docs()
            .await
            .iter()
            .map(|d| d.get_i64("count").unwrap_or(0))
            .sum()
    }

    pub async fn tx_docs(&self) -> Vec<Document> {
        self.db
            .collection::<Document>("tx_minutes")
            .find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    }

    /// Messages in the dead-letter queue (drained with basic.get, acked).
    pub async fn drain_dead_letters(&self) -> Vec<lapin::message::BasicGetMessage> {
        let conn = self.amqp.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(self.names().dead_queue.as_str().into(), Default::default())
            .await
            .unwrap()
        {
            m.delivery.ack(Default::default()).await.unwrap();
            out.push(m);
        }
        let _ = conn.close(200, "done".into()).await;
        out
    }

    pub async fn cleanup(&self) {
        self.publisher.close().await;
        let names = self.names();
        let strip = |n: &str| {
            n.trim_start_matches(&format!("{}.", self.amqp.prefix))
                .to_owned()
        };
        let queues: Vec<String> = names.all_queues().iter().map(|q| strip(q)).collect();
        let exchanges: Vec<String> = names.all_exchanges().iter().map(|e| strip(e)).collect();
        let q: Vec<&str> = queues.iter().map(String::as_str).collect();
        let e: Vec<&str> = exchanges.iter().map(String::as_str).collect();
        self.amqp.cleanup(&q, &e).await;
        if let Some(m) = &self.mongo_t {
            m.cleanup().await;
        }
    }
}

/// One second into the minute five minutes ago: every sample of a test in
/// one known bucket, whatever the clock does during the test.
pub fn test_minute_start() -> i64 {
    inlet_domain::Minute::containing(now_ms() - 5 * 60_000).start_ms() + 1_000
}

/// A batch of `n` transactions of one action starting at `start`, with
/// durations `first, first+1, …`; every tenth is a 500.
pub fn tx_batch(
    batch_id: &str,
    action: &str,
    n: usize,
    first_duration: f64,
    start: i64,
) -> serde_json::Value {
    let tx: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "action": action, "start_ms": start, "duration_ms": first_duration + i as f64,
                "status": if i % 10 == 0 { 500 } else { 200 },
            })
        })
        .collect();
    serde_json::json!({
        "batch_id": batch_id,
        "agent": {"name": "t", "version": "1"},
        "app": "shop", "environment": "production",
        "transactions": tx,
    })
}
