//! Observability plumbing shared by every Inlet service: logging set-up,
//! a Prometheus registry with its text-format handler, a health registry
//! for liveness/readiness, and a small admin HTTP listener that serves all
//! three for processes without an HTTP API of their own (worker, sync).
//!
//! # Layout
//!
//! - [`logging`]: [`LogSettings`] and [`logging::init`] (pretty locally,
//!   JSON in production, `RUST_LOG` overrides).
//! - [`metrics`]: [`process_registry`], the one Prometheus registry of a
//!   process (with process metrics and `inlet_build_info`), passed to each
//!   crate's `…Metrics::register(&Registry)`; [`metrics::render`] for
//!   `/metrics`.
//! - [`health`]: [`Health`], where components report whether they can do
//!   their job; `/health/ready` reads it, in full on admin listeners or as
//!   a [`ReadinessSummary`] (no details) on a public one.
//! - [`admin_server`]: [`AdminServer`], the admin listener:
//!   `/health/live`, `/health/ready`, `/metrics` on a port of its own; and
//!   [`health_response`] / [`metrics_response`], the same answers for a
//!   service's own HTTP API.
//!
//! # Using it from another service
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use inlet_obs::{AdminServer, Health, process_registry};
//! let registry = process_registry("my_service");
//! // Each library registers its metrics on it, e.g.
//! // `inlet_queue::QueueMetrics::register(&registry)?`.
//! let health = Health::new();
//! health.set("database", true, "connected");
//! let admin = AdminServer::bind("127.0.0.1:0", registry.clone(), health.clone())?;
//! let _port = admin.port();
//! tokio::spawn(admin.run());
//! # Ok(()) }
//! ```

pub mod admin_server;
pub mod health;
pub mod logging;
pub mod metrics;

pub use admin_server::{AdminServer, health_response, metrics_response};
pub use health::{
    ComponentHealth, ComponentReady, Health, HealthReport, ReadinessDetail, ReadinessSummary,
};
pub use logging::{LogFormat, LogSettings};
pub use metrics::process_registry;
