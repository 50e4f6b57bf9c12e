//! A small service that reuses two Inlet crates outside the Inlet
//! workspace: it authenticates API keys with `inlet-auth` against Redis
//! alone (feature `redis` only: no MongoDB client is compiled in) and hands
//! accepted payloads to RabbitMQ with `inlet-queue`'s confirmed
//! [`Publisher`].
//!
//! With Redis as the only store, Redis is the source of truth: a key it
//! holds is accepted, a key missing from a *populated* Redis (one a full
//! load committed to) is unknown — the only store there is said so — and
//! while Redis holds no complete key set (never loaded, flushed) or cannot
//! be reached, every key is undecidable (retry later), never unknown. See
//! `inlet_auth`'s crate docs.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use inlet_reuse::{Intake, Outcome};
//!
//! let intake = Intake::start(
//!     &inlet_auth::RedisSettings::default(),
//!     inlet_queue::QueueSettings::default(),
//!     &prometheus::Registry::new(),
//! )?;
//! match intake.accept(Some("3f2504e0-4f89-11d3-9a0c-0305e82c3301"), b"{}".to_vec()).await? {
//!     Outcome::Queued(confirmed) => { /* the broker has it */ let _ = confirmed; }
//!     Outcome::Refused(verdict) => { /* 401/403 */ let _ = verdict; }
//!     Outcome::RetryLater(verdict) => { /* 503 */ let _ = verdict; }
//! }
//! intake.close().await;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use inlet_auth::{AuthSettings, Authenticator, PrimaryStore, RedisSettings, RedisStore};
use inlet_domain::{ContentEncoding, Disposition, Envelope, Verdict};
use inlet_queue::{Confirmed, PublishError, Publisher, QueueMetrics, QueueSettings};

/// What happened to one payload.
#[derive(Debug)]
pub enum Outcome {
    /// The key may push and the broker confirmed the message.
    Queued(Confirmed),
    /// The key may not push (unknown, revoked, suspended, malformed).
    Refused(Verdict),
    /// Nothing could decide about the key: come back later.
    RetryLater(Verdict),
}

/// Why the service could not start or queue.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// Redis could not be configured.
    #[error("redis: {0}")]
    Store(#[from] inlet_auth::StoreError),
    /// A setting is invalid.
    #[error("{0}")]
    Setting(#[from] inlet_auth::InvalidSetting),
    /// RabbitMQ could not be configured.
    #[error("queue: {0}")]
    Queue(#[from] inlet_queue::QueueError),
    /// The broker did not confirm the message.
    #[error("publish: {0}")]
    Publish(#[from] PublishError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Authenticates, then publishes.
#[derive(Debug, Clone)]
pub struct Intake {
    auth: Authenticator,
    redis: RedisStore,
    publisher: Publisher,
}

impl Intake {
    /// Builds the authenticator over Redis (no source of truth) and starts
    /// the publisher. No I/O happens before the first call.
    pub fn start(
        redis: &RedisSettings,
        queue: QueueSettings,
        registry: &prometheus::Registry,
    ) -> Result<Intake, IntakeError> {
        let settings = AuthSettings {
            primary: PrimaryStore::Redis,
            source_of_truth: false,
            ..AuthSettings::default()
        };
        settings.validate()?;
        let store = RedisStore::new(redis)?;
        let auth = Authenticator::builder(settings)
            .primary(Arc::new(store.clone()))
            .build()?;
        let publisher = Publisher::start(queue, QueueMetrics::register(registry)?)?;
        Ok(Intake {
            auth,
            redis: store,
            publisher,
        })
    }

    /// The Redis store keys are read from (to load keys into it).
    pub fn redis(&self) -> &RedisStore {
        &self.redis
    }

    /// The publisher (for readiness: `wait_connected`, `watch_state`).
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Decides about `key`; when it may push, publishes `body` and returns
    /// once the broker confirmed it.
    pub async fn accept(&self, key: Option<&str>, body: Vec<u8>) -> Result<Outcome, IntakeError> {
        let decision = self.auth.decide(key).await;
        let grant = match (&decision.verdict, decision.verdict.disposition()) {
            (Verdict::Accepted(grant), _) => grant.clone(),
            (_, Disposition::RetryLater) => return Ok(Outcome::RetryLater(decision.verdict)),
            _ => return Ok(Outcome::Refused(decision.verdict)),
        };
        let Some(key_digest) = decision.digest else {
            return Ok(Outcome::Refused(decision.verdict));
        };
        let envelope = Envelope {
            message_id: uuid::Uuid::now_v7(),
            account_id: grant.account_id,
            key_id: grant.key_id,
            key_digest,
            auth_mode: grant.mode,
            received_at_ms: inlet_domain::now_ms(),
            content_encoding: ContentEncoding::Identity,
            batch_id: None,
            body: bytes::Bytes::from(body),
        };
        Ok(Outcome::Queued(self.publisher.publish(&envelope).await?))
    }

    /// Stops the publisher (waits for outstanding confirms).
    pub async fn close(&self) {
        self.publisher.close().await;
    }
}
