//! The worker: turns queued pushes into minutely aggregates in MongoDB,
//! with exactly-once effect.
//!
//! - A redelivered message (a worker crash between write and ack, a broker
//!   redelivery, an agent's retry of the same `batch_id`) never counts
//!   twice: effect and applied-marker commit in one transaction (see
//!   [`store`] for why). Cumulative series (OpenTelemetry's temporality)
//!   are turned into increases against their stored last point in that
//!   same transaction.
//! - Nothing is acked before its effect is durable.
//! - Provisional pushes (accepted while no key store could decide) are
//!   re-checked against the source of truth before a sample is written;
//!   rejected ones are dropped and counted.
//! - MongoDB down: the pipeline stops pulling, waits, and resumes by itself;
//!   nothing is dead-lettered for it. Undecodable or invalid messages go to
//!   the dead-letter queue at once; other failures retry through the delay
//!   queue, then dead-letter.
//!
//! # Layout
//!
//! - [`aggregate`]: pure folding of batches into per-minute buckets.
//! - [`observations`]: a distribution's observations, as the fold and
//!   [`cumulative`] share them (a leaf).
//! - [`cumulative`]: pure rule of what a cumulative point adds over the
//!   series' stored last point (first point, increase, reset, stale).
//! - [`store`]: [`store::AggregateStore`], the transactional bulk write.
//! - [`worker`]: [`worker::Processor`] (checks, folds, writes, settles) and
//!   [`worker::Pipeline`] (a consumer + processor; `process_one` step
//!   function for tests; `run` loop with drain).
//! - [`retention`]: TTL per collection from settings.
//! - [`stats`]: reading the minutely series back (`inlet stats`).
//! - [`metrics`], [`settings`] (`[worker]`).
//!
//! # Using it from another service
//!
//! ```no_run
//! # async fn run(queue: inlet_queue::QueueSettings, db: mongodb::Database) -> Result<(), Box<dyn std::error::Error>> {
//! use inlet_worker::{AggregateStore, Pipeline, Processor, WorkerMetrics, WorkerSettings};
//! let settings = WorkerSettings::default();
//! let processor = Processor::new(
//!     AggregateStore::new(db.clone(), true),
//!     inlet_auth::MongoStore::new(db),
//!     inlet_domain::BatchLimits::default(),
//!     settings.clone(),
//!     WorkerMetrics::unregistered()?,
//! );
//! let cancel = tokio_util::sync::CancellationToken::new();
//! let pipeline = Pipeline::start(queue, inlet_queue::QueueMetrics::unregistered()?, processor, settings, cancel)?;
//! pipeline.run().await;
//! # Ok(()) }
//! ```

pub mod aggregate;
pub mod cumulative;
pub mod metrics;
pub mod observations;
pub mod retention;
pub mod settings;
pub mod stats;
pub mod store;
pub mod worker;

pub use metrics::WorkerMetrics;
pub use settings::WorkerSettings;
pub use store::AggregateStore;
pub use worker::{Outcome, Pipeline, Processor};
