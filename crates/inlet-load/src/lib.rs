//! The Inlet load generator: realistic push traffic at a target rate, and
//! what the server did with it. The engine of `inlet load`; a benchmark or
//! another service's capacity test can run it directly.
//!
//! Open loop: request `i` is due at `start + i / rate`, whatever happened
//! to the earlier ones, so a slow server shows up as latency and errors
//! rather than as a politely reduced rate. Each request is sent once (no
//! retries: this measures the server, it is not an agent — agents use
//! `inlet-client`). At most `max_in_flight` requests run at once; when
//! that many are waiting the dispatcher falls behind, which the report
//! shows as `late` dispatches.
//!
//! The generator stays cheap so that it is not what is measured: one
//! connection-pooling HTTP client shared by all simulated agents, key
//! headers built once, and bodies pre-generated — a pool of 64 synthetic
//! batches, compressed once and regenerated every 5 s on the blocking pool
//! so timestamps stay within seconds of now. Each request only prepends a
//! fresh head with its own `batch_id` and agent (as a second gzip member,
//! see `body::request_body`), so no two requests are the same batch.
//!
//! # Using it
//!
//! ```no_run
//! use std::time::Duration;
//! use inlet_load::{LoadPlan, run};
//!
//! # async fn capacity_check() -> Result<(), inlet_load::LoadError> {
//! let report = run(LoadPlan {
//!     endpoint: "http://127.0.0.1:8080".into(),
//!     keys: vec!["inlet_AQG31mIOzsOPBuLO8Te_1qIUIw15YhkCK2qmeFjj6sIY3WasjskHQE6OrJbmNpLz".into()],
//!     agents: 10,
//!     rate: 500.0,
//!     duration: Duration::from_secs(30),
//!     gzip: true,
//!     timeout: Duration::from_secs(10),
//!     max_in_flight: 512,
//!     app: "shop".into(),
//!     environment: "load".into(),
//! })
//! .await?;
//! // Serializable (`serde`), e.g. for a benchmark's JSON record.
//! assert_eq!(report.accepted(), report.sent, "every batch accepted");
//! let _p99_ms = report.latency_ms.p99;
//! # Ok(()) }
//! ```
//!
//! [`synthetic_batch`] makes one plausible batch on its own, for tests and
//! benchmarks that need realistic data without a run.
//!
//! # Layout
//!
//! - `dispatch`: [`LoadPlan`], [`LoadError`] and [`run`], the open-loop
//!   dispatcher.
//! - `body`: the pool of pre-generated bodies and one request's body.
//! - [`synthetic`], which holds [`synthetic_batch`].
//! - [`report`], which holds [`LoadReport`] and [`Latency`].
//!
//! No two modules import each other: `dispatch` uses `body` and `report`,
//! `body` uses `synthetic`.

mod body;
mod dispatch;
pub mod report;
pub mod synthetic;

pub use dispatch::{LoadError, LoadPlan, run};
pub use report::{Latency, LoadReport};
pub use synthetic::synthetic_batch;
