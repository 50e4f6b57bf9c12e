//! Building the whole auth stack from settings, in one place (features
//! `redis`, `mongo` and `file`).
//!
//! Start order matters: stores are built without connecting (a store that
//! is down at start-up is *unreachable*, not a start-up failure), then the
//! background tasks start — the readiness probe first, so that readiness
//! turns green only once a store has actually answered.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::file_store::{KeyFileError, StaticFileStore};
use crate::settings::{
    AuthSettings, InvalidSetting, MongoSettings, PrimaryStore, RedisSettings, SigningSettings,
};
use crate::{AuthMetrics, Authenticator, MongoStore, RedisStore, StoreError};

/// Why the auth stack could not be built (start-up misconfiguration).
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// A setting is invalid.
    #[error("{0}")]
    Setting(#[from] InvalidSetting),
    /// A store could not be configured.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The key file is missing or broken at start-up.
    #[error("{0}")]
    KeyFile(#[from] KeyFileError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The authenticator and the stores behind it.
#[derive(Debug, Clone)]
pub struct AuthStack {
    /// The decision.
    pub authenticator: Authenticator,
    /// The Redis store, when `primary = "redis"`.
    pub redis: Option<RedisStore>,
    /// The source of truth, when `source_of_truth = true`.
    pub mongo: Option<MongoStore>,
    /// The key file, when `primary = "file"`.
    pub file: Option<StaticFileStore>,
    poll: Duration,
}

impl AuthStack {
    /// Builds stores and authenticator from settings. Does no network I/O.
    pub async fn build(
        auth: &AuthSettings,
        signing: &SigningSettings,
        redis: &RedisSettings,
        mongo: &MongoSettings,
        metrics: AuthMetrics,
    ) -> Result<AuthStack, StackError> {
        auth.validate()?;
        let verifier = signing.verifier()?;
        let mut builder = Authenticator::builder(auth.clone())
            .verifier(verifier)
            .metrics(metrics);
        let (mut redis_store, mut file_store) = (None, None);
        match auth.primary {
            PrimaryStore::Redis => {
                let store = RedisStore::new(redis)?;
                builder = builder.primary(Arc::new(store.clone()));
                redis_store = Some(store);
            }
            PrimaryStore::File => {
                let store = StaticFileStore::load(&auth.key_file)?;
                builder = builder.primary(Arc::new(store.clone()));
                file_store = Some(store);
            }
            PrimaryStore::None => {}
        }
        let mongo_store = if auth.source_of_truth {
            let store = MongoStore::connect(mongo).await?;
            builder = builder.source_of_truth(Arc::new(store.clone()));
            Some(store)
        } else {
            None
        };
        Ok(AuthStack {
            authenticator: builder.build()?,
            redis: redis_store,
            mongo: mongo_store,
            file: file_store,
            poll: Duration::from_millis(auth.key_file_poll_ms.max(100)),
        })
    }

    /// Starts the background work: the readiness probe, the invalidation
    /// listener (Redis) and the key-file reloader (file). They stop when
    /// `cancel` is cancelled.
    pub fn spawn_background(&self, cancel: &CancellationToken) -> Vec<JoinHandle<()>> {
        let mut tasks = vec![tokio::spawn(
            self.authenticator
                .clone()
                .run_readiness_probe(cancel.clone()),
        )];
        if let Some(redis) = &self.redis {
            let (redis, auth, cancel) = (redis.clone(), self.authenticator.clone(), cancel.clone());
            tasks.push(tokio::spawn(async move {
                redis.run_invalidation_listener(&auth, cancel).await;
            }));
        }
        if let Some(file) = &self.file {
            tasks.push(tokio::spawn(
                file.clone().run_reloader(self.poll, cancel.clone()),
            ));
        }
        tasks
    }
}
