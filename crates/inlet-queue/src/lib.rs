//! AMQP for Inlet, over lapin: the crate that keeps the promise **"202
//! means durable"**.
//!
//! The API acknowledges a push only after [`Publisher::publish`] returned
//! `Ok`, which happens only after RabbitMQ's publisher confirm for that
//! message. Every other outcome is a typed [`PublishError`] that arrives
//! quickly: the broker being away, blocked by an alarm, slow, or refusing
//! the message never hangs a request. The worker side gets a reconnecting
//! [`Consumer`] whose [`Incoming`] deliveries are acked, retried through
//! delay queues, dead-lettered with a reason, or requeued.
//!
//! # Layout
//!
//! - [`settings`]: [`QueueSettings`], every option with its unit and
//!   default, and its validation.
//! - [`topology`]: the exchange/queue [`Names`] derived from a prefix and
//!   the idempotent [`topology::declare`] (quorum main queue, one delay
//!   queue per retry delay, dead-letter exchange and queue).
//! - [`publisher`]: [`Publisher`], confirmed publishing with backpressure
//!   (a folder: public handle, hot path, channel repair, topology
//!   re-declaration, supervisor hooks).
//! - [`consumer`]: [`Consumer`] and [`Incoming`], the worker's primitives.
//! - [`connection`]: [`ConnectionState`] (what readiness probes watch),
//!   connection opening and quiet closing.
//! - `supervisor` (private): the one connection supervisor both use: the
//!   reconnect loop with backoff, the state updates, the watchdog, and
//!   hooks for what differs (setup, events, work, shutdown).
//! - [`metrics`]: [`QueueMetrics`], the `inlet_queue_*` Prometheus metrics.
//! - [`error`]: [`PublishError`] (with stable codes) and [`QueueError`].
//!
//! lapin's own auto-recovery is not used (see [`connection`]): each
//! publisher and consumer runs its own task of that supervisor.
//!
//! # Using it from another service
//!
//! ```no_run
//! use std::time::Duration;
//! use inlet_queue::{Publisher, Consumer, QueueMetrics, QueueSettings, RetryOutcome};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo(envelope: inlet_domain::Envelope) -> Result<(), Box<dyn std::error::Error>> {
//! let registry = prometheus::Registry::new();
//! let metrics = QueueMetrics::register(&registry)?;
//! let settings = QueueSettings::default(); // or from the layered config
//!
//! // API side: start once, share clones, publish per request.
//! let publisher = Publisher::start(settings.clone(), metrics.clone())?;
//! publisher.wait_connected(Duration::from_secs(5)).await; // optional
//! match publisher.publish(&envelope).await {
//!     Ok(_) => { /* answer 202: the broker has it */ }
//!     Err(e) => { /* answer 503 with e.code() */ let _ = e.code(); }
//! }
//! publisher.close().await;
//!
//! // Worker side: pull, process, settle.
//! let stop = CancellationToken::new();
//! let mut consumer = Consumer::start(settings, metrics, stop.clone())?;
//! while let Some(incoming) = consumer.next().await {
//!     match &incoming.envelope {
//!         Err(e) => {
//!             let reason = format!("undecodable: {e}");
//!             incoming.dead_letter(&reason).await?;
//!         }
//!         Ok(_envelope) => {
//!             let stored = true; // ... write to the database ...
//!             if stored {
//!                 incoming.ack().await?;
//!             } else if let RetryOutcome::DeadLettered = incoming.retry("db write failed").await? {
//!                 // gave up after max_attempts
//!             }
//!         }
//!     }
//! }
//! consumer.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod connection;
pub mod consumer;
pub mod error;
pub mod metrics;
pub mod publisher;
pub mod settings;
mod supervisor;
pub mod topology;

pub use connection::ConnectionState;
pub use consumer::{
    Consumer, HEADER_ATTEMPT, HEADER_DEATH_REASON, HEADER_LAST_ERROR, Incoming, RetryOutcome,
};
pub use error::{PublishError, QueueError, UnavailableReason};
pub use metrics::{QueueMetrics, Role};
pub use publisher::{
    Confirmed, HEADER_ACCOUNT, HEADER_AUTH_MODE, HEADER_KEY_ID, HEADER_PARTS, Publisher,
};
pub use settings::{InvalidSetting, QueueSettings, QueueType};
pub use topology::Names;
