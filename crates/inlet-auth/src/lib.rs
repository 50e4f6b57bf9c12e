//! Key stores and the authenticator: the decision "may this key push?",
//! answered honestly.
//!
//! The incident Inlet exists for was a key store that answered "unknown"
//! when it meant "not loaded yet". Here a store's incomplete state is a
//! distinct answer ([`Lookup::NotLoaded`]), store failures are typed
//! ([`StoreError`]), and the [`Authenticator`] turns none of them into
//! "unknown key": a verdict of 401 comes only from the source of truth (or,
//! without one, from the only store there is), or from the key's own bytes.
//!
//! # Layout
//!
//! - [`store`]: the [`KeyStore`] trait, [`Lookup`], [`Readiness`],
//!   [`StoreError`], and an in-memory store.
//! - [`authenticator`]: [`Authenticator`] — local checks, decision cache
//!   with coalesced misses, primary → source-of-truth chain, stale-if-error,
//!   provisional acceptance, invalidation, readiness.
//! - [`redis_store`] (feature `redis`): the fast primary, its key layout,
//!   the populated marker and the invalidation channel.
//! - [`mongo_store`] (feature `mongo`): the source of truth.
//! - [`file_store`] (feature `file`): a static key file, reloaded on change.
//! - [`sync`] (features `redis` + `mongo`): loads MongoDB's keys into Redis
//!   under a new generation and follows changes.
//! - [`key_admin`] (feature `mongo`): accounts and keys administration
//!   ([`key_admin::KeyAdmin`]; `inlet keys` and `inlet accounts`).
//! - [`stack`] (all features): [`stack::AuthStack`], the whole stack built
//!   from settings, with its background tasks.
//! - [`settings`]: `[auth]`, `[signing]`, `[redis]`, `[mongo]`.
//! - [`metrics`]: [`AuthMetrics`], [`SyncMetrics`].
//!
//! # Features
//!
//! All three are on by default; turn them off (`default-features = false`)
//! to leave a client out of the build:
//!
//! - `redis`: [`RedisStore`] (the fast primary, its loads and the
//!   invalidation channel); `deadpool-redis`.
//! - `mongo`: [`MongoStore`] (the source of truth) and [`key_admin`];
//!   `mongodb`.
//! - `file`: [`StaticFileStore`], a TOML/JSON key file; `toml`.
//!
//! [`sync`] needs `redis` and `mongo`; [`stack`] all three. The
//! [`Authenticator`], [`store`], [`settings`] and [`metrics`] need none.
//! With one store only (say `redis` alone), that store is the source of
//! truth: a key absent from a *populated* store is unknown (401), and while
//! it holds no complete key set or fails, every key is undecidable (503)
//! or rescued (stale-if-error, provisional), never unknown.
//! `examples/reuse` in the repository is such a service (Redis only, no
//! `mongodb` in its dependency tree; built and tested by `scripts/test`).
//!
//! # Using it from another service
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use inlet_auth::{AuthSettings, Authenticator, MongoStore, MongoSettings, RedisSettings, RedisStore};
//!
//! let redis = RedisStore::new(&RedisSettings::default())?;
//! let mongo = MongoStore::connect(&MongoSettings::default()).await?;
//! let auth = Authenticator::builder(AuthSettings::default())
//!     .primary(Arc::new(redis))
//!     .source_of_truth(Arc::new(mongo))
//!     .build()?;
//! let decision = auth.decide(Some("3f2504e0-4f89-11d3-9a0c-0305e82c3301")).await;
//! // 401 only for UnknownKey/RevokedKey/Malformed; Undecidable means 503.
//! println!("{:?} by {}", decision.verdict, decision.source.as_str());
//! # Ok(()) }
//! ```

pub mod authenticator;
pub mod metrics;
pub mod settings;
pub mod store;

#[cfg(feature = "file")]
pub mod file_store;
#[cfg(feature = "mongo")]
pub mod key_admin;
#[cfg(feature = "mongo")]
pub mod mongo_store;
#[cfg(feature = "redis")]
pub mod redis_store;
#[cfg(all(feature = "redis", feature = "mongo", feature = "file"))]
pub mod stack;
#[cfg(all(feature = "redis", feature = "mongo"))]
pub mod sync;

pub use authenticator::{AuthReadiness, Authenticator, AuthenticatorBuilder, Decision, Source};
#[cfg(feature = "file")]
pub use file_store::{KeyFileError, StaticFileStore};
pub use metrics::{AuthMetrics, SyncMetrics};
#[cfg(feature = "mongo")]
pub use mongo_store::MongoStore;
#[cfg(feature = "redis")]
pub use redis_store::{Commit, Invalidation, Load, Marker, Put, RedisStore};
pub use settings::{
    AuthSettings, InvalidSetting, MongoSettings, PrimaryStore, RedisSettings, SigningSettings,
};
pub use store::{KeyStore, Lookup, MemoryStore, Readiness, SharedStore, StoreError};
